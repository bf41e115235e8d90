package evidence

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"iter"

	bolt "go.etcd.io/bbolt"
	"google.golang.org/protobuf/proto"

	evidencev1 "github.com/ketnoi/ketnoi/proto/ketnoi/evidence/v1"
	exchangev1 "github.com/ketnoi/ketnoi/proto/ketnoi/exchange/v1"
)

// Entry is one record of the log with its index and parsed header.
type Entry struct {
	// Index is the record's position in the log, from 0.
	Index uint64
	// Record is the stored record.
	Record *evidencev1.Record
	// Header is the parsed signed header; nil if the header bytes do not
	// parse (possible for refusals of malformed messages).
	Header *exchangev1.Header
}

// ByMessageID returns every committed record of the exchange id, in index
// order; none is not an error. Ids longer than 1024 bytes are not indexed.
func (l *Log) ByMessageID(id string) (_ []Entry, err error) {
	defer guardFaults(&err)()
	if err := l.Flush(context.Background()); err != nil {
		return nil, fmt.Errorf("look up message %s: %w", id, err)
	}
	var entries []Entry
	err = l.db.View(func(tx *bolt.Tx) error {
		leaves := tx.Bucket(bucketLeaves)
		for n := range messageIndexes(tx, id, 0) {
			e, err := entryAt(leaves, n)
			if err != nil {
				return err
			}
			entries = append(entries, e)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("look up message %s: %w", id, err)
	}
	return entries, nil
}

// MessagePage returns the committed records of the exchange id from index
// from on, in index order, as many as hold maxBytes of stored record bytes
// (at least one), and the index of the next record of the exchange, with
// more set, when there is one. A feed that runs for days has millions of
// records under one id; a page is what one answer can carry, and reading
// only that keeps the reader's memory bounded.
func (l *Log) MessagePage(id string, from uint64, maxBytes int) (_ []Entry, next uint64, more bool, err error) {
	defer guardFaults(&err)()
	if err := l.Flush(context.Background()); err != nil {
		return nil, 0, false, fmt.Errorf("look up message %s: %w", id, err)
	}
	var entries []Entry
	err = l.db.View(func(tx *bolt.Tx) error {
		leaves := tx.Bucket(bucketLeaves)
		size := 0
		for n := range messageIndexes(tx, id, from) {
			if len(entries) > 0 && size >= maxBytes {
				next, more = n, true
				return nil
			}
			e, err := entryAt(leaves, n)
			if err != nil {
				return err
			}
			size += len(leaves.Get(key(n)))
			entries = append(entries, e)
		}
		return nil
	})
	if err != nil {
		return nil, 0, false, fmt.Errorf("look up message %s: %w", id, err)
	}
	return entries, next, more, nil
}

// HasMessage reports whether the tree holds a record of the exchange id.
// Unlike ByMessageID it does not fold the journal in first, so records
// appended since the last fold may be missed; every record from before the
// log was opened is in the tree. A node's replay check needs no more: it
// remembers the messages of its own run itself.
func (l *Log) HasMessage(id string) (_ bool, err error) {
	defer guardFaults(&err)()
	var found bool
	err = l.db.View(func(tx *bolt.Tx) error {
		for range messageIndexes(tx, id, 0) {
			found = true
			break
		}
		return nil
	})
	if err != nil {
		return false, fmt.Errorf("look up message %s: %w", id, err)
	}
	return found, nil
}

// messageIndexes yields the indexes of the records of exchange id from
// index from on, in order, read from the message index as the caller
// goes, so that a caller that stops early reads no further.
func messageIndexes(tx *bolt.Tx, id string, from uint64) iter.Seq[uint64] {
	return func(yield func(uint64) bool) {
		p := messageKey(id, 0)[:len(id)+1]
		c := tx.Bucket(bucketMessages).Cursor()
		for k, _ := c.Seek(messageKey(id, from)); bytes.HasPrefix(k, p); k, _ = c.Next() {
			// An id containing 0x00 could share the prefix; the length
			// tells the keys of this id apart.
			if len(k) == len(p)+8 && !yield(binary.BigEndian.Uint64(k[len(p):])) {
				return
			}
		}
	}
}

// Entry returns the record at index n.
func (l *Log) Entry(n uint64) (_ Entry, err error) {
	defer guardFaults(&err)()
	if err := l.Flush(context.Background()); err != nil {
		return Entry{}, fmt.Errorf("read evidence record: %w", err)
	}
	var e Entry
	err = l.db.View(func(tx *bolt.Tx) error {
		var err error
		e, err = entryAt(tx.Bucket(bucketLeaves), n)
		return err
	})
	if err != nil {
		return Entry{}, fmt.Errorf("read evidence record: %w", err)
	}
	return e, nil
}

// entryAt reads and parses the leaf at index n.
func entryAt(leaves *bolt.Bucket, n uint64) (Entry, error) {
	leaf := leaves.Get(key(n))
	if leaf == nil {
		return Entry{}, fmt.Errorf("record %d: %w", n, ErrNotFound)
	}
	rec := new(evidencev1.Record)
	if err := proto.Unmarshal(bytes.Clone(leaf), rec); err != nil {
		return Entry{}, fmt.Errorf("record %d: parse: %w", n, err)
	}
	e := Entry{Index: n, Record: rec}
	h := new(exchangev1.Header)
	if proto.Unmarshal(rec.GetHeader(), h) == nil {
		e.Header = h
	}
	return e, nil
}

// Certificate returns the DER signing certificate whose SHA-256 is sum, or
// an error wrapping ErrNotFound.
func (l *Log) Certificate(sum []byte) (_ []byte, err error) {
	defer guardFaults(&err)()
	if err := l.Flush(context.Background()); err != nil {
		return nil, fmt.Errorf("read certificate %x: %w", prefix(sum), err)
	}
	var der []byte
	err = l.db.View(func(tx *bolt.Tx) error {
		der = bytes.Clone(tx.Bucket(bucketCerts).Get(sum))
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read certificate %x: %w", prefix(sum), err)
	}
	if der == nil {
		return nil, fmt.Errorf("certificate %x: %w", prefix(sum), ErrNotFound)
	}
	return der, nil
}
