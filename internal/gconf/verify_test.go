package gconf_test

import (
	"errors"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/testing/protocmp"

	"github.com/ketnoi/ketnoi/internal/gconf"
	"github.com/ketnoi/ketnoi/internal/pki/pkitest"
	registryv1 "github.com/ketnoi/ketnoi/proto/ketnoi/registry/v1"
)

func TestVerify(t *testing.T) {
	ca := pkitest.NewCA(t, "vn.ketnoi")
	reg := ca.RegistrySigner(t)
	want := config(7)
	sc := signed(t, reg, want)

	got, err := gconf.Verify(sc, ca.Pool(), time.Now())
	if err != nil {
		t.Fatalf("Verify: %v", err)
	}
	if diff := cmp.Diff(want, got, protocmp.Transform()); diff != "" {
		t.Errorf("verified configuration mismatch (-want +got):\n%s", diff)
	}
}

func TestVerifyRejects(t *testing.T) {
	ca := pkitest.NewCA(t, "vn.ketnoi")
	otherCA := pkitest.NewCA(t, "vn.ketnoi")
	reg := ca.RegistrySigner(t)
	good := signed(t, reg, config(7))
	now := time.Now()

	edit := func(f func(sc *registryv1.SignedConfiguration)) *registryv1.SignedConfiguration {
		sc := proto.Clone(good).(*registryv1.SignedConfiguration)
		f(sc)
		return sc
	}
	tests := []struct {
		name string
		sc   *registryv1.SignedConfiguration
		at   time.Time
	}{
		{"nil", nil, now},
		{"member signer", signed(t, ca.Signer(t, "VN/NN/000.00.00.G22"), config(7)), now},
		{"another CA", signed(t, otherCA.RegistrySigner(t), config(7)), now},
		{"altered bytes", edit(func(sc *registryv1.SignedConfiguration) {
			sc.Configuration[len(sc.Configuration)-1] ^= 1
		}), now},
		{"signature of other bytes", edit(func(sc *registryv1.SignedConfiguration) {
			sc.Signature = signed(t, reg, config(8)).GetSignature()
		}), now},
		{"no certificate", edit(func(sc *registryv1.SignedConfiguration) { sc.CertificateChain = nil }), now},
		{"garbage certificate", edit(func(sc *registryv1.SignedConfiguration) {
			sc.CertificateChain = [][]byte{[]byte("not DER")}
		}), now},
		{"certificate of another registry signer", edit(func(sc *registryv1.SignedConfiguration) {
			sc.CertificateChain = [][]byte{ca.RegistrySigner(t).Certificate().Raw}
		}), now},
		{"expired signer", good, now.Add(48 * time.Hour)},
	}
	for _, tt := range tests {
		cfg, err := gconf.Verify(tt.sc, ca.Pool(), tt.at)
		if !errors.Is(err, gconf.ErrInvalid) {
			t.Errorf("%s: Verify = %v, %v; want ErrInvalid", tt.name, cfg, err)
		}
	}
}

// TestVerifyIgnoresOwnAnchors checks that a configuration cannot vouch for
// itself by listing its signer's CA among its trust anchors.
func TestVerifyIgnoresOwnAnchors(t *testing.T) {
	ca := pkitest.NewCA(t, "vn.ketnoi")
	rogue := pkitest.NewCA(t, "vn.ketnoi")
	cfg := config(9)
	cfg.TrustAnchors = [][]byte{rogue.PKI().Cert.Raw}
	sc := signed(t, rogue.RegistrySigner(t), cfg)
	sc.CertificateChain = append(sc.CertificateChain, rogue.PKI().Cert.Raw)
	if _, err := gconf.Verify(sc, ca.Pool(), time.Now()); !errors.Is(err, gconf.ErrInvalid) {
		t.Errorf("Verify of a self-anchored configuration = %v, want ErrInvalid", err)
	}
}
