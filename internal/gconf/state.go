package gconf

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"
)

// ErrNotState is wrapped by the error of OpenState for a file that is not
// a node's state database, such as an evidence log or a registry's state
// named by mistake; the file is left as it was.
var ErrNotState = errors.New("not a node state database")

// OpenState opens or creates the node state database at path, in which a
// Source caches the configuration. A second process holding it makes
// OpenState fail after timeout.
//
// A file that holds buckets and none of the state's is refused before
// anything is written to it: the node would otherwise add its cache
// beside another program's data, and run as if that file were its own.
// bbolt writes its freelist on open unless told not to, so the database
// is opened without syncing the freelist, which it rebuilds on open
// instead (cheap for a file this small).
func OpenState(path string, timeout time.Duration) (*bolt.DB, error) {
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: timeout, NoFreelistSync: true})
	if err != nil {
		return nil, fmt.Errorf("open state database %s: %w", path, err)
	}
	if err := checkState(db); err != nil {
		db.Close()
		return nil, fmt.Errorf("open state database %s: %w", path, err)
	}
	return db, nil
}

// checkState returns an error wrapping ErrNotState when db holds buckets
// and not the configuration cache's, saying what the file looks like.
func checkState(db *bolt.DB) error {
	return db.View(func(tx *bolt.Tx) error {
		if tx.Bucket(bucketConfig) != nil {
			return nil
		}
		var names []string
		if err := tx.ForEach(func(name []byte, _ *bolt.Bucket) error {
			names = append(names, string(name))
			return nil
		}); err != nil {
			return fmt.Errorf("list buckets: %w", err)
		}
		if len(names) == 0 {
			return nil
		}
		what := "another program's file"
		switch {
		case tx.Bucket([]byte("leaves")) != nil && tx.Bucket([]byte("hashes")) != nil:
			what = "an evidence log"
		case tx.Bucket([]byte("members")) != nil && tx.Bucket([]byte("services")) != nil:
			what = "a registry's state or backup"
		}
		quoted := make([]string, 0, min(len(names), 4))
		for _, n := range names[:min(len(names), 4)] {
			quoted = append(quoted, strconv.Quote(n))
		}
		if len(names) > 4 {
			quoted = append(quoted, "...")
		}
		return fmt.Errorf("%w: it holds buckets %s and no configuration cache; %s?",
			ErrNotState, strings.Join(quoted, ", "), what)
	})
}
