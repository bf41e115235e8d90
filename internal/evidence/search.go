package evidence

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"iter"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"
	"golang.org/x/mod/sumdb/tlog"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"

	"github.com/ketnoi/ketnoi/internal/id"
	evidencev1 "github.com/ketnoi/ketnoi/proto/ketnoi/evidence/v1"
	exchangev1 "github.com/ketnoi/ketnoi/proto/ketnoi/exchange/v1"
)

// DefaultSearchLimit is the number of records a Query with no Limit
// returns.
const DefaultSearchLimit = 100

// Query selects records for [Log.Search]. A record must match every field
// that is set; the zero Query selects every record.
type Query struct {
	// Peer is a member or subsystem on the other side of the exchange (see
	// [Entry.Counterparty]). A member also matches its subsystems, and the
	// records whose peer node (Record.peer) is one of its nodes, which
	// finds the refusals of headers that do not parse or that name another
	// party than the node that sent them.
	Peer string
	// Service is a service identifier, matched with the header's service.
	Service string
	// PayloadSHA256 is matched with the header's payload_sha256.
	PayloadSHA256 []byte
	// MessageID is an exchange identifier, looked up in the message index.
	MessageID string
	// Since and Until select record times (recorded_at, the node's clock)
	// in [Since, Until); a zero time leaves that side open.
	Since, Until time.Time
	// Kind selects one record kind; unspecified selects all.
	Kind evidencev1.RecordKind
	// Code, when not nil, selects records with this gRPC code.
	Code *codes.Code
	// From is the first index examined.
	From uint64
	// Limit is the most records returned; 0 means DefaultSearchLimit.
	Limit int
}

// SearchResult holds the records a search found.
type SearchResult struct {
	// Entries are the matching records, in increasing index order.
	Entries []Entry
	// More is set when more records match than Limit allowed; Next is the
	// index of the first of them, to use as From to continue.
	More bool
	Next uint64
	// Size and Root are the tree head that was searched: the search
	// covered the records below Size.
	Size uint64
	Root tlog.Hash
}

// Check reports why q cannot be searched, with an error wrapping
// ErrBadQuery that names the field.
func (q *Query) Check() error {
	if _, err := q.peer(); err != nil {
		return err
	}
	if q.Service != "" {
		if _, err := id.ParseService(q.Service); err != nil {
			return fmt.Errorf("%w: service: %w", ErrBadQuery, err)
		}
	}
	switch {
	case q.PayloadSHA256 != nil && len(q.PayloadSHA256) != 32:
		return fmt.Errorf("%w: payload sha256 of %d bytes, want 32", ErrBadQuery, len(q.PayloadSHA256))
	case len(q.MessageID) > maxIndexedID:
		return fmt.Errorf("%w: message id of %d bytes is longer than the %d bytes the log indexes",
			ErrBadQuery, len(q.MessageID), maxIndexedID)
	case !q.Since.IsZero() && !q.Until.IsZero() && !q.Until.After(q.Since):
		return fmt.Errorf("%w: until %s is not after since %s", ErrBadQuery,
			q.Until.UTC().Format(time.RFC3339Nano), q.Since.UTC().Format(time.RFC3339Nano))
	case evidencev1.RecordKind_name[int32(q.Kind)] == "":
		return fmt.Errorf("%w: unknown record kind %d", ErrBadQuery, q.Kind)
	case q.Code != nil && *q.Code > codes.Unauthenticated:
		return fmt.Errorf("%w: code %d is not a gRPC code", ErrBadQuery, uint32(*q.Code))
	case q.Limit < 0:
		return fmt.Errorf("%w: negative limit %d", ErrBadQuery, q.Limit)
	}
	return nil
}

// peer parses q.Peer; the zero client when it is empty.
func (q *Query) peer() (id.Client, error) {
	if q.Peer == "" {
		return id.Client{}, nil
	}
	c, err := id.ParseClient(q.Peer)
	if err != nil {
		return id.Client{}, fmt.Errorf("%w: peer: %w", ErrBadQuery, err)
	}
	return c, nil
}

