package main

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/ketnoi/ketnoi/internal/pki"
	"github.com/ketnoi/ketnoi/internal/sign"
)

// certs runs "ketnoi certs ARGS..." and returns its stdout.
func certs(t *testing.T, args ...string) (string, error) {
	t.Helper()
	var out bytes.Buffer
	err := runCerts(t.Context(), args, &out)
	return out.String(), err
}

// initCA creates a CA with the CLI in a new temporary directory.
func initCA(t *testing.T) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "pki")
	if _, err := certs(t, "init", "--dir", dir); err != nil {
		t.Fatalf("certs init: %v", err)
	}
	return dir
}

// wroteFiles returns the paths of the "wrote PATH: ..." lines of out.
func wroteFiles(out string) []string {
	var paths []string
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		path, _, _ := strings.Cut(strings.TrimPrefix(line, "wrote "), ": ")
		paths = append(paths, path)
	}
	return paths
}

func TestCertsInit(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "pki")
	out, err := certs(t, "init", "--dir", dir, "--trust-domain", "test.ketnoi", "--ttl", "48h")
	if err != nil {
		t.Fatalf("certs init: %v", err)
	}
	want := []string{
		filepath.Join(dir, "ca.pem"),
		filepath.Join(dir, "ca-key.pem"),
		filepath.Join(dir, "bundle.pem"),
	}
	if diff := cmp.Diff(want, wroteFiles(out)); diff != "" {
		t.Errorf("files reported (-want +got):\n%s\noutput:\n%s", diff, out)
	}
	if !strings.Contains(out, "CA spiffe://test.ketnoi, expires ") {
		t.Errorf("output does not name the CA and its expiry:\n%s", out)
	}

	ca, err := pki.LoadCA(dir)
	if err != nil {
		t.Fatalf("LoadCA: %v", err)
	}
	if got := ca.TrustDomain.Name(); got != "test.ketnoi" {
		t.Errorf("trust domain = %q, want test.ketnoi", got)
	}
	if life := time.Until(ca.Cert.NotAfter); life < 47*time.Hour || life > 48*time.Hour {
		t.Errorf("CA expires in %v, want about 48h", life)
	}
	if !strings.Contains(out, ca.Cert.NotAfter.UTC().Format(time.RFC3339)) {
		t.Errorf("output does not show the CA's expiry %v:\n%s", ca.Cert.NotAfter, out)
	}
}

func TestCertsInitRefusesOverwrite(t *testing.T) {
	dir := initCA(t)
	before, err := pki.LoadCA(dir)
	if err != nil {
		t.Fatal(err)
	}

	out, err := certs(t, "init", "--dir", dir)
	if err == nil || !strings.Contains(err.Error(), "--force") {
		t.Fatalf("second init error = %v, want one pointing to --force", err)
	}
	var ue usageError
	if errors.As(err, &ue) {
		t.Errorf("existing CA reported as a usage error; want an operation error (exit 1)")
	}
	if out != "" {
		t.Errorf("refused init printed %q, want nothing", out)
	}
	same, err := pki.LoadCA(dir)
	if err != nil {
		t.Fatal(err)
	}
	if !same.Cert.Equal(before.Cert) {
		t.Errorf("refused init replaced the CA")
	}

	if _, err := certs(t, "init", "--dir", dir, "--force"); err != nil {
		t.Fatalf("init --force: %v", err)
	}
	after, err := pki.LoadCA(dir)
	if err != nil {
		t.Fatal(err)
	}
	if after.Cert.Equal(before.Cert) {
		t.Errorf("init --force kept the old CA")
	}
}

func TestCertsSVID(t *testing.T) {
	dir := initCA(t)
	const sid = "spiffe://vn.ketnoi/node/NN/000.00.00.G22/ss1"
	out, err := certs(t, "svid", "--dir", dir, "--id", sid, "--name", "ss1", "--ttl", "2h")
	if err != nil {
		t.Fatalf("certs svid: %v", err)
	}
	certFile, keyFile := filepath.Join(dir, "ss1.pem"), filepath.Join(dir, "ss1-key.pem")
	if diff := cmp.Diff([]string{certFile, keyFile}, wroteFiles(out)); diff != "" {
		t.Errorf("files reported (-want +got):\n%s\noutput:\n%s", diff, out)
	}
	if !strings.Contains(out, "SVID "+sid+", expires ") {
		t.Errorf("output does not name the SVID and its expiry:\n%s", out)
	}

	svid, err := x509svid.Load(certFile, keyFile)
	if err != nil {
		t.Fatalf("x509svid.Load: %v", err)
	}
	td := spiffeid.RequireTrustDomainFromString("vn.ketnoi")
	bundle, err := x509bundle.Load(td, filepath.Join(dir, "bundle.pem"))
	if err != nil {
		t.Fatal(err)
	}
	got, _, err := x509svid.Verify(svid.Certificates, bundle)
	if err != nil {
		t.Fatalf("x509svid.Verify: %v", err)
	}
	if got.String() != sid {
		t.Errorf("SVID ID = %s, want %s", got, sid)
	}
	life := time.Until(svid.Certificates[0].NotAfter)
	if life < time.Hour+59*time.Minute || life > 2*time.Hour {
		t.Errorf("SVID expires in %v, want about 2h", life)
	}
	fi, err := os.Stat(keyFile)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("key file mode = %v, want 0600", fi.Mode().Perm())
	}
}

