package main

import (
	"context"
	"encoding/pem"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/ketnoi/ketnoi/internal/evidence"
	"github.com/ketnoi/ketnoi/internal/node"
	"github.com/ketnoi/ketnoi/internal/sign"
	evidencev1 "github.com/ketnoi/ketnoi/proto/ketnoi/evidence/v1"
	exchangev1 "github.com/ketnoi/ketnoi/proto/ketnoi/exchange/v1"
	registryv1 "github.com/ketnoi/ketnoi/proto/ketnoi/registry/v1"
)

// writeEvidenceLog writes recs to a new closed log, with cert as the signer
// certificate of each, and returns its path and a trust bundle for cert's
// CA.
func writeEvidenceLog(t *testing.T, caPEM []byte, cert []byte, recs ...*evidencev1.Record) (path, bundle string) {
	t.Helper()
	dir := t.TempDir()
	path, bundle = filepath.Join(dir, "evidence.db"), filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(bundle, caPEM, 0o600); err != nil {
		t.Fatalf("write bundle: %v", err)
	}
	l, err := evidence.Open(path, evidence.Options{Node: evTestNode})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	for i, rec := range recs {
		if _, err := l.Append(context.Background(), rec, cert); err != nil {
			t.Fatalf("Append %d: %v", i, err)
		}
	}
	if err := l.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	return path, bundle
}

// evTestSigner returns a signer of evTestMember and its CA certificate in
// PEM.
func evTestSigner(t *testing.T) (*sign.Signer, []byte) {
	t.Helper()
	caKey, caCert := evTestCert(t, nil, nil, "")
	key, cert := evTestCert(t, caKey, caCert, evTestMember)
	s, err := sign.NewSigner(key, cert)
	if err != nil {
		t.Fatalf("NewSigner: %v", err)
	}
	return s, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caCert.Raw})
}

// refusedCall is the record of a call a consumer node refused before
// sending, as it writes one: an unsigned header of what the call asked
// for, naming the node as its sender.
func refusedCall(t *testing.T, h *exchangev1.Header, peer string, code codes.Code, reason string) *evidencev1.Record {
	t.Helper()
	raw, err := proto.Marshal(h)
	if err != nil {
		t.Fatalf("marshal header: %v", err)
	}
	return &evidencev1.Record{
		Kind: evidencev1.RecordKind_RECORD_KIND_REFUSED, RecordedAt: h.GetCreatedAt(), MessageId: h.GetMessageId(),
		Node: evTestNode, Peer: peer, Header: raw, Code: int32(code), Reason: reason,
	}
}

