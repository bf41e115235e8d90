package evidence

import (
	"errors"
	"fmt"
	"os"

	bolt "go.etcd.io/bbolt"

	"github.com/ketnoi/ketnoi/internal/boltfile"
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
// error instead of a crash; other panics stay panics. Use it as:
// defer guardFaults(&err)().
func guardFaults(err *error) func() {
	return boltfile.Guard(err, false, func(what any) error { return fmt.Errorf("%w: %v", ErrDamaged, what) })
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

// precheck refuses a file shorter than the pages its newest valid meta page
// counts, before bbolt maps it: bbolt rebuilds its free list on open in a
// goroutine of its own, where a fault past the end of a truncated file
// cannot be caught.
func precheck(path string) error {
	err := boltfile.CheckLength(path)
	if short, ok := errors.AsType[*boltfile.ShortError](err); ok {
		return fmt.Errorf("%w: %v", ErrDamaged, short)
	}
	return err
}
