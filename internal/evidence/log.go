package evidence

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"
	"golang.org/x/mod/sumdb/tlog"

	"github.com/ketnoi/ketnoi/internal/gather"
	"github.com/ketnoi/ketnoi/internal/logging"
	exchangev1 "github.com/ketnoi/ketnoi/proto/ketnoi/exchange/v1"
)

var (
	// ErrClosed is returned by Append after Close; the record was not
	// logged, so the exchange must not proceed.
	ErrClosed = errors.New("evidence log is closed")
	// ErrLocked is returned by OpenReadOnly while a node holds the log; stop
	// the node or work on a copy.
	ErrLocked = errors.New("evidence log is in use by a running node")
	// ErrReadOnly is returned by Append on a log opened with OpenReadOnly.
	ErrReadOnly = errors.New("evidence log is open read-only")
	// ErrUnfolded is returned by OpenReadOnly for a log whose journal holds
	// records not yet in its tree.
	ErrUnfolded = errors.New("evidence log has unfolded journal records")
	// ErrNotFound is returned when a looked-up certificate or record is not
	// in the log.
	ErrNotFound = errors.New("not found in evidence log")
	// ErrBadQuery is wrapped by the errors of Query.Check and Log.Search
	// for a query that cannot be searched; the message names the field.
	ErrBadQuery = errors.New("invalid evidence search")
	// ErrNotLog is wrapped by the errors of Open and OpenReadOnly for a
	// bbolt file that is not an evidence log, such as a registry's state
	// or its backup named by mistake; the file is left as it was.
	ErrNotLog = errors.New("not an evidence log")
)

// Bucket and meta key names; see the package documentation.
var (
	bucketLeaves   = []byte("leaves")
	bucketHashes   = []byte("hashes")
	bucketCerts    = []byte("certs")
	bucketMessages = []byte("messages")
	bucketMeta     = []byte("meta")

	allBuckets = [][]byte{bucketLeaves, bucketHashes, bucketCerts, bucketMessages, bucketMeta}

	metaSize = []byte("size")
	metaRoot = []byte("root")
	metaNode = []byte("node")
	// metaJournal holds the generation of the journal's frames (see
	// journal.go); 0 or absent when the log needs no journal.
	metaJournal = []byte("journal")
)

const (
	defaultMaxBatch = 1024
	// foldInterval is how long journaled records wait, at most, to be
	// folded into the tree; foldRecords folds sooner once that many wait,
	// and maxUnfolded refuses new records while the tree is that far
	// behind (a fold keeps failing). foldChunk bounds one fold
	// transaction.
	foldInterval = 100 * time.Millisecond
	foldRecords  = 4096
	maxUnfolded  = 64 * 1024
	foldChunk    = 8192
	// appendFillPercent packs pages of buckets whose keys only grow.
	appendFillPercent = 0.95
	lockTimeout       = 2 * time.Second
	// readOnlyLockTimeout is short: a running node holds its lock for good.
	readOnlyLockTimeout = 500 * time.Millisecond
	initialMmapSize     = 1 << 30
	// maxIndexedID is the longest message id ByMessageID can find.
	maxIndexedID = 1024
)

// Options configures Open.
type Options struct {
	// Logger receives operational logs; nil discards them.
	Logger *slog.Logger
	// Node is the SPIFFE ID of the node owning the log. It is stored when
	// the log is created; opening a log created for another node fails.
	Node string
	// MaxBatch caps the records written by one commit; 0 means 1024.
	MaxBatch int
	// Seal signs the headers of the records started with Item.Sign, all
	// those of one commit together; it is called by the writer, at most
	// MaxBatch headers at a time. Without it such records are refused.
	Seal func(headers [][]byte) ([]*exchangev1.SignedHeader, error)
	// Gather lets the writer wait for more records before a commit while
	// the node is busy (see package gather); nil never waits.
	Gather *gather.Policy
}

