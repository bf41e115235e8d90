package gconf

import (
	"errors"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// A registry that refuses the node's certificate answers with a TLS alert,
// which reaches the node only as the text of an Unavailable status.
func TestRefusedByRegistry(t *testing.T) {
	for _, tt := range []struct {
		err  error
		want bool
	}{
		{status.Error(codes.Unavailable, "connection error: desc = \"error reading server preface: remote error: tls: bad certificate\""), true},
		{status.Error(codes.Unavailable, "connection error: desc = \"transport: Error while dialing: dial tcp 127.0.0.1:7443: connect: connection refused\""), false},
		{errors.New("tls: failed to verify certificate: x509: certificate signed by unknown authority"), false},
		{nil, false},
	} {
		if got := refusedByRegistry(tt.err); got != tt.want {
			t.Errorf("refusedByRegistry(%v) = %t, want %t", tt.err, got, tt.want)
		}
	}
}
