package main

import (
	"bytes"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/types/known/timestamppb"

	cataloguev1 "github.com/ketnoi/ketnoi/proto/ketnoi/catalogue/v1"
	registryv1 "github.com/ketnoi/ketnoi/proto/ketnoi/registry/v1"
)

func TestShownAndEscaped(t *testing.T) {
	for _, tc := range []struct{ in, shown, escaped string }{
		{"Bộ Nội vụ", "Bộ Nội vụ", "Bộ Nội vụ"},
		{"", "", ""},
		{"a\nb", `"a\nb"`, `a\nb`},
		{"red\x1b[31m", `"red\x1b[31m"`, `red\x1b[31m`},
		{"B\xf4", `"B\xf4"`, `B\xf4`},
		{"a\u202eb", `"a\u202eb"`, `a\u202eb`},
		{`say "hi"`, `say "hi"`, `say "hi"`},
	} {
		if got := shown(tc.in); got != tc.shown {
			t.Errorf("shown(%q) = %s, want %s", tc.in, got, tc.shown)
		}
		if got := escaped(tc.in); got != tc.escaped {
			t.Errorf("escaped(%q) = %s, want %s", tc.in, got, tc.escaped)
		}
	}
}

// A configuration holding text from before the registry checked it (a
// newline, a terminal escape, bytes that are not UTF-8) prints one line
// per row all the same, with the odd values quoted.
func TestPrintConfigEscapes(t *testing.T) {
	cfg := &registryv1.GlobalConfiguration{
		Version:   7,
		Instance:  "VN",
		IssuedAt:  timestamppb.Now(),
		ExpiresAt: timestamppb.Now(),
		Members: []*registryv1.Member{
			{Id: "VN/NN/000.00.00.G22", Name: "Line1\nFAKE  VN/NN/000.00.00.G99  Injected\x1b[31m"},
			{Id: "VN/NN/000.00.00.G09", Name: "B\xf4 N\xf4i v\xf9", Subsystems: []string{"dvhc"}},
		},
		Nodes: []*registryv1.Node{{SpiffeId: "spiffe://vn.ketnoi/node/NN/000.00.00.G09/bnv", Address: "x\r:1"}},
		Services: []*registryv1.Service{{
			Id: "VN/NN/000.00.00.G09/dvhc/vn.gov.dvhc.v1.AdminUnitService", Custodian: "X\ngrants (9)",
			Description:    "Đơn vị\nhành chính",
			Methods:        []*registryv1.Method{{Name: "GetUnit"}},
			Classification: registryv1.Classification_CLASSIFICATION_NORMAL,
		}},
		Grants: []*registryv1.Grant{{
			Id: "g-1", Client: "VN/NN/000.00.00.G22", Service: "VN/NN/000.00.00.G09/dvhc/vn.gov.dvhc.v1.AdminUnitService",
			Purposes: []string{"a\nb"},
		}},
		CodeLists: []*cataloguev1.CodeListVersion{{List: "l", Version: "1\x07"}},
	}
	var b bytes.Buffer
	printConfig(&b, cfg)
	out := b.String()
	if strings.ContainsAny(out, "\x1b\r\x07") || !strings.Contains(out, "(9)\"") {
		t.Errorf("config show printed raw control characters:\n%s", out)
	}
	var rows []string
	for l := range strings.Lines(out) {
		if strings.HasPrefix(l, "  ") {
			rows = append(rows, strings.TrimRight(l, "\n"))
		}
	}
	want := []string{
		`  VN/NN/000.00.00.G22      "Line1\nFAKE  VN/NN/000.00.00.G99  Injected\x1b[31m"; subsystems: none; signing certificates: 0`,
		`  VN/NN/000.00.00.G09      "B\xf4 N\xf4i v\xf9"; subsystems: dvhc; signing certificates: 0`,
		`  spiffe://vn.ketnoi/node/NN/000.00.00.G09/bnv at "x\r:1"`,
		`  VN/NN/000.00.00.G09/dvhc/vn.gov.dvhc.v1.AdminUnitService [normal] methods: GetUnit; custodian: "X\ngrants (9)"`,
		`    description: "Đơn vị\nhành chính"`,
		`  g-1    VN/NN/000.00.00.G22 -> VN/NN/000.00.00.G09/dvhc/vn.gov.dvhc.v1.AdminUnitService; methods: all; purposes: "a\nb"`,
		`  l "1\a": 0 entries, sha256 `,
	}
	if diff := cmp.Diff(want, rows); diff != "" {
		t.Errorf("config show rows (-want +got):\n%s", diff)
	}
}

