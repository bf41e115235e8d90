package sign_test

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"math/big"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/ketnoi/ketnoi/internal/id"
	"github.com/ketnoi/ketnoi/internal/pki/pkitest"
	"github.com/ketnoi/ketnoi/internal/sign"
)

const member = "VN/NN/000.00.00.G22"

func TestPAE(t *testing.T) {
	tests := []struct {
		typ  string
		body []byte
		want string
	}{
		{
			typ:  "application/vnd.ketnoi.exchange.header.v1+proto",
			body: []byte("hello"),
			want: "DSSEv1 47 application/vnd.ketnoi.exchange.header.v1+proto 5 hello",
		},
		{typ: "t", body: nil, want: "DSSEv1 1 t 0 "},
		{typ: "", body: []byte{0, ' ', 0xff}, want: "DSSEv1 0  3 \x00 \xff"},
		{
			typ:  "http://example.com/HelloWorld",
			body: []byte("hello world"),
			want: "DSSEv1 29 http://example.com/HelloWorld 11 hello world",
		},
	}
	for _, tt := range tests {
		if got := sign.PAE(tt.typ, tt.body); string(got) != tt.want {
			t.Errorf("PAE(%q, %q) = %q, want %q", tt.typ, tt.body, got, tt.want)
		}
	}
	if len(sign.TypeHeader) != 47 {
		t.Errorf("len(TypeHeader) = %d, the known answer above assumes 47", len(sign.TypeHeader))
	}
}

func TestSignVerify(t *testing.T) {
	ca := pkitest.NewCA(t, "vn.ketnoi")
	s := ca.Signer(t, member)
	other := ca.Signer(t, "VN/NN/000.00.00.G09")
	body := []byte("header bytes \x00\x01")

	sig, err := s.Sign(sign.TypeHeader, body)
	if err != nil {
		t.Fatalf("Sign: %v", err)
	}
	if err := sign.Verify(s.Certificate(), sign.TypeHeader, body, sig); err != nil {
		t.Fatalf("Verify of a fresh signature: %v", err)
	}

	altered := bytes.Clone(body)
	altered[0] ^= 1
	badSig := bytes.Clone(sig)
	badSig[len(badSig)-1] ^= 1
	tests := []struct {
		name string
		s    *sign.Signer
		typ  string
		body []byte
		sig  []byte
	}{
		{"altered body", s, sign.TypeHeader, altered, sig},
		{"longer body", s, sign.TypeHeader, append(bytes.Clone(body), 0), sig},
		{"other type", s, sign.TypeConfiguration, body, sig},
		{"other key", other, sign.TypeHeader, body, sig},
		{"altered signature", s, sign.TypeHeader, body, badSig},
		{"empty signature", s, sign.TypeHeader, body, nil},
	}
	for _, tt := range tests {
		err := sign.Verify(tt.s.Certificate(), tt.typ, tt.body, tt.sig)
		if !errors.Is(err, sign.ErrBadSignature) {
			t.Errorf("%s: Verify error = %v, want ErrBadSignature", tt.name, err)
		}
	}
}

func TestSignerAccessors(t *testing.T) {
	ca := pkitest.NewCA(t, "vn.ketnoi")
	s := ca.Signer(t, member)
	cert := s.Certificate()
	if len(cert.URIs) != 1 || cert.URIs[0].String() != "urn:ketnoi:member:"+member {
		t.Errorf("certificate URIs = %v, want [urn:ketnoi:member:%s]", cert.URIs, member)
	}
	pub, ok := s.Public().(*ecdsa.PublicKey)
	if !ok || !pub.Equal(cert.PublicKey) {
		t.Errorf("Public() does not match the certificate key")
	}
	if len(s.CertificateSHA256()) != 32 {
		t.Errorf("CertificateSHA256 length = %d, want 32", len(s.CertificateSHA256()))
	}
	if bytes.Equal(s.CertificateSHA256(), ca.Signer(t, member).CertificateSHA256()) {
		t.Errorf("two certificates have the same CertificateSHA256")
	}
}

func TestNewSignerMismatch(t *testing.T) {
	ca := pkitest.NewCA(t, "vn.ketnoi")
	s := ca.Signer(t, member)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := sign.NewSigner(key, s.Certificate()); err == nil {
		t.Errorf("NewSigner with a key that does not match the certificate succeeded")
	}
}

// A P-384 key with its own certificate is refused: frame limits and peers
// expect P-256 signatures.
func TestNewSignerRefusesOtherCurves(t *testing.T) {
	key, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), NotBefore: time.Now(), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := sign.NewSigner(key, cert); err == nil || !strings.Contains(err.Error(), "P-384") {
		t.Errorf("NewSigner with a P-384 key: %v, want a refusal naming the curve", err)
	}
}

