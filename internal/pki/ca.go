package pki

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// Names of the files of a CA directory.
const (
	CertFile   = "ca.pem"
	KeyFile    = "ca-key.pem"
	BundleFile = "bundle.pem"
)

var (
	// ErrExists is returned by [CA.Save] when the directory already holds
	// CA files. Use [CA.SaveOverwrite] to replace them on purpose.
	ErrExists = errors.New("CA files already exist")
	// ErrFileExists is returned, wrapped with the file's name, by
	// [Issued.WriteNew] when the certificate or key file already exists.
	// Use [Issued.Write] to replace them on purpose.
	ErrFileExists = errors.New("file already exists")
	// ErrNotCA is returned by [LoadCA] when the files do not hold a usable
	// CA: a certificate that is not a CA, lacks certSign, has no SPIFFE
	// trust domain URI, or does not match the key.
	ErrNotCA = errors.New("not a ketnoi CA")
)

// CA is an instance certificate authority with its private key.
type CA struct {
	Cert        *x509.Certificate
	Key         *ecdsa.PrivateKey
	TrustDomain spiffeid.TrustDomain
}

// NewCA creates a self-signed CA for trust domain td, valid for ttl.
func NewCA(td spiffeid.TrustDomain, ttl time.Duration) (*CA, error) {
	if td.IsZero() {
		return nil, errors.New("create CA: empty trust domain")
	}
	if ttl <= 0 {
		return nil, fmt.Errorf("create CA: validity %v is not positive", ttl)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("create CA: generate key: %w", err)
	}
	serial, err := newSerial()
	if err != nil {
		return nil, fmt.Errorf("create CA: %w", err)
	}

	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject: pkix.Name{
			Organization: []string{"ketnoi development"},
			CommonName:   "ketnoi development CA " + td.Name(),
		},
		NotBefore:             now.Add(-backdate),
		NotAfter:              now.Add(ttl),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		URIs:                  []*url.URL{td.ID().URL()},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, fmt.Errorf("create CA: sign certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("create CA: parse certificate: %w", err)
	}
	return &CA{Cert: cert, Key: key, TrustDomain: td}, nil
}

// LoadCA reads ca.pem and ca-key.pem from dir. It fails with [ErrNotCA]
// when they do not form a CA of some SPIFFE trust domain.
func LoadCA(dir string) (*CA, error) {
	certPath := filepath.Join(dir, CertFile)
	keyPath := filepath.Join(dir, KeyFile)
	certPEM, err := os.ReadFile(certPath)
	if err != nil {
		return nil, fmt.Errorf("load CA: %w", err)
	}
	keyPEM, err := os.ReadFile(keyPath)
	if err != nil {
		return nil, fmt.Errorf("load CA: %w", err)
	}
	cert, err := parseCertPEM(certPEM)
	if err != nil {
		return nil, fmt.Errorf("load CA: %s: %w", certPath, err)
	}
	key, err := parseKeyPEM(keyPEM)
	if err != nil {
		return nil, fmt.Errorf("load CA: %s: %w", keyPath, err)
	}

	td, err := checkCA(cert, key)
	if err != nil {
		return nil, fmt.Errorf("load CA: %s: %w", certPath, err)
	}
	return &CA{Cert: cert, Key: key, TrustDomain: td}, nil
}

// checkCA returns the trust domain of a CA certificate after checking that
// it can issue certificates with key.
func checkCA(cert *x509.Certificate, key *ecdsa.PrivateKey) (spiffeid.TrustDomain, error) {
	switch {
	case !cert.IsCA || !cert.BasicConstraintsValid:
		return spiffeid.TrustDomain{}, fmt.Errorf("%w: basic constraints do not say CA", ErrNotCA)
	case cert.KeyUsage&x509.KeyUsageCertSign == 0:
		return spiffeid.TrustDomain{}, fmt.Errorf("%w: key usage lacks certSign", ErrNotCA)
	case len(cert.URIs) != 1:
		return spiffeid.TrustDomain{}, fmt.Errorf("%w: want one URI SAN spiffe://<trust domain>", ErrNotCA)
	}
	id, err := spiffeid.FromURI(cert.URIs[0])
	if err != nil || id.Path() != "" {
		return spiffeid.TrustDomain{}, fmt.Errorf("%w: URI SAN %q is not spiffe://<trust domain>",
			ErrNotCA, cert.URIs[0])
	}
	pub, ok := cert.PublicKey.(*ecdsa.PublicKey)
	if !ok || !pub.Equal(key.Public()) {
		return spiffeid.TrustDomain{}, fmt.Errorf("%w: certificate does not match the private key", ErrNotCA)
	}
	return id.TrustDomain(), nil
}

// Save writes ca.pem (0644), ca-key.pem (0600) and bundle.pem (0644) into
// dir, creating dir if needed. It fails with [ErrExists] when any of the
// three files is already there.
func (ca *CA) Save(dir string) error {
	for _, name := range []string{CertFile, KeyFile, BundleFile} {
		_, err := os.Lstat(filepath.Join(dir, name))
		if err == nil {
			return fmt.Errorf("save CA: %s: %w", filepath.Join(dir, name), ErrExists)
		}
		if !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("save CA: %w", err)
		}
	}
	return ca.SaveOverwrite(dir)
}

// SaveOverwrite writes the same files as [CA.Save], replacing any that
// exist. Certificates issued by a replaced CA no longer verify against the
// new bundle.
func (ca *CA) SaveOverwrite(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("save CA: %w", err)
	}
	keyPEM, err := encodeKey(ca.Key)
	if err != nil {
		return fmt.Errorf("save CA: %w", err)
	}
	certPEM := encodeCerts(ca.Cert)

	// The key goes first: a directory with a certificate but no key would
	// look like a CA that cannot issue.
	files := []struct {
		name string
		data []byte
		mode fs.FileMode
	}{
		{KeyFile, keyPEM, 0o600},
		{CertFile, certPEM, 0o644},
		{BundleFile, ca.BundlePEM(), 0o644},
	}
	for _, f := range files {
		if err := writeFile(filepath.Join(dir, f.name), f.data, f.mode); err != nil {
			return fmt.Errorf("save CA: %w", err)
		}
	}
	return nil
}

// BundlePEM returns the trust bundle as PEM: the CA certificate.
func (ca *CA) BundlePEM() []byte { return encodeCerts(ca.Cert) }

// Bundle returns the trust bundle of the CA's trust domain, for go-spiffe
// verification and mTLS configs.
func (ca *CA) Bundle() *x509bundle.Bundle {
	return x509bundle.FromX509Authorities(ca.TrustDomain, []*x509.Certificate{ca.Cert})
}

// Pool returns a certificate pool holding the CA certificate, for
// verifying signing certificates.
func (ca *CA) Pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.Cert)
	return p
}
