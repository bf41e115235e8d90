package registry

import (
	"context"
	"crypto/sha256"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	bolt "go.etcd.io/bbolt"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/testing/protocmp"
	"google.golang.org/protobuf/types/descriptorpb"

	registryv1 "github.com/ketnoi/ketnoi/proto/ketnoi/registry/v1"
)

// dvhcDescriptorsEdited is the descriptor set of the administrative units
// service with its service definition changed by edit.
func dvhcDescriptorsEdited(t *testing.T, edit func(*descriptorpb.ServiceDescriptorProto)) []byte {
	t.Helper()
	set := &descriptorpb.FileDescriptorSet{}
	if err := proto.Unmarshal(dvhcDescriptors(t), set); err != nil {
		t.Fatal(err)
	}
	for _, f := range set.GetFile() {
		for _, s := range f.GetService() {
			if f.GetPackage()+"."+s.GetName() == "vn.gov.dvhc.v1.AdminUnitService" {
				edit(s)
			}
		}
	}
	b, err := proto.Marshal(set)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// withoutMethods drops the named methods from a service definition.
func withoutMethods(names ...string) func(*descriptorpb.ServiceDescriptorProto) {
	return func(s *descriptorpb.ServiceDescriptorProto) {
		var kept []*descriptorpb.MethodDescriptorProto
		for _, m := range s.GetMethod() {
			if !strings.Contains(" "+strings.Join(names, " ")+" ", " "+m.GetName()+" ") {
				kept = append(kept, m)
			}
		}
		s.Method = kept
	}
}

// published returns the configuration the registry serves now.
func (f *fixture) published(t *testing.T) *registryv1.GlobalConfiguration {
	t.Helper()
	return decode(t, f.reg.Configuration())
}

func TestUpdateNodeMovesNode(t *testing.T) {
	f := newFixture(t)
	ctx := testContext(t)
	admin := f.admin(t)
	f.populate(t, ctx, admin)
	before := f.published(t).GetVersion()

	resp, err := admin.UpdateNode(ctx, &registryv1.UpdateNodeRequest{SpiffeId: nodeID, Address: "node1.g22.example:9443"})
	if err != nil {
		t.Fatalf("UpdateNode: %v", err)
	}
	want := &registryv1.Node{SpiffeId: nodeID, Member: memberG22, Address: "node1.g22.example:9443"}
	if diff := cmp.Diff(want, resp.GetNode(), protocmp.Transform()); diff != "" {
		t.Errorf("UpdateNode node (-want +got):\n%s", diff)
	}
	c := f.published(t)
	if resp.GetVersion() != before+1 || c.GetVersion() != before+1 {
		t.Errorf("version = %d, published %d; want %d", resp.GetVersion(), c.GetVersion(), before+1)
	}
	if diff := cmp.Diff([]*registryv1.Node{want}, c.GetNodes(), protocmp.Transform()); diff != "" {
		t.Errorf("published nodes (-want +got):\n%s", diff)
	}
}

func TestRemoveNode(t *testing.T) {
	f := newFixture(t)
	ctx := testContext(t)
	admin := f.admin(t)
	f.populate(t, ctx, admin)
	const other = "spiffe://vn.ketnoi/node/NN/000.00.00.G22/node2"
	if _, err := admin.AddNode(ctx, &registryv1.AddNodeRequest{SpiffeId: other, Address: "127.0.0.1:8444"}); err != nil {
		t.Fatal(err)
	}

	resp, err := admin.RemoveNode(ctx, &registryv1.RemoveNodeRequest{SpiffeId: nodeID})
	if err != nil {
		t.Fatalf("RemoveNode: %v", err)
	}
	c := f.published(t)
	if resp.GetVersion() != c.GetVersion() {
		t.Errorf("RemoveNode version %d, published %d", resp.GetVersion(), c.GetVersion())
	}
	if len(c.GetNodes()) != 1 || c.GetNodes()[0].GetSpiffeId() != other {
		t.Errorf("published nodes = %v, want only %s", c.GetNodes(), other)
	}
	// The identifier is free again.
	if _, err := admin.AddNode(ctx, &registryv1.AddNodeRequest{SpiffeId: nodeID, Address: "127.0.0.1:8445"}); err != nil {
		t.Errorf("AddNode after RemoveNode: %v", err)
	}
}

// The last node of a member stays while the member provides services or
// holds grants, and the refusal names them; any other node goes.
func TestRemoveLastNode(t *testing.T) {
	f := newFixture(t)
	ctx := testContext(t)
	admin := f.admin(t)
	f.populate(t, ctx, admin)
	const (
		bnv        = "spiffe://vn.ketnoi/node/NN/000.00.00.G09/bnv"
		node2      = "spiffe://vn.ketnoi/node/NN/000.00.00.G22/node2"
		serviceG22 = memberG22 + "/vanban/vn.gov.dvhc.v1.AdminUnitService"
	)
	if _, err := admin.AddNode(ctx, &registryv1.AddNodeRequest{SpiffeId: bnv, Address: "127.0.0.1:8450"}); err != nil {
		t.Fatal(err)
	}
	if _, err := admin.AddGrant(ctx, &registryv1.AddGrantRequest{
		Client: memberG22 + "/vanban", Service: serviceDVHC,
	}); err != nil {
		t.Fatal(err)
	}
	remove := func(sid string) error {
		_, err := admin.RemoveNode(ctx, &registryv1.RemoveNodeRequest{SpiffeId: sid})
		return err
	}
	refused := func(sid, want string) {
		t.Helper()
		before := f.published(t).GetVersion()
		st := status.Convert(remove(sid))
		if st.Code() != codes.FailedPrecondition || st.Message() != want {
			t.Errorf("RemoveNode %s: %v %q, want FailedPrecondition %q", sid, st.Code(), st.Message(), want)
		}
		if v := f.published(t).GetVersion(); v != before {
			t.Errorf("refused RemoveNode published version %d, want %d unchanged", v, before)
		}
	}

	refused(bnv, "node "+bnv+" is the last node of member "+memberG09+", which still provides services "+
		serviceDVHC+"; remove them or add another node first")
	refused(nodeID, "node "+nodeID+" is the last node of member "+memberG22+", which still holds grants g-1; "+
		"revoke them or add another node first")
	if _, err := admin.AddService(ctx, &registryv1.AddServiceRequest{
		ServiceId: serviceG22, FileDescriptorSet: dvhcDescriptors(t), Description: "copy", Custodian: "VPCP",
	}); err != nil {
		t.Fatal(err)
	}
	refused(nodeID, "node "+nodeID+" is the last node of member "+memberG22+", which still provides services "+
		serviceG22+" and holds grants g-1; remove the services and revoke the grants or add another node first")

	// Another node of the member lets this one go, and is the last then.
	if _, err := admin.AddNode(ctx, &registryv1.AddNodeRequest{SpiffeId: node2, Address: "127.0.0.1:8444"}); err != nil {
		t.Fatal(err)
	}
	if err := remove(nodeID); err != nil {
		t.Fatalf("RemoveNode of a node that is not the last: %v", err)
	}
	refused(node2, "node "+node2+" is the last node of member "+memberG22+", which still provides services "+
		serviceG22+" and holds grants g-1; remove the services and revoke the grants or add another node first")

	// Once nothing depends on the member's nodes, the last one goes.
	if _, err := admin.RevokeGrant(ctx, &registryv1.RevokeGrantRequest{GrantId: "g-1"}); err != nil {
		t.Fatal(err)
	}
	if _, err := admin.RemoveService(ctx, &registryv1.RemoveServiceRequest{ServiceId: serviceG22}); err != nil {
		t.Fatal(err)
	}
	if err := remove(node2); err != nil {
		t.Errorf("RemoveNode of the last node of a member nothing depends on: %v", err)
	}
}

// An update that asks for what is stored succeeds, says so, and publishes
// no version.
func TestUnchangedUpdates(t *testing.T) {
	f := newFixture(t)
	ctx := testContext(t)
	admin := f.admin(t)
	f.populate(t, ctx, admin)
	before := f.published(t).GetVersion()
	stored := f.published(t).GetServices()[0]

	node, err := admin.UpdateNode(ctx, &registryv1.UpdateNodeRequest{SpiffeId: nodeID, Address: "127.0.0.1:8443"})
	if err != nil {
		t.Fatalf("UpdateNode to the same address: %v", err)
	}
	want := &registryv1.Node{SpiffeId: nodeID, Member: memberG22, Address: "127.0.0.1:8443"}
	if !node.GetUnchanged() || node.GetVersion() != before ||
		!cmp.Equal(want, node.GetNode(), protocmp.Transform()) {
		t.Errorf("UpdateNode to the same address = %v, want unchanged at version %d with %v", node, before, want)
	}

	for name, req := range map[string]*registryv1.UpdateServiceRequest{
		"same description":    {Description: stored.GetDescription()},
		"same descriptor set": {FileDescriptorSet: dvhcDescriptors(t)},
		"every field the same": {
			FileDescriptorSet: dvhcDescriptors(t),
			Description:       stored.GetDescription(),
			Custodian:         stored.GetCustodian(),
			Classification:    stored.GetClassification(),
		},
	} {
		req.ServiceId = serviceDVHC
		resp, err := admin.UpdateService(ctx, req)
		if err != nil {
			t.Errorf("UpdateService with the %s: %v", name, err)
			continue
		}
		if !resp.GetUnchanged() || resp.GetVersion() != before ||
			!cmp.Equal(stored, resp.GetService(), protocmp.Transform()) {
			t.Errorf("UpdateService with the %s = unchanged %t, version %d; want unchanged at version %d",
				name, resp.GetUnchanged(), resp.GetVersion(), before)
		}
	}
	if v := f.published(t).GetVersion(); v != before {
		t.Fatalf("published version after unchanged updates = %d, want %d", v, before)
	}

	// A real change still publishes.
	resp, err := admin.UpdateService(ctx, &registryv1.UpdateServiceRequest{
		ServiceId: serviceDVHC, Custodian: "Vụ Chính quyền địa phương",
	})
	if err != nil || resp.GetUnchanged() || resp.GetVersion() != before+1 {
		t.Errorf("UpdateService with a new custodian = %v, %v; want version %d, changed", resp, err, before+1)
	}
}

// Members of a class dropped from the configured classes are named in one
// warning at start; nothing new can be registered for them, but what they
// have can be changed and retired, down to the member itself.
func TestDroppedClass(t *testing.T) {
	f := newFixture(t)
	ctx := testContext(t)
	f.populate(t, ctx, f.admin(t))
	if _, err := f.admin(t).AddGrant(ctx, &registryv1.AddGrantRequest{
		Client: memberG22 + "/vanban", Service: serviceDVHC,
	}); err != nil {
		t.Fatal(err)
	}

	f.cfg.Classes = []string{"DANG", "MTTQ"}
	logs := logTo(&f.cfg)
	f.restart(t)
	var warnings []string
	for l := range strings.Lines(logs.String()) {
		if strings.Contains(l, "level=WARN") {
			warnings = append(warnings, l)
		}
	}
	wantWarn := []string{`msg="members of classes no longer accepted are registered: `,
		"members=" + memberG09 + "," + memberG22 + " ", "classes=DANG,MTTQ"}
	if len(warnings) != 1 {
		t.Errorf("start with NN dropped logged %d warnings, want 1:\n%s", len(warnings), logs)
	} else {
		for _, w := range wantWarn {
			if !strings.Contains(warnings[0], w) {
				t.Errorf("warning lacks %q: %s", w, warnings[0])
			}
		}
	}

	admin := f.admin(t)
	const notOne = `member class "NN" is not one of DANG, MTTQ`
	for _, tc := range []badCase{
		{"add member", addMember("VN/NN/000.00.00.G99", "x", f.ca.Signer(t, "VN/NN/000.00.00.G99").Certificate().Raw),
			codes.InvalidArgument, "member_id: " + notOne},
		{"add subsystem", addSubsystem(memberG22 + "/new"), codes.InvalidArgument, "subsystem_id: " + notOne},
		{"add node", addNode("spiffe://vn.ketnoi/node/NN/000.00.00.G22/node2", "127.0.0.1:8444"),
			codes.InvalidArgument, "spiffe_id: " + notOne},
		{"add grant", func(ctx context.Context, a registryv1.AdminServiceClient) error {
			_, err := a.AddGrant(ctx, &registryv1.AddGrantRequest{Client: memberG22, Service: serviceDVHC})
			return err
		}, codes.InvalidArgument, "client: " + notOne},
	} {
		st := status.Convert(tc.call(ctx, admin))
		if st.Code() != tc.wantCode || st.Message() != tc.wantMsg {
			t.Errorf("%s: %v %q, want %v %q", tc.name, st.Code(), st.Message(), tc.wantCode, tc.wantMsg)
		}
	}

	// Changes and retirements, in an order the other refusals allow.
	for _, step := range []struct {
		name string
		call func() error
	}{
		{"UpdateNode", func() error {
			_, err := admin.UpdateNode(ctx, &registryv1.UpdateNodeRequest{SpiffeId: nodeID, Address: "127.0.0.1:9443"})
			return err
		}},
		{"UpdateService", func() error {
			_, err := admin.UpdateService(ctx, &registryv1.UpdateServiceRequest{ServiceId: serviceDVHC, Description: "x"})
			return err
		}},
		{"AddSigningCertificate", func() error {
			_, err := admin.AddSigningCertificate(ctx, &registryv1.AddSigningCertificateRequest{
				MemberId: memberG22, SigningCertificate: f.ca.Signer(t, memberG22).Certificate().Raw,
			})
			return err
		}},
		{"RemoveSigningCertificate", func() error {
			sum := sha256.Sum256(f.signingCerts[memberG22])
			_, err := admin.RemoveSigningCertificate(ctx, &registryv1.RemoveSigningCertificateRequest{
				MemberId: memberG22, CertificateSha256: sum[:],
			})
			return err
		}},
		{"RevokeGrant", func() error {
			_, err := admin.RevokeGrant(ctx, &registryv1.RevokeGrantRequest{GrantId: "g-1"})
			return err
		}},
		{"RemoveService", func() error {
			_, err := admin.RemoveService(ctx, &registryv1.RemoveServiceRequest{ServiceId: serviceDVHC})
			return err
		}},
		{"RemoveNode", func() error {
			_, err := admin.RemoveNode(ctx, &registryv1.RemoveNodeRequest{SpiffeId: nodeID})
			return err
		}},
		{"UpdateMember", func() error {
			_, err := admin.UpdateMember(ctx, &registryv1.UpdateMemberRequest{MemberId: memberG22, Name: "VPCP"})
			return err
		}},
		{"RemoveSubsystem", func() error {
			_, err := admin.RemoveSubsystem(ctx, &registryv1.RemoveSubsystemRequest{SubsystemId: memberG22 + "/vanban"})
			return err
		}},
		{"RemoveMember", func() error {
			_, err := admin.RemoveMember(ctx, &registryv1.RemoveMemberRequest{MemberId: memberG22})
			return err
		}},
	} {
		if err := step.call(); err != nil {
			t.Errorf("%s for a member of a dropped class: %v", step.name, err)
		}
	}

	f.cfg.Classes = nil
	logs = logTo(&f.cfg)
	f.restart(t)
	if strings.Contains(logs.String(), "level=WARN") {
		t.Errorf("start with every class accepted warned:\n%s", logs)
	}
}

func TestUpdateService(t *testing.T) {
	f := newFixture(t)
	ctx := testContext(t)
	admin := f.admin(t)
	f.populate(t, ctx, admin)
	original := f.published(t).GetServices()[0]
	// A grant of every method and one naming GetUnit: only the second
	// restricts which methods may go.
	for _, methods := range [][]string{nil, {"GetUnit"}} {
		if _, err := admin.AddGrant(ctx, &registryv1.AddGrantRequest{
			Client: memberG22 + "/vanban", Service: serviceDVHC, Methods: methods,
		}); err != nil {
			t.Fatal(err)
		}
	}

	t.Run("description alone", func(t *testing.T) {
		resp, err := admin.UpdateService(ctx, &registryv1.UpdateServiceRequest{
			ServiceId: serviceDVHC, Description: "  Administrative units, 2026 edition ",
		})
		if err != nil {
			t.Fatalf("UpdateService: %v", err)
		}
		want := proto.Clone(original).(*registryv1.Service)
		want.Description = "Administrative units, 2026 edition"
		if diff := cmp.Diff(want, resp.GetService(), protocmp.Transform()); diff != "" {
			t.Errorf("service (-want +got):\n%s", diff)
		}
		if diff := cmp.Diff(want, f.published(t).GetServices()[0], protocmp.Transform()); diff != "" {
			t.Errorf("published service (-want +got):\n%s", diff)
		}
	})

	t.Run("custodian and classification", func(t *testing.T) {
		resp, err := admin.UpdateService(ctx, &registryv1.UpdateServiceRequest{
			ServiceId:      serviceDVHC,
			Custodian:      "Vụ Chính quyền địa phương",
			Classification: registryv1.Classification_CLASSIFICATION_SENSITIVE,
		})
		if err != nil {
			t.Fatalf("UpdateService: %v", err)
		}
		s := resp.GetService()
		if s.GetCustodian() != "Vụ Chính quyền địa phương" ||
			s.GetClassification() != registryv1.Classification_CLASSIFICATION_SENSITIVE ||
			s.GetDescription() != "Administrative units, 2026 edition" || len(s.GetMethods()) != 3 {
			t.Errorf("service after update = %v", s)
		}
	})

	t.Run("descriptor set with a method more and one no grant names less", func(t *testing.T) {
		set := dvhcDescriptorsEdited(t, func(s *descriptorpb.ServiceDescriptorProto) {
			withoutMethods("ConvertOldUnit")(s)
			s.Method = append(s.Method, &descriptorpb.MethodDescriptorProto{
				Name:            proto.String("WatchUnits"),
				InputType:       proto.String(".vn.gov.dvhc.v1.GetUnitRequest"),
				OutputType:      proto.String(".vn.gov.dvhc.v1.GetUnitResponse"),
				ClientStreaming: proto.Bool(true),
				ServerStreaming: proto.Bool(true),
			})
		})
		resp, err := admin.UpdateService(ctx, &registryv1.UpdateServiceRequest{
			ServiceId: serviceDVHC, FileDescriptorSet: set,
		})
		if err != nil {
			t.Fatalf("UpdateService: %v", err)
		}
		want := []*registryv1.Method{
			{Name: "GetUnit"},
			{Name: "ListCommunes", ServerStreaming: true},
			{Name: "WatchUnits", ClientStreaming: true, ServerStreaming: true},
		}
		published := f.published(t).GetServices()[0]
		if diff := cmp.Diff(want, published.GetMethods(), protocmp.Transform()); diff != "" {
			t.Errorf("published methods (-want +got):\n%s", diff)
		}
		if !proto.Equal(resp.GetService(), published) || string(published.GetFileDescriptorSet()) != string(set) {
			t.Errorf("response or published service does not carry the new descriptor set")
		}
	})

	t.Run("dropping a granted method is refused", func(t *testing.T) {
		before := f.reg.Configuration()
		_, err := admin.UpdateService(ctx, &registryv1.UpdateServiceRequest{
			ServiceId:         serviceDVHC,
			FileDescriptorSet: dvhcDescriptorsEdited(t, withoutMethods("GetUnit", "ConvertOldUnit")),
		})
		st := status.Convert(err)
		const want = "the new descriptor set of " + serviceDVHC +
			" lacks methods that grants name: g-2 (GetUnit); revoke those grants first"
		if st.Code() != codes.FailedPrecondition || st.Message() != want {
			t.Errorf("status = %v %q, want FailedPrecondition %q", st.Code(), st.Message(), want)
		}
		if !proto.Equal(f.reg.Configuration(), before) {
			t.Errorf("the refused update changed the configuration")
		}
	})
}

func TestRemoveService(t *testing.T) {
	f := newFixture(t)
	ctx := testContext(t)
	admin := f.admin(t)
	f.populate(t, ctx, admin)
	for _, client := range []string{memberG22, memberG22 + "/vanban"} {
		if _, err := admin.AddGrant(ctx, &registryv1.AddGrantRequest{Client: client, Service: serviceDVHC}); err != nil {
			t.Fatal(err)
		}
	}

	_, err := admin.RemoveService(ctx, &registryv1.RemoveServiceRequest{ServiceId: serviceDVHC})
	st := status.Convert(err)
	const want = "service " + serviceDVHC + " has grants g-1, g-2; revoke them first"
	if st.Code() != codes.FailedPrecondition || st.Message() != want {
		t.Fatalf("RemoveService with grants: %v %q, want FailedPrecondition %q", st.Code(), st.Message(), want)
	}

	for _, g := range []string{"g-1", "g-2"} {
		if _, err := admin.RevokeGrant(ctx, &registryv1.RevokeGrantRequest{GrantId: g}); err != nil {
			t.Fatal(err)
		}
	}
	resp, err := admin.RemoveService(ctx, &registryv1.RemoveServiceRequest{ServiceId: serviceDVHC})
	if err != nil {
		t.Fatalf("RemoveService after revoking its grants: %v", err)
	}
	c := f.published(t)
	if resp.GetVersion() != c.GetVersion() || len(c.GetServices()) != 0 {
		t.Errorf("after RemoveService: version %d (published %d), services %v; want none",
			resp.GetVersion(), c.GetVersion(), c.GetServices())
	}
	_, err = admin.AddGrant(ctx, &registryv1.AddGrantRequest{Client: memberG22, Service: serviceDVHC})
	if status.Code(err) != codes.NotFound {
		t.Errorf("AddGrant for the removed service: %v, want NotFound", err)
	}
}

// changeCases are invalid requests of the change and removal RPCs, for a
// fixture that populate filled and that holds grant g-1 of every method
// and grant g-2 naming GetUnit, both to G22/vanban.
func changeCases(t *testing.T, f *fixture) []badCase {
	const node2 = "spiffe://vn.ketnoi/node/NN/000.00.00.G22/node2"
	inv, nf, pre, dup := codes.InvalidArgument, codes.NotFound, codes.FailedPrecondition, codes.AlreadyExists
	g22 := f.signingCerts[memberG22]
	g22Sum := sha256.Sum256(g22)
	updateNode := func(sid, addr string) badCase {
		return badCase{call: func(ctx context.Context, a registryv1.AdminServiceClient) error {
			_, err := a.UpdateNode(ctx, &registryv1.UpdateNodeRequest{SpiffeId: sid, Address: addr})
			return err
		}}
	}
	removeNode := func(sid string) badCase {
		return badCase{call: func(ctx context.Context, a registryv1.AdminServiceClient) error {
			_, err := a.RemoveNode(ctx, &registryv1.RemoveNodeRequest{SpiffeId: sid})
			return err
		}}
	}
	updateService := func(req *registryv1.UpdateServiceRequest) badCase {
		return badCase{call: func(ctx context.Context, a registryv1.AdminServiceClient) error {
			_, err := a.UpdateService(ctx, req)
			return err
		}}
	}
	removeService := func(sid string) badCase {
		return badCase{call: func(ctx context.Context, a registryv1.AdminServiceClient) error {
			_, err := a.RemoveService(ctx, &registryv1.RemoveServiceRequest{ServiceId: sid})
			return err
		}}
	}
	addCert := func(m string, cert []byte) badCase {
		return badCase{call: func(ctx context.Context, a registryv1.AdminServiceClient) error {
			_, err := a.AddSigningCertificate(ctx, &registryv1.AddSigningCertificateRequest{
				MemberId: m, SigningCertificate: cert,
			})
			return err
		}}
	}
	removeCert := func(m string, sum []byte) badCase {
		return badCase{call: func(ctx context.Context, a registryv1.AdminServiceClient) error {
			_, err := a.RemoveSigningCertificate(ctx, &registryv1.RemoveSigningCertificateRequest{
				MemberId: m, CertificateSha256: sum,
			})
			return err
		}}
	}
	named := func(c badCase, name string, code codes.Code, msg string) badCase {
		c.name, c.wantCode, c.wantMsg = name, code, msg
		return c
	}
	other := f.ca.Signer(t, memberG09).Certificate().Raw

	return []badCase{
		named(updateNode("node1", "127.0.0.1:1"), "update node not a SPIFFE ID", inv, `spiffe_id: "node1"`),
		named(updateNode("spiffe://other.ketnoi/node/NN/000.00.00.G22/node1", "127.0.0.1:1"),
			"update node other trust domain", inv, `spiffe_id: trust domain "other.ketnoi"`),
		named(updateNode("spiffe://vn.ketnoi/app/NN/000.00.00.G22/node1", "127.0.0.1:1"),
			"update node app path", inv, "spiffe_id: malformed identifier"),
		named(updateNode(nodeID, "0.0.0.0:8443"), "update node unspecified IPv4", inv,
			`address: "0.0.0.0:8443" is an unspecified address`),
		named(updateNode(nodeID, "[::]:8443"), "update node unspecified IPv6", inv,
			`address: "[::]:8443" is an unspecified address`),
		named(updateNode(nodeID, "localhost"), "update node address without port", inv,
			`address: "localhost" is not host:port`),
		named(updateNode(nodeID, "127.0.0.1:0"), "update node port zero", inv, `address: "127.0.0.1:0": port must be`),
		named(updateNode(nodeID, "a b:1"), "update node host with a space", inv,
			`address: "a b:1": host "a b" is neither an IP address nor a DNS name: character ' ' is not`),
		named(updateNode(node2, "127.0.0.1:1"), "update unknown node", nf, "node "+node2+" is not registered"),

		named(removeNode(""), "remove node empty", inv, `spiffe_id: ""`),
		named(removeNode("spiffe://vn.ketnoi/node/XX/000.00.00.G22/node1"), "remove node unknown class", nf,
			"node spiffe://vn.ketnoi/node/XX/000.00.00.G22/node1 is not registered"),
		named(removeNode(node2), "remove unknown node", nf, "node "+node2+" is not registered"),

		named(updateService(&registryv1.UpdateServiceRequest{ServiceId: serviceDVHC}),
			"update service without changes", inv, "nothing to change: set file_descriptor_set"),
		named(updateService(&registryv1.UpdateServiceRequest{ServiceId: subsystemDVHC, Description: "x"}),
			"update service malformed", inv, "service_id: malformed identifier"),
		named(updateService(&registryv1.UpdateServiceRequest{ServiceId: serviceDVHC, Description: "  "}),
			"update service blank description", inv, "description: must not be empty"),
		named(updateService(&registryv1.UpdateServiceRequest{ServiceId: serviceDVHC, Custodian: " "}),
			"update service blank custodian", inv, "custodian: must not be empty"),
		named(updateService(&registryv1.UpdateServiceRequest{ServiceId: serviceDVHC, Classification: 9}),
			"update service unknown classification", inv, "classification: unknown value 9"),
		named(updateService(&registryv1.UpdateServiceRequest{ServiceId: serviceDVHC, FileDescriptorSet: []byte{0xff}}),
			"update service garbage descriptors", inv, "file_descriptor_set: does not parse"),
		named(updateService(&registryv1.UpdateServiceRequest{
			ServiceId:         serviceDVHC,
			FileDescriptorSet: descriptorSet(t, registryv1.File_ketnoi_registry_v1_registry_proto),
		}), "update service descriptors without it", inv,
			"file_descriptor_set: does not define service vn.gov.dvhc.v1.AdminUnitService"),
		named(updateService(&registryv1.UpdateServiceRequest{
			ServiceId: subsystemDVHC + "/vn.gov.dvhc.v1.Other", Description: "x",
		}), "update unknown service", nf, "service "+subsystemDVHC+"/vn.gov.dvhc.v1.Other is not registered"),
		named(updateService(&registryv1.UpdateServiceRequest{
			ServiceId: serviceDVHC, FileDescriptorSet: dvhcDescriptorsEdited(t, withoutMethods("GetUnit")),
			Description: "x",
		}), "update service dropping a granted method", pre,
			"the new descriptor set of "+serviceDVHC+" lacks methods that grants name: g-2 (GetUnit)"),

		named(removeService(subsystemDVHC), "remove service malformed", inv, "service_id: malformed identifier"),
		named(removeService(subsystemDVHC+"/vn.gov.dvhc.v1.Other"), "remove unknown service", nf,
			"service "+subsystemDVHC+"/vn.gov.dvhc.v1.Other is not registered"),
		named(removeService(serviceDVHC), "remove service with grants", pre,
			"service "+serviceDVHC+" has grants g-1, g-2; revoke them first"),

		named(addCert("VN/NN", g22), "add certificate malformed member", inv, "member_id: malformed identifier"),
		named(addCert("VN/NN/000.00.00.G99", f.ca.Signer(t, "VN/NN/000.00.00.G99").Certificate().Raw),
			"add certificate unknown member", nf, "member VN/NN/000.00.00.G99 is not registered"),
		named(addCert(memberG22, nil), "add certificate empty", inv, "signing_certificate: must not be empty"),
		named(addCert(memberG22, other), "add certificate of another member", inv,
			"signing_certificate: issued to member VN/NN/000.00.00.G09, not VN/NN/000.00.00.G22"),
		named(addCert(memberG22, g22), "add certificate twice", dup,
			"member VN/NN/000.00.00.G22 already lists signing certificate sha256 "),

		named(removeCert(memberG22, g22Sum[:8]), "remove certificate short digest", inv,
			"certificate_sha256: want 32 bytes, got 8"),
		named(removeCert("VN/NN/000.00.00.G99", g22Sum[:]), "remove certificate unknown member", nf,
			"member VN/NN/000.00.00.G99 is not registered"),
		named(removeCert(memberG22, make([]byte, 32)), "remove unknown certificate", nf,
			"member VN/NN/000.00.00.G22 has no signing certificate with sha256 0000"),
		named(removeCert(memberG22, g22Sum[:]), "remove last certificate", pre,
			"signing certificate sha256 "),
	}
}

func TestChangesRejectBadInput(t *testing.T) {
	f := newFixture(t)
	ctx := testContext(t)
	admin := f.admin(t)
	f.populate(t, ctx, admin)
	for _, methods := range [][]string{nil, {"GetUnit"}} {
		if _, err := admin.AddGrant(ctx, &registryv1.AddGrantRequest{
			Client: memberG22 + "/vanban", Service: serviceDVHC, Methods: methods,
		}); err != nil {
			t.Fatal(err)
		}
	}
	before := f.reg.Configuration()

	for _, tc := range changeCases(t, f) {
		t.Run(tc.name, func(t *testing.T) {
			st := status.Convert(tc.call(ctx, admin))
			if st.Code() != tc.wantCode || !strings.HasPrefix(st.Message(), tc.wantMsg) {
				t.Errorf("status = %v %q, want %v %q...", st.Code(), st.Message(), tc.wantCode, tc.wantMsg)
			}
		})
	}

	if after := f.reg.Configuration(); !proto.Equal(after, before) {
		t.Errorf("rejected requests changed the configuration: version %d, want %d",
			decode(t, after).GetVersion(), decode(t, before).GetVersion())
	}
}

// Nodes and applications may not change the registry, nor copy it.
func TestChangesAreForOperatorsOnly(t *testing.T) {
	f := newFixture(t)
	ctx := testContext(t)
	node := registryv1.NewAdminServiceClient(f.dial(t, nodeID))
	calls := map[string]func() error{
		"UpdateNode": func() error {
			_, err := node.UpdateNode(ctx, &registryv1.UpdateNodeRequest{SpiffeId: nodeID, Address: "127.0.0.1:1"})
			return err
		},
		"RemoveService": func() error {
			_, err := node.RemoveService(ctx, &registryv1.RemoveServiceRequest{ServiceId: serviceDVHC})
			return err
		},
		"AddSigningCertificate": func() error {
			_, err := node.AddSigningCertificate(ctx, &registryv1.AddSigningCertificateRequest{MemberId: memberG22})
			return err
		},
		"UpdateMember": func() error {
			_, err := node.UpdateMember(ctx, &registryv1.UpdateMemberRequest{MemberId: memberG22, Name: "x"})
			return err
		},
		"RemoveMember": func() error {
			_, err := node.RemoveMember(ctx, &registryv1.RemoveMemberRequest{MemberId: memberG22})
			return err
		},
		"RemoveSubsystem": func() error {
			_, err := node.RemoveSubsystem(ctx, &registryv1.RemoveSubsystemRequest{SubsystemId: memberG22 + "/vanban"})
			return err
		},
		"Backup": func() error {
			stream, err := node.Backup(ctx, &registryv1.BackupRequest{})
			if err != nil {
				return err
			}
			_, err = stream.Recv()
			return err
		},
	}
	for name, call := range calls {
		st := status.Convert(call())
		want := nodeID + " may not call ketnoi.registry.v1.AdminService: operators only"
		if st.Code() != codes.PermissionDenied || st.Message() != want {
			t.Errorf("%s by a node: %v %q, want PermissionDenied %q", name, st.Code(), st.Message(), want)
		}
	}
}

// Node addresses are stored in one form, so that another spelling of the
// address a node has is no change, and no two nodes share an address,
// also one stored before addresses were normalised.
func TestNodeAddresses(t *testing.T) {
	f := newFixture(t)
	ctx := testContext(t)
	admin := f.admin(t)
	f.populate(t, ctx, admin)
	const (
		bnv  = "spiffe://vn.ketnoi/node/NN/000.00.00.G09/bnv"
		bnv2 = "spiffe://vn.ketnoi/node/NN/000.00.00.G09/bnv2"
	)

	added, err := admin.AddNode(ctx, &registryv1.AddNodeRequest{SpiffeId: bnv, Address: "BNV.Example.VN:08443"})
	if err != nil {
		t.Fatalf("AddNode: %v", err)
	}
	if got := added.GetNode().GetAddress(); got != "bnv.example.vn:8443" {
		t.Errorf("stored address = %q, want bnv.example.vn:8443", got)
	}
	before := f.published(t).GetVersion()
	for _, same := range []string{"bnv.example.vn:8443", "Bnv.EXAMPLE.vn:0008443"} {
		resp, err := admin.UpdateNode(ctx, &registryv1.UpdateNodeRequest{SpiffeId: bnv, Address: same})
		if err != nil || !resp.GetUnchanged() || resp.GetVersion() != before {
			t.Errorf("UpdateNode to %q = %v, %v; want unchanged at version %d", same, resp, err, before)
		}
	}
	moved, err := admin.UpdateNode(ctx, &registryv1.UpdateNodeRequest{SpiffeId: nodeID, Address: "127.0.0.1:027845"})
	if err != nil || moved.GetNode().GetAddress() != "127.0.0.1:27845" {
		t.Errorf("UpdateNode to 127.0.0.1:027845 = %v, %v; want 127.0.0.1:27845 stored", moved, err)
	}

	taken := func(what string, err error, addr, holder string) {
		t.Helper()
		want := "address " + addr + " is the address of node " + holder + " already; two nodes cannot share an address"
		if st := status.Convert(err); st.Code() != codes.FailedPrecondition || st.Message() != want {
			t.Errorf("%s: %v %q, want FailedPrecondition %q", what, st.Code(), st.Message(), want)
		}
	}
	_, err = admin.AddNode(ctx, &registryv1.AddNodeRequest{SpiffeId: bnv2, Address: "bnv.EXAMPLE.vn:8443"})
	taken("AddNode at another node's address", err, "bnv.example.vn:8443", bnv)
	_, err = admin.UpdateNode(ctx, &registryv1.UpdateNodeRequest{SpiffeId: bnv, Address: "127.0.0.1:27845"})
	taken("UpdateNode to another node's address", err, "127.0.0.1:27845", nodeID)

	// An address stored as typed, before normalising, still counts.
	err = f.reg.db.Update(func(tx *bolt.Tx) error {
		n := &registryv1.Node{SpiffeId: bnv, Member: memberG09, Address: "BNV.Example.VN:08443"}
		return putProto(tx.Bucket(bucketNodes), []byte(bnv), n)
	})
	if err != nil {
		t.Fatal(err)
	}
	_, err = admin.AddNode(ctx, &registryv1.AddNodeRequest{SpiffeId: bnv2, Address: "bnv.example.vn:8443"})
	taken("AddNode at an address stored as typed", err, "bnv.example.vn:8443", bnv)
	if v := f.published(t).GetVersion(); v != before+1 {
		t.Errorf("version after refused address changes = %d, want %d", v, before+1)
	}
}