// Search returns the committed records that match q, in index order from
// q.From, at most q.Limit of them. It folds the journal first, like every
// read of a writable log, so it sees every acknowledged record.
//
// Index order, oldest first, is the log's own: a caller that continues
// from Next gets neither repeats nor gaps however many records the node
// appends meanwhile, where a newest-first order would shift under it.
//
// Its cost is a linear scan: without MessageID it reads and decodes every
// record from q.From to the end of the log (or until it has found one
// record past the limit), since no other field is indexed, and record
// times, from the node's clock, need not grow with the index.
// BenchmarkSearch measures about 0.75 µs a record when only fields of the
// record are filtered (kind, code, time) and 1.5 to 2 µs when the header
// must be parsed (peer, service, digest), on two cores: a log of millions
// of records takes seconds. With MessageID only that exchange's records
// are read. The scan holds one read transaction, which does not block
// appends.
func (l *Log) Search(ctx context.Context, q Query) (_ SearchResult, err error) {
	defer guardFaults(&err)()
	if err := q.Check(); err != nil {
		return SearchResult{}, err
	}
	if q.Limit == 0 {
		q.Limit = DefaultSearchLimit
	}
	m, err := newMatcher(q)
	if err != nil {
		return SearchResult{}, err
	}
	if err := l.Flush(ctx); err != nil {
		return SearchResult{}, fmt.Errorf("search evidence log: %w", err)
	}

	var res SearchResult
	err = l.db.View(func(tx *bolt.Tx) error {
		head, err := readHead(tx)
		if err != nil {
			return err
		}
		res.Size, res.Root = head.size, head.root
		s := &scan{ctx: ctx, m: m, limit: q.Limit, res: &res}
		if q.MessageID != "" {
			return s.indexes(tx.Bucket(bucketLeaves), messageIndexes(tx, q.MessageID, q.From), head.size)
		}
		return s.all(tx.Bucket(bucketLeaves), q.From, head.size)
	})
	if err != nil {
		return SearchResult{}, fmt.Errorf("search evidence log: %w", err)
	}
	return res, nil
}

// scan is one pass of Search over the leaves.
type scan struct {
	ctx   context.Context
	m     *matcher
	limit int
	res   *SearchResult
	seen  int
}

// all visits every leaf from index from up to size.
func (s *scan) all(leaves *bolt.Bucket, from, size uint64) error {
	c := leaves.Cursor()
	for k, v := c.Seek(key(from)); k != nil; k, v = c.Next() {
		if len(k) != 8 {
			return fmt.Errorf("leaf key of %d bytes", len(k))
		}
		n := binary.BigEndian.Uint64(k)
		if n >= size {
			return nil
		}
		if done, err := s.visit(n, v); done || err != nil {
			return err
		}
	}
	return nil
}

// indexes visits the leaves at indexes, in order, below size.
func (s *scan) indexes(leaves *bolt.Bucket, indexes iter.Seq[uint64], size uint64) error {
	for n := range indexes {
		if n >= size {
			return nil // the rest are newer than the head, in order
		}
		leaf := leaves.Get(key(n))
		if leaf == nil {
			return fmt.Errorf("record %d: %w", n, ErrNotFound)
		}
		if done, err := s.visit(n, leaf); done || err != nil {
			return err
		}
	}
	return nil
}

// visit adds leaf n to the result if it matches, and reports whether the
// scan is done: one match past the limit has been found.
func (s *scan) visit(n uint64, leaf []byte) (bool, error) {
	if s.seen++; s.seen%4096 == 0 {
		if err := s.ctx.Err(); err != nil {
			return true, err
		}
	}
	// proto.Unmarshal copies what it keeps, so the record outlives the
	// transaction.
	rec := new(evidencev1.Record)
	if err := proto.Unmarshal(leaf, rec); err != nil {
		return true, fmt.Errorf("record %d: parse: %w", n, err)
	}
	if !s.m.record(rec) {
		return false, nil
	}
	e := Entry{Index: n, Record: rec}
	h := new(exchangev1.Header)
	if proto.Unmarshal(rec.GetHeader(), h) == nil {
		e.Header = h
	}
	if !s.m.entry(e) {
		return false, nil
	}
	if len(s.res.Entries) == s.limit {
		s.res.More, s.res.Next = true, n
		return true, nil
	}
	s.res.Entries = append(s.res.Entries, e)
	return false, nil
}

// matcher holds a checked Query, ready to match records.
type matcher struct {
	q    Query
	peer id.Client
	// nodePrefix starts the SPIFFE ID path of the nodes of a peer member.
	nodePrefix string
}

func newMatcher(q Query) (*matcher, error) {
	peer, err := q.peer()
	if err != nil {
		return nil, err
	}
	return &matcher{q: q, peer: peer, nodePrefix: "node/" + peer.Class + "/" + peer.Code + "/"}, nil
}

