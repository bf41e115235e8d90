package main

import (
	"bytes"
	"context"
	"io"
	"math"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	bolt "go.etcd.io/bbolt"
	"google.golang.org/grpc"

	"github.com/ketnoi/ketnoi/internal/gconf"
	"github.com/ketnoi/ketnoi/internal/id"
	"github.com/ketnoi/ketnoi/internal/logging/logtest"
	"github.com/ketnoi/ketnoi/internal/mtls"
	"github.com/ketnoi/ketnoi/internal/pki"
	"github.com/ketnoi/ketnoi/internal/pki/pkitest"
	"github.com/ketnoi/ketnoi/internal/ready"
	registryv1 "github.com/ketnoi/ketnoi/proto/ketnoi/registry/v1"
)

var td = spiffeid.RequireTrustDomainFromString("vn.ketnoi")

// files holds PEM files for a registry and one node.
type files struct {
	dir                       string
	bundle, svidCert, svidKey string
	signingCert, signingKey   string
	nodeCert, nodeKey         string
}

// writeFiles issues the registry's SVID and signing certificate and a node
// SVID from a fresh CA and writes them as PEM files.
func writeFiles(t *testing.T, ca *pki.CA) files {
	t.Helper()
	dir := t.TempDir()
	f := files{
		dir:         dir,
		bundle:      filepath.Join(dir, "bundle.pem"),
		svidCert:    filepath.Join(dir, "registry.pem"),
		svidKey:     filepath.Join(dir, "registry-key.pem"),
		signingCert: filepath.Join(dir, "signing.pem"),
		signingKey:  filepath.Join(dir, "signing-key.pem"),
		nodeCert:    filepath.Join(dir, "node.pem"),
		nodeKey:     filepath.Join(dir, "node-key.pem"),
	}
	if err := os.WriteFile(f.bundle, ca.BundlePEM(), 0o644); err != nil {
		t.Fatal(err)
	}
	svid, err := ca.IssueSVID(id.Registry(td), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if err := svid.Write(f.svidCert, f.svidKey); err != nil {
		t.Fatal(err)
	}
	u, _ := url.Parse(id.RegistrySigningURI)
	signing, err := ca.IssueSigning(u, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if err := signing.Write(f.signingCert, f.signingKey); err != nil {
		t.Fatal(err)
	}
	node, err := ca.IssueSVID(spiffeid.RequireFromString("spiffe://vn.ketnoi/node/NN/000.00.00.G22/node1"), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if err := node.Write(f.nodeCert, f.nodeKey); err != nil {
		t.Fatal(err)
	}
	return f
}

func (f files) args(extra ...string) []string {
	return append([]string{
		"--listen", "127.0.0.1:0",
		"--data", filepath.Join(f.dir, "registry.db"),
		"--svid-cert", f.svidCert, "--svid-key", f.svidKey, "--bundle", f.bundle,
		"--signing-cert", f.signingCert, "--signing-key", f.signingKey,
	}, extra...)
}

func TestServesAndStops(t *testing.T) {
	ca := pkitest.NewCA(t, "vn.ketnoi").PKI()
	f := writeFiles(t, ca)
	readyFile := filepath.Join(f.dir, "ready.json")
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()

	runCtx, stop := context.WithCancel(ctx)
	exit := make(chan int, 1)
	var stderr bytes.Buffer
	go func() { exit <- cli(runCtx, f.args("--ready-file", readyFile), &stderr) }()

	addrs, err := ready.Wait(ctx, readyFile)
	if err != nil {
		stop()
		t.Fatalf("ready file: %v (exit %d, stderr %s)", err, <-exit, stderr.String())
	}
	identity, err := mtls.LoadFiles(f.nodeCert, f.nodeKey, f.bundle, td)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := grpc.NewClient(addrs["grpc"],
		grpc.WithTransportCredentials(mtls.ClientCredentials(identity, tlsconfig.AuthorizeID(id.Registry(td)))))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	resp, err := registryv1.NewRegistryServiceClient(conn).GetConfiguration(ctx, &registryv1.GetConfigurationRequest{})
	if err != nil {
		t.Fatalf("GetConfiguration: %v", err)
	}
	c, err := gconf.Verify(resp.GetConfiguration(), ca.Pool(), time.Now())
	if err != nil {
		t.Fatalf("configuration does not verify: %v", err)
	}
	if c.GetVersion() != 1 || c.GetInstance() != "VN" || c.GetTrustDomain() != "vn.ketnoi" {
		t.Errorf("configuration = version %d, instance %q, trust domain %q; want 1, VN, vn.ketnoi",
			c.GetVersion(), c.GetInstance(), c.GetTrustDomain())
	}

	stop()
	if code := <-exit; code != 0 {
		t.Errorf("exit code after stop = %d, want 0 (stderr %s)", code, stderr.String())
	}
}

func TestCommandLineErrors(t *testing.T) {
	ca := pkitest.NewCA(t, "vn.ketnoi").PKI()
	f := writeFiles(t, ca)
	tests := []struct {
		name     string
		args     []string
		wantCode int
		wantErr  string
	}{
		{"missing data", []string{"--svid-cert", "x"}, 2, "--data is required"},
		{"bad trust domain", f.args("--trust-domain", "Bad Domain"), 2, `--trust-domain "Bad Domain"`},
		{"empty class", f.args("--classes", "NN,,DANG"), 2, `--classes "NN,,DANG": empty class`},
		{"short TTL", f.args("--config-ttl", "10s"), 2, "--config-ttl 10s: want at least 1m and at most 720h (30 days)"},
		{"long TTL", f.args("--config-ttl", "1000000h"), 2,
			"ketnoi-registry: --config-ttl 1000000h0m0s: want at least 1m and at most 720h (30 days)\n"},
		{"TTL a second over a month", f.args("--config-ttl", "720h1s"), 2, "--config-ttl 720h0m1s: want at least 1m"},
		{"stray argument", f.args("serve"), 2, `unexpected argument "serve"`},
		{"negative resume-above", f.args("--resume-above", "-1"), 2,
			`ketnoi-registry: invalid value "-1" for flag -resume-above: want a configuration version, ` +
				"a whole number from 0 to 18446744069414584319\n"},
		// Fewer than 2^32 versions left above it.
		{"huge resume-above", f.args("--resume-above", "18446744069414584320"), 2,
			`ketnoi-registry: invalid value "18446744069414584320" for flag -resume-above: want at most ` +
				"18446744069414584319: a higher version leaves fewer than 2^32 versions to publish\n"},
		{"last resume-above", f.args("--resume-above", "18446744073709551615"), 2,
			`ketnoi-registry: invalid value "18446744073709551615" for flag -resume-above: want at most ` +
				"18446744069414584319: a higher version leaves fewer than 2^32 versions to publish\n"},
		{"unknown flag", f.args("--resume", "3"), 2, "ketnoi-registry: flag provided but not defined: -resume\n"},
		{"flag without value", f.args("--config-ttl"), 2, "ketnoi-registry: flag needs an argument: -config-ttl\n"},
		{"bad duration", f.args("--config-ttl", "soon"), 2, `ketnoi-registry: invalid value "soon" for flag -config-ttl`},
		{"bad log level", f.args("--log-level", "loud"), 2, `log level "loud"`},
		{"lower-case instance", f.args("--instance", "vn"), 2,
			`ketnoi-registry: --instance: instance "vn": want 1-16 of A-Z 0-9 - starting with a letter` + "\n"},
		{"lower-case class", f.args("--classes", "NN,nn"), 2,
			`ketnoi-registry: --classes "NN,nn": member class "nn": want 1-16 of A-Z 0-9 starting with a letter` + "\n"},
		// Refused before the state file is opened: one line, no log.
		{"listen without port", f.args("--listen", "nohost"), 2,
			`ketnoi-registry: --listen "nohost": want host:port with a port from 0 to 65535, such as 127.0.0.1:7443` + "\n"},
		{"listen with bad port", f.args("--listen", "127.0.0.1:notaport"), 2, `--listen "127.0.0.1:notaport"`},
		{"listen with port too high", f.args("--listen", "127.0.0.1:65536"), 2, `--listen "127.0.0.1:65536"`},
		{"node SVID as registry", f.args("--svid-cert", f.nodeCert, "--svid-key", f.nodeKey), 1,
			"is for spiffe://vn.ketnoi/node/NN/000.00.00.G22/node1, want spiffe://vn.ketnoi/registry"},
		{"SVID as signing key", f.args("--signing-cert", f.svidCert, "--signing-key", f.svidKey), 1,
			"signing certificate: want the single URI SAN urn:ketnoi:registry"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stderr bytes.Buffer
			code := cli(t.Context(), tt.args, &stderr)
			if code != tt.wantCode || !strings.Contains(stderr.String(), tt.wantErr) ||
				strings.Count(stderr.String(), "\n") != 1 {
				t.Errorf("exit %d, stderr %q; want exit %d and one line with %q",
					code, stderr.String(), tt.wantCode, tt.wantErr)
			}
		})
	}
	if _, err := os.Stat(filepath.Join(f.dir, "registry.db")); err == nil {
		t.Error("a refused command line created the state file")
	}
}

// A node's bbolt file given as --data is refused at start with one line,
// and nothing is written to it.
func TestForeignStateFileRefused(t *testing.T) {
	f := writeFiles(t, pkitest.NewCA(t, "vn.ketnoi").PKI())
	data := filepath.Join(f.dir, "state.db")
	db, err := bolt.Open(data, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		_, err := tx.CreateBucket([]byte("node"))
		return err
	})
	if cerr := db.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		t.Fatal(err)
	}
	before, err := os.ReadFile(data)
	if err != nil {
		t.Fatal(err)
	}

	var stderr bytes.Buffer
	code := cli(t.Context(), f.args("--data", data), &stderr)
	want := "ketnoi-registry: registry: " + data + ` is not a registry state file: ` +
		`a bbolt file of another program (buckets "node"); use another --data file` + "\n"
	if code != 1 || stderr.String() != want {
		t.Errorf("start on a node's state.db: exit %d, stderr %q; want 1, %q", code, stderr.String(), want)
	}
	if after, err := os.ReadFile(data); err != nil || !bytes.Equal(before, after) {
		t.Errorf("the refused file changed (%v)", err)
	}
}

