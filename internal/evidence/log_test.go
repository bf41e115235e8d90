package evidence

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	bolt "go.etcd.io/bbolt"
	"golang.org/x/mod/sumdb/tlog"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/testing/protocmp"

	evidencev1 "github.com/ketnoi/ketnoi/proto/ketnoi/evidence/v1"
)

func TestAppendAndLookup(t *testing.T) {
	ctx := context.Background()
	l, _ := openLog(t)
	s := newCA(t, "ca").signer(t, testMember)

	// Two exchanges, interleaved; the certificate is passed only once.
	var want = map[string][]Entry{}
	for i, id := range []string{"m-1", "m-2", "m-1", "m-2", "m-1"} {
		h := header(s, id, uint64(len(want[id])))
		rec := signedRecord(t, s, h)
		var cert []byte
		if i == 0 {
			cert = s.Certificate().Raw
		}
		n, err := l.Append(ctx, rec, cert)
		if err != nil {
			t.Fatalf("Append %d: %v", i, err)
		}
		if n != uint64(i) {
			t.Errorf("Append %d: index %d, want %d", i, n, i)
		}
		want[id] = append(want[id], Entry{Index: n, Record: rec, Header: h})
	}

	for id, entries := range want {
		got, err := l.ByMessageID(id)
		if err != nil {
			t.Fatalf("ByMessageID(%s): %v", id, err)
		}
		if diff := cmp.Diff(entries, got, protocmp.Transform()); diff != "" {
			t.Errorf("ByMessageID(%s) mismatch (-want +got):\n%s", id, diff)
		}
	}
	if got, err := l.ByMessageID("m-3"); err != nil || len(got) != 0 {
		t.Errorf("ByMessageID(m-3) = %d entries, %v; want none", len(got), err)
	}
	if got, err := l.ByMessageID("m"); err != nil || len(got) != 0 {
		t.Errorf("ByMessageID(m) = %d entries, %v; want none (prefix of other ids)", len(got), err)
	}

	der, err := l.Certificate(s.CertificateSHA256())
	if err != nil {
		t.Fatalf("Certificate: %v", err)
	}
	if diff := cmp.Diff(s.Certificate().Raw, der); diff != "" {
		t.Errorf("Certificate mismatch (-want +got):\n%s", diff)
	}
	if _, err := l.Certificate(make([]byte, 32)); !errors.Is(err, ErrNotFound) {
		t.Errorf("Certificate(unknown) error = %v, want ErrNotFound", err)
	}

	size, root := l.TreeHead()
	if size != 5 {
		t.Errorf("TreeHead size = %d, want 5", size)
	}
	if want := rootOf(t, l, size); root != want {
		t.Errorf("TreeHead root = %x, want %x", root, want)
	}
}

func TestAppendRejects(t *testing.T) {
	l, _ := openLog(t)
	s := newCA(t, "ca").signer(t, testMember)
	other := newCA(t, "ca").signer(t, testMember)
	good := signedRecord(t, s, header(s, "m-1", 0))

	tests := []struct {
		name string
		rec  *evidencev1.Record
		cert []byte
		want string
	}{
		{"nil record", nil, nil, "nil record"},
		{"no kind", &evidencev1.Record{MessageId: "m-1"}, nil, "record kind unspecified"},
		{"header does not parse", &evidencev1.Record{
			Kind: evidencev1.RecordKind_RECORD_KIND_REQUEST_RECEIVED, Header: []byte{0xff},
			SignatureVerified: true,
		}, s.Certificate().Raw, "parse header"},
		{"certificate not named by header", good, other.Certificate().Raw,
			"is not the one the header names"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := l.Append(context.Background(), tt.rec, tt.cert)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Append error = %v, want one containing %q", err, tt.want)
			}
		})
	}
	if size, _ := l.TreeHead(); size != 0 {
		t.Errorf("size after rejected appends = %d, want 0", size)
	}
}

