package integration

import (
	"context"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	testpb "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/ketnoi/ketnoi/integration/cluster"
	"github.com/ketnoi/ketnoi/internal/exchange"
	"github.com/ketnoi/ketnoi/internal/sign"
	exchangev1 "github.com/ketnoi/ketnoi/proto/ketnoi/exchange/v1"
	registryv1 "github.com/ketnoi/ketnoi/proto/ketnoi/registry/v1"
)

// TestStreamFidelity checks behaviours of streams through two nodes that the
// interop suite does not: chained stream messages, metadata policy, size
// limits and the platform-error marker.
func TestStreamFidelity(t *testing.T) {
	c := startInterop(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	conn, err := grpc.NewClient(c.LocalAddr("vpcp", cluster.ConsumerClient), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	client := testpb.NewTestServiceClient(conn)

	t.Run("dropped, reordered or replayed stream messages end the stream", func(t *testing.T) {
		for _, tc := range []struct {
			name  string
			order []int // sequence numbers sent after #0
		}{
			{"dropped", []int{2}},
			{"reordered", []int{2, 1}},
			{"replayed", []int{1, 1}},
		} {
			t.Run(tc.name, func(t *testing.T) {
				st := sendChained(ctx, t, c, tc.order)
				if codes.Code(st.GetCode()) != codes.DataLoss || !strings.Contains(st.GetMessage(), "dropped, reordered or replayed") {
					t.Errorf("status %v %q, want DataLoss naming the broken sequence", codes.Code(st.GetCode()), st.GetMessage())
				}
				if r := statusDetailReason(st); r != exchange.ReasonSequence {
					t.Errorf("reason %q, want %s", r, exchange.ReasonSequence)
				}
			})
		}
	})

	t.Run("a later stream frame signed by another member is refused", func(t *testing.T) {
		other, err := sign.LoadSigner(c.Path("bnv-sign.pem"), c.Path("bnv-sign-key.pem"))
		if err != nil {
			t.Fatal(err)
		}
		bs := exchange.NewBatchSigner(other, nil)
		defer bs.Close()
		st := sendChainedSigned(ctx, t, c, []int{1}, bs)
		if codes.Code(st.GetCode()) != codes.Unauthenticated || statusDetailReason(st) != exchange.ReasonSignerMismatch {
			t.Errorf("status %v %q (%s), want Unauthenticated %s", codes.Code(st.GetCode()), st.GetMessage(),
				statusDetailReason(st), exchange.ReasonSignerMismatch)
		}
	})

	t.Run("custom and binary metadata pass both ways", func(t *testing.T) {
		// The interop server echoes these keys in its header and trailer.
		// (Which keys a node drops is covered by the node's unit tests.)
		md := metadata.Pairs("x-grpc-test-echo-initial", "keep", "x-grpc-test-echo-trailing-bin", "\x00\xff")
		var header, trailer metadata.MD
		_, err := client.UnaryCall(metadata.NewOutgoingContext(ctx, md), &testpb.SimpleRequest{},
			grpc.Header(&header), grpc.Trailer(&trailer))
		if err != nil {
			t.Fatal(err)
		}
		if got := header.Get("x-grpc-test-echo-initial"); len(got) != 1 || got[0] != "keep" {
			t.Errorf("echoed initial metadata = %q", got)
		}
		if got := trailer.Get("x-grpc-test-echo-trailing-bin"); len(got) != 1 || got[0] != "\x00\xff" {
			t.Errorf("echoed binary trailer = %q", got)
		}
		if len(header.Get("ketnoi-message-id")) != 1 {
			t.Errorf("response header lacks ketnoi-message-id: %v", header)
		}
	})

	t.Run("a second request message of a unary call is refused, not dropped", func(t *testing.T) {
		// A raw stream sends what a generated client cannot: two messages
		// to a unary method.
		desc := &grpc.StreamDesc{ClientStreams: true, ServerStreams: true}
		st, err := conn.NewStream(ctx, desc, "/grpc.testing.TestService/UnaryCall")
		if err != nil {
			t.Fatal(err)
		}
		for range 2 {
			if err := st.SendMsg(&testpb.SimpleRequest{ResponseSize: 1}); err != nil {
				t.Fatal(err)
			}
		}
		if err := st.CloseSend(); err != nil {
			t.Fatal(err)
		}
		err = st.RecvMsg(&testpb.SimpleResponse{})
		s := status.Convert(err)
		if reason, _ := exchange.PlatformReason(s); s.Code() != codes.Unimplemented || reason != exchange.ReasonTooManyMessages {
			t.Errorf("two request messages: %v (reason %q), want Unimplemented with %s", err, reason, exchange.ReasonTooManyMessages)
		}
	})

	t.Run("a caller's deadline ends a call through both nodes", func(t *testing.T) {
		cctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
		defer cancel()
		// The interop server sleeps per response parameter; ask for longer
		// than the deadline and expect DeadlineExceeded from the backend's
		// side, not a hang.
		stream, err := client.StreamingOutputCall(cctx, &testpb.StreamingOutputCallRequest{
			ResponseParameters: []*testpb.ResponseParameters{{Size: 1, IntervalUs: 2_000_000}},
		})
		if err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		_, err = stream.Recv()
		if status.Code(err) != codes.DeadlineExceeded {
			t.Fatalf("got %v, want DeadlineExceeded", err)
		}
		if d := time.Since(start); d > time.Second {
			t.Errorf("deadline took %v to take effect", d)
		}
	})

	t.Run("messages over the limit fail with ResourceExhausted naming it", func(t *testing.T) {
		big := make([]byte, 5<<20)
		_, err := client.UnaryCall(ctx, &testpb.SimpleRequest{Payload: &testpb.Payload{Body: big}})
		st := status.Convert(err)
		if st.Code() != codes.ResourceExhausted || !strings.Contains(st.Message(), "4194304") {
			t.Errorf("oversize request: %v, want ResourceExhausted naming 4194304", err)
		}
		_, err = client.UnaryCall(ctx, &testpb.SimpleRequest{ResponseSize: 5 << 20})
		st = status.Convert(err)
		if st.Code() != codes.ResourceExhausted || !strings.Contains(st.Message(), "4194304") {
			t.Errorf("oversize response: %v, want ResourceExhausted naming 4194304", err)
		}
		// Metadata counts too: it travels in the signed header.
		bigValue := strings.Repeat("x", 5<<20)
		_, err = client.UnaryCall(metadata.AppendToOutgoingContext(ctx, "x-big", bigValue), &testpb.SimpleRequest{})
		st = status.Convert(err)
		if reason, _ := exchange.PlatformReason(st); st.Code() != codes.ResourceExhausted || reason != exchange.ReasonMessageTooLarge ||
			!strings.Contains(st.Message(), "max_message_bytes 4194304") {
			t.Errorf("oversize metadata: %v (%s), want ResourceExhausted %s naming max_message_bytes 4194304",
				st.Message(), reason, exchange.ReasonMessageTooLarge)
		}
	})

	t.Run("a slow reader slows the writer instead of filling node memory", func(t *testing.T) {
		const msgs, size = 200, 1 << 20
		params := make([]*testpb.ResponseParameters, msgs)
		for i := range params {
			params[i] = &testpb.ResponseParameters{Size: size}
		}
		before := map[string]int{"vpcp": rssKiB(t, c, "vpcp"), "bnv": rssKiB(t, c, "bnv")}
		stream, err := client.StreamingOutputCall(ctx, &testpb.StreamingOutputCallRequest{ResponseParameters: params})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := stream.Recv(); err != nil {
			t.Fatal(err)
		}
		// The backend could produce 200 MiB at once; while the caller reads
		// nothing, flow control must hold it back at every hop.
		time.Sleep(1500 * time.Millisecond)
		limit := 64 << 10 // KiB
		if raceEnabled {
			// Race-built nodes shadow every allocation several times over;
			// 200 MiB held in memory would still be far above this.
			limit *= 4
		}
		for node, b := range before {
			if grown := rssKiB(t, c, node) - b; grown > limit {
				t.Errorf("node %s grew by %d MiB while the reader paused", node, grown>>10)
			}
		}
		got := 1
		for {
			_, err := stream.Recv()
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatalf("after %d messages: %v", got, err)
			}
			got++
		}
		if got != msgs {
			t.Errorf("received %d messages, want %d", got, msgs)
		}
	})

	t.Run("a bidi stream reaches a server that speaks first", func(t *testing.T) {
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		stream, err := client.FullDuplexCall(metadata.AppendToOutgoingContext(cctx, "x-grpc-test-echo-initial", "hello"))
		if err != nil {
			t.Fatal(err)
		}
		// No message sent yet: the headers must still arrive.
		h, err := stream.Header()
		if err != nil {
			t.Fatal(err)
		}
		if got := h.Get("x-grpc-test-echo-initial"); len(got) != 1 || got[0] != "hello" {
			t.Errorf("headers before any request message: %v", h)
		}
		_ = stream.CloseSend()
	})

	t.Run("a stream the backend ends early returns its status at once", func(t *testing.T) {
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		stream, err := client.FullDuplexCall(cctx)
		if err != nil {
			t.Fatal(err)
		}
		if err := stream.Send(&testpb.StreamingOutputCallRequest{
			ResponseStatus: &testpb.EchoStatus{Code: int32(codes.InvalidArgument), Message: "stop here"},
		}); err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		// The client has not half-closed; the node must not wait for it.
		_, err = stream.Recv()
		if st := status.Convert(err); st.Code() != codes.InvalidArgument || st.Message() != "stop here" {
			t.Fatalf("got %v, want InvalidArgument \"stop here\"", err)
		}
		if d := time.Since(start); d > 3*time.Second {
			t.Errorf("status took %v", d)
		}
	})

	t.Run("a server stream is cancelled by the caller within the call", func(t *testing.T) {
		cctx, cancel := context.WithCancel(ctx)
		stream, err := client.FullDuplexCall(cctx)
		if err != nil {
			t.Fatal(err)
		}
		if err := stream.Send(&testpb.StreamingOutputCallRequest{ResponseParameters: []*testpb.ResponseParameters{{Size: 10}}}); err != nil {
			t.Fatal(err)
		}
		if _, err := stream.Recv(); err != nil {
			t.Fatal(err)
		}
		cancel()
		if _, err := stream.Recv(); status.Code(err) != codes.Canceled {
			t.Errorf("after cancel: %v, want Canceled", err)
		}
	})
}

// sendChained plays a consumer node that opens a client stream, sends
// message #0, then the given sequence numbers, and returns the provider's
// final status.
func sendChained(ctx context.Context, t *testing.T, c *cluster.Cluster, order []int) *exchangev1.CallStatus {
	return sendChainedSigned(ctx, t, c, order, nil)
}

// sendChainedSigned is sendChained with frames after #0 signed by later
// (when not nil) instead of the consumer's member key.
func sendChainedSigned(ctx context.Context, t *testing.T, c *cluster.Cluster, order []int, later *exchange.BatchSigner) *exchangev1.CallStatus {
	t.Helper()
	fed, batch := actAsConsumerNode(t, c)
	stream, err := fed.Exchange(ctx)
	if err != nil {
		t.Fatal(err)
	}

	msgID := exchange.NewMessageID()
	payload, _ := proto.Marshal(&testpb.StreamingInputCallRequest{Payload: &testpb.Payload{Body: []byte("x")}})
	var chain exchange.Chain
	sealed := make([]*exchange.Sealed, 0, 4)
	for i := 0; i <= 2; i++ {
		h := &exchangev1.Header{
			MessageId: msgID, Direction: exchangev1.Direction_DIRECTION_REQUEST,
			CallKind: exchangev1.CallKind_CALL_KIND_CLIENT_STREAMING, Client: cluster.ConsumerClient,
			Service: cluster.InteropService, Method: "StreamingInputCall",
			SenderNode: consumerNode, AudienceNode: providerNode,
			Classification: registryv1.Classification_CLASSIFICATION_NORMAL,
		}
		chain.Next(h)
		signer := batch
		if i > 0 && later != nil {
			signer = later
		}
		s, err := exchange.Seal(ctx, signer, h, payload, true, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		chain.Advance(s.Digest)
		sealed = append(sealed, s)
	}
	frames := []*exchangev1.Frame{sealed[0].Frame}
	for _, i := range order {
		frames = append(frames, sealed[i].Frame)
	}
	for _, f := range frames {
		if err := stream.Send(&exchangev1.ExchangeRequest{Frame: f}); err != nil {
			break
		}
	}
	for {
		resp, err := stream.Recv()
		if err == io.EOF || err != nil {
			t.Fatalf("stream ended without a signed final status: %v", err)
		}
		var h exchangev1.Header
		if err := proto.Unmarshal(resp.GetFrame().GetSignedHeader().GetHeader(), &h); err != nil {
			t.Fatal(err)
		}
		if h.GetFinal() {
			return h.GetStatus()
		}
	}
}

// rssKiB returns the resident memory of a cluster process.
func rssKiB(t *testing.T, c *cluster.Cluster, name string) int {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", c.Proc(name).PID()))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			n, _ := strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(v), " kB"))
			return n
		}
	}
	t.Fatalf("no VmRSS for %s", name)
	return 0
}