func TestCertsSigning(t *testing.T) {
	dir := initCA(t)
	ca, err := pki.LoadCA(dir)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		args    []string
		wantURI string
	}{
		{"member", []string{"--member", "VN/NN/000.00.00.G22"}, "urn:ketnoi:member:VN/NN/000.00.00.G22"},
		{"registry", []string{"--registry"}, "urn:ketnoi:registry"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			args := append([]string{"signing", "--dir", dir, "--name", tt.name + "-sign"}, tt.args...)
			out, err := certs(t, args...)
			if err != nil {
				t.Fatalf("certs signing: %v", err)
			}
			certFile := filepath.Join(dir, tt.name+"-sign.pem")
			keyFile := filepath.Join(dir, tt.name+"-sign-key.pem")
			if diff := cmp.Diff([]string{certFile, keyFile}, wroteFiles(out)); diff != "" {
				t.Errorf("files reported (-want +got):\n%s\noutput:\n%s", diff, out)
			}
			// The default two years exceed the default one-year CA.
			if !strings.Contains(out, tt.wantURI+", expires ") ||
				!strings.Contains(out, "limited by the CA's expiry") {
				t.Errorf("output does not name %s and its CA-limited expiry:\n%s", tt.wantURI, out)
			}

			signer, err := sign.LoadSigner(certFile, keyFile)
			if err != nil {
				t.Fatalf("sign.LoadSigner: %v", err)
			}
			cert := signer.Certificate()
			if len(cert.URIs) != 1 || cert.URIs[0].String() != tt.wantURI {
				t.Errorf("URI SANs = %v, want [%s]", cert.URIs, tt.wantURI)
			}
			if err := sign.VerifyCertificate(cert, nil, ca.Pool(), time.Now()); err != nil {
				t.Errorf("VerifyCertificate: %v", err)
			}
		})
	}
}

func TestCertsBadInput(t *testing.T) {
	dir := initCA(t)
	const node = "spiffe://vn.ketnoi/node/NN/000.00.00.G22/ss1"
	svid := func(spiffeID, name string) []string {
		return []string{"svid", "--dir", dir, "--id", spiffeID, "--name", name}
	}
	signing := func(extra ...string) []string {
		return append([]string{"signing", "--dir", dir, "--name", "s"}, extra...)
	}
	tests := []struct {
		name string
		args []string
		want string // in the error
	}{
		{"no subcommand", nil, "missing subcommand"},
		{"unknown subcommand", []string{"renew"}, `unknown subcommand "renew"`},
		{"unknown flag", []string{"init", "--dir", dir, "--bogus"}, "bogus"},
		{"stray argument", []string{"init", "--dir", dir, "extra"}, `unexpected argument "extra"`},
		{"init without dir", []string{"init"}, "--dir is required"},
		{"bad trust domain", []string{"init", "--dir", dir, "--trust-domain", "VN KETNOI"}, "--trust-domain"},
		{"negative ttl", []string{"init", "--dir", dir, "--ttl", "-1h", "--force"}, "must be positive"},
		{"svid without id", []string{"svid", "--dir", dir, "--name", "x"}, "--id is required"},
		{"svid not a SPIFFE ID", svid("vn.ketnoi/registry", "x"), "--id"},
		{"svid bad member code", svid("spiffe://vn.ketnoi/node/NN/g22/ss1", "x"), "member code"},
		{"svid unknown kind", svid("spiffe://vn.ketnoi/printer/1", "x"), "want a path of"},
		{"svid root ID", svid("spiffe://vn.ketnoi", "x"), "want a path of"},
		{"svid other trust domain", svid("spiffe://other.ketnoi/registry", "x"), "not in the CA's trust domain"},
		{"name overwriting CA", svid(node, "ca"), "would overwrite the CA file ca.pem"},
		{"name overwriting bundle", svid(node, "bundle"), "would overwrite the CA file bundle.pem"},
		{"name ending in -key", svid(node, "ss1-key"), "must not end in -key"},
		{"name with a path", svid(node, "../ss1"), "--name"},
		{"signing both", signing("--registry", "--member", "VN/NN/000.00.00.G22"), "exclude each other"},
		{"signing neither", signing(), "one of --member or --registry"},
		{"signing bad member", signing("--member", "VN/NN"), "--member"},
		{"signing member of an unknown class", signing("--member", "VN/XX/1"),
			`--member VN/XX/1: member class "XX" is not one of DANG, NN, MTTQ (see --classes)`},
		{"signing member of a class left out", signing("--member", "VN/NN/000.00.00.G22", "--classes", "DANG"),
			`member class "NN" is not one of DANG (see --classes)`},
		{"signing empty class", signing("--member", "VN/NN/000.00.00.G22", "--classes", "NN,"),
			`--classes "NN,": empty class`},
		{"svid node of an unknown class", svid("spiffe://vn.ketnoi/node/XX/000.00.00.G22/ss1", "x"),
			`--id: member class "XX" is not one of DANG, NN, MTTQ (see --classes)`},
		{"svid app of an unknown class", svid("spiffe://vn.ketnoi/app/XX/000.00.00.G22/vanban", "x"),
			`--id: member class "XX" is not one of`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := dirListing(t, dir)
			out, err := certs(t, tt.args...)
			var ue usageError
			if !errors.As(err, &ue) {
				t.Fatalf("error = %v, want a usage error", err)
			}
			if !strings.Contains(err.Error(), tt.want) || strings.Contains(err.Error(), "\n") {
				t.Errorf("error %q: want one line containing %q", err, tt.want)
			}
			if out != "" {
				t.Errorf("printed %q, want nothing", out)
			}
			if diff := cmp.Diff(before, dirListing(t, dir)); diff != "" {
				t.Errorf("bad input changed the directory (-before +after):\n%s", diff)
			}
		})
	}
}

