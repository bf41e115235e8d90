package registry

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	bolt "go.etcd.io/bbolt"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
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
	// Grants issued after the backup may have had any number up to held.
	g, err := f.admin(t).AddGrant(ctx, &registryv1.AddGrantRequest{Client: memberG22, Service: serviceDVHC})
	if err != nil {
		t.Fatal(err)
	}
	if want := fmt.Sprintf("g-%d", held+1); g.GetGrant().GetId() != want {
		t.Errorf("first grant after resuming above %d = %s, want %s", held, g.GetGrant().GetId(), want)
	}
}

// ResumeAbove that leaves fewer than 2^32 versions to publish is refused:
// no node holds such a version, and a registry near the last one could
// soon publish nothing more. MaxResumeAbove itself is accepted.
func TestResumeAboveHeadroom(t *testing.T) {
	f := newFixture(t)
	f.close()

	for _, above := range []uint64{MaxResumeAbove + 1, math.MaxUint64} {
		cfg := f.cfg
		cfg.ResumeAbove = above
		reg, err := Open(f.path, cfg)
		if err == nil {
			v := decode(t, reg.Configuration()).GetVersion()
			reg.Close()
			t.Fatalf("Open with ResumeAbove %d succeeded, publishing version %d", above, v)
		}
		want := fmt.Sprintf("resume above %d: it leaves fewer than 2^32 configuration versions to publish; "+
			"the highest accepted is %d", above, uint64(MaxResumeAbove))
		if !strings.Contains(err.Error(), want) {
			t.Errorf("Open with ResumeAbove %d: %v, want %q", above, err, want)
		}
	}

	f.cfg.ResumeAbove = MaxResumeAbove
	f.start(t)
	if v := decode(t, f.reg.Configuration()).GetVersion(); v != MaxResumeAbove+1 {
		t.Errorf("version after resuming above %d = %d, want %d", uint64(MaxResumeAbove), v, uint64(MaxResumeAbove+1))
	}
}

// A version counter at its last value has no version above it: the
// registry refuses to publish past it instead of wrapping to version 0,
// which every node would ignore as older than the one it holds.
func TestLastVersion(t *testing.T) {
	f := newFixture(t)
	f.close()
	// Only a damaged or edited state file gets this far: ResumeAbove and
	// nodes' reports stop well below.
	db, err := bolt.Open(f.path, 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(func(tx *bolt.Tx) error { return putUint(tx.Bucket(bucketMeta), keyVersion, math.MaxUint64-1) })
	db.Close()
	if err != nil {
		t.Fatal(err)
	}
	f.start(t)

	ctx := testContext(t)
	admin := f.admin(t)
	addMember := func(m string) error {
		_, err := admin.AddMember(ctx, &registryv1.AddMemberRequest{
			MemberId: m, Name: "member " + m, SigningCertificate: f.ca.Signer(t, m).Certificate().Raw,
		})
		return err
	}
	if err := addMember(memberG22); err != nil {
		t.Fatalf("change to the last version: %v", err)
	}
	if v := decode(t, f.reg.Configuration()).GetVersion(); v != math.MaxUint64 {
		t.Fatalf("version after the change = %d, want %d", v, uint64(math.MaxUint64))
	}
	if err := addMember(memberG09); status.Code(err) != codes.ResourceExhausted {
		t.Errorf("change at the last version: %v, want ResourceExhausted", err)
	}
	if v := decode(t, f.reg.Configuration()).GetVersion(); v != math.MaxUint64 {
		t.Errorf("version after the refused change = %d, want %d", v, uint64(math.MaxUint64))
	}
}

// blockedBackup is a Backup stream whose client has stopped reading: its
// first Send goes through, the next ones wait until release is closed.
type blockedBackup struct {
	grpc.ServerStream
	ctx     context.Context
	sent    int
	first   chan struct{}
	release chan struct{}
}

func (b *blockedBackup) Context() context.Context { return b.ctx }

func (b *blockedBackup) Send(*registryv1.BackupResponse) error {
	if b.sent++; b.sent == 1 {
		close(b.first)
		return nil
	}
	select {
	case <-b.release:
		return nil
	case <-b.ctx.Done():
		return b.ctx.Err()
	}
}

// A client that reads a backup slowly, or stops reading it, holds up no
// change, even one that grows the state file.
func TestBackupDoesNotHoldUpChanges(t *testing.T) {
	f := newFixture(t)
	ctx := testContext(t)
	admin := f.admin(t)
	f.populate(t, ctx, admin)
	// A state file of several backup messages, so that the copy waits on
	// the client after its first.
	if _, err := admin.ImportCodeList(ctx, bigList("big-1", 20000)); err != nil {
		t.Fatal(err)
	}

	stream := &blockedBackup{ctx: ctx, first: make(chan struct{}), release: make(chan struct{})}
	done := make(chan error, 1)
	go func() { done <- (&adminServer{r: f.reg}).Backup(&registryv1.BackupRequest{}, stream) }()
	defer func() {
		close(stream.release)
		if err := <-done; err != nil {
			t.Errorf("Backup: %v", err)
		}
	}()
	select {
	case <-stream.first:
	case err := <-done:
		t.Fatalf("Backup ended before its client stopped reading: %v", err)
	}

	// Twice the data again: the state file must grow.
	changed := make(chan error, 1)
	go func() {
		_, err := admin.ImportCodeList(ctx, bigList("big-2", 40000))
		changed <- err
	}()
	select {
	case err := <-changed:
		if err != nil {
			t.Fatalf("ImportCodeList during a backup: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("ImportCodeList waits for a backup whose client has stopped reading")
	}
}

// bigList is a code list import of n entries of about 80 bytes each.
func bigList(name string, n int) *registryv1.ImportCodeListRequest {
	req := smallList()
	req.List, req.Entries = name, nil
	for i := range n {
		req.Entries = append(req.Entries, &cataloguev1.CodeEntry{
			Code:   fmt.Sprintf("%06d", i),
			Fields: map[string]string{"name": strings.Repeat("x", 64)},
		})
	}
	return req
}
