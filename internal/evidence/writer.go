package evidence

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"time"

	bolt "go.etcd.io/bbolt"
	"golang.org/x/mod/sumdb/tlog"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/ketnoi/ketnoi/internal/logging"
	evidencev1 "github.com/ketnoi/ketnoi/proto/ketnoi/evidence/v1"
	exchangev1 "github.com/ketnoi/ketnoi/proto/ketnoi/exchange/v1"
)

// pending is one record waiting for the writer.
type pending struct {
	leaf      []byte // nil until signed, for a record to sign
	messageID string
	cert      []byte
	certSum   [sha256.Size]byte
	done      chan result // buffered, receives exactly once

	// For a record whose header the writer signs: the record to complete
	// and marshal, the signed header once there, and sealed, closed once
	// the header is signed or cannot be (sealErr).
	rec     *evidencev1.Record
	signed  *exchangev1.SignedHeader
	sealErr error
	sealed  chan struct{}
}

// result is the writer's answer to one pending record.
type result struct {
	index uint64
	err   error
}

// Append logs rec with the DER certificate of its signer (nil when the
// certificate is already in the log or the record has none) and returns
// the record's index once the commit holding it is on disk.
//
// For a record with signature_verified set, the header must parse and name
// signerCert by its SHA-256. A message id longer than 1024 bytes is kept in
// the record but not indexed for ByMessageID.
//
// If the commit fails, every record of that commit gets the error and none
// is in the log; only when the disk failed to sync the commit may the disk
// still hold it, so that it appears after a restart (the log then refuses
// every record until the node restarts). If ctx ends while the record
// waits for its commit, Append returns ctx's error, and the record may
// still be committed. After Close, Append returns ErrClosed.
func (l *Log) Append(
	ctx context.Context,
	rec *evidencev1.Record,
	signerCert []byte,
) (uint64, error) {
	r, err := l.Start(ctx, rec, signerCert)
	if err != nil {
		return 0, err
	}
	return r.Wait(ctx)
}

// Receipt is a record handed to the writer and not yet known to be
// durable. Records are committed in the order they were started.
type Receipt struct {
	p *pending
}

// Item is one record for StartItems.
type Item struct {
	Record *evidencev1.Record
	// SignerCert is the DER certificate of the header's signer, or nil
	// when the log already has it or the record has none.
	SignerCert []byte
	// Sign asks the writer to sign the record's header (Options.Seal)
	// together with the other headers of its commit, and to store the
	// signature and batch proof in the record. The signed header is then
	// available from the receipt.
	Sign bool
}

// Start hands rec to the writer like Append but returns at once, so that a
// caller with a stream of messages can prepare the next one while this one
// is being committed. The caller must not act on the record (send the
// message it is about) before Wait has returned without error.
func (l *Log) Start(ctx context.Context, rec *evidencev1.Record, signerCert []byte) (*Receipt, error) {
	rs, err := l.StartAll(ctx, []*evidencev1.Record{rec}, [][]byte{signerCert})
	if err != nil {
		return nil, err
	}
	return rs[0], nil
}

// StartAll is Start for records that must be committed in the same
// transaction, in order: a node that records a request and its response
// together pays for one commit. certs[i] is the signer certificate of
// recs[i] (or nil).
func (l *Log) StartAll(ctx context.Context, recs []*evidencev1.Record, certs [][]byte) ([]*Receipt, error) {
	if len(recs) != len(certs) {
		return nil, errors.New("append evidence: one certificate slot per record")
	}
	items := make([]Item, len(recs))
	for i, rec := range recs {
		items[i] = Item{Record: rec, SignerCert: certs[i]}
	}
	return l.StartItems(ctx, items...)
}

