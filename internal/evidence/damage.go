package evidence

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"os"
	"runtime/debug"

	bolt "go.etcd.io/bbolt"
)

// ErrDamaged is returned when a log file is too damaged to read, for
// example truncated: bbolt maps the file into memory, and reading a page
// past its end would otherwise crash the process.
var ErrDamaged = errors.New("evidence log is damaged")

// ErrJournalDamaged is returned, wrapped, when the log's journal is
// missing, cut short or does not continue the tree, after a node did not
// close the log cleanly: records acknowledged from it may be lost. It
// wraps ErrDamaged. The tree itself can still be read with
// OpenReadOnlyTree.
var ErrJournalDamaged = fmt.Errorf("%w: its journal", ErrDamaged)

// guardFaults makes a memory fault in the calling goroutine an ErrDamaged
// error instead of a crash. Use it as: defer guardFaults(&err)().
func guardFaults(err *error) func() {
	old := debug.SetPanicOnFault(true)
	return func() {
		debug.SetPanicOnFault(old)
		r := recover()
		if r == nil {
			return
		}
		if _, ok := r.(interface{ Addr() uintptr }); ok {
			*err = fmt.Errorf("%w: reading it faulted (truncated file?)", ErrDamaged)
			return
		}
		panic(r)
	}
}

// checkSize refuses a file shorter than the pages its metadata counts.
func checkSize(db *bolt.DB, path string) error {
	info, err := os.Stat(path)
	if err != nil {
		return err
	}
	return db.View(func(tx *bolt.Tx) error {
		if need := tx.Size(); info.Size() < need {
			return fmt.Errorf("%w: file is %d bytes, its pages need %d (truncated?)", ErrDamaged, info.Size(), need)
		}
		return nil
	})
}

// bbolt's on-disk meta page, as far as precheck needs it: a 16-byte page
// header, then magic, version, page size, flags, root bucket (16 bytes),
// freelist page, high-water page id, transaction id and an FNV-64a
// checksum of the meta fields before it.
const (
	boltMagic      = 0xED0CDAED
	metaOffset     = 16
	metaChecksumAt = metaOffset + 56
)

// precheck refuses a file shorter than the pages its newest valid meta page
// counts, before bbolt maps it: bbolt rebuilds its free list on open in a
// goroutine of its own, where a fault past the end of a truncated file
// cannot be caught.
func precheck(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	info, err := f.Stat()
	if err != nil {
		return err
	}
	var need, bestTx uint64
	first := make([]byte, 4096)
	n, _ := f.ReadAt(first, 0)
	pageSize, ok := metaPageSize(first[:n])
	if !ok {
		return nil // not a bbolt file; bbolt's own open says so
	}
	for i := int64(0); i < 2; i++ {
		buf := make([]byte, metaChecksumAt+8)
		if _, err := f.ReadAt(buf, i*int64(pageSize)); err != nil {
			continue
		}
		if hwm, txid, ok := parseMeta(buf); ok && txid >= bestTx {
			bestTx, need = txid, hwm*uint64(pageSize)
		}
	}
	if need > uint64(info.Size()) {
		return fmt.Errorf("%w: file is %d bytes, its pages need %d (truncated?)", ErrDamaged, info.Size(), need)
	}
	return nil
}

func metaPageSize(b []byte) (uint32, bool) {
	if len(b) < metaChecksumAt+8 || binary.LittleEndian.Uint32(b[metaOffset:]) != boltMagic {
		return 0, false
	}
	ps := binary.LittleEndian.Uint32(b[metaOffset+8:])
	return ps, ps >= 512 && ps <= 1<<20
}

func parseMeta(b []byte) (hwm, txid uint64, ok bool) {
	if binary.LittleEndian.Uint32(b[metaOffset:]) != boltMagic {
		return 0, 0, false
	}
	h := fnv.New64a()
	h.Write(b[metaOffset:metaChecksumAt])
	if h.Sum64() != binary.LittleEndian.Uint64(b[metaChecksumAt:]) {
		return 0, 0, false
	}
	return binary.LittleEndian.Uint64(b[metaOffset+40:]), binary.LittleEndian.Uint64(b[metaOffset+48:]), true
}
