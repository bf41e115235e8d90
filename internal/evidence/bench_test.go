package evidence

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	evidencev1 "github.com/ketnoi/ketnoi/proto/ketnoi/evidence/v1"
)

// BenchmarkAppend measures durable appends from 32 concurrent callers, as a
// busy node makes them, with signed records of realistic size and one
// message id per record. Time-ordered ids (such as UUIDv7) keep the
// message index append-only; random ids dirty one index page per record.
func BenchmarkAppend(b *testing.B) {
	ordered := func(i int64) string { return fmt.Sprintf("%016x", i) }
	random := func(int64) string { return hex.EncodeToString(randomBytes(16)) }
	b.Run("time-ordered-ids", func(b *testing.B) { benchmarkAppend(b, 32, ordered) })
	b.Run("random-ids", func(b *testing.B) { benchmarkAppend(b, 32, random) })
	// One caller waits for every commit alone: ns/op is the latency a
	// record adds to an exchange on an idle node.
	b.Run("one-caller", func(b *testing.B) { benchmarkAppend(b, 1, ordered) })
}

func benchmarkAppend(b *testing.B, callers int, id func(int64) string) {
	l, err := Open(filepath.Join(b.TempDir(), "evidence.db"), Options{Node: testNode})
	if err != nil {
		b.Fatalf("Open: %v", err)
	}
	defer l.Close()
	s := newCA(b, "ca").signer(b, testMember)
	signed := make([]*evidencev1.Record, 256)
	for i := range signed {
		signed[i] = signedRecord(b, s, header(s, fmt.Sprint("m-", i), 0))
	}
	cert := s.Certificate().Raw
	if _, err := l.Append(context.Background(), signed[0], cert); err != nil {
		b.Fatalf("Append: %v", err)
	}

	var (
		next atomic.Int64
		wg   sync.WaitGroup
	)
	b.ResetTimer()
	for range callers {
		wg.Go(func() {
			for {
				i := next.Add(1)
				if i > int64(b.N) {
					return
				}
				base := signed[i%int64(len(signed))]
				rec := &evidencev1.Record{
					Kind:              base.Kind,
					RecordedAt:        base.RecordedAt,
					MessageId:         id(i),
					Node:              base.Node,
					Peer:              base.Peer,
					Header:            base.Header,
					Signature:         base.Signature,
					SignatureVerified: true,
				}
				// Like a node, name the signer's certificate every time.
				if _, err := l.Append(context.Background(), rec, cert); err != nil {
					b.Errorf("Append: %v", err)
					return
				}
			}
		})
	}
	wg.Wait()
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "records/s")
}

// BenchmarkSearch measures Log.Search over a log of 100,000 records:
// filters that match no record, so the scan reads and decodes every
// record (the worst case, and the cost of any search that finds fewer
// records than its limit), and a lookup through the message index.
func BenchmarkSearch(b *testing.B) {
	const size = 100_000
	ctx := context.Background()
	l, _ := openLog(b)
	appendMany(b, l, size)
	if err := l.Flush(ctx); err != nil {
		b.Fatalf("Flush: %v", err)
	}
	scan := func(q Query) func(b *testing.B) {
		return func(b *testing.B) {
			for b.Loop() {
				res, err := l.Search(ctx, q)
				if err != nil || len(res.Entries) != 0 || res.Size != size {
					b.Fatalf("Search = %d entries of %d, %v; want none of %d", len(res.Entries), res.Size, err, size)
				}
			}
			b.ReportMetric(float64(size)*float64(b.N)/b.Elapsed().Seconds(), "records/s")
		}
	}
	b.Run("scan-by-kind", scan(Query{Kind: evidencev1.RecordKind_RECORD_KIND_REFUSED}))
	b.Run("scan-by-service", scan(Query{Service: searchOther}))
	b.Run("scan-by-peer-and-time", scan(Query{
		Peer:  "VN/NN/000.00.00.G12",
		Since: time.Now().Add(-time.Hour),
	}))
	b.Run("message-id", func(b *testing.B) {
		for b.Loop() {
			res, err := l.Search(ctx, Query{MessageID: "m-50000"})
			if err != nil || len(res.Entries) != 1 {
				b.Fatalf("Search = %d entries, %v; want 1", len(res.Entries), err)
			}
		}
	})
}

func randomBytes(n int) []byte {
	b := make([]byte, n)
	rand.Read(b)
	return b
}

// BenchmarkFold measures folding journaled records into the tree, the
// writer's work per record beyond the durable journal append: storing the
// record, its Merkle tree hashes and its message index entry, and the
// tree's commit. Each op folds one record; the appends are not timed.
func BenchmarkFold(b *testing.B) {
	const batch = 2048 // below the count at which the writer folds by itself
	l, err := Open(filepath.Join(b.TempDir(), "evidence.db"), Options{Node: testNode})
	if err != nil {
		b.Fatalf("Open: %v", err)
	}
	defer l.Close()
	l.foldEvery = time.Hour
	s := newCA(b, "ca").signer(b, testMember)
	base := signedRecord(b, s, header(s, "m-0", 0))
	cert := s.Certificate().Raw
	ctx := context.Background()
	b.ReportAllocs()
	b.ResetTimer()
	for done := 0; done < b.N; done += batch {
		b.StopTimer()
		var items []Item
		for i := range min(batch, b.N-done) {
			rec := &evidencev1.Record{
				Kind: base.Kind, RecordedAt: base.RecordedAt, MessageId: fmt.Sprintf("%016x", done+i),
				Node: base.Node, Peer: base.Peer, Header: base.Header, Signature: base.Signature,
				SignatureVerified: true,
			}
			items = append(items, Item{Record: rec, SignerCert: cert})
		}
		for len(items) > 0 {
			n := min(len(items), 256)
			rs, err := l.StartItems(ctx, items[:n]...)
			if err != nil {
				b.Fatal(err)
			}
			if _, err := rs[n-1].Wait(ctx); err != nil {
				b.Fatal(err)
			}
			items = items[n:]
		}
		b.StartTimer()
		if err := l.Flush(ctx); err != nil {
			b.Fatal(err)
		}
	}
}