// Log is a node's evidence log. Its methods are safe for concurrent use.
type Log struct {
	db     *bolt.DB
	path   string
	logger *slog.Logger
	node   string

	head atomic.Pointer[treeHead]

	// storedCerts holds the SHA-256 of every signer certificate journaled
	// or found in the tree, so that records naming a known signer, nearly
	// all of them, neither copy the certificate nor look it up again.
	storedCerts sync.Map // [32]byte -> struct{}

	// Write side; nil queue for read-only logs.
	maxBatch int
	seal     func(headers [][]byte) ([]*exchangev1.SignedHeader, error)
	gather   *gather.Policy
	carry    []*pending   // records for the next commit; writer goroutine only
	mu       sync.RWMutex // guards closed and sends on queue
	closed   bool
	queue    chan []*pending // each item is committed whole
	done     chan struct{}

	// The journal and the records it holds that the tree does not yet;
	// writer goroutine only, except behind, which readers check to know
	// whether to ask for a fold (see journal.go).
	journal   *journal
	next      uint64     // index of the next record journaled
	unfolded  []*pending // journaled, not yet in the tree, in index order
	foldTimer *time.Timer
	foldEvery time.Duration // foldInterval; tests lengthen it before the first Append
	behind    atomic.Int64  // len(unfolded)
	// foldFailing is set while folds fail: only the timer and Flush try
	// again then, not every commit past foldRecords.
	foldFailing bool
	foldReq     chan chan error // Flush asks the writer to fold now

	// commitHook, when set by tests before the first Append, runs at the
	// start of every tree commit (a fold); an error fails it. journalHook
	// runs before every journal append (one commit of records); an error
	// fails the commit. skipFinalFold makes Close leave the journal
	// unfolded, as a crash would.
	commitHook    func(records int) error
	journalHook   func(records int) error
	skipFinalFold bool
}

// treeHead is the committed size and root of the tree.
type treeHead struct {
	size uint64
	root tlog.Hash
}

