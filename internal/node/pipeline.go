package node

import (
	"context"
	"sync"

	"github.com/ketnoi/ketnoi/internal/evidence"
)

// pipelineDepth and pipelineBytes bound the messages of one stream
// direction whose records are being committed while the next ones are
// read: at most pipelineDepth messages, and no more payload bytes than
// pipelineBytes unless the pipeline is empty. They bound what a stream
// holds in the node on top of gRPC's flow-control windows; a commit takes
// about a millisecond, so a few large messages keep a stream moving, and
// up to 32 smaller ones share a commit and its signature (64 KiB messages
// streamed 15–25% faster than with 8).
const (
	pipelineDepth = 32
	pipelineBytes = 2 << 20
)

// step is one message of a stream: its evidence record, already handed to
// the evidence writer, and what to do with the message once that record is
// durable.
type step struct {
	receipt *evidence.Receipt
	msgID   string
	send    func(index uint64) error
	last    bool
	size    int // payload bytes
}

// pipeline sends the messages of one stream direction in order, each only
// after its evidence is durable, while the producer already reads, signs
// and records the following ones: a stream's messages then share
// signatures and commits instead of paying for one each.
type pipeline struct {
	n     *Node
	ctx   context.Context // of an inline pipeline, which has no steps channel
	steps chan step       // from the producer
	stop  chan struct{}
	done  chan struct{} // the sender has returned
	once  sync.Once
	err   error // written before stop is closed

	mu    sync.Mutex
	bytes int           // payload bytes in the pipeline
	freed chan struct{} // a step left the pipeline; buffered
}

// newPipeline starts the pipeline of one stream direction; depth is
// pipelineDepth for streams. Depth 0 makes an inline pipeline, for a
// direction with one message: there is nothing to overlap, so push sends
// the step itself once its record is durable, without a goroutine and its
// channels.
func newPipeline(ctx context.Context, n *Node, depth int) *pipeline {
	if depth == 0 {
		return &pipeline{n: n, ctx: ctx}
	}
	p := &pipeline{
		n: n, steps: make(chan step, depth),
		stop: make(chan struct{}), done: make(chan struct{}), freed: make(chan struct{}, 1),
	}
	go func() {
		p.send(ctx)
		p.end(nil)
		close(p.done)
	}()
	return p
}

// end stops the pipeline, keeping the first error.
func (p *pipeline) end(err error) {
	p.once.Do(func() {
		p.err = err
		close(p.stop)
	})
}

func (p *pipeline) send(ctx context.Context) {
	for s := range p.steps {
		err := p.run(ctx, s)
		p.mu.Lock()
		p.bytes -= s.size
		p.mu.Unlock()
		select {
		case p.freed <- struct{}{}:
		default:
		}
		if err != nil {
			p.end(err)
			return
		}
		if s.last {
			return
		}
	}
}

// run sends one step once its record is durable.
func (p *pipeline) run(ctx context.Context, s step) error {
	index, err := p.n.awaitRecord(ctx, s.receipt, s.msgID)
	if err != nil {
		return err
	}
	return s.send(index)
}

// push queues a step; it fails with the pipeline's error once a step failed.
func (p *pipeline) push(s step) error {
	if p.steps == nil {
		if p.err == nil {
			p.err = p.run(p.ctx, s)
		}
		return p.err
	}
	select {
	case <-p.stop:
		return p.err
	default:
	}
	for {
		p.mu.Lock()
		if p.bytes == 0 || p.bytes+s.size <= pipelineBytes {
			p.bytes += s.size
			p.mu.Unlock()
			break
		}
		p.mu.Unlock()
		select {
		case <-p.freed:
		case <-p.stop:
			return p.err
		}
	}
	select {
	case p.steps <- s:
		return nil
	case <-p.stop:
		return p.err
	}
}

// close waits until every queued step was sent (or one failed) and returns
// the first error.
func (p *pipeline) close() error {
	if p.steps == nil {
		return p.err
	}
	close(p.steps)
	<-p.done
	return p.err
}
