package gconf

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// TestOpenState: the node's state database opens when new, empty or
// holding the configuration cache, and a file with other buckets (an
// evidence log, a registry's state) is refused, said what it looks like,
// and left unchanged.
func TestOpenState(t *testing.T) {
	tests := []struct {
		name    string
		buckets []string
		want    string // "" when the file opens
	}{
		{"new", nil, ""},
		{"no buckets", []string{}, ""},
		{"own", []string{"gconf"}, ""},
		{"evidence log", []string{"leaves", "hashes", "certs", "messages", "meta"},
			`not a node state database: it holds buckets "certs", "hashes", "leaves", "messages", ... ` +
				`and no configuration cache; an evidence log?`},
		{"registry", []string{"members", "nodes", "services", "grants"},
			`not a node state database: it holds buckets "grants", "members", "nodes", "services" ` +
				`and no configuration cache; a registry's state or backup?`},
		{"other", []string{"x\nFAKE"}, `it holds buckets "x\nFAKE" and no configuration cache; another program's file?`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "state.db")
			var before []byte
			if tt.buckets != nil {
				before = writeBuckets(t, path, tt.buckets)
			}
			db, err := OpenState(path, time.Second)
			if tt.want == "" {
				if err != nil {
					t.Fatalf("OpenState: %v", err)
				}
				if err := db.Close(); err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil {
				db.Close()
			}
			if !errors.Is(err, ErrNotState) || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("OpenState error = %v, want ErrNotState with %q", err, tt.want)
			}
			if after, err := os.ReadFile(path); err != nil || !bytes.Equal(before, after) {
				t.Errorf("OpenState changed the file (read error %v)", err)
			}
		})
	}
}

// writeBuckets writes a bbolt file at path with the named buckets, each
// holding one key as another program's file would, and returns its bytes.
func writeBuckets(t *testing.T, path string, names []string) []byte {
	t.Helper()
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, name := range names {
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
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return data
}
