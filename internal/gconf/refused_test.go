package gconf

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
	"google.golang.org/grpc"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/ketnoi/ketnoi/internal/logging/logtest"
	registryv1 "github.com/ketnoi/ketnoi/proto/ketnoi/registry/v1"
)

// A registry that refuses the node's certificate answers with a TLS alert,
// which reaches the node only as the text of an Unavailable status; one
// that refuses a removed node answers PermissionDenied. Both get a hint in
// the node's log; other failures do not. The alert the node's
// credentials caught tells a refusal that gRPC reported only as a broken
// connection.
func TestRegistryRefusal(t *testing.T) {
	brokenPipe := status.Error(codes.Unavailable, "connection error: desc = \"transport: failed to write client preface: "+
		"write tcp 127.0.0.1:50000->127.0.0.1:7443: write: broken pipe\"")
	for _, tt := range []struct {
		err         error
		alert, want string
	}{
		{brokenPipe, "tls: unknown certificate authority",
			"the registry refused this node's certificate (tls: unknown certificate authority): check"},
		{brokenPipe, "", ""},
		// An alert left from an earlier attempt does not explain a removal.
		{status.Error(codes.PermissionDenied, "node … was removed"), "tls: bad certificate",
			"the registry refuses this node: an operator removed it"},
	} {
		got := registryRefusal(tt.err, tt.alert)
		if (tt.want == "") != (got == "") || !strings.HasPrefix(got, tt.want) {
			t.Errorf("registryRefusal(%v, %q) = %q, want %q…", tt.err, tt.alert, got, tt.want)
		}
	}
	for _, tt := range []struct {
		err  error
		want string
	}{
		{status.Error(codes.Unavailable, "connection error: desc = \"error reading server preface: remote error: tls: bad certificate\""),
			"the registry refused this node's certificate"},
		{status.Error(codes.PermissionDenied, "node spiffe://vn.ketnoi/node/NN/x/y was removed from the registry at 2026-12-05T01:00:00Z"),
			"the registry refuses this node: an operator removed it"},
		// A watch that delivered versions before the registry ended it.
		{fmt.Errorf("%w: %w", errProgress, status.Error(codes.PermissionDenied, "node … was removed")),
			"the registry refuses this node: an operator removed it"},
		{status.Error(codes.Unavailable, "connection error: desc = \"transport: Error while dialing: dial tcp 127.0.0.1:7443: connect: connection refused\""), ""},
		{errors.New("tls: failed to verify certificate: x509: certificate signed by unknown authority"), ""},
		{nil, ""},
	} {
		got := registryRefusal(tt.err, "")
		if (tt.want == "") != (got == "") || !strings.HasPrefix(got, tt.want) {
			t.Errorf("registryRefusal(%v) = %q, want %q…", tt.err, got, tt.want)
		}
	}
}

// TestRunLogsRemoval: a node the registry refuses says so in its log, with
// the registry's own reason.
func TestRunLogsRemoval(t *testing.T) {
	db, err := bolt.Open(filepath.Join(t.TempDir(), "state.db"), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var logs logtest.Buffer
	refusal := status.Error(codes.PermissionDenied, "node spiffe://vn.ketnoi/node/NN/000.00.00.G22/vpcp was removed from the registry")
	s, err := NewSource(db, refusingRegistry{err: refusal}, x509.NewCertPool(), slog.New(slog.NewJSONHandler(&logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	if err := s.Run(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Run = %v, want the context's end", err)
	}
	out := logs.String()
	if !strings.Contains(out, "was removed from the registry") || !strings.Contains(out, "the registry refuses this node") ||
		!strings.Contains(out, "registry refused this node and no global configuration yet") ||
		strings.Contains(out, "unreachable") {
		t.Errorf("log does not name the refusal:\n%s", out)
	}
	if r := s.Refused(); !strings.HasPrefix(r, "the registry refuses this node: an operator removed it") {
		t.Errorf("Refused() = %q, want the removal", r)
	}
}

// refusingRegistry is a registry that refuses every watch with err.
type refusingRegistry struct {
	registryv1.RegistryServiceClient
	err error
}

func (r refusingRegistry) WatchConfiguration(context.Context, *registryv1.WatchConfigurationRequest,
	...grpc.CallOption) (grpc.ServerStreamingClient[registryv1.WatchConfigurationResponse], error) {
	return nil, r.err
}