func TestConcurrentAppend(t *testing.T) {
	for _, maxBatch := range []int{0, 1, 3} {
		t.Run(fmt.Sprint("MaxBatch=", maxBatch), func(t *testing.T) {
			testConcurrentAppend(t, Options{Node: testNode, MaxBatch: maxBatch})
		})
	}
}

func testConcurrentAppend(t *testing.T, opts Options) {
	const writers, each = 32, 25
	ctx := context.Background()
	l, err := Open(filepath.Join(t.TempDir(), "evidence.db"), opts)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	defer l.Close()
	ca := newCA(t, "ca")
	s := ca.signer(t, testMember)
	cert := s.Certificate().Raw

	recs := make([][]*evidencev1.Record, writers)
	for w := range recs {
		for i := range each {
			id := fmt.Sprintf("m-%d-%d", w, i)
			recs[w] = append(recs[w], signedRecord(t, s, header(s, id, 0)))
		}
	}

	var (
		mu   sync.Mutex
		byID = map[uint64]string{}
		wg   sync.WaitGroup
	)
	for w := range writers {
		wg.Go(func() {
			for _, rec := range recs[w] {
				id := rec.GetMessageId()
				n, err := l.Append(ctx, rec, cert)
				if err != nil {
					t.Errorf("Append %s: %v", id, err)
					return
				}
				mu.Lock()
				if prev, dup := byID[n]; dup {
					t.Errorf("index %d given to %s and %s", n, prev, id)
				}
				byID[n] = id
				mu.Unlock()
			}
		})
	}
	wg.Wait()

	size, root := l.TreeHead()
	if size != writers*each {
		t.Fatalf("size = %d, want %d", size, writers*each)
	}
	for n := range size {
		e, err := l.Entry(n)
		if err != nil {
			t.Fatalf("Entry(%d): %v", n, err)
		}
		if e.Record.GetMessageId() != byID[n] {
			t.Errorf("record %d is %q, want %q", n, e.Record.GetMessageId(), byID[n])
		}
	}
	if want := rootOf(t, l, size); root != want {
		t.Errorf("root = %x, want %x", root, want)
	}
	rep, err := l.Verify(ctx, ca.pool)
	if err != nil {
		t.Fatalf("Verify: %v", err)
	}
	want := Report{Size: size, Root: root, SignaturesChecked: int(size)}
	if diff := cmp.Diff(want, rep); diff != "" {
		t.Errorf("Verify report mismatch (-want +got):\n%s", diff)
	}
}

func TestAppendAfterClose(t *testing.T) {
	l, _ := openLog(t)
	s := newCA(t, "ca").signer(t, testMember)
	if err := l.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	_, err := l.Append(context.Background(), signedRecord(t, s, header(s, "m-1", 0)), nil)
	if !errors.Is(err, ErrClosed) {
		t.Errorf("Append after Close error = %v, want ErrClosed", err)
	}
}

func TestAppendReadOnly(t *testing.T) {
	l, path := openLog(t)
	l.Close()
	ro, err := OpenReadOnly(path)
	if err != nil {
		t.Fatalf("OpenReadOnly: %v", err)
	}
	defer ro.Close()
	s := newCA(t, "ca").signer(t, testMember)
	_, err = ro.Append(context.Background(), signedRecord(t, s, header(s, "m-1", 0)), nil)
	if !errors.Is(err, ErrReadOnly) {
		t.Errorf("Append on read-only log error = %v, want ErrReadOnly", err)
	}
}

