package id

import (
	"errors"
	"net/url"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

var g22 = Member{Instance: "VN", Class: "NN", Code: "000.00.00.G22"}

func TestParseMember(t *testing.T) {
	tests := []struct {
		in      string
		want    Member
		wantErr bool
	}{
		{in: "VN/NN/000.00.00.G22", want: g22},
		{in: "VN-TEST/GOV/H29", want: Member{Instance: "VN-TEST", Class: "GOV", Code: "H29"}},
		{in: "VN/NN/" + strings.Repeat("1", 35), want: Member{Instance: "VN", Class: "NN", Code: strings.Repeat("1", 35)}},
		{in: "VN/NN/000.00.00.g22", wantErr: true},
		{in: "VN/NN/" + strings.Repeat("1", 36), wantErr: true},
		{in: "vn/NN/000.00.00.G22", wantErr: true},
		{in: "VN/nn/000.00.00.G22", wantErr: true},
		{in: "VN/N-N/000.00.00.G22", wantErr: true},
		{in: "VN/NN", wantErr: true},
		{in: "VN/NN/", wantErr: true},
		{in: "VN/NN/000.00.00.G22/vanban", wantErr: true},
		{in: "", wantErr: true},
	}
	for _, tt := range tests {
		got, err := ParseMember(tt.in)
		if tt.wantErr {
			if !errors.Is(err, ErrMalformed) {
				t.Errorf("ParseMember(%q) error = %v, want ErrMalformed", tt.in, err)
			}
			continue
		}
		if err != nil {
			t.Errorf("ParseMember(%q): %v", tt.in, err)
			continue
		}
		if got != tt.want {
			t.Errorf("ParseMember(%q) = %+v, want %+v", tt.in, got, tt.want)
		}
		if got.String() != tt.in {
			t.Errorf("ParseMember(%q).String() = %q", tt.in, got.String())
		}
	}
}

func TestParseClient(t *testing.T) {
	tests := []struct {
		in      string
		want    Client
		wantErr bool
	}{
		{in: "VN/NN/000.00.00.G22", want: Client{Member: g22}},
		{in: "VN/NN/000.00.00.G22/vanban", want: Client{Member: g22, Subsystem: "vanban"}},
		{in: "VN/NN/000.00.00.G22/9so_1-x", want: Client{Member: g22, Subsystem: "9so_1-x"}},
		{in: "VN/NN/000.00.00.G22/VanBan", wantErr: true},
		{in: "VN/NN/000.00.00.G22/-van", wantErr: true},
		{in: "VN/NN/000.00.00.G22/", wantErr: true},
		{in: "VN/NN/000.00.00.G22/" + strings.Repeat("a", 65), wantErr: true},
		{in: "VN/NN/000.00.00.G22/a/b", wantErr: true},
		{in: "VN/NN/000.00.00.g22/vanban", wantErr: true},
		{in: "VN/NN", wantErr: true},
	}
	for _, tt := range tests {
		got, err := ParseClient(tt.in)
		if tt.wantErr {
			if !errors.Is(err, ErrMalformed) {
				t.Errorf("ParseClient(%q) error = %v, want ErrMalformed", tt.in, err)
			}
			continue
		}
		if err != nil {
			t.Errorf("ParseClient(%q): %v", tt.in, err)
			continue
		}
		if got != tt.want {
			t.Errorf("ParseClient(%q) = %+v, want %+v", tt.in, got, tt.want)
		}
		if got.String() != tt.in {
			t.Errorf("ParseClient(%q).String() = %q", tt.in, got.String())
		}
	}
}

func TestParseSubsystem(t *testing.T) {
	got, err := ParseSubsystem("VN/NN/000.00.00.G09/dvhc")
	if err != nil {
		t.Fatalf("ParseSubsystem: %v", err)
	}
	want := Client{Member: Member{Instance: "VN", Class: "NN", Code: "000.00.00.G09"}, Subsystem: "dvhc"}
	if got != want {
		t.Errorf("ParseSubsystem = %+v, want %+v", got, want)
	}
	for _, in := range []string{"VN/NN/000.00.00.G09", "VN/NN/000.00.00.G09/DVHC", "dvhc"} {
		if _, err := ParseSubsystem(in); !errors.Is(err, ErrMalformed) {
			t.Errorf("ParseSubsystem(%q) error = %v, want ErrMalformed", in, err)
		}
	}
}

func TestParseService(t *testing.T) {
	const example = "VN/NN/000.00.00.G09/dvhc/vn.gov.dvhc.v1.AdminUnitService"
	got, err := ParseService(example)
	if err != nil {
		t.Fatalf("ParseService(%q): %v", example, err)
	}
	want := Service{
		Provider: Client{Member: Member{Instance: "VN", Class: "NN", Code: "000.00.00.G09"}, Subsystem: "dvhc"},
		Name:     "vn.gov.dvhc.v1.AdminUnitService",
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("ParseService(%q) mismatch (-want +got):\n%s", example, diff)
	}
	if got.String() != example {
		t.Errorf("String() = %q, want %q", got.String(), example)
	}

	bad := []string{
		"VN/NN/000.00.00.G09/dvhc/AdminUnitService",                // no package
		"VN/NN/000.00.00.G09/dvhc/vn.gov.dvhc.v1.",                 // empty last part
		"VN/NN/000.00.00.G09/dvhc/vn.gov/dvhc.v1.AdminUnitService", // slash in name
		"VN/NN/000.00.00.G09/vn.gov.dvhc.v1.AdminUnitService",      // no subsystem
		"VN/NN/000.00.00.G09/DVHC/vn.gov.dvhc.v1.AdminUnitService", // bad subsystem
		"VN/NN/000.00.00.g09/dvhc/vn.gov.dvhc.v1.AdminUnitService", // lower-case code
		"VN/NN/000.00.00.G09/dvhc/1vn.dvhc.AdminUnitService",       // leading digit
		"",
	}
	for _, in := range bad {
		if _, err := ParseService(in); !errors.Is(err, ErrMalformed) {
			t.Errorf("ParseService(%q) error = %v, want ErrMalformed", in, err)
		}
	}
}

func TestValidNames(t *testing.T) {
	grpc := map[string]bool{
		"vn.gov.dvhc.v1.AdminUnitService": true,
		"a.B":                             true,
		"_x.y_1":                          true,
		"Service":                         false,
		"a..b":                            false,
		"a.b-c":                           false,
		"":                                false,
	}
	for in, want := range grpc {
		if got := ValidGRPCName(in); got != want {
			t.Errorf("ValidGRPCName(%q) = %v, want %v", in, got, want)
		}
	}
	node := map[string]bool{
		"ss1":                   true,
		"0-a_b":                 true,
		strings.Repeat("a", 64): true,
		strings.Repeat("a", 65): false,
		"SS1":                   false,
		"_ss":                   false,
		"":                      false,
	}
	for in, want := range node {
		if got := ValidNodeName(in); got != want {
			t.Errorf("ValidNodeName(%q) = %v, want %v", in, got, want)
		}
	}
}

func TestNodeRoundTrip(t *testing.T) {
	td := spiffeid.RequireTrustDomainFromString("vn.ketnoi")
	sid, err := Node(td, g22, "ss1")
	if err != nil {
		t.Fatalf("Node: %v", err)
	}
	if want := "spiffe://vn.ketnoi/node/NN/000.00.00.G22/ss1"; sid.String() != want {
		t.Errorf("Node = %s, want %s", sid, want)
	}
	m, name, err := ParseNode(sid, "VN")
	if err != nil {
		t.Fatalf("ParseNode(%s): %v", sid, err)
	}
	if m != g22 || name != "ss1" {
		t.Errorf("ParseNode(%s) = %+v, %q; want %+v, ss1", sid, m, name, g22)
	}
	if _, err := Node(td, g22, "SS1"); !errors.Is(err, ErrMalformed) {
		t.Errorf("Node with name SS1: error = %v, want ErrMalformed", err)
	}
}

func TestParseNodeRejects(t *testing.T) {
	tests := []struct {
		sid      string
		instance string
	}{
		{"spiffe://vn.ketnoi/registry", "VN"},
		{"spiffe://vn.ketnoi/admin/alice", "VN"},
		{"spiffe://vn.ketnoi/node/NN/000.00.00.G22", "VN"},
		{"spiffe://vn.ketnoi/node/NN/000.00.00.G22/ss1/extra", "VN"},
		{"spiffe://vn.ketnoi/svc/NN/000.00.00.G22/ss1", "VN"},
		{"spiffe://vn.ketnoi/node/nn/000.00.00.G22/ss1", "VN"},
		{"spiffe://vn.ketnoi/node/NN/000.00.00.G22/ss.1", "VN"},
		{"spiffe://vn.ketnoi/node/NN/000.00.00.G22/ss1", "vn"},
	}
	for _, tt := range tests {
		sid := spiffeid.RequireFromString(tt.sid)
		if _, _, err := ParseNode(sid, tt.instance); !errors.Is(err, ErrMalformed) {
			t.Errorf("ParseNode(%s, %q) error = %v, want ErrMalformed", tt.sid, tt.instance, err)
		}
	}
}

func TestRegistryAndAdmin(t *testing.T) {
	td := spiffeid.RequireTrustDomainFromString("vn.ketnoi")
	if got, want := Registry(td).String(), "spiffe://vn.ketnoi/registry"; got != want {
		t.Errorf("Registry = %s, want %s", got, want)
	}
	alice, err := Admin(td, "alice")
	if err != nil {
		t.Fatalf("Admin: %v", err)
	}
	if want := "spiffe://vn.ketnoi/admin/alice"; alice.String() != want {
		t.Errorf("Admin = %s, want %s", alice, want)
	}
	if _, err := Admin(td, "Alice"); !errors.Is(err, ErrMalformed) {
		t.Errorf("Admin(Alice) error = %v, want ErrMalformed", err)
	}

	tests := []struct {
		sid  string
		want bool
	}{
		{"spiffe://vn.ketnoi/admin/alice", true},
		{"spiffe://other.ketnoi/admin/alice", false},
		{"spiffe://vn.ketnoi/admin", false},
		{"spiffe://vn.ketnoi/admin/alice/x", false},
		{"spiffe://vn.ketnoi/registry", false},
		{"spiffe://vn.ketnoi/node/NN/000.00.00.G22/ss1", false},
	}
	for _, tt := range tests {
		if got := IsAdmin(td, spiffeid.RequireFromString(tt.sid)); got != tt.want {
			t.Errorf("IsAdmin(%s) = %v, want %v", tt.sid, got, tt.want)
		}
	}
}

func TestMemberURI(t *testing.T) {
	u := MemberURI(g22)
	if want := "urn:ketnoi:member:VN/NN/000.00.00.G22"; u.String() != want {
		t.Errorf("MemberURI = %s, want %s", u, want)
	}
	m, err := MemberFromURI(u)
	if err != nil {
		t.Fatalf("MemberFromURI(%s): %v", u, err)
	}
	if m != g22 {
		t.Errorf("MemberFromURI = %+v, want %+v", m, g22)
	}
	for _, s := range []string{
		RegistrySigningURI,
		"urn:ketnoi:member:VN/NN",
		"urn:ketnoi:member:VN/NN/000.00.00.g22",
		"spiffe://vn.ketnoi/node/NN/000.00.00.G22/ss1",
	} {
		u, err := url.Parse(s)
		if err != nil {
			t.Fatalf("url.Parse(%q): %v", s, err)
		}
		if _, err := MemberFromURI(u); !errors.Is(err, ErrMalformed) {
			t.Errorf("MemberFromURI(%s) error = %v, want ErrMalformed", s, err)
		}
	}
}

func TestMemberIsZero(t *testing.T) {
	if !(Member{}).IsZero() {
		t.Errorf("Member{}.IsZero() = false")
	}
	if g22.IsZero() {
		t.Errorf("%s.IsZero() = true", g22)
	}
}
