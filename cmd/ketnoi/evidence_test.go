package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/binary"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	bolt "go.etcd.io/bbolt"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/ketnoi/ketnoi/internal/evidence"
	"github.com/ketnoi/ketnoi/internal/sign"
	evidencev1 "github.com/ketnoi/ketnoi/proto/ketnoi/evidence/v1"
	exchangev1 "github.com/ketnoi/ketnoi/proto/ketnoi/exchange/v1"
	registryv1 "github.com/ketnoi/ketnoi/proto/ketnoi/registry/v1"
)

const (
	evTestNode   = "spiffe://vn.ketnoi/node/NN/000.00.00.G22/node1"
	evTestPeer   = "spiffe://vn.ketnoi/node/NN/000.00.00.G09/node1"
	evTestMember = "spiffe://vn.ketnoi/member/NN/000.00.00.G22"
)

// evidenceFixture is a closed evidence log with three records: a request
// and its response for message m-1, and a refusal of message m-2.
type evidenceFixture struct {
	path, bundle string
	certSum      []byte
	size         uint64
	root         [32]byte
}

func newEvidenceFixture(t *testing.T) evidenceFixture {
	t.Helper()
	dir := t.TempDir()
	caKey, caCert := evTestCert(t, nil, nil, "")
	key, cert := evTestCert(t, caKey, caCert, evTestMember)
	s, err := sign.NewSigner(key, cert)
	if err != nil {
		t.Fatalf("NewSigner: %v", err)
	}
	bundle := filepath.Join(dir, "ca.pem")
	caPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caCert.Raw})
	if err := os.WriteFile(bundle, caPEM, 0o600); err != nil {
		t.Fatalf("write bundle: %v", err)
	}

	path := filepath.Join(dir, "evidence.db")
	l, err := evidence.Open(path, evidence.Options{Node: evTestNode})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	created := time.Date(2026, 12, 4, 9, 30, 0, 123_000_000, time.UTC)
	payloadSum := sha256.Sum256([]byte("request"))
	req := &exchangev1.Header{
		ProtocolVersion:         1,
		MessageId:               "m-1",
		Direction:               exchangev1.Direction_DIRECTION_REQUEST,
		CallKind:                exchangev1.CallKind_CALL_KIND_UNARY,
		Client:                  "VN/NN/000.00.00.G22/vanban",
		Service:                 "VN/NN/000.00.00.G09/dvhc/vn.gov.dvhc.v1.AdminUnitService",
		Method:                  "GetUnit",
		Purpose:                 "QLHC",
		User:                    "nguyen.van.a",
		Issue:                   "HS-2026-001",
		Classification:          registryv1.Classification_CLASSIFICATION_SENSITIVE,
		CreatedAt:               timestamppb.New(created),
		HasMessage:              true,
		PayloadSha256:           payloadSum[:],
		PayloadLength:           7,
		SignerCertificateSha256: s.CertificateSHA256(),
	}
	resp := proto.Clone(req).(*exchangev1.Header)
	resp.Direction = exchangev1.Direction_DIRECTION_RESPONSE
	resp.Final = true
	resp.HasMessage, resp.PayloadSha256, resp.PayloadLength = false, nil, 0
	resp.RequestDigest = bytes.Repeat([]byte{0xab}, 32)
	resp.PreviousDigest = bytes.Repeat([]byte{0xcd}, 32)
	resp.Status = &exchangev1.CallStatus{Code: int32(codes.NotFound), Message: "no such unit"}

	recs := []*evidencev1.Record{
		evTestRecord(t, s, req, evidencev1.RecordKind_RECORD_KIND_REQUEST_SENT, created),
		evTestRecord(t, s, resp, evidencev1.RecordKind_RECORD_KIND_RESPONSE_RECEIVED,
			created.Add(5*time.Millisecond)),
		{
			Kind:       evidencev1.RecordKind_RECORD_KIND_REFUSED,
			RecordedAt: timestamppb.New(created.Add(time.Second)),
			MessageId:  "m-2",
			Node:       evTestNode,
			Peer:       evTestPeer,
			Header:     []byte{0xff},
			Code:       int32(codes.Unauthenticated),
			Reason:     "header does not parse",
		},
	}
	for i, rec := range recs {
		if _, err := l.Append(context.Background(), rec, cert.Raw); err != nil {
			t.Fatalf("Append %d: %v", i, err)
		}
	}
	size, root := l.TreeHead()
	if err := l.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	return evidenceFixture{path: path, bundle: bundle, certSum: s.CertificateSHA256(), size: size, root: root}
}