func TestReopen(t *testing.T) {
	ctx := context.Background()
	l, path := openLog(t)
	s := newCA(t, "ca").signer(t, testMember)
	for i := range 7 {
		rec := signedRecord(t, s, header(s, fmt.Sprint("m-", i), 0))
		if _, err := l.Append(ctx, rec, s.Certificate().Raw); err != nil {
			t.Fatalf("Append: %v", err)
		}
	}
	size, root := l.TreeHead()
	if err := l.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}

	l2, err := Open(path, Options{})
	if err != nil {
		t.Fatalf("reopen: %v", err)
	}
	defer l2.Close()
	gotSize, gotRoot := l2.TreeHead()
	if gotSize != size || gotRoot != root {
		t.Errorf("after reopen TreeHead = %d %x, want %d %x", gotSize, gotRoot, size, root)
	}
	if got := l2.Node(); got != testNode {
		t.Errorf("after reopen Node = %q, want %q", got, testNode)
	}
	n, err := l2.Append(ctx, signedRecord(t, s, header(s, "m-7", 0)), nil)
	if err != nil || n != 7 {
		t.Errorf("Append after reopen = %d, %v; want 7", n, err)
	}
	if _, err := l2.Verify(ctx, nil); err != nil {
		t.Errorf("Verify after reopen: %v", err)
	}
}

func TestOpenOtherNode(t *testing.T) {
	l, path := openLog(t)
	l.Close()
	_, err := Open(path, Options{Node: testPeer})
	if err == nil || !strings.Contains(err.Error(), "belongs to node "+testNode) {
		t.Errorf("Open for another node error = %v, want one naming %s", err, testNode)
	}
}

func TestOpenReadOnlyLocked(t *testing.T) {
	_, path := openLog(t)
	_, err := OpenReadOnly(path)
	if !errors.Is(err, ErrLocked) {
		t.Fatalf("OpenReadOnly while open error = %v, want ErrLocked", err)
	}
	if !strings.Contains(err.Error(), "in use by a running node") {
		t.Errorf("error %q does not say the log is in use by a running node", err)
	}
}

func TestOpenReadOnlyBadFile(t *testing.T) {
	dir := t.TempDir()
	empty := filepath.Join(dir, "empty.db")
	if err := os.WriteFile(empty, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	other := filepath.Join(dir, "other.db")
	db, err := bolt.Open(other, 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	db.Close()

	tests := []struct{ name, path, want string }{
		{"missing", filepath.Join(dir, "none.db"), "no such file"},
		{"empty", empty, "empty file, not an evidence log"},
		{"other bbolt file", other, "not an evidence log: bucket leaves missing"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := OpenReadOnly(tt.path)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("OpenReadOnly error = %v, want one containing %q", err, tt.want)
			}
		})
	}
}

// TestOpenForeignFile: Open refuses a bbolt file that holds another
// program's buckets and none of a log's, such as a registry backup named
// as a node's evidence.db, and leaves it as it was, without a journal.
func TestOpenForeignFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "evidence.db")
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, name := range []string{"meta", "members", "nodes", "services"} {
			b, err := tx.CreateBucket([]byte(name))
			if err != nil {
				return err
			}
			if err := b.Put([]byte("k"), []byte("v")); err != nil {
				return err
			}
		}
		return nil
	})
	if cerr := db.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		t.Fatal(err)
	}
	before, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}

	_, err = Open(path, Options{Node: "spiffe://vn.ketnoi/node/NN/000.00.00.G22/node1"})
	const want = `: not an evidence log: it holds other buckets ("members", "nodes", "services") and none of a log's`
	if !errors.Is(err, ErrNotLog) || !strings.Contains(err.Error(), want) || strings.Contains(err.Error(), "\n") {
		t.Errorf("Open error = %v, want ErrNotLog with %q", err, want)
	}
	after, rerr := os.ReadFile(path)
	if rerr != nil || !bytes.Equal(before, after) {
		t.Errorf("Open changed the file (read error %v)", rerr)
	}
	if _, serr := os.Stat(path + journalSuffix); !errors.Is(serr, os.ErrNotExist) {
		t.Errorf("Open left a journal: stat error %v", serr)
	}
	if _, err := OpenReadOnly(path); !errors.Is(err, ErrNotLog) {
		t.Errorf("OpenReadOnly error = %v, want ErrNotLog", err)
	}
}