func TestVerifyCertificate(t *testing.T) {
	ca := pkitest.NewCA(t, "vn.ketnoi")
	otherCA := pkitest.NewCA(t, "vn.ketnoi")
	cert := ca.Signer(t, member).Certificate()
	now := time.Now()

	if err := sign.VerifyCertificate(cert, nil, ca.Pool(), now); err != nil {
		t.Fatalf("VerifyCertificate against its own CA: %v", err)
	}
	bad := []struct {
		name string
		err  error
	}{
		{"other CA", sign.VerifyCertificate(cert, nil, otherCA.Pool(), now)},
		{"after expiry", sign.VerifyCertificate(cert, nil, ca.Pool(), now.Add(48*time.Hour))},
		{"before validity", sign.VerifyCertificate(cert, nil, ca.Pool(), now.Add(-48*time.Hour))},
		{"CA certificate without digitalSignature", sign.VerifyCertificate(ca.PKI().Cert, nil, ca.Pool(), now)},
	}
	for _, tt := range bad {
		if !errors.Is(tt.err, sign.ErrUntrustedCertificate) {
			t.Errorf("%s: error = %v, want ErrUntrustedCertificate", tt.name, tt.err)
		}
	}
}

func TestLoadSigner(t *testing.T) {
	ca := pkitest.NewCA(t, "vn.ketnoi")
	dir := t.TempDir()
	certFile := filepath.Join(dir, "sign.pem")
	keyFile := filepath.Join(dir, "sign-key.pem")
	iss, err := ca.PKI().IssueSigning(id.MemberURI(id.Member{Instance: "VN", Class: "NN", Code: "000.00.00.G22"}), time.Hour)
	if err != nil {
		t.Fatalf("IssueSigning: %v", err)
	}
	if err := iss.Write(certFile, keyFile); err != nil {
		t.Fatalf("Write: %v", err)
	}

	s, err := sign.LoadSigner(certFile, keyFile)
	if err != nil {
		t.Fatalf("LoadSigner: %v", err)
	}
	if !bytes.Equal(s.Certificate().Raw, iss.Cert.Raw) {
		t.Errorf("loaded certificate differs from the written one")
	}
	sig, err := s.Sign(sign.TypeConfiguration, []byte("cfg"))
	if err != nil {
		t.Fatalf("Sign: %v", err)
	}
	if err := sign.Verify(iss.Cert, sign.TypeConfiguration, []byte("cfg"), sig); err != nil {
		t.Errorf("Verify of a loaded signer's signature: %v", err)
	}

	// A key of another certificate, a certificate as key, and missing files.
	other, err := ca.PKI().IssueSigning(&url.URL{Scheme: "urn", Opaque: "ketnoi:registry"}, time.Hour)
	if err != nil {
		t.Fatalf("IssueSigning: %v", err)
	}
	otherCert := filepath.Join(dir, "other.pem")
	otherKey := filepath.Join(dir, "other-key.pem")
	if err := other.Write(otherCert, otherKey); err != nil {
		t.Fatalf("Write: %v", err)
	}
	garbage := filepath.Join(dir, "garbage")
	if err := os.WriteFile(garbage, []byte("not pem"), 0o600); err != nil {
		t.Fatal(err)
	}
	bad := []struct {
		name, cert, key string
	}{
		{"mismatched key", certFile, otherKey},
		{"certificate as key", certFile, certFile},
		{"garbage key", certFile, garbage},
		{"garbage certificate", garbage, keyFile},
		{"missing certificate", filepath.Join(dir, "none.pem"), keyFile},
		{"missing key", certFile, filepath.Join(dir, "none-key.pem")},
	}
	for _, tt := range bad {
		if _, err := sign.LoadSigner(tt.cert, tt.key); err == nil {
			t.Errorf("LoadSigner with %s succeeded", tt.name)
		}
	}
}

func TestParseCertificates(t *testing.T) {
	ca := pkitest.NewCA(t, "vn.ketnoi")
	leaf := ca.Signer(t, member).Certificate()
	root := ca.PKI().Cert
	pemOf := func(der []byte) []byte {
		return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	}
	keyBlock := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: []byte{1, 2, 3}})

	tests := []struct {
		name string
		in   []byte
		want [][]byte // DER of the expected certificates; nil means an error
	}{
		{"one PEM", pemOf(leaf.Raw), [][]byte{leaf.Raw}},
		{"two PEM", append(pemOf(leaf.Raw), pemOf(root.Raw)...), [][]byte{leaf.Raw, root.Raw}},
		{"other blocks skipped", append(keyBlock, pemOf(root.Raw)...), [][]byte{root.Raw}},
		{"DER", leaf.Raw, [][]byte{leaf.Raw}},
		{"garbage", []byte("garbage"), nil},
		{"empty", nil, nil},
		{"only a key", keyBlock, nil},
		{"PEM with bad DER", pemOf([]byte("not DER")), nil},
	}
	for _, tt := range tests {
		got, err := sign.ParseCertificates(tt.in)
		if tt.want == nil {
			if err == nil {
				t.Errorf("%s: ParseCertificates returned %d certificates, want an error", tt.name, len(got))
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: ParseCertificates: %v", tt.name, err)
			continue
		}
		var raw [][]byte
		for _, c := range got {
			raw = append(raw, c.Raw)
		}
		if diff := cmp.Diff(tt.want, raw); diff != "" {
			t.Errorf("%s: certificates mismatch (-want +got):\n%s", tt.name, diff)
		}
	}
}
