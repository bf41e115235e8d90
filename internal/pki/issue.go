package pki

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/ketnoi/ketnoi/internal/id"
)

// ketnoiURIPrefix starts the URI SAN of every ketnoi signing certificate.
const ketnoiURIPrefix = "urn:ketnoi:"

// backdate is how far NotBefore lies in the past, so that a peer whose
// clock is slightly behind still accepts a certificate issued just now.
const backdate = time.Minute

// Issued is a certificate issued by a [CA] with its private key.
type Issued struct {
	Cert *x509.Certificate
	Key  *ecdsa.PrivateKey
}

// IssueSVID issues an X.509-SVID for id, valid for ttl but never past the
// CA's own expiry. id must belong to the CA's trust domain and have a path.
func (ca *CA) IssueSVID(id spiffeid.ID, ttl time.Duration) (*Issued, error) {
	switch {
	case id.IsZero():
		return nil, errors.New("issue SVID: empty SPIFFE ID")
	case id.TrustDomain() != ca.TrustDomain:
		return nil, fmt.Errorf("issue SVID: %s is not in trust domain %s", id, ca.TrustDomain)
	case id.Path() == "":
		return nil, fmt.Errorf("issue SVID: %s has no path; only a CA may carry the trust domain ID", id)
	}
	tmpl := &x509.Certificate{
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		URIs:        []*url.URL{id.URL()},
	}
	iss, err := ca.issue(tmpl, ttl)
	if err != nil {
		return nil, fmt.Errorf("issue SVID %s: %w", id, err)
	}
	return iss, nil
}

// IssueSigning issues a signing certificate whose only URI SAN is uri, such
// as id.MemberURI(m) or id.RegistrySigningURI, valid for ttl but never past
// the CA's own expiry. uri must be absolute and must not be a SPIFFE ID, so
// that signing and transport identities stay apart; a ketnoi URI must be
// the registry's or name a well-formed member, since the registry and the
// nodes accept nothing else.
func (ca *CA) IssueSigning(uri *url.URL, ttl time.Duration) (*Issued, error) {
	switch {
	case uri == nil || !uri.IsAbs():
		return nil, fmt.Errorf("issue signing certificate: URI %v is not absolute", uri)
	case uri.Scheme == "spiffe":
		return nil, fmt.Errorf("issue signing certificate: %s is a SPIFFE ID; use an SVID for transport", uri)
	case strings.HasPrefix(uri.String(), ketnoiURIPrefix) && uri.String() != id.RegistrySigningURI:
		if _, err := id.MemberFromURI(uri); err != nil {
			return nil, fmt.Errorf("issue signing certificate: %w", err)
		}
	}
	tmpl := &x509.Certificate{
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageContentCommitment,
		URIs:     []*url.URL{uri},
	}
	iss, err := ca.issue(tmpl, ttl)
	if err != nil {
		return nil, fmt.Errorf("issue signing certificate %s: %w", uri, err)
	}
	return iss, nil
}

// issue completes a leaf template with a new key, serial and validity, and
// signs it.
func (ca *CA) issue(tmpl *x509.Certificate, ttl time.Duration) (*Issued, error) {
	now := time.Now()
	if ttl <= 0 {
		return nil, fmt.Errorf("validity %v is not positive", ttl)
	}
	if !now.Before(ca.Cert.NotAfter) {
		return nil, fmt.Errorf("CA expired at %s", ca.Cert.NotAfter.UTC().Format(time.RFC3339))
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate key: %w", err)
	}
	serial, err := newSerial()
	if err != nil {
		return nil, err
	}

	tmpl.SerialNumber = serial
	tmpl.NotBefore = now.Add(-backdate)
	tmpl.NotAfter = now.Add(ttl)
	if tmpl.NotAfter.After(ca.Cert.NotAfter) {
		tmpl.NotAfter = ca.Cert.NotAfter
	}
	tmpl.BasicConstraintsValid = true
	tmpl.IsCA = false
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, key.Public(), ca.Key)
	if err != nil {
		return nil, fmt.Errorf("sign certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("parse certificate: %w", err)
	}
	return &Issued{Cert: cert, Key: key}, nil
}

// newSerial returns a random positive 128-bit serial number.
func newSerial() (*big.Int, error) {
	limit := new(big.Int).Lsh(big.NewInt(1), 128)
	for {
		n, err := rand.Int(rand.Reader, limit)
		if err != nil {
			return nil, fmt.Errorf("generate serial number: %w", err)
		}
		if n.Sign() > 0 {
			return n, nil
		}
	}
}

// CertPEM returns the certificate chain as PEM, leaf first. The CA is the
// root, so the chain is the leaf alone; the CA travels in the bundle.
func (i *Issued) CertPEM() []byte { return encodeCerts(i.Cert) }

// KeyPEM returns the private key as a PEM PRIVATE KEY (PKCS#8) block.
func (i *Issued) KeyPEM() ([]byte, error) { return encodeKey(i.Key) }

// WriteNew writes the certificate and key as [Issued.Write] does, but only
// when neither file exists: it fails with [ErrFileExists] otherwise, and
// writes nothing, so that a key in use is never lost by mistake.
func (i *Issued) WriteNew(certFile, keyFile string) error {
	for _, path := range []string{certFile, keyFile} {
		_, err := os.Lstat(path)
		if err == nil {
			return fmt.Errorf("%s: %w", path, ErrFileExists)
		}
		if !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("write %s: %w", path, err)
		}
	}
	return i.Write(certFile, keyFile)
}

// Write writes the certificate to certFile (0644) and the key to keyFile
// (0600), replacing existing files. Each file is replaced atomically; when
// the second write fails the pair no longer matches and Write must be
// repeated.
func (i *Issued) Write(certFile, keyFile string) error {
	keyPEM, err := i.KeyPEM()
	if err != nil {
		return err
	}
	if err := writeFile(keyFile, keyPEM, 0o600); err != nil {
		return err
	}
	return writeFile(certFile, i.CertPEM(), 0o644)
}
