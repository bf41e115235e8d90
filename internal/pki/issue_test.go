package pki_test

import (
	"crypto/x509"
	"errors"
	"math/big"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/ketnoi/ketnoi/internal/id"
	"github.com/ketnoi/ketnoi/internal/pki"
	"github.com/ketnoi/ketnoi/internal/sign"
)

var (
	g22      = id.Member{Instance: "VN", Class: "NN", Code: "000.00.00.G22"}
	registry = id.Registry(td)
)

func nodeID(t *testing.T, td spiffeid.TrustDomain, name string) spiffeid.ID {
	t.Helper()
	n, err := id.Node(td, g22, name)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func uriStrings(us []*url.URL) []string {
	var out []string
	for _, u := range us {
		out = append(out, u.String())
	}
	return out
}

func TestIssueSVIDLoadsAndVerifies(t *testing.T) {
	dir := t.TempDir()
	ca := newCA(t, td)
	if err := ca.Save(dir); err != nil {
		t.Fatal(err)
	}
	admin, err := id.Admin(td, "ops")
	if err != nil {
		t.Fatal(err)
	}

	for _, want := range []spiffeid.ID{registry, nodeID(t, td, "ss1"), admin} {
		t.Run(want.Path(), func(t *testing.T) {
			iss, err := ca.IssueSVID(want, time.Hour)
			if err != nil {
				t.Fatalf("IssueSVID: %v", err)
			}
			certFile := filepath.Join(dir, "leaf.pem")
			keyFile := filepath.Join(dir, "leaf-key.pem")
			if err := iss.Write(certFile, keyFile); err != nil {
				t.Fatalf("Write: %v", err)
			}

			svid, err := x509svid.Load(certFile, keyFile)
			if err != nil {
				t.Fatalf("x509svid.Load: %v", err)
			}
			if svid.ID != want {
				t.Errorf("loaded SVID ID = %v, want %v", svid.ID, want)
			}
			bundle, err := x509bundle.Load(td, filepath.Join(dir, pki.BundleFile))
			if err != nil {
				t.Fatal(err)
			}
			gotID, chains, err := x509svid.Verify(svid.Certificates, bundle)
			if err != nil {
				t.Fatalf("x509svid.Verify: %v", err)
			}
			if gotID != want {
				t.Errorf("verified ID = %v, want %v", gotID, want)
			}
			if len(chains) != 1 || len(chains[0]) != 2 || !chains[0][1].Equal(ca.Cert) {
				t.Errorf("verified chain is not leaf -> CA")
			}
		})
	}
}

func TestIssueSVIDProfile(t *testing.T) {
	ca := newCA(t, td)
	before := time.Now()
	iss, err := ca.IssueSVID(registry, 2*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	c := iss.Cert

	if c.IsCA || !c.BasicConstraintsValid {
		t.Errorf("IsCA=%v BasicConstraintsValid=%v, want false, true", c.IsCA, c.BasicConstraintsValid)
	}
	if c.KeyUsage != x509.KeyUsageDigitalSignature {
		t.Errorf("KeyUsage = %v, want DigitalSignature only", c.KeyUsage)
	}
	wantEKU := []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}
	if diff := cmp.Diff(wantEKU, c.ExtKeyUsage); diff != "" {
		t.Errorf("ExtKeyUsage (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"spiffe://vn.ketnoi/registry"}, uriStrings(c.URIs)); diff != "" {
		t.Errorf("URI SANs (-want +got):\n%s", diff)
	}
	if n := len(c.DNSNames) + len(c.IPAddresses) + len(c.EmailAddresses); n != 0 {
		t.Errorf("SVID has %d non-URI SANs, want 0", n)
	}
	if skew := before.Sub(c.NotBefore); skew < 50*time.Second || skew > 2*time.Minute {
		t.Errorf("NotBefore is %v before issuance, want about 1m", skew)
	}
	if life := c.NotAfter.Sub(before); life < 2*time.Hour-time.Second || life > 2*time.Hour+time.Minute {
		t.Errorf("NotAfter - now = %v, want about 2h", life)
	}
	if c.SerialNumber.Cmp(new(big.Int).Lsh(big.NewInt(1), 64)) < 0 {
		t.Errorf("serial %v is under 2^64; want a random 128-bit serial", c.SerialNumber)
	}
	again, err := ca.IssueSVID(registry, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if again.Cert.SerialNumber.Cmp(c.SerialNumber) == 0 {
		t.Errorf("two SVIDs share serial %v", c.SerialNumber)
	}
	if again.Key.Equal(iss.Key) {
		t.Errorf("two SVIDs share a private key")
	}
}

func TestIssueSVIDKeyFile(t *testing.T) {
	ca := newCA(t, td)
	iss, err := ca.IssueSVID(registry, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "r.pem"), filepath.Join(dir, "r-key.pem")
	// Existing files with loose modes are replaced, and the key ends up 0600.
	writeTestFile(t, keyFile, []byte("old"))
	if err := os.Chmod(keyFile, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := iss.Write(certFile, keyFile); err != nil {
		t.Fatal(err)
	}
	for file, want := range map[string]os.FileMode{certFile: 0o644, keyFile: 0o600} {
		fi, err := os.Stat(file)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != want {
			t.Errorf("%s mode = %v, want %v", filepath.Base(file), fi.Mode().Perm(), want)
		}
	}
	keyPEM, err := os.ReadFile(keyFile)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(string(keyPEM), "-----BEGIN PRIVATE KEY-----") {
		t.Errorf("key file does not start with a PKCS#8 PRIVATE KEY block:\n%s", keyPEM)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 2 {
		t.Errorf("directory holds %d entries after Write, want 2 (no temporary files left)", len(entries))
	}
}

func TestIssueSVIDRejects(t *testing.T) {
	ca := newCA(t, td)
	other := spiffeid.RequireTrustDomainFromString("other.ketnoi")
	tests := []struct {
		name string
		id   spiffeid.ID
		ttl  time.Duration
		want string
	}{
		{"other trust domain", nodeID(t, other, "ss1"), time.Hour, "not in trust domain"},
		{"root path", td.ID(), time.Hour, "has no path"},
		{"zero ID", spiffeid.ID{}, time.Hour, "empty SPIFFE ID"},
		{"zero ttl", registry, 0, "not positive"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			iss, err := ca.IssueSVID(tt.id, tt.ttl)
			if err == nil {
				t.Fatalf("IssueSVID succeeded with %v, want error", iss.Cert.URIs)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q does not contain %q", err, tt.want)
			}
		})
	}
}

func TestIssueClampsToCAExpiry(t *testing.T) {
	ca, err := pki.NewCA(td, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	iss, err := ca.IssueSigning(id.MemberURI(g22), 10*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if !iss.Cert.NotAfter.Equal(ca.Cert.NotAfter) {
		t.Errorf("NotAfter = %v, want the CA's %v", iss.Cert.NotAfter, ca.Cert.NotAfter)
	}
}

func TestIssueSigning(t *testing.T) {
	ca := newCA(t, td)
	registryURI, err := url.Parse(id.RegistrySigningURI)
	if err != nil {
		t.Fatal(err)
	}
	for _, uri := range []*url.URL{id.MemberURI(g22), registryURI} {
		t.Run(uri.String(), func(t *testing.T) {
			iss, err := ca.IssueSigning(uri, 48*time.Hour)
			if err != nil {
				t.Fatalf("IssueSigning: %v", err)
			}
			c := iss.Cert
			if got, want := c.KeyUsage, x509.KeyUsageDigitalSignature|x509.KeyUsageContentCommitment; got != want {
				t.Errorf("KeyUsage = %v, want %v", got, want)
			}
			if len(c.ExtKeyUsage) != 0 || c.IsCA {
				t.Errorf("ExtKeyUsage = %v, IsCA = %v; want none, false", c.ExtKeyUsage, c.IsCA)
			}
			if diff := cmp.Diff([]string{uri.String()}, uriStrings(c.URIs)); diff != "" {
				t.Errorf("URI SANs (-want +got):\n%s", diff)
			}

			now := time.Now()
			if err := sign.VerifyCertificate(c, nil, ca.Pool(), now); err != nil {
				t.Errorf("VerifyCertificate against own CA: %v", err)
			}
			err = sign.VerifyCertificate(c, nil, newCA(t, td).Pool(), now)
			if !errors.Is(err, sign.ErrUntrustedCertificate) {
				t.Errorf("VerifyCertificate against another CA = %v, want ErrUntrustedCertificate", err)
			}
			err = sign.VerifyCertificate(c, nil, ca.Pool(), now.Add(72*time.Hour))
			if !errors.Is(err, sign.ErrUntrustedCertificate) {
				t.Errorf("VerifyCertificate after expiry = %v, want ErrUntrustedCertificate", err)
			}

			dir := t.TempDir()
			certFile, keyFile := filepath.Join(dir, "s.pem"), filepath.Join(dir, "s-key.pem")
			if err := iss.Write(certFile, keyFile); err != nil {
				t.Fatal(err)
			}
			signer, err := sign.LoadSigner(certFile, keyFile)
			if err != nil {
				t.Fatalf("sign.LoadSigner: %v", err)
			}
			body := []byte("header bytes")
			sig, err := signer.Sign(sign.TypeHeader, body)
			if err != nil {
				t.Fatal(err)
			}
			if err := sign.Verify(c, sign.TypeHeader, body, sig); err != nil {
				t.Errorf("signature by loaded signer does not verify with the issued certificate: %v", err)
			}
		})
	}
}

func TestIssueSigningMemberURIRoundTrip(t *testing.T) {
	ca := newCA(t, td)
	iss, err := ca.IssueSigning(id.MemberURI(g22), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	m, err := id.MemberFromURI(iss.Cert.URIs[0])
	if err != nil {
		t.Fatalf("MemberFromURI: %v", err)
	}
	if m != g22 {
		t.Errorf("member from certificate = %v, want %v", m, g22)
	}
}

func TestIssueSigningRejects(t *testing.T) {
	ca := newCA(t, td)
	tests := []struct {
		name string
		uri  *url.URL
		want string
	}{
		{"nil", nil, "not absolute"},
		{"relative", &url.URL{Path: "member/VN"}, "not absolute"},
		{"SPIFFE ID", registry.URL(), "is a SPIFFE ID"},
		{"malformed member", &url.URL{Scheme: "urn", Opaque: "ketnoi:member:VN/NN"}, `member "VN/NN": want INSTANCE/CLASS/CODE`},
		{"unknown ketnoi URI", &url.URL{Scheme: "urn", Opaque: "ketnoi:node:x"}, "want urn:ketnoi:member:INSTANCE/CLASS/CODE"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ca.IssueSigning(tt.uri, time.Hour)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("IssueSigning error = %v, want one containing %q", err, tt.want)
			}
		})
	}
}

// WriteNew writes an issued pair only where neither file exists, so that
// issuing under a name in use never loses the key it holds.
func TestIssuedWriteNew(t *testing.T) {
	ca := newCA(t, td)
	iss, err := ca.IssueSVID(registry, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "r.pem"), filepath.Join(dir, "r-key.pem")
	if err := iss.WriteNew(certFile, keyFile); err != nil {
		t.Fatalf("WriteNew into an empty directory: %v", err)
	}
	first, err := os.ReadFile(keyFile)
	if err != nil {
		t.Fatal(err)
	}

	other, err := ca.IssueSVID(registry, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	refused := func(existing string) {
		t.Helper()
		err := other.WriteNew(certFile, keyFile)
		if !errors.Is(err, pki.ErrFileExists) || !strings.HasPrefix(err.Error(), existing+": ") {
			t.Errorf("WriteNew over %s = %v, want ErrFileExists naming it", existing, err)
		}
		if key, _ := os.ReadFile(keyFile); string(key) != string(first) {
			t.Errorf("refused WriteNew replaced the key")
		}
	}
	refused(certFile)
	// With the key alone left, WriteNew still refuses, and writes nothing.
	if err := os.Remove(certFile); err != nil {
		t.Fatal(err)
	}
	refused(keyFile)
	if _, err := os.Stat(certFile); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("refused WriteNew wrote the certificate: %v", err)
	}
}