// evTestCert issues a P-256 certificate: a CA when parent is nil, else a
// signing certificate with URI SAN uri.
func evTestCert(
	t *testing.T,
	parentKey *ecdsa.PrivateKey,
	parent *x509.Certificate,
	uri string,
) (*ecdsa.PrivateKey, *x509.Certificate) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatalf("generate key: %v", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: "ketnoi test"},
		NotBefore:    time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC),
		NotAfter:     time.Date(2027, 1, 1, 0, 0, 0, 0, time.UTC),
		KeyUsage:     x509.KeyUsageDigitalSignature,
	}
	if parent == nil {
		tmpl.IsCA, tmpl.BasicConstraintsValid = true, true
		tmpl.KeyUsage = x509.KeyUsageCertSign
		parent, parentKey = tmpl, key
	} else {
		u, err := url.Parse(uri)
		if err != nil {
			t.Fatalf("parse URI: %v", err)
		}
		tmpl.URIs = []*url.URL{u}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, key.Public(), parentKey)
	if err != nil {
		t.Fatalf("create certificate: %v", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatalf("parse certificate: %v", err)
	}
	return key, cert
}

func evTestRecord(
	t *testing.T,
	s *sign.Signer,
	h *exchangev1.Header,
	kind evidencev1.RecordKind,
	at time.Time,
) *evidencev1.Record {
	t.Helper()
	hb, err := proto.MarshalOptions{Deterministic: true}.Marshal(h)
	if err != nil {
		t.Fatalf("marshal header: %v", err)
	}
	sig, err := s.Sign(sign.TypeHeader, hb)
	if err != nil {
		t.Fatalf("sign: %v", err)
	}
	return &evidencev1.Record{
		Kind:              kind,
		RecordedAt:        timestamppb.New(at),
		MessageId:         h.GetMessageId(),
		Node:              evTestNode,
		Peer:              evTestPeer,
		Header:            hb,
		Signature:         sig,
		SignatureVerified: true,
	}
}

// runEvidenceCLI runs the CLI as main does and returns exit code, stdout, stderr.
func runEvidenceCLI(args ...string) (int, string, string) {
	var stdout, stderr bytes.Buffer
	code := run(context.Background(), args, &stdout, &stderr)
	return code, stdout.String(), stderr.String()
}

func TestEvidenceTrace(t *testing.T) {
	f := newEvidenceFixture(t)
	signer := fmt.Sprintf("%x (%s)", f.certSum, evTestMember)
	common := `  message id          m-1
  node                ` + evTestNode + `
  peer                ` + evTestPeer + `
`
	header := `  call kind           UNARY
  sequence            0
  client              VN/NN/000.00.00.G22/vanban
  service             VN/NN/000.00.00.G09/dvhc/vn.gov.dvhc.v1.AdminUnitService
  method              GetUnit
  purpose             QLHC
  user                nguyen.van.a
  issue               HS-2026-001
  classification      SENSITIVE
  created at          2026-12-04T09:30:00.123Z
`
	want := `record 0
  kind                REQUEST_SENT
  recorded at         2026-12-04T09:30:00.123Z
` + common + `  direction           REQUEST
` + header + `  payload sha256      ` + fmt.Sprintf("%x", sha256.Sum256([]byte("request"))) + `
  payload length      7 bytes
  previous digest     (none)
  signer certificate  ` + signer + `
  signature verified  yes
  outcome             OK

record 1
  kind                RESPONSE_RECEIVED
  recorded at         2026-12-04T09:30:00.128Z
` + common + `  direction           RESPONSE
` + header + `  request digest      ` + strings.Repeat("ab", 32) + `
  previous digest     ` + strings.Repeat("cd", 32) + `
  final status        NotFound: no such unit
  signer certificate  ` + signer + `
  signature verified  yes
  outcome             OK
`
	code, stdout, stderr := runEvidenceCLI("evidence", "trace", "--log", f.path, "m-1")
	if code != 0 || stderr != "" {
		t.Fatalf("trace exit %d, stderr %q", code, stderr)
	}
	if diff := cmp.Diff(want, stdout); diff != "" {
		t.Errorf("trace output mismatch (-want +got):\n%s", diff)
	}

	// Flags may follow the message id; an unparsable header is said so.
	code, stdout, _ = runEvidenceCLI("evidence", "trace", "m-2", "--log", f.path)
	wantRefusal := `record 2
  kind                REFUSED
  recorded at         2026-12-04T09:30:01.123Z
  message id          m-2
  node                ` + evTestNode + `
  peer                ` + evTestPeer + `
  header              does not parse (1 bytes)
  signature verified  no (the message carried no signature)
  outcome             Unauthenticated: header does not parse
`
	if code != 0 {
		t.Fatalf("trace m-2 exit %d", code)
	}
	if diff := cmp.Diff(wantRefusal, stdout); diff != "" {
		t.Errorf("trace m-2 output mismatch (-want +got):\n%s", diff)
	}
}

