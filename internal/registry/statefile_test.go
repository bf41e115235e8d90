package registry

import (
	"bytes"
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	bolt "go.etcd.io/bbolt"
)

// A truncated state file, as a backup cut short by a full disk leaves it,
// is refused with an error that says so, by Open and by StateVersion,
// instead of crashing in bbolt.
func TestOpenRefusesTruncatedStateFile(t *testing.T) {
	f := newFixture(t)
	ctx := testContext(t)
	admin := f.admin(t)
	f.populate(t, ctx, admin)
	if _, err := admin.ImportCodeList(ctx, bigList("big", 10000)); err != nil {
		t.Fatal(err)
	}
	f.close()
	data, err := os.ReadFile(f.path)
	if err != nil {
		t.Fatal(err)
	}
	used := usedBytes(t, f.path)
	if used <= 500000 {
		t.Fatalf("state file uses %d bytes; the test wants more than 500000", used)
	}

	for _, size := range []int{500000, used - 4096, used / 2, 3 * 4096} {
		path := filepath.Join(t.TempDir(), "truncated.db")
		if err := os.WriteFile(path, data[:size], 0o600); err != nil {
			t.Fatal(err)
		}
		want := "state file " + path + " is damaged: "
		if reg, err := Open(path, f.cfg); err == nil {
			reg.Close()
			t.Errorf("Open of the state file cut to %d bytes succeeded", size)
		} else if !strings.Contains(err.Error(), want) {
			t.Errorf("Open of the state file cut to %d bytes: %v, want %q", size, err, want)
		}
		if _, err := StateVersion(path); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("StateVersion of the state file cut to %d bytes: %v, want %q", size, err, want)
		}
	}
}

// usedBytes returns the bytes of a state file that its pages take, which
// may be fewer than the file holds.
func usedBytes(t *testing.T, path string) int {
	t.Helper()
	db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true, Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var n int64
	if err := db.View(func(tx *bolt.Tx) error { n = tx.Size(); return nil }); err != nil {
		t.Fatal(err)
	}
	return int(n)
}

// A state file whose pages are overwritten where bbolt looks first, its
// free list and its root bucket, is refused as damaged too, by Open and by
// StateVersion where it reads the page: bbolt panics on such pages.
func TestOpenRefusesCorruptStateFile(t *testing.T) {
	f := newFixture(t)
	f.populate(t, testContext(t), f.admin(t))
	f.close()
	data, err := os.ReadFile(f.path)
	if err != nil {
		t.Fatal(err)
	}
	meta := currentMeta(data)
	pageSize := int(binary.LittleEndian.Uint32(meta[metaPageSizeAt:]))
	for _, tc := range []struct {
		name string
		page uint64
		read bool // StateVersion reads the page too; it skips the free list
	}{
		{"free list", binary.LittleEndian.Uint64(meta[metaAt+32:]), false},
		{"root bucket", binary.LittleEndian.Uint64(meta[metaAt+16:]), true},
		// A page no open reads: only the page check finds it.
		{"data", lastLeafPage(t, f.path), true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			bad := bytes.Clone(data)
			at := int(tc.page) * pageSize
			copy(bad[at:at+pageSize], bytes.Repeat([]byte{0xA5}, pageSize))
			path := filepath.Join(t.TempDir(), "corrupt.db")
			if err := os.WriteFile(path, bad, 0o600); err != nil {
				t.Fatal(err)
			}
			want := "state file " + path + " is damaged: "
			if reg, err := Open(path, f.cfg); err == nil {
				reg.Close()
				t.Errorf("Open of a state file with a corrupt %s page succeeded", tc.name)
			} else if !strings.Contains(err.Error(), want) {
				t.Errorf("Open: %v, want %q", err, want)
			}
			if !tc.read {
				// bbolt panicked inside bolt.Open, which leaves the file
				// locked until the process ends.
				return
			}
			if _, err := StateVersion(path); err == nil || !strings.Contains(err.Error(), want) {
				t.Errorf("StateVersion: %v, want %q", err, want)
			}
		})
	}
}

// lastLeafPage returns the highest page of the bbolt file at path that
// holds keys and values in use.
func lastLeafPage(t *testing.T, path string) uint64 {
	t.Helper()
	// Writable: bbolt reports page types only with its free list loaded.
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var page uint64
	err = db.View(func(tx *bolt.Tx) error {
		for id := int(tx.Size()/int64(db.Info().PageSize)) - 1; id > 1; id-- {
			info, err := tx.Page(id)
			if err != nil {
				return err
			}
			if info != nil && info.Type == "leaf" {
				page = uint64(id)
				return nil
			}
		}
		return errors.New("no leaf page")
	})
	if err != nil {
		t.Fatal(err)
	}
	return page
}

// Offsets in bbolt's meta page (see internal/boltfile): the page header,
// then magic and version, page size, flags, root bucket, free list page,
// high-water page and transaction id.
const (
	metaAt         = 16
	metaPageSizeAt = metaAt + 8
	metaTxAt       = metaAt + 48
)

// currentMeta returns the meta page of data with the higher transaction id.
func currentMeta(data []byte) []byte {
	pageSize := int(binary.LittleEndian.Uint32(data[metaPageSizeAt:]))
	a, b := data[:pageSize], data[pageSize:2*pageSize]
	if binary.LittleEndian.Uint64(b[metaTxAt:]) > binary.LittleEndian.Uint64(a[metaTxAt:]) {
		return b
	}
	return a
}

// A state file holding registrations of another instance or trust domain
// than the registry's settings is refused at start, naming both, before
// anything is published; the right settings open it.
func TestOpenRefusesOtherInstance(t *testing.T) {
	f := newFixture(t)
	ctx := testContext(t)
	f.populate(t, ctx, f.admin(t))
	f.close()
	before, err := StateVersion(f.path)
	if err != nil {
		t.Fatal(err)
	}

	other := f.cfg
	other.Instance = "XX"
	_, err = Open(f.path, other)
	want := "registry: state file " + f.path + ` holds registrations of instance "VN" (member ` + memberG09 +
		`), not of this registry's instance "XX": start with --instance VN, or use another state file`
	if err == nil || err.Error() != want {
		t.Errorf("Open with instance XX = %v, want %q", err, want)
	}

	other = f.cfg
	other.TrustDomain = spiffeid.RequireTrustDomainFromString("other.ketnoi")
	_, err = Open(f.path, other)
	want = "registry: state file " + f.path + ` holds nodes of trust domain "vn.ketnoi" (node ` + nodeID +
		`), not of this registry's trust domain "other.ketnoi": start with --trust-domain vn.ketnoi, ` +
		"or use another state file"
	if err == nil || err.Error() != want {
		t.Errorf("Open with trust domain other.ketnoi = %v, want %q", err, want)
	}

	if v, err := StateVersion(f.path); err != nil || v != before {
		t.Errorf("state version after refused starts = %d, %v; want %d", v, err, before)
	}
	f.start(t)
}
