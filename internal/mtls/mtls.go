// Package mtls builds the mutual-TLS credentials every ketnoi connection
// uses: TLS 1.3 only, X.509-SVIDs on both sides, and an authorizer that
// checks the peer's SPIFFE ID, not just its chain.
//
// Credentials are built with credentials.NewTLS over go-spiffe's tlsconfig,
// not go-spiffe's gRPC wrappers, so that handlers can read the peer's
// certificate and SPIFFE ID from credentials.TLSInfo.
//
// A handshake a server refuses never reaches a gRPC handler or interceptor;
// [LogRefusals] logs it, with the reason a [PeerRefusedError] gives.
package mtls

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
)

// ErrNoPeer is returned when a context carries no authenticated peer.
var ErrNoPeer = errors.New("mtls: no authenticated peer")

// Identity is a workload's SVID source together with the bundle of the trust
// domains it accepts peers from.
type Identity struct {
	SVID   x509svid.Source
	Bundle x509bundle.Source
}

// LoadFiles reads an SVID (PEM chain leaf first, PKCS#8 key) and the PEM
// bundle of trust domain td.
func LoadFiles(certFile, keyFile, bundleFile string, td spiffeid.TrustDomain) (Identity, error) {
	svid, err := x509svid.Load(certFile, keyFile)
	if err != nil {
		return Identity{}, fmt.Errorf("load SVID %s: %w", certFile, err)
	}
	bundle, err := x509bundle.Load(td, bundleFile)
	if err != nil {
		return Identity{}, fmt.Errorf("load bundle %s: %w", bundleFile, err)
	}
	return Identity{SVID: svid, Bundle: bundle}, nil
}

// ID returns the workload's own SPIFFE ID.
func (i Identity) ID() (spiffeid.ID, error) {
	s, err := i.SVID.GetX509SVID()
	if err != nil {
		return spiffeid.ID{}, err
	}
	return s.ID, nil
}

// ServerConfig returns a TLS 1.3 server config that requires a client SVID
// accepted by authz. Session tickets are off: Go skips the peer verification
// callback on resumed sessions, which would bypass authz. A certificate it
// refuses fails the handshake with a [PeerRefusedError].
func ServerConfig(i Identity, authz tlsconfig.Authorizer) *tls.Config {
	cfg := tlsconfig.MTLSServerConfig(i.SVID, i.Bundle, markUnauthorized(authz))
	cfg.VerifyPeerCertificate = explainRefusals(cfg.VerifyPeerCertificate, i.Bundle)
	cfg.MinVersion = tls.VersionTLS13
	cfg.SessionTicketsDisabled = true
	return cfg
}

// ClientConfig returns a TLS 1.3 client config that presents the SVID and
// accepts only a server accepted by authz.
func ClientConfig(i Identity, authz tlsconfig.Authorizer) *tls.Config {
	cfg := tlsconfig.MTLSClientConfig(i.SVID, i.Bundle, authz)
	cfg.MinVersion = tls.VersionTLS13
	return cfg
}

// ServerCredentials wraps ServerConfig for grpc.Creds.
func ServerCredentials(i Identity, authz tlsconfig.Authorizer) credentials.TransportCredentials {
	return credentials.NewTLS(ServerConfig(i, authz))
}

// ClientCredentials wraps ClientConfig for grpc.WithTransportCredentials.
func ClientCredentials(i Identity, authz tlsconfig.Authorizer) credentials.TransportCredentials {
	return credentials.NewTLS(ClientConfig(i, authz))
}

// PeerID returns the SPIFFE ID of the authenticated peer of a gRPC call.
func PeerID(ctx context.Context) (spiffeid.ID, error) {
	cert, err := PeerCertificate(ctx)
	if err != nil {
		return spiffeid.ID{}, err
	}
	id, err := x509svid.IDFromCert(cert)
	if err != nil {
		return spiffeid.ID{}, fmt.Errorf("mtls: peer certificate: %w", err)
	}
	return id, nil
}

// PeerCertificate returns the leaf certificate of the authenticated peer.
func PeerCertificate(ctx context.Context) (*x509.Certificate, error) {
	p, ok := peer.FromContext(ctx)
	if !ok || p.AuthInfo == nil {
		return nil, ErrNoPeer
	}
	info, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok || len(info.State.PeerCertificates) == 0 {
		return nil, ErrNoPeer
	}
	return info.State.PeerCertificates[0], nil
}