func TestEvidenceVerify(t *testing.T) {
	f := newEvidenceFixture(t)
	ok := fmt.Sprintf("ok: 3 records, root %x, 2 signatures checked, 1 unsigned refusal\n", f.root)
	tests := []struct {
		name   string
		args   []string
		code   int
		stdout string
		stderr string
	}{
		{"with bundle", []string{"--log", f.path, "--bundle", f.bundle}, 0, ok, ""},
		{"without bundle", []string{"--log", f.path}, 0,
			ok + "certificate chains not checked (no --bundle)\n", ""},
		{"missing log flag", nil, 2, "", "ketnoi evidence: want --log FILE or --node ADDR\n"},
		{"extra argument", []string{"--log", f.path, "m-1"}, 2, "",
			"ketnoi evidence: unexpected argument \"m-1\"\n"},
		{"missing bundle", []string{"--log", f.path, "--bundle", f.bundle + ".none"}, 1, "",
			"ketnoi evidence: read bundle: open " + f.bundle + ".none: no such file or directory\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, stdout, stderr := runEvidenceCLI(append([]string{"evidence", "verify"}, tt.args...)...)
			got := []any{code, stdout, stderr}
			if diff := cmp.Diff([]any{tt.code, tt.stdout, tt.stderr}, got); diff != "" {
				t.Errorf("verify mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

func TestEvidenceVerifyTampered(t *testing.T) {
	f := newEvidenceFixture(t)
	flipRecordByte(t, f.path)

	code, stdout, stderr := runEvidenceCLI("evidence", "verify", "--log", f.path, "--bundle", f.bundle)
	if code != 1 {
		t.Errorf("exit code = %d, want 1", code)
	}
	if want := "ketnoi evidence: record 1: leaf hash does not match the tree\n"; stderr != want {
		t.Errorf("stderr = %q, want %q", stderr, want)
	}
	if !strings.HasPrefix(stdout, "first bad record:\nrecord 1\n") {
		t.Errorf("stdout = %q, want the bad record first", stdout)
	}
}

func TestEvidenceLogHeldByNode(t *testing.T) {
	f := newEvidenceFixture(t)
	l, err := evidence.Open(f.path, evidence.Options{})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	defer l.Close()
	code, _, stderr := runEvidenceCLI("evidence", "verify", "--log", f.path)
	want := "ketnoi evidence: open evidence log " + f.path +
		": evidence log is in use by a running node; stop the node first, or use --node\n"
	if code != 1 || stderr != want {
		t.Errorf("verify of a held log = %d, %q; want 1, %q", code, stderr, want)
	}
}

func TestEvidenceUsage(t *testing.T) {
	f := newEvidenceFixture(t)
	tests := []struct {
		name   string
		args   []string
		code   int
		stderr string
	}{
		{"no subcommand", nil, 2, "ketnoi evidence: want a subcommand: trace, verify or search\n"},
		{"unknown subcommand", []string{"export"}, 2,
			"ketnoi evidence: unknown subcommand \"export\": want trace, verify or search\n"},
		{"trace without id", []string{"trace", "--log", f.path}, 2,
			"ketnoi evidence: want one MESSAGE_ID, got 0 arguments\n"},
		{"unknown flag", []string{"trace", "--lg", f.path, "m-1"}, 2,
			"ketnoi evidence: flag provided but not defined: -lg\n"},
		{"no records", []string{"trace", "--log", f.path, "m-9"}, 1,
			"ketnoi evidence: no records for message m-9\n"},
		{"help", []string{"trace", "-h"}, 0, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, _, stderr := runEvidenceCLI(append([]string{"evidence"}, tt.args...)...)
			if code != tt.code || stderr != tt.stderr {
				t.Errorf("exit %d, stderr %q; want %d, %q", code, stderr, tt.code, tt.stderr)
			}
		})
	}
}

// serveEvidence opens the log at path as a node does and serves its
// evidence service, trusting the CA certificates of bundle, on loopback.
// It returns the address.
func serveEvidence(t *testing.T, path, bundle string) string {
	t.Helper()
	roots, err := loadEvidenceRoots(bundle)
	if err != nil {
		t.Fatalf("load bundle: %v", err)
	}
	l, err := evidence.Open(path, evidence.Options{Node: evTestNode})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		l.Close()
		t.Fatalf("listen: %v", err)
	}
	srv := grpc.NewServer()
	evidencev1.RegisterEvidenceServiceServer(srv, evidence.NewService(l, roots))
	go srv.Serve(lis)
	t.Cleanup(func() {
		srv.Stop()
		l.Close()
	})
	return lis.Addr().String()
}

// TestEvidenceNodeSameOutput checks that --node prints what --log prints
// for the same log.
func TestEvidenceNodeSameOutput(t *testing.T) {
	f := newEvidenceFixture(t)
	tests := []struct {
		name    string
		args    []string // followed by --log FILE or --node ADDR
		logOnly []string // extra arguments in --log mode only
	}{
		{name: "trace request and response", args: []string{"trace", "m-1"}},
		{name: "trace refusal", args: []string{"trace", "m-2"}},
		{name: "verify", args: []string{"verify"}, logOnly: []string{"--bundle", f.bundle}},
		{name: "search", args: []string{"search"}},
		{name: "search with filters and a limit", args: []string{
			"search", "--peer", "VN/NN/000.00.00.G09", "--since", "2026-12-04T09:30:00Z", "--limit", "2",
		}},
	}
	type result struct {
		Code           int
		Stdout, Stderr string
	}
	fromLog := make([]result, len(tests))
	for i, tt := range tests {
		args := append(append([]string{"evidence"}, tt.args...), "--log", f.path)
		code, stdout, stderr := runEvidenceCLI(append(args, tt.logOnly...)...)
		if code != 0 || stdout == "" {
			t.Fatalf("%s with --log: exit %d, stderr %q", tt.name, code, stderr)
		}
		fromLog[i] = result{code, stdout, stderr}
	}

	addr := serveEvidence(t, f.path, f.bundle)
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			args := append(append([]string{"evidence"}, tt.args...), "--node", addr)
			code, stdout, stderr := runEvidenceCLI(args...)
			if diff := cmp.Diff(fromLog[i], result{code, stdout, stderr}); diff != "" {
				t.Errorf("--node output differs from --log (-log +node):\n%s", diff)
			}
		})
	}
}