// Open opens or creates the log at path for reading and writing and starts
// its writer. Only one process can hold a log open this way; a second Open
// fails after two seconds.
func Open(path string, opts Options) (_ *Log, err error) {
	defer guardFaults(&err)()
	if opts.MaxBatch < 0 {
		return nil, fmt.Errorf("open evidence log: negative MaxBatch %d", opts.MaxBatch)
	}
	if err := precheck(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("open evidence log %s: %w", path, err)
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{
		Timeout:         lockTimeout,
		FreelistType:    bolt.FreelistMapType,
		NoFreelistSync:  true,
		InitialMmapSize: initialMmapSize,
	})
	if errors.Is(err, bolterrors.ErrTimeout) {
		return nil, fmt.Errorf("open evidence log %s: another process holds it: %w", path, err)
	}
	if err != nil {
		return nil, fmt.Errorf("open evidence log %s: %w", path, err)
	}
	if err := checkSize(db, path); err != nil {
		db.Close()
		return nil, fmt.Errorf("open evidence log %s: %w", path, err)
	}
	if err := checkOwn(db); err != nil {
		db.Close()
		return nil, fmt.Errorf("open evidence log %s: %w", path, err)
	}

	l := &Log{db: db, path: path, logger: opts.Logger, maxBatch: opts.MaxBatch, seal: opts.Seal, gather: opts.Gather}
	if l.logger == nil {
		l.logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if l.maxBatch == 0 {
		l.maxBatch = defaultMaxBatch
	}
	if err := l.init(opts.Node); err != nil {
		db.Close()
		return nil, fmt.Errorf("open evidence log %s: %w", path, err)
	}
	l.foldEvery = foldInterval
	l.foldTimer = time.NewTimer(foldInterval)
	l.foldTimer.Stop()
	if err := l.recover(); err != nil {
		db.Close()
		return nil, fmt.Errorf("open evidence log %s: %w", path, err)
	}

	l.queue = make(chan []*pending, l.maxBatch)
	l.done = make(chan struct{})
	l.foldReq = make(chan chan error)
	go l.write()

	// The index attribute is the index the next record will get.
	size, _ := l.TreeHead()
	l.logger.InfoContext(context.Background(), "evidence log opened",
		slog.String(logging.KeyPath, path), slog.Uint64(logging.KeyIndex, size))
	return l, nil
}

// recover opens the journal and folds into the tree the records it holds
// that the tree does not: those a crash or a failed fold left there. The
// journal must continue the tree without a gap.
func (l *Log) recover() error {
	gen, err := l.journalGeneration()
	if err != nil {
		return err
	}
	j, recs, err := openJournal(l.path+journalSuffix, gen)
	if err != nil {
		return err
	}
	size := l.head.Load().size
	todo, err := unfolded(recs, size)
	if err != nil {
		j.close()
		return err
	}
	// The writer's fold puts them in the tree, as it does at run time.
	l.journal = j
	for _, r := range todo {
		p := &pending{leaf: r.leaf, cert: r.cert, messageID: r.messageID}
		if r.cert != nil {
			p.certSum = sha256.Sum256(r.cert)
		}
		l.unfolded = append(l.unfolded, p)
	}
	if err := l.fold(); err != nil {
		j.close()
		return fmt.Errorf("fold journal into the tree: %w", err)
	}
	// A fresh generation for this run: whatever the file holds now was
	// folded in above, and none of it may be read as this run's frames.
	next := newGeneration()
	if err := j.recreate(next); err != nil {
		j.close()
		return err
	}
	if err := l.storeGeneration(next); err != nil {
		j.close()
		return err
	}
	if folded := l.head.Load().size - size; folded > 0 {
		l.logger.InfoContext(context.Background(), "evidence journal folded into the tree",
			slog.String(logging.KeyPath, l.path), slog.Uint64(logging.KeyCount, folded))
	}
	l.next = l.head.Load().size
	return nil
}

// unfolded returns the journaled records the tree does not hold yet,
// which must continue it without a gap; records with lower indexes were
// folded before the journal started again.
func unfolded(recs []journaled, size uint64) ([]journaled, error) {
	for i, r := range recs {
		if r.index < size {
			continue
		}
		rest := recs[i:]
		for k, r := range rest {
			if want := size + uint64(k); r.index != want {
				return nil, fmt.Errorf("%w holds record %d where the tree needs %d next", ErrJournalDamaged, r.index, want)
			}
		}
		return rest, nil
	}
	return nil, nil
}

// checkOwn returns an error wrapping ErrNotLog when db holds buckets and
// none of an evidence log's: another program's file, which init would
// otherwise fill with an empty log beside that program's data, starting
// at index 0 as if no evidence existed. A "meta" bucket proves nothing:
// the registry's state has one too. It writes nothing: the log's options
// keep bbolt from writing its freelist on open. A file with no buckets is
// a log not yet initialised.
func checkOwn(db *bolt.DB) error {
	return db.View(func(tx *bolt.Tx) error {
		var foreign []string
		own := false
		err := tx.ForEach(func(name []byte, _ *bolt.Bucket) error {
			switch {
			case bytes.Equal(name, bucketMeta):
			case slices.ContainsFunc(allBuckets, func(b []byte) bool { return bytes.Equal(b, name) }):
				own = true
			case len(foreign) < 4:
				foreign = append(foreign, strconv.Quote(string(name)))
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("list buckets: %w", err)
		}
		if own || len(foreign) == 0 {
			return nil
		}
		return fmt.Errorf("%w: it holds other buckets (%s) and none of a log's; "+
			"another program's file?", ErrNotLog, strings.Join(foreign, ", "))
	})
}

// init creates the buckets, records or checks the owning node, and loads
// the tree head, checking that the stored root matches the stored hashes.
func (l *Log) init(node string) error {
	return l.db.Update(func(tx *bolt.Tx) error {
		for _, name := range allBuckets {
			if _, err := tx.CreateBucketIfNotExists(name); err != nil {
				return fmt.Errorf("create bucket %s: %w", name, err)
			}
		}
		meta := tx.Bucket(bucketMeta)
		stored := string(meta.Get(metaNode))
		switch {
		case stored == "" && node != "":
			if err := meta.Put(metaNode, []byte(node)); err != nil {
				return fmt.Errorf("store node: %w", err)
			}
			stored = node
		case node != "" && stored != node:
			return fmt.Errorf("log belongs to node %s, not %s", stored, node)
		}
		l.node = stored

		h, err := readHead(tx)
		if err != nil {
			return err
		}
		root, err := tlog.TreeHash(int64(h.size), bucketHashReader{tx.Bucket(bucketHashes)})
		if err != nil {
			return fmt.Errorf("compute tree root: %w", err)
		}
		if root != h.root {
			return fmt.Errorf("stored root %x does not match the stored hashes", h.root[:8])
		}
		l.head.Store(h)
		return nil
	})
}

// OpenReadOnly opens an existing log for reading, as tools do. If a running
// node holds the log, the error wraps ErrLocked.
func OpenReadOnly(path string) (*Log, error) {
	return openReadOnly(path, true)
}

// OpenReadOnlyTree is OpenReadOnly without looking at the journal: it
// reads the records in the tree even when the journal holds more
// (ErrUnfolded) or is damaged (ErrJournalDamaged), for a forensic look at
// a log whose node cannot be started. What it shows may lack the last
// records the node acknowledged.
func OpenReadOnlyTree(path string) (*Log, error) {
	return openReadOnly(path, false)
}

func openReadOnly(path string, checkJournal bool) (_ *Log, err error) {
	defer guardFaults(&err)()
	info, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("open evidence log: %w", err)
	}
	if info.Size() == 0 {
		return nil, fmt.Errorf("open evidence log %s: empty file, not an evidence log", path)
	}
	if err := precheck(path); err != nil {
		return nil, fmt.Errorf("open evidence log %s: %w", path, err)
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{
		ReadOnly:        true,
		Timeout:         readOnlyLockTimeout,
		InitialMmapSize: initialMmapSize,
	})
	if errors.Is(err, bolterrors.ErrTimeout) {
		return nil, fmt.Errorf("open evidence log %s: %w", path, ErrLocked)
	}
	if err != nil {
		return nil, fmt.Errorf("open evidence log %s: %w", path, err)
	}
	if err := checkSize(db, path); err != nil {
		db.Close()
		return nil, fmt.Errorf("open evidence log %s: %w", path, err)
	}

	l := &Log{db: db, path: path, logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
	err = db.View(func(tx *bolt.Tx) error {
		for _, name := range allBuckets {
			if tx.Bucket(name) == nil {
				return fmt.Errorf("%w: bucket %s missing", ErrNotLog, name)
			}
		}
		l.node = string(tx.Bucket(bucketMeta).Get(metaNode))
		h, err := readHead(tx)
		if err != nil {
			return err
		}
		l.head.Store(h)
		return nil
	})
	if err == nil && checkJournal {
		err = l.checkJournalFolded()
	}
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("open evidence log %s: %w", path, err)
	}
	return l, nil
}

// journalGeneration returns the generation of the journal's frames that
// the tree expects, 0 when the log was closed cleanly or is new.
func (l *Log) journalGeneration() (uint64, error) {
	var gen uint64
	err := l.db.View(func(tx *bolt.Tx) error {
		v := tx.Bucket(bucketMeta).Get(metaJournal)
		switch len(v) {
		case 0:
		case 8:
			gen = binary.BigEndian.Uint64(v)
		default:
			return fmt.Errorf("%w: meta journal generation of %d bytes", ErrDamaged, len(v))
		}
		return nil
	})
	return gen, err
}

// storeGeneration stores the journal generation in a synced transaction of
// its own.
func (l *Log) storeGeneration(gen uint64) error {
	err := l.db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketMeta).Put(metaJournal, binary.BigEndian.AppendUint64(nil, gen))
	})
	if err != nil {
		return fmt.Errorf("store journal generation: %w", err)
	}
	return nil
}

