package evidence

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	bolt "go.etcd.io/bbolt"

	evidencev1 "github.com/ketnoi/ketnoi/proto/ketnoi/evidence/v1"
)

// A truncated log must give ErrDamaged, not crash the process that reads
// it (bbolt maps the file; a page past its end would fault).
func TestTruncatedLogIsDamaged(t *testing.T) {
	ca := newCA(t, "vn.ketnoi")
	s := ca.signer(t, "urn:ketnoi:member:VN/NN/000.00.00.G22")
	path := filepath.Join(t.TempDir(), "evidence.db")
	l, err := Open(path, Options{Node: testNode})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 300 {
		if _, err := l.Append(context.Background(), signedRecord(t, s, header(s, fmt.Sprintf("m-%d", i), 0)), s.Certificate().Raw); err != nil {
			t.Fatal(err)
		}
	}
	var used int64
	if err := l.db.View(func(tx *bolt.Tx) error { used = tx.Size(); return nil }); err != nil {
		t.Fatal(err)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	// Cut into the pages the log uses.
	if err := os.Truncate(path, used/2); err != nil {
		t.Fatal(err)
	}

	// A fault inside bbolt's own open leaves its file lock behind, so each
	// opener gets a copy.
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	other := path + ".copy"
	if err := os.WriteFile(other, b, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := OpenReadOnly(path); !errors.Is(err, ErrDamaged) {
		t.Errorf("OpenReadOnly of a truncated log: %v, want ErrDamaged", err)
	}
	if _, err := Open(other, Options{Node: testNode}); !errors.Is(err, ErrDamaged) {
		t.Errorf("Open of a truncated log: %v, want ErrDamaged", err)
	}
}

// Records started together are committed in one transaction, in order.
func TestStartAllCommitsTogether(t *testing.T) {
	ca := newCA(t, "vn.ketnoi")
	s := ca.signer(t, "urn:ketnoi:member:VN/NN/000.00.00.G22")
	l, _ := openLog(t)
	var sizes []int
	l.journalHook = func(n int) error { sizes = append(sizes, n); return nil }
	recs := []*evidencev1.Record{
		signedRecord(t, s, header(s, "m-1", 0)),
		signedRecord(t, s, header(s, "m-1", 1)),
		signedRecord(t, s, header(s, "m-1", 2)),
	}
	rs, err := l.StartAll(context.Background(), recs, [][]byte{s.Certificate().Raw, nil, nil})
	if err != nil {
		t.Fatal(err)
	}
	for i, r := range rs {
		idx, err := r.Wait(context.Background())
		if err != nil || idx != uint64(i) {
			t.Errorf("record %d: index %d, %v", i, idx, err)
		}
	}
	if len(sizes) != 1 || sizes[0] != 3 {
		t.Errorf("commits of sizes %v, want one of 3", sizes)
	}
	if _, err := l.StartAll(context.Background(), recs, nil); err == nil {
		t.Error("StartAll with mismatched certificates accepted")
	}
}
