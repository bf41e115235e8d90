package evidence

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"time"

	bolt "go.etcd.io/bbolt"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/ketnoi/ketnoi/internal/logging"
	evidencev1 "github.com/ketnoi/ketnoi/proto/ketnoi/evidence/v1"
)

// maxDetailBytes caps the bad record attached to a failed VerifyLog: the
// detail travels in the trailers, whose size the client limits.
const maxDetailBytes = 64 << 10

// SearchRecords returns at most maxSearchLimit records per response.
// Both it and TraceMessage end a response, for the caller to continue
// from next_index, before its records pass maxResponseBytes; the first
// record always goes, since it cannot be split: one record can be larger
// than gRPC's default 4 MiB (a signed header whose status message or
// metadata fills a node's max_message_bytes), and clients of the service
// must accept one such record plus maxResponseBytes.
const (
	maxSearchLimit   = 1000
	maxResponseBytes = 2 << 20
)

// service serves a log over gRPC; see NewService.
type service struct {
	evidencev1.UnimplementedEvidenceServiceServer

	log   *Log
	roots *x509.CertPool
	// verifying holds one token per running VerifyLog: a pass reads the
	// whole log and checks every signature, so passes run one at a time.
	verifying chan struct{}
}

// NewService returns the read-only gRPC service over l, for the node's
// admin endpoint. VerifyLog checks signer certificates against roots, the
// node's trust bundle; nil roots skips that check. Errors are logged with
// the log's logger.
func NewService(l *Log, roots *x509.CertPool) evidencev1.EvidenceServiceServer {
	return &service{log: l, roots: roots, verifying: make(chan struct{}, 1)}
}

// TraceMessage implements evidencev1.EvidenceServiceServer.
func (s *service) TraceMessage(
	ctx context.Context,
	req *evidencev1.TraceMessageRequest,
) (*evidencev1.TraceMessageResponse, error) {
	id := req.GetMessageId()
	switch {
	case id == "":
		return nil, status.Error(codes.InvalidArgument, "message id is empty")
	case len(id) > maxIndexedID:
		return nil, status.Errorf(codes.InvalidArgument,
			"message id of %d bytes is longer than the %d bytes the log indexes", len(id), maxIndexedID)
	}

	entries, next, more, err := s.log.MessagePage(id, req.GetFromIndex(), maxResponseBytes)
	if err != nil {
		return nil, s.traceFailed(ctx, id, err)
	}
	if len(entries) == 0 {
		if req.GetFromIndex() > 0 {
			return nil, status.Errorf(codes.NotFound, "no records for message %s from index %d", id, req.GetFromIndex())
		}
		return nil, status.Errorf(codes.NotFound, "no records for message %s", id)
	}
	// Read after the records: the head committed with the newest of them
	// is on disk by now, so every returned index is below its size.
	head, err := s.storedHead()
	if err != nil {
		return nil, s.traceFailed(ctx, id, err)
	}

	resp := &evidencev1.TraceMessageResponse{TreeSize: head.size, TreeRoot: head.root[:]}
	var page responsePage
	for _, e := range entries {
		tr, err := s.traced(e)
		if err != nil {
			return nil, s.traceFailed(ctx, id, err)
		}
		if !page.fits(tr) {
			resp.NextIndex = proto.Uint64(e.Index)
			return resp, nil
		}
		resp.Records = append(resp.Records, tr)
	}
	if more {
		resp.NextIndex = proto.Uint64(next)
	}
	return resp, nil
}

// responsePage adds up the size of the records of one response.
type responsePage struct {
	size, records int
}

// fits reports whether tr may join the response, and counts it if so: the
// first record always does, later ones while the records stay within
// maxResponseBytes.
func (p *responsePage) fits(tr *evidencev1.TracedRecord) bool {
	// The field's tag and length prefix take at most 6 bytes.
	size := p.size + proto.Size(tr) + 6
	if p.records > 0 && size > maxResponseBytes {
		return false
	}
	p.size, p.records = size, p.records+1
	return true
}

// VerifyLog implements evidencev1.EvidenceServiceServer.
func (s *service) VerifyLog(
	ctx context.Context,
	_ *evidencev1.VerifyLogRequest,
) (*evidencev1.VerifyLogResponse, error) {
	select {
	case s.verifying <- struct{}{}:
		defer func() { <-s.verifying }()
	case <-ctx.Done():
		return nil, status.FromContextError(ctx.Err()).Err()
	}

	rep, err := s.log.Verify(ctx, s.roots)
	if err != nil {
		return nil, s.verifyStatus(ctx, err)
	}
	return &evidencev1.VerifyLogResponse{
		TreeSize:                 rep.Size,
		TreeRoot:                 rep.Root[:],
		SignaturesChecked:        uint64(rep.SignaturesChecked),
		CertificateChainsChecked: s.roots != nil,
		UnsignedRecords:          uint64(rep.Unsigned),
		UnsignedRefusals:         uint64(rep.UnsignedRefusals),
	}, nil
}

