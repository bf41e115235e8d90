package registry

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"

	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"
	"google.golang.org/grpc"
	"google.golang.org/grpc/status"

	"github.com/ketnoi/ketnoi/internal/logging"
	registryv1 "github.com/ketnoi/ketnoi/proto/ketnoi/registry/v1"
)

// backupChunk is the most file bytes one BackupResponse carries, well under
// the 4 MiB a gRPC client receives by default.
const backupChunk = 1 << 20

// Backup streams the state file as one read transaction sees it: a
// consistent copy that bbolt opens like the original, taken while changes
// go on (r.mu is not held; pages freed meanwhile are reused only after the
// copy ends). Restoring it means stopping the registry and putting the
// copy in place of its state file.
//
// The copy goes to a temporary file first and the transaction ends before
// the client reads any of it: bbolt grows its memory map only once no read
// transaction is open, so a transaction held while a slow or stalled
// client reads would hold up every change that grows the state file, and
// behind that change every other change and catalogue read.
func (s *adminServer) Backup(
	_ *registryv1.BackupRequest,
	stream grpc.ServerStreamingServer[registryv1.BackupResponse],
) error {
	ctx := stream.Context()
	snap, version, size, err := s.r.snapshot()
	if err != nil {
		return s.r.toStatus(ctx, "backup", err)
	}
	defer snap.Close()
	w := &chunkSender{
		ctx:  ctx,
		send: stream.Send,
		next: &registryv1.BackupResponse{
			TotalBytes: size,
			Version:    version,
			Data:       make([]byte, 0, min(size, backupChunk)),
		},
	}
	if _, err := io.Copy(w, io.NewSectionReader(snap, 0, size)); err != nil {
		return s.r.toStatus(ctx, "backup", err)
	}
	if err := w.flush(); err != nil {
		return s.r.toStatus(ctx, "backup", err)
	}
	s.r.log.InfoContext(ctx, "registry backed up",
		slog.Uint64(logging.KeyVersion, version),
		slog.String(logging.KeyPeer, callerFrom(ctx).String()))
	return nil
}

// snapshot copies the state file, as one read transaction sees it, to a
// temporary file beside it and returns the open copy, the configuration
// version it holds and its size. The copy is unlinked at once: it stays
// readable until closed, and a registry that dies meanwhile leaves nothing
// behind. Beside the state file, rather than in the system's temporary
// directory, it lands on a disk known to have held the state file.
func (r *Registry) snapshot() (_ *os.File, version uint64, size int64, err error) {
	f, err := os.CreateTemp(filepath.Dir(r.db.Path()), ".backup-*")
	if err != nil {
		return nil, 0, 0, fmt.Errorf("create copy: %w", err)
	}
	defer func() {
		if err != nil {
			f.Close()
		}
	}()
	if err := os.Remove(f.Name()); err != nil {
		return nil, 0, 0, fmt.Errorf("unlink copy: %w", err)
	}
	err = r.db.View(func(tx *bolt.Tx) error {
		version, size = getUint(tx.Bucket(bucketMeta), keyVersion), tx.Size()
		_, err := tx.WriteTo(f)
		return err
	})
	if err != nil {
		return nil, 0, 0, fmt.Errorf("copy state: %w", err)
	}
	return f, version, size, nil
}

// StateVersion opens a state file read-only, as Open would find it, and
// returns the last configuration version it holds. It checks a backup
// before it replaces an older one. A damaged file is an error, not a crash
// (see guardDamage).
func StateVersion(path string) (_ uint64, err error) {
	defer guardDamage(path, &err)()
	if err := checkLength(path); err != nil {
		return 0, err
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true, Timeout: openTimeout})
	if errors.Is(err, bolterrors.ErrTimeout) {
		return 0, fmt.Errorf("open %s: %w", path, ErrLocked)
	}
	if err != nil {
		return 0, fmt.Errorf("open %s: %w", path, err)
	}
	defer db.Close()
	if err := checkPages(db, path); err != nil {
		return 0, err
	}
	var version uint64
	err = db.View(func(tx *bolt.Tx) error {
		meta := tx.Bucket(bucketMeta)
		if meta == nil || meta.Get(keySigned) == nil {
			return errors.New("no published configuration")
		}
		version = getUint(meta, keyVersion)
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("%s is not a registry state file: %w", path, err)
	}
	return version, nil
}

// chunkSender is an io.Writer that sends what it is given as
// BackupResponse messages of backupChunk bytes; the first message also
// carries the fields set in next.
type chunkSender struct {
	ctx  context.Context
	send func(*registryv1.BackupResponse) error
	next *registryv1.BackupResponse
}

func (c *chunkSender) Write(p []byte) (int, error) {
	written := 0
	for len(p) > 0 {
		if err := c.ctx.Err(); err != nil {
			// The caller left or its deadline passed: its status, not
			// an internal error.
			return written, status.FromContextError(err).Err()
		}
		n := min(len(p), backupChunk-len(c.next.Data))
		c.next.Data = append(c.next.Data, p[:n]...)
		p, written = p[n:], written+n
		if len(c.next.Data) == backupChunk {
			if err := c.flush(); err != nil {
				return written, err
			}
		}
	}
	return written, nil
}

// flush sends the pending bytes, if any, or the first message, which goes
// out even for an empty copy.
func (c *chunkSender) flush() error {
	if len(c.next.Data) == 0 && c.next.TotalBytes == 0 {
		return nil
	}
	if err := c.send(c.next); err != nil {
		return err
	}
	c.next = &registryv1.BackupResponse{Data: make([]byte, 0, backupChunk)}
	return nil
}
