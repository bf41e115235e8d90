package registry

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	bolt "go.etcd.io/bbolt"
	"google.golang.org/protobuf/testing/protocmp"

	cataloguev1 "github.com/ketnoi/ketnoi/proto/ketnoi/catalogue/v1"
	registryv1 "github.com/ketnoi/ketnoi/proto/ketnoi/registry/v1"
)

// backup reads a whole Backup stream and returns the bytes and the first
// message.
func backup(t *testing.T, admin registryv1.AdminServiceClient) ([]byte, *registryv1.BackupResponse) {
	t.Helper()
	stream, err := admin.Backup(testContext(t), &registryv1.BackupRequest{})
	if err != nil {
		t.Fatalf("Backup: %v", err)
	}
	var (
		data  bytes.Buffer
		first *registryv1.BackupResponse
		n     int
	)
	for {
		msg, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("Backup: Recv after %d messages: %v", n, err)
		}
		if first == nil {
			first = msg
		} else if msg.GetTotalBytes() != 0 || msg.GetVersion() != 0 {
			t.Errorf("message %d repeats total_bytes or version", n)
		}
		if len(msg.GetData()) > backupChunk {
			t.Errorf("message %d carries %d bytes, over %d", n, len(msg.GetData()), backupChunk)
		}
		data.Write(msg.GetData())
		n++
	}
	if first == nil {
		t.Fatal("Backup sent no message")
	}
	return data.Bytes(), first
}

// A backup restored in place of the state file is the registry as it was
// when the copy was taken: same configuration, same version, and later
// changes continue from it.
func TestBackupRestores(t *testing.T) {
	f := newFixture(t)
	ctx := testContext(t)
	admin := f.admin(t)
	f.populate(t, ctx, admin)
	// Enough entries that the copy spans several messages.
	big := smallList()
	big.Entries = nil
	for i := range 30000 {
		big.Entries = append(big.Entries, &cataloguev1.CodeEntry{
			Code:   fmt.Sprintf("%06d", i),
			Fields: map[string]string{"name": strings.Repeat("x", 64)},
		})
	}
	if _, err := admin.ImportCodeList(ctx, big); err != nil {
		t.Fatal(err)
	}
	atBackup := f.reg.Configuration()

	data, first := backup(t, admin)
	if int64(len(data)) != first.GetTotalBytes() {
		t.Fatalf("backup has %d bytes, first message announced %d", len(data), first.GetTotalBytes())
	}
	if len(data) <= backupChunk {
		t.Fatalf("backup of %d bytes fits one message; the test wants several", len(data))
	}
	if want := decode(t, atBackup).GetVersion(); first.GetVersion() != want {
		t.Errorf("backup version = %d, want %d", first.GetVersion(), want)
	}

	// A change after the copy is not in it.
	if _, err := admin.RemoveNode(ctx, &registryv1.RemoveNodeRequest{SpiffeId: nodeID}); err != nil {
		t.Fatal(err)
	}
	f.close()
	if err := os.WriteFile(f.path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	f.start(t)

	if diff := cmp.Diff(atBackup, f.reg.Configuration(), protocmp.Transform()); diff != "" {
		t.Errorf("restored configuration differs from the one at backup (-backup +restored):\n%s", diff)
	}
	resp, err := f.admin(t).RemoveNode(ctx, &registryv1.RemoveNodeRequest{SpiffeId: nodeID})
	if err != nil {
		t.Fatalf("RemoveNode after restore: %v", err)
	}
	if resp.GetVersion() != first.GetVersion()+1 {
		t.Errorf("first version after restore = %d, want %d", resp.GetVersion(), first.GetVersion()+1)
	}
}

func TestStateVersionRefusesOtherFiles(t *testing.T) {
	dir := t.TempDir()
	garbage := filepath.Join(dir, "garbage.db")
	if err := os.WriteFile(garbage, bytes.Repeat([]byte("not bbolt "), 1000), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := StateVersion(garbage); err == nil {
		t.Errorf("StateVersion of a file that is not bbolt succeeded")
	}

	// A bbolt file, but not one the registry wrote.
	empty := filepath.Join(dir, "empty.db")
	db, err := bolt.Open(empty, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	db.Close()
	if _, err := StateVersion(empty); err == nil || !strings.Contains(err.Error(), "is not a registry state file") {
		t.Errorf("StateVersion of an empty bbolt file: %v, want not a registry state file", err)
	}

	if _, err := StateVersion(filepath.Join(dir, "missing.db")); err == nil {
		t.Errorf("StateVersion of a missing file succeeded")
	}
}

// A registry restored from a backup and started with ResumeAbove publishes
// its restored state above the version nodes hold, so they take it; a
// lower ResumeAbove, as on a later restart with the same flag, changes
// nothing.
func TestResumeAbove(t *testing.T) {
	f := newFixture(t)
	ctx := testContext(t)
	f.populate(t, ctx, f.admin(t))
	before := decode(t, f.reg.Configuration())
	held := before.GetVersion() + 5 // what nodes saw before the restore

	f.cfg.ResumeAbove = held
	f.restart(t)
	after := decode(t, f.reg.Configuration())
	if after.GetVersion() != held+1 {
		t.Errorf("version after resuming above %d = %d, want %d", held, after.GetVersion(), held+1)
	}
	after.Version, after.IssuedAt, after.ExpiresAt = 0, nil, nil
	before.Version, before.IssuedAt, before.ExpiresAt = 0, nil, nil
	if diff := cmp.Diff(before, after, protocmp.Transform()); diff != "" {
		t.Errorf("resuming changed the content (-before +after):\n%s", diff)
	}

	f.restart(t) // same ResumeAbove, now below the stored version
	if v := decode(t, f.reg.Configuration()).GetVersion(); v != held+1 {
		t.Errorf("version after a second start with the same flag = %d, want %d unchanged", v, held+1)
	}
	resp, err := f.admin(t).RemoveNode(ctx, &registryv1.RemoveNodeRequest{SpiffeId: nodeID})
	if err != nil {
		t.Fatal(err)
	}
	if resp.GetVersion() != held+2 {
		t.Errorf("next change = version %d, want %d", resp.GetVersion(), held+2)
	}
}
