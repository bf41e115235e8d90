package registry

import (
	"crypto/x509"
	"errors"
	"io"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/testing/protocmp"

	"github.com/ketnoi/ketnoi/internal/gconf"
	"github.com/ketnoi/ketnoi/internal/sign"
	registryv1 "github.com/ketnoi/ketnoi/proto/ketnoi/registry/v1"
)

func TestPublishedConfiguration(t *testing.T) {
	f := newFixture(t)
	ctx := testContext(t)
	admin := f.admin(t)
	f.populate(t, ctx, admin)
	resp, err := admin.AddGrant(ctx, &registryv1.AddGrantRequest{
		Client:   memberG22 + "/vanban",
		Service:  serviceDVHC,
		Methods:  []string{"GetUnit", "ConvertOldUnit", "GetUnit"},
		Purposes: []string{"HS-01"},
	})
	if err != nil {
		t.Fatalf("AddGrant: %v", err)
	}
	// Two members, two subsystems, a node, a service and a grant, each one
	// version, after the version published when the registry opened.
	if resp.GetVersion() != 8 || resp.GetGrant().GetId() != "g-1" {
		t.Errorf("AddGrant = version %d, grant %q; want version 8, grant g-1",
			resp.GetVersion(), resp.GetGrant().GetId())
	}

	got, err := f.registryClient(t, nodeID).GetConfiguration(ctx, &registryv1.GetConfigurationRequest{})
	if err != nil {
		t.Fatalf("GetConfiguration: %v", err)
	}
	sc := got.GetConfiguration()
	cert := verifySigned(t, sc)
	if err := sign.VerifyCertificate(cert, nil, f.ca.Pool(), time.Now()); err != nil {
		t.Errorf("signer certificate does not chain to the CA: %v", err)
	}
	if _, err := gconf.Verify(sc, f.ca.Pool(), time.Now()); err != nil {
		t.Errorf("a node would reject the configuration: %v", err)
	}

	c := decode(t, sc)
	if c.GetVersion() != 8 {
		t.Errorf("configuration version = %d, want 8", c.GetVersion())
	}
	if ttl := c.GetExpiresAt().AsTime().Sub(c.GetIssuedAt().AsTime()); ttl != DefaultConfigTTL {
		t.Errorf("expires_at - issued_at = %v, want %v", ttl, DefaultConfigTTL)
	}
	want := &registryv1.GlobalConfiguration{
		Version:     8,
		Instance:    "VN",
		TrustDomain: testTD,
		Members: []*registryv1.Member{
			{
				Id:                  memberG09,
				Name:                "member " + memberG09,
				Subsystems:          []string{"dvhc"},
				SigningCertificates: [][]byte{f.signingCerts[memberG09]},
			},
			{
				Id:                  memberG22,
				Name:                "member " + memberG22,
				Subsystems:          []string{"vanban"},
				SigningCertificates: [][]byte{f.signingCerts[memberG22]},
			},
		},
		Nodes: []*registryv1.Node{{SpiffeId: nodeID, Member: memberG22, Address: "127.0.0.1:8443"}},
		Services: []*registryv1.Service{{
			Id:             serviceDVHC,
			Provider:       subsystemDVHC,
			GrpcService:    "vn.gov.dvhc.v1.AdminUnitService",
			Description:    "Administrative units",
			Custodian:      "Department of local government",
			Classification: registryv1.Classification_CLASSIFICATION_NORMAL,
			Methods: []*registryv1.Method{
				{Name: "GetUnit"},
				{Name: "ListCommunes", ServerStreaming: true},
				{Name: "ConvertOldUnit"},
			},
			FileDescriptorSet: dvhcDescriptors(t),
		}},
		Grants: []*registryv1.Grant{{
			Id:       "g-1",
			Client:   memberG22 + "/vanban",
			Service:  serviceDVHC,
			Methods:  []string{"ConvertOldUnit", "GetUnit"},
			Purposes: []string{"HS-01"},
		}},
		TrustAnchors: [][]byte{f.ca.Bundle().X509Authorities()[0].Raw},
	}
	opts := cmp.Options{
		protocmp.Transform(),
		protocmp.IgnoreFields(&registryv1.GlobalConfiguration{}, "issued_at", "expires_at"),
		protocmp.IgnoreFields(&registryv1.Grant{}, "created_at"),
	}
	if diff := cmp.Diff(want, c, opts); diff != "" {
		t.Errorf("configuration mismatch (-want +got):\n%s", diff)
	}
}

