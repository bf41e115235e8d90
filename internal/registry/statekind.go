package registry

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"
)

// stateBuckets are the top-level buckets of a state file; openDB creates
// them all.
var stateBuckets = [][]byte{
	bucketMembers, bucketNodes, bucketServices, bucketGrants, bucketCodeLists, bucketMeta,
	bucketRemovedNodes,
}

// NotStateFileError is returned by CheckReplaceable and Open for an
// existing file that is not a registry state file, such as a node's
// evidence log, its journal or its state.db: writing it as one would
// destroy what it holds. What says what the file is instead.
type NotStateFileError struct {
	Path string
	What string
}

func (e *NotStateFileError) Error() string {
	return e.Path + " is not a registry state file: " + e.What
}

// maxNamedBuckets bounds how many foreign bucket names an error lists.
const maxNamedBuckets = 4

// fileContent is what inspect finds in a bbolt file.
type fileContent struct {
	buckets [][]byte // top-level bucket names, in key order
	own     int      // how many of them are stateBuckets
	foreign int      // how many are not: another program's file
	signed  bool     // the meta bucket holds a published configuration
}

// describe says what a bbolt file that is not a registry state file is.
func (c fileContent) describe() string {
	if len(c.buckets) == 0 {
		return "an empty bbolt file"
	}
	if c.foreign == 0 {
		return "a bbolt file with no published configuration"
	}
	names := make([]string, 0, maxNamedBuckets)
	for _, b := range c.buckets[:min(len(c.buckets), maxNamedBuckets)] {
		names = append(names, strconv.Quote(string(b)))
	}
	if len(c.buckets) > maxNamedBuckets {
		names = append(names, "...")
	}
	return "a bbolt file of another program (buckets " + strings.Join(names, ", ") + ")"
}

// inspect opens path read-only, waiting at most timeout for its lock, and
// lists its top-level buckets. It writes nothing: opening read-write would
// already write a free list into a file kept without one, as the
// evidence log is. notBolt is set, with a nil error, when bbolt does not
// take the file for one of its own.
func inspect(path string, timeout time.Duration) (c fileContent, notBolt bool, err error) {
	defer guardDamage(path, &err)()
	if err := checkLength(path); err != nil {
		return c, false, err
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true, Timeout: timeout})
	switch {
	case errors.Is(err, bolterrors.ErrTimeout):
		return c, false, fmt.Errorf("%s: %w", path, ErrLocked)
	case errors.Is(err, fs.ErrPermission), errors.Is(err, bolterrors.ErrChecksum):
		return c, false, fmt.Errorf("open %s: %w", path, err)
	case err != nil:
		// ErrInvalid, ErrVersionMismatch or a file too small to hold
		// bbolt's meta pages.
		return c, true, nil
	}
	defer db.Close()
	err = db.View(func(tx *bolt.Tx) error {
		meta := tx.Bucket(bucketMeta)
		c.signed = meta != nil && meta.Get(keySigned) != nil
		return tx.ForEach(func(name []byte, _ *bolt.Bucket) error {
			c.buckets = append(c.buckets, bytes.Clone(name))
			// A bucket the registry does not use marks another program's
			// file, whatever else it holds: a node's evidence log has a
			// "meta" bucket too.
			if slices.ContainsFunc(stateBuckets, func(own []byte) bool { return bytes.Equal(name, own) }) {
				c.own++
			} else {
				c.foreign++
			}
			return nil
		})
	})
	if err != nil {
		return c, false, fmt.Errorf("read %s: %w", path, err)
	}
	return c, false, nil
}

// CheckReplaceable returns nil when path is missing or is a registry state
// file, such as an earlier backup, that no process holds open. Otherwise
// it returns an error wrapping ErrLocked while a process holds path open
// with bbolt (the running registry holds its own state file), a
// *NotStateFileError saying what path is when it exists but holds no
// registry state (a node's evidence log or journal, any other file), or
// an error calling it damaged or unreadable. A backup checks its target
// with it: renaming a copy over a file the registry runs on would lose the
// registry's later changes at its next start, and over a node's journal
// the evidence the node acknowledged.
func CheckReplaceable(path string) error {
	info, err := os.Stat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	switch {
	case !info.Mode().IsRegular():
		// Only a regular file holds a state; opening a pipe would block.
		return &NotStateFileError{Path: path, What: "not a regular file"}
	case info.Size() == 0:
		return &NotStateFileError{Path: path, What: "an empty file"}
	}
	c, notBolt, err := inspect(path, inUseTimeout)
	switch {
	case err != nil:
		return err
	case notBolt:
		return &NotStateFileError{Path: path, What: "not a bbolt file"}
	case c.foreign > 0 || !c.signed:
		return &NotStateFileError{Path: path, What: c.describe()}
	}
	return nil
}

// checkForeign refuses, before openDB opens path for writing, an existing
// bbolt file that holds a bucket the registry does not use: another
// program's file, such as a node's evidence log or state.db, which the
// registry would otherwise fill with its own buckets. A missing or empty
// file, and one that is not bbolt at all, pass: the registry creates the
// first, and bbolt's own open says what is wrong with the other.
func checkForeign(path string) error {
	if info, err := os.Stat(path); err != nil || !info.Mode().IsRegular() || info.Size() == 0 {
		return nil
	}
	c, notBolt, err := inspect(path, openTimeout)
	if err != nil || notBolt {
		return err
	}
	if c.foreign > 0 {
		return &NotStateFileError{Path: path, What: c.describe() + "; use another --data file"}
	}
	return nil
}
