// Package pkitest mints in-memory identities for unit tests of other
// packages: a CA per trust domain, X.509-SVIDs usable as go-spiffe sources,
// and member and registry signers. Nothing touches the disk, and every
// failure stops the test.
package pkitest

import (
	"crypto/x509"
	"net/url"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/ketnoi/ketnoi/internal/id"
	"github.com/ketnoi/ketnoi/internal/pki"
	"github.com/ketnoi/ketnoi/internal/sign"
)

// Validity of what this package mints: long enough for any test, short
// enough that nothing minted here looks like a real credential.
const (
	caTTL   = 24 * time.Hour
	leafTTL = time.Hour
)

// CA is a test certificate authority for one trust domain.
type CA struct {
	ca *pki.CA
}

// NewCA creates a CA for trust domain td, such as "vn.ketnoi".
func NewCA(tb testing.TB, td string) *CA {
	tb.Helper()
	trustDomain, err := spiffeid.TrustDomainFromString(td)
	if err != nil {
		tb.Fatalf("pkitest: trust domain %q: %v", td, err)
	}
	ca, err := pki.NewCA(trustDomain, caTTL)
	if err != nil {
		tb.Fatalf("pkitest: %v", err)
	}
	return &CA{ca: ca}
}

// SVID issues an X.509-SVID for a SPIFFE ID such as
// "spiffe://vn.ketnoi/registry". The result is an x509svid.Source.
func (c *CA) SVID(tb testing.TB, spiffeID string) *x509svid.SVID {
	tb.Helper()
	sid, err := spiffeid.FromString(spiffeID)
	if err != nil {
		tb.Fatalf("pkitest: SPIFFE ID %q: %v", spiffeID, err)
	}
	iss, err := c.ca.IssueSVID(sid, leafTTL)
	if err != nil {
		tb.Fatalf("pkitest: %v", err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(iss.Key)
	if err != nil {
		tb.Fatalf("pkitest: encode key: %v", err)
	}
	// ParseRaw applies go-spiffe's own SVID checks, so a test fails here
	// rather than in a confusing handshake error.
	svid, err := x509svid.ParseRaw(iss.Cert.Raw, keyDER)
	if err != nil {
		tb.Fatalf("pkitest: SVID %s: %v", spiffeID, err)
	}
	return svid
}

// Bundle returns the CA's trust bundle, an x509bundle.Source.
func (c *CA) Bundle() *x509bundle.Bundle { return c.ca.Bundle() }

// Pool returns a pool holding the CA certificate, the roots for
// sign.VerifyCertificate.
func (c *CA) Pool() *x509.CertPool { return c.ca.Pool() }

// Signer issues a signing certificate for a member such as
// "VN/NN/000.00.00.G22" and returns its signer.
func (c *CA) Signer(tb testing.TB, member string) *sign.Signer {
	tb.Helper()
	m, err := id.ParseMember(member)
	if err != nil {
		tb.Fatalf("pkitest: %v", err)
	}
	return c.signer(tb, id.MemberURI(m))
}

// RegistrySigner issues the registry's configuration signing certificate
// and returns its signer.
func (c *CA) RegistrySigner(tb testing.TB) *sign.Signer {
	tb.Helper()
	u, err := url.Parse(id.RegistrySigningURI)
	if err != nil {
		tb.Fatalf("pkitest: %v", err)
	}
	return c.signer(tb, u)
}

func (c *CA) signer(tb testing.TB, uri *url.URL) *sign.Signer {
	tb.Helper()
	iss, err := c.ca.IssueSigning(uri, leafTTL)
	if err != nil {
		tb.Fatalf("pkitest: %v", err)
	}
	s, err := sign.NewSigner(iss.Key, iss.Cert)
	if err != nil {
		tb.Fatalf("pkitest: %v", err)
	}
	return s
}

// PKI returns the underlying CA, for tests that need files or certificates
// with other validity periods.
func (c *CA) PKI() *pki.CA { return c.ca }
