package integration

import (
	"context"
	"regexp"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	testpb "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/status"

	"github.com/ketnoi/ketnoi/integration/cluster"
	"github.com/ketnoi/ketnoi/internal/exchange"
)

// TestRevokedGrantEndsRunningStream revokes the grant of a bidi stream
// while it runs: the provider must end it, as revocation has to take
// effect on feeds that run for hours.
func TestRevokedGrantEndsRunningStream(t *testing.T) {
	c := startInterop(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	stream, err := consumerTestService(t, c).FullDuplexCall(ctx)
	if err != nil {
		t.Fatal(err)
	}
	ping := &testpb.StreamingOutputCallRequest{ResponseParameters: []*testpb.ResponseParameters{{Size: 8}}}
	if err := stream.Send(ping); err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Recv(); err != nil {
		t.Fatal(err)
	}

	out, err := c.CLI(ctx, "config", "show")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(g-\d+) +` + regexp.QuoteMeta(cluster.ConsumerClient) + ` -> ` + regexp.QuoteMeta(cluster.InteropService)).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no grant of the interop service in:\n%s", out)
	}
	if _, err := c.CLI(ctx, "grant", "revoke", "--id", m[1]); err != nil {
		t.Fatal(err)
	}

	deadline := time.Now().Add(10 * time.Second)
	for {
		_ = stream.Send(ping)
		_, err := stream.Recv()
		if err == nil {
			if time.Now().After(deadline) {
				t.Fatal("stream still running 10 s after its grant was revoked")
			}
			time.Sleep(50 * time.Millisecond)
			continue
		}
		st := status.Convert(err)
		if reason, _ := exchange.PlatformReason(st); st.Code() != codes.PermissionDenied || reason != exchange.ReasonGrantMissing {
			t.Fatalf("stream ended with %v (%s), want PermissionDenied %s", err, reason, exchange.ReasonGrantMissing)
		}
		return
	}
}