func TestEvidenceNodeVerifyTampered(t *testing.T) {
	f := newEvidenceFixture(t)
	flipRecordByte(t, f.path)
	_, logStdout, _ := runEvidenceCLI("evidence", "verify", "--log", f.path, "--bundle", f.bundle)
	if !strings.HasPrefix(logStdout, "first bad record:\nrecord 1\n") {
		t.Fatalf("--log stdout = %q, want the bad record first", logStdout)
	}

	addr := serveEvidence(t, f.path, f.bundle)
	code, stdout, stderr := runEvidenceCLI("evidence", "verify", "--node", addr)
	want := []any{1, logStdout,
		"ketnoi evidence: record 1: leaf hash does not match the tree (DataLoss)\n"}
	if diff := cmp.Diff(want, []any{code, stdout, stderr}); diff != "" {
		t.Errorf("verify --node of a tampered log mismatch (-want +got):\n%s", diff)
	}
}

func TestEvidenceNodeErrors(t *testing.T) {
	f := newEvidenceFixture(t)
	addr := serveEvidence(t, f.path, f.bundle)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	closed := lis.Addr().String()
	lis.Close()

	tests := []struct {
		name   string
		args   []string
		code   int
		stderr string // prefix
	}{
		{"no records", []string{"trace", "--node", addr, "m-9"}, 1,
			"ketnoi evidence: no records for message m-9 (NotFound)\n"},
		{"empty message id", []string{"trace", "--node", addr, ""}, 1,
			"ketnoi evidence: message id is empty (InvalidArgument)\n"},
		{"node not listening", []string{"verify", "--node", closed}, 1,
			"ketnoi evidence: connection error: "},
		{"both log and node", []string{"verify", "--log", f.path, "--node", addr}, 2,
			"ketnoi evidence: --log and --node exclude each other\n"},
		{"neither log nor node", []string{"trace", "m-1"}, 2,
			"ketnoi evidence: want --log FILE or --node ADDR\n"},
		{"bundle with node", []string{"verify", "--node", addr, "--bundle", f.bundle}, 2,
			"ketnoi evidence: --bundle goes with --log; a node verifies with its own trust bundle\n"},
		{"node without port", []string{"verify", "--node", "127.0.0.1"}, 2,
			"ketnoi evidence: --node \"127.0.0.1\": want a loopback host:port: "},
		{"node not on loopback", []string{"trace", "--node", "192.0.2.1:4000", "m-1"}, 2,
			"ketnoi evidence: --node \"192.0.2.1:4000\": not a loopback address; " +
				"a node serves evidence only on its loopback admin endpoint\n"},
		{"node host name", []string{"trace", "--node", "node.example:4000", "m-1"}, 2,
			"ketnoi evidence: --node \"node.example:4000\": not a loopback address; " +
				"a node serves evidence only on its loopback admin endpoint\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, stdout, stderr := runEvidenceCLI(append([]string{"evidence"}, tt.args...)...)
			if code != tt.code || !strings.HasPrefix(stderr, tt.stderr) || stdout != "" {
				t.Errorf("exit %d, stdout %q, stderr %q; want %d, no output, stderr starting %q",
					code, stdout, stderr, tt.code, tt.stderr)
			}
			if strings.Count(stderr, "\n") != 1 {
				t.Errorf("stderr %q is not one line", stderr)
			}
		})
	}
}

