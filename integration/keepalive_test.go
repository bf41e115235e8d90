package integration

import (
	"context"
	"testing"
	"time"

	"google.golang.org/grpc"
	testpb "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/keepalive"
)

// TestFeedWithClientKeepalive holds a bidirectional feed open through both
// nodes from a client that pings every 10 s, the shortest keepalive
// grpc-go clients allow and a common setting for long-lived feeds. A
// server with gRPC's default policy answers the third such ping with
// GOAWAY (too_many_pings) and the feed dies; the node's local endpoint must
// let it live.
func TestFeedWithClientKeepalive(t *testing.T) {
	if raceEnabled {
		t.Skip("waits half a minute for pings; the run without -race covers it")
	}
	c := startInterop(t)
	client := consumerTestService(t, c,
		grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: 10 * time.Second, Timeout: 5 * time.Second}))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	stream, err := client.FullDuplexCall(ctx)
	if err != nil {
		t.Fatal(err)
	}
	exchange := func(when string) {
		t.Helper()
		if err := stream.Send(&testpb.StreamingOutputCallRequest{ResponseParameters: []*testpb.ResponseParameters{{Size: 8}}}); err != nil {
			t.Fatalf("send %s: %v", when, err)
		}
		if _, err := stream.Recv(); err != nil {
			t.Fatalf("receive %s: %v", when, err)
		}
	}
	exchange("at the start")
	// Three pings go out in this time, each 10 s after the last activity.
	time.Sleep(33 * time.Second)
	exchange("after three keepalive pings")
	if err := stream.CloseSend(); err != nil {
		t.Fatal(err)
	}
}
