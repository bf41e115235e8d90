package exchange

import (
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/binary"
	"errors"
	"fmt"
	"sync"

	"golang.org/x/mod/sumdb/tlog"

	"github.com/ketnoi/ketnoi/internal/gather"
	"github.com/ketnoi/ketnoi/internal/sign"
	exchangev1 "github.com/ketnoi/ketnoi/proto/ketnoi/exchange/v1"
)

// TypeBatch is the payload type of a batch signature: the signed bytes are
// the 32-byte Merkle root followed by the batch size as 8 big-endian bytes.
const TypeBatch = "application/vnd.ketnoi.exchange.batch.v1"

// MaxBatch bounds how many headers share one signature.
const MaxBatch = 1024

// BatchSigner signs headers in batches without a goroutine of its own: the
// caller that finds the signer idle becomes the leader, signs its own
// header at once, then keeps signing whatever other callers queued
// meanwhile, one Merkle root per batch, until the queue is empty. An idle
// signer so costs no hand-off between goroutines, and under load one ECDSA
// signature covers many messages. With a gather policy, a leader that finds
// the node busy first waits briefly for more headers (see package gather).
//
// A node signs most headers in its evidence log's writer instead (one
// signature per commit, see SignBatch); a BatchSigner serves headers that
// must be signed before their record is started.
type BatchSigner struct {
	signer *sign.Signer
	policy *gather.Policy

	mu     sync.Mutex
	queue  []*signReq
	busy   bool // a leader is signing
	closed bool
	// grew is signalled on every header queued while a leader waits for
	// more; nil when no leader waits.
	grew chan struct{}
}

type signReq struct {
	header []byte
	out    chan signResult // buffered, receives exactly once
}

type signResult struct {
	sh  *exchangev1.SignedHeader
	err error
}

// NewBatchSigner returns a batch signer; Close stops it. A nil policy
// never waits for more headers.
func NewBatchSigner(s *sign.Signer, p *gather.Policy) *BatchSigner {
	return &BatchSigner{signer: s, policy: p}
}

// Signer returns the underlying signer.
func (b *BatchSigner) Signer() *sign.Signer { return b.signer }

// ErrSignerClosed is returned by Sign after Close.
var ErrSignerClosed = errors.New("exchange: signer closed")

// Sign signs header bytes and returns them with the batch signature.
func (b *BatchSigner) Sign(ctx context.Context, header []byte) (*exchangev1.SignedHeader, error) {
	r := &signReq{header: header, out: make(chan signResult, 1)}
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return nil, ErrSignerClosed
	}
	b.enqueue(r)
	if b.busy {
		b.mu.Unlock()
		select {
		case res := <-r.out:
			return res.sh, res.err
		case <-ctx.Done():
			// The leader still signs the header; its result is dropped.
			return nil, ctx.Err()
		}
	}
	b.busy = true
	b.gather()
	b.signQueued()
	if len(b.queue) > 0 {
		// Headers queued while this caller signed: a goroutine carries on,
		// so this caller returns without waiting for other callers' work.
		b.mu.Unlock()
		go b.drain()
	} else {
		b.busy = false
		b.mu.Unlock()
	}
	res := <-r.out
	return res.sh, res.err
}

// enqueue queues r and wakes a waiting leader once the queue is full
// enough; b.mu is held.
func (b *BatchSigner) enqueue(r *signReq) {
	b.queue = append(b.queue, r)
	if b.grew != nil {
		select {
		case b.grew <- struct{}{}:
		default:
		}
	}
}

// gather lets a new leader wait for more headers when the policy says the
// node is busy; b.mu is held on entry and exit.
func (b *BatchSigner) gather() {
	target, wait := b.policy.Target()
	if wait <= 0 || len(b.queue) >= target {
		return
	}
	b.grew = make(chan struct{}, 1)
	w := b.policy.NewWait(wait)
	defer w.Stop()
	for len(b.queue) < target {
		grew := b.grew
		b.mu.Unlock()
		select {
		case <-grew:
			w.Arrived()
		case <-w.C:
			b.mu.Lock()
			b.grew = nil
			return
		}
		b.mu.Lock()
	}
	b.grew = nil
}

