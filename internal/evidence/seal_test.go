package evidence

import (
	"bytes"
	"context"
	"errors"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/ketnoi/ketnoi/internal/exchange"
	"github.com/ketnoi/ketnoi/internal/gather"
	"github.com/ketnoi/ketnoi/internal/sign"
	evidencev1 "github.com/ketnoi/ketnoi/proto/ketnoi/evidence/v1"
	exchangev1 "github.com/ketnoi/ketnoi/proto/ketnoi/exchange/v1"
)

// unsignedItem is the record of an outgoing header the writer is to sign.
func unsignedItem(t *testing.T, s *sign.Signer, id string) Item {
	t.Helper()
	hb, err := proto.MarshalOptions{Deterministic: true}.Marshal(header(s, id, 0))
	if err != nil {
		t.Fatal(err)
	}
	return Item{Sign: true, SignerCert: s.Certificate().Raw, Record: &evidencev1.Record{
		Kind: evidencev1.RecordKind_RECORD_KIND_REQUEST_SENT, MessageId: id, Node: testNode, Peer: testPeer,
		Header: hb, SignatureVerified: true,
	}}
}

func openSealingLog(t *testing.T, seal func([][]byte) ([]*exchangev1.SignedHeader, error), g *gather.Policy) *Log {
	t.Helper()
	l, err := Open(filepath.Join(t.TempDir(), "evidence.db"), Options{Node: testNode, Seal: seal, Gather: g})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

// Headers the writer signs share one signature per commit, the signed
// headers verify, and the log stores exactly what was signed.
func TestWriterSignsEachCommitOnce(t *testing.T) {
	ca := newCA(t, "ca")
	s := ca.signer(t, testMember)
	var signatures atomic.Int64
	l := openSealingLog(t, func(hs [][]byte) ([]*exchangev1.SignedHeader, error) {
		signatures.Add(1)
		return exchange.SignBatch(s, hs)
	}, nil)

	ctx := context.Background()
	items := []Item{unsignedItem(t, s, "m-1"), unsignedItem(t, s, "m-2"), unsignedItem(t, s, "m-3")}
	rs, err := l.StartItems(ctx, items...)
	if err != nil {
		t.Fatal(err)
	}
	var root []byte
	for i, r := range rs {
		sh, err := r.Signed(ctx)
		if err != nil {
			t.Fatalf("Signed %d: %v", i, err)
		}
		if err := exchange.VerifySignedHeader(s.Certificate(), sh); err != nil {
			t.Errorf("header %d: %v", i, err)
		}
		if !bytes.Equal(sh.GetHeader(), items[i].Record.GetHeader()) {
			t.Errorf("header %d: signed bytes differ from the record's", i)
		}
		if i == 0 {
			root = sh.GetBatch().GetRoot()
		} else if !bytes.Equal(root, sh.GetBatch().GetRoot()) {
			t.Errorf("header %d: another batch than header 0", i)
		}
		n, err := r.Wait(ctx)
		if err != nil {
			t.Fatal(err)
		}
		e, err := l.Entry(n)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(e.Record.GetSignature(), sh.GetSignature()) || e.Record.GetBatch().GetSize() != 3 {
			t.Errorf("record %d holds signature %x batch of %d, want the signed header's", n,
				e.Record.GetSignature()[:4], e.Record.GetBatch().GetSize())
		}
	}
	if got := signatures.Load(); got != 1 {
		t.Errorf("%d signatures for one commit, want 1", got)
	}
	if rep, err := l.Verify(ctx, ca.pool); err != nil {
		t.Errorf("Verify: %v (%+v)", err, rep)
	}
}

// When signing fails nothing of the commit is logged and every caller
// learns it, through Signed and Wait.
func TestWriterSigningFailureFailsTheCommit(t *testing.T) {
	ca := newCA(t, "ca")
	s := ca.signer(t, testMember)
	boom := errors.New("signing key unavailable")
	l := openSealingLog(t, func([][]byte) ([]*exchangev1.SignedHeader, error) { return nil, boom }, nil)
	ctx := context.Background()
	plain := signedRecord(t, s, header(s, "plain", 0))
	rs, err := l.StartItems(ctx, unsignedItem(t, s, "m-1"), Item{Record: plain, SignerCert: s.Certificate().Raw})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := rs[0].Signed(ctx); !errors.Is(err, boom) {
		t.Errorf("Signed: %v, want %v", err, boom)
	}
	for i, r := range rs {
		if _, err := r.Wait(ctx); !errors.Is(err, boom) {
			t.Errorf("Wait %d: %v, want %v", i, err, boom)
		}
	}
	if size, _ := l.TreeHead(); size != 0 {
		t.Errorf("log holds %d records after a failed commit", size)
	}
}

func TestStartItemsRefusesSigningWithoutSealer(t *testing.T) {
	ca := newCA(t, "ca")
	s := ca.signer(t, testMember)
	l, _ := openLog(t)
	if _, err := l.StartItems(context.Background(), unsignedItem(t, s, "m-1")); err == nil {
		t.Fatal("a record to sign was accepted by a log without a sealer")
	}
}

// Under load the writer waits for more records, so records started one
// after the other by separate callers share a commit.
func TestWriterGathersUnderLoad(t *testing.T) {
	ca := newCA(t, "ca")
	s := ca.signer(t, testMember)
	var active atomic.Int64
	active.Store(4) // target: two records
	var signatures atomic.Int64
	l := openSealingLog(t, func(hs [][]byte) ([]*exchangev1.SignedHeader, error) {
		signatures.Add(1)
		return exchange.SignBatch(s, hs)
	}, &gather.Policy{Delay: time.Hour, MinActive: 4, Active: &active})

	ctx := context.Background()
	var wg sync.WaitGroup
	rs := make(chan *Receipt, 2)
	for i := range 2 {
		wg.Go(func() {
			r, err := l.StartItems(ctx, unsignedItem(t, s, "n-"+string(rune('a'+i))))
			if err != nil {
				t.Error(err)
				return
			}
			rs <- r[0]
		})
	}
	wg.Wait()
	close(rs)
	for r := range rs {
		if _, err := r.Wait(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if got := signatures.Load(); got != 1 {
		t.Errorf("two callers under load: %d signatures, want 1 shared", got)
	}
}

// Exchanges that are open but idle count as in progress; a lone record
// does not wait the whole delay for records that never come.
func TestWriterStopsGatheringWhenQuiet(t *testing.T) {
	ca := newCA(t, "ca")
	s := ca.signer(t, testMember)
	var active atomic.Int64
	active.Store(40) // forty open feeds, none sending
	l := openSealingLog(t, func(hs [][]byte) ([]*exchangev1.SignedHeader, error) {
		return exchange.SignBatch(s, hs)
	}, &gather.Policy{Delay: time.Hour, Quiet: time.Millisecond, MinActive: 8, Active: &active})
	ctx := context.Background()
	rs, err := l.StartItems(ctx, unsignedItem(t, s, "lone"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := rs[0].Wait(ctx); err != nil {
		t.Fatal(err)
	}
}
