package evidence

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"os"
	"testing"
	"time"

	"github.com/ketnoi/ketnoi/internal/sign"
)

// crash closes l the way a crash leaves it: journaled records not folded
// into the tree.
func crash(t *testing.T, l *Log) {
	t.Helper()
	l.skipFinalFold = true
	if err := l.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
}

// crashedLog appends n signed records, m-0 to m-<n-1>, to a new log whose
// folds wait an hour, and crashes it: the records are only in the journal.
// It returns the log's path, the records' signer and the journal's
// generation.
func crashedLog(t *testing.T, n int) (string, *sign.Signer, uint64) {
	t.Helper()
	l, path := openLog(t)
	l.foldEvery = time.Hour
	s := newCA(t, "ca").signer(t, testMember)
	for i := range n {
		var cert []byte
		if i == 0 {
			cert = s.Certificate().Raw
		}
		if got, err := l.Append(context.Background(), signedRecord(t, s, header(s, fmt.Sprint("m-", i), 0)), cert); err != nil || got != uint64(i) {
			t.Fatalf("Append %d = %d, %v", i, got, err)
		}
	}
	gen := l.journal.gen
	crash(t, l)
	return path, s, gen
}

// TestJournalRecordsSurviveCrash checks that records are durable once
// Append returns, before any fold: after a crash, a read-only open refuses
// the log with ErrUnfolded, and the next Open folds every record in, in
// order, with a tree that verifies.
func TestJournalRecordsSurviveCrash(t *testing.T) {
	ctx := context.Background()
	path, s, _ := crashedLog(t, 10)
	if info, err := os.Stat(path + journalSuffix); err != nil || info.Size() == 0 {
		t.Fatalf("journal after the crash: %v, %v; want the 10 records in it", info, err)
	}
	if _, err := OpenReadOnly(path); !errors.Is(err, ErrUnfolded) {
		t.Fatalf("OpenReadOnly of a crashed log: %v, want ErrUnfolded", err)
	}

	l2, err := Open(path, Options{Node: testNode})
	if err != nil {
		t.Fatalf("Open after the crash: %v", err)
	}
	defer l2.Close()
	if size, _ := l2.TreeHead(); size != 10 {
		t.Fatalf("tree size after recovery = %d, want 10", size)
	}
	for i := range 10 {
		es, err := l2.ByMessageID(fmt.Sprint("m-", i))
		if err != nil || len(es) != 1 || es[0].Index != uint64(i) {
			t.Fatalf("ByMessageID(m-%d) = %v, %v; want record %d", i, es, err, i)
		}
	}
	if rep, err := l2.Verify(ctx, nil); err != nil || rep.Size != 10 || rep.SignaturesChecked != 10 {
		t.Fatalf("Verify after recovery = %+v, %v", rep, err)
	}
	if n, err := l2.Append(ctx, signedRecord(t, s, header(s, "after", 0)), nil); err != nil || n != 10 {
		t.Fatalf("Append after recovery = %d, %v; want index 10", n, err)
	}
}

// TestJournalTornFrameIsCutOff appends the start of a frame, as a crash in
// the middle of an append leaves it: the records before it are kept, the
// torn frame is dropped, and appending goes on after the kept ones.
func TestJournalTornFrameIsCutOff(t *testing.T) {
	ctx := context.Background()
	path, s, gen := crashedLog(t, 3)
	b, err := os.ReadFile(path + journalSuffix)
	if err != nil {
		t.Fatal(err)
	}
	_, good := readFrames(b, gen)
	// After the complete frames, a frame header promising 500 bytes, and
	// 20 of them.
	torn := binary.BigEndian.AppendUint32(nil, 500)
	torn = append(torn, 0xde, 0xad, 0xbe, 0xef)
	torn = append(torn, []byte("twenty bytes of body")...)
	copy(b[good:], torn)
	if err := os.WriteFile(path+journalSuffix, b, 0o600); err != nil {
		t.Fatal(err)
	}
	j, recs, err := openJournal(path+journalSuffix, gen)
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != 3 {
		t.Fatalf("journal read back %d records; want the 3 before the torn frame", len(recs))
	}
	j.close()

	l2, err := Open(path, Options{Node: testNode})
	if err != nil {
		t.Fatalf("Open with a torn frame: %v", err)
	}
	defer l2.Close()
	if n, err := l2.Append(ctx, signedRecord(t, s, header(s, "m-3", 0)), nil); err != nil || n != 3 {
		t.Fatalf("Append = %d, %v; want index 3", n, err)
	}
	if rep, err := l2.Verify(ctx, nil); err != nil || rep.Size != 4 {
		t.Fatalf("Verify = %+v, %v; want 4 records", rep, err)
	}
}

