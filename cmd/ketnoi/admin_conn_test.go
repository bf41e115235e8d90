package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc"

	"github.com/ketnoi/ketnoi/internal/mtls"
	"github.com/ketnoi/ketnoi/internal/pki/pkitest"
	registryv1 "github.com/ketnoi/ketnoi/proto/ketnoi/registry/v1"
)

// refusedHint is what the CLI adds when the registry refused its
// certificate.
const refusedHint = "the registry refused certificate spiffe://vn.ketnoi/admin/alice (tls: bad certificate): " +
	"check --cert/--key, --bundle and --trust-domain"

// TestRegistryRefusesCertificate: with a certificate of another CA the
// registry answers the handshake with a TLS alert, which a call that has
// written into the connection may never read; the CLI must say that its
// certificate was refused, and only then.
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
		// Each run gets the hint, however the connection's end races
		// with gRPC's first writes.
		const runs = 3
		for range runs {
			code, _, stderr := ketnoi(t, "config", "show",
				"--registry", o.addr, "--cert", cert, "--key", key, "--bundle", o.bundle)
			if code != 1 || !strings.Contains(stderr, refusedHint) || strings.Count(stderr, "\n") != 1 {
				t.Fatalf("exit %d, stderr %q; want exit 1 and one line with %q", code, stderr, refusedHint)
			}
		}
		// The registry logs each refused command once: the CLI learns of
		// the refusal from its one connection. The log may trail the
		// command's exit by a moment.
		refused := func() int { return strings.Count(o.refusals.String(), `msg="TLS handshake failed"`) }
		for deadline := time.Now().Add(5 * time.Second); refused() < runs && time.Now().Before(deadline); {
			time.Sleep(10 * time.Millisecond)
		}
		time.Sleep(100 * time.Millisecond)
		if n := refused(); n != runs {
			t.Errorf("the registry logged %d refused handshakes for %d refused commands, want %d:\n%s",
				n, runs, runs, o.refusals)
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
		// The registry's first bytes, read ahead to look for an alert,
		// reach gRPC unchanged.
		c := &registryConn{addr: o.addr, trustDomain: "vn.ketnoi", cert: o.conn[3], key: o.conn[5], bundle: o.bundle}
		err := callRegistry(t.Context(), c, func(ctx context.Context, cc *grpc.ClientConn) error {
			_, err := registryv1.NewRegistryServiceClient(cc).GetConfiguration(ctx, &registryv1.GetConfigurationRequest{})
			return err
		})
		if err != nil {
			t.Errorf("GetConfiguration with an accepted certificate: %v", err)
		}
		if alert := c.creds.Alert(); alert != "" {
			t.Errorf("a certificate the registry accepts was taken as refused (%s)", alert)
		}
	})
}

// A --trust-domain that neither the bundle's CA certificates nor the
// operator's SVID belong to is a wrong command line, said in those words
// rather than go-spiffe's; a CA certificate that names no trust domain
// leaves the SVID to tell.
func TestCheckTrustDomain(t *testing.T) {
	named := pkitest.NewCA(t, "vn.ketnoi")
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "CA without a SPIFFE ID"},
		NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	unnamed, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	operator := spiffeid.RequireFromString("spiffe://vn.ketnoi/admin/alice")

	for _, tc := range []struct {
		name  string
		roots []*x509.Certificate
		td    string
		want  string // "" for no error
	}{
		{"bundle of the trust domain", named.Bundle().X509Authorities(), "vn.ketnoi", ""},
		{"bundle of another trust domain", named.Bundle().X509Authorities(), "other.td",
			"--trust-domain other.td: the bundle bundle.pem holds no roots for it, only for vn.ketnoi"},
		{"unnamed CA, the SVID's trust domain", []*x509.Certificate{unnamed}, "vn.ketnoi", ""},
		{"unnamed CA, another trust domain", []*x509.Certificate{unnamed}, "other.td",
			"--trust-domain other.td: the operator certificate alice.pem is of trust domain vn.ketnoi"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			td := spiffeid.RequireTrustDomainFromString(tc.td)
			c := &registryConn{cert: "alice.pem", bundle: "bundle.pem", id: operator}
			identity := mtls.Identity{Bundle: x509bundle.FromX509Authorities(td, tc.roots)}
			err := c.checkTrustDomain(identity, td)
			var ue usageError
			switch {
			case tc.want == "" && err != nil:
				t.Errorf("checkTrustDomain = %v, want nil", err)
			case tc.want != "" && (!errors.As(err, &ue) || err.Error() != tc.want):
				t.Errorf("checkTrustDomain = %v, want the usage error %q", err, tc.want)
			}
		})
	}
}
