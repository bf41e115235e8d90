package registry

import (
	"context"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/types/descriptorpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/ketnoi/ketnoi/internal/pki/pkitest"
	cataloguev1 "github.com/ketnoi/ketnoi/proto/ketnoi/catalogue/v1"
	registryv1 "github.com/ketnoi/ketnoi/proto/ketnoi/registry/v1"
)

// badCase is one invalid admin request and the status it must get.
type badCase struct {
	name     string
	call     func(ctx context.Context, a registryv1.AdminServiceClient) error
	wantCode codes.Code
	wantMsg  string // prefix of the status message, naming the field
}

func addMember(id, name string, cert []byte) func(context.Context, registryv1.AdminServiceClient) error {
	return func(ctx context.Context, a registryv1.AdminServiceClient) error {
		_, err := a.AddMember(ctx, &registryv1.AddMemberRequest{MemberId: id, Name: name, SigningCertificate: cert})
		return err
	}
}

func addSubsystem(id string) func(context.Context, registryv1.AdminServiceClient) error {
	return func(ctx context.Context, a registryv1.AdminServiceClient) error {
		_, err := a.AddSubsystem(ctx, &registryv1.AddSubsystemRequest{SubsystemId: id})
		return err
	}
}

func addNode(id, addr string) func(context.Context, registryv1.AdminServiceClient) error {
	return func(ctx context.Context, a registryv1.AdminServiceClient) error {
		_, err := a.AddNode(ctx, &registryv1.AddNodeRequest{SpiffeId: id, Address: addr})
		return err
	}
}

func addService(req *registryv1.AddServiceRequest) func(context.Context, registryv1.AdminServiceClient) error {
	return func(ctx context.Context, a registryv1.AdminServiceClient) error {
		_, err := a.AddService(ctx, req)
		return err
	}
}

func addGrant(req *registryv1.AddGrantRequest) func(context.Context, registryv1.AdminServiceClient) error {
	return func(ctx context.Context, a registryv1.AdminServiceClient) error {
		_, err := a.AddGrant(ctx, req)
		return err
	}
}

func revokeGrant(gid string) func(context.Context, registryv1.AdminServiceClient) error {
	return func(ctx context.Context, a registryv1.AdminServiceClient) error {
		_, err := a.RevokeGrant(ctx, &registryv1.RevokeGrantRequest{GrantId: gid})
		return err
	}
}

func importList(req *registryv1.ImportCodeListRequest) func(context.Context, registryv1.AdminServiceClient) error {
	return func(ctx context.Context, a registryv1.AdminServiceClient) error {
		_, err := a.ImportCodeList(ctx, req)
		return err
	}
}

// smallList is a valid two-entry import of list "test-list" version "1".
func smallList() *registryv1.ImportCodeListRequest {
	return &registryv1.ImportCodeListRequest{
		List:       "test-list",
		Version:    "1",
		Title:      "Test list",
		Provenance: "written for this test",
		Fields:     []string{"name"},
		Entries: []*cataloguev1.CodeEntry{
			{Code: "01", Fields: map[string]string{"name": "one"}},
			{Code: "02", Fields: map[string]string{"name": "two"}},
		},
	}
}

// withList returns smallList changed by edit.
func withList(edit func(*registryv1.ImportCodeListRequest)) *registryv1.ImportCodeListRequest {
	req := smallList()
	edit(req)
	return req
}

// serviceReq is a valid request for the administrative units service,
// changed by edit.
func serviceReq(t *testing.T, edit func(*registryv1.AddServiceRequest)) *registryv1.AddServiceRequest {
	req := &registryv1.AddServiceRequest{
		ServiceId:         serviceDVHC,
		FileDescriptorSet: dvhcDescriptors(t),
		Description:       "Administrative units",
		Custodian:         "Department of local government",
	}
	edit(req)
	return req
}

