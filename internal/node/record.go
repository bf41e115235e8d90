package node

import (
	"context"
	"crypto/x509"
	"log/slog"
	"sync"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/ketnoi/ketnoi/internal/evidence"
	"github.com/ketnoi/ketnoi/internal/exchange"
	"github.com/ketnoi/ketnoi/internal/logging"
	evidencev1 "github.com/ketnoi/ketnoi/proto/ketnoi/evidence/v1"
	exchangev1 "github.com/ketnoi/ketnoi/proto/ketnoi/exchange/v1"
	spb "google.golang.org/genproto/googleapis/rpc/status"
)

// startRecord hands a record to the evidence writer without waiting; the
// caller must awaitRecord before acting on the message.
func (n *Node) startRecord(ctx context.Context, kind evidencev1.RecordKind, sh *exchangev1.SignedHeader, msgID, peer string,
	verified bool, code codes.Code, reason string, cert []byte) (*evidence.Receipt, error) {
	rs, err := n.startRecords(ctx, msgID, n.newRecord(kind, sh, msgID, peer, verified, code, reason, cert))
	if err != nil {
		return nil, err
	}
	return rs[0], nil
}

// pendingRecord is a record built but not yet handed to the evidence log,
// with its signer certificate. With sign set, the evidence writer signs
// the record's header along with the other headers of its commit.
type pendingRecord struct {
	rec  *evidencev1.Record
	cert []byte
	sign bool
}

func (n *Node) newRecord(kind evidencev1.RecordKind, sh *exchangev1.SignedHeader, msgID, peer string,
	verified bool, code codes.Code, reason string, cert []byte) pendingRecord {
	return pendingRecord{cert: cert, rec: &evidencev1.Record{
		Kind:              kind,
		RecordedAt:        timestamppb.New(n.now()),
		MessageId:         msgID,
		Node:              n.self.String(),
		Peer:              peer,
		Header:            sh.GetHeader(),
		Signature:         sh.GetSignature(),
		SignatureVerified: verified,
		Code:              int32(code),
		Reason:            reason,
		Batch:             sh.GetBatch(),
	}}
}

// outgoing is a frame this node sends: its header is complete, and its
// signature comes from the evidence writer, which signs the headers of one
// commit together (one signature per commit, however many exchanges share
// it).
type outgoing struct {
	header  *exchangev1.Header
	raw     []byte // the exact header bytes to sign
	digest  []byte
	payload []byte
}

// prepareOutgoing completes h for payload and refuses, before anything is
// recorded, a frame the peer would not accept: a message within the limit
// can still be pushed over it by its metadata.
func (n *Node) prepareOutgoing(h *exchangev1.Header, payload []byte, hasMsg bool) (*outgoing, error) {
	raw, digest, err := exchange.Prepare(n.signer, h, payload, hasMsg, n.now())
	if err != nil {
		return nil, status.Errorf(codes.Internal, "prepare header: %v", err)
	}
	if err := n.checkWireSize(exchange.SealedSize(raw, payload)); err != nil {
		return nil, err
	}
	return &outgoing{header: h, raw: raw, digest: digest, payload: payload}, nil
}

// record is the evidence record of an outgoing frame, to be signed by the
// evidence writer.
func (o *outgoing) record(n *Node, kind evidencev1.RecordKind, peer string, code codes.Code) pendingRecord {
	pr := n.newRecord(kind, &exchangev1.SignedHeader{Header: o.raw}, o.header.GetMessageId(), peer, true, code, "",
		n.signer.Certificate().Raw)
	pr.sign = true
	return pr
}

// sealed returns the frame once the evidence writer has signed its header.
func (o *outgoing) sealed(ctx context.Context, n *Node, r *evidence.Receipt) (*exchange.Sealed, error) {
	sh, err := r.Signed(context.WithoutCancel(ctx))
	if err != nil {
		return nil, n.evidenceFailed(ctx, o.header.GetMessageId(), err)
	}
	return exchange.Assemble(o.header, o.digest, sh, o.payload), nil
}

// recordNow appends one built record and returns only once it is durable.
// A failure is returned as a status that stops the exchange: no exchange
// proceeds without its evidence. The append is not cancelled with the call,
// so a message already on its way is always recorded.
func (n *Node) recordNow(ctx context.Context, msgID string, pr pendingRecord) error {
	rs, err := n.startRecords(ctx, msgID, pr)
	if err != nil {
		return err
	}
	_, err = n.awaitRecord(ctx, rs[0], msgID)
	return err
}

