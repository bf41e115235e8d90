package registry

import (
	"errors"
	"fmt"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	bolt "go.etcd.io/bbolt"

	"github.com/ketnoi/ketnoi/internal/boltfile"
	"github.com/ketnoi/ketnoi/internal/id"
)

// ErrLocked is returned, wrapped, by Open, StateVersion and CheckReplaceable
// while a process holds the file open with bbolt, as a running registry
// holds its state file and a running node its evidence log: stop that
// process first, or use another file.
var ErrLocked = errors.New("file is in use by a running process (a registry or node holds it)")

// inUseTimeout is how long CheckReplaceable waits for a file's lock. A
// running registry holds its lock for as long as it runs, so a short wait
// tells it apart from a file nobody holds.
const inUseTimeout = 500 * time.Millisecond

// guardDamage turns a panic or memory fault in bbolt while it opens or
// reads a state file into an error calling the file damaged, instead of a
// crash with a stack trace: bbolt panics on pages it cannot make sense of
// ("invalid freelist page") and faults on pages past the end of the file,
// which it maps into memory (checkLength refuses a file cut short before
// that). Only the calling goroutine is guarded, which is where bbolt reads
// a state file the registry wrote (it starts a goroutine of its own only
// for a file written without a free list). A panic inside bolt.Open leaves
// the file mapped and locked until the process ends, which it then soon
// does. Use it as: defer guardDamage(path, &err)().
func guardDamage(path string, err *error) func() {
	return boltfile.Guard(err, true, func(what any) error {
		return fmt.Errorf("state file %s is damaged: %v", path, what)
	})
}

// checkLength refuses a state file shorter than the pages its current meta
// page counts, before bbolt maps it into memory: reading a page past the
// end of the file would fault, or find zeros where bbolt wants a page. A
// missing file, or one that is not a bbolt file, passes; bbolt's own open
// says what is wrong with it.
func checkLength(path string) error {
	if short, ok := errors.AsType[*boltfile.ShortError](boltfile.CheckLength(path)); ok {
		return fmt.Errorf("state file %s is damaged: %v", path, short)
	}
	return nil
}

// checkPages walks every page of the state file as bbolt's own check does
// and returns the first fault. A page overwritten in place passes bbolt's
// open and would surface only when a call reads it, as an internal error,
// and a backup would copy it on.
func checkPages(db *bolt.DB, path string) error {
	return db.View(func(tx *bolt.Tx) error {
		var first error
		for err := range tx.Check() {
			if first == nil {
				first = err
			}
		}
		if first != nil {
			return fmt.Errorf("state file %s is damaged: %w", path, first)
		}
		return nil
	})
}

// checkSettings refuses a state file that holds registrations of another
// instance or trust domain than cfg's. Such a registry would publish its
// members under the wrong instance, refuse every change to them ("is not
// this registry's instance") and let no node of theirs in: the settings
// are wrong for the file, or the file for the settings.
func checkSettings(db *bolt.DB, path string, cfg Config) error {
	return db.View(func(tx *bolt.Tx) error {
		if k, _ := tx.Bucket(bucketMembers).Cursor().First(); k != nil {
			m, err := id.ParseMember(string(k))
			if err == nil && m.Instance != cfg.Instance {
				return fmt.Errorf("state file %s holds registrations of instance %q (member %s), "+
					"not of this registry's instance %q: start with --instance %s, or use another state file",
					path, m.Instance, m, cfg.Instance, m.Instance)
			}
		}
		if k, _ := tx.Bucket(bucketNodes).Cursor().First(); k != nil {
			sid, err := spiffeid.FromString(string(k))
			if err == nil && sid.TrustDomain() != cfg.TrustDomain {
				return fmt.Errorf("state file %s holds nodes of trust domain %q (node %s), "+
					"not of this registry's trust domain %q: start with --trust-domain %s, or use another state file",
					path, sid.TrustDomain().Name(), sid, cfg.TrustDomain.Name(), sid.TrustDomain().Name())
			}
		}
		return nil
	})
}