// StartItems is StartAll for items, some of which the writer may sign.
func (l *Log) StartItems(ctx context.Context, items ...Item) ([]*Receipt, error) {
	if l.queue == nil {
		return nil, fmt.Errorf("append evidence: %w", ErrReadOnly)
	}
	if len(items) > l.maxBatch {
		return nil, fmt.Errorf("append evidence: %d records exceed a commit's %d", len(items), l.maxBatch)
	}
	ps := make([]*pending, len(items))
	for i, it := range items {
		if it.Sign && l.seal == nil {
			return nil, errors.New("append evidence: this log signs no headers")
		}
		p, err := newPending(it.Record, it.SignerCert, it.Sign)
		if err != nil {
			return nil, fmt.Errorf("append evidence: %w", err)
		}
		if p.cert != nil {
			if _, ok := l.storedCerts.Load(p.certSum); ok {
				p.cert = nil
			} else {
				p.cert = bytes.Clone(p.cert)
			}
		}
		ps[i] = p
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("append evidence: %w", err)
	}
	if err := l.enqueue(ctx, ps); err != nil {
		return nil, fmt.Errorf("append evidence: %w", err)
	}
	rs := make([]*Receipt, len(ps))
	for i, p := range ps {
		rs[i] = &Receipt{p: p}
	}
	return rs, nil
}

// Signed waits until the writer has signed the header of a record started
// with Item.Sign and returns it signed, typically before the record is
// durable. For other records it returns an error.
func (r *Receipt) Signed(ctx context.Context) (*exchangev1.SignedHeader, error) {
	if r.p.sealed == nil {
		return nil, errors.New("sign header: the record was not started to be signed")
	}
	select {
	case <-r.p.sealed:
		if r.p.sealErr != nil {
			return nil, fmt.Errorf("sign header: %w", r.p.sealErr)
		}
		return r.p.signed, nil
	case <-ctx.Done():
		return nil, fmt.Errorf("sign header: %w", ctx.Err())
	}
}

// Wait returns the record's index once the commit holding it is on disk,
// or the commit's error. It may be called once.
func (r *Receipt) Wait(ctx context.Context) (uint64, error) {
	select {
	case res := <-r.p.done:
		if res.err != nil {
			return 0, fmt.Errorf("append evidence: %w", res.err)
		}
		return res.index, nil
	case <-ctx.Done():
		return 0, fmt.Errorf("append evidence: waiting for commit: %w", ctx.Err())
	}
}

// newPending validates and encodes a record; one to sign is encoded by the
// writer once signed.
func newPending(rec *evidencev1.Record, signerCert []byte, sign bool) (*pending, error) {
	if rec == nil {
		return nil, errors.New("nil record")
	}
	if rec.GetKind() == evidencev1.RecordKind_RECORD_KIND_UNSPECIFIED {
		return nil, errors.New("record kind unspecified")
	}
	p := &pending{messageID: rec.GetMessageId(), done: make(chan result, 1)}
	if len(p.messageID) > maxIndexedID {
		// Only a refusal of a malformed message carries such an id; keep
		// the record, but do not let it grow the index.
		p.messageID = ""
	}
	if signerCert != nil {
		p.cert = signerCert // copied by StartItems unless already stored
		p.certSum = sha256.Sum256(signerCert)
	}
	if sign {
		if len(rec.GetHeader()) == 0 || !rec.GetSignatureVerified() || signerCert == nil {
			return nil, errors.New("a record to sign needs its header, signature_verified and the signer certificate")
		}
		p.rec = rec
		p.sealed = make(chan struct{})
	}
	if rec.GetSignatureVerified() && signerCert != nil {
		named, err := headerSignerSum(rec.GetHeader())
		if err != nil {
			return nil, fmt.Errorf("parse header: %w", err)
		}
		if !bytes.Equal(named, p.certSum[:]) {
			return nil, fmt.Errorf("signer certificate %x is not the one the header names (%x)",
				p.certSum[:8], prefix(named))
		}
	}
	if sign {
		return p, nil
	}
	leaf, err := proto.MarshalOptions{Deterministic: true}.Marshal(rec)
	if err != nil {
		return nil, fmt.Errorf("marshal record: %w", err)
	}
	p.leaf = leaf
	return p, nil
}

// headerSignerSum returns the signer_certificate_sha256 field of an encoded
// exchange header, as proto.Unmarshal would read it (the last occurrence
// wins), without decoding the rest: every verified record is checked this
// way, and a full decode costs a dozen allocations.
func headerSignerSum(header []byte) ([]byte, error) {
	const field = 23 // exchange.v1.Header.signer_certificate_sha256
	var sum []byte
	for b := header; len(b) > 0; {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return nil, protowire.ParseError(n)
		}
		b = b[n:]
		if num == field && typ == protowire.BytesType {
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return nil, protowire.ParseError(n)
			}
			sum, b = v, b[n:]
			continue
		}
		n = protowire.ConsumeFieldValue(num, typ, b)
		if n < 0 {
			return nil, protowire.ParseError(n)
		}
		b = b[n:]
	}
	return sum, nil
}