// TestEvidenceOwnRefusals: a consumer node's records of the calls it
// refused before sending are printed as what they are (not signed, no
// frame, no payload), are found by --peer under the provider they were
// for, and are counted by verify, through a node as from the file.
func TestEvidenceOwnRefusals(t *testing.T) {
	_, caPEM := evTestSigner(t)
	at := time.Date(2026, 12, 4, 10, 0, 0, 0, time.UTC)
	const service = "VN/NN/000.00.00.G09/dvhc/vn.gov.dvhc.v1.AdminUnitService"
	unknown := &exchangev1.Header{
		ProtocolVersion: 1, MessageId: "m-r1", Direction: exchangev1.Direction_DIRECTION_REQUEST,
		Client: "VN/NN/000.00.00.G22/vanban", Service: service, Method: "Delete",
		Classification: registryv1.Classification_CLASSIFICATION_NORMAL,
		CreatedAt:      timestamppb.New(at), SenderNode: evTestNode,
	}
	tooLarge := proto.Clone(unknown).(*exchangev1.Header)
	tooLarge.MessageId, tooLarge.Method = "m-r2", "GetUnit"
	tooLarge.CallKind, tooLarge.AudienceNode = exchangev1.CallKind_CALL_KIND_UNARY, evTestPeer
	tooLarge.CreatedAt = timestamppb.New(at.Add(time.Second))
	path, bundle := writeEvidenceLog(t, caPEM, nil,
		refusedCall(t, unknown, "", codes.Unimplemented,
			"METHOD_UNKNOWN: service "+service+" has no method Delete"),
		refusedCall(t, tooLarge, evTestPeer, codes.ResourceExhausted,
			"MESSAGE_TOO_LARGE: message with its signed header and metadata is 5000000 bytes"),
	)

	call := `  client              VN/NN/000.00.00.G22/vanban
  service             ` + service + `
`
	rest := `  purpose             (none)
  user                (none)
  issue               (none)
  classification      NORMAL
`
	traces := map[string]string{
		"m-r1": `record 0
  kind                REFUSED
  recorded at         2026-12-04T10:00:00.000Z
  message id          m-r1
  node                ` + evTestNode + `
  peer                (none)
  direction           REQUEST
` + call + `  method              Delete
` + rest + `  created at          2026-12-04T10:00:00.000Z
  signature           none: refused by this node before sending
  outcome             Unimplemented: METHOD_UNKNOWN: service ` + service + ` has no method Delete
`,
		"m-r2": `record 1
  kind                REFUSED
  recorded at         2026-12-04T10:00:01.000Z
  message id          m-r2
  node                ` + evTestNode + `
  peer                ` + evTestPeer + `
  direction           REQUEST
  call kind           UNARY
` + call + `  method              GetUnit
` + rest + `  created at          2026-12-04T10:00:01.000Z
  signature           none: refused by this node before sending
  outcome             ResourceExhausted: MESSAGE_TOO_LARGE: message with its signed header and metadata is 5000000 bytes
`,
	}
	line := func(index int, at, method, peerNode, outcome, reason string) string {
		return fmt.Sprintf("index=%d time=%s kind=REFUSED direction=REQUEST peer=VN/NN/000.00.00.G09/dvhc "+
			"peer_node=%s service=%s method=%s message_id=m-r%d payload_sha256=- outcome=%s reason=%q\n",
			index, at, peerNode, service, method, index+1, outcome, reason)
	}
	both := line(0, "2026-12-04T10:00:00.000Z", "Delete", "-", "Unimplemented",
		"METHOD_UNKNOWN: service "+service+" has no method Delete") +
		line(1, "2026-12-04T10:00:01.000Z", "GetUnit", evTestPeer, "ResourceExhausted",
			"MESSAGE_TOO_LARGE: message with its signed header and metadata is 5000000 bytes")

	tests := []struct {
		name   string
		args   []string
		stdout string
	}{
		{"trace unknown method", []string{"trace", "m-r1"}, traces["m-r1"]},
		{"trace too large", []string{"trace", "m-r2"}, traces["m-r2"]},
		{"search provider member", []string{"search", "--peer", "VN/NN/000.00.00.G09"},
			both + "# 2 matching records (tree size 2)\n"},
		{"search provider subsystem", []string{"search", "--peer", "VN/NN/000.00.00.G09/dvhc"},
			both + "# 2 matching records (tree size 2)\n"},
		{"search own subsystem", []string{"search", "--peer", "VN/NN/000.00.00.G22/vanban"},
			"# 0 matching records (tree size 2)\n"},
		{"verify", []string{"verify"}, ""},
	}
	const summary = ", 0 signatures checked, 2 unsigned refusals\n"
	check := func(t *testing.T, tt int, args ...string) {
		t.Helper()
		code, stdout, stderr := runEvidenceCLI(append(append([]string{"evidence"}, tests[tt].args...), args...)...)
		want := tests[tt].stdout
		if want == "" && strings.HasSuffix(stdout, summary) {
			want = stdout // verify: the root differs from log to log
		}
		if diff := cmp.Diff([]any{0, want, ""}, []any{code, stdout, stderr}); diff != "" {
			t.Errorf("mismatch (-want +got):\n%s", diff)
		}
	}
	// A running node holds the log: read the file first.
	for i, tt := range tests {
		t.Run(tt.name+" --log", func(t *testing.T) {
			args := []string{"--log", path}
			if tt.name == "verify" {
				args = append(args, "--bundle", bundle)
			}
			check(t, i, args...)
		})
	}
	addr := serveEvidence(t, path, bundle)
	for i, tt := range tests {
		t.Run(tt.name+" --node", func(t *testing.T) { check(t, i, "--node", addr) })
	}
}

