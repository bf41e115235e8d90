package registry

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/ketnoi/ketnoi/internal/exchange"
	"github.com/ketnoi/ketnoi/internal/gconf"
	"github.com/ketnoi/ketnoi/internal/sign"
	exchangev1 "github.com/ketnoi/ketnoi/proto/ketnoi/exchange/v1"
	registryv1 "github.com/ketnoi/ketnoi/proto/ketnoi/registry/v1"
)

// openWithPublished signs a request as s and opens it the way a provider
// node does with the registry's current configuration: verified against
// the CA, indexed as a trusted view, and the header's signer looked up in
// it. It returns the refusal, or nil when the message is accepted.
func (f *fixture) openWithPublished(t *testing.T, s *sign.Signer) *exchange.Error {
	t.Helper()
	now := time.Now()
	cfg, err := gconf.Verify(f.reg.Configuration(), f.ca.Pool(), now)
	if err != nil {
		t.Fatalf("verify published configuration: %v", err)
	}
	view := gconf.NewTrustedView(cfg, f.ca.Pool(), now)

	bs := exchange.NewBatchSigner(s, nil)
	defer bs.Close()
	h := &exchangev1.Header{
		MessageId: exchange.NewMessageID(),
		Direction: exchangev1.Direction_DIRECTION_REQUEST,
		CallKind:  exchangev1.CallKind_CALL_KIND_UNARY,
		Client:    memberG22 + "/vanban",
		Service:   serviceDVHC,
		Method:    "GetUnit",
	}
	sealed, err := exchange.Seal(t.Context(), bs, h, []byte{0x0a, 0x02, '0', '1'}, true, now)
	if err != nil {
		t.Fatalf("Seal: %v", err)
	}
	opened, xerr := exchange.Open(sealed.Frame, view.SigningCertificate, exchange.NewVerifier(16))
	if xerr == nil && opened.SignerMember != memberG22 {
		t.Fatalf("signer member = %q, want %s", opened.SignerMember, memberG22)
	}
	return xerr
}

// A member rotates its signing key: while both certificates are listed,
// nodes accept messages signed with either; once the old one is removed,
// its messages are refused as signed by an unknown certificate.
func TestSigningCertificateRotation(t *testing.T) {
	f := newFixture(t)
	ctx := testContext(t)
	admin := f.admin(t)
	f.populate(t, ctx, admin)
	oldKey, newKey := f.ca.Signer(t, memberG22), f.ca.Signer(t, memberG22)
	registered := f.signingCerts[memberG22]

	for _, s := range []*sign.Signer{oldKey, newKey} {
		resp, err := admin.AddSigningCertificate(ctx, &registryv1.AddSigningCertificateRequest{
			MemberId: memberG22, SigningCertificate: s.Certificate().Raw,
		})
		if err != nil {
			t.Fatalf("AddSigningCertificate: %v", err)
		}
		if resp.GetVersion() != f.published(t).GetVersion() {
			t.Errorf("AddSigningCertificate version %d, published %d", resp.GetVersion(), f.published(t).GetVersion())
		}
	}
	if got := signingCerts(f.published(t), memberG22); len(got) != 3 || !bytes.Equal(got[0], registered) ||
		!bytes.Equal(got[1], oldKey.Certificate().Raw) || !bytes.Equal(got[2], newKey.Certificate().Raw) {
		t.Fatalf("published G22 has %d signing certificates, want the registered, old and new in order", len(got))
	}
	for name, s := range map[string]*sign.Signer{"old": oldKey, "new": newKey} {
		if xerr := f.openWithPublished(t, s); xerr != nil {
			t.Errorf("message signed with the %s key while both are listed: %v (%s)", name, xerr, xerr.Reason)
		}
	}

	resp, err := admin.RemoveSigningCertificate(ctx, &registryv1.RemoveSigningCertificateRequest{
		MemberId: memberG22, CertificateSha256: oldKey.CertificateSHA256(),
	})
	if err != nil {
		t.Fatalf("RemoveSigningCertificate: %v", err)
	}
	if got := resp.GetMember().GetSigningCertificates(); len(got) != 2 || !bytes.Equal(got[1], newKey.Certificate().Raw) {
		t.Errorf("member after removal has %d certificates, want the registered and the new one", len(got))
	}
	if xerr := f.openWithPublished(t, oldKey); xerr == nil || xerr.Reason != exchange.ReasonSignerUnknown ||
		xerr.Code != codes.Unauthenticated {
		t.Errorf("message signed with the removed key: %v, want Unauthenticated %s", xerr, exchange.ReasonSignerUnknown)
	}
	if xerr := f.openWithPublished(t, newKey); xerr != nil {
		t.Errorf("message signed with the new key after the old one was removed: %v (%s)", xerr, xerr.Reason)
	}

	// The last certificate stays.
	first := sha256.Sum256(registered)
	if _, err := admin.RemoveSigningCertificate(ctx, &registryv1.RemoveSigningCertificateRequest{
		MemberId: memberG22, CertificateSha256: first[:],
	}); err != nil {
		t.Fatalf("RemoveSigningCertificate of the first certificate: %v", err)
	}
	_, err = admin.RemoveSigningCertificate(ctx, &registryv1.RemoveSigningCertificateRequest{
		MemberId: memberG22, CertificateSha256: newKey.CertificateSHA256(),
	})
	if st := status.Convert(err); st.Code() != codes.FailedPrecondition ||
		st.Message() != "signing certificate sha256 "+hex.EncodeToString(newKey.CertificateSHA256())+
			" is the only one of member "+memberG22+"; add its successor first" {
		t.Errorf("removing the last certificate: %v %q, want FailedPrecondition", st.Code(), st.Message())
	}
	if xerr := f.openWithPublished(t, newKey); xerr != nil {
		t.Errorf("message signed with the remaining key: %v (%s)", xerr, xerr.Reason)
	}
}

// signingCerts returns the signing certificates a configuration lists for
// a member.
func signingCerts(c *registryv1.GlobalConfiguration, member string) [][]byte {
	for _, m := range c.GetMembers() {
		if m.GetId() == member {
			return m.GetSigningCertificates()
		}
	}
	return nil
}
