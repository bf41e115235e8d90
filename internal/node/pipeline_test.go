package node

import (
	"context"
	"errors"
	"log/slog"
	"path/filepath"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/ketnoi/ketnoi/internal/evidence"
	evidencev1 "github.com/ketnoi/ketnoi/proto/ketnoi/evidence/v1"
)

// A stream's pipeline holds at most pipelineBytes of payload: a large
// message waits until the one before it has been sent.
func TestPipelineBoundsPayloadBytes(t *testing.T) {
	n, receipt := recordingPipelineNode(t)
	ctx := context.Background()

	p := newPipeline(ctx, n, pipelineDepth)
	started, release := make(chan struct{}), make(chan struct{})
	big := pipelineBytes/2 + 1
	if err := p.push(step{receipt: receipt(), size: big, send: func(uint64) error {
		close(started)
		<-release
		return nil
	}}); err != nil {
		t.Fatal(err)
	}
	<-started
	pushed := make(chan error, 1)
	go func() {
		pushed <- p.push(step{receipt: receipt(), size: big, last: true, send: func(uint64) error { return nil }})
	}()
	select {
	case err := <-pushed:
		t.Fatalf("second large message entered the pipeline before the first was sent (%v)", err)
	case <-time.After(50 * time.Millisecond):
	}
	close(release)
	if err := <-pushed; err != nil {
		t.Fatal(err)
	}
	if err := p.close(); err != nil {
		t.Fatal(err)
	}
}

// An inline pipeline (one response message) sends each step within push,
// once its record is durable, and keeps the first failure.
func TestInlinePipeline(t *testing.T) {
	n, receipt := recordingPipelineNode(t)
	ctx := context.Background()

	p := newPipeline(ctx, n, 0)
	var sent []uint64
	for range 2 {
		if err := p.push(step{receipt: receipt(), send: func(index uint64) error {
			sent = append(sent, index)
			return nil
		}}); err != nil {
			t.Fatal(err)
		}
	}
	if len(sent) != 2 || sent[1] != sent[0]+1 {
		t.Fatalf("sent records %v, want two consecutive ones sent within push", sent)
	}

	failure := errors.New("application went away")
	if err := p.push(step{receipt: receipt(), send: func(uint64) error { return failure }}); err != failure {
		t.Fatalf("push = %v, want the step's failure", err)
	}
	if err := p.push(step{receipt: receipt(), send: func(uint64) error {
		t.Error("a step after a failure was sent")
		return nil
	}}); err != failure {
		t.Errorf("push after a failure = %v, want the first failure", err)
	}
	if err := p.close(); err != failure {
		t.Errorf("close = %v, want the first failure", err)
	}
}

// recordingPipelineNode returns a node with an evidence log of its own and
// a function that starts a record in it, for a step's receipt.
func recordingPipelineNode(t *testing.T) (*Node, func() *evidence.Receipt) {
	t.Helper()
	l, err := evidence.Open(filepath.Join(t.TempDir(), "evidence.db"), evidence.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	receipt := func() *evidence.Receipt {
		rec := &evidencev1.Record{Kind: evidencev1.RecordKind_RECORD_KIND_FAILED, RecordedAt: timestamppb.Now()}
		r, err := l.Start(context.Background(), rec, nil)
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	return &Node{evidence: l, log: slog.New(slog.DiscardHandler)}, receipt
}