// TestEvidenceNodeLargeRecord: a record larger than gRPC's default
// message limit of 4 MiB (a provider's signed status message echoing a
// 4 MiB request field) reads through a node's admin endpoint as it reads
// from the file: trace, search and verify.
func TestEvidenceNodeLargeRecord(t *testing.T) {
	s, caPEM := evTestSigner(t)
	at := time.Date(2026, 12, 4, 11, 0, 0, 0, time.UTC)
	h := func(id string, dir exchangev1.Direction) *exchangev1.Header {
		return &exchangev1.Header{
			ProtocolVersion: 1, MessageId: id, Direction: dir, CallKind: exchangev1.CallKind_CALL_KIND_UNARY,
			Client: "VN/NN/000.00.00.G22/vanban", Service: "VN/NN/000.00.00.G09/dvhc/vn.gov.dvhc.v1.AdminUnitService",
			Method: "GetUnit", CreatedAt: timestamppb.New(at), SenderNode: evTestNode, AudienceNode: evTestPeer,
			SignerCertificateSha256: s.CertificateSHA256(),
		}
	}
	resp := h("m-big", exchangev1.Direction_DIRECTION_RESPONSE)
	resp.Final = true
	resp.Status = &exchangev1.CallStatus{Code: int32(codes.InvalidArgument),
		Message: "field name too long: " + strings.Repeat("n", 4_200_000)}
	path, bundle := writeEvidenceLog(t, caPEM, s.Certificate().Raw,
		evTestRecord(t, s, h("m-big", exchangev1.Direction_DIRECTION_REQUEST),
			evidencev1.RecordKind_RECORD_KIND_REQUEST_SENT, at),
		evTestRecord(t, s, resp, evidencev1.RecordKind_RECORD_KIND_RESPONSE_RECEIVED, at),
		evTestRecord(t, s, h("m-after", exchangev1.Direction_DIRECTION_REQUEST),
			evidencev1.RecordKind_RECORD_KIND_REQUEST_SENT, at),
	)
	tests := [][]string{{"trace", "m-big"}, {"search"}, {"verify"}}
	// A running node holds the log: read the file first.
	fromLog := make([]string, len(tests))
	for i, args := range tests {
		args = append(append([]string{"evidence"}, args...), "--log", path)
		if args[1] == "verify" {
			args = append(args, "--bundle", bundle)
		}
		code, stdout, stderr := runEvidenceCLI(args...)
		if code != 0 || stderr != "" {
			t.Fatalf("%s --log: exit %d, stderr %q", args[1], code, stderr)
		}
		fromLog[i] = stdout
	}
	if !strings.Contains(fromLog[0], "final status        InvalidArgument: field name too long: nnnn") ||
		!strings.Contains(fromLog[1], "message_id=m-after") {
		t.Fatalf("--log output lacks the large record or the one after it")
	}
	addr := serveEvidence(t, path, bundle)
	for i, args := range tests {
		t.Run(args[0], func(t *testing.T) {
			code, got, stderr := runEvidenceCLI(append(append([]string{"evidence"}, args...), "--node", addr)...)
			if code != 0 || stderr != "" || got != fromLog[i] {
				t.Errorf("--node: exit %d, stderr %.200q, output of %d bytes equal to --log's (%d bytes): %t",
					code, stderr, len(got), len(fromLog[i]), got == fromLog[i])
			}
		})
	}
}

// The CLI's receive limit holds the largest record a node can write (a
// header of max_message_bytes plus the 64 KiB a frame adds) and the 2 MiB
// of other records a response may hold beside it.
func TestEvidenceMaxRecvHoldsLargestRecord(t *testing.T) {
	if need := node.MaxMaxMessageBytes + 64<<10 + 2<<20 + 1<<20; evidenceMaxRecv < need {
		t.Errorf("evidenceMaxRecv = %d, want at least %d", evidenceMaxRecv, need)
	}
}
