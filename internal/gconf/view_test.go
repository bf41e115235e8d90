package gconf_test

import (
	"bytes"
	"errors"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/ketnoi/ketnoi/internal/gconf"
	"github.com/ketnoi/ketnoi/internal/id"
	"github.com/ketnoi/ketnoi/internal/pki/pkitest"
	"github.com/ketnoi/ketnoi/internal/sign"
	registryv1 "github.com/ketnoi/ketnoi/proto/ketnoi/registry/v1"
)

const (
	svcDVHC  = "VN/NN/000.00.00.G09/dvhc/vn.gov.dvhc.v1.AdminUnitService"
	svcDVHC2 = "VN/NN/000.00.00.G10/dvhc/vn.gov.dvhc.v1.AdminUnitService"
	svcOther = "VN/NN/000.00.00.G09/dvhc/vn.gov.dvhc.v1.OtherService"
)

var viewNow = time.Date(2025, 6, 1, 8, 0, 0, 0, time.UTC)

func viewConfig() *registryv1.GlobalConfiguration {
	return &registryv1.GlobalConfiguration{
		Version:   3,
		ExpiresAt: timestamppb.New(viewNow.Add(time.Hour)),
		Members: []*registryv1.Member{
			{Id: "VN/NN/000.00.00.G09", Subsystems: []string{"dvhc"}},
			{Id: "VN/NN/000.00.00.G22", Subsystems: []string{"vanban"}},
			{Id: "VN/NN/000.00.00.G23", Subsystems: []string{"vanban", "hotich"}},
		},
		Nodes: []*registryv1.Node{
			{SpiffeId: "spiffe://vn.ketnoi/node/NN/000.00.00.G09/ss1", Member: "VN/NN/000.00.00.G09", Address: "127.0.0.1:1"},
			{SpiffeId: "spiffe://vn.ketnoi/node/NN/000.00.00.G09/ss2", Member: "VN/NN/000.00.00.G09", Address: "127.0.0.1:2"},
			{SpiffeId: "spiffe://vn.ketnoi/node/NN/000.00.00.G22/ss1", Member: "VN/NN/000.00.00.G22", Address: "127.0.0.1:3"},
		},
		Services: []*registryv1.Service{
			{Id: svcDVHC, Provider: "VN/NN/000.00.00.G09/dvhc", GrpcService: "vn.gov.dvhc.v1.AdminUnitService",
				Methods: []*registryv1.Method{{Name: "GetProvince"}, {Name: "WatchUnits", ServerStreaming: true}}},
			{Id: svcDVHC2, Provider: "VN/NN/000.00.00.G10/dvhc", GrpcService: "vn.gov.dvhc.v1.AdminUnitService"},
			{Id: svcOther, Provider: "VN/NN/000.00.00.G09/dvhc", GrpcService: "vn.gov.dvhc.v1.OtherService"},
		},
		Grants: []*registryv1.Grant{
			{Id: "g-member", Client: "VN/NN/000.00.00.G22", Service: svcDVHC},
			{Id: "g-subsystem", Client: "VN/NN/000.00.00.G23/vanban", Service: svcDVHC,
				Methods: []string{"GetProvince"}, Purposes: []string{"cap-giay-phep"},
				ExpiresAt: timestamppb.New(viewNow.Add(time.Minute))},
			{Id: "g-expired", Client: "VN/NN/000.00.00.G24", Service: svcDVHC,
				ExpiresAt: timestamppb.New(viewNow)},
			{Id: "g-other", Client: "VN/NN/000.00.00.G25", Service: svcOther},
		},
	}
}

func client(t *testing.T, s string) id.Client {
	t.Helper()
	c, err := id.ParseClient(s)
	if err != nil {
		t.Fatalf("ParseClient(%q): %v", s, err)
	}
	return c
}