// The highest --resume-above accepted leaves 2^32 versions to publish.
func TestResumeAboveLimit(t *testing.T) {
	f := writeFiles(t, pkitest.NewCA(t, "vn.ketnoi").PKI())
	cfg, err := parseFlags(f.args("--resume-above", "18446744069414584319"), io.Discard)
	if err != nil || cfg.resumeAbove != math.MaxUint64-1<<32 {
		t.Errorf("--resume-above 18446744069414584319: %v, resume above %d", err, cfg.resumeAbove)
	}
}

// -h prints the usage, naming every flag, and succeeds.
func TestHelp(t *testing.T) {
	var stderr bytes.Buffer
	if code := cli(t.Context(), []string{"-h"}, &stderr); code != 0 {
		t.Errorf("-h: exit %d, want 0", code)
	}
	for _, want := range []string{"Usage of ketnoi-registry:", "-resume-above version", "-data file"} {
		if !strings.Contains(stderr.String(), want) {
			t.Errorf("-h output lacks %q:\n%s", want, stderr.String())
		}
	}
}

// TestLogsRefusedHandshake connects with an SVID of another CA: the client
// sees only a broken connection, so the registry's log must say who was
// refused and why.
func TestLogsRefusedHandshake(t *testing.T) {
	ca := pkitest.NewCA(t, "vn.ketnoi").PKI()
	f := writeFiles(t, ca)
	rogue := writeFiles(t, pkitest.NewCA(t, "vn.ketnoi").PKI())
	readyFile := filepath.Join(f.dir, "ready.json")
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()

	runCtx, stop := context.WithCancel(ctx)
	exit := make(chan int, 1)
	var stderr logtest.Buffer
	go func() { exit <- cli(runCtx, f.args("--ready-file", readyFile), &stderr) }()
	defer func() {
		stop()
		<-exit
	}()
	addrs, err := ready.Wait(ctx, readyFile)
	if err != nil {
		t.Fatalf("ready file: %v (stderr %s)", err, stderr.String())
	}

	identity, err := mtls.LoadFiles(rogue.nodeCert, rogue.nodeKey, f.bundle, td)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := grpc.NewClient(addrs["grpc"],
		grpc.WithTransportCredentials(mtls.ClientCredentials(identity, tlsconfig.AuthorizeID(id.Registry(td)))))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := registryv1.NewRegistryServiceClient(conn).GetConfiguration(ctx, &registryv1.GetConfigurationRequest{}); err == nil {
		t.Fatal("registry answered a client with a foreign certificate")
	}

	want := []string{
		"level=WARN", `msg="TLS handshake failed"`, "remote_address=127.0.0.1:",
		"peer=spiffe://vn.ketnoi/node/NN/000.00.00.G22/node1",
		`reason="certificate signed by an unknown authority"`,
	}
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(stderr.String(), "TLS handshake failed") && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	log := stderr.String()
	for _, w := range want {
		if !strings.Contains(log, w) {
			t.Errorf("registry log lacks %s:\n%s", w, log)
		}
	}
}