// checkJournalFolded refuses, for a read-only open, a log whose journal
// holds records the tree does not: its node stopped without folding them
// (a crash), and only a read-write open may add them.
func (l *Log) checkJournalFolded() error {
	gen, err := l.journalGeneration()
	if err != nil || gen == 0 {
		return err
	}
	recs, err := readJournal(l.path+journalSuffix, gen)
	if err != nil {
		return err
	}
	todo, err := unfolded(recs, l.head.Load().size)
	if err != nil {
		return err
	}
	if n := len(todo); n > 0 {
		return fmt.Errorf("%w: %d records in its journal are not yet in the tree; "+
			"start the node once (it folds them in) and read the log again", ErrUnfolded, n)
	}
	return nil
}

// readHead reads the size and root from the meta bucket; a new log has
// size 0 and the root of the empty tree.
func readHead(tx *bolt.Tx) (*treeHead, error) {
	meta := tx.Bucket(bucketMeta)
	sizeVal, rootVal := meta.Get(metaSize), meta.Get(metaRoot)
	if sizeVal == nil && rootVal == nil {
		root, _ := tlog.TreeHash(0, nil)
		return &treeHead{root: root}, nil
	}
	if len(sizeVal) != 8 || len(rootVal) != tlog.HashSize {
		return nil, fmt.Errorf("meta: bad size or root (%d and %d bytes)", len(sizeVal), len(rootVal))
	}
	h := &treeHead{size: binary.BigEndian.Uint64(sizeVal)}
	copy(h.root[:], rootVal)
	return h, nil
}

