package evidence

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
)

// The journal is the log's write-ahead file, beside the bbolt file with the
// suffix ".journal". Each group commit is appended to it as one frame and
// made durable with one fdatasync; from then on its records are evidence.
// The writer folds journaled records into the bbolt tree later, many
// commits at a time, and empties the journal once the tree holds them
// durably. A bbolt commit syncs twice (its pages, then its meta page) and
// rewrites the pages at the tree's edge each time, so folding every few
// hundred records instead of every commit takes both off the exchange's
// path; bbolt commits stay synced, so the tree on disk is always whole.
//
// A frame is
//
//	body length (4 bytes) | CRC-32C of body (4 bytes) | body
//	body: generation (8) | index of its first record (8) | record count (4) |
//	      records
//	record: leaf length (4) | leaf | certificate length (4) | certificate |
//	        message id length (2) | message id
//
// all integers big endian. Reading stops at the first frame that is
// incomplete, fails its checksum or belongs to another generation: a crash
// during an append leaves at most that frame behind, and its records were
// never acknowledged.
//
// The file is written full of zeros when the log opens, and frames then
// overwrite those blocks: a sync that need not record a new file length or
// newly allocated blocks costs about half as much as one after an append.
// Emptying the journal at run time therefore only starts writing at the
// front again, behind which old frames and old record bytes remain. The
// generation tells new frames from them: a random number, never shown to
// anyone, that the tree's meta bucket holds ("journal") and every frame
// repeats. A new one is stored in the same synced transaction as the fold
// after which the journal starts again, and when the log opens; so old
// frames, and frame-shaped bytes a peer may have put in a record, are
// never read as new ones. A log closed cleanly stores generation 0: it
// needs no journal.
const (
	journalSuffix    = ".journal"
	frameHeaderSize  = 8
	frameFixedSize   = 20 // generation, first index, count
	maxFrameBody     = 1 << 30
	journalSize      = 16 << 20 // zeros written when the log opens
	journalResetSize = 4 << 20  // start again at the front after a fold past this
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// journal appends frames to the journal file. It is used by the writer
// goroutine only.
type journal struct {
	f    *os.File
	path string
	gen  uint64 // generation of the frames written now
	size int64  // end of the last complete frame
	buf  []byte
	// broken is set when the file can no longer be trusted: a failed sync,
	// or a failed write whose partial frame could not be cut off. Every
	// later append fails with it, until the node restarts and the journal
	// is read again.
	broken error
}

// journaled is one record read back from the journal.
type journaled struct {
	index     uint64
	leaf      []byte
	cert      []byte
	messageID string
}

// openJournal opens the journal at path and reads its complete frames of
// generation gen. With gen 0 (a log closed cleanly, or new) it reads none,
// and a missing journal is created; otherwise a missing journal is damage:
// records acknowledged as durable would be missing. The caller folds the
// records into the tree and then calls recreate before appending.
func openJournal(path string, gen uint64) (*journal, []journaled, error) {
	flags := os.O_RDWR
	if gen == 0 {
		flags |= os.O_CREATE
	}
	f, err := os.OpenFile(path, flags, 0o600)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil, fmt.Errorf("%w %s is missing, and the log was not closed cleanly", ErrJournalDamaged, path)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("open journal: %w", err)
	}
	var recs []journaled
	if gen != 0 {
		b, err := io.ReadAll(f)
		if err == nil {
			recs, err = readJournalBytes(path, b, gen)
		}
		if err != nil {
			f.Close()
			return nil, nil, err
		}
	}
	return &journal{f: f, path: path}, recs, nil
}

// recreate empties the journal and fills it with zeros, durably, for
// frames of generation gen; its records must be durable in the tree, and
// gen must be stored in the tree right after.
func (j *journal) recreate(gen uint64) error {
	if err := j.f.Truncate(0); err != nil {
		return fmt.Errorf("empty journal: %w", err)
	}
	j.size, j.gen = 0, gen
	if err := j.zeroFrom(0); err != nil {
		return err
	}
	if err := datasync(j.f); err != nil {
		return fmt.Errorf("sync journal: %w", err)
	}
	// The journal's directory entry must survive a power cut as well.
	dir, err := os.Open(filepath.Dir(j.path))
	if err != nil {
		return fmt.Errorf("sync journal directory: %w", err)
	}
	defer dir.Close()
	if err := dir.Sync(); err != nil {
		return fmt.Errorf("sync journal directory: %w", err)
	}
	return nil
}

// zeroFrom writes zeros from off to journalSize.
func (j *journal) zeroFrom(off int64) error {
	zeros := make([]byte, 1<<20)
	for ; off < journalSize; off += int64(len(zeros)) {
		n := min(int64(len(zeros)), journalSize-off)
		if _, err := j.f.WriteAt(zeros[:n], off); err != nil {
			return fmt.Errorf("write journal zeros: %w", err)
		}
	}
	return nil
}

// readJournal reads the complete frames of generation gen of the journal
// at path without changing it.
func readJournal(path string, gen uint64) ([]journaled, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("%w %s is missing, and the log was not closed cleanly", ErrJournalDamaged, path)
	}
	if err != nil {
		return nil, fmt.Errorf("read journal: %w", err)
	}
	return readJournalBytes(path, b, gen)
}

// readJournalBytes reads the frames of generation gen of the journal
// whose bytes are b. A journal is never written shorter than journalSize,
// so a shorter one was cut (truncated, emptied) and may have lost
// acknowledged records.
func readJournalBytes(path string, b []byte, gen uint64) ([]journaled, error) {
	if len(b) < journalSize {
		return nil, fmt.Errorf("%w %s is %d bytes, shorter than the %d it is written with (truncated?), "+
			"and the log was not closed cleanly", ErrJournalDamaged, path, len(b), journalSize)
	}
	recs, _ := readFrames(b, gen)
	return recs, nil
}

