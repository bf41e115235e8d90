package logging

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"unicode/utf8"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

func TestCallInterceptorsLogFailuresNotSuccesses(t *testing.T) {
	var buf bytes.Buffer
	l := slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelInfo}))
	unary, _ := CallInterceptors(l)
	info := &grpc.UnaryServerInfo{FullMethod: "/ketnoi.exchange.v1.FederationService/Exchange"}

	ok := func(context.Context, any) (any, error) { return "fine", nil }
	if resp, err := unary(context.Background(), nil, info, ok); err != nil || resp != "fine" {
		t.Fatalf("OK call: got %v, %v", resp, err)
	}
	if buf.Len() != 0 {
		t.Fatalf("an OK call logged at info level: %s", buf.String())
	}

	denied := func(context.Context, any) (any, error) {
		return nil, status.Error(codes.PermissionDenied, "no grant")
	}
	if _, err := unary(context.Background(), nil, info, denied); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("failed call: error %v passed on changed", err)
	}
	var line map[string]any
	if err := json.Unmarshal(buf.Bytes(), &line); err != nil {
		t.Fatalf("log line %q: %v", buf.String(), err)
	}
	want := map[string]any{
		"level": "WARN", "msg": "finished call", KeyCode: "PermissionDenied", KeyCallKind: "unary",
		KeyMethod: "ketnoi.exchange.v1.FederationService/Exchange", KeyError: "no grant",
	}
	for k, v := range want {
		if line[k] != v {
			t.Errorf("log %s = %v, want %v (line %s)", k, line[k], v, buf.String())
		}
	}
	if _, ok := line[KeyDuration]; !ok {
		t.Errorf("log line has no %s: %s", KeyDuration, buf.String())
	}
}

func TestCallInterceptorsLogSuccessAtDebug(t *testing.T) {
	var buf bytes.Buffer
	l := slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	_, stream := CallInterceptors(l)
	info := &grpc.StreamServerInfo{FullMethod: "/grpc.testing.TestService/FullDuplexCall", IsClientStream: true, IsServerStream: true}
	err := stream(nil, fakeStream{}, info, func(any, grpc.ServerStream) error { return nil })
	if err != nil {
		t.Fatal(err)
	}
	var line map[string]any
	if err := json.Unmarshal(buf.Bytes(), &line); err != nil {
		t.Fatalf("log line %q: %v", buf.String(), err)
	}
	if line["level"] != "DEBUG" || line[KeyCode] != "OK" || line[KeyCallKind] != KindBidiStream {
		t.Errorf("log line %s: want a debug line with code OK, kind %s", buf.String(), KindBidiStream)
	}
}

// TestCallInterceptorsKind checks the kind of each logged stream call: the
// shape the server declared, or the one a handler of bidirectional streams
// names with SetCallKind, as a node does for the calls it proxies.
func TestCallInterceptorsKind(t *testing.T) {
	setKind := func(kind string) grpc.StreamHandler {
		return func(_ any, ss grpc.ServerStream) error {
			// Handlers pass derived contexts around; the kind must still
			// reach the call's log line.
			ctx, cancel := context.WithCancel(ss.Context())
			defer cancel()
			SetCallKind(ctx, kind)
			return status.Error(codes.PermissionDenied, "no grant")
		}
	}
	plain := func(any, grpc.ServerStream) error { return status.Error(codes.PermissionDenied, "no grant") }
	tests := []struct {
		name           string
		client, server bool
		handler        grpc.StreamHandler
		want           string
	}{
		{"declared client stream", true, false, plain, KindClientStream},
		{"declared server stream", false, true, plain, KindServerStream},
		{"declared bidi stream", true, true, plain, KindBidiStream},
		{"proxied unary", true, true, setKind(KindUnary), KindUnary},
		{"proxied client stream", true, true, setKind(KindClientStream), KindClientStream},
		{"proxied server stream", true, true, setKind(KindServerStream), KindServerStream},
		// A server-streaming method cannot carry another shape; its
		// declared kind stands.
		{"set on a declared server stream", false, true, setKind(KindUnary), KindServerStream},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var buf bytes.Buffer
			_, stream := CallInterceptors(slog.New(slog.NewJSONHandler(&buf, nil)))
			info := &grpc.StreamServerInfo{FullMethod: "/vn.gov.dvhc.v1.AdminUnitService/ConvertOldUnit",
				IsClientStream: tt.client, IsServerStream: tt.server}
			if err := stream(nil, fakeStream{}, info, tt.handler); status.Code(err) != codes.PermissionDenied {
				t.Fatalf("handler error %v passed on changed", err)
			}
			var line map[string]any
			if err := json.Unmarshal(buf.Bytes(), &line); err != nil {
				t.Fatalf("log line %q: %v", buf.String(), err)
			}
			if line[KeyCallKind] != tt.want {
				t.Errorf("kind = %v, want %s (line %s)", line[KeyCallKind], tt.want, buf.String())
			}
		})
	}
}

