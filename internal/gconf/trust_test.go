package gconf_test

import (
	"testing"
	"time"

	"github.com/ketnoi/ketnoi/internal/gconf"
	"github.com/ketnoi/ketnoi/internal/pki/pkitest"
	registryv1 "github.com/ketnoi/ketnoi/proto/ketnoi/registry/v1"
)

// Only signing certificates that name the member they are listed under,
// and (for a trusted view) chain to the anchors now, verify messages.
func TestTrustedViewSkipsUntrustedSigners(t *testing.T) {
	ca := pkitest.NewCA(t, "vn.ketnoi")
	other := pkitest.NewCA(t, "vn.ketnoi")
	good := ca.Signer(t, "VN/NN/000.00.00.G22")
	foreign := other.Signer(t, "VN/NN/000.00.00.G22")
	misfiled := ca.Signer(t, "VN/NN/000.00.00.G09")
	cfg := &registryv1.GlobalConfiguration{Members: []*registryv1.Member{{
		Id: "VN/NN/000.00.00.G22",
		SigningCertificates: [][]byte{
			good.Certificate().Raw, foreign.Certificate().Raw, misfiled.Certificate().Raw,
		},
	}}}

	v := gconf.NewTrustedView(cfg, ca.Pool(), time.Now())
	if _, m, ok := v.SigningCertificate(good.CertificateSHA256()); !ok || m != "VN/NN/000.00.00.G22" {
		t.Errorf("the member's own certificate is not trusted")
	}
	if _, _, ok := v.SigningCertificate(foreign.CertificateSHA256()); ok {
		t.Errorf("a certificate from another CA is trusted")
	}
	if _, _, ok := v.SigningCertificate(misfiled.CertificateSHA256()); ok {
		t.Errorf("another member's certificate listed under G22 is trusted")
	}
	if _, _, ok := gconf.NewTrustedView(cfg, ca.Pool(), time.Now().Add(100*365*24*time.Hour)).SigningCertificate(good.CertificateSHA256()); ok {
		t.Errorf("an expired certificate is trusted")
	}
	if _, _, ok := gconf.NewView(cfg).SigningCertificate(misfiled.CertificateSHA256()); ok {
		t.Errorf("NewView trusts a certificate listed under the wrong member")
	}
}