// verifySigned checks a signed configuration's signature with its leaf
// certificate and returns that certificate.
func verifySigned(t *testing.T, sc *registryv1.SignedConfiguration) *x509.Certificate {
	t.Helper()
	if len(sc.GetCertificateChain()) != 1 {
		t.Fatalf("certificate chain has %d certificates, want 1", len(sc.GetCertificateChain()))
	}
	certs, err := sign.ParseCertificates(sc.GetCertificateChain()[0])
	if err != nil {
		t.Fatalf("parse signer certificate: %v", err)
	}
	err = sign.Verify(certs[0], sign.TypeConfiguration, sc.GetConfiguration(), sc.GetSignature())
	if err != nil {
		t.Fatalf("signature does not verify: %v", err)
	}
	tampered := append([]byte(nil), sc.GetConfiguration()...)
	tampered[len(tampered)-1] ^= 1
	if err := sign.Verify(certs[0], sign.TypeConfiguration, tampered, sc.GetSignature()); !errors.Is(err, sign.ErrBadSignature) {
		t.Errorf("signature over altered bytes: err = %v, want %v", err, sign.ErrBadSignature)
	}
	return certs[0]
}

func TestRestartKeepsVersionAndContent(t *testing.T) {
	f := newFixture(t)
	ctx := testContext(t)
	f.populate(t, ctx, f.admin(t))
	before := f.reg.Configuration()

	f.restart(t)

	got, err := f.registryClient(t, adminID).GetConfiguration(ctx, &registryv1.GetConfigurationRequest{})
	if err != nil {
		t.Fatalf("GetConfiguration after restart: %v", err)
	}
	if diff := cmp.Diff(before, got.GetConfiguration(), protocmp.Transform()); diff != "" {
		t.Errorf("configuration changed across restart (-before +after):\n%s", diff)
	}

	// The next change continues the version sequence.
	resp, err := f.admin(t).AddGrant(ctx, &registryv1.AddGrantRequest{Client: memberG22, Service: serviceDVHC})
	if err != nil {
		t.Fatalf("AddGrant after restart: %v", err)
	}
	if want := decode(t, before).GetVersion() + 1; resp.GetVersion() != want {
		t.Errorf("version after restart and one change = %d, want %d", resp.GetVersion(), want)
	}
}

func TestRestartWithNewSettingsPublishesNewVersion(t *testing.T) {
	f := newFixture(t)
	ctx := testContext(t)
	f.populate(t, ctx, f.admin(t))
	before := decode(t, f.reg.Configuration())

	f.cfg.ConfigTTL = 2 * time.Hour
	f.restart(t)

	after := decode(t, f.reg.Configuration())
	if after.GetVersion() != before.GetVersion()+1 {
		t.Errorf("version after restart with a new TTL = %d, want %d", after.GetVersion(), before.GetVersion()+1)
	}
	if ttl := after.GetExpiresAt().AsTime().Sub(after.GetIssuedAt().AsTime()); ttl != 2*time.Hour {
		t.Errorf("TTL of the new version = %v, want 2h", ttl)
	}
	if len(after.GetMembers()) != 2 || len(after.GetServices()) != 1 {
		t.Errorf("new version has %d members and %d services, want 2 and 1",
			len(after.GetMembers()), len(after.GetServices()))
	}
}