// rootOf recomputes the tree root of the first size records from their
// re-encoded leaves, keeping every hash in memory.
func rootOf(t *testing.T, l *Log, size uint64) tlog.Hash {
	t.Helper()
	var stored []tlog.Hash
	r := tlog.HashReaderFunc(func(idx []int64) ([]tlog.Hash, error) {
		out := make([]tlog.Hash, len(idx))
		for i, x := range idx {
			out[i] = stored[x]
		}
		return out, nil
	})
	for n := range size {
		e, err := l.Entry(n)
		if err != nil {
			t.Fatalf("Entry(%d): %v", n, err)
		}
		leaf, err := proto.MarshalOptions{Deterministic: true}.Marshal(e.Record)
		if err != nil {
			t.Fatalf("marshal: %v", err)
		}
		hs, err := tlog.StoredHashes(int64(n), leaf, r)
		if err != nil {
			t.Fatalf("StoredHashes: %v", err)
		}
		stored = append(stored, hs...)
	}
	root, err := tlog.TreeHash(int64(size), r)
	if err != nil {
		t.Fatalf("TreeHash: %v", err)
	}
	return root
}

func TestCommitFailure(t *testing.T) {
	ctx := context.Background()
	l, _ := openLog(t)
	s := newCA(t, "ca").signer(t, testMember)
	rec := func(id string) *evidencev1.Record { return signedRecord(t, s, header(s, id, 0)) }

	// The first commit waits until three more records are queued behind
	// it; the second commit, holding those three, fails.
	started, release := make(chan struct{}), make(chan struct{})
	commits := 0
	l.journalHook = func(records int) error {
		commits++
		switch commits {
		case 1:
			close(started)
			<-release
		case 2:
			return fmt.Errorf("injected failure of %d records", records)
		}
		return nil
	}

	first := make(chan error, 1)
	go func() {
		_, err := l.Append(ctx, rec("a"), s.Certificate().Raw)
		first <- err
	}()
	<-started
	var wg sync.WaitGroup
	errs := make([]error, 3)
	for i, id := range []string{"b", "c", "d"} {
		for len(l.queue) != i {
			runtime.Gosched()
		}
		wg.Go(func() { _, errs[i] = l.Append(ctx, rec(id), nil) })
	}
	for len(l.queue) != 3 {
		runtime.Gosched()
	}
	close(release)
	wg.Wait()

	if err := <-first; err != nil {
		t.Errorf("Append a: %v", err)
	}
	for i, err := range errs {
		if err == nil || !strings.Contains(err.Error(), "injected failure of 3 records") {
			t.Errorf("Append %d error = %v, want the injected failure", i, err)
		}
	}
	for _, id := range []string{"b", "c", "d"} {
		if got, err := l.ByMessageID(id); err != nil || len(got) != 0 {
			t.Errorf("ByMessageID(%s) = %d entries, %v; want none", id, len(got), err)
		}
	}
	n, err := l.Append(ctx, rec("e"), nil)
	if err != nil || n != 1 {
		t.Errorf("Append after failure = %d, %v; want index 1", n, err)
	}
	if rep, err := l.Verify(ctx, nil); err != nil || rep.Size != 2 {
		t.Errorf("Verify = %+v, %v; want 2 records", rep, err)
	}
}

func TestAppendCancelled(t *testing.T) {
	l, _ := openLog(t)
	s := newCA(t, "ca").signer(t, testMember)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := l.Append(ctx, signedRecord(t, s, header(s, "m-1", 0)), nil)
	if !errors.Is(err, context.Canceled) {
		t.Errorf("Append with cancelled context error = %v, want context.Canceled", err)
	}
	if size, _ := l.TreeHead(); size != 0 {
		t.Errorf("size = %d, want 0", size)
	}
}

