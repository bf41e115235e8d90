package evidence

import (
	"context"
	"crypto/x509"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	bolt "go.etcd.io/bbolt"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/testing/protocmp"
	"google.golang.org/protobuf/types/known/timestamppb"

	evidencev1 "github.com/ketnoi/ketnoi/proto/ketnoi/evidence/v1"
	exchangev1 "github.com/ketnoi/ketnoi/proto/ketnoi/exchange/v1"
)

// serve serves NewService(l, roots) on loopback and returns a client.
func serve(t *testing.T, l *Log, roots *x509.CertPool) evidencev1.EvidenceServiceClient {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	srv := grpc.NewServer()
	evidencev1.RegisterEvidenceServiceServer(srv, NewService(l, roots))
	go srv.Serve(lis)
	t.Cleanup(srv.Stop)

	conn, err := grpc.NewClient(lis.Addr().String(),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	t.Cleanup(func() { conn.Close() })
	return evidencev1.NewEvidenceServiceClient(conn)
}

// callContext returns a context bounding one test call.
func callContext(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestServiceTrace(t *testing.T) {
	ctx := callContext(t)
	l, _ := openLog(t)
	ca := newCA(t, "ca")
	s, unknown := ca.signer(t, testMember), ca.signer(t, testMember)

	refusal := signedRecord(t, unknown, header(unknown, "m-1", 2))
	refusal.Kind = evidencev1.RecordKind_RECORD_KIND_REFUSED
	refusal.SignatureVerified = false
	refusal.Code = int32(codes.Unauthenticated)
	refusal.Reason = "signer certificate unknown"
	appends := []struct {
		rec  *evidencev1.Record
		cert []byte
	}{
		{signedRecord(t, s, header(s, "m-1", 0)), s.Certificate().Raw},
		{signedRecord(t, s, header(s, "m-2", 0)), nil},
		{signedRecord(t, s, header(s, "m-1", 1)), nil},
		{refusal, nil},
	}
	for i, a := range appends {
		if _, err := l.Append(ctx, a.rec, a.cert); err != nil {
			t.Fatalf("Append %d: %v", i, err)
		}
	}
	size, root := l.TreeHead()

	client := serve(t, l, ca.pool)
	got, err := client.TraceMessage(ctx, &evidencev1.TraceMessageRequest{MessageId: "m-1"})
	if err != nil {
		t.Fatalf("TraceMessage: %v", err)
	}
	want := &evidencev1.TraceMessageResponse{
		Records: []*evidencev1.TracedRecord{
			{Index: 0, Record: appends[0].rec, SignerCertificate: s.Certificate().Raw},
			{Index: 2, Record: appends[2].rec, SignerCertificate: s.Certificate().Raw},
			{Index: 3, Record: refusal},
		},
		TreeSize: size,
		TreeRoot: root[:],
	}
	if diff := cmp.Diff(want, got, protocmp.Transform()); diff != "" {
		t.Errorf("TraceMessage mismatch (-want +got):\n%s", diff)
	}
}

func TestServiceTraceErrors(t *testing.T) {
	ctx := callContext(t)
	l, _ := openLog(t)
	ca := newCA(t, "ca")
	s := ca.signer(t, testMember)
	rec := signedRecord(t, s, header(s, "m-1", 0))
	if _, err := l.Append(ctx, rec, s.Certificate().Raw); err != nil {
		t.Fatalf("Append: %v", err)
	}
	client := serve(t, l, ca.pool)

	tests := []struct {
		name string
		id   string
		code codes.Code
		msg  string
	}{
		{"empty id", "", codes.InvalidArgument, "message id is empty"},
		{"unknown id", "m-9", codes.NotFound, "no records for message m-9"},
		{"prefix of a known id", "m-", codes.NotFound, "no records for message m-"},
		{"id too long to be indexed", strings.Repeat("x", 1025), codes.InvalidArgument,
			"message id of 1025 bytes is longer than the 1024 bytes the log indexes"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := client.TraceMessage(ctx, &evidencev1.TraceMessageRequest{MessageId: tt.id})
			st := status.Convert(err)
			if st.Code() != tt.code || st.Message() != tt.msg {
				t.Errorf("TraceMessage error = %v, %q; want %v, %q", st.Code(), st.Message(), tt.code, tt.msg)
			}
		})
	}
}

func TestServiceVerify(t *testing.T) {
	ca := newCA(t, "ca")
	s := ca.signer(t, testMember)
	tests := []struct {
		name   string
		roots  *x509.CertPool
		chains bool
	}{
		{"with trust bundle", ca.pool, true},
		{"without trust bundle", nil, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := callContext(t)
			l, _ := openLog(t)
			for i := range 5 {
				rec := signedRecord(t, s, header(s, fmt.Sprint("m-", i), 0))
				if _, err := l.Append(ctx, rec, s.Certificate().Raw); err != nil {
					t.Fatalf("Append %d: %v", i, err)
				}
			}
			// Two refusals without a verified signature: one of a call
			// refused before sending, with none, and one of a message whose
			// signature did not verify.
			own := &evidencev1.Record{Kind: evidencev1.RecordKind_RECORD_KIND_REFUSED, MessageId: "m-5",
				Node: testNode, Header: []byte{0xff}, Code: int32(codes.Unimplemented)}
			bad := signedRecord(t, s, header(s, "m-6", 0))
			bad.Kind, bad.SignatureVerified, bad.Signature = evidencev1.RecordKind_RECORD_KIND_REFUSED, false, []byte{1}
			for _, rec := range []*evidencev1.Record{own, bad} {
				if _, err := l.Append(ctx, rec, nil); err != nil {
					t.Fatalf("Append: %v", err)
				}
			}
			size, root := l.TreeHead()

			got, err := serve(t, l, tt.roots).VerifyLog(ctx, &evidencev1.VerifyLogRequest{})
			if err != nil {
				t.Fatalf("VerifyLog: %v", err)
			}
			want := &evidencev1.VerifyLogResponse{
				TreeSize:                 size,
				TreeRoot:                 root[:],
				SignaturesChecked:        5,
				CertificateChainsChecked: tt.chains,
				UnsignedRecords:          2,
				UnsignedRefusals:         2,
			}
			if diff := cmp.Diff(want, got, protocmp.Transform()); diff != "" {
				t.Errorf("VerifyLog mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

func TestServiceVerifyTampered(t *testing.T) {
	ctx := callContext(t)
	l, path := openLog(t)
	ca := newCA(t, "ca")
	s := ca.signer(t, testMember)
	var recs []*evidencev1.Record
	for i := range 4 {
		rec := signedRecord(t, s, header(s, fmt.Sprint("m-", i), 0))
		if _, err := l.Append(ctx, rec, s.Certificate().Raw); err != nil {
			t.Fatalf("Append %d: %v", i, err)
		}
		recs = append(recs, rec)
	}
	if err := l.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	// Record 2 is rewritten as refused: a well-formed record, signed
	// header intact, that the tree does not cover.
	forged := proto.Clone(recs[2]).(*evidencev1.Record)
	forged.Kind = evidencev1.RecordKind_RECORD_KIND_REFUSED
	forged.Code = int32(codes.PermissionDenied)
	leaf, err := proto.MarshalOptions{Deterministic: true}.Marshal(forged)
	if err != nil {
		t.Fatalf("marshal forged record: %v", err)
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		t.Fatalf("open bbolt: %v", err)
	}
	err = db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucketLeaves).Put(key(2), leaf) })
	db.Close()
	if err != nil {
		t.Fatalf("tamper: %v", err)
	}
	// The node reopens the log: the stored hashes and root still agree,
	// only the leaf changed.
	l, err = Open(path, Options{Node: testNode})
	if err != nil {
		t.Fatalf("reopen: %v", err)
	}
	t.Cleanup(func() { l.Close() })

	_, err = serve(t, l, ca.pool).VerifyLog(ctx, &evidencev1.VerifyLogRequest{})
	st := status.Convert(err)
	want := "record 2: leaf hash does not match the tree"
	if st.Code() != codes.DataLoss || st.Message() != want {
		t.Fatalf("VerifyLog error = %v, %q; want DataLoss, %q", st.Code(), st.Message(), want)
	}
	wantDetails := []any{&evidencev1.TracedRecord{
		Index:             2,
		Record:            forged,
		SignerCertificate: s.Certificate().Raw,
	}}
	if diff := cmp.Diff(wantDetails, st.Details(), protocmp.Transform()); diff != "" {
		t.Errorf("VerifyLog details mismatch (-want +got):\n%s", diff)
	}
}

// TestServiceVerifyWhileAppending checks that verification reads a
// consistent snapshot while writers append.
func TestServiceVerifyWhileAppending(t *testing.T) {
	const writers, perWriter = 8, 25
	ctx := callContext(t)
	l, _ := openLog(t)
	ca := newCA(t, "ca")
	s := ca.signer(t, testMember)
	first := signedRecord(t, s, header(s, "first", 0))
	if _, err := l.Append(ctx, first, s.Certificate().Raw); err != nil {
		t.Fatalf("Append: %v", err)
	}
	client := serve(t, l, ca.pool)

	var wg sync.WaitGroup
	errs := make(chan error, writers*perWriter)
	for w := range writers {
		wg.Go(func() {
			for i := range perWriter {
				rec := signedRecord(t, s, header(s, fmt.Sprintf("m-%d-%d", w, i), 0))
				if _, err := l.Append(ctx, rec, nil); err != nil {
					errs <- err
				}
			}
		})
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()

	var sizes []uint64
	for verifying := true; verifying; {
		select {
		case <-done:
			verifying = false
		default:
		}
		got, err := client.VerifyLog(ctx, &evidencev1.VerifyLogRequest{})
		if err != nil {
			t.Fatalf("VerifyLog during appends: %v", err)
		}
		if got.GetSignaturesChecked() != got.GetTreeSize() {
			t.Errorf("VerifyLog checked %d signatures of %d records",
				got.GetSignaturesChecked(), got.GetTreeSize())
		}
		sizes = append(sizes, got.GetTreeSize())
	}
	close(errs)
	for err := range errs {
		t.Errorf("Append: %v", err)
	}

	if last, want := sizes[len(sizes)-1], uint64(1+writers*perWriter); last != want {
		t.Errorf("VerifyLog after the appends saw %d records, want %d", last, want)
	}
	for i := 1; i < len(sizes); i++ {
		if sizes[i] < sizes[i-1] {
			t.Errorf("VerifyLog sizes went backwards: %v", sizes)
			break
		}
	}
}

// TestServiceVerifyOneAtATime checks that a VerifyLog waits for the one
// running, and gives up when its caller does.
func TestServiceVerifyOneAtATime(t *testing.T) {
	l, _ := openLog(t)
	svc := NewService(l, nil).(*service)
	svc.verifying <- struct{}{} // a pass is running

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := svc.VerifyLog(ctx, &evidencev1.VerifyLogRequest{})
	if got := status.Code(err); got != codes.Canceled {
		t.Errorf("VerifyLog while another runs, caller gone: code %v, want Canceled", got)
	}

	<-svc.verifying // the pass ends
	got, err := svc.VerifyLog(callContext(t), &evidencev1.VerifyLogRequest{})
	if err != nil {
		t.Fatalf("VerifyLog after the other pass: %v", err)
	}
	if got.GetTreeSize() != 0 || got.GetCertificateChainsChecked() {
		t.Errorf("VerifyLog of an empty log without roots = %v", got)
	}
}

func TestServiceSearch(t *testing.T) {
	ctx := callContext(t)
	l, payloadA := searchLog(t)
	size, root := l.TreeHead()
	client := serve(t, l, nil)

	got, err := client.SearchRecords(ctx, &evidencev1.SearchRecordsRequest{
		Peer:          "VN/NN/000.00.00.G09",
		PayloadSha256: payloadA,
		Since:         timestamppb.New(searchStart),
		Until:         timestamppb.New(searchStart.Add(time.Hour)),
		Kind:          evidencev1.RecordKind_RECORD_KIND_REQUEST_SENT,
		Code:          proto.Int32(int32(codes.OK)),
	})
	if err != nil {
		t.Fatalf("SearchRecords: %v", err)
	}
	rec0, err := l.Entry(0)
	if err != nil {
		t.Fatalf("Entry: %v", err)
	}
	want := &evidencev1.SearchRecordsResponse{
		Records:  []*evidencev1.TracedRecord{{Index: 0, Record: rec0.Record}},
		TreeSize: size,
		TreeRoot: root[:],
	}
	if diff := cmp.Diff(want, got, protocmp.Transform()); diff != "" {
		t.Errorf("SearchRecords mismatch (-want +got):\n%s", diff)
	}

	// A limit ends the page where the next match is, and from_index
	// continues there.
	var pages [][]uint64
	from := uint64(0)
	for range 5 {
		got, err := client.SearchRecords(ctx, &evidencev1.SearchRecordsRequest{
			Peer: "VN/NN/000.00.00.G12", Limit: 3, FromIndex: from,
		})
		if err != nil {
			t.Fatalf("SearchRecords from %d: %v", from, err)
		}
		pages = append(pages, tracedIndexes(got.GetRecords()))
		if got.NextIndex == nil {
			break
		}
		from = got.GetNextIndex()
	}
	if diff := cmp.Diff([][]uint64{{2, 3, 4}, {6}}, pages); diff != "" {
		t.Errorf("SearchRecords pages mismatch (-want +got):\n%s", diff)
	}
}

// tracedIndexes returns the indexes of recs.
func tracedIndexes(recs []*evidencev1.TracedRecord) []uint64 {
	indexes := []uint64{}
	for _, tr := range recs {
		indexes = append(indexes, tr.GetIndex())
	}
	return indexes
}

// TestServiceSearchCaps checks that a response holds no more than 1000
// records, whatever the limit asked, and ends early, with next_index
// set, before its records pass 2 MiB.
func TestServiceSearchCaps(t *testing.T) {
	ctx := callContext(t)
	l, _ := openLog(t)
	appendMany(t, l, 1200)
	big := make([]*evidencev1.Record, 30)
	for i := range big {
		big[i] = &evidencev1.Record{
			Kind:      evidencev1.RecordKind_RECORD_KIND_REFUSED,
			MessageId: fmt.Sprint("big-", i),
			Header:    []byte{0xff},
			Code:      int32(codes.InvalidArgument),
			Reason:    strings.Repeat("r", 100<<10),
		}
	}
	if _, err := l.StartAll(ctx, big, make([][]byte, len(big))); err != nil {
		t.Fatalf("StartAll: %v", err)
	}
	client := serve(t, l, nil)

	got, err := client.SearchRecords(ctx, &evidencev1.SearchRecordsRequest{Limit: 5000})
	if err != nil {
		t.Fatalf("SearchRecords: %v", err)
	}
	if n := len(got.GetRecords()); n != maxSearchLimit || got.GetNextIndex() != maxSearchLimit {
		t.Errorf("SearchRecords with limit 5000 = %d records, next %d; want %d, %d",
			n, got.GetNextIndex(), maxSearchLimit, maxSearchLimit)
	}

	req := &evidencev1.SearchRecordsRequest{Kind: evidencev1.RecordKind_RECORD_KIND_REFUSED}
	got, err = client.SearchRecords(ctx, req)
	if err != nil {
		t.Fatalf("SearchRecords of large records: %v", err)
	}
	n := len(got.GetRecords())
	if n == 0 || n >= len(big) || proto.Size(got) > maxResponseBytes+1024 {
		t.Fatalf("SearchRecords of 30 records of 100 KiB = %d records in %d bytes; "+
			"want fewer than 30 in at most 2 MiB", n, proto.Size(got))
	}
	if want := uint64(1200 + n); got.NextIndex == nil || got.GetNextIndex() != want {
		t.Fatalf("next index = %v, want %d", got.NextIndex, want)
	}
	req.FromIndex = got.GetNextIndex()
	rest, err := client.SearchRecords(ctx, req)
	if err != nil {
		t.Fatalf("SearchRecords continued: %v", err)
	}
	if m := len(rest.GetRecords()); n+m != len(big) || rest.NextIndex != nil {
		t.Errorf("SearchRecords continued = %d records, next %v; want %d, none",
			m, rest.NextIndex, len(big)-n)
	}
}

func TestServiceSearchErrors(t *testing.T) {
	ctx := callContext(t)
	l, _ := searchLog(t)
	client := serve(t, l, nil)
	at := timestamppb.New(searchStart)
	tests := []struct {
		name string
		req  *evidencev1.SearchRecordsRequest
		msg  string
	}{
		{"peer", &evidencev1.SearchRecordsRequest{Peer: "VN/NN"},
			`peer: malformed identifier: client "VN/NN": want INSTANCE/CLASS/CODE[/SUBSYSTEM]`},
		{"service", &evidencev1.SearchRecordsRequest{Service: "AdminUnitService"},
			`service: malformed identifier: service "AdminUnitService": ` +
				`want INSTANCE/CLASS/CODE/SUBSYSTEM/package.Service`},
		{"payload digest", &evidencev1.SearchRecordsRequest{PayloadSha256: []byte("short")},
			"payload sha256 of 5 bytes, want 32"},
		{"until equals since", &evidencev1.SearchRecordsRequest{Since: at, Until: at},
			"until 2026-12-04T09:00:00Z is not after since 2026-12-04T09:00:00Z"},
		{"until before since", &evidencev1.SearchRecordsRequest{
			Since: at, Until: timestamppb.New(searchStart.Add(-time.Hour)),
		}, "until 2026-12-04T08:00:00Z is not after since 2026-12-04T09:00:00Z"},
		{"since out of range", &evidencev1.SearchRecordsRequest{
			Since: &timestamppb.Timestamp{Seconds: 1, Nanos: -1},
		}, "since: seconds 1 and nanos -1 are not a time from year 1 to 9999"},
		{"kind", &evidencev1.SearchRecordsRequest{Kind: 9}, "unknown record kind 9"},
		{"code too large", &evidencev1.SearchRecordsRequest{Code: proto.Int32(17)},
			"code 17 is not a gRPC code"},
		{"negative code", &evidencev1.SearchRecordsRequest{Code: proto.Int32(-1)},
			"code -1 is not a gRPC code"},
		{"message id", &evidencev1.SearchRecordsRequest{MessageId: strings.Repeat("x", 1025)},
			"message id of 1025 bytes is longer than the 1024 bytes the log indexes"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := client.SearchRecords(ctx, tt.req)
			st := status.Convert(err)
			want := "invalid evidence search: " + tt.msg
			if st.Code() != codes.InvalidArgument || st.Message() != want {
				t.Errorf("SearchRecords error = %v, %q; want InvalidArgument, %q", st.Code(), st.Message(), want)
			}
		})
	}
}

// TestServiceLargeRecords: a record can be larger than the 4 MiB a gRPC
// client accepts by default (a signed response header whose status
// message echoes a large request field). TraceMessage and SearchRecords
// still return every record: one per response when it must, continued
// from next_index, so a client that accepts one record plus 2 MiB reads
// them all.
func TestServiceLargeRecords(t *testing.T) {
	ctx := callContext(t)
	l, _ := openLog(t)
	ca := newCA(t, "ca")
	s := ca.signer(t, testMember)
	var recs []*evidencev1.Record
	for i, n := range []int{5 << 20, 5 << 20, 100, 3 << 20} {
		h := header(s, "m-big", uint64(i))
		h.Direction = exchangev1.Direction_DIRECTION_RESPONSE
		h.Status = &exchangev1.CallStatus{Code: int32(codes.InvalidArgument), Message: strings.Repeat("x", n)}
		recs = append(recs, signedRecord(t, s, h))
	}
	for i, rec := range recs {
		if _, err := l.Append(ctx, rec, s.Certificate().Raw); err != nil {
			t.Fatalf("Append %d: %v", i, err)
		}
	}

	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	srv := grpc.NewServer() // a node's admin server: gRPC's default send limit
	evidencev1.RegisterEvidenceServiceServer(srv, NewService(l, ca.pool))
	go srv.Serve(lis)
	t.Cleanup(srv.Stop)
	dial := func(opts ...grpc.CallOption) evidencev1.EvidenceServiceClient {
		conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()),
			grpc.WithDefaultCallOptions(opts...))
		if err != nil {
			t.Fatalf("dial: %v", err)
		}
		t.Cleanup(func() { conn.Close() })
		return evidencev1.NewEvidenceServiceClient(conn)
	}

	// gRPC's default limit cannot take one of these records.
	_, err = dial().TraceMessage(ctx, &evidencev1.TraceMessageRequest{MessageId: "m-big"})
	if status.Code(err) != codes.ResourceExhausted {
		t.Fatalf("TraceMessage with gRPC's default receive limit: %v, want ResourceExhausted", err)
	}

	client := dial(grpc.MaxCallRecvMsgSize(5<<20 + 2*maxResponseBytes))
	var traced, pages []uint64
	req := &evidencev1.TraceMessageRequest{MessageId: "m-big"}
	for range len(recs) + 1 {
		resp, err := client.TraceMessage(ctx, req)
		if err != nil {
			t.Fatalf("TraceMessage from %d: %v", req.GetFromIndex(), err)
		}
		pages = append(pages, uint64(len(resp.GetRecords())))
		for _, tr := range resp.GetRecords() {
			traced = append(traced, tr.GetIndex())
			if !proto.Equal(tr.GetRecord(), recs[tr.GetIndex()]) || len(tr.GetSignerCertificate()) == 0 {
				t.Errorf("record %d returned changed or without its certificate", tr.GetIndex())
			}
		}
		if resp.NextIndex == nil {
			break
		}
		req.FromIndex = resp.GetNextIndex()
	}
	// Record 2 is small, but record 3 (3 MiB) does not fit after it within
	// 2 MiB: every record comes in a response of its own.
	if diff := cmp.Diff([]uint64{0, 1, 2, 3}, traced); diff != "" {
		t.Errorf("traced indexes (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]uint64{1, 1, 1, 1}, pages); diff != "" {
		t.Errorf("records per TraceMessage response (-want +got):\n%s", diff)
	}

	var found []uint64
	sreq := &evidencev1.SearchRecordsRequest{}
	for range len(recs) + 1 {
		resp, err := client.SearchRecords(ctx, sreq)
		if err != nil {
			t.Fatalf("SearchRecords from %d: %v", sreq.GetFromIndex(), err)
		}
		for _, tr := range resp.GetRecords() {
			found = append(found, tr.GetIndex())
		}
		if resp.NextIndex == nil {
			break
		}
		sreq.FromIndex = resp.GetNextIndex()
	}
	if diff := cmp.Diff([]uint64{0, 1, 2, 3}, found); diff != "" {
		t.Errorf("searched indexes (-want +got):\n%s", diff)
	}

	_, err = client.TraceMessage(ctx, &evidencev1.TraceMessageRequest{MessageId: "m-big", FromIndex: 4})
	if status.Code(err) != codes.NotFound || status.Convert(err).Message() != "no records for message m-big from index 4" {
		t.Errorf("TraceMessage past the last record: %v, want NotFound naming the index", err)
	}
}
