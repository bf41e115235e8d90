package evidence

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/testing/protocmp"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/ketnoi/ketnoi/internal/sign"
	evidencev1 "github.com/ketnoi/ketnoi/proto/ketnoi/evidence/v1"
	exchangev1 "github.com/ketnoi/ketnoi/proto/ketnoi/exchange/v1"
)

const (
	searchDVHC  = "VN/NN/000.00.00.G09/dvhc/vn.gov.dvhc.v1.AdminUnitService"
	searchHoSo  = "VN/NN/000.00.00.G22/hoso/vn.gov.hoso.v1.CaseService"
	searchOther = "VN/NN/000.00.00.G09/lltp/vn.gov.lltp.v1.RecordService"
	searchG12   = "spiffe://vn.ketnoi/node/NN/000.00.00.G12/taichinh"
)

// searchStart is the time of record 0 of searchLog; record i is i seconds
// later.
var searchStart = time.Date(2026, 12, 4, 9, 0, 0, 0, time.UTC)

// searchLog returns a log of seven records, made by a node of member G22
// that both consumes and provides:
//
//	0 REQUEST_SENT       m-1 to G09/dvhc      payload A  OK
//	1 RESPONSE_RECEIVED  m-1 from G09/dvhc    payload B  NotFound
//	2 REQUEST_RECEIVED   m-2 from G12/thue    payload A  OK
//	3 RESPONSE_SENT      m-2 to G12/thue      payload C  OK
//	4 REFUSED            m-3 header unparsable, from a G12 node  Unauthenticated
//	5 FAILED             m-4 to G09/lltp      payload D  Unavailable
//	6 REFUSED            m-5 request claiming G09/dvhc, from a G12 node  PermissionDenied
//
// It returns the log and the SHA-256 of payload A.
func searchLog(t *testing.T) (*Log, []byte) {
	t.Helper()
	l, _ := openLog(t)
	s := newCA(t, "ca").signer(t, testMember)
	payload := func(p string) []byte { sum := sha256.Sum256([]byte(p)); return sum[:] }

	consumer := func(id string, dir exchangev1.Direction, p string) *exchangev1.Header {
		h := header(s, id, 0)
		h.Direction, h.PayloadSha256 = dir, payload(p)
		return h
	}
	provider := func(id string, dir exchangev1.Direction, p string) *exchangev1.Header {
		h := consumer(id, dir, p)
		h.Client, h.Service = "VN/NN/000.00.00.G12/thue", searchHoSo
		return h
	}
	failed := consumer("m-4", exchangev1.Direction_DIRECTION_REQUEST, "D")
	failed.Service = searchOther
	claimed := consumer("m-5", exchangev1.Direction_DIRECTION_REQUEST, "E")
	claimed.Client = "VN/NN/000.00.00.G09/dvhc"

	recs := []*evidencev1.Record{
		searchRecord(t, s, consumer("m-1", exchangev1.Direction_DIRECTION_REQUEST, "A"),
			evidencev1.RecordKind_RECORD_KIND_REQUEST_SENT, codes.OK),
		searchRecord(t, s, consumer("m-1", exchangev1.Direction_DIRECTION_RESPONSE, "B"),
			evidencev1.RecordKind_RECORD_KIND_RESPONSE_RECEIVED, codes.NotFound),
		searchRecord(t, s, provider("m-2", exchangev1.Direction_DIRECTION_REQUEST, "A"),
			evidencev1.RecordKind_RECORD_KIND_REQUEST_RECEIVED, codes.OK),
		searchRecord(t, s, provider("m-2", exchangev1.Direction_DIRECTION_RESPONSE, "C"),
			evidencev1.RecordKind_RECORD_KIND_RESPONSE_SENT, codes.OK),
		{
			Kind:      evidencev1.RecordKind_RECORD_KIND_REFUSED,
			MessageId: "m-3",
			Node:      testNode,
			Peer:      searchG12,
			Header:    []byte{0xff},
			Code:      int32(codes.Unauthenticated),
			Reason:    "header does not parse",
		},
		searchRecord(t, s, failed, evidencev1.RecordKind_RECORD_KIND_FAILED, codes.Unavailable),
		searchRecord(t, s, claimed, evidencev1.RecordKind_RECORD_KIND_REFUSED, codes.PermissionDenied),
	}
	recs[2].Peer, recs[3].Peer, recs[6].Peer = searchG12, searchG12, searchG12
	for i, rec := range recs {
		rec.RecordedAt = timestamppb.New(searchStart.Add(time.Duration(i) * time.Second))
		var cert []byte
		if i == 0 {
			cert = s.Certificate().Raw
		}
		if _, err := l.Append(context.Background(), rec, cert); err != nil {
			t.Fatalf("Append %d: %v", i, err)
		}
	}
	return l, payload("A")
}

