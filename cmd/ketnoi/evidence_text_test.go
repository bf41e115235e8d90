package main

import (
	"strings"
	"testing"
	"time"
	"unicode"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/timestamppb"

	evidencev1 "github.com/ketnoi/ketnoi/proto/ketnoi/evidence/v1"
	exchangev1 "github.com/ketnoi/ketnoi/proto/ketnoi/exchange/v1"
	registryv1 "github.com/ketnoi/ketnoi/proto/ketnoi/registry/v1"
)

// Hostile texts as a provider's backend and a local application can
// write them: terminal escapes, line breaks that would forge a record,
// and bidirectional and line-separator characters.
const (
	hostileStatus = "not found\x1b]0;PWNED\a\x1b[31m RED\nFAKE record 999\n  kind REFUSED\u202eevil"
	hostileMethod = "Get\u202eUnit\u2028FAKE"
)

// TestEvidenceHostileText: texts from peers, callers and backends are
// printed quoted and escaped by trace, from the file as through a node,
// so that none can forge a line or reach the terminal as an escape; an
// error naming one is one escaped line.
func TestEvidenceHostileText(t *testing.T) {
	s, caPEM := evTestSigner(t)
	at := time.Date(2026, 12, 4, 12, 0, 0, 0, time.UTC)
	const service = "VN/NN/000.00.00.G09/dvhc/vn.gov.dvhc.v1.AdminUnitService"
	resp := &exchangev1.Header{
		ProtocolVersion: 1, MessageId: "m-h1", Direction: exchangev1.Direction_DIRECTION_RESPONSE,
		CallKind: exchangev1.CallKind_CALL_KIND_UNARY, Client: "VN/NN/000.00.00.G22/vanban",
		Service: service, Method: "GetUnit", Purpose: "QLHC\x1b[2J",
		Classification: registryv1.Classification_CLASSIFICATION_NORMAL,
		CreatedAt:      timestamppb.New(at), Final: true, RequestDigest: make([]byte, 32),
		Status:                  &exchangev1.CallStatus{Code: int32(codes.NotFound), Message: hostileStatus},
		SignerCertificateSha256: s.CertificateSHA256(),
	}
	refused := &exchangev1.Header{
		ProtocolVersion: 1, MessageId: "m-h2", Direction: exchangev1.Direction_DIRECTION_REQUEST,
		Client: "VN/NN/000.00.00.G22/vanban", Service: service, Method: hostileMethod,
		Classification: registryv1.Classification_CLASSIFICATION_NORMAL,
		CreatedAt:      timestamppb.New(at.Add(time.Second)), SenderNode: evTestNode,
	}
	path, bundle := writeEvidenceLog(t, caPEM, s.Certificate().Raw,
		evTestRecord(t, s, resp, evidencev1.RecordKind_RECORD_KIND_RESPONSE_RECEIVED, at),
		refusedCall(t, refused, "", codes.Unimplemented,
			"METHOD_UNKNOWN: service "+service+" has no method "+hostileMethod),
	)

	want := map[string][]string{
		"m-h1": {
			`  purpose             "QLHC\x1b[2J"`,
			`  final status        NotFound: "not found\x1b]0;PWNED\a\x1b[31m RED\nFAKE record 999\n  kind REFUSED\u202eevil"`,
		},
		"m-h2": {
			`  method              "Get\u202eUnit\u2028FAKE"`,
			`  outcome             Unimplemented: "METHOD_UNKNOWN: service ` + service +
				` has no method Get\u202eUnit\u2028FAKE"`,
		},
	}
	check := func(t *testing.T, id string, target ...string) {
		t.Helper()
		code, stdout, stderr := runEvidenceCLI(append([]string{"evidence", "trace", id}, target...)...)
		if code != 0 || stderr != "" {
			t.Fatalf("trace %s: exit %d, stderr %q", id, code, stderr)
		}
		lines := strings.Split(strings.TrimSuffix(stdout, "\n"), "\n")
		var records, kinds int
		for _, l := range lines {
			if strings.ContainsFunc(l, func(r rune) bool { return !unicode.IsPrint(r) }) {
				t.Errorf("trace %s printed an unprintable character: %q", id, l)
			}
			records += b2i(strings.HasPrefix(l, "record "))
			kinds += b2i(strings.HasPrefix(strings.TrimSpace(l), "kind "))
		}
		if records != 1 || kinds != 1 {
			t.Errorf("trace %s: %d record lines and %d kind lines, want 1 and 1:\n%s", id, records, kinds, stdout)
		}
		for _, w := range want[id] {
			if !strings.Contains(stdout, w+"\n") {
				t.Errorf("trace %s: no line %s in:\n%s", id, w, stdout)
			}
		}
	}
	for _, id := range []string{"m-h1", "m-h2"} {
		t.Run(id+" --log", func(t *testing.T) { check(t, id, "--log", path) })
	}
	t.Run("error", func(t *testing.T) {
		code, stdout, stderr := runEvidenceCLI("evidence", "trace", "--log", path, "m\x1b[31m\nFAKE")
		want := []any{1, "", `ketnoi evidence: no records for message m\x1b[31m\nFAKE` + "\n"}
		if diff := cmp.Diff(want, []any{code, stdout, stderr}); diff != "" {
			t.Errorf("mismatch (-want +got):\n%s", diff)
		}
	})
	addr := serveEvidence(t, path, bundle)
	for _, id := range []string{"m-h1", "m-h2"} {
		t.Run(id+" --node", func(t *testing.T) { check(t, id, "--node", addr) })
	}

}

// b2i is 1 for true and 0 for false.
func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}