// readFrames decodes the complete frames of generation gen at the start of
// b and returns their records and where the last one ends.
func readFrames(b []byte, gen uint64) ([]journaled, int64) {
	var recs []journaled
	var end int64
	for rest := b; len(rest) >= frameHeaderSize; {
		n := binary.BigEndian.Uint32(rest)
		if n > maxFrameBody || int64(n) > int64(len(rest)-frameHeaderSize) {
			break
		}
		body := rest[frameHeaderSize : frameHeaderSize+int(n)]
		if crc32.Checksum(body, castagnoli) != binary.BigEndian.Uint32(rest[4:]) {
			break
		}
		frame, ok := decodeFrame(body, gen)
		if !ok {
			break
		}
		recs = append(recs, frame...)
		rest = rest[frameHeaderSize+int(n):]
		end += int64(frameHeaderSize + int(n))
	}
	return recs, end
}

// decodeFrame decodes a frame body whose checksum matched, if it is of
// generation gen.
func decodeFrame(body []byte, gen uint64) ([]journaled, bool) {
	if len(body) < frameFixedSize || binary.BigEndian.Uint64(body) != gen {
		return nil, false
	}
	first := binary.BigEndian.Uint64(body[8:])
	count := binary.BigEndian.Uint32(body[16:])
	body = body[frameFixedSize:]
	field := func(lenSize int) ([]byte, bool) {
		if len(body) < lenSize {
			return nil, false
		}
		var n int
		if lenSize == 4 {
			n = int(binary.BigEndian.Uint32(body))
		} else {
			n = int(binary.BigEndian.Uint16(body))
		}
		if n > len(body)-lenSize {
			return nil, false
		}
		v := body[lenSize : lenSize+n]
		body = body[lenSize+n:]
		return v, true
	}
	recs := make([]journaled, 0, min(int(count), 1<<16))
	for i := range uint64(count) {
		leaf, ok1 := field(4)
		cert, ok2 := field(4)
		id, ok3 := field(2)
		if !ok1 || !ok2 || !ok3 || len(leaf) == 0 {
			return nil, false
		}
		r := journaled{index: first + i, leaf: leaf, messageID: string(id)}
		if len(cert) > 0 {
			r.cert = cert
		}
		recs = append(recs, r)
	}
	return recs, len(body) == 0
}

// append writes batch, whose first record gets index first, as one frame
// and syncs it. A failed write is cut off again, so the journal stays a
// run of complete frames; when that fails too, or the sync fails, the
// journal is broken.
func (j *journal) append(first uint64, batch []*pending) error {
	if j.broken != nil {
		return j.broken
	}
	b := append(j.buf[:0], make([]byte, frameHeaderSize)...)
	b = binary.BigEndian.AppendUint64(b, j.gen)
	b = binary.BigEndian.AppendUint64(b, first)
	b = binary.BigEndian.AppendUint32(b, uint32(len(batch)))
	for _, p := range batch {
		b = binary.BigEndian.AppendUint32(b, uint32(len(p.leaf)))
		b = append(b, p.leaf...)
		b = binary.BigEndian.AppendUint32(b, uint32(len(p.cert)))
		b = append(b, p.cert...)
		b = binary.BigEndian.AppendUint16(b, uint16(len(p.messageID)))
		b = append(b, p.messageID...)
	}
	body := b[frameHeaderSize:]
	if len(body) > maxFrameBody {
		return fmt.Errorf("journal frame of %d bytes exceeds %d", len(body), maxFrameBody)
	}
	binary.BigEndian.PutUint32(b, uint32(len(body)))
	binary.BigEndian.PutUint32(b[4:], crc32.Checksum(body, castagnoli))
	if cap(b) <= 4<<20 {
		j.buf = b
	}

	if n, err := j.f.WriteAt(b, j.size); err != nil {
		// Whatever part of the frame reached the file must not be read
		// as one later: its header is zeroed, which ends the run of
		// frames there. The file keeps its length, so that a journal
		// shorter than written still means damage (see openJournal).
		if n > 0 {
			if _, zerr := j.f.WriteAt(make([]byte, frameHeaderSize), j.size); zerr != nil {
				j.broken = fmt.Errorf("journal unusable after a failed write (%v): clearing the partial frame: %w", err, zerr)
			}
		}
		return fmt.Errorf("write journal: %w", err)
	}
	if err := datasync(j.f); err != nil {
		// After a failed sync the kernel may have dropped the pages it
		// could not write; nothing written since the last good sync can be
		// trusted to be on disk, or not to be. The frame is cleared as far
		// as the disk still takes orders, and its records may yet appear
		// after a restart (Append's documentation says so).
		_, _ = j.f.WriteAt(make([]byte, frameHeaderSize), j.size)
		j.broken = fmt.Errorf("journal unusable after a failed sync: %w", err)
		return j.broken
	}
	j.size += int64(len(b))
	return nil
}

// reset makes the next frame, of generation gen, go to the front of the
// journal; its records must be durable in the tree, along with gen. It
// writes nothing: frames overwrite the file's blocks from the front.
func (j *journal) reset(gen uint64) {
	j.size, j.gen = 0, gen
}

// newGeneration returns a random, nonzero journal generation.
func newGeneration() uint64 {
	for {
		var b [8]byte
		_, _ = rand.Read(b[:])
		if g := binary.BigEndian.Uint64(b[:]); g != 0 {
			return g
		}
	}
}

func (j *journal) close() error {
	return j.f.Close()
}