// unresolvedDescriptors holds a file whose imports are missing.
func unresolvedDescriptors(t *testing.T) []byte {
	t.Helper()
	set := &descriptorpb.FileDescriptorSet{File: []*descriptorpb.FileDescriptorProto{
		protodesc.ToFileDescriptorProto(registryv1.File_ketnoi_registry_v1_registry_proto),
	}}
	b, err := proto.Marshal(set)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func badCases(t *testing.T, f *fixture) []badCase {
	other := pkitest.NewCA(t, testTD)
	certG01 := f.ca.Signer(t, "VN/NN/000.00.00.G01").Certificate().Raw
	certG09 := f.ca.Signer(t, memberG09).Certificate().Raw
	svidCert := f.ca.SVID(t, "spiffe://vn.ketnoi/node/NN/000.00.00.G01/n1").Certificates[0].Raw
	const g01 = "VN/NN/000.00.00.G01"
	past := timestamppb.New(time.Now().Add(-time.Hour))
	inv, nf, dup := codes.InvalidArgument, codes.NotFound, codes.AlreadyExists

	return []badCase{
		{"member malformed", addMember("VN/NN", "x", certG01), inv, "member_id: malformed identifier"},
		{"member lower-case code", addMember("VN/NN/abc", "x", certG01), inv, "member_id: malformed identifier"},
		{"member unknown class", addMember("VN/XYZ/000.00.00.G01", "x", certG01), inv,
			`member_id: member class "XYZ" is not one of DANG, NN, MTTQ`},
		{"member other instance", addMember("LA/NN/000.00.00.G01", "x", certG01), inv,
			`member_id: instance "LA" is not this registry's instance "VN"`},
		{"member no name", addMember(g01, "  ", certG01), inv, "name: must not be empty"},
		{"member name injecting a row", addMember(g01, "Line1\nFAKE  VN/NN/000.00.00.G99  Injected\x1b[31m", certG01), inv,
			"name: contains control character U+000A"},
		{"member name with an escape", addMember(g01, "VPCP\x1b[31m", certG01), inv,
			"name: contains control character U+001B"},
		{"member name with DEL", addMember(g01, "VPCP\x7f", certG01), inv, "name: contains control character U+007F"},
		{"member name with a C1 control", addMember(g01, "VPCP\u009b31m", certG01), inv,
			"name: contains control character U+009B"},
		{"member name with a line separator", addMember(g01, "VPCP\u2028FAKE", certG01), inv,
			"name: contains line or paragraph separator U+2028"},
		{"member name reversed", addMember(g01, "VPCP\u202eFAKE", certG01), inv,
			"name: contains bidirectional formatting character U+202E"},
		{"member name too long", addMember(g01, strings.Repeat("Bộ", 2500), certG01), inv,
			"name: has 5000 characters, more than 256"},
		{"member no certificate", addMember(g01, "x", nil), inv, "signing_certificate: must not be empty"},
		{"member garbage certificate", addMember(g01, "x", []byte("garbage")), inv, "signing_certificate: no certificate found"},
		{"member certificate of another CA", addMember(g01, "x", other.Signer(t, g01).Certificate().Raw), inv,
			"signing_certificate: signing certificate is not trusted"},
		{"member certificate of another member", addMember(g01, "x", certG09), inv,
			"signing_certificate: issued to member VN/NN/000.00.00.G09, not VN/NN/000.00.00.G01"},
		{"member SVID as signing certificate", addMember(g01, "x", svidCert), inv,
			"signing_certificate: malformed identifier: member URI"},
		{"member twice", addMember(memberG09, "x", certG09), dup, "member VN/NN/000.00.00.G09 is already registered"},

		{"subsystem without subsystem", addSubsystem(memberG22), inv, "subsystem_id: malformed identifier"},
		{"subsystem unknown class", addSubsystem("VN/ABC/000.00.00.G22/x"), inv, `subsystem_id: member class "ABC"`},
		{"subsystem of unknown member", addSubsystem("VN/NN/000.00.00.G99/x"), nf, "member VN/NN/000.00.00.G99 is not registered"},
		{"subsystem twice", addSubsystem(subsystemDVHC), dup, "subsystem VN/NN/000.00.00.G09/dvhc is already registered"},

		{"node not a SPIFFE ID", addNode("node1", "127.0.0.1:1"), inv, `spiffe_id: "node1"`},
		{"node other trust domain", addNode("spiffe://other.ketnoi/node/NN/000.00.00.G22/n2", "127.0.0.1:1"), inv,
			`spiffe_id: trust domain "other.ketnoi" is not this registry's trust domain "vn.ketnoi"`},
		{"node app path", addNode("spiffe://vn.ketnoi/app/NN/000.00.00.G22/n2", "127.0.0.1:1"), inv,
			"spiffe_id: malformed identifier"},
		{"node unknown class", addNode("spiffe://vn.ketnoi/node/QQ/000.00.00.G22/n2", "127.0.0.1:1"), inv,
			`spiffe_id: member class "QQ"`},
		{"node address without port", addNode("spiffe://vn.ketnoi/node/NN/000.00.00.G22/n2", "localhost"), inv,
			`address: "localhost" is not host:port`},
		{"node address without host", addNode("spiffe://vn.ketnoi/node/NN/000.00.00.G22/n2", ":8443"), inv,
			`address: ":8443" has no host`},
		{"node address unspecified IPv4", addNode("spiffe://vn.ketnoi/node/NN/000.00.00.G22/n2", "0.0.0.0:8443"), inv,
			`address: "0.0.0.0:8443" is an unspecified address`},
		{"node address unspecified IPv6", addNode("spiffe://vn.ketnoi/node/NN/000.00.00.G22/n2", "[::]:8443"), inv,
			`address: "[::]:8443" is an unspecified address`},
		{"node address port zero", addNode("spiffe://vn.ketnoi/node/NN/000.00.00.G22/n2", "127.0.0.1:0"), inv,
			`address: "127.0.0.1:0": port must be`},
		{"node address named port", addNode("spiffe://vn.ketnoi/node/NN/000.00.00.G22/n2", "127.0.0.1:https"), inv,
			`address: "127.0.0.1:https": port must be`},
		{"node address host with a space", addNode("spiffe://vn.ketnoi/node/NN/000.00.00.G22/n2", "a b:1"), inv,
			`address: "a b:1": host "a b" is neither an IP address nor a DNS name: character ' ' is not`},
		{"node of unknown member", addNode("spiffe://vn.ketnoi/node/NN/000.00.00.G99/n2", "127.0.0.1:1"), nf,
			"member VN/NN/000.00.00.G99 is not registered"},
		{"node twice", addNode(nodeID, "127.0.0.1:9"), dup, "node " + nodeID + " is already registered"},

		{"service malformed", addService(serviceReq(t, func(r *registryv1.AddServiceRequest) {
			r.ServiceId = subsystemDVHC
		})), inv, "service_id: malformed identifier"},
		{"service no description", addService(serviceReq(t, func(r *registryv1.AddServiceRequest) {
			r.Description = ""
		})), inv, "description: must not be empty"},
		{"service no custodian", addService(serviceReq(t, func(r *registryv1.AddServiceRequest) {
			r.Custodian = ""
		})), inv, "custodian: must not be empty"},
		{"service custodian injecting a heading", addService(serviceReq(t, func(r *registryv1.AddServiceRequest) {
			r.Custodian = "X\ngrants (9)"
		})), inv, "custodian: contains control character U+000A"},
		{"service description too long", addService(serviceReq(t, func(r *registryv1.AddServiceRequest) {
			r.Description = strings.Repeat("d", 1025)
		})), inv, "description: has 1025 characters, more than 1024"},
		{"service unknown classification", addService(serviceReq(t, func(r *registryv1.AddServiceRequest) {
			r.Classification = 9
		})), inv, "classification: unknown value 9"},
		{"service no descriptors", addService(serviceReq(t, func(r *registryv1.AddServiceRequest) {
			r.FileDescriptorSet = nil
		})), inv, "file_descriptor_set: must not be empty"},
		{"service garbage descriptors", addService(serviceReq(t, func(r *registryv1.AddServiceRequest) {
			r.FileDescriptorSet = []byte{0xff, 0xff, 0xff}
		})), inv, "file_descriptor_set: does not parse"},
		{"service descriptors missing imports", addService(serviceReq(t, func(r *registryv1.AddServiceRequest) {
			r.ServiceId = "VN/NN/000.00.00.G09/dvhc/ketnoi.registry.v1.RegistryService"
			r.FileDescriptorSet = unresolvedDescriptors(t)
		})), inv, "file_descriptor_set: "},
		{"service not in descriptors", addService(serviceReq(t, func(r *registryv1.AddServiceRequest) {
			r.ServiceId = "VN/NN/000.00.00.G09/dvhc/vn.gov.dvhc.v1.Missing"
		})), inv, "file_descriptor_set: does not define service vn.gov.dvhc.v1.Missing"},
		{"service names a message", addService(serviceReq(t, func(r *registryv1.AddServiceRequest) {
			r.ServiceId = "VN/NN/000.00.00.G09/dvhc/vn.gov.dvhc.v1.GetUnitRequest"
		})), inv, "file_descriptor_set: does not define service vn.gov.dvhc.v1.GetUnitRequest"},
		{"service of unknown subsystem", addService(serviceReq(t, func(r *registryv1.AddServiceRequest) {
			r.ServiceId = "VN/NN/000.00.00.G09/other/vn.gov.dvhc.v1.AdminUnitService"
		})), nf, "subsystem VN/NN/000.00.00.G09/other is not registered"},
		{"service twice", addService(serviceReq(t, func(*registryv1.AddServiceRequest) {})), dup,
			"service " + serviceDVHC + " is already registered"},

		{"grant malformed client", addGrant(&registryv1.AddGrantRequest{Client: "G22", Service: serviceDVHC}), inv,
			"client: malformed identifier"},
		{"grant unknown member", addGrant(&registryv1.AddGrantRequest{Client: "VN/NN/000.00.00.G99", Service: serviceDVHC}), nf,
			"member VN/NN/000.00.00.G99 is not registered"},
		{"grant unknown subsystem", addGrant(&registryv1.AddGrantRequest{Client: memberG22 + "/nope", Service: serviceDVHC}), nf,
			"subsystem VN/NN/000.00.00.G22/nope is not registered"},
		{"grant malformed service", addGrant(&registryv1.AddGrantRequest{Client: memberG22, Service: subsystemDVHC}), inv,
			"service: malformed identifier"},
		{"grant unknown service", addGrant(&registryv1.AddGrantRequest{
			Client: memberG22, Service: subsystemDVHC + "/vn.gov.dvhc.v1.Other",
		}), nf, "service VN/NN/000.00.00.G09/dvhc/vn.gov.dvhc.v1.Other is not registered"},
		{"grant unknown method", addGrant(&registryv1.AddGrantRequest{
			Client: memberG22, Service: serviceDVHC, Methods: []string{"GetUnit", "Nope"},
		}), inv, `methods: service ` + serviceDVHC + ` has no method "Nope"`},
		{"grant empty purpose", addGrant(&registryv1.AddGrantRequest{
			Client: memberG22, Service: serviceDVHC, Purposes: []string{""},
		}), inv, "purposes[0]: must not be empty"},
		{"grant purpose with a newline", addGrant(&registryv1.AddGrantRequest{
			Client: memberG22, Service: serviceDVHC, Purposes: []string{"HS-01", "a\nb"},
		}), inv, "purposes[1]: must be printable ASCII, as gRPC metadata carries it"},
		{"grant purpose not ASCII", addGrant(&registryv1.AddGrantRequest{
			Client: memberG22, Service: serviceDVHC, Purposes: []string{"hồ sơ"},
		}), inv, "purposes[0]: must be printable ASCII"},
		{"grant purpose with surrounding space", addGrant(&registryv1.AddGrantRequest{
			Client: memberG22, Service: serviceDVHC, Purposes: []string{"HS-01 "},
		}), inv, "purposes[0]: starts or ends with a space"},
		{"grant purpose too long", addGrant(&registryv1.AddGrantRequest{
			Client: memberG22, Service: serviceDVHC, Purposes: []string{strings.Repeat("p", 129)},
		}), inv, "purposes[0]: has 129 bytes, more than 128"},
		{"grant method with a newline", addGrant(&registryv1.AddGrantRequest{
			Client: memberG22, Service: serviceDVHC, Methods: []string{"GetUnit\nFAKE"},
		}), inv, "methods[0]: is not a method name"},
		{"grant method too long", addGrant(&registryv1.AddGrantRequest{
			Client: memberG22, Service: serviceDVHC, Methods: []string{strings.Repeat("M", 5000)},
		}), inv, "methods[0]: has 5000 bytes, more than 128"},
		{"grant expired", addGrant(&registryv1.AddGrantRequest{
			Client: memberG22, Service: serviceDVHC, ExpiresAt: past,
		}), inv, "expires_at: "},
		{"grant twice", addGrant(&registryv1.AddGrantRequest{Client: memberG22, Service: serviceDVHC}), dup,
			"grant g-1 already allows " + memberG22},

		{"revoke malformed", revokeGrant("1"), inv, `grant_id: "1" is not a grant identifier`},
		{"revoke zero", revokeGrant("g-0"), inv, `grant_id: "g-0" is not a grant identifier`},
		{"revoke leading zero", revokeGrant("g-01"), inv, `grant_id: "g-01" is not a grant identifier`},
		{"revoke unknown", revokeGrant("g-99"), nf, "grant g-99 does not exist"},

		{"list bad name", importList(withList(func(r *registryv1.ImportCodeListRequest) { r.List = "Bad_Name" })), inv,
			`list: "Bad_Name" is not a list name`},
		{"list bad version", importList(withList(func(r *registryv1.ImportCodeListRequest) { r.Version = "2026/07" })), inv,
			`version: "2026/07" is not a version label`},
		{"list no title", importList(withList(func(r *registryv1.ImportCodeListRequest) { r.Title = "" })), inv,
			"title: must not be empty"},
		{"list no provenance", importList(withList(func(r *registryv1.ImportCodeListRequest) { r.Provenance = "" })), inv,
			"provenance: must not be empty"},
		{"list title with a tab", importList(withList(func(r *registryv1.ImportCodeListRequest) { r.Title = "a\tb" })), inv,
			"title: contains control character U+0009"},
		{"list field name with a newline", importList(withList(func(r *registryv1.ImportCodeListRequest) {
			r.Fields = []string{"name", "x\ny"}
		})), inv, "fields[1]: contains control character U+000A"},
		{"list code with an escape", importList(withList(func(r *registryv1.ImportCodeListRequest) {
			r.Version = "2"
			r.Entries[1].Code = "02\x1b[2J"
		})), inv, "entries[1].code: contains control character U+001B"},
		{"list value with a newline", importList(withList(func(r *registryv1.ImportCodeListRequest) {
			r.Version = "2"
			r.Entries[1].Fields["name"] = "two\nthree"
		})), inv, `entries[1].fields["name"]: contains control character U+000A`},
		{"list no fields", importList(withList(func(r *registryv1.ImportCodeListRequest) { r.Fields = nil })), inv,
			"fields: must not be empty"},
		{"list repeated field", importList(withList(func(r *registryv1.ImportCodeListRequest) {
			r.Fields = []string{"name", "name"}
		})), inv, `fields: field "name" appears more than once`},
		{"list no entries", importList(withList(func(r *registryv1.ImportCodeListRequest) {
			r.Version = "2"
			r.Entries = nil
		})), inv, "entries: must not be empty"},
		{"list empty code", importList(withList(func(r *registryv1.ImportCodeListRequest) {
			r.Version = "2"
			r.Entries[1].Code = ""
		})), inv, "entries[1].code: must not be empty"},
		{"list duplicate code", importList(withList(func(r *registryv1.ImportCodeListRequest) {
			r.Version = "2"
			r.Entries[1].Code = "01"
		})), dup, `entries[1].code: code "01" already appears at entries[0]`},
		{"list unknown field", importList(withList(func(r *registryv1.ImportCodeListRequest) {
			r.Version = "2"
			r.Entries[0].Fields["colour"] = "red"
		})), inv, `entries[0].fields: field "colour" is not among fields`},
		{"list version twice", importList(smallList()), dup, "code list test-list version 1 already exists"},
	}
}

func TestAdminRejectsBadInput(t *testing.T) {
	f := newFixture(t)
	ctx := testContext(t)
	admin := f.admin(t)
	f.populate(t, ctx, admin)
	if _, err := admin.ImportCodeList(ctx, smallList()); err != nil {
		t.Fatalf("ImportCodeList: %v", err)
	}
	if _, err := admin.AddGrant(ctx, &registryv1.AddGrantRequest{Client: memberG22, Service: serviceDVHC}); err != nil {
		t.Fatal(err)
	}
	before := f.reg.Configuration()

	for _, tc := range badCases(t, f) {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.call(ctx, admin)
			st := status.Convert(err)
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
