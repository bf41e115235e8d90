package registry

import (
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"
	"google.golang.org/protobuf/proto"

	cataloguev1 "github.com/ketnoi/ketnoi/proto/ketnoi/catalogue/v1"
	registryv1 "github.com/ketnoi/ketnoi/proto/ketnoi/registry/v1"
)

// Layout of the state file. Top-level buckets hold one serialized proto per
// key; each code list version is a nested bucket of code_lists holding its
// description under "meta" and its entries, keyed by code, in "entries".
var (
	bucketMembers   = []byte("members")    // member ID → Member
	bucketNodes     = []byte("nodes")      // SPIFFE ID → Node
	bucketServices  = []byte("services")   // service ID → Service
	bucketGrants    = []byte("grants")     // big-endian sequence → Grant
	bucketCodeLists = []byte("code_lists") // list NUL version → nested bucket
	bucketMeta      = []byte("meta")
	// bucketRemovedNodes remembers the nodes RemoveNode removed, so that
	// their SVIDs, still valid until they expire, no longer read the
	// configuration (see refuseRemoved). AddNode of the same ID forgets it.
	bucketRemovedNodes = []byte("removed_nodes") // SPIFFE ID → removal time, RFC 3339

	bucketEntries = []byte("entries") // code → CodeEntry, inside a list version
	keyListMeta   = []byte("meta")    // CodeListVersion, inside a list version

	keyVersion  = []byte("version")   // last published configuration version
	keyGrantSeq = []byte("grant_seq") // last assigned grant number
	keySigned   = []byte("signed")    // last published SignedConfiguration
)

// openTimeout bounds the wait for the state file's lock, so that a second
// registry on the same file fails instead of hanging.
const openTimeout = 2 * time.Second

// openDB opens the state file and creates the top-level buckets. A damaged
// file is an error, not a crash (see guardDamage).
func openDB(path string) (_ *bolt.DB, err error) {
	var db *bolt.DB
	defer func() {
		// Runs after guardDamage, so a panic is an error by now.
		if err != nil && db != nil {
			db.Close()
		}
	}()
	defer guardDamage(path, &err)()
	if err := checkLength(path); err != nil {
		return nil, err
	}
	// Before bbolt opens it for writing, which alone may write to it.
	if err := checkForeign(path); err != nil {
		return nil, err
	}
	db, err = bolt.Open(path, 0o600, &bolt.Options{
		Timeout:      openTimeout,
		FreelistType: bolt.FreelistMapType,
	})
	if errors.Is(err, bolterrors.ErrTimeout) {
		return nil, fmt.Errorf("open %s: %w", path, ErrLocked)
	}
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	if err := checkPages(db, path); err != nil {
		return nil, err
	}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, name := range stateBuckets {
			if _, err := tx.CreateBucketIfNotExists(name); err != nil {
				return fmt.Errorf("create bucket %s: %w", name, err)
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("initialise %s: %w", path, err)
	}
	return db, nil
}

// getProto decodes the value under key into m and reports whether it exists.
func getProto(b *bolt.Bucket, key []byte, m proto.Message) (bool, error) {
	v := b.Get(key)
	if v == nil {
		return false, nil
	}
	if err := proto.Unmarshal(v, m); err != nil {
		return false, fmt.Errorf("decode %q: %w", key, err)
	}
	return true, nil
}

// putProto stores m under key in its deterministic encoding.
func putProto(b *bolt.Bucket, key []byte, m proto.Message) error {
	v, err := proto.MarshalOptions{Deterministic: true}.Marshal(m)
	if err != nil {
		return fmt.Errorf("encode %q: %w", key, err)
	}
	return b.Put(key, v)
}

// loadAll decodes every value of b in key order, skipping nested buckets.
func loadAll[T proto.Message](b *bolt.Bucket, newMsg func() T) ([]T, error) {
	var out []T
	err := b.ForEach(func(k, v []byte) error {
		if v == nil {
			return nil
		}
		m := newMsg()
		if err := proto.Unmarshal(v, m); err != nil {
			return fmt.Errorf("decode %q: %w", k, err)
		}
		out = append(out, m)
		return nil
	})
	return out, err
}

func getUint(b *bolt.Bucket, key []byte) uint64 {
	v := b.Get(key)
	if len(v) != 8 {
		return 0
	}
	return binary.BigEndian.Uint64(v)
}

func putUint(b *bolt.Bucket, key []byte, n uint64) error {
	return b.Put(key, binary.BigEndian.AppendUint64(nil, n))
}

// grantKey orders grants by the number in their identifier.
func grantKey(seq uint64) []byte { return binary.BigEndian.AppendUint64(nil, seq) }

// listKey names the nested bucket of a code list version. NUL sorts before
// every character allowed in a list name, so buckets sort by list, then
// version.
func listKey(list, version string) []byte { return []byte(list + "\x00" + version) }

// codeListVersion returns the bucket of one code list version, or nil.
func codeListVersion(tx *bolt.Tx, list, version string) *bolt.Bucket {
	return tx.Bucket(bucketCodeLists).Bucket(listKey(list, version))
}

// codeListMetas returns the description of every code list version, ordered
// by list, then version.
func codeListMetas(tx *bolt.Tx) ([]*cataloguev1.CodeListVersion, error) {
	var out []*cataloguev1.CodeListVersion
	lists := tx.Bucket(bucketCodeLists)
	err := lists.ForEachBucket(func(k []byte) error {
		meta := &cataloguev1.CodeListVersion{}
		if _, err := getProto(lists.Bucket(k), keyListMeta, meta); err != nil {
			return fmt.Errorf("code list %q: %w", k, err)
		}
		out = append(out, meta)
		return nil
	})
	return out, err
}

// loadContent reads everything a configuration publishes from the store.
func loadContent(tx *bolt.Tx) (*registryv1.GlobalConfiguration, error) {
	var (
		c   registryv1.GlobalConfiguration
		err error
	)
	if c.Members, err = loadAll(tx.Bucket(bucketMembers), newMember); err != nil {
		return nil, fmt.Errorf("load members: %w", err)
	}
	if c.Nodes, err = loadAll(tx.Bucket(bucketNodes), newNode); err != nil {
		return nil, fmt.Errorf("load nodes: %w", err)
	}
	if c.Services, err = loadAll(tx.Bucket(bucketServices), newService); err != nil {
		return nil, fmt.Errorf("load services: %w", err)
	}
	if c.Grants, err = loadAll(tx.Bucket(bucketGrants), newGrant); err != nil {
		return nil, fmt.Errorf("load grants: %w", err)
	}
	if c.CodeLists, err = codeListMetas(tx); err != nil {
		return nil, fmt.Errorf("load code lists: %w", err)
	}
	return &c, nil
}

func newMember() *registryv1.Member   { return &registryv1.Member{} }
func newNode() *registryv1.Node       { return &registryv1.Node{} }
func newService() *registryv1.Service { return &registryv1.Service{} }
func newGrant() *registryv1.Grant     { return &registryv1.Grant{} }