// signQueued signs one batch of the queue; b.mu is held on entry and exit.
func (b *BatchSigner) signQueued() {
	n := min(len(b.queue), MaxBatch)
	batch := b.queue[:n:n]
	b.queue = b.queue[n:]
	b.mu.Unlock()
	b.signBatch(batch)
	b.mu.Lock()
}

// drain signs until the queue is empty, then leaves the signer idle.
func (b *BatchSigner) drain() {
	b.mu.Lock()
	for len(b.queue) > 0 {
		b.signQueued()
	}
	b.queue = nil
	b.busy = false
	b.mu.Unlock()
}

// Close makes further Sign calls fail.
func (b *BatchSigner) Close() {
	b.mu.Lock()
	b.closed = true
	b.mu.Unlock()
}

func (b *BatchSigner) signBatch(batch []*signReq) {
	headers := make([][]byte, len(batch))
	for i, r := range batch {
		headers[i] = r.header
	}
	signed, err := SignBatch(b.signer, headers)
	for i, r := range batch {
		if err != nil {
			r.out <- signResult{err: err}
			continue
		}
		r.out <- signResult{sh: signed[i]}
	}
}

// SignBatch signs up to MaxBatch headers with one signature over the
// Merkle root of their bytes; each signed header carries its inclusion
// proof.
func SignBatch(s *sign.Signer, headers [][]byte) ([]*exchangev1.SignedHeader, error) {
	if len(headers) == 0 || len(headers) > MaxBatch {
		return nil, fmt.Errorf("sign batch: %d headers, want 1 to %d", len(headers), MaxBatch)
	}
	tree := newBatchTree(headers)
	root := tree.root()
	sig, err := s.Sign(TypeBatch, batchMessage(root, uint64(len(headers))))
	if err != nil {
		return nil, fmt.Errorf("sign batch: %w", err)
	}
	out := make([]*exchangev1.SignedHeader, len(headers))
	for i, h := range headers {
		proof, err := tree.prove(i)
		if err != nil {
			return nil, err
		}
		out[i] = &exchangev1.SignedHeader{
			Header:    h,
			Signature: sig,
			Batch:     &exchangev1.BatchProof{Root: root[:], Size: uint64(len(headers)), Index: uint64(i), Hashes: proof},
		}
	}
	return out, nil
}

func batchMessage(root tlog.Hash, size uint64) []byte {
	m := make([]byte, 0, 40)
	m = append(m, root[:]...)
	return binary.BigEndian.AppendUint64(m, size)
}

// batchTree is an in-memory RFC 6962 tree over one batch, in the stored-hash
// layout of golang.org/x/mod/sumdb/tlog.
type batchTree struct {
	n      int64
	hashes []tlog.Hash
}

func newBatchTree(leaves [][]byte) *batchTree {
	t := &batchTree{n: int64(len(leaves))}
	for i, l := range leaves {
		hs, err := tlog.StoredHashes(int64(i), l, t)
		if err != nil {
			// Reading from memory cannot fail for indexes already stored.
			panic(err)
		}
		t.hashes = append(t.hashes, hs...)
	}
	return t
}

// ReadHashes implements tlog.HashReader.
func (t *batchTree) ReadHashes(indexes []int64) ([]tlog.Hash, error) {
	out := make([]tlog.Hash, len(indexes))
	for i, x := range indexes {
		if x < 0 || x >= int64(len(t.hashes)) {
			return nil, fmt.Errorf("batch tree: hash %d not stored", x)
		}
		out[i] = t.hashes[x]
	}
	return out, nil
}

func (t *batchTree) root() tlog.Hash {
	h, err := tlog.TreeHash(t.n, t)
	if err != nil {
		panic(err)
	}
	return h
}

func (t *batchTree) prove(i int) ([][]byte, error) {
	p, err := tlog.ProveRecord(t.n, int64(i), t)
	if err != nil {
		return nil, fmt.Errorf("batch proof: %w", err)
	}
	out := make([][]byte, len(p))
	for j := range p {
		out[j] = p[j][:]
	}
	return out, nil
}

