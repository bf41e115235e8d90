package main

import (
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/ketnoi/ketnoi/internal/pki/pkitest"
)

// refusedHint is what the CLI adds when the registry refused its
// certificate.
const refusedHint = "the registry refused certificate spiffe://vn.ketnoi/admin/alice (tls: bad certificate): " +
	"check --cert/--key, --bundle and --trust-domain"

// TestRegistryRefusesCertificate: with a certificate of another CA the
// call fails with "broken pipe" or a TLS alert, depending on timing; the
// CLI must say that its certificate was refused, and only then.
func TestRegistryRefusesCertificate(t *testing.T) {
	o := startRegistry(t)
	rogue := pkitest.NewCA(t, "vn.ketnoi").PKI()
	iss, err := rogue.IssueSVID(spiffeid.RequireFromString("spiffe://vn.ketnoi/admin/alice"), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	cert, key := filepath.Join(o.dir, "rogue.pem"), filepath.Join(o.dir, "rogue-key.pem")
	if err := iss.Write(cert, key); err != nil {
		t.Fatal(err)
	}

	t.Run("foreign certificate", func(t *testing.T) {
		// Both ways the failed call can end get the hint.
		for range 3 {
			code, _, stderr := ketnoi(t, "config", "show",
				"--registry", o.addr, "--cert", cert, "--key", key, "--bundle", o.bundle)
			if code != 1 || !strings.Contains(stderr, refusedHint) || strings.Count(stderr, "\n") != 1 {
				t.Fatalf("exit %d, stderr %q; want exit 1 and one line with %q", code, stderr, refusedHint)
			}
		}
	})

	t.Run("registry down", func(t *testing.T) {
		lis, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := lis.Addr().String()
		lis.Close()
		code, _, stderr := ketnoi(t, "config", "show",
			"--registry", addr, "--cert", cert, "--key", key, "--bundle", o.bundle)
		if code != 1 || !strings.Contains(stderr, "Unavailable") || strings.Contains(stderr, "refused certificate") {
			t.Errorf("exit %d, stderr %q; want Unavailable without the certificate hint", code, stderr)
		}
	})

	t.Run("the CLI refuses the registry", func(t *testing.T) {
		// The operator's own bundle does not hold the registry's CA: the
		// error names the verification that failed, no hint is needed.
		bundle := filepath.Join(o.dir, "rogue-bundle.pem")
		if err := os.WriteFile(bundle, rogue.BundlePEM(), 0o644); err != nil {
			t.Fatal(err)
		}
		code, _, stderr := ketnoi(t, "config", "show",
			"--registry", o.addr, "--cert", cert, "--key", key, "--bundle", bundle)
		if code != 1 || !strings.Contains(stderr, "unknown authority") || strings.Contains(stderr, "refused certificate") {
			t.Errorf("exit %d, stderr %q; want the failed verification without the certificate hint", code, stderr)
		}
	})

	t.Run("accepted certificate", func(t *testing.T) {
		c := &registryConn{addr: o.addr, trustDomain: "vn.ketnoi", cert: o.conn[3], key: o.conn[5], bundle: o.bundle}
		conn, err := c.dial()
		if err != nil {
			t.Fatal(err)
		}
		conn.Close()
		if alert, refused := c.refusedBy(t.Context()); refused {
			t.Errorf("the probe reports a certificate the registry accepts as refused (%s)", alert)
		}
	})
}
