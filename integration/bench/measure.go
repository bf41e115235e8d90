package main

import (
	"context"
	"fmt"
	"io"
	"time"
)

// Case bounds. Small payloads run for the whole duration; payloads of
// 1 MiB and more are also capped by count.
const (
	maxSmallCalls = 2_000_000
	maxLargeCalls = 2_000
	warmup        = 300 * time.Millisecond
	streamLimit   = 3 * time.Minute
)

// use is what one intermediary process spent during a case.
type use struct {
	Label     string
	CPU       time.Duration
	RSSBefore int64
	PeakRSS   int64
	Err       error
}

// unaryRow is one path's result for one unary case.
type unaryRow struct {
	Case    unaryCase
	Path    string
	Res     unaryResult
	Uses    []use
	Machine machineUse
}

// streamRow is one path's result for one Download.
type streamRow struct {
	Total   int64
	Chunk   int32
	Path    string
	Res     streamResult
	Uses    []use
	Machine machineUse
}

// measure runs every case on every path, paths interleaved within a case
// so that slow drift of the machine affects them alike. The streams run
// first, while the nodes are fresh: a node's heap grown by the large unary
// calls would hide what a stream alone makes it grow.
func measure(ctx context.Context, o options, paths []*topology, rep *report, progress io.Writer) {
	measureStreams(ctx, o, paths, rep, progress)
	for _, size := range o.payloads {
		for _, conc := range o.conc {
			c := unaryCase{Payload: size, Concurrency: conc, Duration: o.duration, MaxCalls: maxSmallCalls}
			if size >= 1<<20 {
				c.MaxCalls = maxLargeCalls
			}
			for _, p := range paths {
				if ctx.Err() != nil {
					return
				}
				fmt.Fprintf(progress, "unary %s x%d via %s\n", sizeName(int64(size)), conc, p.Name)
				warm := c
				warm.Duration, warm.MaxCalls = warmup, 50*conc
				runUnary(ctx, p.Conn, warm)

				before, m0 := start(p.Procs), readMachine()
				res := runUnary(ctx, p.Conn, c)
				uses, m1 := finish(p.Procs, before), readMachine()
				rep.Unary = append(rep.Unary, unaryRow{Case: c, Path: p.Name, Res: res, Uses: uses,
					Machine: since(m0, m1, total(uses))})
			}
		}
	}
}

// measureStreams runs the Download cases.
func measureStreams(ctx context.Context, o options, paths []*topology, rep *report, progress io.Writer) {
	if o.streamBytes == 0 {
		return
	}
	for _, chunk := range o.chunks {
		for _, p := range paths {
			if ctx.Err() != nil {
				return
			}
			fmt.Fprintf(progress, "download %s in %s messages via %s\n",
				sizeName(o.streamBytes), sizeName(int64(chunk)), p.Name)
			before, m0 := start(p.Procs), readMachine()
			res := runDownload(ctx, p.Conn, o.streamBytes, chunk, streamLimit)
			uses, m1 := finish(p.Procs, before), readMachine()
			rep.Stream = append(rep.Stream, streamRow{Total: o.streamBytes, Chunk: chunk, Path: p.Name,
				Res: res, Uses: uses, Machine: since(m0, m1, total(uses))})
		}
	}
}

// start resets the peak RSS of every process and samples it.
func start(procs []watched) []sample {
	out := make([]sample, len(procs))
	for i, w := range procs {
		if err := w.resetPeak(); err != nil {
			out[i].ReadErr = err
			continue
		}
		out[i] = w.read()
	}
	return out
}

// finish samples every process again and returns what each spent.
func finish(procs []watched, before []sample) []use {
	out := make([]use, len(procs))
	for i, w := range procs {
		after := w.read()
		u := use{Label: w.Label, Err: before[i].ReadErr}
		if u.Err == nil {
			u.Err = after.ReadErr
		}
		u.CPU = after.CPU - before[i].CPU
		u.RSSBefore = before[i].RSS
		u.PeakRSS = after.PeakRSS
		out[i] = u
	}
	return out
}

// total sums the CPU time of every use.
func total(uses []use) time.Duration {
	var t time.Duration
	for _, u := range uses {
		t += u.CPU
	}
	return t
}

// sizeName prints a byte count the way the cases are named.
func sizeName(n int64) string {
	switch {
	case n >= 1<<30 && n%(1<<30) == 0:
		return fmt.Sprintf("%d GiB", n>>30)
	case n >= 1<<20 && n%(1<<20) == 0:
		return fmt.Sprintf("%d MiB", n>>20)
	case n >= 1<<10 && n%(1<<10) == 0:
		return fmt.Sprintf("%d KiB", n>>10)
	default:
		return fmt.Sprintf("%d B", n)
	}
}