// searchRecord returns a signed record of h of the given kind and code.
func searchRecord(
	t *testing.T,
	s *sign.Signer,
	h *exchangev1.Header,
	kind evidencev1.RecordKind,
	code codes.Code,
) *evidencev1.Record {
	t.Helper()
	rec := signedRecord(t, s, h)
	rec.Kind, rec.Code = kind, int32(code)
	return rec
}

// searchIndexes returns the indexes of the entries of res.
func searchIndexes(res SearchResult) []uint64 {
	indexes := []uint64{}
	for _, e := range res.Entries {
		indexes = append(indexes, e.Index)
	}
	return indexes
}

func codePtr(c codes.Code) *codes.Code { return &c }

func TestSearchFilters(t *testing.T) {
	l, payloadA := searchLog(t)
	at := func(sec int) time.Time { return searchStart.Add(time.Duration(sec) * time.Second) }
	tests := []struct {
		name string
		q    Query
		want []uint64
	}{
		{"no filter", Query{}, []uint64{0, 1, 2, 3, 4, 5, 6}},
		{"peer member", Query{Peer: "VN/NN/000.00.00.G09"}, []uint64{0, 1, 5, 6}},
		{"peer subsystem", Query{Peer: "VN/NN/000.00.00.G09/dvhc"}, []uint64{0, 1, 6}},
		{"peer member by its node", Query{Peer: "VN/NN/000.00.00.G12"}, []uint64{2, 3, 4, 6}},
		{"peer subsystem of a client", Query{Peer: "VN/NN/000.00.00.G12/thue"}, []uint64{2, 3}},
		{"peer member code prefix", Query{Peer: "VN/NN/000.00.00.G0"}, []uint64{}},
		{"service", Query{Service: searchDVHC}, []uint64{0, 1, 6}},
		{"service provided", Query{Service: searchHoSo}, []uint64{2, 3}},
		{"payload digest", Query{PayloadSHA256: payloadA}, []uint64{0, 2}},
		{"message id", Query{MessageID: "m-2"}, []uint64{2, 3}},
		{"message id from", Query{MessageID: "m-2", From: 3}, []uint64{3}},
		{"message id prefix", Query{MessageID: "m-"}, []uint64{}},
		{"since", Query{Since: at(4)}, []uint64{4, 5, 6}},
		{"until", Query{Until: at(2)}, []uint64{0, 1}},
		{"since and until", Query{Since: at(1), Until: at(3)}, []uint64{1, 2}},
		{"kind", Query{Kind: evidencev1.RecordKind_RECORD_KIND_REFUSED}, []uint64{4, 6}},
		{"code OK", Query{Code: codePtr(codes.OK)}, []uint64{0, 2, 3}},
		{"code", Query{Code: codePtr(codes.Unavailable)}, []uint64{5}},
		{"from", Query{From: 5}, []uint64{5, 6}},
		{"from past the end", Query{From: 7}, []uint64{}},
		{"peer, kind and since", Query{
			Peer:  "VN/NN/000.00.00.G12",
			Kind:  evidencev1.RecordKind_RECORD_KIND_REFUSED,
			Since: at(5),
		}, []uint64{6}},
		{"peer, service and digest", Query{
			Peer:          "VN/NN/000.00.00.G09",
			Service:       searchDVHC,
			PayloadSHA256: payloadA,
		}, []uint64{0}},
		{"peer and message id", Query{Peer: "VN/NN/000.00.00.G09", MessageID: "m-2"}, []uint64{}},
		{"no match", Query{Service: "VN/NN/000.00.00.G01/x/a.v1.Service"}, []uint64{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res, err := l.Search(context.Background(), tt.q)
			if err != nil {
				t.Fatalf("Search: %v", err)
			}
			if diff := cmp.Diff(tt.want, searchIndexes(res)); diff != "" {
				t.Errorf("Search indexes mismatch (-want +got):\n%s", diff)
			}
			if res.More || res.Size != 7 {
				t.Errorf("Search more %v, size %d; want false, 7", res.More, res.Size)
			}
		})
	}
}