// enqueue hands ps to the writer, to be committed in one transaction,
// unless the log is closed.
func (l *Log) enqueue(ctx context.Context, ps []*pending) error {
	if l.queue == nil {
		return ErrReadOnly
	}
	l.mu.RLock()
	defer l.mu.RUnlock()
	if l.closed {
		return ErrClosed
	}
	select {
	case l.queue <- ps:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// write is the single writer goroutine. It commits whatever is queued, up
// to maxBatch records, as one journal frame, answers every caller of that
// batch, and repeats until the queue is closed and drained; between
// commits it folds journaled records into the tree when they are due or
// Flush asks, and once more before it returns.
func (l *Log) write() {
	defer close(l.done)
	batch := make([]*pending, 0, l.maxBatch)
	for {
		first := l.carry
		l.carry = nil
		if first != nil {
			// A commit left records over; serve a waiting Flush or a due
			// fold before the next one all the same.
			select {
			case reply := <-l.foldReq:
				reply <- l.fold()
			case <-l.foldDue():
				l.fold()
			default:
			}
		} else {
			select {
			case ps, ok := <-l.queue:
				if !ok {
					if !l.skipFinalFold {
						l.fold()
					}
					return
				}
				first = ps
			case reply := <-l.foldReq:
				reply <- l.fold()
				continue
			case <-l.foldDue():
				l.fold()
				continue
			}
		}
		batch = append(batch[:0], first...)
	fill:
		for len(batch) < l.maxBatch {
			select {
			case ps, ok := <-l.queue:
				var added bool
				if batch, added = l.add(batch, ps); !ok || !added {
					break fill
				}
			default:
				break fill
			}
		}
		if l.carry == nil {
			batch = l.gatherMore(batch)
		}

		// A failed signature or commit is reported to every caller of the
		// batch, who refuses its exchange and reports it; nothing is
		// logged here.
		err := l.sealAll(batch)
		var start uint64
		if err == nil {
			start, err = l.journalAppend(batch)
		}
		for i, p := range batch {
			p.done <- result{index: start + uint64(i), err: err}
			batch[i] = nil
		}
		if len(l.unfolded) >= foldRecords && !l.foldFailing {
			l.fold()
		}
	}
}

// foldDue is the fold timer's channel while records wait to be folded,
// and nil (never ready) otherwise.
func (l *Log) foldDue() <-chan time.Time {
	if len(l.unfolded) == 0 {
		return nil
	}
	return l.foldTimer.C
}

// add appends ps, records started together, to batch, unless they would
// make it larger than a commit may be: then they are kept to lead the
// next commit, and add reports false. A nil ps (closed queue) adds nothing.
func (l *Log) add(batch, ps []*pending) ([]*pending, bool) {
	if len(batch)+len(ps) > l.maxBatch {
		l.carry = ps
		return batch, false
	}
	return append(batch, ps...), true
}

// journalAppend makes batch durable as one journal frame and returns the
// index of its first record. The records join the ones waiting to be
// folded into the tree.
func (l *Log) journalAppend(batch []*pending) (uint64, error) {
	if len(l.unfolded)+len(batch) > maxUnfolded {
		return 0, fmt.Errorf("the tree is %d records behind the journal: refusing records until a fold succeeds",
			len(l.unfolded))
	}
	if l.journalHook != nil {
		if err := l.journalHook(len(batch)); err != nil {
			return 0, err
		}
	}
	start := l.next
	if err := l.journal.append(start, batch); err != nil {
		return 0, fmt.Errorf("commit records %d to %d: %w", start, start+uint64(len(batch))-1, err)
	}
	l.next += uint64(len(batch))
	if len(l.unfolded) == 0 {
		l.foldTimer.Reset(l.foldEvery)
	}
	for _, p := range batch {
		if p.cert != nil {
			l.storedCerts.Store(p.certSum, struct{}{})
		}
	}
	l.unfolded = append(l.unfolded, batch...)
	l.behind.Store(int64(len(l.unfolded)))
	return start, nil
}

// fold commits the journaled records into the tree, durably, and empties
// the journal once it has grown. On failure the records stay journaled and
// waiting, and the fold is tried again later.
//
// When the journal has grown past journalResetSize, the last transaction
// of the fold also stores a new generation, and the journal starts again
// at its front with it (see journal.go).
func (l *Log) fold() error {
	var next uint64
	if l.journal.size >= journalResetSize && l.journal.broken == nil {
		next = newGeneration()
	}
	for len(l.unfolded) > 0 {
		n := min(len(l.unfolded), foldChunk)
		gen := uint64(0)
		if n == len(l.unfolded) {
			gen = next
		}
		if _, err := l.commit(l.unfolded[:n], gen); err != nil {
			l.foldFailing = true
			l.foldTimer.Reset(l.foldEvery)
			l.logger.ErrorContext(context.Background(), "evidence records stay journaled: fold into the tree failed",
				slog.Int(logging.KeyCount, len(l.unfolded)), slog.Any(logging.KeyError, err))
			return err
		}
		clear(l.unfolded[:n])
		l.unfolded = l.unfolded[n:]
		l.behind.Store(int64(len(l.unfolded)))
	}
	l.foldFailing = false
	l.unfolded = l.unfolded[:0:0]
	if next != 0 {
		l.journal.reset(next)
	}
	return nil
}

// Flush folds every journaled record into the tree and returns once the
// tree holds them durably. Reads of a writable log ([Log.ByMessageID],
// [Log.Entry], [Log.Certificate], [Log.Verify], [Log.TreeHead]) flush
// first, so they see every appended record; flushing a read-only or
// closed log does nothing.
func (l *Log) Flush(ctx context.Context) error {
	if l.queue == nil || l.behind.Load() == 0 {
		return nil
	}
	l.mu.RLock()
	if l.closed {
		// Close folds once more; wait for that, and say so if records
		// stayed out of the tree.
		l.mu.RUnlock()
		select {
		case <-l.done:
		case <-ctx.Done():
			return ctx.Err()
		}
		if n := l.behind.Load(); n > 0 {
			return fmt.Errorf("%w: %d records are only in the journal", ErrClosed, n)
		}
		return nil
	}
	reply := make(chan error, 1)
	select {
	case l.foldReq <- reply:
	case <-ctx.Done():
		l.mu.RUnlock()
		return ctx.Err()
	}
	l.mu.RUnlock()
	select {
	case err := <-reply:
		if err != nil {
			return fmt.Errorf("fold evidence journal: %w", err)
		}
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// gatherMore waits, while the node is busy, for more records to join
// batch, up to the gather policy's target and delay, and no longer than
// its quiet gap after the last record that came.
func (l *Log) gatherMore(batch []*pending) []*pending {
	target, wait := l.gather.Target()
	target = min(target, l.maxBatch)
	if wait <= 0 || len(batch) >= target {
		return batch
	}
	w := l.gather.NewWait(wait)
	defer w.Stop()
	for len(batch) < target {
		select {
		case ps, ok := <-l.queue:
			var added bool
			if batch, added = l.add(batch, ps); !ok || !added {
				return batch
			}
			w.Arrived()
		case <-w.C:
			return batch
		}
	}
	return batch
}

// sealAll signs the headers of the batch's records to sign with one
// signature, completes and encodes those records, and releases their
// callers' Signed. If signing fails, it fails the whole batch.
func (l *Log) sealAll(batch []*pending) error {
	var headers [][]byte
	for _, p := range batch {
		if p.rec != nil {
			headers = append(headers, p.rec.GetHeader())
		}
	}
	if len(headers) == 0 {
		return nil
	}
	signed, err := l.seal(headers)
	if err == nil && len(signed) != len(headers) {
		err = fmt.Errorf("signed %d of %d headers", len(signed), len(headers))
	}
	// Every record is completed and encoded before any caller learns its
	// signed header: a record that cannot be encoded fails the commit, and
	// no header of a failed commit is handed out as signed.
	i := 0
	for _, p := range batch {
		if p.rec == nil || err != nil {
			continue
		}
		sh := signed[i]
		i++
		p.rec.Signature, p.rec.Batch = sh.GetSignature(), sh.GetBatch()
		leaf, merr := proto.MarshalOptions{Deterministic: true}.Marshal(p.rec)
		if merr != nil {
			err = fmt.Errorf("marshal record: %w", merr)
			continue
		}
		p.leaf, p.signed = leaf, sh
	}
	for _, p := range batch {
		if p.rec == nil {
			continue
		}
		if err != nil {
			p.signed, p.sealErr = nil, err
		}
		p.rec = nil
		close(p.sealed)
	}
	if err != nil {
		return fmt.Errorf("sign headers: %w", err)
	}
	return nil
}

// commit writes batch in one transaction and publishes the new tree head.
// It returns the index of the first record.
//
// A nonzero gen is stored as the journal generation in the same
// transaction.
func (l *Log) commit(batch []*pending, gen uint64) (uint64, error) {
	start := l.head.Load().size
	var head treeHead
	err := l.db.Update(func(tx *bolt.Tx) error {
		if l.commitHook != nil {
			if err := l.commitHook(len(batch)); err != nil {
				return err
			}
		}
		leaves, hashes := tx.Bucket(bucketLeaves), tx.Bucket(bucketHashes)
		leaves.FillPercent = appendFillPercent
		hashes.FillPercent = appendFillPercent
		certs, messages := tx.Bucket(bucketCerts), tx.Bucket(bucketMessages)
		reader := bucketHashReader{hashes}

		for i, p := range batch {
			n := start + uint64(i)
			if err := leaves.Put(key(n), p.leaf); err != nil {
				return fmt.Errorf("store leaf %d: %w", n, err)
			}
			if err := storeHashes(hashes, reader, n, p.leaf); err != nil {
				return err
			}
			if p.cert != nil && certs.Get(p.certSum[:]) == nil {
				if err := certs.Put(p.certSum[:], p.cert); err != nil {
					return fmt.Errorf("store certificate: %w", err)
				}
			}
			if p.messageID != "" {
				if err := messages.Put(messageKey(p.messageID, n), []byte{}); err != nil {
					return fmt.Errorf("index message %d: %w", n, err)
				}
			}
		}

		head.size = start + uint64(len(batch))
		root, err := tlog.TreeHash(int64(head.size), reader)
		if err != nil {
			return fmt.Errorf("compute tree root: %w", err)
		}
		head.root = root
		meta := tx.Bucket(bucketMeta)
		if err := meta.Put(metaSize, key(head.size)); err != nil {
			return fmt.Errorf("store size: %w", err)
		}
		if err := meta.Put(metaRoot, root[:]); err != nil {
			return fmt.Errorf("store root: %w", err)
		}
		if gen != 0 {
			if err := meta.Put(metaJournal, binary.BigEndian.AppendUint64(nil, gen)); err != nil {
				return fmt.Errorf("store journal generation: %w", err)
			}
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("commit records %d to %d: %w", start, start+uint64(len(batch))-1, err)
	}
	l.head.Store(&head)
	return start, nil
}

// storeHashes stores the tree hashes that record n completes.
func storeHashes(b *bolt.Bucket, r tlog.HashReader, n uint64, leaf []byte) error {
	hs, err := tlog.StoredHashes(int64(n), leaf, r)
	if err != nil {
		return fmt.Errorf("compute hashes of record %d: %w", n, err)
	}
	at := uint64(tlog.StoredHashIndex(0, int64(n)))
	for i, h := range hs {
		if err := b.Put(key(at+uint64(i)), h[:]); err != nil {
			return fmt.Errorf("store hashes of record %d: %w", n, err)
		}
	}
	return nil
}

// messageKey is the messages bucket key of record n of exchange id.
func messageKey(id string, n uint64) []byte {
	k := make([]byte, 0, len(id)+9)
	k = append(k, id...)
	k = append(k, 0)
	return binary.BigEndian.AppendUint64(k, n)
}

// prefix returns at most the first 8 bytes of b, for messages.
func prefix(b []byte) []byte {
	return b[:min(len(b), 8)]
}