func TestReissueBeforeExpiry(t *testing.T) {
	f := newFixture(t)
	f.close()
	f.cfg.ConfigTTL = 400 * time.Millisecond
	f.start(t)
	ctx := testContext(t)
	first := decode(t, f.reg.Configuration())

	stream, err := f.registryClient(t, nodeID).WatchConfiguration(ctx,
		&registryv1.WatchConfigurationRequest{KnownVersion: first.GetVersion()})
	if err != nil {
		t.Fatalf("WatchConfiguration: %v", err)
	}
	msg, err := stream.Recv()
	if err != nil {
		t.Fatalf("Recv: %v", err)
	}
	next := decode(t, msg.GetConfiguration())
	if next.GetVersion() <= first.GetVersion() {
		t.Errorf("re-issued version %d, want more than %d", next.GetVersion(), first.GetVersion())
	}
	if !next.GetIssuedAt().AsTime().After(first.GetIssuedAt().AsTime()) {
		t.Errorf("re-issued at %v, not after %v", next.GetIssuedAt().AsTime(), first.GetIssuedAt().AsTime())
	}
	opts := cmp.Options{
		protocmp.Transform(),
		protocmp.IgnoreFields(&registryv1.GlobalConfiguration{}, "version", "issued_at", "expires_at"),
	}
	if diff := cmp.Diff(first, next, opts); diff != "" {
		t.Errorf("re-issue changed the content (-first +next):\n%s", diff)
	}
}

func TestWatchSendsNewVersions(t *testing.T) {
	f := newFixture(t)
	ctx := testContext(t)
	admin := f.admin(t)
	f.populate(t, ctx, admin)
	known := decode(t, f.reg.Configuration()).GetVersion()

	// A watcher that holds an old version gets the current one at once.
	stale, err := f.registryClient(t, nodeID).WatchConfiguration(ctx, &registryv1.WatchConfigurationRequest{})
	if err != nil {
		t.Fatalf("WatchConfiguration: %v", err)
	}
	if msg, err := stale.Recv(); err != nil || decode(t, msg.GetConfiguration()).GetVersion() != known {
		t.Fatalf("first message of a watch from version 0: %v, want version %d", err, known)
	}

	watch, err := f.registryClient(t, nodeID).WatchConfiguration(ctx,
		&registryv1.WatchConfigurationRequest{KnownVersion: known})
	if err != nil {
		t.Fatalf("WatchConfiguration: %v", err)
	}
	resp, err := admin.AddGrant(ctx, &registryv1.AddGrantRequest{Client: memberG22, Service: serviceDVHC})
	if err != nil {
		t.Fatalf("AddGrant: %v", err)
	}
	for _, s := range []registryv1.RegistryService_WatchConfigurationClient{watch, stale} {
		msg, err := s.Recv()
		if err != nil {
			t.Fatalf("Recv: %v", err)
		}
		c := decode(t, msg.GetConfiguration())
		verifySigned(t, msg.GetConfiguration())
		if c.GetVersion() != resp.GetVersion() || len(c.GetGrants()) != 1 || c.GetGrants()[0].GetId() != "g-1" {
			t.Errorf("watched version %d with grants %v, want version %d with g-1",
				c.GetVersion(), c.GetGrants(), resp.GetVersion())
		}
	}
}

func TestWatchEndsOnShutdown(t *testing.T) {
	f := newFixture(t)
	ctx := testContext(t)
	known := decode(t, f.reg.Configuration()).GetVersion()
	watch, err := f.registryClient(t, nodeID).WatchConfiguration(ctx,
		&registryv1.WatchConfigurationRequest{KnownVersion: known})
	if err != nil {
		t.Fatalf("WatchConfiguration: %v", err)
	}

	f.reg.Shutdown()

	_, err = watch.Recv()
	if err == nil || errors.Is(err, io.EOF) {
		t.Fatalf("Recv after shutdown: %v, want Unavailable", err)
	}
	if status.Code(err) != codes.Unavailable {
		t.Errorf("Recv after shutdown: %v, want Unavailable", err)
	}
}