func TestSearchEntries(t *testing.T) {
	l, _ := searchLog(t)
	res, err := l.Search(context.Background(), Query{MessageID: "m-1"})
	if err != nil {
		t.Fatalf("Search: %v", err)
	}
	traced, err := l.ByMessageID("m-1")
	if err != nil {
		t.Fatalf("ByMessageID: %v", err)
	}
	size, root := l.TreeHead()
	if diff := cmp.Diff(traced, res.Entries, protocmp.Transform()); diff != "" {
		t.Errorf("Search entries differ from ByMessageID (-trace +search):\n%s", diff)
	}
	if res.Size != size || res.Root != root {
		t.Errorf("Search tree head %d %x, want %d %x", res.Size, res.Root, size, root)
	}
}

func TestSearchLimit(t *testing.T) {
	l, _ := searchLog(t)
	tests := []struct {
		name string
		q    Query
		want []uint64
		more bool
		next uint64
	}{
		{"limit reached", Query{Limit: 2}, []uint64{0, 1}, true, 2},
		{"limit with a filter", Query{Peer: "VN/NN/000.00.00.G12", Limit: 2}, []uint64{2, 3}, true, 4},
		{"continued", Query{Peer: "VN/NN/000.00.00.G12", Limit: 2, From: 4}, []uint64{4, 6}, false, 0},
		{"limit equals matches", Query{Peer: "VN/NN/000.00.00.G12", Limit: 4}, []uint64{2, 3, 4, 6}, false, 0},
		{"limit one", Query{Kind: evidencev1.RecordKind_RECORD_KIND_REFUSED, Limit: 1}, []uint64{4}, true, 6},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res, err := l.Search(context.Background(), tt.q)
			if err != nil {
				t.Fatalf("Search: %v", err)
			}
			got := []any{searchIndexes(res), res.More, res.Next}
			if diff := cmp.Diff([]any{tt.want, tt.more, tt.next}, got); diff != "" {
				t.Errorf("Search (indexes, more, next) mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

// TestSearchDefaultLimit checks that a query without a limit returns
// DefaultSearchLimit records, and that a cancelled search stops.
func TestSearchDefaultLimit(t *testing.T) {
	l, _ := openLog(t)
	appendMany(t, l, 5000)

	res, err := l.Search(context.Background(), Query{})
	if err != nil {
		t.Fatalf("Search: %v", err)
	}
	if len(res.Entries) != DefaultSearchLimit || !res.More || res.Next != DefaultSearchLimit {
		t.Errorf("Search of 5000 records = %d entries, more %v, next %d; want %d, true, %d",
			len(res.Entries), res.More, res.Next, DefaultSearchLimit, DefaultSearchLimit)
	}

	// Folded first, so that the scan itself sees the cancellation.
	if err := l.Flush(context.Background()); err != nil {
		t.Fatalf("Flush: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err = l.Search(ctx, Query{Service: searchOther})
	if !errors.Is(err, context.Canceled) {
		t.Errorf("Search with a cancelled context = %v, want context.Canceled", err)
	}
}

// appendMany appends n records m-0 to m-<n-1> in commits of 1000.
func appendMany(t testing.TB, l *Log, n int) {
	t.Helper()
	s := newCA(t, "ca").signer(t, testMember)
	base := signedRecord(t, s, header(s, "m", 0))
	for start := 0; start < n; start += 1000 {
		var recs []*evidencev1.Record
		for i := start; i < min(start+1000, n); i++ {
			recs = append(recs, &evidencev1.Record{
				Kind:              base.Kind,
				RecordedAt:        base.RecordedAt,
				MessageId:         fmt.Sprint("m-", i),
				Node:              base.Node,
				Peer:              base.Peer,
				Header:            base.Header,
				Signature:         base.Signature,
				SignatureVerified: true,
			})
		}
		certs := make([][]byte, len(recs))
		certs[0] = s.Certificate().Raw
		rs, err := l.StartAll(context.Background(), recs, certs)
		if err != nil {
			t.Fatalf("StartAll: %v", err)
		}
		if _, err := rs[len(rs)-1].Wait(context.Background()); err != nil {
			t.Fatalf("Wait: %v", err)
		}
	}
}

// TestSearchFoldsJournal checks that a search of a writable log sees the
// records still in the journal.
func TestSearchFoldsJournal(t *testing.T) {
	l, _ := openLog(t)
	l.foldEvery = time.Hour
	s := newCA(t, "ca").signer(t, testMember)
	for i := range 3 {
		rec := signedRecord(t, s, header(s, fmt.Sprint("m-", i), 0))
		if _, err := l.Append(context.Background(), rec, s.Certificate().Raw); err != nil {
			t.Fatalf("Append %d: %v", i, err)
		}
	}
	if l.behind.Load() == 0 {
		t.Fatal("the records were folded before the search; the test shows nothing")
	}
	res, err := l.Search(context.Background(), Query{Service: searchDVHC})
	if err != nil {
		t.Fatalf("Search: %v", err)
	}
	if diff := cmp.Diff([]uint64{0, 1, 2}, searchIndexes(res)); diff != "" {
		t.Errorf("Search of journaled records mismatch (-want +got):\n%s", diff)
	}
}

func TestSearchBadQuery(t *testing.T) {
	l, _ := searchLog(t)
	tests := []struct {
		name string
		q    Query
		msg  string
	}{
		{"peer", Query{Peer: "G09"},
			`peer: malformed identifier: client "G09": want INSTANCE/CLASS/CODE[/SUBSYSTEM]`},
		{"peer service", Query{Peer: searchDVHC},
			`peer: malformed identifier: client "` + searchDVHC + `": want INSTANCE/CLASS/CODE[/SUBSYSTEM]`},
		{"service", Query{Service: "VN/NN/000.00.00.G09/dvhc"},
			`service: malformed identifier: service "VN/NN/000.00.00.G09/dvhc": ` +
				`want INSTANCE/CLASS/CODE/SUBSYSTEM/package.Service`},
		{"digest length", Query{PayloadSHA256: []byte{1, 2, 3}}, "payload sha256 of 3 bytes, want 32"},
		{"until equals since", Query{Since: searchStart, Until: searchStart},
			"until 2026-12-04T09:00:00Z is not after since 2026-12-04T09:00:00Z"},
		{"until before since", Query{Since: searchStart, Until: searchStart.Add(-time.Millisecond)},
			"until 2026-12-04T08:59:59.999Z is not after since 2026-12-04T09:00:00Z"},
		{"kind", Query{Kind: 42}, "unknown record kind 42"},
		{"code", Query{Code: codePtr(17)}, "code 17 is not a gRPC code"},
		{"message id", Query{MessageID: strings.Repeat("x", 1025)},
			"message id of 1025 bytes is longer than the 1024 bytes the log indexes"},
		{"limit", Query{Limit: -1}, "negative limit -1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			want := "invalid evidence search: " + tt.msg
			if err := tt.q.Check(); !errors.Is(err, ErrBadQuery) || err.Error() != want {
				t.Errorf("Check = %v, want %q", err, want)
			}
			_, err := l.Search(context.Background(), tt.q)
			if !errors.Is(err, ErrBadQuery) || err.Error() != want {
				t.Errorf("Search error = %v, want %q", err, want)
			}
		})
	}
}

func TestCounterparty(t *testing.T) {
	h := &exchangev1.Header{Client: "VN/NN/000.00.00.G22/vanban", Service: searchDVHC}
	const provider = "VN/NN/000.00.00.G09/dvhc"
	request, response := exchangev1.Direction_DIRECTION_REQUEST, exchangev1.Direction_DIRECTION_RESPONSE
	tests := []struct {
		kind evidencev1.RecordKind
		dir  exchangev1.Direction
		// own: the header names the record's node as its sender, and
		// the record has no signature, as a consumer node records the
		// calls it refuses before sending.
		own  bool
		want string
	}{
		{evidencev1.RecordKind_RECORD_KIND_REQUEST_SENT, request, false, provider},
		{evidencev1.RecordKind_RECORD_KIND_RESPONSE_RECEIVED, response, false, provider},
		{evidencev1.RecordKind_RECORD_KIND_FAILED, request, false, provider},
		{evidencev1.RecordKind_RECORD_KIND_REQUEST_RECEIVED, request, false, h.Client},
		{evidencev1.RecordKind_RECORD_KIND_RESPONSE_SENT, response, false, h.Client},
		{evidencev1.RecordKind_RECORD_KIND_REFUSED, request, false, h.Client},
		{evidencev1.RecordKind_RECORD_KIND_REFUSED, response, false, provider},
		{evidencev1.RecordKind_RECORD_KIND_REFUSED, exchangev1.Direction_DIRECTION_UNSPECIFIED, false, ""},
		// A call the consumer refused before sending is with the provider.
		{evidencev1.RecordKind_RECORD_KIND_REFUSED, request, true, provider},
		{evidencev1.RecordKind_RECORD_KIND_REFUSED, response, true, h.Client},
		// Kinds other than refusals say the side themselves.
		{evidencev1.RecordKind_RECORD_KIND_REQUEST_SENT, request, true, provider},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprint(tt.kind, "/", tt.dir, "/own=", tt.own), func(t *testing.T) {
			hd := &exchangev1.Header{Client: h.Client, Service: h.Service, Direction: tt.dir, SenderNode: testNode}
			rec := &evidencev1.Record{Kind: tt.kind, Node: testNode}
			if !tt.own {
				rec.Node = "spiffe://vn.ketnoi/node/NN/000.00.00.G12/taichinh"
			}
			e := Entry{Record: rec, Header: hd}
			if got := e.Counterparty(); got != tt.want {
				t.Errorf("Counterparty = %q, want %q", got, tt.want)
			}
		})
	}
	// A signed refusal is of a message that came from a peer, whatever
	// sender its header claims.
	signed := Entry{
		Record: &evidencev1.Record{Kind: evidencev1.RecordKind_RECORD_KIND_REFUSED, Node: testNode, Signature: []byte{1}},
		Header: &exchangev1.Header{Client: h.Client, Service: h.Service, Direction: request, SenderNode: testNode},
	}
	if got := signed.Counterparty(); got != h.Client {
		t.Errorf("Counterparty of a signed refusal naming this node as sender = %q, want %q", got, h.Client)
	}
	noHeader := Entry{Record: &evidencev1.Record{Kind: evidencev1.RecordKind_RECORD_KIND_REQUEST_SENT}}
	if got := noHeader.Counterparty(); got != "" {
		t.Errorf("Counterparty without a header = %q, want empty", got)
	}
	badService := Entry{
		Record: &evidencev1.Record{Kind: evidencev1.RecordKind_RECORD_KIND_REQUEST_SENT},
		Header: &exchangev1.Header{Service: "noslash"},
	}
	if got := badService.Counterparty(); got != "" {
		t.Errorf("Counterparty of a service without a subsystem = %q, want empty", got)
	}
}

// TestSearchPeerFindsOwnRefusals: a consumer node's records of the calls it
// refused before sending match --peer as its other records of calls to
// that provider do: by the service's subsystem and its member, not by the
// node's own calling subsystem.
func TestSearchPeerFindsOwnRefusals(t *testing.T) {
	l, _ := openLog(t)
	s := newCA(t, "ca").signer(t, testMember)
	sent := header(s, "m-1", 0)
	sent.Client, sent.Service, sent.SenderNode = "VN/NN/000.00.00.G22/vanban", searchDVHC, testNode
	refused := &exchangev1.Header{
		MessageId: "m-2", Direction: exchangev1.Direction_DIRECTION_REQUEST, Client: "VN/NN/000.00.00.G22/vanban",
		Service: searchDVHC, Method: "Delete", SenderNode: testNode,
	}
	raw, err := proto.Marshal(refused)
	if err != nil {
		t.Fatal(err)
	}
	recs := []*evidencev1.Record{
		searchRecord(t, s, sent, evidencev1.RecordKind_RECORD_KIND_REQUEST_SENT, codes.OK),
		{Kind: evidencev1.RecordKind_RECORD_KIND_REFUSED, MessageId: "m-2", Node: testNode, Header: raw,
			Code: int32(codes.Unimplemented), Reason: "METHOD_UNKNOWN: service has no method Delete"},
	}
	for i, rec := range recs {
		rec.Node = testNode
		if _, err := l.Append(context.Background(), rec, s.Certificate().Raw); err != nil {
			t.Fatalf("Append %d: %v", i, err)
		}
	}
	for peer, want := range map[string][]uint64{
		"VN/NN/000.00.00.G09":        {0, 1},
		"VN/NN/000.00.00.G09/dvhc":   {0, 1},
		"VN/NN/000.00.00.G22":        {},
		"VN/NN/000.00.00.G22/vanban": {},
	} {
		res, err := l.Search(context.Background(), Query{Peer: peer})
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(want, searchIndexes(res)); diff != "" {
			t.Errorf("--peer %s (-want +got):\n%s", peer, diff)
		}
	}
}
