package registry

import (
	"context"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/testing/protocmp"

	registryv1 "github.com/ketnoi/ketnoi/proto/ketnoi/registry/v1"
)

// A member's name changes in place, publishing a version; its own name
// again publishes nothing.
func TestUpdateMember(t *testing.T) {
	f := newFixture(t)
	ctx := testContext(t)
	admin := f.admin(t)
	f.populate(t, ctx, admin)
	before := f.published(t).GetVersion()

	resp, err := admin.UpdateMember(ctx, &registryv1.UpdateMemberRequest{MemberId: memberG22, Name: " Văn phòng Chính phủ "})
	if err != nil {
		t.Fatalf("UpdateMember: %v", err)
	}
	if resp.GetUnchanged() || resp.GetVersion() != before+1 || resp.GetMember().GetName() != "Văn phòng Chính phủ" {
		t.Errorf("UpdateMember = %v, want the new name at version %d", resp, before+1)
	}
	c := f.published(t)
	if diff := cmp.Diff(resp.GetMember(), c.GetMembers()[1], protocmp.Transform()); diff != "" {
		t.Errorf("published member (-want +got):\n%s", diff)
	}

	again, err := admin.UpdateMember(ctx, &registryv1.UpdateMemberRequest{MemberId: memberG22, Name: "Văn phòng Chính phủ"})
	if err != nil || !again.GetUnchanged() || again.GetVersion() != before+1 {
		t.Errorf("UpdateMember to its name = %v, %v; want unchanged at version %d", again, err, before+1)
	}
}

// A member goes once nothing depends on it, a subsystem once no service
// or grant names it; until then the refusal names what is left, and
// nothing is published.
func TestRemoveMemberAndSubsystem(t *testing.T) {
	f := newFixture(t)
	ctx := testContext(t)
	admin := f.admin(t)
	f.populate(t, ctx, admin)
	const vanban = memberG22 + "/vanban"
	if _, err := admin.AddGrant(ctx, &registryv1.AddGrantRequest{Client: vanban, Service: serviceDVHC}); err != nil {
		t.Fatal(err)
	}
	if _, err := admin.AddGrant(ctx, &registryv1.AddGrantRequest{Client: memberG22, Service: serviceDVHC}); err != nil {
		t.Fatal(err)
	}
	removeMember := func(m string) error {
		_, err := admin.RemoveMember(ctx, &registryv1.RemoveMemberRequest{MemberId: m})
		return err
	}
	removeSubsystem := func(s string) error {
		_, err := admin.RemoveSubsystem(ctx, &registryv1.RemoveSubsystemRequest{SubsystemId: s})
		return err
	}
	refused := func(what string, err error, want string) {
		t.Helper()
		st := status.Convert(err)
		if st.Code() != codes.FailedPrecondition || st.Message() != want {
			t.Errorf("%s: %v %q, want FailedPrecondition %q", what, st.Code(), st.Message(), want)
		}
	}
	step := func(what string, err error) {
		t.Helper()
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}

	before := f.published(t).GetVersion()
	refused("RemoveMember G22", removeMember(memberG22), "member "+memberG22+" still has nodes "+nodeID+
		"; subsystems "+vanban+"; grants g-1, g-2; revoke the grants and remove the services, subsystems and nodes first")
	refused("RemoveMember G09", removeMember(memberG09), "member "+memberG09+" still has subsystems "+subsystemDVHC+
		"; services "+serviceDVHC+"; revoke the grants and remove the services, subsystems and nodes first")
	refused("RemoveSubsystem vanban", removeSubsystem(vanban),
		"subsystem "+vanban+" still has grants g-1; revoke the grants and remove the services first")
	refused("RemoveSubsystem dvhc", removeSubsystem(subsystemDVHC),
		"subsystem "+subsystemDVHC+" still has services "+serviceDVHC+"; revoke the grants and remove the services first")
	if v := f.published(t).GetVersion(); v != before {
		t.Fatalf("refused removals published version %d, want %d", v, before)
	}

	step("RevokeGrant g-1", revokeGrant("g-1")(ctx, admin))
	step("RemoveSubsystem vanban", removeSubsystem(vanban))
	step("RevokeGrant g-2", revokeGrant("g-2")(ctx, admin))
	step("RemoveNode", func() error {
		_, err := admin.RemoveNode(ctx, &registryv1.RemoveNodeRequest{SpiffeId: nodeID})
		return err
	}())
	resp, err := admin.RemoveMember(ctx, &registryv1.RemoveMemberRequest{MemberId: memberG22})
	if err != nil {
		t.Fatalf("RemoveMember of a member nothing depends on: %v", err)
	}
	c := f.published(t)
	if resp.GetVersion() != c.GetVersion() || len(c.GetMembers()) != 1 || c.GetMembers()[0].GetId() != memberG09 {
		t.Errorf("after RemoveMember: version %d (published %d), members %v; want G09 alone",
			resp.GetVersion(), c.GetVersion(), c.GetMembers())
	}

	step("RemoveService", func() error {
		_, err := admin.RemoveService(ctx, &registryv1.RemoveServiceRequest{ServiceId: serviceDVHC})
		return err
	}())
	step("RemoveSubsystem dvhc", removeSubsystem(subsystemDVHC))
	if subs := f.published(t).GetMembers()[0].GetSubsystems(); len(subs) != 0 {
		t.Errorf("G09's subsystems after RemoveSubsystem = %v, want none", subs)
	}
	step("RemoveMember G09", removeMember(memberG09))

	// The identifier is free again.
	if err := addMember(memberG22, "VPCP", f.signingCerts[memberG22])(ctx, admin); err != nil {
		t.Errorf("AddMember after RemoveMember: %v", err)
	}
}