func TestLongMessageIDNotIndexed(t *testing.T) {
	l, _ := openLog(t)
	long := strings.Repeat("x", 40000)
	rec := &evidencev1.Record{
		Kind:      evidencev1.RecordKind_RECORD_KIND_REFUSED,
		MessageId: long,
		Reason:    "message id too long",
	}
	n, err := l.Append(context.Background(), rec, nil)
	if err != nil {
		t.Fatalf("Append: %v", err)
	}
	e, err := l.Entry(n)
	if err != nil {
		t.Fatalf("Entry: %v", err)
	}
	if diff := cmp.Diff(rec, e.Record, protocmp.Transform()); diff != "" {
		t.Errorf("stored record mismatch (-want +got):\n%s", diff)
	}
	if got, err := l.ByMessageID(long); err != nil || len(got) != 0 {
		t.Errorf("ByMessageID(long) = %d entries, %v; want none", len(got), err)
	}
}

// TestCertificateStoredAfterFailedCommit checks that a signer certificate
// whose first commit failed is stored by the next record naming it: only a
// committed certificate counts as known.
func TestCertificateStoredAfterFailedCommit(t *testing.T) {
	ctx := context.Background()
	l, _ := openLog(t)
	s := newCA(t, "ca").signer(t, testMember)
	cert := s.Certificate().Raw
	fail := true
	l.journalHook = func(int) error {
		if fail {
			return errors.New("injected failure")
		}
		return nil
	}
	if _, err := l.Append(ctx, signedRecord(t, s, header(s, "a", 0)), cert); err == nil {
		t.Fatal("Append with the injected failure succeeded")
	}
	fail = false
	if _, err := l.Append(ctx, signedRecord(t, s, header(s, "b", 0)), cert); err != nil {
		t.Fatalf("Append: %v", err)
	}
	if _, err := l.Append(ctx, signedRecord(t, s, header(s, "c", 0)), cert); err != nil {
		t.Fatalf("Append: %v", err)
	}
	sum := sha256.Sum256(cert)
	got, err := l.Certificate(sum[:])
	if err != nil || !bytes.Equal(got, cert) {
		t.Fatalf("Certificate = %d bytes, %v; want the signer's certificate", len(got), err)
	}
	if rep, err := l.Verify(ctx, nil); err != nil || rep.Size != 2 || rep.SignaturesChecked != 2 {
		t.Fatalf("Verify = %+v, %v; want 2 records with their signatures checked", rep, err)
	}
}

// A log reopened at every size up to 40, with records folded in alone and
// in concurrent batches, keeps a tree that Verify recomputes from the
// leaves alike, and a head that the stored hashes give: every shape of the
// tree's right edge is continued after an Open.
func TestReopenAtEverySize(t *testing.T) {
	ctx := context.Background()
	s := newCA(t, "ca").signer(t, testMember)
	path := filepath.Join(t.TempDir(), "evidence.db")
	next := 0
	appendN := func(l *Log, n int) {
		t.Helper()
		var wg sync.WaitGroup
		errs := make(chan error, n)
		for range n {
			rec := signedRecord(t, s, header(s, fmt.Sprint("m-", next), 0))
			next++
			wg.Add(1)
			go func() {
				defer wg.Done()
				if _, err := l.Append(ctx, rec, s.Certificate().Raw); err != nil {
					errs <- err
				}
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatalf("Append: %v", err)
		}
	}
	for next < 40 {
		l, err := Open(path, Options{Node: testNode})
		if err != nil {
			t.Fatalf("Open at size %d: %v", next, err)
		}
		// One record, then a batch that may share commits and folds.
		appendN(l, 1)
		appendN(l, next%5)
		if err := l.Flush(ctx); err != nil {
			t.Fatal(err)
		}
		if _, err := l.Verify(ctx, nil); err != nil {
			t.Fatalf("Verify at size %d: %v", next, err)
		}
		if err := l.Close(); err != nil {
			t.Fatal(err)
		}
	}

	l, err := OpenReadOnly(path)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	size, root := l.TreeHead()
	var want tlog.Hash
	if err := l.db.View(func(tx *bolt.Tx) error {
		var err error
		want, err = tlog.TreeHash(int64(size), bucketHashReader{tx.Bucket(bucketHashes)})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if size != uint64(next) || root != want {
		t.Errorf("tree head %d %x, want %d %x from the stored hashes", size, root[:8], next, want[:8])
	}
}
