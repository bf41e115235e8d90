// Package boltfile reads what it needs of a bbolt file's meta pages
// without bbolt. bbolt maps a file into memory and trusts its meta page: a
// file cut short makes it fault on the first page past the end, in a
// goroutine of its own where the fault cannot be caught. Checking the
// length first lets the evidence log and the registry refuse such a file
// with an error instead.
package boltfile

import (
	"encoding/binary"
	"fmt"
	"hash/fnv"
	"os"
	"runtime/debug"
)

// ShortError reports a file shorter than the pages its newest valid meta
// page counts.
type ShortError struct {
	Size, Need int64
}

func (e *ShortError) Error() string {
	return fmt.Sprintf("file is %d bytes, its pages need %d (truncated?)", e.Size, e.Need)
}

// bbolt's meta page, as far as CheckLength reads it: a 16-byte page header,
// then magic, version, page size, flags, root bucket (16 bytes), free list
// page, high-water page, transaction id and the FNV-64a checksum of the
// fields before it. Pages 0 and 1 are meta pages; the valid one with the
// higher transaction id is current.
const (
	magic      = 0xED0CDAED
	metaAt     = 16
	pageSizeAt = metaAt + 8
	highAt     = metaAt + 40
	txAt       = metaAt + 48
	sumAt      = metaAt + 56
)

// CheckLength returns a *ShortError when the file at path is shorter than
// its current meta page says. A file that is not a regular file or not a
// bbolt file passes: bbolt's own open says what is wrong with it. An error
// opening or reading the file is returned as it is.
func CheckLength(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	info, err := f.Stat()
	if err != nil {
		return err
	}
	if !info.Mode().IsRegular() {
		return nil
	}
	head := make([]byte, sumAt+8)
	if n, _ := f.ReadAt(head, 0); n < len(head) || binary.LittleEndian.Uint32(head[metaAt:]) != magic {
		return nil
	}
	pageSize := int64(binary.LittleEndian.Uint32(head[pageSizeAt:]))
	if pageSize < 512 || pageSize > 1<<20 {
		return nil
	}
	var need, bestTx uint64
	for i := range int64(2) {
		meta := make([]byte, sumAt+8)
		if _, err := f.ReadAt(meta, i*pageSize); err != nil {
			continue
		}
		if high, tx, ok := parseMeta(meta); ok && tx >= bestTx {
			bestTx, need = tx, high*uint64(pageSize)
		}
	}
	if need > uint64(info.Size()) {
		return &ShortError{Size: info.Size(), Need: int64(need)}
	}
	return nil
}

// parseMeta returns the high-water page and transaction id of a meta page
// whose magic and checksum are right.
func parseMeta(b []byte) (high, tx uint64, ok bool) {
	if binary.LittleEndian.Uint32(b[metaAt:]) != magic {
		return 0, 0, false
	}
	h := fnv.New64a()
	h.Write(b[metaAt:sumAt])
	if h.Sum64() != binary.LittleEndian.Uint64(b[sumAt:]) {
		return 0, 0, false
	}
	return binary.LittleEndian.Uint64(b[highAt:]), binary.LittleEndian.Uint64(b[txAt:]), true
}

// Guard makes a memory fault in the calling goroutine, and with panics
// set any panic, an error in *err instead of a crash. bbolt maps its file
// into memory and faults on pages past the end of a file cut short; it
// panics on pages it cannot make sense of. damaged gives the error; its
// argument is "reading it faulted (truncated?)" for a fault, or the panic
// value. Use it as: defer boltfile.Guard(&err, panics, damaged)().
func Guard(err *error, panics bool, damaged func(what any) error) func() {
	old := debug.SetPanicOnFault(true)
	return func() {
		debug.SetPanicOnFault(old)
		p := recover()
		if p == nil {
			return
		}
		if _, fault := p.(interface{ Addr() uintptr }); fault {
			*err = damaged("reading it faulted (truncated?)")
			return
		}
		if !panics {
			panic(p)
		}
		*err = damaged(p)
	}
}
