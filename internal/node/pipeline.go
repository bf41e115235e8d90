package node

import (
	"context"

	"github.com/ketnoi/ketnoi/internal/evidence"
)

// pipelineDepth bounds the messages of one stream direction whose evidence
// is being committed while the next ones are read and signed. It bounds the
// memory a stream holds on top of gRPC's flow-control windows.
const pipelineDepth = 8

// step is one message of a stream: its evidence record, and what to do
// with the message once that record is durable.
type step struct {
	receipt *evidence.Receipt
	msgID   string
	send    func(index uint64) error
	last    bool
}

// pipeline sends the messages of one stream direction in order, each only
// after its evidence is durable, while the producer already prepares the
// following ones. Many messages of a stream then share one commit instead
// of waiting for one commit each.
type pipeline struct {
	n     *Node
	steps chan step
	stop  chan struct{}
	err   error // written before stop is closed
}

func newPipeline(ctx context.Context, n *Node) *pipeline {
	p := &pipeline{n: n, steps: make(chan step, pipelineDepth), stop: make(chan struct{})}
	go p.run(ctx)
	return p
}

func (p *pipeline) run(ctx context.Context) {
	defer close(p.stop)
	for s := range p.steps {
		index, err := p.n.awaitRecord(ctx, s.receipt, s.msgID)
		if err == nil {
			err = s.send(index)
		}
		if err != nil {
			p.err = err
			return
		}
		if s.last {
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
	<-p.stop
	return p.err
}
