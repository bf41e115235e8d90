package evidence

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/binary"
	"errors"
	"fmt"

	bolt "go.etcd.io/bbolt"
	"golang.org/x/mod/sumdb/tlog"
	"google.golang.org/protobuf/proto"

	"github.com/ketnoi/ketnoi/internal/exchange"
	"github.com/ketnoi/ketnoi/internal/sign"
	evidencev1 "github.com/ketnoi/ketnoi/proto/ketnoi/evidence/v1"
	exchangev1 "github.com/ketnoi/ketnoi/proto/ketnoi/exchange/v1"
)

// Report summarizes a log that verified.
type Report struct {
	// Size is the number of records checked.
	Size uint64
	// Root is the tree root over them.
	Root tlog.Hash
	// SignaturesChecked counts records whose signature was checked
	// (records with signature_verified set).
	SignaturesChecked int
	// Unsigned counts the other records: they carry no verified
	// signature, so there was none to check. UnsignedRefusals counts the
	// refusals among them, which are all a node writes: of calls a
	// consumer refused before signing anything, and of messages whose
	// header or signature failed its checks.
	Unsigned, UnsignedRefusals int
}

// VerifyError names the first record of a log that fails verification.
type VerifyError struct {
	// Index is the record's position in the log.
	Index uint64
	// Reason says what is wrong with it.
	Reason string
}

// Error returns "record <index>: <reason>".
func (e *VerifyError) Error() string {
	return fmt.Sprintf("record %d: %s", e.Index, e.Reason)
}

// Verify checks the whole log as of one snapshot: every leaf against the
// stored tree, every stored hash and the root against a recomputation from
// the leaves, every record's encoding, and the signature of every record
// that claims one, against the stored signer certificate. When roots is not
// nil, each signer certificate must also chain to roots at the header's
// creation time.
//
// Verify holds one read transaction for the whole pass; on a live log,
// appends continue meanwhile and are not covered.
//
// The first bad record (lowest index) is returned as a *VerifyError, not
// wrapped; other errors mean the log could not be read or its root does not
// match.
func (l *Log) Verify(ctx context.Context, roots *x509.CertPool) (_ Report, err error) {
	defer guardFaults(&err)()
	if err := l.Flush(ctx); err != nil {
		return Report{}, fmt.Errorf("verify evidence log: %w", err)
	}
	var rep Report
	err = l.db.View(func(tx *bolt.Tx) error {
		head, err := readHead(tx)
		if err != nil {
			return err
		}
		v := &verifier{
			leaves: tx.Bucket(bucketLeaves),
			hashes: tx.Bucket(bucketHashes),
			certs:  tx.Bucket(bucketCerts),
			roots:  roots,
			parsed: make(map[string]*x509.Certificate),
			// Records of one signed batch verify with one ECDSA check.
			verifier: exchange.NewVerifier(1024),
		}
		for n := range head.size {
			if n%4096 == 0 {
				if err := ctx.Err(); err != nil {
					return err
				}
			}
			if reason := v.record(n); reason != "" {
				return &VerifyError{Index: n, Reason: reason}
			}
		}
		if err := v.extra(head.size); err != nil {
			return err
		}

		root, err := tlog.TreeHash(int64(head.size), &v.frontier)
		if err != nil {
			return fmt.Errorf("compute tree root: %w", err)
		}
		if root != head.root {
			return fmt.Errorf("stored root %x does not match the root of the leaves %x",
				head.root[:8], root[:8])
		}
		rep = Report{Size: head.size, Root: root, SignaturesChecked: v.signatures,
			Unsigned: v.unsigned, UnsignedRefusals: v.unsignedRefusals}
		return nil
	})
	var verr *VerifyError
	if errors.As(err, &verr) {
		return Report{}, verr
	}
	if err != nil {
		return Report{}, fmt.Errorf("verify evidence log: %w", err)
	}
	return rep, nil
}

// verifier holds the state of one Verify pass.
type verifier struct {
	leaves, hashes, certs *bolt.Bucket
	roots                 *x509.CertPool

	frontier   frontier
	parsed     map[string]*x509.Certificate // by SHA-256
	verifier   *exchange.Verifier           // remembers verified batch roots
	signatures int
	// unsigned counts the records without a verified signature,
	// unsignedRefusals the refusals among them.
	unsigned, unsignedRefusals int
}

// record checks record n and returns why it is bad, or "".
func (v *verifier) record(n uint64) string {
	leaf := v.leaves.Get(key(n))
	if leaf == nil {
		return "leaf missing"
	}
	if reason := v.tree(n, leaf); reason != "" {
		return reason
	}
	rec := new(evidencev1.Record)
	if err := proto.Unmarshal(leaf, rec); err != nil {
		return fmt.Sprintf("record does not parse: %v", err)
	}
	if !rec.GetSignatureVerified() {
		v.unsigned++
		if rec.GetKind() == evidencev1.RecordKind_RECORD_KIND_REFUSED {
			v.unsignedRefusals++
		}
		return ""
	}
	return v.signature(rec)
}