// TestCallInterceptorsMessageID: a handler of bidirectional streams names
// the exchange its call carries, and the call's line says it; other calls'
// lines have no message id.
func TestCallInterceptorsMessageID(t *testing.T) {
	const id = "019ae8c4-5b21-7a3e-9c4d-2f1b6e0a8d37"
	withID := func(_ any, ss grpc.ServerStream) error {
		ctx, cancel := context.WithCancel(ss.Context())
		defer cancel()
		SetMessageID(ctx, id)
		return status.Error(codes.PermissionDenied, "no grant")
	}
	for _, tt := range []struct {
		name           string
		client, server bool
		want           any
	}{
		{"bidi stream", true, true, id},
		{"server stream", false, true, nil},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var buf bytes.Buffer
			_, stream := CallInterceptors(slog.New(slog.NewJSONHandler(&buf, nil)))
			info := &grpc.StreamServerInfo{FullMethod: "/ketnoi.exchange.v1.FederationService/Exchange",
				IsClientStream: tt.client, IsServerStream: tt.server}
			_ = stream(nil, fakeStream{}, info, withID)
			var line map[string]any
			if err := json.Unmarshal(buf.Bytes(), &line); err != nil {
				t.Fatalf("log line %q: %v", buf.String(), err)
			}
			if line[KeyMessageID] != tt.want {
				t.Errorf("%s = %v, want %v (line %s)", KeyMessageID, line[KeyMessageID], tt.want, buf.String())
			}
		})
	}
}

// TestCallInterceptorsBoundPeerText: a status message a provider's backend
// wrote, and a method name a caller sent, reach the log cut to
// MaxValueBytes, saying how much was left out; a 4 MiB error message must

// TestCallInterceptorsReported: a call whose handler reported its end
// itself has no line, whatever its kind; the next call has its own.
func TestCallInterceptorsReported(t *testing.T) {
	var buf bytes.Buffer
	unary, stream := CallInterceptors(slog.New(slog.NewJSONHandler(&buf, nil)))
	refused := status.Error(codes.PermissionDenied, "node removed")
	reported := func(ctx context.Context) error {
		SetReported(ctx)
		return refused
	}
	_, _ = unary(context.Background(), nil, &grpc.UnaryServerInfo{FullMethod: "/a.B/Get"},
		func(ctx context.Context, _ any) (any, error) { return nil, reported(ctx) })
	for _, shape := range [][2]bool{{false, true}, {true, false}, {true, true}} {
		info := &grpc.StreamServerInfo{FullMethod: "/a.B/Watch", IsClientStream: shape[0], IsServerStream: shape[1]}
		_ = stream(nil, fakeStream{}, info, func(_ any, ss grpc.ServerStream) error { return reported(ss.Context()) })
	}
	if buf.Len() != 0 {
		t.Errorf("reported calls were logged:\n%s", buf.String())
	}
	_, _ = unary(context.Background(), nil, &grpc.UnaryServerInfo{FullMethod: "/a.B/Get"},
		func(context.Context, any) (any, error) { return nil, refused })
	if !strings.Contains(buf.String(), `"msg":"finished call"`) {
		t.Errorf("an unreported refusal was not logged: %q", buf.String())
	}
}

// not become a 4 MiB log line.
func TestCallInterceptorsBoundPeerText(t *testing.T) {
	huge := strings.Repeat("x", 4<<20)
	var buf bytes.Buffer
	_, stream := CallInterceptors(slog.New(slog.NewTextHandler(&buf, nil)))
	info := &grpc.StreamServerInfo{FullMethod: "/svc/" + huge, IsClientStream: true, IsServerStream: true}
	_ = stream(nil, fakeStream{}, info, func(_ any, ss grpc.ServerStream) error {
		SetMessageID(ss.Context(), huge)
		return status.Error(codes.InvalidArgument, "field too long: "+huge)
	})
	line := buf.String()
	if len(line) > 4*MaxValueBytes {
		t.Fatalf("call log line of %d bytes, want at most %d", len(line), 4*MaxValueBytes)
	}
	for _, want := range []string{
		fmt.Sprintf("[%d more bytes cut]", 4<<20+len("field too long: ")-MaxValueBytes),
		fmt.Sprintf("[%d more bytes cut]", 4<<20+len("svc/")-MaxValueBytes),
		fmt.Sprintf("[%d more bytes cut]", 4<<20-MaxValueBytes),
		"field too long: xxx",
	} {
		if !strings.Contains(line, want) {
			t.Errorf("call log line does not say %q: %.300s...", want, line)
		}
	}
}

func TestBounded(t *testing.T) {
	fits := strings.Repeat("a", MaxValueBytes)
	if got := Bounded(fits); got != fits {
		t.Errorf("Bounded changed a string of %d bytes", len(fits))
	}
	if got, want := Bounded(fits+"bc"), fits+"... [2 more bytes cut]"; got != want {
		t.Errorf("Bounded(%d bytes) = ...%q, want ...%q", MaxValueBytes+2, got[MaxValueBytes-4:], want[MaxValueBytes-4:])
	}
	// A cut inside a rune backs up to its start: "ộ" is 3 bytes.
	odd := strings.Repeat("a", MaxValueBytes-1) + strings.Repeat("ộ", 10)
	got := Bounded(odd)
	if !utf8.ValidString(got) || !strings.HasPrefix(got, strings.Repeat("a", MaxValueBytes-1)+"...") ||
		!strings.HasSuffix(got, "[30 more bytes cut]") {
		t.Errorf("Bounded cut inside a rune: ...%q", got[MaxValueBytes-4:])
	}
}

type fakeStream struct{ grpc.ServerStream }

func (fakeStream) Context() context.Context { return context.Background() }

// TestCallLevels pins the levels a node's call log uses: the node failing
// is an error, a caller's mistake or a refusal is a warning.
func TestCallLevels(t *testing.T) {
	for code, want := range map[codes.Code]slog.Level{
		codes.OK:               slog.LevelDebug,
		codes.Unimplemented:    slog.LevelWarn,
		codes.PermissionDenied: slog.LevelWarn,
		codes.Unavailable:      slog.LevelWarn,
		codes.Internal:         slog.LevelError,
		codes.DataLoss:         slog.LevelError,
	} {
		if got := callLevel(code); got != want {
			t.Errorf("callLevel(%v) = %v, want %v", code, got, want)
		}
	}
}
