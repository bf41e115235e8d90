package logging

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"testing"

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
