//go:build linux

package evidence

// Crash, fault and concurrency tests of the evidence journal (write-ahead
// file, fold, reset, recovery). Every wait is bounded.

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/ketnoi/ketnoi/internal/sign"
	evidencev1 "github.com/ketnoi/ketnoi/proto/ketnoi/evidence/v1"
)

// rvFrame encodes one journal frame the way journal.append does.
func rvFrame(first uint64, leaves [][]byte, ids []string) []byte {
	b := make([]byte, frameHeaderSize)
	b = binary.BigEndian.AppendUint64(b, 0x5eed) // a peer cannot know the generation
	b = binary.BigEndian.AppendUint64(b, first)
	b = binary.BigEndian.AppendUint32(b, uint32(len(leaves)))
	for i, leaf := range leaves {
		b = binary.BigEndian.AppendUint32(b, uint32(len(leaf)))
		b = append(b, leaf...)
		b = binary.BigEndian.AppendUint32(b, 0)
		b = binary.BigEndian.AppendUint16(b, uint16(len(ids[i])))
		b = append(b, ids[i]...)
	}
	body := b[frameHeaderSize:]
	binary.BigEndian.PutUint32(b, uint32(len(body)))
	binary.BigEndian.PutUint32(b[4:], crc32.Checksum(body, castagnoli))
	return b
}

// rvRecord is an unsigned record (a refusal of a malformed message, say)
// whose header field carries arbitrary bytes chosen by the peer.
func rvRecord(id string, header []byte) *evidencev1.Record {
	return &evidencev1.Record{
		Kind:       evidencev1.RecordKind_RECORD_KIND_REFUSED,
		RecordedAt: timestamppb.New(time.Unix(1_800_000_000, 0)),
		MessageId:  id,
		Node:       testNode,
		Peer:       testPeer,
		Header:     header,
		Reason:     "header malformed",
	}
}

func rvLeaf(t testing.TB, r *evidencev1.Record) []byte {
	t.Helper()
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func rvAppend(t testing.TB, l *Log, r *evidencev1.Record, cert []byte) uint64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	n, err := l.Append(ctx, r, cert)
	if err != nil {
		t.Fatalf("Append %s: %v", r.GetMessageId(), err)
	}
	return n
}

// rvBuildStaleForgery appends records to a fresh log so that the journal is
// reset, then appends one record whose frame ends exactly where the first
// (stale) frame holds a forged frame that a peer smuggled inside the
// header bytes of record 0. forgedFirst is the index the forged frame
// claims. It returns the open log, its path and the number of records
// legitimately appended.
func rvBuildStaleForgery(t *testing.T, forgedFirst func(k uint64) uint64) (*Log, string, uint64) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "evidence.db")
	l, err := Open(path, Options{Node: testNode})
	if err != nil {
		t.Fatal(err)
	}
	l.foldEvery = time.Hour

	const k = 70 // records of ~64 KiB: the journal passes journalResetSize
	forged := rvLeaf(t, rvRecord("forged", []byte("a record nobody appended")))
	fake := rvFrame(forgedFirst(k+1), [][]byte{forged}, []string{"forged"})
	hdr := append(bytes.Repeat([]byte{'x'}, 1000), fake...)
	hdr = append(hdr, bytes.Repeat([]byte{'y'}, 64<<10-len(hdr))...)
	r0 := rvRecord("m-0", hdr)
	leaf0 := rvLeaf(t, r0)
	// Frame 0 sits at journal offset 0: header, first, count, leaf length.
	at := 8 + 20 + 4 + bytes.Index(leaf0, fake)
	if n := rvAppend(t, l, r0, nil); n != 0 {
		t.Fatalf("first index %d", n)
	}
	for i := 1; i < k; i++ {
		rvAppend(t, l, rvRecord(fmt.Sprint("m-", i), bytes.Repeat([]byte{'z'}, 64<<10)), nil)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := l.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if l.journal.size != 0 {
		t.Fatalf("journal not reset: size %d", l.journal.size)
	}
	// A record whose frame is exactly `at` bytes long: 38 bytes of framing
	// plus its leaf and message id.
	id := fmt.Sprint("m-", k)
	var rn *evidencev1.Record
	for pad := at - 38 - len(id); pad > 0 && rn == nil; pad-- {
		r := rvRecord(id, bytes.Repeat([]byte{'w'}, pad))
		if len(rvLeaf(t, r))+len(id)+38 == at {
			rn = r
		}
	}
	if rn == nil {
		t.Fatal("no padding gives the wanted frame length")
	}
	if n := rvAppend(t, l, rn, nil); n != k {
		t.Fatalf("index %d, want %d", n, k)
	}
	if l.journal.size != int64(at) {
		t.Fatalf("journal size %d, want %d", l.journal.size, at)
	}
	return l, path, k + 1
}

