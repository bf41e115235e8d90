// Package sign signs and verifies byte strings with X.509 signing
// certificates: members sign exchange headers, the registry signs the global
// configuration.
//
// Signatures are ECDSA P-256 with SHA-256 over the DSSE pre-authentication
// encoding (PAE) of a payload type and the exact bytes, so a signature made
// for one kind of document can never be replayed as another kind, and no
// canonical re-encoding is ever needed.
package sign

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"strconv"
	"time"
)

// Payload types bound into every signature.
const (
	TypeHeader        = "application/vnd.ketnoi.exchange.header.v1+proto"
	TypeConfiguration = "application/vnd.ketnoi.registry.configuration.v1+proto"
)

var (
	// ErrBadSignature is returned when a signature does not verify.
	ErrBadSignature = errors.New("signature does not verify")
	// ErrUntrustedCertificate is returned when a signing certificate does not
	// chain to a trust anchor or is not valid for signing.
	ErrUntrustedCertificate = errors.New("signing certificate is not trusted")
)

// PAE returns the DSSE pre-authentication encoding of body with its type:
// "DSSEv1" SP len(type) SP type SP len(body) SP body.
func PAE(payloadType string, body []byte) []byte {
	var b bytes.Buffer
	b.Grow(len(payloadType) + len(body) + 32)
	b.WriteString("DSSEv1 ")
	b.WriteString(strconv.Itoa(len(payloadType)))
	b.WriteByte(' ')
	b.WriteString(payloadType)
	b.WriteByte(' ')
	b.WriteString(strconv.Itoa(len(body)))
	b.WriteByte(' ')
	b.Write(body)
	return b.Bytes()
}

func digest(payloadType string, body []byte) []byte {
	h := sha256.New()
	h.Write(PAE(payloadType, body))
	return h.Sum(nil)
}

// Signer holds a signing key and its certificate.
type Signer struct {
	key     *ecdsa.PrivateKey
	cert    *x509.Certificate
	certSum [32]byte
}

// NewSigner pairs an ECDSA P-256 key with its certificate. Other curves
// are refused: frame size limits are computed for P-256 signatures, and
// every node must be able to verify every other.
func NewSigner(key *ecdsa.PrivateKey, cert *x509.Certificate) (*Signer, error) {
	pub, ok := cert.PublicKey.(*ecdsa.PublicKey)
	if !ok || !pub.Equal(key.Public()) {
		return nil, errors.New("sign: certificate does not match the private key")
	}
	if key.Curve != elliptic.P256() {
		return nil, fmt.Errorf("sign: key on curve %s, want P-256", key.Curve.Params().Name)
	}
	return &Signer{key: key, cert: cert, certSum: sha256.Sum256(cert.Raw)}, nil
}

// LoadSigner reads a PEM certificate (first block is used) and a PEM PKCS#8
// private key.
func LoadSigner(certFile, keyFile string) (*Signer, error) {
	certPEM, err := os.ReadFile(certFile)
	if err != nil {
		return nil, fmt.Errorf("sign: read certificate: %w", err)
	}
	keyPEM, err := os.ReadFile(keyFile)
	if err != nil {
		return nil, fmt.Errorf("sign: read key: %w", err)
	}
	certs, err := ParseCertificates(certPEM)
	if err != nil {
		return nil, fmt.Errorf("sign: %s: %w", certFile, err)
	}
	blk, _ := pem.Decode(keyPEM)
	if blk == nil || blk.Type != "PRIVATE KEY" {
		return nil, fmt.Errorf("sign: %s: want a PEM PRIVATE KEY (PKCS#8) block", keyFile)
	}
	k, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
	if err != nil {
		return nil, fmt.Errorf("sign: %s: %w", keyFile, err)
	}
	ek, ok := k.(*ecdsa.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("sign: %s: want an ECDSA key", keyFile)
	}
	return NewSigner(ek, certs[0])
}

// ParseCertificates parses PEM CERTIFICATE blocks, or a single DER
// certificate, and fails when there is none.
func ParseCertificates(data []byte) ([]*x509.Certificate, error) {
	var certs []*x509.Certificate
	rest := data
	for {
		var blk *pem.Block
		blk, rest = pem.Decode(rest)
		if blk == nil {
			break
		}
		if blk.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			return nil, fmt.Errorf("parse certificate: %w", err)
		}
		certs = append(certs, c)
	}
	if len(certs) == 0 {
		c, err := x509.ParseCertificate(data)
		if err != nil {
			return nil, errors.New("no certificate found (want PEM CERTIFICATE blocks or DER)")
		}
		certs = append(certs, c)
	}
	return certs, nil
}

// Sign signs body under payloadType.
func (s *Signer) Sign(payloadType string, body []byte) ([]byte, error) {
	sig, err := ecdsa.SignASN1(rand.Reader, s.key, digest(payloadType, body))
	if err != nil {
		return nil, fmt.Errorf("sign: %w", err)
	}
	return sig, nil
}

// Certificate returns the signing certificate.
func (s *Signer) Certificate() *x509.Certificate { return s.cert }

// CertificateSHA256 returns the SHA-256 of the certificate's DER bytes.
func (s *Signer) CertificateSHA256() []byte { return s.certSum[:] }

// Public returns the public key.
func (s *Signer) Public() crypto.PublicKey { return s.key.Public() }

// Verify checks sig over body under payloadType with cert's public key.
func Verify(cert *x509.Certificate, payloadType string, body, sig []byte) error {
	pub, ok := cert.PublicKey.(*ecdsa.PublicKey)
	if !ok {
		return fmt.Errorf("%w: certificate key is not ECDSA", ErrBadSignature)
	}
	if !ecdsa.VerifyASN1(pub, digest(payloadType, body), sig) {
		return ErrBadSignature
	}
	return nil
}

// VerifyCertificate checks that cert chains to roots at time at (through
// intermediates, if any) and that its key usage allows signing.
func VerifyCertificate(cert *x509.Certificate, intermediates []*x509.Certificate, roots *x509.CertPool, at time.Time) error {
	if cert.KeyUsage&x509.KeyUsageDigitalSignature == 0 {
		return fmt.Errorf("%w: key usage lacks digitalSignature", ErrUntrustedCertificate)
	}
	inter := x509.NewCertPool()
	for _, c := range intermediates {
		inter.AddCert(c)
	}
	_, err := cert.Verify(x509.VerifyOptions{
		Roots:         roots,
		Intermediates: inter,
		CurrentTime:   at,
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageAny},
	})
	if err != nil {
		return fmt.Errorf("%w: %v", ErrUntrustedCertificate, err)
	}
	return nil
}
