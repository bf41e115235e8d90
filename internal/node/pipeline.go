package node

import (
	"context"
	"sync"

	"github.com/ketnoi/ketnoi/internal/evidence"
)

// pipelineDepth bounds the messages of one stream direction that are being
// signed or committed while the next ones are read. It bounds the memory a
// stream holds on top of gRPC's flow-control windows.
const pipelineDepth = 8

// step is one message of a stream: its evidence record, and what to do
// with the message once that record is durable. A step whose signature is
// still on its way has prepare set instead: it waits for the signature,
// starts the record and returns the receipt and the send function.
type step struct {
	receipt *evidence.Receipt
	msgID   string
	send    func(index uint64) error
	last    bool
	prepare func() (*evidence.Receipt, func(uint64) error, error)
}

// pipeline sends the messages of one stream direction in order, each only
// after its evidence is durable, while the producer already reads the
// following ones. One goroutine finishes each step's signature and starts
// its record, another waits for durability and sends: a stream's messages
// then share signatures and commits instead of paying for one each.
type pipeline struct {
	n     *Node
	steps chan step // from the producer
	ready chan step // signed, record started
	stop  chan struct{}
	done  chan struct{} // both goroutines have returned
	once  sync.Once
	err   error // written before stop is closed
}

func newPipeline(ctx context.Context, n *Node) *pipeline {
	p := &pipeline{
		n: n, steps: make(chan step, pipelineDepth), ready: make(chan step, pipelineDepth),
		stop: make(chan struct{}), done: make(chan struct{}),
	}
	var wg sync.WaitGroup
	wg.Go(p.prepare)
	wg.Go(func() { p.send(ctx) })
	go func() { wg.Wait(); p.end(nil); close(p.done) }()
	return p
}

// end stops the pipeline, keeping the first error.
func (p *pipeline) end(err error) {
	p.once.Do(func() {
		p.err = err
		close(p.stop)
	})
}

func (p *pipeline) prepare() {
	defer close(p.ready)
	for s := range p.steps {
		if s.prepare != nil {
			r, send, err := s.prepare()
			if err != nil {
				p.end(err)
				return
			}
			s.receipt, s.send, s.prepare = r, send, nil
		}
		select {
		case p.ready <- s:
		case <-p.stop:
			return
		}
		if s.last {
			return
		}
	}
}

func (p *pipeline) send(ctx context.Context) {
	for s := range p.ready {
		index, err := p.n.awaitRecord(ctx, s.receipt, s.msgID)
		if err == nil {
			err = s.send(index)
		}
		if err != nil {
			p.end(err)
			return
		}
		if s.last {
			p.end(nil)
			return
		}
	}
}

// push queues a step; it fails with the pipeline's error once a step failed.
func (p *pipeline) push(s step) error {
	select {
	case <-p.stop:
		return p.err
	default:
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
	close(p.steps)
	<-p.done
	return p.err
}