// TestJournalStaleForgedFrameIgnored: after a reset, the bytes behind the
// last new frame are old record data. A peer-chosen byte string inside an
// old record that forms a frame with a valid checksum must not be read as
// a journal frame on recovery: it lacks the journal's generation.
func TestJournalStaleForgedFrameIgnored(t *testing.T) {
	for _, mode := range []string{"crash", "clean close"} {
		t.Run(mode, func(t *testing.T) {
			l, path, appended := rvBuildStaleForgery(t, func(k uint64) uint64 { return k })
			if mode == "crash" {
				crash(t, l)
			} else if err := l.Close(); err != nil {
				t.Fatal(err)
			}
			if ro, err := OpenReadOnly(path); err == nil {
				ro.Close()
			} else {
				t.Logf("OpenReadOnly: %v", err)
			}
			l2, err := Open(path, Options{Node: testNode})
			if err != nil {
				t.Fatalf("Open: %v", err)
			}
			defer l2.Close()
			size, _ := l2.TreeHead()
			es, _ := l2.ByMessageID("forged")
			if size != appended || len(es) != 0 {
				t.Errorf("%d records appended, tree has %d after reopening; forged record found %d times (index %v)",
					appended, size, len(es), func() []uint64 {
						var ix []uint64
						for _, e := range es {
							ix = append(ix, e.Index)
						}
						return ix
					}())
			}
		})
	}
}

// TestJournalStaleForgedFrameDoesNotBlockOpen: the same smuggled frame,
// claiming a far index, must neither stop a cleanly closed log from
// opening (ErrDamaged) nor make it unreadable for tools (ErrUnfolded).
func TestJournalStaleForgedFrameDoesNotBlockOpen(t *testing.T) {
	l, path, _ := rvBuildStaleForgery(t, func(uint64) uint64 { return 1 << 40 })
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if ro, err := OpenReadOnly(path); err != nil {
		t.Errorf("OpenReadOnly of a cleanly closed log: %v", err)
	} else {
		ro.Close()
	}
	l2, err := Open(path, Options{Node: testNode})
	if err != nil {
		t.Fatalf("Open of a cleanly closed log: %v", err)
	}
	l2.Close()
}

// rvSnapshot copies the log as a crash at this moment could leave it: the
// journal first (possibly with a torn frame at its end), then a consistent
// copy of the bbolt tree, which may be newer than the journal copy.
func rvSnapshot(t *testing.T, l *Log, dir string) string {
	t.Helper()
	jb, err := os.ReadFile(l.path + journalSuffix)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "evidence.db")
	if err := l.db.View(func(tx *bolt.Tx) error { return tx.CopyFile(path, 0o600) }); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path+journalSuffix, jb, 0o600); err != nil {
		t.Fatal(err)
	}
	var gen uint64
	if db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true, Timeout: time.Second}); err == nil {
		_ = db.View(func(tx *bolt.Tx) error {
			if v := tx.Bucket(bucketMeta).Get(metaJournal); len(v) == 8 {
				gen = binary.BigEndian.Uint64(v)
			}
			return nil
		})
		db.Close()
	}
	if recs, _ := readFrames(jb, gen); len(recs) > 0 && recs[0].index > 0 {
		rvAfterReset.Add(1) // a journal written again from the front
	}
	return path
}

