package pkitest_test

import (
	"errors"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/ketnoi/ketnoi/internal/id"
	"github.com/ketnoi/ketnoi/internal/pki/pkitest"
	"github.com/ketnoi/ketnoi/internal/sign"
)

func TestSVID(t *testing.T) {
	ca := pkitest.NewCA(t, "vn.ketnoi")
	const want = "spiffe://vn.ketnoi/node/NN/000.00.00.G22/ss1"
	var src x509svid.Source = ca.SVID(t, want)

	svid, err := src.GetX509SVID()
	if err != nil {
		t.Fatal(err)
	}
	if svid.ID.String() != want {
		t.Errorf("SVID ID = %s, want %s", svid.ID, want)
	}
	gotID, _, err := x509svid.Verify(svid.Certificates, ca.Bundle())
	if err != nil {
		t.Fatalf("x509svid.Verify against the CA's bundle: %v", err)
	}
	if gotID.String() != want {
		t.Errorf("verified ID = %s, want %s", gotID, want)
	}
	other := pkitest.NewCA(t, "vn.ketnoi")
	if _, _, err := x509svid.Verify(svid.Certificates, other.Bundle()); err == nil {
		t.Errorf("SVID verified against another CA's bundle")
	}
	if got := ca.PKI().TrustDomain; got != spiffeid.RequireTrustDomainFromString("vn.ketnoi") {
		t.Errorf("PKI().TrustDomain = %v, want vn.ketnoi", got)
	}
}

func TestSigners(t *testing.T) {
	ca := pkitest.NewCA(t, "vn.ketnoi")
	member := ca.Signer(t, "VN/NN/000.00.00.G22")
	reg := ca.RegistrySigner(t)

	tests := []struct {
		name    string
		signer  *sign.Signer
		wantURI string
	}{
		{"member", member, "urn:ketnoi:member:VN/NN/000.00.00.G22"},
		{"registry", reg, id.RegistrySigningURI},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cert := tt.signer.Certificate()
			if len(cert.URIs) != 1 || cert.URIs[0].String() != tt.wantURI {
				t.Errorf("URI SANs = %v, want [%s]", cert.URIs, tt.wantURI)
			}
			if err := sign.VerifyCertificate(cert, nil, ca.Pool(), time.Now()); err != nil {
				t.Errorf("VerifyCertificate: %v", err)
			}
			other := pkitest.NewCA(t, "vn.ketnoi")
			err := sign.VerifyCertificate(cert, nil, other.Pool(), time.Now())
			if !errors.Is(err, sign.ErrUntrustedCertificate) {
				t.Errorf("VerifyCertificate against another CA = %v, want ErrUntrustedCertificate", err)
			}
			body := []byte("configuration")
			sig, err := tt.signer.Sign(sign.TypeConfiguration, body)
			if err != nil {
				t.Fatal(err)
			}
			if err := sign.Verify(cert, sign.TypeConfiguration, body, sig); err != nil {
				t.Errorf("Verify: %v", err)
			}
		})
	}
}
