package node

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/ketnoi/ketnoi/internal/exchange"
	"github.com/ketnoi/ketnoi/internal/logging"
	"github.com/ketnoi/ketnoi/internal/logging/logtest"
	"github.com/ketnoi/ketnoi/internal/proxy"
	evidencev1 "github.com/ketnoi/ketnoi/proto/ketnoi/evidence/v1"
	exchangev1 "github.com/ketnoi/ketnoi/proto/ketnoi/exchange/v1"
	registryv1 "github.com/ketnoi/ketnoi/proto/ketnoi/registry/v1"
)

// TestRefusalsBeforeSendingAreRecorded: a call the consumer node refuses
// before anything leaves is an exchange too. The application learns its
// message id, and the node's evidence holds a refusal under that id with
// the reason, the calling client and what the call asked for, unsigned.
func TestRefusalsBeforeSendingAreRecorded(t *testing.T) {
	now := time.Now()
	appMD := metadata.Pairs(MDPurpose, "KIEM_TRA", MDUser, "012345678901")
	cases := []struct {
		name   string
		method string
		md     metadata.MD
		setup  func(*federation)
		code   codes.Code
		reason string
		want   *exchangev1.Header // fields the record's header must carry
	}{
		{
			name: "no configuration yet", method: testGRPCPrefix + "ConvertOldUnit", md: appMD,
			setup: func(*federation) {},
			code:  codes.Unavailable, reason: exchange.ReasonConfigMissing,
			want: &exchangev1.Header{Method: "ConvertOldUnit", Purpose: "KIEM_TRA", User: "012345678901"},
		},
		{
			name: "unknown gRPC service", method: "/vn.gov.khac.v1.Other/Get",
			setup: func(f *federation) { f.publish(t, 1, now.Add(time.Hour)) },
			code:  codes.Unimplemented, reason: exchange.ReasonServiceUnknown,
			want: &exchangev1.Header{Method: "Get"},
		},
		{
			name: "unknown method", method: testGRPCPrefix + "Delete",
			setup: func(f *federation) { f.publish(t, 1, now.Add(time.Hour)) },
			code:  codes.Unimplemented, reason: exchange.ReasonMethodUnknown,
			want: &exchangev1.Header{Service: testService, Method: "Delete",
				Classification: registryv1.Classification_CLASSIFICATION_NORMAL},
		},
		{
			name: "malformed method name", method: "nonsense",
			setup: func(f *federation) { f.publish(t, 1, now.Add(time.Hour)) },
			code:  codes.Unimplemented, reason: exchange.ReasonMethodUnknown,
			want: &exchangev1.Header{Method: "nonsense"},
		},
		{
			name: "provider without a node", method: testGRPCPrefix + "ListCommunes", md: appMD,
			setup: func(f *federation) { f.noProvider = true; f.publish(t, 1, now.Add(time.Hour)) },
			code:  codes.Unavailable, reason: exchange.ReasonProviderUnreachable,
			want: &exchangev1.Header{Service: testService, Method: "ListCommunes",
				CallKind: exchangev1.CallKind_CALL_KIND_SERVER_STREAMING, Purpose: "KIEM_TRA", User: "012345678901",
				Classification: registryv1.Classification_CLASSIFICATION_NORMAL},
		},
		{
			name: "expired configuration", method: testGRPCPrefix + "ConvertOldUnit",
			setup: func(f *federation) { f.publish(t, 1, now.Add(-time.Second)) },
			code:  codes.Unavailable, reason: exchange.ReasonConfigExpired,
			want: &exchangev1.Header{Service: testService, Method: "ConvertOldUnit",
				CallKind:       exchangev1.CallKind_CALL_KIND_UNARY,
				Classification: registryv1.Classification_CLASSIFICATION_NORMAL},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := newFederation(t)
			tc.setup(f)
			n := f.recordingNode(t, testConsumer, now, slog.New(slog.DiscardHandler))
			c := &consumer{n: n, client: testClientID(t)}
			ctx := context.Background()
			if tc.md != nil {
				ctx = metadata.NewIncomingContext(ctx, tc.md)
			}
			ss := &fakeCall{ctx: ctx}
			err := c.handle(nil, withMethod(ss, tc.method))
			st := status.Convert(err)
			if st.Code() != tc.code {
				t.Fatalf("status %v, want %s", err, tc.code)
			}
			if reason, _ := exchange.PlatformReason(st); reason != tc.reason {
				t.Errorf("reason %q, want %q", reason, tc.reason)
			}
			ids := ss.trailer.Get(MDMessageID)
			if len(ids) != 1 || ids[0] == "" {
				t.Fatalf("trailer %v: want one %s", ss.trailer, MDMessageID)
			}

			entries, err := n.evidence.ByMessageID(ids[0])
			if err != nil {
				t.Fatal(err)
			}
			if len(entries) != 1 {
				t.Fatalf("%d records of message %s, want 1", len(entries), ids[0])
			}
			rec, h := entries[0].Record, entries[0].Header
			if rec.GetKind() != evidencev1.RecordKind_RECORD_KIND_REFUSED || rec.GetCode() != int32(tc.code) ||
				!strings.HasPrefix(rec.GetReason(), tc.reason+": ") {
				t.Errorf("record kind %v code %d reason %q, want REFUSED %d %s: …", rec.GetKind(), rec.GetCode(),
					rec.GetReason(), tc.code, tc.reason)
			}
			if rec.GetSignatureVerified() || len(rec.GetSignature()) != 0 || rec.GetNode() != testConsumer {
				t.Errorf("record verified %v, signature %d bytes, node %q: want an unsigned record of %s",
					rec.GetSignatureVerified(), len(rec.GetSignature()), rec.GetNode(), testConsumer)
			}
			if h == nil {
				t.Fatal("record's header does not parse")
			}
			if h.GetMessageId() != ids[0] || h.GetClient() != testClient || h.GetSenderNode() != testConsumer ||
				h.GetDirection() != exchangev1.Direction_DIRECTION_REQUEST ||
				h.GetProtocolVersion() != exchange.ProtocolVersion || !h.GetCreatedAt().AsTime().Equal(now) {
				t.Errorf("header id %q client %q sender %q direction %v version %d created %v: want %s %s %s request %d %v",
					h.GetMessageId(), h.GetClient(), h.GetSenderNode(), h.GetDirection(), h.GetProtocolVersion(),
					h.GetCreatedAt().AsTime(), ids[0], testClient, testConsumer, exchange.ProtocolVersion, now)
			}
			w := tc.want
			if h.GetService() != w.GetService() || h.GetMethod() != w.GetMethod() || h.GetCallKind() != w.GetCallKind() ||
				h.GetPurpose() != w.GetPurpose() || h.GetUser() != w.GetUser() ||
				h.GetClassification() != w.GetClassification() {
				t.Errorf("header asks for service %q method %q kind %v purpose %q user %q class %v, want %q %q %v %q %q %v",
					h.GetService(), h.GetMethod(), h.GetCallKind(), h.GetPurpose(), h.GetUser(), h.GetClassification(),
					w.GetService(), w.GetMethod(), w.GetCallKind(), w.GetPurpose(), w.GetUser(), w.GetClassification())
			}
		})
	}
}