// TestJournalSnapshotCrashConsistency appends from many goroutines, with
// fast folds, journal resets and signer certificates first seen mid-run,
// and checks crash snapshots taken meanwhile: each opens, verifies, and
// holds every record acknowledged before it at the acknowledged index.
func TestJournalSnapshotCrashConsistency(t *testing.T) {
	l, _ := openLog(t)
	l.foldEvery = 2 * time.Millisecond
	ca := newCA(t, "ca")
	signers := make([]*sign.Signer, 12)
	for i := range signers {
		signers[i] = ca.signer(t, testMember)
	}
	var mu sync.Mutex
	acked := map[uint64]string{}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var fails atomic.Int64
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 100; i++ {
				select {
				case <-stop:
					return
				default:
				}
				sg := signers[(g*7+i)%len(signers)]
				// Signers 6.. appear only later in the run.
				if i < 50 {
					sg = signers[(g+i)%6]
				}
				id := fmt.Sprintf("g%d-%d", g, i)
				h := header(sg, id, 0)
				h.Issue = string(bytes.Repeat([]byte{'i'}, (i*997+g*131)%24000))
				r := signedRecord(t, sg, h)
				var cert []byte
				if i%3 == 0 {
					cert = sg.Certificate().Raw
				} else if _, ok := l.storedCerts.Load(certSum(sg.Certificate().Raw)); !ok {
					cert = sg.Certificate().Raw
				}
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				n, err := l.Append(ctx, r, cert)
				cancel()
				if err != nil {
					fails.Add(1)
					t.Errorf("Append: %v", err)
					return
				}
				mu.Lock()
				acked[n] = id
				mu.Unlock()
			}
		}()
	}
	// Take the snapshots while the writers run, check them afterwards.
	type snap struct {
		path   string
		before map[uint64]string
	}
	var snaps []snap
	deadline := time.Now().Add(5 * time.Second)
	for len(snaps) < 12 && time.Now().Before(deadline) {
		time.Sleep(time.Duration(40+len(snaps)*37%60) * time.Millisecond)
		mu.Lock()
		before := make(map[uint64]string, len(acked))
		for k, v := range acked {
			before[k] = v
		}
		mu.Unlock()
		snaps = append(snaps, snap{rvSnapshot(t, l, t.TempDir()), before})
	}
	close(stop)
	waitOrFail(t, &wg, 20*time.Second)
	for i, sn := range snaps {
		c, err := Open(sn.path, Options{Node: testNode})
		if err != nil {
			t.Errorf("snapshot %d does not open: %v", i, err)
			continue
		}
		size, _ := c.TreeHead()
		if size < uint64(len(sn.before)) {
			t.Errorf("snapshot %d holds %d records, %d were acknowledged", i, size, len(sn.before))
		}
		for n, id := range sn.before {
			e, err := c.Entry(n)
			if err != nil || e.Record.GetMessageId() != id {
				t.Errorf("snapshot %d: acknowledged record %d (%s): %v, %s", i, n, id, err, e.Record.GetMessageId())
				break
			}
		}
		if i%3 == 2 || i == len(snaps)-1 {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			if _, err := c.Verify(ctx, ca.pool); err != nil {
				t.Errorf("snapshot %d does not verify: %v", i, err)
			}
			cancel()
		}
		c.Close()
	}
	mu.Lock()
	t.Logf("%d snapshots (%d of a reset journal), %d records acknowledged, %d append failures",
		len(snaps), rvAfterReset.Load(), len(acked), fails.Load())
	mu.Unlock()
}

var rvAfterReset atomic.Int64

func certSum(der []byte) [32]byte { return sha256.Sum256(der) }

func waitOrFail(t *testing.T, wg *sync.WaitGroup, d time.Duration) {
	t.Helper()
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(d):
		t.Fatalf("goroutines still running after %s", d)
	}
}