// refusalRecord builds the record of a frame that failed a check: the
// header as received, whether its signature verified, and which check
// failed.
func (n *Node) refusalRecord(o *exchange.Opened, msgID, peer string, perr *exchange.Error) pendingRecord {
	var cert []byte
	if o.Signer != nil {
		cert = o.Signer.Raw
	}
	return n.newRecord(evidencev1.RecordKind_RECORD_KIND_REFUSED, o.Frame.GetSignedHeader(), msgID, peer,
		o.Verified, perr.Code, perr.Reason+": "+perr.Msg, cert)
}

// startRecords hands records to the evidence writer to be committed in one
// transaction.
func (n *Node) startRecords(ctx context.Context, msgID string, prs ...pendingRecord) ([]*evidence.Receipt, error) {
	items := make([]evidence.Item, len(prs))
	for i, pr := range prs {
		items[i] = evidence.Item{Record: pr.rec, SignerCert: pr.cert, Sign: pr.sign}
	}
	rs, err := n.evidence.StartItems(context.WithoutCancel(ctx), items...)
	if err != nil {
		return nil, n.evidenceFailed(ctx, msgID, err)
	}
	return rs, nil
}

// withDeferred starts pr, preceded by *deferred when a request record was
// held back (evidence_order: overlap), in one commit. It returns the
// receipt of pr and, if there was one, of the deferred record.
func (n *Node) withDeferred(ctx context.Context, msgID string, deferred **pendingRecord, pr pendingRecord) (rec, req *evidence.Receipt, err error) {
	if *deferred == nil {
		rs, err := n.startRecords(ctx, msgID, pr)
		if err != nil {
			return nil, nil, err
		}
		return rs[0], nil, nil
	}
	rs, err := n.startRecords(ctx, msgID, **deferred, pr)
	*deferred = nil
	if err != nil {
		return nil, nil, err
	}
	return rs[1], rs[0], nil
}

// durableOnce returns a function that waits until a started record is
// durable and can be called any number of times, from any goroutine: a
// first request record still committing (evidence_order: overlap) gates
// both the later request messages and the first response.
func (n *Node) durableOnce(ctx context.Context, r *evidence.Receipt, msgID string) func() error {
	return sync.OnceValue(func() error {
		_, err := n.awaitRecord(ctx, r, msgID)
		return err
	})
}

// awaitRecord waits until a started record is durable.
func (n *Node) awaitRecord(ctx context.Context, r *evidence.Receipt, msgID string) (uint64, error) {
	index, err := r.Wait(context.WithoutCancel(ctx))
	if err != nil {
		return 0, n.evidenceFailed(ctx, msgID, err)
	}
	return index, nil
}

func (n *Node) evidenceFailed(ctx context.Context, msgID string, err error) error {
	n.log.ErrorContext(ctx, "evidence append failed; exchange stopped", logging.BoundedString(logging.KeyMessageID, msgID),
		slog.Any(logging.KeyError, err))
	return exchange.Errorf(codes.Unavailable, exchange.ReasonEvidenceUnavailable,
		"evidence log unavailable; exchange stopped").Status(n.self.String()).Err()
}

// certLookup finds registered signing certificates in the current
// configuration.
func (n *Node) certLookup() exchange.CertLookup {
	v := n.gconf.Current()
	return func(sum []byte) (*x509.Certificate, string, bool) {
		if v == nil {
			return nil, "", false
		}
		return v.SigningCertificate(sum)
	}
}

func cloneHeader(h *exchangev1.Header) *exchangev1.Header {
	return proto.Clone(h).(*exchangev1.Header)
}

// statusFromHeader rebuilds the call status a provider signed.
func statusFromHeader(h *exchangev1.Header) *status.Status {
	cs := h.GetStatus()
	return status.FromProto(&spb.Status{Code: cs.GetCode(), Message: cs.GetMessage(), Details: cs.GetDetails()})
}

// checkFrameSize refuses, before anything is recorded, a frame the peer
// would not accept: a message within the limit can still be pushed over it
// by its metadata.
func (n *Node) checkFrameSize(sealed *exchange.Sealed) error {
	return n.checkWireSize(exchange.WireSize(sealed.Frame))
}

// checkWireSize refuses a message of size bytes between nodes when the
// peer would not accept it.
func (n *Node) checkWireSize(size int) error {
	if size > n.frameLimit() {
		return exchange.Errorf(codes.ResourceExhausted, exchange.ReasonMessageTooLarge,
			"message with its signed header and metadata is %d bytes, over the limit of %d (max_message_bytes %d plus %d for the header)",
			size, n.frameLimit(), n.cfg.MaxMessageBytes, headerAllowance).
			Status(n.self.String()).Err()
	}
	return nil
}