// TestJournalGapIsDamage checks that a journal which does not continue the
// tree (a record missing between them) makes Open fail with ErrDamaged
// rather than renumber records.
func TestJournalGapIsDamage(t *testing.T) {
	path, _, _ := crashedLog(t, 1)
	b, err := os.ReadFile(path + journalSuffix)
	if err != nil {
		t.Fatal(err)
	}
	// Renumber the frame to start at record 1, and fix its checksum.
	binary.BigEndian.PutUint64(b[frameHeaderSize+8:], 1)
	body := b[frameHeaderSize : frameHeaderSize+binary.BigEndian.Uint32(b)]
	binary.BigEndian.PutUint32(b[4:], crc32.Checksum(body, castagnoli))
	if err := os.WriteFile(path+journalSuffix, b, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(path, Options{Node: testNode}); !errors.Is(err, ErrDamaged) {
		t.Fatalf("Open with a gap between tree and journal: %v, want ErrDamaged", err)
	}
}

// TestFoldFailureKeepsRecords checks that records stay durable and
// appendable while folds into the tree fail, and that reads report the
// failure instead of answering without the records; once a fold succeeds
// everything is in the tree.
func TestFoldFailureKeepsRecords(t *testing.T) {
	ctx := context.Background()
	l, _ := openLog(t)
	l.foldEvery = time.Hour
	failing := true
	l.commitHook = func(int) error {
		if failing {
			return errors.New("injected fold failure")
		}
		return nil
	}
	s := newCA(t, "ca").signer(t, testMember)
	for i := range 3 {
		if _, err := l.Append(ctx, signedRecord(t, s, header(s, fmt.Sprint("m-", i), 0)), s.Certificate().Raw); err != nil {
			t.Fatalf("Append %d while folds fail: %v", i, err)
		}
	}
	if err := l.Flush(ctx); err == nil {
		t.Fatal("Flush succeeded with every fold failing")
	}
	if _, err := l.ByMessageID("m-0"); err == nil {
		t.Fatal("ByMessageID answered without the unfolded records")
	}
	failing = false
	if err := l.Flush(ctx); err != nil {
		t.Fatalf("Flush: %v", err)
	}
	if rep, err := l.Verify(ctx, nil); err != nil || rep.Size != 3 {
		t.Fatalf("Verify = %+v, %v; want 3 records", rep, err)
	}
}

// TestJournalTruncatedIsDamage cuts the journal of a crashed log, as an
// operator emptying or truncating the file would: records acknowledged
// from it would be lost and their indexes reused, so Open and OpenReadOnly
// must fail with ErrDamaged instead.
func TestJournalTruncatedIsDamage(t *testing.T) {
	for _, size := range []int64{0, 100, journalSize - 1} {
		t.Run(fmt.Sprint(size), func(t *testing.T) {
			path, _, _ := crashedLog(t, 1)
			if err := os.Truncate(path+journalSuffix, size); err != nil {
				t.Fatal(err)
			}
			if _, err := OpenReadOnly(path); !errors.Is(err, ErrDamaged) {
				t.Errorf("OpenReadOnly with the journal cut to %d bytes: %v, want ErrDamaged", size, err)
			}
			if l2, err := Open(path, Options{Node: testNode}); !errors.Is(err, ErrDamaged) {
				if err == nil {
					l2.Close()
				}
				t.Errorf("Open with the journal cut to %d bytes: %v, want ErrDamaged", size, err)
			}
		})
	}
}