// SearchRecords implements evidencev1.EvidenceServiceServer.
func (s *service) SearchRecords(
	ctx context.Context,
	req *evidencev1.SearchRecordsRequest,
) (*evidencev1.SearchRecordsResponse, error) {
	q, err := searchQuery(req)
	if err == nil {
		err = q.Check()
	}
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}

	res, err := s.log.Search(ctx, q)
	if err != nil {
		if ctx.Err() != nil && errors.Is(err, ctx.Err()) {
			return nil, status.FromContextError(ctx.Err()).Err()
		}
		s.log.logger.ErrorContext(ctx, "evidence search failed", slog.Any(logging.KeyError, err))
		return nil, status.Error(codes.Internal, "evidence log could not be read")
	}

	resp := &evidencev1.SearchRecordsResponse{TreeSize: res.Size, TreeRoot: res.Root[:]}
	var page responsePage
	for _, e := range res.Entries {
		tr := &evidencev1.TracedRecord{Index: e.Index, Record: e.Record}
		if !page.fits(tr) {
			resp.NextIndex = proto.Uint64(e.Index)
			return resp, nil
		}
		resp.Records = append(resp.Records, tr)
	}
	if res.More {
		resp.NextIndex = proto.Uint64(res.Next)
	}
	return resp, nil
}

// searchQuery converts a request to a Query, capping its limit. Errors
// wrap ErrBadQuery.
func searchQuery(req *evidencev1.SearchRecordsRequest) (Query, error) {
	q := Query{
		Peer:          req.GetPeer(),
		Service:       req.GetService(),
		PayloadSHA256: req.GetPayloadSha256(),
		MessageID:     req.GetMessageId(),
		Kind:          req.GetKind(),
		From:          req.GetFromIndex(),
		Limit:         int(min(req.GetLimit(), maxSearchLimit)),
	}
	if len(q.PayloadSHA256) == 0 {
		// An empty field is an unset filter, not a digest of 0 bytes.
		q.PayloadSHA256 = nil
	}
	if req.Code != nil {
		if c := req.GetCode(); c < 0 {
			return Query{}, fmt.Errorf("%w: code %d is not a gRPC code", ErrBadQuery, c)
		}
		c := codes.Code(uint32(req.GetCode()))
		q.Code = &c
	}
	var err error
	if q.Since, err = queryTime("since", req.GetSince()); err != nil {
		return Query{}, err
	}
	if q.Until, err = queryTime("until", req.GetUntil()); err != nil {
		return Query{}, err
	}
	return q, nil
}

// queryTime converts the time filter name; nil leaves it open.
func queryTime(name string, ts *timestamppb.Timestamp) (time.Time, error) {
	if ts == nil {
		return time.Time{}, nil
	}
	// CheckValid's message varies on purpose; say what is wrong here.
	if ts.CheckValid() != nil {
		return time.Time{}, fmt.Errorf("%w: %s: seconds %d and nanos %d are not a time "+
			"from year 1 to 9999", ErrBadQuery, name, ts.GetSeconds(), ts.GetNanos())
	}
	return ts.AsTime(), nil
}

// verifyStatus converts an error of Log.Verify to the status returned.
// Every error but the context's means the stored log is not what was
// written, hence DATA_LOSS.
func (s *service) verifyStatus(ctx context.Context, err error) error {
	if ctx.Err() != nil && errors.Is(err, ctx.Err()) {
		return status.FromContextError(ctx.Err()).Err()
	}
	var verr *VerifyError
	if !errors.As(err, &verr) {
		s.log.logger.ErrorContext(ctx, "evidence log failed verification",
			slog.Any(logging.KeyError, err))
		return status.Error(codes.DataLoss, err.Error())
	}

	s.log.logger.ErrorContext(ctx, "evidence log failed verification",
		slog.Uint64(logging.KeyIndex, verr.Index), slog.String(logging.KeyReason, verr.Reason))
	st := status.New(codes.DataLoss, verr.Error())
	// The bad record helps the operator; a record that cannot be read or
	// is too large for the trailers is left out.
	e, err := s.log.Entry(verr.Index)
	if err != nil {
		return st.Err()
	}
	tr, err := s.traced(e)
	if err != nil || proto.Size(tr) > maxDetailBytes {
		return st.Err()
	}
	if withDetail, err := st.WithDetails(tr); err == nil {
		st = withDetail
	}
	return st.Err()
}

// traced returns e with its signer certificate, if the log has it.
func (s *service) traced(e Entry) (*evidencev1.TracedRecord, error) {
	tr := &evidencev1.TracedRecord{Index: e.Index, Record: e.Record}
	sum := e.Header.GetSignerCertificateSha256()
	if len(sum) == 0 {
		return tr, nil
	}
	der, err := s.log.Certificate(sum)
	switch {
	case errors.Is(err, ErrNotFound):
	case err != nil:
		return nil, fmt.Errorf("record %d: %w", e.Index, err)
	default:
		tr.SignerCertificate = der
	}
	return tr, nil
}

// storedHead reads the committed tree head from the file.
func (s *service) storedHead() (*treeHead, error) {
	var head *treeHead
	err := s.log.db.View(func(tx *bolt.Tx) error {
		var err error
		head, err = readHead(tx)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("read tree head: %w", err)
	}
	return head, nil
}

// traceFailed logs why the trace of message id failed and returns an
// INTERNAL status that does not reveal it.
func (s *service) traceFailed(ctx context.Context, id string, err error) error {
	s.log.logger.ErrorContext(ctx, "evidence trace failed",
		slog.String(logging.KeyMessageID, id), slog.Any(logging.KeyError, err))
	return status.Error(codes.Internal, "evidence log could not be read")
}