// A state file cut short, as a restore from a truncated copy leaves it,
// ends the registry with one line naming the file as damaged, not a
// panic; so does --resume-above on a state file that holds nothing.
func TestStateFileRefused(t *testing.T) {
	ca := pkitest.NewCA(t, "vn.ketnoi").PKI()
	f := writeFiles(t, ca)
	data := filepath.Join(f.dir, "registry.db")

	var stderr bytes.Buffer
	if code := cli(t.Context(), f.args("--resume-above", "7"), &stderr); code != 1 ||
		stderr.String() != "ketnoi-registry: registry: --resume-above is for a restored state file, but "+
			data+" holds no configuration: restore the backup to it first\n" {
		t.Errorf("--resume-above on a missing state file: exit %d, stderr %q", code, stderr.String())
	}

	// A state file of the registry's: it publishes version 1 on the way.
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	readyFile := filepath.Join(f.dir, "ready.json")
	runCtx, stop := context.WithCancel(ctx)
	exit := make(chan int, 1)
	go func() { exit <- cli(runCtx, f.args("--ready-file", readyFile), io.Discard) }()
	_, err := ready.Wait(ctx, readyFile)
	stop()
	if code := <-exit; err != nil || code != 0 {
		t.Fatalf("first start: %v, exit %d", err, code)
	}
	if err := os.Truncate(data, 3*4096); err != nil {
		t.Fatal(err)
	}

	stderr.Reset()
	code := cli(t.Context(), f.args(), &stderr)
	if want := "ketnoi-registry: registry: state file " + data + " is damaged: "; code != 1 ||
		!strings.HasPrefix(stderr.String(), want) || strings.Count(stderr.String(), "\n") != 1 {
		t.Errorf("start on a truncated state file: exit %d, stderr %q; want 1 and one line %q...", code, stderr.String(), want)
	}
}