func TestCertsWithoutCA(t *testing.T) {
	dir := t.TempDir()
	_, err := certs(t, "svid", "--dir", dir, "--id", "spiffe://vn.ketnoi/registry", "--name", "registry")
	if err == nil {
		t.Fatalf("svid without a CA succeeded")
	}
	var ue usageError
	if errors.As(err, &ue) {
		t.Errorf("missing CA reported as a usage error: %v", err)
	}
	if !strings.Contains(err.Error(), "ca.pem") {
		t.Errorf("error %q does not name the missing ca.pem", err)
	}
}

// TestCertsExitCodes checks what a user sees through the CLI entry point.
func TestCertsExitCodes(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "pki")
	tests := []struct {
		name     string
		args     []string
		wantCode int
	}{
		{"init", []string{"certs", "init", "--dir", dir}, 0},
		{"init again", []string{"certs", "init", "--dir", dir}, 1},
		{"bad id", []string{"certs", "svid", "--dir", dir, "--id", "spiffe://vn.ketnoi/node/x", "--name", "n"},
			2},
		{"help", []string{"certs", "svid", "-h"}, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			code := run(t.Context(), tt.args, &stdout, &stderr)
			if code != tt.wantCode {
				t.Errorf("exit code = %d, want %d (stderr %q)", code, tt.wantCode, stderr.String())
			}
			if tt.wantCode != 0 {
				msg := stderr.String()
				if !strings.HasPrefix(msg, "ketnoi certs: ") || strings.Count(msg, "\n") != 1 {
					t.Errorf("stderr = %q, want one line starting with \"ketnoi certs: \"", msg)
				}
			}
		})
	}
}

func dirListing(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}

// svid and signing refuse to replace the files of an earlier certificate,
// whose key may be in use, unless given --force; other classes than the
// default ones are accepted when --classes names them.
func TestCertsRefuseOverwrite(t *testing.T) {
	dir := initCA(t)
	const node = "spiffe://vn.ketnoi/node/NN/000.00.00.G22/ss1"
	certFile, keyFile := filepath.Join(dir, "ss1.pem"), filepath.Join(dir, "ss1-key.pem")
	for _, args := range [][]string{
		{"svid", "--dir", dir, "--id", node, "--name", "ss1"},
		{"signing", "--dir", dir, "--member", "VN/NN/000.00.00.G22", "--name", "ss1"},
	} {
		t.Run(args[0], func(t *testing.T) {
			if err := os.Remove(certFile); err != nil && !errors.Is(err, os.ErrNotExist) {
				t.Fatal(err)
			}
			if err := os.Remove(keyFile); err != nil && !errors.Is(err, os.ErrNotExist) {
				t.Fatal(err)
			}
			if _, err := certs(t, args...); err != nil {
				t.Fatalf("first issue: %v", err)
			}
			key, err := os.ReadFile(keyFile)
			if err != nil {
				t.Fatal(err)
			}

			var stdout, stderr bytes.Buffer
			code := run(t.Context(), append([]string{"certs"}, args...), &stdout, &stderr)
			want := "ketnoi certs: " + certFile + ": file already exists (use --force to replace " +
				certFile + " and " + keyFile + ")\n"
			if code != 1 || stderr.String() != want || stdout.Len() != 0 {
				t.Errorf("second issue: exit %d, stdout %q, stderr %q; want 1, nothing, %q",
					code, stdout.String(), stderr.String(), want)
			}
			if again, _ := os.ReadFile(keyFile); !bytes.Equal(again, key) {
				t.Error("the refused issue replaced the key")
			}

			if _, err := certs(t, append(args, "--force")...); err != nil {
				t.Fatalf("issue with --force: %v", err)
			}
			if again, _ := os.ReadFile(keyFile); bytes.Equal(again, key) {
				t.Error("issue with --force kept the old key")
			}
		})
	}

	if _, err := certs(t, "signing", "--dir", dir, "--member", "VN/XX/000.00.00.G22", "--name", "xx",
		"--classes", "NN,XX"); err != nil {
		t.Errorf("signing for a class --classes names: %v", err)
	}
}