// TestJournalConcurrentAppendReadFlushClose runs appenders that read their
// record back at once (Entry, ByMessageID, HasMessage after a flush),
// flushers, and a Close in the middle of it all; nothing may hang, every
// acknowledged record must be readable at once and after reopening.
func TestJournalConcurrentAppendReadFlushClose(t *testing.T) {
	path := filepath.Join(t.TempDir(), "evidence.db")
	l, err := Open(path, Options{Node: testNode, MaxBatch: 16})
	if err != nil {
		t.Fatal(err)
	}
	s := newCA(t, "ca").signer(t, testMember)
	cert := s.Certificate().Raw
	var mu sync.Mutex
	acked := map[uint64]string{}
	var wg sync.WaitGroup
	var closedSeen atomic.Int64
	for g := range 12 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 3000 {
				id := fmt.Sprintf("c%d-%d", g, i)
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				n, err := l.Append(ctx, signedRecord(t, s, header(s, id, 0)), cert)
				cancel()
				if errors.Is(err, ErrClosed) {
					closedSeen.Add(1)
					return
				}
				if err != nil {
					t.Errorf("Append: %v", err)
					return
				}
				mu.Lock()
				acked[n] = id
				mu.Unlock()
				if i%5 == 0 {
					e, err := l.Entry(n)
					if err == nil && e.Record.GetMessageId() != id {
						t.Errorf("Entry(%d) = %s, want %s", n, e.Record.GetMessageId(), id)
					}
					if err != nil && !l.isClosed() {
						t.Errorf("Entry(%d) right after Append on an open log: %v", n, err)
					}
					es, err := l.ByMessageID(id)
					// During Close an empty answer is the bug shown by
					// TestJournalReadDuringCloseSeesRecords.
					if err == nil && len(es) != 1 && !l.isClosed() {
						t.Errorf("ByMessageID(%s) = %d entries", id, len(es))
					}
				}
			}
		}()
	}
	for range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 2000 {
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				err := l.Flush(ctx)
				cancel()
				if err != nil {
					t.Errorf("Flush: %v", err)
					return
				}
				l.TreeHead()
				if l.isClosed() {
					return
				}
			}
		}()
	}
	time.Sleep(700 * time.Millisecond)
	closeDone := make(chan error, 1)
	go func() { closeDone <- l.Close() }()
	select {
	case err := <-closeDone:
		if err != nil {
			t.Errorf("Close: %v", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("Close did not return")
	}
	waitOrFail(t, &wg, 15*time.Second)
	if _, err := l.Append(context.Background(), signedRecord(t, s, header(s, "late", 0)), nil); !errors.Is(err, ErrClosed) {
		t.Errorf("Append after Close: %v", err)
	}
	if _, err := l.Entry(0); err == nil {
		t.Errorf("Entry after Close succeeded")
	}
	l2, err := Open(path, Options{Node: testNode})
	if err != nil {
		t.Fatal(err)
	}
	defer l2.Close()
	mu.Lock()
	defer mu.Unlock()
	size, _ := l2.TreeHead()
	if size != uint64(len(acked)) {
		t.Errorf("reopened log has %d records, %d acknowledged", size, len(acked))
	}
	for n, id := range acked {
		e, err := l2.Entry(n)
		if err != nil || e.Record.GetMessageId() != id {
			t.Fatalf("record %d after reopening: %v %s, want %s", n, err, e.Record.GetMessageId(), id)
		}
		if ok, err := l2.HasMessage(id); !ok || err != nil {
			t.Fatalf("HasMessage(%s) after reopening = %v, %v", id, ok, err)
		}
	}
	t.Logf("%d records acknowledged, %d appenders saw ErrClosed", len(acked), closedSeen.Load())
}

func (l *Log) isClosed() bool {
	l.mu.RLock()
	defer l.mu.RUnlock()
	return l.closed
}

// TestJournalFoldTimer checks that the writer folds on its own, without a
// reader asking, and retries a failed fold from its timer.
func TestJournalFoldTimer(t *testing.T) {
	l, _ := openLog(t)
	l.foldEvery = 5 * time.Millisecond
	var hookCalls atomic.Int64
	var failFor atomic.Int64
	l.commitHook = func(int) error {
		hookCalls.Add(1)
		if failFor.Add(-1) >= 0 {
			return errors.New("injected fold failure")
		}
		return nil
	}
	s := newCA(t, "ca").signer(t, testMember)
	waitFolded := func(want uint64) bool {
		for range 400 {
			if l.head.Load().size == want && l.behind.Load() == 0 {
				return true
			}
			time.Sleep(5 * time.Millisecond)
		}
		return false
	}
	for round := range 20 {
		failFor.Store(int64(round % 3)) // 0, 1 or 2 failed folds first
		n := rvAppend(t, l, signedRecord(t, s, header(s, fmt.Sprint("t-", round), 0)), s.Certificate().Raw)
		if !waitFolded(n + 1) {
			t.Fatalf("record %d not folded by the timer within 2 s (round %d, head %d, behind %d)",
				n, round, l.head.Load().size, l.behind.Load())
		}
		// Let the timer fire with nothing to fold, sometimes.
		if round%2 == 0 {
			time.Sleep(12 * time.Millisecond)
		}
	}
	t.Logf("%d fold commits tried", hookCalls.Load())
}

// TestJournalFoldBacklogAndChunkFailure fills the journal to the unfolded
// limit while every fold fails, lets one fold chunk succeed and the next
// fail, then crashes: recovery must bring back every acknowledged record.
func TestJournalFoldBacklogAndChunkFailure(t *testing.T) {
	path := filepath.Join(t.TempDir(), "evidence.db")
	l, err := Open(path, Options{Node: testNode})
	if err != nil {
		t.Fatal(err)
	}
	l.foldEvery = time.Hour
	var allow atomic.Int64 // commits allowed to succeed
	l.commitHook = func(int) error {
		if allow.Add(-1) >= 0 {
			return nil
		}
		return errors.New("injected fold failure")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	recs := make([]*evidencev1.Record, 1024)
	certs := make([][]byte, 1024)
	total := 0
	for b := range 64 {
		for i := range recs {
			recs[i] = rvRecord(fmt.Sprintf("b%d-%d", b, i), nil)
		}
		rs, err := l.StartAll(ctx, recs, certs)
		if err != nil {
			t.Fatal(err)
		}
		for i, r := range rs {
			n, err := r.Wait(ctx)
			if err != nil || n != uint64(total+i) {
				t.Fatalf("batch %d record %d: %d, %v", b, i, n, err)
			}
		}
		total += len(rs)
	}
	// The limit: the next record is refused, not lost.
	if _, err := l.Append(ctx, rvRecord("over", nil), nil); err == nil {
		t.Error("Append past maxUnfolded succeeded")
	}
	allow.Store(1) // first chunk of 8192 commits, the second fails
	if err := l.Flush(ctx); err == nil {
		t.Error("Flush succeeded with the second chunk failing")
	}
	if got := l.head.Load().size; got != foldChunk {
		t.Errorf("tree after one good chunk: %d, want %d", got, foldChunk)
	}
	crash(t, l)
	l2, err := Open(path, Options{Node: testNode})
	if err != nil {
		t.Fatalf("Open after the crash: %v", err)
	}
	defer l2.Close()
	if size, _ := l2.TreeHead(); size != uint64(total) {
		t.Fatalf("recovered %d records, %d acknowledged", size, total)
	}
	for _, n := range []uint64{0, foldChunk - 1, foldChunk, uint64(total - 1)} {
		e, err := l2.Entry(n)
		want := fmt.Sprintf("b%d-%d", n/1024, n%1024)
		if err != nil || e.Record.GetMessageId() != want {
			t.Errorf("record %d = %v, %s; want %s", n, err, e.Record.GetMessageId(), want)
		}
	}
}

// TestJournalReadDuringCloseSeesRecords: a read that comes once Close has
// marked the log closed, while the writer's final fold runs, must not
// answer from the tree without the acknowledged, still journaled records
// as if they did not exist: it waits for the fold, or fails.
func TestJournalReadDuringCloseSeesRecords(t *testing.T) {
	l, _ := openLog(t)
	l.foldEvery = time.Hour
	entered, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	l.commitHook = func(int) error {
		once.Do(func() { close(entered) })
		select {
		case <-release:
		case <-time.After(10 * time.Second):
		}
		return nil
	}
	s := newCA(t, "ca").signer(t, testMember)
	n := rvAppend(t, l, signedRecord(t, s, header(s, "acked", 0)), s.Certificate().Raw)
	closeDone := make(chan error, 1)
	go func() { closeDone <- l.Close() }()
	select {
	case <-entered: // the final fold has started, the log is marked closed
	case <-time.After(10 * time.Second):
		t.Fatal("final fold did not start")
	}
	type lookup struct {
		es  []Entry
		err error
	}
	got := make(chan lookup, 1)
	go func() {
		es, err := l.ByMessageID("acked")
		got <- lookup{es, err}
	}()
	close(release)
	select {
	case r := <-got:
		if r.err == nil && len(r.es) != 1 {
			t.Errorf("ByMessageID during Close = %d entries and no error; record %d was acknowledged", len(r.es), n)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("ByMessageID during Close did not return")
	}
	select {
	case err := <-closeDone:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Close did not return")
	}
}

// TestJournalCloseReportsFailedFinalFold: when the final fold fails, Close
// says so; the records are safe in the journal, tools refuse the log as
// unfolded, and the next Open folds them in.
func TestJournalCloseReportsFailedFinalFold(t *testing.T) {
	path := filepath.Join(t.TempDir(), "evidence.db")
	l, err := Open(path, Options{Node: testNode})
	if err != nil {
		t.Fatal(err)
	}
	l.foldEvery = time.Hour
	l.commitHook = func(int) error { return errors.New("injected fold failure") }
	rvAppend(t, l, rvRecord("a", nil), nil)
	if err := l.Close(); err == nil {
		t.Error("Close returned nil though its final fold failed")
	}
	if _, err := OpenReadOnly(path); !errors.Is(err, ErrUnfolded) {
		t.Errorf("OpenReadOnly = %v, want ErrUnfolded", err)
	}
	l2, err := Open(path, Options{Node: testNode})
	if err != nil {
		t.Fatal(err)
	}
	defer l2.Close()
	if size, _ := l2.TreeHead(); size != 1 {
		t.Errorf("recovered %d records, want 1", size)
	}
}

// TestJournalPartialWriteThenResetThenCrash makes journal writes past
// 6 MiB fail part-way (a file-size limit, as a full disk would) while
// folds fail too, so a failed frame is left half written and cleared; then
// lifts both faults, lets a fold reset the journal, appends a little more
// and crashes. Recovery must find exactly the acknowledged records.
func TestJournalPartialWriteThenResetThenCrash(t *testing.T) {
	path := filepath.Join(t.TempDir(), "evidence.db")
	l, err := Open(path, Options{Node: testNode})
	if err != nil {
		t.Fatal(err)
	}
	l.foldEvery = time.Hour
	var foldsFail atomic.Bool
	foldsFail.Store(true)
	l.commitHook = func(int) error {
		if foldsFail.Load() {
			return errors.New("injected fold failure")
		}
		return nil
	}
	var old syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_FSIZE, &old); err != nil {
		t.Skip(err)
	}
	limit := syscall.Rlimit{Cur: 6 << 20, Max: old.Max}
	if err := syscall.Setrlimit(syscall.RLIMIT_FSIZE, &limit); err != nil {
		t.Skip(err)
	}
	lifted := false
	lift := func() {
		if !lifted {
			lifted = true
			if err := syscall.Setrlimit(syscall.RLIMIT_FSIZE, &old); err != nil {
				t.Fatal(err)
			}
		}
	}
	defer lift()

	acked := map[uint64]string{}
	var failed int
	pad := bytes.Repeat([]byte{'p'}, 100<<10)
	for i := 0; i < 80 && failed < 3; i++ {
		id := fmt.Sprint("s-", i)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		n, err := l.Append(ctx, rvRecord(id, pad), nil)
		cancel()
		if err != nil {
			failed++
			t.Logf("append %d failed as intended: %v", i, err)
			continue
		}
		acked[n] = id
	}
	if failed == 0 || l.journal.broken != nil {
		t.Fatalf("no write failed part-way, or the journal broke (failed %d, broken %v)", failed, l.journal.broken)
	}
	lift()
	foldsFail.Store(false)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := l.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if l.journal.size != 0 {
		t.Fatalf("journal not reset after the fold: size %d", l.journal.size)
	}
	if info, _ := os.Stat(path + journalSuffix); info.Size() != journalSize {
		t.Errorf("journal is %d bytes, want %d still", info.Size(), journalSize)
	}
	for i := range 5 {
		id := fmt.Sprint("after-", i)
		acked[rvAppend(t, l, rvRecord(id, pad[:i*1000]), nil)] = id
	}
	crash(t, l)
	l2, err := Open(path, Options{Node: testNode})
	if err != nil {
		t.Fatalf("Open after the crash: %v", err)
	}
	defer l2.Close()
	if size, _ := l2.TreeHead(); size != uint64(len(acked)) {
		t.Errorf("%d records after recovery, %d acknowledged", size, len(acked))
	}
	for n, id := range acked {
		if e, err := l2.Entry(n); err != nil || e.Record.GetMessageId() != id {
			t.Errorf("record %d = %v %s, want %s", n, err, e.Record.GetMessageId(), id)
		}
	}
}

// TestJournalFlushServedUnderCarry: while every commit leaves a carried
// group for the next one, the writer must still serve Flush requests, or
// readers of a busy writable log would block until the load drops.
func TestJournalFlushServedUnderCarry(t *testing.T) {
	path := filepath.Join(t.TempDir(), "evidence.db")
	l, err := Open(path, Options{Node: testNode, MaxBatch: 4})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var appended atomic.Int64
	for g := range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			recs := make([]*evidencev1.Record, 3)
			certs := make([][]byte, 3)
			for i := 0; i < 100000; i++ {
				select {
				case <-stop:
					return
				default:
				}
				for j := range recs {
					recs[j] = rvRecord(fmt.Sprintf("f%d-%d-%d", g, i, j), nil)
				}
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				rs, err := l.StartAll(ctx, recs, certs)
				if err == nil {
					for _, r := range rs {
						if _, err = r.Wait(ctx); err != nil {
							break
						}
					}
				}
				cancel()
				if err != nil {
					t.Errorf("append: %v", err)
					return
				}
				appended.Add(3)
			}
		}()
	}
	time.Sleep(300 * time.Millisecond)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	start := time.Now()
	err = l.Flush(ctx)
	took := time.Since(start)
	cancel()
	close(stop)
	waitOrFail(t, &wg, 20*time.Second)
	t.Logf("Flush under load: %v after %v; %d records appended", err, took, appended.Load())
	if err != nil {
		t.Errorf("Flush starved under sustained load: %v after %v", err, took)
	}
}

