package pki_test

import (
	"context"
	"net"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/ketnoi/ketnoi/internal/mtls"
	"github.com/ketnoi/ketnoi/internal/pki"
)

// writeIdentity issues an SVID for sid from ca, writes it with the bundle of
// bundleCA into dir, and loads it back the way a node does.
func writeIdentity(t *testing.T, dir string, ca *pki.CA, sid spiffeid.ID, bundleCA *pki.CA) mtls.Identity {
	t.Helper()
	iss, err := ca.IssueSVID(sid, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile := filepath.Join(dir, "svid.pem"), filepath.Join(dir, "svid-key.pem")
	if err := iss.Write(certFile, keyFile); err != nil {
		t.Fatal(err)
	}
	if err := bundleCA.SaveOverwrite(dir); err != nil {
		t.Fatal(err)
	}
	ident, err := mtls.LoadFiles(certFile, keyFile, filepath.Join(dir, pki.BundleFile), bundleCA.TrustDomain)
	if err != nil {
		t.Fatalf("mtls.LoadFiles: %v", err)
	}
	return ident
}

// peerRecorder is a unary interceptor that records the SPIFFE ID of each
// caller the server let through.
type peerRecorder struct {
	mu  sync.Mutex
	ids []string
}

func (r *peerRecorder) intercept(
	ctx context.Context,
	req any,
	_ *grpc.UnaryServerInfo,
	h grpc.UnaryHandler,
) (any, error) {
	id, err := mtls.PeerID(ctx)
	if err != nil {
		return nil, status.Error(codes.Unauthenticated, err.Error())
	}
	r.mu.Lock()
	r.ids = append(r.ids, id.String())
	r.mu.Unlock()
	return h(ctx, req)
}

func (r *peerRecorder) seen() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.ids...)
}

// startHealthServer serves the gRPC health service on 127.0.0.1 with mTLS,
// accepting only the client ID want.
func startHealthServer(t *testing.T, ident mtls.Identity, want spiffeid.ID) (string, *peerRecorder) {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	rec := &peerRecorder{}
	srv := grpc.NewServer(
		grpc.Creds(mtls.ServerCredentials(ident, tlsconfig.AuthorizeID(want))),
		grpc.UnaryInterceptor(rec.intercept),
	)
	healthpb.RegisterHealthServer(srv, health.NewServer())
	go srv.Serve(lis)
	t.Cleanup(srv.Stop)
	return lis.Addr().String(), rec
}

func checkHealth(
	t *testing.T,
	addr string,
	ident mtls.Identity,
	server spiffeid.ID,
) (*healthpb.HealthCheckResponse, error) {
	t.Helper()
	conn, err := grpc.NewClient(addr,
		grpc.WithTransportCredentials(mtls.ClientCredentials(ident, tlsconfig.AuthorizeID(server))))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	return healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
}

func TestMTLSHandshake(t *testing.T) {
	ca := newCA(t, td)
	node := nodeID(t, td, "ss1")
	otherTD := spiffeid.RequireTrustDomainFromString("other.ketnoi")
	otherCA := newCA(t, otherTD)
	rogueCA := newCA(t, td) // same trust domain name, different key

	serverIdent := writeIdentity(t, t.TempDir(), ca, registry, ca)

	tests := []struct {
		name     string
		clientCA *pki.CA
		clientID spiffeid.ID
		wantOK   bool
	}{
		{"same CA, authorized ID", ca, node, true},
		{"same CA, unauthorized ID", ca, nodeID(t, td, "ss2"), false},
		{"other trust domain", otherCA, nodeID(t, otherTD, "ss1"), false},
		{"rogue CA claiming the authorized ID", rogueCA, node, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			addr, rec := startHealthServer(t, serverIdent, node)
			// The client always trusts the real CA, so only its own SVID
			// differs between cases.
			clientIdent := writeIdentity(t, t.TempDir(), tt.clientCA, tt.clientID, ca)

			resp, err := checkHealth(t, addr, clientIdent, registry)
			if !tt.wantOK {
				if status.Code(err) != codes.Unavailable {
					t.Errorf("Check error = %v, want code Unavailable from a failed handshake", err)
				}
				if seen := rec.seen(); len(seen) != 0 {
					t.Errorf("server let callers %v through, want none", seen)
				}
				return
			}
			if err != nil {
				t.Fatalf("Check: %v", err)
			}
			if resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
				t.Errorf("health status = %v, want SERVING", resp.GetStatus())
			}
			if seen := rec.seen(); len(seen) != 1 || seen[0] != node.String() {
				t.Errorf("server saw callers %v, want [%s]", seen, node)
			}
		})
	}
}

func TestMTLSClientRejectsWrongServer(t *testing.T) {
	ca := newCA(t, td)
	node := nodeID(t, td, "ss1")
	// The server presents a node SVID where the client expects the registry.
	serverIdent := writeIdentity(t, t.TempDir(), ca, nodeID(t, td, "impostor"), ca)
	addr, rec := startHealthServer(t, serverIdent, node)
	clientIdent := writeIdentity(t, t.TempDir(), ca, node, ca)

	_, err := checkHealth(t, addr, clientIdent, registry)
	if status.Code(err) != codes.Unavailable {
		t.Errorf("Check error = %v, want code Unavailable from a failed handshake", err)
	}
	if seen := rec.seen(); len(seen) != 0 {
		t.Errorf("server saw callers %v, want none", seen)
	}
}