// TestRefusedFirstMessagesAreRecorded: the node refuses an application's
// first message that breaks the method's shape or the size limit before
// anything is signed; the refusal is recorded and logged ("call refused
// before sending", with the message id and the reason) like the others.
func TestRefusedFirstMessagesAreRecorded(t *testing.T) {
	f := newFederation(t)
	now := time.Now()
	f.publish(t, 1, now.Add(time.Hour))
	for _, tc := range []struct {
		name   string
		frames [][]byte
		code   codes.Code
		reason string
	}{
		{"second message to a unary method", [][]byte{{1}, {2}}, codes.Unimplemented, exchange.ReasonTooManyMessages},
		{"message over the limit", [][]byte{make([]byte, 80<<10)}, codes.ResourceExhausted, exchange.ReasonMessageTooLarge},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var logs logtest.Buffer
			n := f.recordingNode(t, testConsumer, now, slog.New(slog.NewJSONHandler(&logs, nil)))
			n.signer = f.g22
			n.cfg.MaxMessageBytes = 1 << 10
			c := &consumer{n: n, client: testClientID(t)}
			ss := &frameCall{fakeCall: withMethod(&fakeCall{ctx: context.Background()}, testGRPCPrefix+"ConvertOldUnit"),
				frames: tc.frames}
			err := c.handle(nil, ss)
			if reason, _ := exchange.PlatformReason(status.Convert(err)); status.Code(err) != tc.code || reason != tc.reason {
				t.Fatalf("status %v, want %s %s", err, tc.code, tc.reason)
			}
			ids := ss.trailer.Get(MDMessageID)
			if len(ids) != 1 {
				t.Fatalf("trailer %v: want one %s", ss.trailer, MDMessageID)
			}
			entries, err := n.evidence.ByMessageID(ids[0])
			if err != nil {
				t.Fatal(err)
			}
			if len(entries) != 1 || entries[0].Record.GetKind() != evidencev1.RecordKind_RECORD_KIND_REFUSED ||
				!strings.HasPrefix(entries[0].Record.GetReason(), tc.reason+": ") ||
				entries[0].Header.GetService() != testService || entries[0].Header.GetMethod() != "ConvertOldUnit" {
				t.Errorf("records of %s: %v, want one refusal %s of %s ConvertOldUnit", ids[0], entries, tc.reason, testService)
			}
			var found bool
			for l := range strings.SplitSeq(logs.String(), "\n") {
				var m map[string]any
				if json.Unmarshal([]byte(l), &m) != nil || m["msg"] != "call refused before sending" {
					continue
				}
				found = true
				if m["level"] != "INFO" || m[logging.KeyMessageID] != ids[0] || m[logging.KeyReason] != tc.reason ||
					m[logging.KeyMethod] != strings.TrimPrefix(testGRPCPrefix, "/")+"ConvertOldUnit" {
					// The method as the finished-call line writes it.
					t.Errorf("refusal line %s, want INFO with message id %s, reason %s and the method", l, ids[0], tc.reason)
				}
			}
			if !found {
				t.Errorf("no \"call refused before sending\" line in:\n%s", logs.String())
			}
		})
	}
}