// TestJournalMissingIsDamage: when acknowledged records live only in the
// journal and the journal file is missing (a copy of evidence.db alone
// after a crash), Open and OpenReadOnly must fail with ErrDamaged rather
// than lose them silently and reuse their indexes.
func TestJournalMissingIsDamage(t *testing.T) {
	l, path := openLog(t)
	l.foldEvery = time.Hour
	for i := range 3 {
		rvAppend(t, l, rvRecord(fmt.Sprint("j-", i), nil), nil)
	}
	crash(t, l)
	if err := os.Remove(path + journalSuffix); err != nil {
		t.Fatal(err)
	}
	if ro, err := OpenReadOnly(path); !errors.Is(err, ErrDamaged) {
		if err == nil {
			ro.Close()
		}
		t.Errorf("OpenReadOnly without the journal: %v, want ErrDamaged", err)
	}
	if l2, err := Open(path, Options{Node: testNode}); !errors.Is(err, ErrDamaged) {
		if err == nil {
			l2.Close()
		}
		t.Errorf("Open without the journal: %v, want ErrDamaged", err)
	}
}

// TestJournalNotNeededAfterCleanClose: a log closed cleanly has everything
// in its tree, so a copy of evidence.db alone opens, for tools and nodes.
func TestJournalNotNeededAfterCleanClose(t *testing.T) {
	l, path := openLog(t)
	rvAppend(t, l, rvRecord("a", nil), nil)
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(path + journalSuffix); err != nil {
		t.Fatal(err)
	}
	ro, err := OpenReadOnly(path)
	if err != nil {
		t.Fatalf("OpenReadOnly of a cleanly closed log without its journal: %v", err)
	}
	if size, _ := ro.TreeHead(); size != 1 {
		t.Errorf("read-only size %d, want 1", size)
	}
	ro.Close()
	l2, err := Open(path, Options{Node: testNode})
	if err != nil {
		t.Fatalf("Open of a cleanly closed log without its journal: %v", err)
	}
	defer l2.Close()
	if n := rvAppend(t, l2, rvRecord("b", nil), nil); n != 1 {
		t.Errorf("next index %d, want 1", n)
	}
}
