//go:build linux

package integration

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	testpb "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/ketnoi/ketnoi/internal/exchange"
)

// TestEvidenceFaultFailsClosed makes one node's evidence log unwritable
// while the federation runs, as a full disk would, and checks that no
// exchange goes on without its evidence, in both evidence orders:
//
//   - unary, client-streaming and server-streaming calls end with
//     Unavailable and an EVIDENCE_UNAVAILABLE detail naming the faulted
//     node, never with an answer;
//   - the faulted node's log holds nothing of those calls, and in the
//     strict order a consumer that cannot record a request never sends it
//     (in the overlap order, no more than the first message of a stream);
//   - once the disk accepts writes again, calls succeed without a restart
//     and both logs verify, the records from before the fault included.
//
// The fault is a file-size limit of zero on the running node process: every
// write to a file fails with EFBIG, the journal append of each commit
// included, so no record of the faulted node becomes durable.
func TestEvidenceFaultFailsClosed(t *testing.T) {
	for _, order := range []string{"strict", "overlap"} {
		t.Run(order, func(t *testing.T) {
			c := startInteropWith(t, "evidence_order: "+order+"\n")
			client := consumerTestService(t, c)
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()

			before := unary(ctx, t, client)
			if before.err != nil {
				t.Fatalf("call before any fault: %v", before.err)
			}
			for _, faulted := range []struct{ name, id string }{{"vpcp", consumerNode}, {"bnv", providerNode}} {
				t.Run("at "+faulted.name, func(t *testing.T) {
					lift := limitFileSize(t, c.Proc(faulted.name).PID())
					calls := map[string]result{
						"unary":            unary(ctx, t, client),
						"client streaming": clientStream(ctx, client),
						"server streaming": serverStream(ctx, client),
					}
					lift()
					for kind, r := range calls {
						if err := wantEvidenceUnavailable(r.err, faulted.id); err != nil {
							t.Errorf("%s call with %s's evidence log failing: %v", kind, faulted.name, err)
						}
						if r.id == "" {
							t.Errorf("%s call: no ketnoi-message-id trailer to trace", kind)
							continue
						}
						if out, err := trace(ctx, c, faulted.name, r.id); !noRecords(err) {
							t.Errorf("%s call: %s's log, whose commits all failed, holds records of it: %v\n%s",
								kind, faulted.name, err, out)
						}
						if order == "overlap" && faulted.name == "vpcp" && kind == "client streaming" {
							// The first request message may leave while its
							// record commits; the later ones wait for it.
							out, _ := trace(ctx, c, "bnv", r.id)
							if n := strings.Count(out, "REQUEST_RECEIVED"); n > 1 {
								t.Errorf("the provider received %d request messages of a stream whose first record failed at the consumer; want at most 1\n%s", n, out)
							}
						}
						if order == "strict" && faulted.name == "vpcp" {
							if out, err := trace(ctx, c, "bnv", r.id); !noRecords(err) {
								t.Errorf("%s call: the provider saw a request its consumer could not record: %v\n%s",
									kind, err, out)
							}
						}
					}
					if r := unary(ctx, t, client); r.err != nil {
						t.Fatalf("call after the disk recovered: %v", r.err)
					}
				})
			}
			for _, node := range []string{"vpcp", "bnv"} {
				if out, err := c.CLI(ctx, "evidence", "verify", "--node", c.Proc(node).Addrs["admin"]); err != nil || !strings.HasPrefix(out, "ok") {
					t.Errorf("verify %s after the faults: %v %s", node, err, out)
				}
				if out, err := trace(ctx, c, node, before.id); err != nil || !strings.Contains(out, "REQUEST") {
					t.Errorf("%s lost the records made before the faults: %v\n%s", node, err, out)
				}
			}
		})
	}
}

// result is how one call ended and the exchange it was.
type result struct {
	id  string
	err error
}

func unary(ctx context.Context, t *testing.T, client testpb.TestServiceClient) result {
	t.Helper()
	var trailer metadata.MD
	resp, err := client.UnaryCall(ctx, &testpb.SimpleRequest{ResponseSize: 64, Payload: &testpb.Payload{Body: make([]byte, 100)}},
		grpc.Trailer(&trailer))
	if err == nil && len(resp.GetPayload().GetBody()) != 64 {
		err = errors.New("answer of the wrong size")
	}
	return result{id: messageID(trailer), err: err}
}

func clientStream(ctx context.Context, client testpb.TestServiceClient) result {
	stream, err := client.StreamingInputCall(ctx)
	if err != nil {
		return result{err: err}
	}
	for range 3 {
		if err := stream.Send(&testpb.StreamingInputCallRequest{Payload: &testpb.Payload{Body: make([]byte, 100)}}); err != nil {
			break // the status comes from CloseAndRecv
		}
	}
	_, err = stream.CloseAndRecv()
	return result{id: messageID(stream.Trailer()), err: err}
}

func serverStream(ctx context.Context, client testpb.TestServiceClient) result {
	stream, err := client.StreamingOutputCall(ctx, &testpb.StreamingOutputCallRequest{
		ResponseParameters: []*testpb.ResponseParameters{{Size: 10}, {Size: 10}, {Size: 10}}})
	if err != nil {
		return result{err: err}
	}
	for err == nil {
		_, err = stream.Recv()
	}
	if err.Error() == "EOF" {
		err = nil
	}
	return result{id: messageID(stream.Trailer()), err: err}
}

func messageID(md metadata.MD) string {
	if v := md.Get("ketnoi-message-id"); len(v) > 0 {
		return v[0]
	}
	return ""
}

// wantEvidenceUnavailable checks that err is the refusal of node whose
// evidence log failed.
func wantEvidenceUnavailable(err error, node string) error {
	if err == nil {
		return errors.New("succeeded; want Unavailable")
	}
	st := status.Convert(err)
	if st.Code() != codes.Unavailable {
		return err
	}
	for _, d := range st.Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok && info.GetDomain() == exchange.ErrorDomain {
			if info.GetReason() != exchange.ReasonEvidenceUnavailable || info.GetMetadata()["node"] != node {
				return errors.New("detail " + info.GetReason() + " from " + info.GetMetadata()["node"] +
					"; want " + exchange.ReasonEvidenceUnavailable + " from " + node)
			}
			return nil
		}
	}
	return errors.New("no ketnoi ErrorInfo detail in " + st.String())
}

// limitFileSize stops the process pid from writing to any file, as a full
// disk would; the returned function lifts the limit.
func limitFileSize(t *testing.T, pid int) (lift func()) {
	t.Helper()
	var old unix.Rlimit
	if err := unix.Prlimit(pid, unix.RLIMIT_FSIZE, nil, &old); err != nil {
		t.Fatalf("read the file-size limit of process %d: %v", pid, err)
	}
	limited := unix.Rlimit{Cur: 0, Max: old.Max}
	if err := unix.Prlimit(pid, unix.RLIMIT_FSIZE, &limited, nil); err != nil {
		t.Fatalf("limit file size of process %d: %v", pid, err)
	}
	lifted := false
	lift = func() {
		if lifted {
			return
		}
		lifted = true
		if err := unix.Prlimit(pid, unix.RLIMIT_FSIZE, &old, nil); err != nil {
			t.Fatalf("restore the file-size limit of process %d: %v", pid, err)
		}
	}
	t.Cleanup(lift)
	return lift
}
