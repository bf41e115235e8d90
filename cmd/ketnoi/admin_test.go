package main

import (
	"bytes"
	"crypto/x509"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"google.golang.org/grpc"

	"github.com/ketnoi/ketnoi/internal/dataset"
	"github.com/ketnoi/ketnoi/internal/dvhc"
	"github.com/ketnoi/ketnoi/internal/id"
	"github.com/ketnoi/ketnoi/internal/logging/logtest"
	"github.com/ketnoi/ketnoi/internal/mtls"
	"github.com/ketnoi/ketnoi/internal/pki"
	"github.com/ketnoi/ketnoi/internal/pki/pkitest"
	"github.com/ketnoi/ketnoi/internal/registry"
)

var adminTD = spiffeid.RequireTrustDomainFromString("vn.ketnoi")

// operator is a registry on loopback and the files an operator uses to
// reach it.
type operator struct {
	dir    string
	ca     *pki.CA
	addr   string
	bundle string
	conn   []string // connection flags of the admin operator
	// refusals receives the registry's log of refused handshakes.
	refusals *logtest.Buffer
}

// startRegistry serves an in-process registry over mutual TLS and writes
// an operator SVID and the trust bundle.
func startRegistry(t *testing.T) *operator {
	t.Helper()
	test := pkitest.NewCA(t, "vn.ketnoi")
	ca := test.PKI()
	o := &operator{dir: t.TempDir(), ca: ca, refusals: &logtest.Buffer{}}
	o.bundle = filepath.Join(o.dir, "bundle.pem")
	if err := os.WriteFile(o.bundle, ca.BundlePEM(), 0o644); err != nil {
		t.Fatal(err)
	}

	reg, err := registry.Open(filepath.Join(o.dir, "registry.db"), registry.Config{
		Instance:     "VN",
		TrustDomain:  adminTD,
		Signer:       test.RegistrySigner(t),
		TrustAnchors: []*x509.Certificate{ca.Cert},
	})
	if err != nil {
		t.Fatalf("registry.Open: %v", err)
	}
	identity := mtls.Identity{SVID: test.SVID(t, id.Registry(adminTD).String()), Bundle: test.Bundle()}
	creds := mtls.ServerCredentials(identity, tlsconfig.AuthorizeMemberOf(adminTD))
	srv := grpc.NewServer(append(reg.ServerOptions(),
		grpc.Creds(mtls.LogRefusals(creds, slog.New(slog.NewTextHandler(o.refusals, nil)))))...)
	reg.Register(srv)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(lis)
	t.Cleanup(func() {
		reg.Shutdown()
		srv.Stop()
		reg.Close()
	})
	o.addr = lis.Addr().String()

	cert, key := o.svid(t, "spiffe://vn.ketnoi/admin/alice", "alice")
	o.conn = []string{"--registry", o.addr, "--cert", cert, "--key", key, "--bundle", o.bundle}
	return o
}

