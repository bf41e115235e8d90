package integration

import (
	"context"
	"net"
	"path/filepath"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	testpb "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/status"

	"github.com/ketnoi/ketnoi/integration/cluster"
)

// observingBackend serves the interop TestService behind the provider node
// and reports what reached it: the deadline a unary call arrived with, and
// when a duplex call saw its context end.
type observingBackend struct {
	testpb.UnimplementedTestServiceServer
	deadlines chan time.Duration // time left when a UnaryCall arrived; -1 without a deadline
	started   chan struct{}      // a FullDuplexCall received its first message
	ended     chan time.Time     // when that call's context ended
}

func (b *observingBackend) UnaryCall(ctx context.Context, _ *testpb.SimpleRequest) (*testpb.SimpleResponse, error) {
	left := time.Duration(-1)
	if dl, ok := ctx.Deadline(); ok {
		left = time.Until(dl)
	}
	b.deadlines <- left
	return &testpb.SimpleResponse{}, nil
}

// FullDuplexCall waits, after the first message, for its context to end:
// the only way it ends early is a cancellation that crossed both nodes.
func (b *observingBackend) FullDuplexCall(stream testpb.TestService_FullDuplexCallServer) error {
	if _, err := stream.Recv(); err != nil {
		return err
	}
	b.started <- struct{}{}
	select {
	case <-stream.Context().Done():
		b.ended <- time.Now()
		return stream.Context().Err()
	case <-time.After(30 * time.Second):
		return status.Error(codes.DeadlineExceeded, "no cancellation reached the backend in 30 s")
	}
}

// TestDeadlineAndCancellationReachBackend checks, at a backend the test
// runs itself, that a caller's deadline arrives minus the provider node's
// margin and that a caller's cancellation crosses both nodes.
func TestDeadlineAndCancellationReachBackend(t *testing.T) {
	if raceEnabled {
		t.Skip("the run without -race covers it; the stream tests run with -race")
	}
	backend := &observingBackend{
		deadlines: make(chan time.Duration, 4),
		started:   make(chan struct{}, 1),
		ended:     make(chan time.Time, 1),
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	testpb.RegisterTestServiceServer(srv, backend)
	go srv.Serve(lis)
	defer srv.Stop()

	const margin = 500 * time.Millisecond
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if err := cluster.BuildInterop(ctx, filepath.Join("interop", "tools"), binDir); err != nil {
		t.Fatal(err)
	}
	c := startScenario(ctx, t, "deadline_margin: 500ms\n", cluster.InteropBackedBy(lis.Addr().String()), "registry", "vpcp", "bnv")
	client := consumerTestService(t, c)

	t.Run("the backend sees the caller's deadline minus the margin", func(t *testing.T) {
		const timeout = 10 * time.Second
		cctx, ccancel := context.WithTimeout(ctx, timeout)
		defer ccancel()
		if _, err := client.UnaryCall(cctx, &testpb.SimpleRequest{}); err != nil {
			t.Fatal(err)
		}
		left := <-backend.deadlines
		t.Logf("caller's timeout %v, time left at the backend %v", timeout, left)
		// The upper bound shows the margin was taken; the lower one that
		// the caller's deadline, not some default, arrived.
		if left > timeout-margin || left < timeout-margin-2*time.Second {
			t.Errorf("time left at the backend = %v; want at most %v and close to it", left, timeout-margin)
		}
	})

	t.Run("a call without a deadline reaches the backend without one", func(t *testing.T) {
		// No deadline, but bounded all the same: cancelled after 30 s.
		cctx, ccancel := context.WithCancel(context.Background())
		defer time.AfterFunc(30*time.Second, ccancel).Stop()
		defer ccancel()
		if _, err := client.UnaryCall(cctx, &testpb.SimpleRequest{}); err != nil {
			t.Fatal(err)
		}
		if left := <-backend.deadlines; left != -1 {
			t.Errorf("backend saw a deadline %v ahead for a call that had none", left)
		}
	})

	t.Run("the caller's cancellation ends the call at the backend", func(t *testing.T) {
		cctx, ccancel := context.WithCancel(ctx)
		defer ccancel()
		stream, err := client.FullDuplexCall(cctx)
		if err != nil {
			t.Fatal(err)
		}
		if err := stream.Send(&testpb.StreamingOutputCallRequest{}); err != nil {
			t.Fatal(err)
		}
		select {
		case <-backend.started:
		case <-time.After(10 * time.Second):
			t.Fatal("the first message did not reach the backend")
		}
		cancelled := time.Now()
		ccancel()
		select {
		case at := <-backend.ended:
			t.Logf("cancellation reached the backend %v after the caller cancelled", at.Sub(cancelled))
		case <-time.After(15 * time.Second):
			t.Fatal("the backend's call did not end after the caller cancelled")
		}
		if _, err := stream.Recv(); status.Code(err) != codes.Canceled {
			t.Errorf("caller after cancelling: %v, want Canceled", err)
		}
	})
}
