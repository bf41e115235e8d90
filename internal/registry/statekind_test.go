package registry

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	bolt "go.etcd.io/bbolt"
)

// evidenceLogBuckets are the top-level buckets of a node's evidence log,
// one of which, "meta", a registry state file has too.
var evidenceLogBuckets = []string{"leaves", "hashes", "certs", "messages", "meta"}

// foreignBolt writes a bbolt file of another program with the given
// buckets, kept without a free list as a node's evidence log is, and
// returns its path.
func foreignBolt(t *testing.T, dir string, buckets ...string) string {
	t.Helper()
	path := filepath.Join(dir, "evidence.db")
	db, err := bolt.Open(path, 0o600, &bolt.Options{NoFreelistSync: true})
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, name := range buckets {
			b, err := tx.CreateBucket([]byte(name))
			if err != nil {
				return err
			}
			if err := b.Put([]byte("k"), []byte("acknowledged")); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	return path
}

// CheckReplaceable lets a backup replace only an earlier backup nobody
// holds: the running registry's state file is in use, and every other
// existing file is named for what it is instead.
func TestCheckReplaceable(t *testing.T) {
	f := newFixture(t)
	if err := CheckReplaceable(f.path); !errors.Is(err, ErrLocked) {
		t.Errorf("CheckReplaceable of a running registry's state file = %v, want ErrLocked", err)
	}
	f.close()
	if err := CheckReplaceable(f.path); err != nil {
		t.Errorf("CheckReplaceable of a stopped registry's state file = %v, want nil", err)
	}
	dir := t.TempDir()
	if err := CheckReplaceable(filepath.Join(dir, "missing.db")); err != nil {
		t.Errorf("CheckReplaceable of a missing file = %v, want nil", err)
	}

	journal := filepath.Join(dir, "evidence.db.journal")
	if err := os.WriteFile(journal, bytes.Repeat([]byte("frame "), 1000), 0o600); err != nil {
		t.Fatal(err)
	}
	empty := filepath.Join(dir, "empty")
	if err := os.WriteFile(empty, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	emptyBolt := foreignBolt(t, t.TempDir())
	many := foreignBolt(t, t.TempDir(), "a", "b", "c", "d", "e")
	for _, tc := range []struct {
		name, path, what string
	}{
		{"journal", journal, "not a bbolt file"},
		{"empty file", empty, "an empty file"},
		{"directory", dir, "not a regular file"},
		{"node evidence log", foreignBolt(t, t.TempDir(), evidenceLogBuckets...),
			`a bbolt file of another program (buckets "certs", "hashes", "leaves", "messages", ...)`},
		{"many buckets", many, `a bbolt file of another program (buckets "a", "b", "c", "d", ...)`},
		{"empty bbolt file", emptyBolt, "an empty bbolt file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := CheckReplaceable(tc.path)
			nse, ok := errors.AsType[*NotStateFileError](err)
			if !ok || nse.What != tc.what || nse.Path != tc.path {
				t.Errorf("CheckReplaceable = %v, want a NotStateFileError saying %q", err, tc.what)
			}
		})
	}

	// A held foreign bbolt file is in use before anything else.
	db, err := bolt.Open(many, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if err := CheckReplaceable(many); !errors.Is(err, ErrLocked) {
		t.Errorf("CheckReplaceable of a held bbolt file = %v, want ErrLocked", err)
	}
}

// Open refuses a bbolt file of another program, such as a node's evidence
// log given as --data, without writing a byte to it; an empty bbolt file
// becomes a state file.
func TestOpenRefusesForeignBoltFile(t *testing.T) {
	f := newFixture(t)
	f.close()
	path := foreignBolt(t, t.TempDir(), evidenceLogBuckets...)
	before, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}

	_, err = Open(path, f.cfg)
	want := path + ` is not a registry state file: a bbolt file of another program ` +
		`(buckets "certs", "hashes", "leaves", "messages", ...); use another --data file`
	if nse, ok := errors.AsType[*NotStateFileError](err); !ok || !strings.HasSuffix(err.Error(), want) {
		t.Errorf("Open of a foreign bbolt file = %v (%v), want ...%q", err, nse, want)
	}
	after, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(before, after) {
		t.Error("Open wrote to the foreign bbolt file it refused")
	}

	empty := foreignBolt(t, t.TempDir())
	reg, err := Open(empty, f.cfg)
	if err != nil {
		t.Fatalf("Open of an empty bbolt file: %v", err)
	}
	reg.Close()
	if _, err := StateVersion(empty); err != nil {
		t.Errorf("StateVersion of the new state file: %v", err)
	}
}
