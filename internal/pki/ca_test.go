package pki_test

import (
	"bytes"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/ketnoi/ketnoi/internal/pki"
)

var td = spiffeid.RequireTrustDomainFromString("vn.ketnoi")

func newCA(t *testing.T, td spiffeid.TrustDomain) *pki.CA {
	t.Helper()
	ca, err := pki.NewCA(td, 24*time.Hour)
	if err != nil {
		t.Fatalf("NewCA(%s): %v", td, err)
	}
	return ca
}

func TestNewCAProfile(t *testing.T) {
	before := time.Now()
	ca := newCA(t, td)
	c := ca.Cert

	if !c.IsCA || !c.BasicConstraintsValid {
		t.Errorf("IsCA=%v BasicConstraintsValid=%v, want both true", c.IsCA, c.BasicConstraintsValid)
	}
	if got, want := c.KeyUsage, x509KeyUsageCA; got != want {
		t.Errorf("KeyUsage = %v, want %v", got, want)
	}
	var uris []string
	for _, u := range c.URIs {
		uris = append(uris, u.String())
	}
	if diff := cmp.Diff([]string{"spiffe://vn.ketnoi"}, uris); diff != "" {
		t.Errorf("URI SANs (-want +got):\n%s", diff)
	}
	if len(c.PermittedURIDomains) != 0 {
		t.Errorf("PermittedURIDomains = %v, want none (they would reject urn: signing certificates)",
			c.PermittedURIDomains)
	}
	if err := c.CheckSignatureFrom(c); err != nil {
		t.Errorf("CA is not self-signed: %v", err)
	}
	if got := c.NotAfter.Sub(before); got < 24*time.Hour-time.Second || got > 24*time.Hour+time.Minute {
		t.Errorf("NotAfter - now = %v, want about 24h", got)
	}
	if ca.TrustDomain != td {
		t.Errorf("TrustDomain = %v, want %v", ca.TrustDomain, td)
	}
}

func TestNewCARejects(t *testing.T) {
	if _, err := pki.NewCA(spiffeid.TrustDomain{}, time.Hour); err == nil {
		t.Errorf("NewCA(empty trust domain) succeeded, want error")
	}
	if _, err := pki.NewCA(td, 0); err == nil {
		t.Errorf("NewCA(ttl 0) succeeded, want error")
	}
}

func TestSaveLoadRoundTrip(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "ca")
	ca := newCA(t, td)
	if err := ca.Save(dir); err != nil {
		t.Fatalf("Save: %v", err)
	}

	modes := map[string]fs.FileMode{}
	for _, name := range []string{pki.CertFile, pki.KeyFile, pki.BundleFile} {
		fi, err := os.Stat(filepath.Join(dir, name))
		if err != nil {
			t.Fatalf("stat: %v", err)
		}
		modes[name] = fi.Mode().Perm()
	}
	wantModes := map[string]fs.FileMode{"ca.pem": 0o644, "ca-key.pem": 0o600, "bundle.pem": 0o644}
	if diff := cmp.Diff(wantModes, modes); diff != "" {
		t.Errorf("file modes (-want +got):\n%s", diff)
	}

	got, err := pki.LoadCA(dir)
	if err != nil {
		t.Fatalf("LoadCA: %v", err)
	}
	if !got.Cert.Equal(ca.Cert) {
		t.Errorf("loaded certificate differs from the saved one")
	}
	if !got.Key.Equal(ca.Key) {
		t.Errorf("loaded key differs from the saved one")
	}
	if got.TrustDomain != td {
		t.Errorf("loaded TrustDomain = %v, want %v", got.TrustDomain, td)
	}

	// The bundle file is what nodes load; it must hold exactly the CA.
	b, err := x509bundle.Load(td, filepath.Join(dir, pki.BundleFile))
	if err != nil {
		t.Fatalf("x509bundle.Load: %v", err)
	}
	if auth := b.X509Authorities(); len(auth) != 1 || !auth[0].Equal(ca.Cert) {
		t.Errorf("bundle.pem holds %d authorities, want exactly the CA certificate", len(auth))
	}

	// A CA loaded from disk issues certificates the original bundle trusts.
	iss, err := got.IssueSVID(spiffeid.RequireFromPath(td, "/registry"), time.Hour)
	if err != nil {
		t.Fatalf("IssueSVID from loaded CA: %v", err)
	}
	if err := iss.Cert.CheckSignatureFrom(ca.Cert); err != nil {
		t.Errorf("SVID from loaded CA does not chain to the saved CA: %v", err)
	}
}

func TestSaveRefusesOverwrite(t *testing.T) {
	dir := t.TempDir()
	first := newCA(t, td)
	if err := first.Save(dir); err != nil {
		t.Fatalf("first Save: %v", err)
	}
	before, err := os.ReadFile(filepath.Join(dir, pki.KeyFile))
	if err != nil {
		t.Fatal(err)
	}

	second := newCA(t, td)
	err = second.Save(dir)
	if !errors.Is(err, pki.ErrExists) {
		t.Fatalf("second Save error = %v, want ErrExists", err)
	}
	after, err := os.ReadFile(filepath.Join(dir, pki.KeyFile))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(before, after) {
		t.Errorf("refused Save changed ca-key.pem")
	}

	if err := second.SaveOverwrite(dir); err != nil {
		t.Fatalf("SaveOverwrite: %v", err)
	}
	got, err := pki.LoadCA(dir)
	if err != nil {
		t.Fatalf("LoadCA: %v", err)
	}
	if !got.Cert.Equal(second.Cert) {
		t.Errorf("after SaveOverwrite, ca.pem is not the new CA")
	}
	fi, err := os.Stat(filepath.Join(dir, pki.KeyFile))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("ca-key.pem mode after overwrite = %v, want 0600", fi.Mode().Perm())
	}
}

func TestLoadCARejects(t *testing.T) {
	ca := newCA(t, td)
	other := newCA(t, td)
	leaf, err := ca.IssueSVID(spiffeid.RequireFromPath(td, "/registry"), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	caKey := mustKeyPEM(t, ca.Key)
	otherKey := mustKeyPEM(t, other.Key)
	leafKey := mustKeyPEM(t, leaf.Key)

	tests := []struct {
		name      string
		cert, key []byte
		wantNotCA bool
	}{
		{"key of another CA", ca.BundlePEM(), otherKey, true},
		{"leaf certificate", leaf.CertPEM(), leafKey, true},
		{"garbage certificate", []byte("not PEM"), caKey, false},
		{"garbage key", ca.BundlePEM(), []byte("not PEM"), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			writeTestFile(t, filepath.Join(dir, pki.CertFile), tt.cert)
			writeTestFile(t, filepath.Join(dir, pki.KeyFile), tt.key)
			_, err := pki.LoadCA(dir)
			if err == nil {
				t.Fatalf("LoadCA succeeded, want error")
			}
			if got := errors.Is(err, pki.ErrNotCA); got != tt.wantNotCA {
				t.Errorf("errors.Is(%v, ErrNotCA) = %v, want %v", err, got, tt.wantNotCA)
			}
		})
	}

	t.Run("missing directory", func(t *testing.T) {
		_, err := pki.LoadCA(filepath.Join(t.TempDir(), "absent"))
		if !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("LoadCA(absent) error = %v, want fs.ErrNotExist", err)
		}
	})
}