// svid writes an SVID for spiffeID and returns its files.
func (o *operator) svid(t *testing.T, spiffeID, name string) (string, string) {
	t.Helper()
	iss, err := o.ca.IssueSVID(spiffeid.RequireFromString(spiffeID), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	cert, key := filepath.Join(o.dir, name+".pem"), filepath.Join(o.dir, name+"-key.pem")
	if err := iss.Write(cert, key); err != nil {
		t.Fatal(err)
	}
	return cert, key
}

// signingCert writes a member's signing certificate and returns its file.
func (o *operator) signingCert(t *testing.T, member string) string {
	t.Helper()
	m, err := id.ParseMember(member)
	if err != nil {
		t.Fatal(err)
	}
	iss, err := o.ca.IssueSigning(id.MemberURI(m), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	name := strings.ReplaceAll(m.Code, ".", "_")
	cert, key := filepath.Join(o.dir, name+".pem"), filepath.Join(o.dir, name+"-key.pem")
	if err := iss.Write(cert, key); err != nil {
		t.Fatal(err)
	}
	return cert
}

// ketnoi runs the CLI with args and returns its exit code, stdout and
// stderr.
func ketnoi(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	code := run(t.Context(), args, &stdout, &stderr)
	return code, stdout.String(), stderr.String()
}

// ok runs the CLI with the operator's connection flags and wants success.
func (o *operator) ok(t *testing.T, args ...string) string {
	t.Helper()
	code, stdout, stderr := ketnoi(t, append(args, o.conn...)...)
	if code != 0 {
		t.Fatalf("ketnoi %s: exit %d, stderr %q", strings.Join(args, " "), code, stderr)
	}
	return stdout
}

func TestRegistryCommands(t *testing.T) {
	o := startRegistry(t)
	descriptors, err := dvhc.DescriptorSet()
	if err != nil {
		t.Fatal(err)
	}
	descFile := filepath.Join(o.dir, "dvhc.binpb")
	if err := os.WriteFile(descFile, descriptors, 0o644); err != nil {
		t.Fatal(err)
	}
	const svc = "VN/NN/000.00.00.G09/dvhc/vn.gov.dvhc.v1.AdminUnitService"

	steps := []struct {
		args []string
		want string
	}{
		{[]string{"member", "add", "--id", "VN/NN/000.00.00.G22", "--name", "Văn phòng Chính phủ",
			"--signing-cert", o.signingCert(t, "VN/NN/000.00.00.G22")},
			"registered member VN/NN/000.00.00.G22 (Văn phòng Chính phủ); configuration version 2\n"},
		{[]string{"member", "add", "--id", "VN/NN/000.00.00.G09", "--name", "Bộ Nội vụ",
			"--signing-cert", o.signingCert(t, "VN/NN/000.00.00.G09")},
			"registered member VN/NN/000.00.00.G09 (Bộ Nội vụ); configuration version 3\n"},
		{[]string{"subsystem", "add", "--id", "VN/NN/000.00.00.G22/vanban"},
			"registered subsystem VN/NN/000.00.00.G22/vanban; configuration version 4\n"},
		{[]string{"subsystem", "add", "--id", "VN/NN/000.00.00.G09/dvhc"},
			"registered subsystem VN/NN/000.00.00.G09/dvhc; configuration version 5\n"},
		{[]string{"node", "add", "--id", "spiffe://vn.ketnoi/node/NN/000.00.00.G22/node1", "--address", "127.0.0.1:8443"},
			"registered node spiffe://vn.ketnoi/node/NN/000.00.00.G22/node1 of VN/NN/000.00.00.G22 at 127.0.0.1:8443; " +
				"configuration version 6\n"},
		{[]string{"service", "add", "--id", svc, "--descriptor-set", descFile,
			"--description", "Đơn vị hành chính", "--custodian", "Vụ Chính quyền địa phương", "--classification", "sensitive"},
			"registered service " + svc + " (sensitive, methods GetUnit, ListCommunes, ConvertOldUnit); " +
				"configuration version 7\n"},
		{[]string{"grant", "add", "--client", "VN/NN/000.00.00.G22/vanban", "--service", svc,
			"--method", "GetUnit", "--method", "ConvertOldUnit", "--purpose", "HS-01"},
			"g-1 granted VN/NN/000.00.00.G22/vanban access to " + svc +
				" (methods: ConvertOldUnit, GetUnit; purposes: HS-01); configuration version 8\n"},
		{[]string{"grant", "add", "--client", "VN/NN/000.00.00.G22", "--service", svc},
			"g-2 granted VN/NN/000.00.00.G22 access to " + svc + " (methods: all; purposes: any); configuration version 9\n"},
		// Two purposes and one purpose holding a comma print apart.
		{[]string{"grant", "add", "--client", "VN/NN/000.00.00.G09", "--service", svc,
			"--purpose", "HS-01", "--purpose", "HS-02"},
			"g-3 granted VN/NN/000.00.00.G09 access to " + svc +
				" (methods: all; purposes: HS-01, HS-02); configuration version 10\n"},
		{[]string{"grant", "add", "--client", "VN/NN/000.00.00.G09/dvhc", "--service", svc,
			"--purpose", "HS-01, HS-02"},
			"g-4 granted VN/NN/000.00.00.G09/dvhc access to " + svc +
				` (methods: all; purposes: "HS-01, HS-02"); configuration version 11` + "\n"},
		{[]string{"grant", "revoke", "--id", "g-1"},
			"revoked grant g-1; configuration version 12\n"},
	}
	for _, s := range steps {
		if diff := cmp.Diff(s.want, o.ok(t, s.args...)); diff != "" {
			t.Errorf("ketnoi %s output (-want +got):\n%s", strings.Join(s.args, " "), diff)
		}
	}
}

func TestCatalogueCommands(t *testing.T) {
	o := startRegistry(t)

	out := o.ok(t, "catalogue", "list")
	if out != "no code lists\n" {
		t.Errorf("catalogue list before import = %q, want %q", out, "no code lists\n")
	}
	out = o.ok(t, "catalogue", "import", "--list", "vn-admin-units", "--version", "2026-07",
		"--title", "Đơn vị hành chính", "--provenance", "GSO via thanglequoc, MIT",
		"--embedded", dataset.AdminUnits2026)
	if !strings.HasPrefix(out, "imported vn-admin-units version 2026-07: 3355 entries, sha256 ") ||
		!strings.HasSuffix(out, "; configuration version 2\n") {
		t.Errorf("catalogue import output = %q", out)
	}

	csvFile := filepath.Join(o.dir, "purposes.csv")
	csv := "code,name\nHS-01,Giải quyết thủ tục hành chính\nTK-01,Thống kê\n"
	if err := os.WriteFile(csvFile, []byte(csv), 0o644); err != nil {
		t.Fatal(err)
	}
	o.ok(t, "catalogue", "import", "--list", "purposes", "--version", "1", "--title", "Mục đích",
		"--provenance", "test", "--csv", csvFile)

	o.ok(t, "catalogue", "import", "--list", "countries", "--version", "7.14.0", "--title", "Quốc gia",
		"--provenance", "i18n-iso-countries, MIT", "--embedded", dataset.Countries, "--key-column", "alpha2")

	lines := strings.Split(strings.TrimSuffix(o.ok(t, "catalogue", "list"), "\n"), "\n")
	if len(lines) != 3 || !strings.HasPrefix(lines[0], "countries\t7.14.0\t250 entries\t") ||
		!strings.HasPrefix(lines[1], "purposes\t1\t2 entries\t") ||
		!strings.HasPrefix(lines[2], "vn-admin-units\t2026-07\t3355 entries\t") {
		t.Errorf("catalogue list = %q, want countries, purposes, vn-admin-units", lines)
	}
	out = o.ok(t, "catalogue", "lookup", "--list", "countries", "--version", "7.14.0", "VN")
	if !strings.Contains(out, "  alpha3: VNM\n") {
		t.Errorf("lookup of VN = %q, want alpha3 VNM", out)
	}

	out = o.ok(t, "catalogue", "lookup", "--list", "vn-admin-units", "--version", "2026-07", "00004")
	want := "00004\n" +
		"  code_name: ba_dinh\n" +
		"  full_name: Phường Ba Đình\n" +
		"  full_name_en: Ba Dinh Ward\n" +
		"  level: ward\n" +
		"  name: Ba Đình\n" +
		"  name_en: Ba Dinh\n" +
		"  parent_code: 01\n" +
		"  unit_type: Phường\n" +
		"  unit_type_en: Ward\n" +
		"  unit_type_full: Phường\n"
	if diff := cmp.Diff(want, out); diff != "" {
		t.Errorf("catalogue lookup output (-want +got):\n%s", diff)
	}
}

func TestRegistryCommandErrors(t *testing.T) {
	o := startRegistry(t)
	g22 := o.signingCert(t, "VN/NN/000.00.00.G22")
	o.ok(t, "member", "add", "--id", "VN/NN/000.00.00.G22", "--name", "VPCP", "--signing-cert", g22)
	nodeCert, nodeKey := o.svid(t, "spiffe://vn.ketnoi/node/NN/000.00.00.G22/node1", "node1")
	closed, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closedAddr := closed.Addr().String()
	closed.Close()
	latin1 := filepath.Join(o.dir, "latin1.csv")
	if err := os.WriteFile(latin1, []byte("code,name\n01,Ha Noi\n02,H\xe0 N\xf4i\n"), 0o644); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name     string
		args     []string
		wantCode int
		wantErr  string
	}{
		{"no subcommand", []string{"member"}, 2, "ketnoi member: missing subcommand"},
		{"unknown subcommand", []string{"grant", "give"}, 2, `ketnoi grant: unknown subcommand "give"`},
		{"missing flag", append([]string{"member", "add", "--id", "VN/NN/000.00.00.G01"}, o.conn...), 2,
			"ketnoi member: --name is required\n"},
		{"missing connection", []string{"subsystem", "add", "--id", "VN/NN/000.00.00.G22/x"}, 2,
			"ketnoi subsystem: --registry is required (or set KETNOI_REGISTRY)\n"},
		{"bad classification", append([]string{"service", "add", "--id", "VN/NN/000.00.00.G09/dvhc/vn.gov.dvhc.v1.AdminUnitService", "--descriptor-set", "f",
			"--description", "d", "--custodian", "c", "--classification", "public"}, o.conn...), 2,
			`ketnoi service: --classification "public": want normal, sensitive, secret or top-secret`},
		{"both CSV sources", append([]string{"catalogue", "import", "--list", "l", "--version", "1", "--title", "t",
			"--provenance", "p", "--csv", "a.csv", "--embedded", dataset.Countries}, o.conn...), 2,
			"ketnoi catalogue: exactly one of --csv and --embedded is required\n"},
		{"lookup without code", append([]string{"catalogue", "lookup", "--list", "l", "--version", "1"}, o.conn...), 2,
			"ketnoi catalogue: missing CODE\n"},
		{"duplicate member", append([]string{"member", "add", "--id", "VN/NN/000.00.00.G22", "--name", "VPCP",
			"--signing-cert", g22}, o.conn...), 1,
			"ketnoi member: member VN/NN/000.00.00.G22 is already registered (AlreadyExists)\n"},
		{"invalid identifier", append([]string{"subsystem", "add", "--id", "VN/NN/000.00.00.G22"}, o.conn...), 2,
			`ketnoi subsystem: --id: malformed identifier: subsystem "VN/NN/000.00.00.G22": ` +
				"want INSTANCE/CLASS/CODE/SUBSYSTEM\n"},
		{"invalid grant client", append([]string{"grant", "add", "--client", "G22", "--service",
			"VN/NN/000.00.00.G09/dvhc/vn.gov.dvhc.v1.AdminUnitService"}, o.conn...), 2,
			`ketnoi grant: --client: malformed identifier: client "G22"`},
		{"unknown grant", append([]string{"grant", "revoke", "--id", "g-7"}, o.conn...), 1,
			"ketnoi grant: grant g-7 does not exist (NotFound)\n"},
		{"unknown code", append([]string{"catalogue", "lookup", "--list", "l", "--version", "1", "X"}, o.conn...), 1,
			"ketnoi catalogue: code list l version 1 does not exist (NotFound)\n"},
		{"node as operator", []string{"subsystem", "add", "--id", "VN/NN/000.00.00.G22/x",
			"--registry", o.addr, "--cert", nodeCert, "--key", nodeKey, "--bundle", o.bundle}, 1,
			"ketnoi subsystem: spiffe://vn.ketnoi/node/NN/000.00.00.G22/node1 may not call " +
				"ketnoi.registry.v1.AdminService: operators only (PermissionDenied)\n"},
		{"registry without a port", []string{"subsystem", "add", "--id", "VN/NN/000.00.00.G22/x",
			"--registry", "nohost", "--cert", nodeCert, "--key", nodeKey, "--bundle", o.bundle}, 2,
			`ketnoi subsystem: --registry "nohost": want the registry's host:port, such as 127.0.0.1:7443` + "\n"},
		{"registry with a port that is not a number", []string{"config", "show",
			"--registry", "127.0.0.1:notaport", "--cert", nodeCert, "--key", nodeKey, "--bundle", o.bundle}, 2,
			`ketnoi config: --registry "127.0.0.1:notaport": want the registry's host:port, such as 127.0.0.1:7443` + "\n"},
		{"other trust domain", append([]string{"config", "show", "--trust-domain", "other.td"}, o.conn...), 2,
			"ketnoi config: --trust-domain other.td: the bundle " + o.bundle + " holds no roots for it, only for vn.ketnoi\n"},
		{"missing certificate", []string{"config", "show", "--registry", o.addr, "--cert", o.dir + "/nope.pem",
			"--key", nodeKey, "--bundle", o.bundle}, 2,
			"ketnoi config: --cert: open " + o.dir + "/nope.pem: no such file or directory\n"},
		{"missing CSV", append([]string{"catalogue", "import", "--list", "l", "--version", "1", "--title", "t",
			"--provenance", "p", "--csv", o.dir + "/nope.csv"}, o.conn...), 2,
			"ketnoi catalogue: --csv: open " + o.dir + "/nope.csv: no such file or directory\n"},
		{"CSV not UTF-8", append([]string{"catalogue", "import", "--list", "l", "--version", "1", "--title", "t",
			"--provenance", "p", "--csv", latin1}, o.conn...), 2,
			"ketnoi catalogue: " + latin1 + ": code 02, column name: the value is not valid UTF-8\n"},
		{"CSV without the key column", append([]string{"catalogue", "import", "--list", "l", "--version", "1",
			"--title", "t", "--provenance", "p", "--csv", latin1, "--key-column", "id"}, o.conn...), 2,
			"ketnoi catalogue: " + latin1 + ": "},
		{"title not UTF-8", append([]string{"catalogue", "import", "--list", "l", "--version", "1", "--title", "\xfft",
			"--provenance", "p", "--csv", latin1}, o.conn...), 2, "ketnoi catalogue: --title is not valid UTF-8\n"},
		{"lookup code not UTF-8", append([]string{"catalogue", "lookup", "--list", "l", "--version", "1", "\xff"},
			o.conn...), 2, "ketnoi catalogue: CODE is not valid UTF-8\n"},
		{"name not UTF-8", append([]string{"member", "add", "--id", "VN/NN/000.00.00.G01", "--name", "B\xf4 N\xf4i",
			"--signing-cert", g22}, o.conn...), 2, "ketnoi member: --name is not valid UTF-8\n"},
		{"name too long", append([]string{"member", "add", "--id", "VN/NN/000.00.00.G01", "--name",
			strings.Repeat("x", 5000), "--signing-cert", o.signingCert(t, "VN/NN/000.00.00.G01")}, o.conn...), 1,
			"ketnoi member: name: has 5000 characters, more than 256 (InvalidArgument)\n"},
		{"subsystem too deep", append([]string{"subsystem", "add", "--id", "VN/NN/000.00.00.G22/a/b"}, o.conn...), 2,
			`ketnoi subsystem: --id: malformed identifier: subsystem "VN/NN/000.00.00.G22/a/b": ` +
				"want INSTANCE/CLASS/CODE/SUBSYSTEM\n"},
		{"registry down", []string{"subsystem", "add", "--id", "VN/NN/000.00.00.G22/x",
			"--registry", closedAddr, "--cert", nodeCert, "--key", nodeKey, "--bundle", o.bundle}, 1,
			"(Unavailable)\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, _, stderr := ketnoi(t, tt.args...)
			if code != tt.wantCode || !strings.Contains(stderr, tt.wantErr) || strings.Count(stderr, "\n") != 1 {
				t.Errorf("exit %d, stderr %q; want exit %d and one line containing %q",
					code, stderr, tt.wantCode, tt.wantErr)
			}
		})
	}
}