// record matches the fields of the record itself, before its header is
// parsed.
func (m *matcher) record(rec *evidencev1.Record) bool {
	q := &m.q
	if q.Kind != evidencev1.RecordKind_RECORD_KIND_UNSPECIFIED && rec.GetKind() != q.Kind {
		return false
	}
	if q.Code != nil && rec.GetCode() != int32(*q.Code) {
		return false
	}
	if q.Since.IsZero() && q.Until.IsZero() {
		return true
	}
	if rec.GetRecordedAt() == nil {
		return false
	}
	t := rec.GetRecordedAt().AsTime()
	return !t.Before(q.Since) && (q.Until.IsZero() || t.Before(q.Until))
}

// entry matches the fields that need the header.
func (m *matcher) entry(e Entry) bool {
	q := &m.q
	if q.Service != "" && e.Header.GetService() != q.Service {
		return false
	}
	if q.PayloadSHA256 != nil && !bytes.Equal(e.Header.GetPayloadSha256(), q.PayloadSHA256) {
		return false
	}
	if q.MessageID != "" && e.Record.GetMessageId() != q.MessageID {
		return false
	}
	return q.Peer == "" || m.peerMatches(e)
}

// peerMatches reports whether the query's peer is the record's
// counterparty, or a member that owns the record's peer node.
func (m *matcher) peerMatches(e Entry) bool {
	if party := e.Counterparty(); party != "" && strings.HasPrefix(party+"/", m.q.Peer+"/") {
		return true
	}
	if m.peer.Subsystem != "" {
		return false
	}
	// A node's SPIFFE ID is spiffe://TRUST-DOMAIN/node/CLASS/CODE/NAME,
	// without the instance: a node talks to its own federation alone.
	// Compared as a string, since a scan does this for every record.
	rest, ok := strings.CutPrefix(e.Record.GetPeer(), "spiffe://")
	if !ok {
		return false
	}
	_, path, _ := strings.Cut(rest, "/")
	name, ok := strings.CutPrefix(path, m.nodePrefix)
	return ok && name != "" && !strings.Contains(name, "/")
}

// Counterparty returns the member or subsystem on the other side of the
// exchange, as the signed header names it: the subsystem of the header's
// service in the records of a consumer node (request sent, response
// received, failed), the header's client in those of a provider node
// (request received, response sent). A refusal's counterparty is the other
// side of the message it refused: the sender of a message the node
// received (the client of a request, the service of a response), and the
// service a call was for when the node refused its own call before
// sending it ([Entry.RefusedBeforeSending]). It is "" when the header does
// not parse, or the record does not say which side the node was on.
func (e Entry) Counterparty() string {
	h := e.Header
	if h == nil {
		return ""
	}
	provider := func() string {
		// A service identifier is a subsystem, then the gRPC service name,
		// which contains no slash.
		s := h.GetService()
		if i := strings.LastIndexByte(s, '/'); i > 0 {
			return s[:i]
		}
		return ""
	}
	switch e.Record.GetKind() {
	case evidencev1.RecordKind_RECORD_KIND_REQUEST_SENT,
		evidencev1.RecordKind_RECORD_KIND_RESPONSE_RECEIVED,
		evidencev1.RecordKind_RECORD_KIND_FAILED:
		return provider()
	case evidencev1.RecordKind_RECORD_KIND_REQUEST_RECEIVED,
		evidencev1.RecordKind_RECORD_KIND_RESPONSE_SENT:
		return h.GetClient()
	case evidencev1.RecordKind_RECORD_KIND_REFUSED:
		// Requests come from clients and responses from services, so the
		// sender of a refused request is the client unless the request
		// is this node's own.
		own := e.RefusedBeforeSending()
		switch h.GetDirection() {
		case exchangev1.Direction_DIRECTION_REQUEST:
			if own {
				return provider()
			}
			return h.GetClient()
		case exchangev1.Direction_DIRECTION_RESPONSE:
			if own {
				return h.GetClient()
			}
			return provider()
		}
	}
	return ""
}

// RefusedBeforeSending reports whether e records a message of the node's
// own that it refused before signing it: a refusal, without a signature,
// whose header names the record's node as its sender. A consumer node
// records so the calls it refuses before anything leaves it (no
// configuration, unknown service or method, a first message too large or
// one too many), with the header of what the call asked for.
func (e Entry) RefusedBeforeSending() bool {
	r := e.Record
	return r.GetKind() == evidencev1.RecordKind_RECORD_KIND_REFUSED && e.Header != nil &&
		!r.GetSignatureVerified() && len(r.GetSignature()) == 0 && r.GetBatch() == nil &&
		r.GetNode() != "" && e.Header.GetSenderNode() == r.GetNode()
}