// Close stops accepting records, waits until every queued record is
// committed, and closes the file. Append after Close returns ErrClosed.
func (l *Log) Close() error {
	if l.queue != nil {
		l.mu.Lock()
		if l.closed {
			l.mu.Unlock()
			return nil
		}
		l.closed = true
		close(l.queue)
		l.mu.Unlock()
		<-l.done
		var err error
		switch behind := l.behind.Load(); {
		case l.skipFinalFold:
		case behind > 0:
			err = fmt.Errorf("close evidence log: %d records stay in the journal, to be folded in when it opens next", behind)
		default:
			// Everything is in the tree: the log needs no journal now.
			err = l.storeGeneration(0)
		}
		if jerr := l.journal.close(); jerr != nil && err == nil {
			err = fmt.Errorf("close evidence journal: %w", jerr)
		}
		if err != nil {
			l.db.Close()
			return err
		}
	}
	if err := l.db.Close(); err != nil {
		return fmt.Errorf("close evidence log: %w", err)
	}
	l.logger.InfoContext(context.Background(), "evidence log closed",
		slog.String(logging.KeyPath, l.path))
	return nil
}

// Node returns the SPIFFE ID of the node that owns the log, or "" if the
// log was created without one.
func (l *Log) Node() string { return l.node }

// TreeHead returns the number of records and the tree root over them,
// after folding in the journaled records (see [Log.Flush]); for a log
// opened read-only, as of opening.
func (l *Log) TreeHead() (size uint64, root tlog.Hash) {
	_ = l.Flush(context.Background()) // on failure, the last folded head
	h := l.head.Load()
	return h.size, h.root
}

// key encodes an index as a bucket key.
func key(n uint64) []byte {
	return binary.BigEndian.AppendUint64(make([]byte, 0, 8), n)
}

// bucketHashReader reads stored hashes from the hashes bucket of a
// transaction, including the transaction's own writes.
type bucketHashReader struct{ b *bolt.Bucket }

// ReadHashes implements tlog.HashReader.
func (r bucketHashReader) ReadHashes(indexes []int64) ([]tlog.Hash, error) {
	out := make([]tlog.Hash, len(indexes))
	for i, idx := range indexes {
		v := r.b.Get(key(uint64(idx)))
		if len(v) != tlog.HashSize {
			return nil, fmt.Errorf("stored hash %d missing or malformed", idx)
		}
		copy(out[i][:], v)
	}
	return out, nil
}