func TestConnectionFromEnvironment(t *testing.T) {
	o := startRegistry(t)
	t.Setenv(envRegistry, o.conn[1])
	t.Setenv(envCert, o.conn[3])
	t.Setenv(envKey, o.conn[5])
	t.Setenv(envBundle, o.conn[7])

	code, stdout, stderr := ketnoi(t, "catalogue", "list")
	if code != 0 || stdout != "no code lists\n" {
		t.Errorf("catalogue list with the environment: exit %d, stdout %q, stderr %q", code, stdout, stderr)
	}
}

// The help of a connection flag names its variable as the default, once,
// whether the variable is set or not.
func TestConnectionFlagHelp(t *testing.T) {
	t.Setenv(envBundle, "pki/bundle.pem")
	t.Setenv(envRegistry, "127.0.0.1:7443")
	code, stdout, stderr := ketnoi(t, "member", "add", "-h")
	if code != 0 {
		t.Fatalf("member add -h: exit %d, stderr %q", code, stderr)
	}
	for _, flag := range []string{"registry", "cert", "key", "bundle"} {
		var help string
		lines := strings.Split(stdout, "\n")
		for i, l := range lines {
			if strings.HasPrefix(strings.TrimSpace(l), "-"+flag+" ") && i+1 < len(lines) {
				help = lines[i+1]
			}
		}
		env := map[string]string{"registry": envRegistry, "cert": envCert, "key": envKey, "bundle": envBundle}[flag]
		if strings.Count(help, "(default") != 1 || !strings.Contains(help, "(default $"+env+")") {
			t.Errorf("help of --%s = %q, want one default, $%s", flag, help, env)
		}
	}
}