// retireCases are invalid requests of UpdateMember, RemoveMember and
// RemoveSubsystem, for a fixture that populate filled.
func retireCases() []badCase {
	inv, nf := codes.InvalidArgument, codes.NotFound
	updateMember := func(m, name string) func(context.Context, registryv1.AdminServiceClient) error {
		return func(ctx context.Context, a registryv1.AdminServiceClient) error {
			_, err := a.UpdateMember(ctx, &registryv1.UpdateMemberRequest{MemberId: m, Name: name})
			return err
		}
	}
	removeMember := func(m string) func(context.Context, registryv1.AdminServiceClient) error {
		return func(ctx context.Context, a registryv1.AdminServiceClient) error {
			_, err := a.RemoveMember(ctx, &registryv1.RemoveMemberRequest{MemberId: m})
			return err
		}
	}
	removeSubsystem := func(s string) func(context.Context, registryv1.AdminServiceClient) error {
		return func(ctx context.Context, a registryv1.AdminServiceClient) error {
			_, err := a.RemoveSubsystem(ctx, &registryv1.RemoveSubsystemRequest{SubsystemId: s})
			return err
		}
	}
	return []badCase{
		{"update member malformed", updateMember("VN/NN", "x"), inv, "member_id: malformed identifier"},
		{"update member other instance", updateMember("LA/NN/000.00.00.G22", "x"), inv,
			`member_id: instance "LA" is not this registry's instance "VN"`},
		{"update unknown member", updateMember("VN/NN/000.00.00.G99", "x"), nf, "member VN/NN/000.00.00.G99 is not registered"},
		{"update member no name", updateMember(memberG22, " "), inv, "name: must not be empty"},
		{"update member name with a newline", updateMember(memberG22, "VPCP\nFAKE"), inv,
			"name: contains control character U+000A"},
		{"update member name too long", updateMember(memberG22, strings.Repeat("x", 257)), inv,
			"name: has 257 characters, more than 256"},
		{"remove member malformed", removeMember("G22"), inv, "member_id: malformed identifier"},
		{"remove unknown member", removeMember("VN/NN/000.00.00.G99"), nf, "member VN/NN/000.00.00.G99 is not registered"},
		{"remove subsystem of a member", removeSubsystem(memberG22), inv,
			`subsystem_id: malformed identifier: subsystem "` + memberG22 + `"`},
		{"remove subsystem too deep", removeSubsystem(memberG22 + "/a/b"), inv,
			`subsystem_id: malformed identifier: subsystem "` + memberG22 + `/a/b"`},
		{"remove unknown subsystem", removeSubsystem(memberG22 + "/nope"), nf, "subsystem " + memberG22 + "/nope is not registered"},
		{"remove subsystem of unknown member", removeSubsystem("VN/NN/000.00.00.G99/x"), nf,
			"member VN/NN/000.00.00.G99 is not registered"},
	}
}

func TestRetireRejectsBadInput(t *testing.T) {
	f := newFixture(t)
	ctx := testContext(t)
	admin := f.admin(t)
	f.populate(t, ctx, admin)
	before := f.published(t).GetVersion()
	for _, tc := range retireCases() {
		t.Run(tc.name, func(t *testing.T) {
			st := status.Convert(tc.call(ctx, admin))
			if st.Code() != tc.wantCode || !strings.HasPrefix(st.Message(), tc.wantMsg) {
				t.Errorf("status = %v %q, want %v %q...", st.Code(), st.Message(), tc.wantCode, tc.wantMsg)
			}
		})
	}
	if v := f.published(t).GetVersion(); v != before {
		t.Errorf("rejected requests published version %d, want %d", v, before)
	}
}