// A state file holding registrations of another instance is refused at
// start with one line naming both instances, instead of publishing them
// under the wrong one.
func TestStateOfAnotherInstanceRefused(t *testing.T) {
	ca := pkitest.NewCA(t, "vn.ketnoi").PKI()
	f := writeFiles(t, ca)
	readyFile := filepath.Join(f.dir, "ready.json")
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()

	runCtx, stop := context.WithCancel(ctx)
	exit := make(chan int, 1)
	go func() { exit <- cli(runCtx, f.args("--ready-file", readyFile), io.Discard) }()
	addrs, err := ready.Wait(ctx, readyFile)
	if err != nil {
		stop()
		t.Fatalf("ready file: %v (exit %d)", err, <-exit)
	}
	err = addMember(ctx, ca, f, addrs["grpc"], "VN/NN/000.00.00.G22")
	stop()
	if code := <-exit; err != nil || code != 0 {
		t.Fatalf("registering a member: %v, exit %d", err, code)
	}

	var stderr bytes.Buffer
	code := cli(t.Context(), f.args("--instance", "XX"), &stderr)
	want := "ketnoi-registry: registry: state file " + filepath.Join(f.dir, "registry.db") +
		` holds registrations of instance "VN" (member VN/NN/000.00.00.G22), not of this registry's instance "XX": ` +
		"start with --instance VN, or use another state file\n"
	if code != 1 || stderr.String() != want {
		t.Errorf("start with --instance XX: exit %d, stderr %q; want 1, %q", code, stderr.String(), want)
	}
}

// addMember registers member m with the registry at addr as an operator.
func addMember(ctx context.Context, ca *pki.CA, f files, addr, member string) error {
	admin, err := ca.IssueSVID(spiffeid.RequireFromString("spiffe://vn.ketnoi/admin/alice"), time.Hour)
	if err != nil {
		return err
	}
	m, err := id.ParseMember(member)
	if err != nil {
		return err
	}
	signing, err := ca.IssueSigning(id.MemberURI(m), time.Hour)
	if err != nil {
		return err
	}
	cert, key := filepath.Join(f.dir, "alice.pem"), filepath.Join(f.dir, "alice-key.pem")
	if err := admin.Write(cert, key); err != nil {
		return err
	}
	identity, err := mtls.LoadFiles(cert, key, f.bundle, td)
	if err != nil {
		return err
	}
	conn, err := grpc.NewClient(addr,
		grpc.WithTransportCredentials(mtls.ClientCredentials(identity, tlsconfig.AuthorizeID(id.Registry(td)))))
	if err != nil {
		return err
	}
	defer conn.Close()
	_, err = registryv1.NewAdminServiceClient(conn).AddMember(ctx, &registryv1.AddMemberRequest{
		MemberId: member, Name: "member " + member, SigningCertificate: signing.Cert.Raw,
	})
	return err
}
