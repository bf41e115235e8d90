package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	bolt "go.etcd.io/bbolt"
)

// A backup never replaces a file a process holds open with bbolt, above
// all the running registry's own state file, which the registry would go
// on writing to after the rename, losing every later change at its next
// start; nor does it try to replace a directory. A backup over an earlier
// backup, held by nobody, goes ahead.
func TestRegistryBackupRefusesHeldFile(t *testing.T) {
	o, _ := populated(t)
	state := filepath.Join(o.dir, "registry.db")
	before, err := os.Stat(state)
	if err != nil {
		t.Fatal(err)
	}

	code, _, stderr := ketnoi(t, append([]string{"registry", "backup", "--out", state}, o.conn...)...)
	want := "ketnoi registry: --out " + state + ": file is in use by a running process (a registry or node holds it); " +
		"a backup must not replace it: write the backup to another file\n"
	if code != 1 || stderr != want {
		t.Errorf("backup over the running registry's state file = %d, %q; want 1, %q", code, stderr, want)
	}
	after, err := os.Stat(state)
	if err != nil {
		t.Fatal(err)
	}
	if !os.SameFile(before, after) {
		t.Error("the running registry's state file was replaced")
	}
	entries, err := os.ReadDir(o.dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), ".registry.db.tmp") {
			t.Errorf("refused backup left %s behind", e.Name())
		}
	}
	// The registry goes on with its own file.
	o.ok(t, "node", "set-address", "--id", node1, "--address", "127.0.0.1:8444")

	code, _, stderr = ketnoi(t, append([]string{"registry", "backup", "--out", o.dir}, o.conn...)...)
	if want := "ketnoi registry: --out " + o.dir + " is a directory\n"; code != 2 || stderr != want {
		t.Errorf("backup into a directory = %d, %q; want 2, %q", code, stderr, want)
	}

	// A named pipe stands for any file that is not a regular one (a
	// device, such as /dev/null): renaming over it would replace it.
	fifo := filepath.Join(t.TempDir(), "pipe")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	code, _, stderr = ketnoi(t, append([]string{"registry", "backup", "--out", fifo}, o.conn...)...)
	if want := "ketnoi registry: --out " + fifo + " is not a regular file\n"; code != 2 || stderr != want {
		t.Errorf("backup onto a named pipe = %d, %q; want 2, %q", code, stderr, want)
	}
	if fi, err := os.Lstat(fifo); err != nil || fi.Mode()&os.ModeNamedPipe == 0 {
		t.Errorf("the named pipe was replaced: %v %v", fi.Mode(), err)
	}

	out := filepath.Join(t.TempDir(), "registry.db")
	o.ok(t, "registry", "backup", "--out", out)
	if got := o.ok(t, "registry", "backup", "--out", out); !strings.HasPrefix(got, "wrote "+out+": ") {
		t.Errorf("backup over an earlier backup = %q", got)
	}
}

// A backup replaces only an earlier backup: a node's evidence journal, its
// evidence log, any other file is refused with what it is, exit 2, and
// left as it was, since the node would lose acknowledged evidence.
func TestRegistryBackupRefusesOtherFiles(t *testing.T) {
	o, _ := populated(t)
	dir := t.TempDir()
	journal := filepath.Join(dir, "evidence.db.journal")
	if err := os.WriteFile(journal, []byte(strings.Repeat("frame ", 1000)), 0o600); err != nil {
		t.Fatal(err)
	}
	evidenceLog := filepath.Join(dir, "evidence.db")
	db, err := bolt.Open(evidenceLog, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		_, err := tx.CreateBucket([]byte("records"))
		return err
	})
	if cerr := db.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ path, what string }{
		{journal, "not a bbolt file"},
		{evidenceLog, `a bbolt file of another program (buckets "records")`},
	} {
		before, err := os.ReadFile(tc.path)
		if err != nil {
			t.Fatal(err)
		}
		code, _, stderr := ketnoi(t, append([]string{"registry", "backup", "--out", tc.path}, o.conn...)...)
		want := "ketnoi registry: --out " + tc.path + " is not a registry backup (" + tc.what +
			"); a backup replaces only an earlier one: write it to another file\n"
		if code != 2 || stderr != want {
			t.Errorf("backup over %s = %d, %q; want 2, %q", tc.path, code, stderr, want)
		}
		if after, err := os.ReadFile(tc.path); err != nil || !bytes.Equal(before, after) {
			t.Errorf("refused backup changed %s (%v)", tc.path, err)
		}
	}
}