// tree recomputes the hashes record n stores from its leaf and the
// in-memory frontier, and compares them with the stored ones.
func (v *verifier) tree(n uint64, leaf []byte) string {
	hs, err := tlog.StoredHashes(int64(n), leaf, &v.frontier)
	if err != nil {
		return fmt.Sprintf("recompute tree hashes: %v", err)
	}
	at := uint64(tlog.StoredHashIndex(0, int64(n)))
	for level, h := range hs {
		stored := v.hashes.Get(key(at + uint64(level)))
		if stored == nil {
			return fmt.Sprintf("tree hash at level %d missing", level)
		}
		if !bytes.Equal(stored, h[:]) {
			if level == 0 {
				return "leaf hash does not match the tree"
			}
			return fmt.Sprintf("tree hash at level %d does not match the leaves", level)
		}
		v.frontier.set(level, int64(at)+int64(level), h)
	}
	return ""
}

// signature checks a record's signature, and its signer's chain when roots
// are given.
func (v *verifier) signature(rec *evidencev1.Record) string {
	var h exchangev1.Header
	if err := proto.Unmarshal(rec.GetHeader(), &h); err != nil {
		return fmt.Sprintf("header does not parse: %v", err)
	}
	if h.GetMessageId() != rec.GetMessageId() {
		return fmt.Sprintf("message id %q differs from the header's %q",
			rec.GetMessageId(), h.GetMessageId())
	}
	sum := h.GetSignerCertificateSha256()
	if len(sum) == 0 {
		return "header names no signer certificate"
	}
	cert, reason := v.certificate(sum)
	if reason != "" {
		return reason
	}
	v.signatures++
	sh := &exchangev1.SignedHeader{Header: rec.GetHeader(), Signature: rec.GetSignature(), Batch: rec.GetBatch()}
	if err := v.verifier.Verify(cert, sh); err != nil {
		return "signature does not verify"
	}
	if v.roots == nil {
		return ""
	}
	if h.GetCreatedAt() == nil {
		return "header has no creation time"
	}
	at := h.GetCreatedAt().AsTime()
	if err := sign.VerifyCertificate(cert, nil, v.roots, at); err != nil {
		return fmt.Sprintf("signer certificate %x not trusted at %s: %v",
			prefix(sum), at.UTC().Format("2006-01-02T15:04:05Z"), err)
	}
	return ""
}

// certificate returns the parsed signer certificate with SHA-256 sum.
func (v *verifier) certificate(sum []byte) (*x509.Certificate, string) {
	if c, ok := v.parsed[string(sum)]; ok {
		return c, ""
	}
	der := v.certs.Get(sum)
	if der == nil {
		return nil, fmt.Sprintf("signer certificate %x missing", prefix(sum))
	}
	c, err := x509.ParseCertificate(bytes.Clone(der))
	if err != nil {
		return nil, fmt.Sprintf("signer certificate %x does not parse: %v", prefix(sum), err)
	}
	v.parsed[string(sum)] = c
	return c, ""
}

// extra reports leaves or hashes stored beyond the log's size.
func (v *verifier) extra(size uint64) error {
	if k, _ := v.leaves.Cursor().Last(); k != nil && binary.BigEndian.Uint64(k) >= size {
		return &VerifyError{Index: binary.BigEndian.Uint64(k), Reason: "leaf beyond the log's size"}
	}
	want := uint64(tlog.StoredHashCount(int64(size)))
	if k, _ := v.hashes.Cursor().Last(); k != nil && binary.BigEndian.Uint64(k) >= want {
		return fmt.Errorf("stored hash %d beyond the log's size", binary.BigEndian.Uint64(k))
	}
	return nil
}

// frontier is an in-memory tlog.HashReader holding, per tree level, the
// latest hash recomputed at that level. Appending record n and computing
// the root only ever read those hashes, so memory stays O(log n).
type frontier [64]struct {
	index int64
	hash  tlog.Hash
	ok    bool
}

// set records h as the latest hash of level, stored at index.
func (f *frontier) set(level int, index int64, h tlog.Hash) {
	f[level].index, f[level].hash, f[level].ok = index, h, true
}

// ReadHashes implements tlog.HashReader.
func (f *frontier) ReadHashes(indexes []int64) ([]tlog.Hash, error) {
	out := make([]tlog.Hash, len(indexes))
next:
	for i, idx := range indexes {
		for _, e := range f {
			if e.ok && e.index == idx {
				out[i] = e.hash
				continue next
			}
		}
		return nil, fmt.Errorf("hash %d not on the frontier", idx)
	}
	return out, nil
}