// VerifySignedHeader checks the signature of a signed header with cert,
// whether it signs the header alone or a batch that includes it.
func VerifySignedHeader(cert *x509.Certificate, sh *exchangev1.SignedHeader) error {
	return defaultVerifier.Verify(cert, sh)
}

// Verifier verifies signed headers and remembers batch roots it has
// verified, so each batch costs one ECDSA verification however many of its
// headers arrive. Headers of one batch arrive together, so a root being
// verified is waited for rather than verified again.
type Verifier struct {
	mu    sync.Mutex
	roots map[rootKey]*rootCheck
	order []rootKey
	max   int
}

// rootKey names a signed batch: the SHA-256 of the signer certificate, the
// root, the batch size and the SHA-256 of the signature. The signature is
// part of the key so that a header that arrives with other signature bytes
// over a known root is checked, not taken on the root's credit: its record
// must hold a signature that verifies.
type rootKey [32 + 32 + 8 + 32]byte

// rootCheck is one verification of a batch signature; ok is written
// before done is closed.
type rootCheck struct {
	done chan struct{}
	ok   bool
}

// NewVerifier returns a verifier caching up to max batch roots.
func NewVerifier(max int) *Verifier {
	return &Verifier{roots: map[rootKey]*rootCheck{}, max: max}
}

var defaultVerifier = NewVerifier(0)

// Verify checks sh with cert like VerifySignedHeader, skipping the ECDSA
// verification of a batch root this verifier already accepted for cert.
func (v *Verifier) Verify(cert *x509.Certificate, sh *exchangev1.SignedHeader) error {
	b := sh.GetBatch()
	if b == nil {
		return sign.Verify(cert, sign.TypeHeader, sh.GetHeader(), sh.GetSignature())
	}
	if len(b.GetRoot()) != sha256.Size || b.GetSize() == 0 || b.GetIndex() >= b.GetSize() {
		return fmt.Errorf("%w: malformed batch proof", sign.ErrBadSignature)
	}
	root := tlog.Hash(b.GetRoot())
	proof := make(tlog.RecordProof, len(b.GetHashes()))
	for i, h := range b.GetHashes() {
		if len(h) != sha256.Size {
			return fmt.Errorf("%w: malformed batch proof", sign.ErrBadSignature)
		}
		proof[i] = tlog.Hash(h)
	}
	if err := tlog.CheckRecord(proof, int64(b.GetSize()), root, int64(b.GetIndex()), tlog.RecordHash(sh.GetHeader())); err != nil {
		return fmt.Errorf("%w: header is not in the signed batch", sign.ErrBadSignature)
	}
	verify := func() error {
		return sign.Verify(cert, TypeBatch, batchMessage(root, b.GetSize()), sh.GetSignature())
	}
	if v.max <= 0 {
		return verify()
	}

	var key rootKey
	copy(key[:32], sha256Sum(cert.Raw))
	copy(key[32:64], root[:])
	binary.BigEndian.PutUint64(key[64:72], b.GetSize())
	copy(key[72:], sha256Sum(sh.GetSignature()))
	v.mu.Lock()
	if c, ok := v.roots[key]; ok {
		v.mu.Unlock()
		<-c.done
		if c.ok {
			return nil
		}
		return verify() // the same signature failed: report it alike
	}
	c := &rootCheck{done: make(chan struct{})}
	v.roots[key] = c
	v.order = append(v.order, key)
	if len(v.order) > v.max {
		delete(v.roots, v.order[0])
		v.order = v.order[1:]
	}
	v.mu.Unlock()

	// Waiters are released however verify returns, a panic included.
	defer close(c.done)
	err := verify()
	c.ok = err == nil
	if !c.ok {
		v.mu.Lock()
		if v.roots[key] == c {
			delete(v.roots, key)
		}
		v.mu.Unlock()
	}
	return err
}

func sha256Sum(b []byte) []byte {
	s := sha256.Sum256(b)
	return s[:]
}
