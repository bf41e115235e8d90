package gconf_test

import (
	"bytes"
	"errors"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"

	bolt "go.etcd.io/bbolt"

	"github.com/ketnoi/ketnoi/internal/gconf"
	"github.com/ketnoi/ketnoi/internal/pki/pkitest"
)

func openDB(t *testing.T, path string) *bolt.DB {
	t.Helper()
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatalf("open %s: %v", path, err)
	}
	return db
}

func closed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

func TestSourceAccept(t *testing.T) {
	ca := pkitest.NewCA(t, "vn.ketnoi")
	reg := ca.RegistrySigner(t)
	path := filepath.Join(t.TempDir(), "node.db")
	db := openDB(t, path)
	var logs bytes.Buffer
	logger := slog.New(slog.NewTextHandler(&logs, nil))

	src, err := gconf.NewSource(db, nil, ca.Pool(), logger)
	if err != nil {
		t.Fatalf("NewSource: %v", err)
	}
	if src.Current() != nil {
		t.Fatalf("Current of an empty cache = version %d, want nil", src.Current().Version())
	}

	ch := src.Changed()
	if err := src.Accept(signed(t, reg, config(2))); err != nil {
		t.Fatalf("Accept v2: %v", err)
	}
	if !closed(ch) {
		t.Errorf("Changed channel not closed after a swap")
	}
	if v := src.Current(); v == nil || v.Version() != 2 {
		t.Fatalf("Current after Accept v2 = %v", v)
	}

	// Older and equal versions are ignored without an error or a signal;
	// an older one is logged as a warning (a registry started on an empty
	// or restored database), an equal one is not.
	ch = src.Changed()
	if closed(ch) {
		t.Fatalf("new Changed channel is already closed")
	}
	for _, old := range []uint64{1, 2} {
		logs.Reset()
		if err := src.Accept(signed(t, reg, config(old))); err != nil {
			t.Errorf("Accept v%d: %v", old, err)
		}
		if got := src.Current().Version(); got != 2 {
			t.Errorf("Current after Accept v%d = version %d, want 2", old, got)
		}
		warned := strings.Contains(logs.String(), "level=WARN") && strings.Contains(logs.String(), "held_version=2")
		if warned != (old < 2) {
			t.Errorf("Accept v%d logged %q; want a warning only for an older version", old, logs.String())
		}
	}
	if closed(ch) {
		t.Errorf("Changed channel closed by an ignored configuration")
	}

	// Invalid configurations are refused and change nothing.
	if err := src.Accept(signed(t, ca.Signer(t, "VN/NN/000.00.00.G22"), config(5))); !errors.Is(err, gconf.ErrInvalid) {
		t.Errorf("Accept of a member-signed configuration = %v, want ErrInvalid", err)
	}
	if closed(ch) || src.Current().Version() != 2 {
		t.Errorf("a refused configuration changed the source (version %d)", src.Current().Version())
	}

	if err := src.Accept(signed(t, reg, config(4))); err != nil {
		t.Fatalf("Accept v4: %v", err)
	}
	if !closed(ch) || src.Current().Version() != 4 {
		t.Errorf("after Accept v4: changed=%v version=%d", closed(ch), src.Current().Version())
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}

	// A new source on the same database starts from the cached version.
	db = openDB(t, path)
	defer db.Close()
	again, err := gconf.NewSource(db, nil, ca.Pool(), nil)
	if err != nil {
		t.Fatalf("NewSource on the cache: %v", err)
	}
	if v := again.Current(); v == nil || v.Version() != 4 {
		t.Fatalf("cached Current = %v, want version 4", v)
	}
	if got := again.Current().Config.GetMembers()[0].GetName(); got != "Văn phòng Chính phủ" {
		t.Errorf("cached member name = %q", got)
	}
}

func TestSourceCacheFromOtherCA(t *testing.T) {
	ca := pkitest.NewCA(t, "vn.ketnoi")
	path := filepath.Join(t.TempDir(), "node.db")
	db := openDB(t, path)
	src, err := gconf.NewSource(db, nil, ca.Pool(), nil)
	if err != nil {
		t.Fatalf("NewSource: %v", err)
	}
	if err := src.Accept(signed(t, ca.RegistrySigner(t), config(1))); err != nil {
		t.Fatalf("Accept: %v", err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}

	// After a CA change the cache no longer verifies: the node starts
	// empty and waits for the registry instead of failing.
	db = openDB(t, path)
	defer db.Close()
	newCA := pkitest.NewCA(t, "vn.ketnoi")
	src, err = gconf.NewSource(db, nil, newCA.Pool(), nil)
	if err != nil {
		t.Fatalf("NewSource with another CA: %v", err)
	}
	if v := src.Current(); v != nil {
		t.Errorf("Current = version %d, want nil", v.Version())
	}
}
