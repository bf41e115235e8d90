package main

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/descriptorpb"

	"github.com/ketnoi/ketnoi/internal/dvhc"
	"github.com/ketnoi/ketnoi/internal/registry"
	"github.com/ketnoi/ketnoi/internal/sign"
)

const (
	g22     = "VN/NN/000.00.00.G22"
	g09     = "VN/NN/000.00.00.G09"
	node1   = "spiffe://vn.ketnoi/node/NN/000.00.00.G22/node1"
	dvhcSvc = "VN/NN/000.00.00.G09/dvhc/vn.gov.dvhc.v1.AdminUnitService"
)

// descriptorFile writes the administrative units descriptor set, without
// the named methods, and returns its file.
func (o *operator) descriptorFile(t *testing.T, name string, drop ...string) string {
	t.Helper()
	b, err := dvhc.DescriptorSet()
	if err != nil {
		t.Fatal(err)
	}
	set := &descriptorpb.FileDescriptorSet{}
	if err := proto.Unmarshal(b, set); err != nil {
		t.Fatal(err)
	}
	for _, f := range set.GetFile() {
		for _, s := range f.GetService() {
			s.Method = slices.DeleteFunc(s.Method, func(m *descriptorpb.MethodDescriptorProto) bool {
				return strings.Contains(" "+strings.Join(drop, " ")+" ", " "+m.GetName()+" ")
			})
		}
	}
	if b, err = proto.Marshal(set); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(o.dir, name)
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// certSum returns the hex SHA-256 of the certificate in file.
func certSum(t *testing.T, file string) string {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	certs, err := sign.ParseCertificates(b)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(certs[0].Raw)
	return hex.EncodeToString(sum[:])
}

// populated is a registry holding G22 with subsystem vanban and node1,
// G09 with subsystem dvhc and the administrative units service, and grant
// g-1 of GetUnit to G22/vanban. It returns G22's signing certificate file.
func populated(t *testing.T) (*operator, string) {
	t.Helper()
	o := startRegistry(t)
	oldCert := filepath.Join(o.dir, "g22-old.pem")
	if err := os.Rename(o.signingCert(t, g22), oldCert); err != nil {
		t.Fatal(err)
	}
	o.ok(t, "member", "add", "--id", g22, "--name", "VPCP", "--signing-cert", oldCert)
	o.ok(t, "member", "add", "--id", g09, "--name", "BNV", "--signing-cert", o.signingCert(t, g09))
	o.ok(t, "subsystem", "add", "--id", g22+"/vanban")
	o.ok(t, "subsystem", "add", "--id", g09+"/dvhc")
	o.ok(t, "node", "add", "--id", node1, "--address", "127.0.0.1:8443")
	o.ok(t, "service", "add", "--id", dvhcSvc, "--descriptor-set", o.descriptorFile(t, "dvhc.binpb"),
		"--description", "Đơn vị hành chính", "--custodian", "Vụ Chính quyền địa phương")
	o.ok(t, "grant", "add", "--client", g22+"/vanban", "--service", dvhcSvc, "--method", "GetUnit")
	return o, oldCert
}

func TestChangeCommands(t *testing.T) {
	o, oldCert := populated(t)
	newCert := o.signingCert(t, g22)
	oldSum, newSum := certSum(t, oldCert), certSum(t, newCert)

	steps := []struct {
		args []string
		want string
	}{
		{[]string{"node", "set-address", "--id", node1, "--address", "node1.vpcp.example:9443"},
			"node " + node1 + " is now at node1.vpcp.example:9443; configuration version 9\n"},
		{[]string{"member", "add-signing-cert", "--id", g22, "--signing-cert", newCert},
			"added signing certificate sha256 " + newSum + " to member " + g22 + " (2 listed); configuration version 10\n"},
		{[]string{"member", "remove-signing-cert", "--id", g22, "--signing-cert", oldCert},
			"removed signing certificate sha256 " + oldSum + " of member " + g22 + " (1 left); configuration version 11\n"},
		{[]string{"service", "update", "--id", dvhcSvc, "--description", "Danh mục đơn vị hành chính",
			"--classification", "sensitive"},
			"updated service " + dvhcSvc + " (sensitive, methods GetUnit, ListCommunes, ConvertOldUnit); " +
				"configuration version 12\n"},
		// What is already stored publishes no version.
		{[]string{"service", "update", "--id", dvhcSvc, "--description", "Danh mục đơn vị hành chính"},
			"unchanged service " + dvhcSvc + " (sensitive, methods GetUnit, ListCommunes, ConvertOldUnit); " +
				"configuration version 12\n"},
		{[]string{"node", "set-address", "--id", node1, "--address", "node1.vpcp.example:9443"},
			"node " + node1 + " is already at node1.vpcp.example:9443: unchanged; configuration version 12\n"},
		{[]string{"service", "update", "--id", dvhcSvc, "--descriptor-set",
			o.descriptorFile(t, "no-convert.binpb", "ConvertOldUnit")},
			"updated service " + dvhcSvc + " (sensitive, methods GetUnit, ListCommunes); configuration version 13\n"},
		{[]string{"grant", "revoke", "--id", "g-1"}, "revoked grant g-1; configuration version 14\n"},
		{[]string{"service", "remove", "--id", dvhcSvc}, "removed service " + dvhcSvc + "; configuration version 15\n"},
		{[]string{"node", "remove", "--id", node1}, "removed node " + node1 + "; configuration version 16\n"},
		{[]string{"member", "set-name", "--id", g22, "--name", "Văn phòng Chính phủ"},
			"member " + g22 + " is now named Văn phòng Chính phủ; configuration version 17\n"},
		{[]string{"member", "set-name", "--id", g22, "--name", "Văn phòng Chính phủ"},
			"member " + g22 + " is already named Văn phòng Chính phủ: unchanged; configuration version 17\n"},
		{[]string{"subsystem", "remove", "--id", g22 + "/vanban"},
			"removed subsystem " + g22 + "/vanban; configuration version 18\n"},
		{[]string{"member", "remove", "--id", g22}, "removed member " + g22 + "; configuration version 19\n"},
	}
	for i, s := range steps {
		if diff := cmp.Diff(s.want, o.ok(t, s.args...)); diff != "" {
			t.Errorf("ketnoi %s output (-want +got):\n%s", strings.Join(s.args, " "), diff)
		}
		if i == 1 {
			// Both certificates are listed, each with the digest that
			// remove-signing-cert --sha256 takes.
			show := o.ok(t, "config", "show")
			for _, sum := range []string{oldSum, newSum} {
				if !strings.Contains(show, "    signing certificate sha256 "+sum+", expires ") {
					t.Errorf("config show does not list certificate %s:\n%s", sum, show)
				}
			}
		}
	}

	show := o.ok(t, "config", "show")
	for _, want := range []string{"members (1)", "nodes (0)", "services (0)", "grants (0)", "signing certificates: 1\n"} {
		if !strings.Contains(show, want) {
			t.Errorf("config show after the changes lacks %q:\n%s", want, show)
		}
	}
}

func TestChangeCommandErrors(t *testing.T) {
	o, oldCert := populated(t)
	oldSum := certSum(t, oldCert)
	emptySet := filepath.Join(o.dir, "empty.binpb")
	if err := os.WriteFile(emptySet, nil, 0o644); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name     string
		args     []string
		wantCode int
		wantErr  string
	}{
		{"set-address without address", []string{"node", "set-address", "--id", node1}, 2,
			"ketnoi node: --address is required\n"},
		{"set-address malformed id", []string{"node", "set-address", "--id", "node1", "--address", "127.0.0.1:1"}, 2,
			`ketnoi node: --id: scheme is missing or invalid`},
		{"set-address unspecified", []string{"node", "set-address", "--id", node1, "--address", "0.0.0.0:8443"}, 1,
			`ketnoi node: address: "0.0.0.0:8443" is an unspecified address; ` +
				"register the host name or address other nodes dial (InvalidArgument)\n"},
		{"set-address host with a space", []string{"node", "set-address", "--id", node1, "--address", "a b:1"}, 1,
			`ketnoi node: address: "a b:1": host "a b" is neither an IP address nor a DNS name: ` +
				`character ' ' is not a letter, digit, '-' or '.' (InvalidArgument)` + "\n"},
		{"remove unknown node", []string{"node", "remove", "--id", "spiffe://vn.ketnoi/node/NN/000.00.00.G22/n9"}, 1,
			"ketnoi node: node spiffe://vn.ketnoi/node/NN/000.00.00.G22/n9 is not registered (NotFound)\n"},
		{"remove the last node of a grant holder", []string{"node", "remove", "--id", node1}, 1,
			"ketnoi node: node " + node1 + " is the last node of member " + g22 + ", which still holds grants g-1; " +
				"revoke them or add another node first (FailedPrecondition)\n"},
		{"update without changes", []string{"service", "update", "--id", dvhcSvc}, 2,
			"ketnoi service: nothing to change: give --descriptor-set, --description, --custodian or --classification\n"},
		{"clear the description", []string{"service", "update", "--id", dvhcSvc, "--description", ""}, 2,
			"ketnoi service: --description must not be empty: every service has one; give the new text\n"},
		{"clear the custodian", []string{"service", "update", "--id", dvhcSvc, "--custodian", " "}, 2,
			"ketnoi service: --custodian must not be empty: every service has one; give the new text\n"},
		{"update bad classification", []string{"service", "update", "--id", dvhcSvc, "--classification", "public"}, 2,
			`ketnoi service: --classification "public": want normal, sensitive, secret or top-secret`},
		{"update dropping a granted method", []string{"service", "update", "--id", dvhcSvc,
			"--descriptor-set", o.descriptorFile(t, "no-get.binpb", "GetUnit")}, 1,
			"ketnoi service: the new descriptor set of " + dvhcSvc + " lacks methods that grants name: " +
				"g-1 (GetUnit); revoke those grants first (FailedPrecondition)\n"},
		{"update with an empty descriptor set", []string{"service", "update", "--id", dvhcSvc,
			"--descriptor-set", emptySet, "--description", "Đơn vị hành chính 2026"}, 2,
			"ketnoi service: --descriptor-set " + emptySet + ": the file is empty\n"},
		{"remove service with grants", []string{"service", "remove", "--id", dvhcSvc}, 1,
			"ketnoi service: service " + dvhcSvc + " has grants g-1; revoke them first (FailedPrecondition)\n"},
		{"remove certificate both ways", []string{"member", "remove-signing-cert", "--id", g22,
			"--signing-cert", oldCert, "--sha256", oldSum}, 2,
			"ketnoi member: exactly one of --signing-cert and --sha256 is required\n"},
		{"remove certificate neither way", []string{"member", "remove-signing-cert", "--id", g22}, 2,
			"ketnoi member: exactly one of --signing-cert and --sha256 is required\n"},
		{"remove certificate short digest", []string{"member", "remove-signing-cert", "--id", g22,
			"--sha256", oldSum[:16]}, 2, `ketnoi member: --sha256 "` + oldSum[:16] + `": want 64 hexadecimal digits`},
		{"remove last certificate", []string{"member", "remove-signing-cert", "--id", g22, "--sha256", oldSum}, 1,
			"ketnoi member: signing certificate sha256 " + oldSum + " is the only one of member " + g22 +
				"; add its successor first (FailedPrecondition)\n"},
		{"add certificate of another member", []string{"member", "add-signing-cert", "--id", g22,
			"--signing-cert", o.signingCert(t, g09)}, 1,
			"ketnoi member: signing_certificate: issued to member " + g09 + ", not " + g22 + " (InvalidArgument)\n"},
		{"remove a member that has nodes", []string{"member", "remove", "--id", g22}, 1,
			"ketnoi member: member " + g22 + " still has nodes " + node1 + "; subsystems " + g22 + "/vanban; " +
				"grants g-1; revoke the grants and remove the services, subsystems and nodes first (FailedPrecondition)\n"},
		{"remove a subsystem that provides a service", []string{"subsystem", "remove", "--id", g09 + "/dvhc"}, 1,
			"ketnoi subsystem: subsystem " + g09 + "/dvhc still has services " + dvhcSvc +
				"; revoke the grants and remove the services first (FailedPrecondition)\n"},
		{"remove a malformed subsystem", []string{"subsystem", "remove", "--id", g22 + "/a/b"}, 2,
			`ketnoi subsystem: --id: malformed identifier: subsystem "` + g22 + `/a/b": want INSTANCE/CLASS/CODE/SUBSYSTEM` + "\n"},
		{"set-name without name", []string{"member", "set-name", "--id", g22}, 2, "ketnoi member: --name is required\n"},
		{"set-name with a newline", []string{"member", "set-name", "--id", g22, "--name", "VPCP\nFAKE"}, 1,
			"ketnoi member: name: contains control character U+000A (InvalidArgument)\n"},
		{"set-name not UTF-8", []string{"member", "set-name", "--id", g22, "--name", "VP\xffCP"}, 2,
			"ketnoi member: --name is not valid UTF-8\n"},
		{"set-address not UTF-8", []string{"node", "set-address", "--id", node1, "--address", "h\xff:1"}, 2,
			"ketnoi node: --address is not valid UTF-8\n"},
		{"custodian injecting a heading", []string{"service", "update", "--id", dvhcSvc, "--custodian", "X\ngrants (9)"}, 1,
			"ketnoi service: custodian: contains control character U+000A (InvalidArgument)\n"},
		{"purpose with a newline", []string{"grant", "add", "--client", g22, "--service", dvhcSvc, "--purpose", "a\nb"}, 1,
			"ketnoi grant: purposes[0]: must be printable ASCII, as gRPC metadata carries it (InvalidArgument)\n"},
		{"purpose not UTF-8", []string{"grant", "add", "--client", g22, "--service", dvhcSvc, "--purpose", "\xff"}, 2,
			"ketnoi grant: --purpose is not valid UTF-8\n"},
		{"revoke a grant id not UTF-8", []string{"grant", "revoke", "--id", "g-\xff"}, 2,
			"ketnoi grant: --id is not valid UTF-8\n"},
		{"missing descriptor set", []string{"service", "update", "--id", dvhcSvc, "--descriptor-set",
			filepath.Join(o.dir, "nope.binpb")}, 2,
			"ketnoi service: --descriptor-set: open " + filepath.Join(o.dir, "nope.binpb") + ": no such file or directory\n"},
		{"missing signing certificate", []string{"member", "add-signing-cert", "--id", g22, "--signing-cert",
			filepath.Join(o.dir, "nope.pem")}, 2,
			"ketnoi member: --signing-cert: open " + filepath.Join(o.dir, "nope.pem") + ": no such file or directory\n"},
		{"backup without out", []string{"registry", "backup"}, 2, "ketnoi registry: --out is required\n"},
		{"backup into a missing directory", []string{"registry", "backup", "--out",
			filepath.Join(o.dir, "missing", "registry.db")}, 2, "ketnoi registry: --out " +
			filepath.Join(o.dir, "missing", "registry.db") + ": directory " + filepath.Join(o.dir, "missing") +
			" does not exist\n"},
		{"backup below a file", []string{"registry", "backup", "--out", filepath.Join(oldCert, "registry.db")}, 2,
			"ketnoi registry: --out " + filepath.Join(oldCert, "registry.db") + ": " + oldCert + " is not a directory\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, _, stderr := ketnoi(t, append(tt.args, o.conn...)...)
			if code != tt.wantCode || !strings.Contains(stderr, tt.wantErr) || strings.Count(stderr, "\n") != 1 {
				t.Errorf("exit %d, stderr %q; want exit %d and one line containing %q",
					code, stderr, tt.wantCode, tt.wantErr)
			}
		})
	}
}

func TestRegistryBackup(t *testing.T) {
	o, _ := populated(t)
	out := filepath.Join(o.dir, "backup", "registry.db")
	if err := os.Mkdir(filepath.Dir(out), 0o755); err != nil {
		t.Fatal(err)
	}
	// An older backup is replaced whole.
	o.ok(t, "registry", "backup", "--out", out)

	got := o.ok(t, "registry", "backup", "--out", out)
	fi, err := os.Stat(out)
	if err != nil {
		t.Fatal(err)
	}
	want := fmt.Sprintf("wrote %s: %d bytes, configuration version 8\n", out, fi.Size())
	if got != want {
		t.Errorf("backup output = %q, want %q", got, want)
	}
	if v, err := registry.StateVersion(out); err != nil || v != 8 {
		t.Errorf("StateVersion of the backup = %d, %v; want 8", v, err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("backup mode = %v, want 0600", fi.Mode().Perm())
	}
	entries, err := os.ReadDir(filepath.Dir(out))
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 1 {
		t.Errorf("backup directory holds %d files, want the backup alone", len(entries))
	}
}