// frameCall is a fake call whose application sends frames, then ends its
// side.
type frameCall struct {
	*fakeCall
	frames [][]byte
}

func (c *frameCall) RecvMsg(m any) error {
	if len(c.frames) == 0 {
		return io.EOF
	}
	*m.(*proxy.Frame) = *proxy.NewFrame(c.frames[0])
	c.frames = c.frames[1:]
	return nil
}

// TestRefusalStandsWithoutEvidence: when the evidence log cannot take the
// refusal's record, the application still gets the refusal's own status,
// which says what is wrong with its call.
func TestRefusalStandsWithoutEvidence(t *testing.T) {
	f := newFederation(t)
	now := time.Now()
	f.publish(t, 1, now.Add(time.Hour))
	c := &consumer{n: f.node(t, testConsumer, now, slog.New(slog.DiscardHandler)), client: testClientID(t)}
	err := c.handle(nil, withMethod(&fakeCall{ctx: context.Background()}, testGRPCPrefix+"Delete"))
	if reason, _ := exchange.PlatformReason(status.Convert(err)); status.Code(err) != codes.Unimplemented ||
		reason != exchange.ReasonMethodUnknown {
		t.Errorf("status %v, want Unimplemented %s", err, exchange.ReasonMethodUnknown)
	}
}

// withMethod makes ss a call of method, as a server's transport stream
// names it.
func withMethod(ss *fakeCall, method string) *fakeCall {
	ss.ctx = grpc.NewContextWithServerTransportStream(ss.ctx, transport{method})
	return ss
}
