package integration

import (
	"context"
	"io"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/ketnoi/ketnoi/integration/cluster"
	dvhcv1 "github.com/ketnoi/ketnoi/proto/vn/gov/dvhc/v1"
)

// TestOverlappedEvidenceOrder runs the walking skeleton's calls with
// evidence_order: overlap, where a request leaves while its record commits:
// answers, refusals and the evidence of both nodes must be the same as in
// the strict order.
func TestOverlappedEvidenceOrder(t *testing.T) {
	c := startStandardWith(t, "evidence_order: overlap\n")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	consumer := dial(t, c.LocalAddr("vpcp", cluster.ConsumerClient))

	resp, trailer, err := convert(ctx, consumer, "00013")
	if err != nil {
		t.Fatal(err)
	}
	if s := resp.GetSuccessors(); len(s) != 1 || s[0].GetUnit().GetCode() != "00004" {
		t.Fatalf("successors = %v, want 00004", s)
	}
	id := trailer.Get("ketnoi-message-id")[0]

	stream, err := consumer.ListCommunes(ctx, &dvhcv1.ListCommunesRequest{ProvinceCode: "01"})
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for {
		if _, err := stream.Recv(); err == io.EOF {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		n++
	}
	if want := countCommunes(t, "01"); n != want {
		t.Errorf("streamed %d communes, want %d", n, want)
	}

	if _, _, err := convert(ctx, dial(t, c.LocalAddr("btc", cluster.FinanceClient)), "00013"); status.Code(err) != codes.PermissionDenied {
		t.Errorf("ungranted call: %v, want PermissionDenied", err)
	}

	// A unary call that gets no response still leaves both records at the
	// consumer: the held-back request, and how the call ended.
	c.Stop("dvhc")
	_, ftrailer, err := convert(ctx, consumer, "00013")
	if status.Code(err) != codes.Unavailable {
		t.Fatalf("call with the backend down: %v, want Unavailable", err)
	}
	out, err := c.CLI(ctx, "evidence", "trace", "--node", c.Proc("vpcp").Addrs["admin"], ftrailer.Get("ketnoi-message-id")[0])
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"REQUEST_SENT", "RESPONSE_RECEIVED", "BACKEND_UNREACHABLE"} {
		if !strings.Contains(out, k) {
			t.Errorf("consumer evidence of a call to a stopped backend lacks %s:\n%s", k, out)
		}
	}

	for node, kinds := range map[string][]string{"vpcp": {"REQUEST_SENT", "RESPONSE_RECEIVED"}, "bnv": {"REQUEST_RECEIVED", "RESPONSE_SENT"}} {
		out, err := c.CLI(ctx, "evidence", "trace", "--node", c.Proc(node).Addrs["admin"], id)
		if err != nil {
			t.Fatal(err)
		}
		for _, k := range kinds {
			if !strings.Contains(out, k) {
				t.Errorf("%s evidence lacks %s:\n%s", node, k, out)
			}
		}
		if out, err := c.CLI(ctx, "evidence", "verify", "--node", c.Proc(node).Addrs["admin"]); err != nil || !strings.HasPrefix(out, "ok") {
			t.Errorf("verify %s: %v %s", node, err, out)
		}
	}
}
