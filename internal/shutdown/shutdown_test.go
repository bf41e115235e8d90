package shutdown_test

import (
	"context"
	"net"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/ketnoi/ketnoi/internal/shutdown"
)

// A server with a stream that never ends still stops after the grace
// period.
func TestGRPCStopsAfterGrace(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := grpc.NewServer()
	hs := health.NewServer()
	healthpb.RegisterHealthServer(s, hs)
	go s.Serve(lis)

	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	watch, err := healthpb.NewHealthClient(conn).Watch(ctx, &healthpb.HealthCheckRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := watch.Recv(); err != nil {
		t.Fatal(err)
	}

	stopped := make(chan struct{})
	go func() { shutdown.GRPC(200*time.Millisecond, s); close(stopped) }()
	select {
	case <-stopped:
	case <-ctx.Done():
		t.Fatal("server with an open stream did not stop after its grace period")
	}
	if _, err := watch.Recv(); err == nil {
		t.Error("stream still open after the server stopped")
	}
}
