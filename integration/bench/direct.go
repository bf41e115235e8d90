package main

import (
	"crypto/x509"
	"fmt"
	"net"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/ketnoi/ketnoi/internal/mtls"
	"github.com/ketnoi/ketnoi/internal/pki"
)

// maxMessage bounds messages on every bench connection.
const maxMessage = 8 << 20

// topology is one path from the bench client to an echo backend, with the
// processes in between whose resource use the cases measure.
type topology struct {
	Name  string
	Conn  *grpc.ClientConn
	Procs []watched // intermediaries, ingress first; none for direct
	close func()
}

// Close releases the client connection and whatever the topology started.
func (t *topology) Close() {
	t.Conn.Close()
	if t.close != nil {
		t.close()
	}
}

// identity issues an SVID for id from ca as an mtls.Identity.
func identity(ca *pki.CA, id spiffeid.ID) (mtls.Identity, error) {
	iss, err := ca.IssueSVID(id, 2*time.Hour)
	if err != nil {
		return mtls.Identity{}, fmt.Errorf("issue svid %s: %w", id, err)
	}
	svid := &x509svid.SVID{ID: id, Certificates: []*x509.Certificate{iss.Cert}, PrivateKey: iss.Key}
	return mtls.Identity{SVID: svid, Bundle: ca.Bundle()}, nil
}

// dial opens the bench client's one shared connection.
func dial(addr string, creds credentials.TransportCredentials) (*grpc.ClientConn, error) {
	if creds == nil {
		creds = insecure.NewCredentials()
	}
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(creds),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(maxMessage), grpc.MaxCallSendMsgSize(maxMessage)))
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", addr, err)
	}
	return conn, nil
}

// serve starts an echo server on a loopback port and returns its address
// and a stop function.
func serve(opts ...grpc.ServerOption) (string, func(), error) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, fmt.Errorf("listen: %w", err)
	}
	srv := newEchoServer(opts...)
	go func() { _ = srv.Serve(lis) }()
	return lis.Addr().String(), srv.Stop, nil
}

// startDirect serves the echo service over mTLS with SVIDs from ca and
// connects the client to it directly.
func startDirect(ca *pki.CA) (*topology, error) {
	td := ca.TrustDomain
	serverID := spiffeid.RequireFromPath(td, "/bench/backend")
	clientID := spiffeid.RequireFromPath(td, "/bench/client")
	server, err := identity(ca, serverID)
	if err != nil {
		return nil, err
	}
	client, err := identity(ca, clientID)
	if err != nil {
		return nil, err
	}
	addr, stop, err := serve(grpc.Creds(mtls.ServerCredentials(server, tlsconfig.AuthorizeID(clientID))))
	if err != nil {
		return nil, err
	}
	conn, err := dial(addr, mtls.ClientCredentials(client, tlsconfig.AuthorizeID(serverID)))
	if err != nil {
		stop()
		return nil, err
	}
	return &topology{Name: "direct mTLS", Conn: conn, close: stop}, nil
}
