package boltfile

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	bolt "go.etcd.io/bbolt"
)

func TestCheckLength(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "a.db")
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Update(func(tx *bolt.Tx) error {
		b, err := tx.CreateBucket([]byte("b"))
		if err != nil {
			return err
		}
		for i := range 2000 {
			if err := b.Put([]byte{byte(i >> 8), byte(i)}, make([]byte, 100)); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	if err := CheckLength(path); err != nil {
		t.Fatalf("whole file: %v", err)
	}
	info, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(path, info.Size()/2); err != nil {
		t.Fatal(err)
	}
	var short *ShortError
	// bbolt grows files ahead of use: the pages in use end before the file.
	if err := CheckLength(path); !errors.As(err, &short) || short.Size != info.Size()/2 ||
		short.Need <= short.Size || short.Need > info.Size() {
		t.Errorf("half the file: %v, want a ShortError of %d bytes needing more, at most %d",
			err, info.Size()/2, info.Size())
	}

	other := filepath.Join(dir, "other")
	if err := os.WriteFile(other, []byte("not a bbolt file at all, and long enough to read a meta page from it..........."), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := CheckLength(other); err != nil {
		t.Errorf("a file that is not bbolt: %v, want nil for bbolt to judge", err)
	}
	if err := CheckLength(dir); err != nil {
		t.Errorf("a directory: %v, want nil", err)
	}
	if err := CheckLength(filepath.Join(dir, "missing")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a missing file: %v, want ErrNotExist", err)
	}
}