func TestAuthorize(t *testing.T) {
	v := gconf.NewView(viewConfig())
	tests := []struct {
		name    string
		client  string
		service string
		method  string
		purpose string
		at      time.Time
		want    string // grant id, or "" for ErrNoGrant
	}{
		{"member grant to member",
			"VN/NN/000.00.00.G22", svcDVHC, "GetProvince", "", viewNow, "g-member"},
		{"member grant covers subsystem",
			"VN/NN/000.00.00.G22/vanban", svcDVHC, "WatchUnits", "x", viewNow, "g-member"},
		{"member grant, other service", "VN/NN/000.00.00.G22", svcOther, "GetProvince", "", viewNow, ""},
		{"subsystem grant",
			"VN/NN/000.00.00.G23/vanban", svcDVHC, "GetProvince", "cap-giay-phep", viewNow, "g-subsystem"},
		{"subsystem grant, other method",
			"VN/NN/000.00.00.G23/vanban", svcDVHC, "WatchUnits", "cap-giay-phep", viewNow, ""},
		{"subsystem grant, other purpose",
			"VN/NN/000.00.00.G23/vanban", svcDVHC, "GetProvince", "thong-ke", viewNow, ""},
		{"subsystem grant, no purpose",
			"VN/NN/000.00.00.G23/vanban", svcDVHC, "GetProvince", "", viewNow, ""},
		{"subsystem grant, other subsystem",
			"VN/NN/000.00.00.G23/hotich", svcDVHC, "GetProvince", "cap-giay-phep", viewNow, ""},
		{"subsystem grant, whole member",
			"VN/NN/000.00.00.G23", svcDVHC, "GetProvince", "cap-giay-phep", viewNow, ""},
		{"subsystem grant, just before expiry",
			"VN/NN/000.00.00.G23/vanban", svcDVHC, "GetProvince", "cap-giay-phep", viewNow.Add(time.Minute - time.Nanosecond), "g-subsystem"},
		{"subsystem grant, at expiry",
			"VN/NN/000.00.00.G23/vanban", svcDVHC, "GetProvince", "cap-giay-phep", viewNow.Add(time.Minute), ""},
		{"expired grant", "VN/NN/000.00.00.G24", svcDVHC, "GetProvince", "", viewNow, ""},
		{"expired grant, earlier",
			"VN/NN/000.00.00.G24", svcDVHC, "GetProvince", "", viewNow.Add(-time.Second), "g-expired"},
		{"unknown service", "VN/NN/000.00.00.G22", svcDVHC2, "GetProvince", "", viewNow, ""},
		{"unknown client", "VN/NN/000.00.00.G99", svcDVHC, "GetProvince", "", viewNow, ""},
	}
	for _, tt := range tests {
		g, err := v.Authorize(client(t, tt.client), tt.service, tt.method, tt.purpose, tt.at)
		if tt.want == "" {
			if !errors.Is(err, gconf.ErrNoGrant) {
				t.Errorf("%s: Authorize = %v, %v; want ErrNoGrant", tt.name, g.GetId(), err)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: Authorize: %v", tt.name, err)
			continue
		}
		if g.GetId() != tt.want {
			t.Errorf("%s: Authorize = grant %q, want %q", tt.name, g.GetId(), tt.want)
		}
	}
}

func TestViewLookups(t *testing.T) {
	v := gconf.NewView(viewConfig())
	if v.Version() != 3 {
		t.Errorf("Version = %d, want 3", v.Version())
	}
	if !v.ExpiresAt().Equal(viewNow.Add(time.Hour)) {
		t.Errorf("ExpiresAt = %v, want %v", v.ExpiresAt(), viewNow.Add(time.Hour))
	}
	if v.Expired(viewNow) || !v.Expired(viewNow.Add(time.Hour)) {
		t.Errorf("Expired(now), Expired(expiry) = %v, %v; want false, true",
			v.Expired(viewNow), v.Expired(viewNow.Add(time.Hour)))
	}

	if m, ok := v.Member("VN/NN/000.00.00.G22"); !ok || m.GetId() != "VN/NN/000.00.00.G22" {
		t.Errorf("Member(G22) = %v, %v", m, ok)
	}
	if _, ok := v.Member("VN/NN/000.00.00.G99"); ok {
		t.Errorf("Member(G99) found")
	}
	for s, want := range map[string]bool{
		"VN/NN/000.00.00.G22":        true,
		"VN/NN/000.00.00.G22/vanban": true,
		"VN/NN/000.00.00.G22/hotich": false,
		"VN/NN/000.00.00.G99":        false,
		"VN/NN/000.00.00.G99/vanban": false,
	} {
		if got := v.HasClient(client(t, s)); got != want {
			t.Errorf("HasClient(%s) = %v, want %v", s, got, want)
		}
	}

	if n, ok := v.Node("spiffe://vn.ketnoi/node/NN/000.00.00.G22/ss1"); !ok || n.GetAddress() != "127.0.0.1:3" {
		t.Errorf("Node(G22/ss1) = %v, %v", n, ok)
	}
	if _, ok := v.Node("spiffe://vn.ketnoi/node/NN/000.00.00.G22/ss9"); ok {
		t.Errorf("Node(G22/ss9) found")
	}
	if got := len(v.NodesOf("VN/NN/000.00.00.G09")); got != 2 {
		t.Errorf("NodesOf(G09) has %d nodes, want 2", got)
	}
	if got := v.NodesOf("VN/NN/000.00.00.G23"); len(got) != 0 {
		t.Errorf("NodesOf(G23) = %v, want none", got)
	}

	s, ok := v.Service(svcDVHC)
	if !ok || s.GetProvider() != "VN/NN/000.00.00.G09/dvhc" {
		t.Fatalf("Service(%s) = %v, %v", svcDVHC, s, ok)
	}
	if m, ok := gconf.Method(s, "WatchUnits"); !ok || !m.GetServerStreaming() {
		t.Errorf("Method(WatchUnits) = %v, %v", m, ok)
	}
	if _, ok := gconf.Method(s, "DeleteProvince"); ok {
		t.Errorf("Method(DeleteProvince) found")
	}

	var named []string
	for _, s := range v.ServicesNamed("vn.gov.dvhc.v1.AdminUnitService") {
		named = append(named, s.GetId())
	}
	if len(named) != 2 || named[0] != svcDVHC || named[1] != svcDVHC2 {
		t.Errorf("ServicesNamed(AdminUnitService) = %v, want [%s %s]", named, svcDVHC, svcDVHC2)
	}
	if got := v.ServicesNamed("vn.gov.dvhc.v1.Missing"); len(got) != 0 {
		t.Errorf("ServicesNamed(Missing) = %v, want none", got)
	}
}

func TestSigningCertificate(t *testing.T) {
	ca := pkitest.NewCA(t, "vn.ketnoi")
	g22 := ca.Signer(t, "VN/NN/000.00.00.G22")
	g22b := ca.Signer(t, "VN/NN/000.00.00.G22")
	g09 := ca.Signer(t, "VN/NN/000.00.00.G09")
	unregistered := ca.Signer(t, "VN/NN/000.00.00.G23")
	cfg := &registryv1.GlobalConfiguration{Members: []*registryv1.Member{
		{Id: "VN/NN/000.00.00.G22", SigningCertificates: [][]byte{
			g22.Certificate().Raw, []byte("not DER"), g22b.Certificate().Raw,
		}},
		{Id: "VN/NN/000.00.00.G09", SigningCertificates: [][]byte{g09.Certificate().Raw}},
	}}
	v := gconf.NewView(cfg)

	for _, tt := range []struct {
		s    *sign.Signer
		cert []byte
		want string
	}{
		{g22, g22.Certificate().Raw, "VN/NN/000.00.00.G22"},
		{g22b, g22b.Certificate().Raw, "VN/NN/000.00.00.G22"},
		{g09, g09.Certificate().Raw, "VN/NN/000.00.00.G09"},
	} {
		c, member, ok := v.SigningCertificate(tt.s.CertificateSHA256())
		if !ok || member != tt.want || !bytes.Equal(c.Raw, tt.cert) {
			t.Errorf("SigningCertificate for %s = %v, %q, %v", tt.want, c != nil, member, ok)
		}
	}
	for name, sum := range map[string][]byte{
		"unregistered": unregistered.CertificateSHA256(),
		"short":        g22.CertificateSHA256()[:16],
		"empty":        nil,
	} {
		if c, m, ok := v.SigningCertificate(sum); ok || c != nil || m != "" {
			t.Errorf("SigningCertificate(%s) = %v, %q, %v; want not found", name, c, m, ok)
		}
	}
}