// Lists print so that they read back as the values they hold: purposes
// "a" and "b" apart from the one purpose "a, b", a purpose named "any"
// apart from any purpose; and a service's description is printed, "none"
// when it has none.
func TestPrintConfigUnambiguous(t *testing.T) {
	const svc = "VN/NN/000.00.00.G09/dvhc/vn.gov.dvhc.v1.AdminUnitService"
	methods, normal := []*registryv1.Method{{Name: "GetUnit"}}, registryv1.Classification_CLASSIFICATION_NORMAL
	cfg := &registryv1.GlobalConfiguration{
		Services: []*registryv1.Service{
			{Id: svc, Description: "Danh mục đơn vị hành chính, theo mã", Custodian: "U", Methods: methods, Classification: normal},
			{Id: svc + "2", Description: "", Custodian: "U", Methods: methods, Classification: normal},
			{Id: svc + "3", Description: "none", Custodian: "U", Methods: methods, Classification: normal},
		},
		Grants: []*registryv1.Grant{
			{Id: "g-1", Client: "C", Service: "S", Purposes: []string{"a", "b"}},
			{Id: "g-2", Client: "C", Service: "S", Purposes: []string{"a, b"}},
			{Id: "g-3", Client: "C", Service: "S", Purposes: []string{"a b", ""}},
			{Id: "g-4", Client: "C", Service: "S", Purposes: []string{`"a`, `b"`}},
			{Id: "g-5", Client: "C", Service: "S", Purposes: []string{"any"}},
			{Id: "g-6", Client: "C", Service: "S", Methods: []string{"all"}},
			{Id: "g-7", Client: "C", Service: "S", Methods: []string{"Get", "all"}, Purposes: []string{"c", "any"}},
		},
	}
	var b bytes.Buffer
	printConfig(&b, cfg)
	var rows []string
	for l := range strings.Lines(b.String()) {
		if strings.HasPrefix(l, "  ") {
			rows = append(rows, strings.TrimRight(l, "\n"))
		}
	}
	want := []string{
		"  " + svc + " [normal] methods: GetUnit; custodian: U",
		"    description: Danh mục đơn vị hành chính, theo mã",
		"  " + svc + "2 [normal] methods: GetUnit; custodian: U",
		"    description: none",
		"  " + svc + "3 [normal] methods: GetUnit; custodian: U",
		`    description: "none"`,
		"  g-1    C -> S; methods: all; purposes: a, b",
		`  g-2    C -> S; methods: all; purposes: "a, b"`,
		`  g-3    C -> S; methods: all; purposes: "a b", ""`,
		`  g-4    C -> S; methods: all; purposes: "\"a", "b\""`,
		`  g-5    C -> S; methods: all; purposes: "any"`,
		`  g-6    C -> S; methods: "all"; purposes: any`,
		`  g-7    C -> S; methods: Get, "all"; purposes: c, "any"`,
	}
	if diff := cmp.Diff(want, rows); diff != "" {
		t.Errorf("config show rows (-want +got):\n%s", diff)
	}
}

// A request holding a string that is not UTF-8 anywhere is refused before
// it is sent, naming where.
func TestInvalidUTF8(t *testing.T) {
	list := &registryv1.ImportCodeListRequest{
		List: "l", Fields: []string{"name"},
		Entries: []*cataloguev1.CodeEntry{
			{Code: "01", Fields: map[string]string{"name": "one"}},
			{Code: "02", Fields: map[string]string{"name": "tw\xf4"}},
		},
	}
	if got := invalidUTF8(list.ProtoReflect()); got != `entries[1].fields["name"]` {
		t.Errorf("invalidUTF8 of a bad entry value = %q", got)
	}
	list.Entries[1].Fields = map[string]string{"n\xe0me": "two"}
	if got := invalidUTF8(list.ProtoReflect()); got != `entries[1].fields key "n\xe0me"` {
		t.Errorf("invalidUTF8 of a bad entry key = %q", got)
	}
	grant := &registryv1.AddGrantRequest{Client: "c", Purposes: []string{"ok", "b\xe0d"}}
	if got := invalidUTF8(grant.ProtoReflect()); got != "purposes[1]" {
		t.Errorf("invalidUTF8 of a bad purpose = %q", got)
	}
	if got := invalidUTF8((&registryv1.AddMemberRequest{Name: "Bộ Nội vụ"}).ProtoReflect()); got != "" {
		t.Errorf("invalidUTF8 of a good request = %q", got)
	}
}
