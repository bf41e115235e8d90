package main

import (
	"fmt"
	"io"
	"strings"
	"time"
)

// Goals of the performance issue. They are measured and reported, never
// asserted: a loaded machine must not fail a build.
const (
	goalCPUPerCall     = 150 * time.Microsecond
	goalVsNginx        = 0.70
	goalVsDirect       = 0.25
	goalAddedP50       = time.Millisecond
	goalStreamVsDirect = 0.50
	goalStreamRSS      = 64 << 20
)

// Paths the goals are judged on: ketnoi's, and the grpc-go proxy pair's
// for reference, since what that pair cannot reach without any security
// work no node can reach with it.
const (
	ketnoiPath  = "ketnoi"
	goproxyPath = "grpc-go proxy"
)

// goal is one line of the verdict.
type goal struct {
	Text     string
	Measured string
	Met      bool
	Known    bool // false when a row it needs is missing
}

func (r *report) printGoals(w io.Writer) {
	r.printGoalsOf(w, ketnoiPath, "Goals (ketnoi path):")
	if r.hasPath(goproxyPath) {
		fmt.Fprintln(w)
		r.printGoalsOf(w, goproxyPath,
			"The same goals for the grpc-go proxy pair (forwarding only, no signing or evidence), for reference:")
	}
}

func (r *report) printGoalsOf(w io.Writer, path, title string) {
	fmt.Fprintln(w, title)
	fmt.Fprintln(w)
	fmt.Fprintln(w, "| goal | measured | verdict |")
	fmt.Fprintln(w, "|---|---|---|")
	for _, g := range r.goals(path) {
		verdict := "not met"
		switch {
		case !g.Known:
			verdict = "not measured"
		case g.Met:
			verdict = "met"
		}
		fmt.Fprintf(w, "| %s | %s | %s |\n", g.Text, g.Measured, verdict)
	}
}

// hasPath reports whether any row was measured on path.
func (r *report) hasPath(path string) bool {
	for _, row := range r.Unary {
		if row.Path == path {
			return true
		}
	}
	for _, row := range r.Stream {
		if row.Path == path {
			return true
		}
	}
	return false
}

func (r *report) goals(path string) []goal {
	var out []goal
	out = append(out, r.cpuGoal(path))
	small64 := unaryCase{Payload: 100, Concurrency: 64}
	k, kok := r.row(small64, path)
	d, dok := r.row(small64, "direct mTLS")
	n, nok := r.row(small64, "nginx mTLS")
	g := goal{Text: "100 B at concurrency 64: ≥ 70% of nginx mTLS", Known: kok && nok}
	if g.Known {
		ratio := safeDiv(k.Res.ReqPerSec(), n.Res.ReqPerSec())
		g.Measured = fmt.Sprintf("%.0f vs %.0f req/s = %.0f%%", k.Res.ReqPerSec(), n.Res.ReqPerSec(), 100*ratio)
		g.Met = ratio >= goalVsNginx
	}
	out = append(out, g)
	g = goal{Text: "100 B at concurrency 64: ≥ 25% of direct", Known: kok && dok}
	if g.Known {
		ratio := safeDiv(k.Res.ReqPerSec(), d.Res.ReqPerSec())
		g.Measured = fmt.Sprintf("%.0f vs %.0f req/s = %.0f%%", k.Res.ReqPerSec(), d.Res.ReqPerSec(), 100*ratio)
		g.Met = ratio >= goalVsDirect
	}
	out = append(out, g)

	small1 := unaryCase{Payload: 100, Concurrency: 1}
	k, kok = r.row(small1, path)
	d, dok = r.row(small1, "direct mTLS")
	g = goal{Text: "100 B at concurrency 1: p50 added ≤ 1 ms", Known: kok && dok}
	if g.Known {
		added := k.Res.P50 - d.Res.P50
		g.Measured = fmt.Sprintf("%s − %s = %s", dur(k.Res.P50), dur(d.Res.P50), signedDur(added))
		g.Met = added <= goalAddedP50
	}
	out = append(out, g)
	return append(out, r.streamGoals(path)...)
}

// cpuGoal judges the node CPU of every 100 B row by its worst value.
func (r *report) cpuGoal(path string) goal {
	g := goal{Text: "100 B unary: node CPU ≤ 150 µs per call per node (worst of conc 1/16/64)"}
	var parts []string
	worst := time.Duration(0)
	for _, row := range r.Unary {
		if row.Path != path || row.Case.Payload != 100 || row.Res.Calls == 0 {
			continue
		}
		var cells []string
		for _, u := range row.Uses {
			if u.Err != nil {
				return g
			}
			per := u.CPU / time.Duration(row.Res.Calls)
			worst = max(worst, per)
			cells = append(cells, fmt.Sprintf("%.0f", float64(per.Nanoseconds())/1e3))
		}
		parts = append(parts, fmt.Sprintf("c%d: %s µs", row.Case.Concurrency, strings.Join(cells, "/")))
		g.Known = true
	}
	if g.Known {
		g.Measured = strings.Join(parts, "; ") + " (in/out)"
	}
	g.Met = g.Known && worst <= goalCPUPerCall
	return g
}

func (r *report) streamGoals(path string) []goal {
	var out []goal
	for _, row := range r.Stream {
		if row.Path != path {
			continue
		}
		d := r.directStream(row.Chunk)
		g := goal{
			Text: fmt.Sprintf("%s stream in %s messages: ≥ 50%% of direct, RSS growth < 64 MiB per node",
				sizeName(row.Total), sizeName(int64(row.Chunk))),
			Known: d.Path != "" && row.Res.Err == nil && d.Res.Err == nil,
		}
		if !g.Known {
			out = append(out, g)
			continue
		}
		ratio := safeDiv(row.Res.MiBPerSec(), d.Res.MiBPerSec())
		var growth []string
		rssOK := true
		for _, u := range row.Uses {
			grew := u.PeakRSS - u.RSSBefore
			rssOK = rssOK && u.Err == nil && grew < goalStreamRSS
			growth = append(growth, mib(grew))
		}
		g.Measured = fmt.Sprintf("%.0f vs %.0f MiB/s = %.0f%%; growth %s", row.Res.MiBPerSec(),
			d.Res.MiBPerSec(), 100*ratio, strings.Join(growth, "/"))
		g.Met = ratio >= goalStreamVsDirect && rssOK
		out = append(out, g)
	}
	return out
}

// row returns the measured row of case c (payload and concurrency) on a
// path.
func (r *report) row(c unaryCase, path string) (unaryRow, bool) {
	for _, row := range r.Unary {
		if row.Path == path && row.Case.Payload == c.Payload && row.Case.Concurrency == c.Concurrency {
			return row, true
		}
	}
	return unaryRow{}, false
}
