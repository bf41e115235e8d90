package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"google.golang.org/grpc"

	"github.com/ketnoi/ketnoi/internal/registry"
	registryv1 "github.com/ketnoi/ketnoi/proto/ketnoi/registry/v1"
)

const registryUsage = `usage:
  ketnoi registry backup --out FILE

backup copies the running registry's state file, consistently and without
stopping it, and replaces FILE with the copy only once it is complete and
opens as a registry state file. An existing FILE must be an earlier backup
(a registry state file) that no running process holds open: the
registry's own --data file is refused (exit 1), and so is any other file,
such as a node's evidence log, its journal or its state.db (exit 2).

To restore, stop ketnoi-registry, put the copy in place of its --data
file and start it again, with --resume-above the newest configuration
version nodes hold.
` + connectionUsage

// backupTimeout bounds a backup, which may carry far more than the other
// registry commands.
const backupTimeout = 10 * time.Minute

func runRegistry(ctx context.Context, args []string, stdout io.Writer) error {
	return subcommand(ctx, args, stdout, registryUsage, map[string]verb{
		"backup": registryBackup,
	})
}

// registryBackup streams the registry's state into a temporary file beside
// --out and renames it into place, so that FILE is always a whole backup:
// the previous one or the new one.
func registryBackup(ctx context.Context, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("registry backup", flag.ContinueOnError)
	out := fs.String("out", "", "`file` to write the backup to; replaced atomically (required)")
	conn := addRegistryFlags(fs)
	if err := parseFlags(fs, args, stdout); err != nil {
		return helpOrError(err)
	}
	if err := requireFlags(fs, "out"); err != nil {
		return err
	}
	if fi, err := os.Stat(*out); err == nil {
		switch {
		case fi.IsDir():
			return usagef("--out %s is a directory", *out)
		case !fi.Mode().IsRegular():
			// Renaming over a device or a pipe would replace it.
			return usagef("--out %s is not a regular file", *out)
		}
	}
	// The copy is written beside FILE first: a missing directory would
	// otherwise be reported under the temporary file's name.
	if fi, err := os.Stat(filepath.Dir(*out)); err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return usagef("--out %s: directory %s does not exist", *out, filepath.Dir(*out))
		}
		return usagef("--out %s: %v", *out, err)
	} else if !fi.IsDir() {
		return usagef("--out %s: %s is not a directory", *out, filepath.Dir(*out))
	}
	if err := checkOut(*out); err != nil {
		return err
	}

	tmp, err := os.CreateTemp(filepath.Dir(*out), "."+filepath.Base(*out)+".tmp*")
	if err != nil {
		return fmt.Errorf("backup: %w", err)
	}
	defer os.Remove(tmp.Name()) // fails harmlessly after the rename
	var (
		first   *registryv1.BackupResponse
		written int64
	)
	ctx, cancel := context.WithTimeout(ctx, backupTimeout)
	defer cancel()
	err = callRegistryStream(ctx, conn, func(ctx context.Context, cc *grpc.ClientConn) error {
		var rerr error
		first, written, rerr = receiveBackup(ctx, cc, tmp)
		return rerr
	})
	if cerr := tmp.Close(); err == nil && cerr != nil {
		err = fmt.Errorf("backup: %w", cerr)
	}
	if err != nil {
		return err
	}
	if err := checkBackup(tmp.Name(), first.GetVersion()); err != nil {
		return err
	}
	// Again: a registry may have started on FILE while the copy came.
	if err := checkOut(*out); err != nil {
		return err
	}
	if err := os.Rename(tmp.Name(), *out); err != nil {
		return fmt.Errorf("backup: %w", err)
	}
	if err := syncDir(filepath.Dir(*out)); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "wrote %s: %d bytes, configuration version %d\n", *out, written, first.GetVersion())
	return nil
}

// receiveBackup writes the Backup stream to f, synced, and returns its
// first message and the bytes written. A stream that ends short of the size
// it announced is an error, not a smaller backup.
func receiveBackup(
	ctx context.Context,
	cc *grpc.ClientConn,
	f *os.File,
) (*registryv1.BackupResponse, int64, error) {
	stream, err := registryv1.NewAdminServiceClient(cc).Backup(ctx, &registryv1.BackupRequest{})
	if err != nil {
		return nil, 0, err
	}
	var (
		first   *registryv1.BackupResponse
		written int64
	)
	for {
		msg, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, written, err
		}
		if first == nil {
			first = msg
		}
		n, err := f.Write(msg.GetData())
		written += int64(n)
		if err != nil {
			return nil, written, fmt.Errorf("backup: %w", err)
		}
	}
	if first == nil || written != first.GetTotalBytes() {
		return nil, written, fmt.Errorf("backup: the registry sent %d bytes of %d", written, first.GetTotalBytes())
	}
	if err := f.Sync(); err != nil {
		return nil, written, fmt.Errorf("backup: %w", err)
	}
	return first, written, nil
}

// checkBackup opens the copy as the registry would and checks that it
// holds the configuration version the registry announced.
func checkBackup(path string, version uint64) error {
	got, err := registry.StateVersion(path)
	if err != nil {
		return fmt.Errorf("backup: %w", err)
	}
	if got != version {
		return fmt.Errorf("backup holds configuration version %d, not %d as announced", got, version)
	}
	return nil
}

// checkOut refuses an --out that exists and is not an earlier backup no
// process holds. Held with bbolt, above all as the running registry's own
// state file, the rename would replace the file under its process, which
// would go on writing to the replaced one and lose every later change when
// it next starts (exit 1, as the file may be free later). Any other file,
// such as a node's evidence log or journal, would lose what it holds
// (exit 2: the command line names the wrong file).
func checkOut(path string) error {
	err := registry.CheckReplaceable(path)
	if errors.Is(err, registry.ErrLocked) {
		return fmt.Errorf("--out %w; a backup must not replace it: write the backup to another file", err)
	}
	if nse, ok := errors.AsType[*registry.NotStateFileError](err); ok {
		return usagef("--out %s is not a registry backup (%s); a backup replaces only an earlier one: "+
			"write it to another file", path, nse.What)
	}
	if err != nil {
		return usagef("--out %v; a backup replaces only an earlier one: write it to another file", err)
	}
	return nil
}

// syncDir makes a rename in dir durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("backup: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("backup: %w", err)
	}
	return nil
}