// flipRecordByte flips one byte near the end of record 1 of the log at
// path, as a tamperer with write access to the file could.
func flipRecordByte(t *testing.T, path string) {
	t.Helper()
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		t.Fatalf("open bbolt: %v", err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket([]byte("leaves"))
		k := binary.BigEndian.AppendUint64(nil, 1)
		v := bytes.Clone(b.Get(k))
		v[len(v)-3] ^= 0x01
		return b.Put(k, v)
	})
	db.Close()
	if err != nil {
		t.Fatalf("tamper: %v", err)
	}
}

func TestEvidenceSearch(t *testing.T) {
	f := newEvidenceFixture(t)
	const service = "VN/NN/000.00.00.G09/dvhc/vn.gov.dvhc.v1.AdminUnitService"
	digest := fmt.Sprintf("%x", sha256.Sum256([]byte("request")))
	lines := []string{
		"index=0 time=2026-12-04T09:30:00.123Z kind=REQUEST_SENT direction=REQUEST " +
			"peer=VN/NN/000.00.00.G09/dvhc peer_node=" + evTestPeer + " service=" + service +
			" method=GetUnit message_id=m-1 payload_sha256=" + digest + " outcome=OK reason=-\n",
		"index=1 time=2026-12-04T09:30:00.128Z kind=RESPONSE_RECEIVED direction=RESPONSE " +
			"peer=VN/NN/000.00.00.G09/dvhc peer_node=" + evTestPeer + " service=" + service +
			" method=GetUnit message_id=m-1 payload_sha256=- outcome=OK reason=-\n",
		"index=2 time=2026-12-04T09:30:01.123Z kind=REFUSED direction=- peer=- peer_node=" + evTestPeer +
			" service=- method=- message_id=m-2 payload_sha256=- outcome=Unauthenticated " +
			"reason=\"header does not parse\"\n",
	}
	matching := func(n int) string {
		if n == 1 {
			return "# 1 matching record (tree size 3)\n"
		}
		return fmt.Sprintf("# %d matching records (tree size 3)\n", n)
	}
	tests := []struct {
		name   string
		args   []string
		stdout string
	}{
		{"no filter", nil, lines[0] + lines[1] + lines[2] + matching(3)},
		{"peer member", []string{"--peer", "VN/NN/000.00.00.G09"}, lines[0] + lines[1] + lines[2] + matching(3)},
		{"peer subsystem", []string{"--peer", "VN/NN/000.00.00.G09/dvhc"}, lines[0] + lines[1] + matching(2)},
		{"peer without records", []string{"--peer", "VN/NN/000.00.00.G12"}, matching(0)},
		{"service", []string{"--service", service}, lines[0] + lines[1] + matching(2)},
		{"payload digest", []string{"--payload-sha256", strings.ToUpper(digest)}, lines[0] + matching(1)},
		{"message id", []string{"--message-id", "m-1"}, lines[0] + lines[1] + matching(2)},
		{"since", []string{"--since", "2026-12-04T09:30:00.125Z"}, lines[1] + lines[2] + matching(2)},
		{"until with offset", []string{"--until", "2026-12-04T16:30:00.125+07:00"}, lines[0] + matching(1)},
		{"since and until", []string{"--since", "2026-12-04T09:30:00.125Z", "--until", "2026-12-04T09:30:01Z"},
			lines[1] + matching(1)},
		{"kind", []string{"--kind", "refused"}, lines[2] + matching(1)},
		{"outcome", []string{"--outcome", "UNAUTHENTICATED"}, lines[2] + matching(1)},
		{"outcome OK", []string{"--outcome", "OK"}, lines[0] + lines[1] + matching(2)},
		{"combined", []string{"--peer", "VN/NN/000.00.00.G09", "--kind", "response-received", "--outcome", "ok"},
			lines[1] + matching(1)},
		{"limit", []string{"--limit", "1"}, lines[0] +
			"# limit of 1 reached (tree size 3); more records match: continue with --from 1\n"},
		{"from", []string{"--from", "1", "--limit", "1"}, lines[1] +
			"# limit of 1 reached (tree size 3); more records match: continue with --from 2\n"},
		{"limit equals matches", []string{"--from", "1", "--limit", "2"}, lines[1] + lines[2] + matching(2)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			args := append([]string{"evidence", "search", "--log", f.path}, tt.args...)
			code, stdout, stderr := runEvidenceCLI(args...)
			if diff := cmp.Diff([]any{0, tt.stdout, ""}, []any{code, stdout, stderr}); diff != "" {
				t.Errorf("search mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

func TestEvidenceSearchUsage(t *testing.T) {
	f := newEvidenceFixture(t)
	tests := []struct {
		name   string
		args   []string
		stderr string
	}{
		{"digest not hex", []string{"--payload-sha256", "xyz"}, `--payload-sha256 "xyz": want 64 hex digits`},
		{"digest too short", []string{"--payload-sha256", "abcd"}, `--payload-sha256 "abcd": want 64 hex digits`},
		{"since not RFC 3339", []string{"--since", "2026-12-04"},
			`--since "2026-12-04": want an RFC 3339 time such as 2026-12-04T09:30:00+07:00`},
		{"until before since", []string{"--since", "2026-12-05T00:00:00Z", "--until", "2026-12-04T00:00:00Z"},
			"invalid evidence search: until 2026-12-04T00:00:00Z is not after since 2026-12-05T00:00:00Z"},
		{"kind", []string{"--kind", "sent"}, `--kind "sent": want request_sent, request_received, ` +
			"response_sent, response_received, refused or failed"},
		{"kind unspecified", []string{"--kind", "unspecified"}, `--kind "unspecified": want request_sent, ` +
			"request_received, response_sent, response_received, refused or failed"},
		{"outcome", []string{"--outcome", "Denied"},
			`--outcome "Denied": not a gRPC code name such as OK, NotFound or PermissionDenied`},
		{"peer", []string{"--peer", "G09"},
			`invalid evidence search: peer: malformed identifier: client "G09": want INSTANCE/CLASS/CODE[/SUBSYSTEM]`},
		{"service", []string{"--service", "vn.gov.dvhc.v1.AdminUnitService"},
			`invalid evidence search: service: malformed identifier: service "vn.gov.dvhc.v1.AdminUnitService": ` +
				"want INSTANCE/CLASS/CODE/SUBSYSTEM/package.Service"},
		{"limit", []string{"--limit", "0"}, "--limit 0: want at least 1"},
		{"from", []string{"--from", "-1"}, `invalid value "-1" for flag -from: parse error`},
		{"argument", []string{"m-1"}, `unexpected argument "m-1"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			args := append([]string{"evidence", "search", "--log", f.path}, tt.args...)
			code, stdout, stderr := runEvidenceCLI(args...)
			want := []any{2, "", "ketnoi evidence: " + tt.stderr + "\n"}
			if diff := cmp.Diff(want, []any{code, stdout, stderr}); diff != "" {
				t.Errorf("search usage mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

// TestEvidenceSearchNodePages checks that a search through a node asks
// for as many pages as --limit needs (a node returns at most 1000 records
// a call) and prints what the same search of the log file prints.
func TestEvidenceSearchNodePages(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "evidence.db")
	l, err := evidence.Open(path, evidence.Options{Node: evTestNode})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	const records = 2500
	for start := 0; start < records; start += 500 {
		recs := make([]*evidencev1.Record, 500)
		for i := range recs {
			recs[i] = &evidencev1.Record{
				Kind:       evidencev1.RecordKind_RECORD_KIND_REFUSED,
				RecordedAt: timestamppb.New(time.Date(2026, 12, 4, 9, 0, start+i, 0, time.UTC)),
				MessageId:  fmt.Sprint("m-", start+i),
				Node:       evTestNode,
				Peer:       evTestPeer,
				Header:     []byte{0xff},
				Code:       int32(codes.Unauthenticated),
			}
		}
		rs, err := l.StartAll(context.Background(), recs, make([][]byte, len(recs)))
		if err != nil {
			t.Fatalf("StartAll: %v", err)
		}
		if _, err := rs[len(rs)-1].Wait(context.Background()); err != nil {
			t.Fatalf("Wait: %v", err)
		}
	}
	if err := l.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	bundle := filepath.Join(dir, "ca.pem")
	_, ca := evTestCert(t, nil, nil, "")
	if err := os.WriteFile(bundle, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.Raw}), 0o600); err != nil {
		t.Fatalf("write bundle: %v", err)
	}

	tests := []struct {
		args    []string
		printed int
		last    string
	}{
		{[]string{"--limit", "2100"}, 2100,
			"# limit of 2100 reached (tree size 2500); more records match: continue with --from 2100\n"},
		{[]string{"--limit", "2000", "--from", "600"}, 1900, "# 1900 matching records (tree size 2500)\n"},
		{[]string{"--limit", "3000", "--peer", "VN/NN/000.00.00.G09", "--since", "2026-12-04T09:00:10Z"}, 2490,
			"# 2490 matching records (tree size 2500)\n"},
	}
	fromLog := make([]string, len(tests))
	for i, tt := range tests {
		code, stdout, stderr := runEvidenceCLI(append([]string{"evidence", "search", "--log", path}, tt.args...)...)
		if code != 0 || stderr != "" {
			t.Fatalf("search --log %v: exit %d, stderr %q", tt.args, code, stderr)
		}
		if n := strings.Count(stdout, "\nindex=") + 1; n != tt.printed || !strings.HasSuffix(stdout, tt.last) {
			t.Errorf("search --log %v printed %d records ending %q; want %d ending %q",
				tt.args, n, stdout[strings.LastIndexByte(stdout[:len(stdout)-1], '\n')+1:], tt.printed, tt.last)
		}
		fromLog[i] = stdout
	}

	addr := serveEvidence(t, path, bundle)
	for i, tt := range tests {
		code, stdout, stderr := runEvidenceCLI(append([]string{"evidence", "search", "--node", addr}, tt.args...)...)
		if code != 0 || stderr != "" || stdout != fromLog[i] {
			t.Errorf("search --node %v: exit %d, stderr %q, output differs from --log: %t",
				tt.args, code, stderr, stdout != fromLog[i])
		}
	}
}

// TestEvidenceSearchCrashedLog checks that a search of a log whose node
// crashed with records still in its journal prints the records of the
// tree and fails saying that the others were not read, as trace and
// verify do.
func TestEvidenceSearchCrashedLog(t *testing.T) {
	f := newEvidenceFixture(t)
	crashed := false
	// Bounded: the child must exit before its writer's fold timer (100 ms)
	// folds the records; on a very slow machine it may not.
	for range 3 {
		crashEvidenceLog(t, f.path)
		l, err := evidence.OpenReadOnly(f.path)
		if crashed = errors.Is(err, evidence.ErrUnfolded); crashed {
			break
		}
		if err != nil {
			t.Fatalf("OpenReadOnly after the crash: %v", err)
		}
		t.Logf("the records were folded before the crash; trying again")
		l.Close()
	}
	if !crashed {
		t.Fatal("every crash came after a fold; the journal was not exercised")
	}

	code, stdout, stderr := runEvidenceCLI("evidence", "search", "--log", f.path, "--kind", "refused")
	if !strings.HasPrefix(stdout, "index=2 ") || !strings.HasSuffix(stdout, "\n# 1 matching record (tree size 3)\n") {
		t.Errorf("stdout = %q; want record 2 of the tree", stdout)
	}
	wantErr := "ketnoi evidence: only the records in the tree were read: open evidence log " + f.path +
		": evidence log has unfolded journal records: 2 records in its journal are not yet in the tree; " +
		"start the node once (it folds them in) and read the log again\n"
	if code != 1 || stderr != wantErr {
		t.Errorf("exit %d, stderr %q; want 1, %q", code, stderr, wantErr)
	}
}

// crashEvidenceLog has a child process append two records to the log at
// path and kills it once they are durable, as a crash leaves a node.
func crashEvidenceLog(t *testing.T, path string) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestEvidenceCrashChild$")
	cmd.Env = append(os.Environ(), "KETNOI_TEST_CRASH_LOG="+path)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatalf("child stdout: %v", err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start child: %v", err)
	}
	line, _ := bufio.NewReader(out).ReadString('\n')
	cmd.Process.Kill()
	cmd.Wait()
	if line != "appended\n" {
		t.Fatalf("child did not append: %q\n%s", line, stderr.String())
	}
}

// TestEvidenceCrashChild is the child process of crashEvidenceLog; it
// does nothing in a normal test run.
func TestEvidenceCrashChild(t *testing.T) {
	path := os.Getenv("KETNOI_TEST_CRASH_LOG")
	if path == "" {
		t.Skip("runs only as the child process of crashEvidenceLog")
	}
	l, err := evidence.Open(path, evidence.Options{Node: evTestNode})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	recs := make([]*evidencev1.Record, 2)
	for i := range recs {
		recs[i] = &evidencev1.Record{
			Kind:      evidencev1.RecordKind_RECORD_KIND_REFUSED,
			MessageId: fmt.Sprint("journaled-", i),
			Header:    []byte{0xff},
		}
	}
	rs, err := l.StartAll(context.Background(), recs, make([][]byte, len(recs)))
	if err != nil {
		t.Fatalf("StartAll: %v", err)
	}
	if _, err := rs[1].Wait(context.Background()); err != nil {
		t.Fatalf("Wait: %v", err)
	}
	fmt.Println("appended")
	// The parent kills the process now; should it not, the log is left
	// open all the same.
	time.Sleep(30 * time.Second)
	os.Exit(1)
}
