package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/encoding/protowire"
)

// callTimeout bounds every single call of the load loops.
const callTimeout = 30 * time.Second

// unaryCase is one unary load: payload size, concurrent callers and bounds.
type unaryCase struct {
	Payload     int
	Concurrency int
	Duration    time.Duration // the loop stops issuing calls after this
	MaxCalls    int           // and after this many calls
}

// unaryResult is what one unary load measured.
type unaryResult struct {
	Calls    int
	Errors   int
	FirstErr error
	Elapsed  time.Duration
	P50, P99 time.Duration
}

// ReqPerSec returns the completed calls per second.
func (r unaryResult) ReqPerSec() float64 {
	if r.Elapsed <= 0 {
		return 0
	}
	return float64(r.Calls) / r.Elapsed.Seconds()
}

// runUnary calls Echo from c.Concurrency goroutines sharing conn until the
// duration or the call budget is spent, checking every response.
func runUnary(ctx context.Context, conn *grpc.ClientConn, c unaryCase) unaryResult {
	req := payloadMessage(c.Payload)
	var (
		issued   atomic.Int64
		errCount atomic.Int64
		mu       sync.Mutex
		firstErr error
		wg       sync.WaitGroup
	)
	lat := make([][]time.Duration, c.Concurrency)
	start := time.Now()
	deadline := start.Add(c.Duration)
	for w := range c.Concurrency {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(deadline) && issued.Add(1) <= int64(c.MaxCalls) && ctx.Err() == nil {
				t0 := time.Now()
				err := echoOnce(ctx, conn, req)
				if err != nil {
					errCount.Add(1)
					mu.Lock()
					if firstErr == nil {
						firstErr = err
					}
					mu.Unlock()
					continue
				}
				lat[w] = append(lat[w], time.Since(t0))
			}
		}()
	}
	wg.Wait()

	r := unaryResult{Elapsed: time.Since(start), Errors: int(errCount.Load()), FirstErr: firstErr}
	all := slices.Concat(lat...)
	r.Calls = len(all)
	r.P50, r.P99 = percentile(all, 0.50), percentile(all, 0.99)
	return r
}

// echoOnce makes one Echo call and checks that the payload came back.
func echoOnce(ctx context.Context, conn *grpc.ClientConn, req []byte) error {
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	var resp []byte
	if err := conn.Invoke(ctx, echoMethod, &req, &resp, grpc.ForceCodecV2(rawCodec{})); err != nil {
		return err
	}
	if !bytes.Equal(resp, req) {
		return fmt.Errorf("echo returned %d bytes that differ from the %d sent", len(resp), len(req))
	}
	return nil
}

// percentile returns the q-quantile of d (nearest rank); it sorts d.
func percentile(d []time.Duration, q float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	slices.Sort(d)
	i := int(q*float64(len(d))+0.5) - 1
	return d[min(max(i, 0), len(d)-1)]
}

// streamResult is what one Download measured.
type streamResult struct {
	Bytes      int64
	Messages   int
	Elapsed    time.Duration
	FirstByte  time.Duration
	Err        error
	MaxMsgWait time.Duration // longest gap between two messages
}

// MiBPerSec returns the payload throughput.
func (r streamResult) MiBPerSec() float64 {
	if r.Elapsed <= 0 {
		return 0
	}
	return float64(r.Bytes) / (1 << 20) / r.Elapsed.Seconds()
}

// runDownload streams total bytes in chunk-byte messages within limit.
func runDownload(ctx context.Context, conn *grpc.ClientConn, total int64, chunk int32, limit time.Duration) streamResult {
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	var r streamResult
	start := time.Now()
	stream, err := conn.NewStream(ctx, &downloadStreamDesc, downloadCall, grpc.ForceCodecV2(rawCodec{}))
	if err != nil {
		r.Err = err
		return r
	}
	req := downloadRequest(total, chunk)
	if err := stream.SendMsg(&req); err != nil {
		r.Err = err
		return r
	}
	if err := stream.CloseSend(); err != nil {
		r.Err = err
		return r
	}
	last := start
	for {
		var msg []byte
		err := stream.RecvMsg(&msg)
		now := time.Now()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			r.Err = err
			break
		}
		if r.Messages == 0 {
			r.FirstByte = now.Sub(start)
		} else {
			r.MaxMsgWait = max(r.MaxMsgWait, now.Sub(last))
		}
		last = now
		r.Messages++
		r.Bytes += int64(payloadLen(msg))
	}
	r.Elapsed = time.Since(start)
	if r.Err == nil && r.Bytes != total {
		r.Err = fmt.Errorf("%w: %d of %d bytes", errShortDownload, r.Bytes, total)
	}
	return r
}

// payloadLen returns the length of field 1 of a payload message, or the
// message length when it does not parse as one.
func payloadLen(msg []byte) int {
	num, typ, n := protowire.ConsumeTag(msg)
	if n < 0 || num != 1 || typ != protowire.BytesType {
		return len(msg)
	}
	v, m := protowire.ConsumeBytes(msg[n:])
	if m < 0 {
		return len(msg)
	}
	return len(v)
}
