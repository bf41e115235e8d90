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

	evidencev1 "github.com/ketnoi/ketnoi/proto/ketnoi/evidence/v1"
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
