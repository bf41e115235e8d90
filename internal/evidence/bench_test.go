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

func randomBytes(n int) []byte {
	b := make([]byte, n)
	rand.Read(b)
	return b
}
