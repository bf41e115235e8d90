package node

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"strings"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/ketnoi/ketnoi/internal/evidence"
	"github.com/ketnoi/ketnoi/internal/exchange"
	"github.com/ketnoi/ketnoi/internal/gconf"
	"github.com/ketnoi/ketnoi/internal/id"
	"github.com/ketnoi/ketnoi/internal/logging"
	"github.com/ketnoi/ketnoi/internal/mtls"
	"github.com/ketnoi/ketnoi/internal/proxy"
	evidencev1 "github.com/ketnoi/ketnoi/proto/ketnoi/evidence/v1"
	exchangev1 "github.com/ketnoi/ketnoi/proto/ketnoi/exchange/v1"
	registryv1 "github.com/ketnoi/ketnoi/proto/ketnoi/registry/v1"
)

// provider serves the federation endpoint: exchanges other nodes start for
// services this node provides.
type provider struct {
	exchangev1.UnimplementedFederationServiceServer
	n *Node
}

// serve is the state of one incoming exchange.
type serve struct {
	n        *Node
	stream   exchangev1.FederationService_ExchangeServer
	peer     string
	request  *exchangev1.Header // first request header
	first    []byte             // its digest
	svc      *registryv1.Service
	method   *registryv1.Method
	reqChain exchange.Chain
	resChain exchange.Chain
	// abort holds the check a later request frame failed; the call then
	// ends with that status instead of the backend's cancellation.
	abort atomic.Pointer[exchange.Error]
	// reqDurable waits for the first request's record while it may still be
	// committing (evidence_order: overlap): no response frame and no later
	// request message moves on before it is durable.
	reqDurable func() error
	// deferred is the first request's record of a unary call held back to
	// be committed with the response's (evidence_order: overlap).
	deferred *pendingRecord
	// signer is the member that signed the first request frame; every
	// later one must be signed by it too.
	signer string
}

// flushDeferred records a held-back request record when the call ended
// without a response that carried it.
func (s *serve) flushDeferred(ctx context.Context) {
	if s.deferred == nil {
		return
	}
	msgID := s.deferred.rec.GetMessageId()
	pr := *s.deferred
	s.deferred = nil
	_ = s.n.recordNow(ctx, msgID, pr)
}

func (p *provider) Exchange(stream exchangev1.FederationService_ExchangeServer) error {
	n := p.n
	n.active.Add(1)
	defer n.active.Add(-1)
	ctx := stream.Context()
	peerID, err := mtls.PeerID(ctx)
	if err != nil {
		return status.Error(codes.Unauthenticated, "no authenticated peer node")
	}
	req, err := stream.Recv()
	if err != nil {
		return err
	}
	s := &serve{n: n, stream: stream, peer: peerID.String()}
	o, perr := exchange.Open(req.GetFrame(), n.certLookup(), n.verifier)
	if o.Header != nil {
		// The id the header claims, verified or not: it is the id the
		// evidence record of this exchange, or of its refusal, is under.
		logging.SetMessageID(ctx, o.Header.GetMessageId())
	}
	if o.Verified {
		// The call log names the shape the signed request declares, also
		// when the request is refused.
		setLogKind(ctx, o.Header.GetCallKind())
	}
	if perr == nil {
		perr = s.admit(o)
	}
	if perr != nil {
		return s.refuse(ctx, o, perr)
	}
	pr := n.newRecord(evidencev1.RecordKind_RECORD_KIND_REQUEST_RECEIVED, o.Frame.GetSignedHeader(),
		o.Header.GetMessageId(), s.peer, true, codes.OK, "", o.Signer.Raw)
	switch {
	case n.cfg.EvidenceOrder == EvidenceOverlap && o.Header.GetCallKind() == exchangev1.CallKind_CALL_KIND_UNARY:
		// The record is committed together with the response's, before
		// the response leaves: one commit for the exchange on this node.
		s.deferred = &pr
		defer s.flushDeferred(ctx)
	case n.cfg.EvidenceOrder == EvidenceOverlap:
		// The backend works while the record commits; no response leaves
		// before it is durable.
		rs, err := n.startRecords(ctx, o.Header.GetMessageId(), pr)
		if err != nil {
			return err
		}
		s.reqDurable = n.durableOnce(ctx, rs[0], o.Header.GetMessageId())
	default:
		if err := n.recordNow(ctx, o.Header.GetMessageId(), pr); err != nil {
			return err
		}
	}
	s.reqChain.Advance(o.Digest)
	return s.forward(ctx, o)
}

// admit runs every check of the first request frame: who signed it, for
// whom, whether it is fresh and new, and whether a grant allows it.
func (s *serve) admit(o *exchange.Opened) *exchange.Error {
	n := s.n
	h := o.Header
	s.request, s.first = h, o.Digest
	v := n.gconf.Current()
	if v == nil || v.Expired(n.now()) {
		return exchange.Errorf(codes.Unavailable, exchange.ReasonConfigExpired, "provider node has no valid global configuration")
	}
	peerNode, ok := v.Node(s.peer)
	if !ok {
		return exchange.Errorf(codes.PermissionDenied, exchange.ReasonPeerMismatch, "peer %s is not a registered node", s.peer)
	}
	client, err := id.ParseClient(h.GetClient())
	switch {
	case h.GetDirection() != exchangev1.Direction_DIRECTION_REQUEST || h.GetSequence() != 0 || len(h.GetPreviousDigest()) != 0:
		return exchange.Errorf(codes.InvalidArgument, exchange.ReasonSequence, "first frame must be request #0")
	case o.SignerMember != peerNode.GetMember():
		return exchange.Errorf(codes.Unauthenticated, exchange.ReasonSignerMismatch,
			"request signed by member %s but sent by node %s of member %s", o.SignerMember, s.peer, peerNode.GetMember())
	case h.GetSenderNode() != s.peer:
		return exchange.Errorf(codes.Unauthenticated, exchange.ReasonPeerMismatch,
			"header names sender %s but the connection is from %s", h.GetSenderNode(), s.peer)
	case h.GetAudienceNode() != n.self.String():
		return exchange.Errorf(codes.Unauthenticated, exchange.ReasonAudience,
			"request is addressed to %s, not to this node", h.GetAudienceNode())
	case err != nil:
		return exchange.Errorf(codes.InvalidArgument, exchange.ReasonHeaderMalformed, "client: %v", err)
	case client.Member.String() != o.SignerMember:
		return exchange.Errorf(codes.Unauthenticated, exchange.ReasonSignerMismatch,
			"client %s does not belong to signing member %s", h.GetClient(), o.SignerMember)
	}
	if skew := n.now().Sub(h.GetCreatedAt().AsTime()); skew > n.cfg.ClockSkew || skew < -n.cfg.ClockSkew {
		return exchange.Errorf(codes.InvalidArgument, exchange.ReasonStale,
			"request created at %s is outside the accepted clock skew of %s", h.GetCreatedAt().AsTime().UTC().Format(time.RFC3339), n.cfg.ClockSkew)
	}
	if now := n.now(); !n.replay.add(h.GetMessageId(), now) || (!n.replay.complete(now) && n.seen(h.GetMessageId())) {
		return exchange.Errorf(codes.AlreadyExists, exchange.ReasonReplay, "message %s was already received", h.GetMessageId())
	}

	svc, ok := v.Service(h.GetService())
	if !ok {
		return exchange.Errorf(codes.NotFound, exchange.ReasonServiceUnknown, "service %s is not registered", h.GetService())
	}
	if _, ok := n.backend[svc.GetId()]; !ok {
		return exchange.Errorf(codes.Unimplemented, exchange.ReasonServiceNotServed, "service %s is not served by this node", svc.GetId())
	}
	m, ok := gconf.Method(svc, h.GetMethod())
	if !ok {
		return exchange.Errorf(codes.Unimplemented, exchange.ReasonMethodUnknown, "service %s has no method %s", svc.GetId(), h.GetMethod())
	}
	if h.GetCallKind() != callKind(m) {
		return exchange.Errorf(codes.InvalidArgument, exchange.ReasonHeaderMalformed,
			"call kind %s does not match method %s", h.GetCallKind(), h.GetMethod())
	}
	if !m.GetClientStreaming() && !h.GetFinal() {
		return exchange.Errorf(codes.InvalidArgument, exchange.ReasonHeaderMalformed,
			"method %s takes one request message; the first frame must close the request", h.GetMethod())
	}
	if h.GetClassification() != svc.GetClassification() {
		return exchange.Errorf(codes.InvalidArgument, exchange.ReasonHeaderMalformed,
			"header classifies the exchange %s, the service is %s", h.GetClassification(), svc.GetClassification())
	}
	if !v.HasClient(client) {
		return exchange.Errorf(codes.PermissionDenied, exchange.ReasonClientUnknown, "client %s is not registered", client)
	}
	if _, err := v.Authorize(client, svc.GetId(), m.GetName(), h.GetPurpose(), n.now()); err != nil {
		return exchange.Errorf(codes.PermissionDenied, exchange.ReasonGrantMissing, "%v", err)
	}
	s.svc, s.method, s.signer = svc, m, o.SignerMember
	return nil
}

// seen reports whether the evidence log already holds a record of a
// message id: the replay cache starts empty after a restart, the log does
// not.
func (n *Node) seen(msgID string) bool {
	found, err := n.evidence.HasMessage(msgID)
	return err == nil && found
}

// refuse records a refused request and answers it with a signed final
// response carrying the refusal, so both sides can prove what happened.
func (s *serve) refuse(ctx context.Context, o *exchange.Opened, perr *exchange.Error) error {
	n := s.n
	msgID := ""
	if o.Header != nil {
		msgID = o.Header.GetMessageId()
	}
	// The message id and the detail repeat what the peer's header says.
	n.log.WarnContext(ctx, "exchange refused", logging.BoundedString(logging.KeyMessageID, msgID),
		slog.String(logging.KeyPeer, s.peer), slog.String(logging.KeyReason, perr.Reason),
		logging.BoundedString(logging.KeyDetail, perr.Msg))
	if err := n.recordNow(ctx, msgID, n.refusalRecord(o, msgID, s.peer, perr)); err != nil {
		return err
	}
	st := perr.Status(n.self.String())
	if o.Header == nil {
		return st.Err()
	}
	s.request, s.first = o.Header, o.Digest
	return s.send(ctx, nil, false, true, nil, nil, st)
}

// forward opens the backend call and relays both directions.
func (s *serve) forward(ctx context.Context, o *exchange.Opened) error {
	n := s.n
	h := o.Header
	md := fromEntries(h.GetMetadata())
	md.Set(MDClient, h.GetClient())
	md.Set(MDMessageID, h.GetMessageId())
	md.Set(MDService, h.GetService())
	for k, v := range map[string]string{MDPurpose: h.GetPurpose(), MDUser: h.GetUser(), MDIssue: h.GetIssue()} {
		if v != "" {
			md.Set(k, v)
		}
	}
	conn, err := n.backends.get("", n.backend[s.svc.GetId()])
	if err != nil {
		return s.backendFailed(ctx, err)
	}
	bctx, cancel := backendContext(metadata.NewOutgoingContext(ctx, md), n.cfg.DeadlineMargin)
	defer cancel()
	desc := &grpc.StreamDesc{ServerStreams: true, ClientStreams: true}
	bs, err := conn.NewStream(bctx, desc, "/"+s.svc.GetGrpcService()+"/"+s.method.GetName())
	if err != nil {
		return s.backendFailed(ctx, err)
	}
	if s.method.GetClientStreaming() || s.method.GetServerStreaming() {
		// A stream can run for hours; a unary call was authorised a
		// moment ago and ends with its one response.
		go s.watchAuthority(ctx, cancel)
	}
	if err := s.toBackend(bs, o); err != nil {
		cancel()
		return s.relay(ctx, bs)
	}
	if !h.GetFinal() {
		first := s.reqDurable
		go func() {
			if err := s.pumpRequests(ctx, bs, first); err != nil {
				n.log.WarnContext(ctx, "request stream ended",
					logging.BoundedString(logging.KeyMessageID, h.GetMessageId()),
					logging.BoundedString(logging.KeyError, err.Error()))
				var perr *exchange.Error
				if errors.As(err, &perr) {
					s.abort.Store(perr)
				}
				cancel()
			}
		}()
	}
	return s.relay(ctx, bs)
}

func (s *serve) toBackend(bs grpc.ClientStream, o *exchange.Opened) error {
	if o.Header.GetHasMessage() {
		if err := bs.SendMsg(proxy.NewFrame(o.Frame.GetPayload())); err != nil {
			return err
		}
	}
	if o.Header.GetFinal() {
		return bs.CloseSend()
	}
	return nil
}

// pumpRequests verifies, records and forwards the further request frames
// of a client stream; each reaches the backend once its record is durable,
// while the next frames are verified.
func (s *serve) pumpRequests(ctx context.Context, bs grpc.ClientStream, first func() error) error {
	n := s.n
	p := newPipeline(ctx, n, pipelineDepth)
	for {
		req, err := s.stream.Recv()
		if err != nil {
			_ = p.close()
			return err
		}
		o, perr := exchange.Open(req.GetFrame(), n.certLookup(), n.verifier)
		if perr == nil {
			perr = s.follows(o)
		}
		if perr != nil {
			if cerr := p.close(); cerr != nil {
				return cerr
			}
			_ = n.recordNow(ctx, s.request.GetMessageId(), n.refusalRecord(o, s.request.GetMessageId(), s.peer, perr))
			return perr
		}
		r, err := n.startRecord(ctx, evidencev1.RecordKind_RECORD_KIND_REQUEST_RECEIVED, req.GetFrame().GetSignedHeader(),
			s.request.GetMessageId(), s.peer, true, codes.OK, "", o.Signer.Raw)
		if err == nil {
			err = p.push(step{receipt: r, msgID: s.request.GetMessageId(), last: o.Header.GetFinal(),
				send: func(uint64) error {
					if first != nil {
						if err := first(); err != nil {
							return err
						}
					}
					return s.toBackend(bs, o)
				}})
		}
		if err != nil || o.Header.GetFinal() {
			if cerr := p.close(); err == nil {
				err = cerr
			}
			return err
		}
	}
}

// follows checks that a later request frame belongs to this exchange.
func (s *serve) follows(o *exchange.Opened) *exchange.Error {
	h := o.Header
	if h.GetMessageId() != s.request.GetMessageId() || h.GetDirection() != exchangev1.Direction_DIRECTION_REQUEST ||
		h.GetClient() != s.request.GetClient() || h.GetService() != s.request.GetService() ||
		h.GetMethod() != s.request.GetMethod() || h.GetSenderNode() != s.peer ||
		h.GetAudienceNode() != s.request.GetAudienceNode() {
		return exchange.Errorf(codes.InvalidArgument, exchange.ReasonBinding,
			"request frame does not belong to exchange %s", s.request.GetMessageId())
	}
	if o.SignerMember != s.signer {
		return exchange.Errorf(codes.Unauthenticated, exchange.ReasonSignerMismatch,
			"request frame signed by member %s, the exchange by %s", o.SignerMember, s.signer)
	}
	if perr := s.reqChain.Check(h, o.Digest); perr != nil {
		return perr
	}
	return nil
}

// relay signs, records and sends the backend's response messages and its
// final status.
func (s *serve) relay(ctx context.Context, bs grpc.ClientStream) error {
	hdr, _ := bs.Header()
	headers := toEntries(hdr)
	if !s.method.GetServerStreaming() {
		return s.relayUnary(ctx, bs, headers)
	}
	// A stream: each message is signed and its record started while the
	// previous ones are still being committed, then sent in order.
	p := newPipeline(ctx, s.n, pipelineDepth)
	if hdr != nil {
		// Headers go ahead of the first message, as a backend sent them:
		// a client may wait for them before it sends anything.
		st, err := s.prepare(ctx, nil, false, false, headers, nil, nil)
		if err == nil {
			err = p.push(*st)
		}
		if err != nil {
			_ = p.close()
			return err
		}
		headers = nil
	}
	for {
		f := &proxy.Frame{}
		err := bs.RecvMsg(f)
		var st *step
		if err != nil {
			if err == io.EOF {
				err = nil
			}
			st, err = s.prepare(ctx, nil, false, true, headers, toEntries(bs.Trailer()), s.finalStatus(err))
		} else {
			payload := f.Bytes()
			f.Free()
			st, err = s.prepare(ctx, payload, true, false, headers, nil, nil)
			headers = nil
		}
		if err == nil {
			err = p.push(*st)
		}
		if err != nil || st.last {
			if cerr := p.close(); err == nil {
				err = cerr
			}
			return err
		}
	}
}

// relayUnary waits for the backend's status after its one response
// message, so that message and status travel, and are signed, together.
func (s *serve) relayUnary(ctx context.Context, bs grpc.ClientStream, headers []*exchangev1.MetadataEntry) error {
	f := &proxy.Frame{}
	if err := bs.RecvMsg(f); err != nil {
		if err == io.EOF {
			err = nil
		}
		return s.send(ctx, nil, false, true, headers, toEntries(bs.Trailer()), s.finalStatus(err))
	}
	payload := f.Bytes()
	f.Free()
	err := bs.RecvMsg(&proxy.Frame{})
	if err == io.EOF {
		return s.send(ctx, payload, true, true, headers, toEntries(bs.Trailer()), status.New(codes.OK, ""))
	}
	return s.send(ctx, nil, false, true, headers, toEntries(bs.Trailer()), s.finalStatus(err))
}

// watchAuthority ends a running call when the configuration stops allowing
// it: a grant revoked or expired, or the configuration itself expired.
// Revocation must take effect on streams that run for hours too.
func (s *serve) watchAuthority(ctx context.Context, cancel context.CancelFunc) {
	n := s.n
	client, err := id.ParseClient(s.request.GetClient())
	if err != nil {
		return
	}
	for {
		changed := n.gconf.Changed()
		v := n.gconf.Current()
		var perr *exchange.Error
		var until time.Time
		switch {
		case v == nil || v.Expired(n.now()):
			perr = exchange.Errorf(codes.Unavailable, exchange.ReasonConfigExpired,
				"provider node's global configuration expired during the call")
		default:
			g, err := v.Authorize(client, s.svc.GetId(), s.method.GetName(), s.request.GetPurpose(), n.now())
			if err != nil {
				perr = exchange.Errorf(codes.PermissionDenied, exchange.ReasonGrantMissing, "%v (grant ended during the call)", err)
				break
			}
			until = v.ExpiresAt()
			if g.GetExpiresAt() != nil && g.GetExpiresAt().AsTime().Before(until) {
				until = g.GetExpiresAt().AsTime()
			}
		}
		if perr != nil {
			n.log.WarnContext(ctx, "call ended by configuration",
				logging.BoundedString(logging.KeyMessageID, s.request.GetMessageId()),
				slog.String(logging.KeyReason, perr.Reason))
			s.abort.Store(perr)
			cancel()
			return
		}
		wake := time.NewTimer(time.Until(until))
		select {
		case <-ctx.Done():
			wake.Stop()
			return
		case <-changed:
		case <-wake.C:
		}
		wake.Stop()
	}
}

// finalStatus is the status the call ends with after the backend returned
// err: a failed check of a request frame wins over the cancellation it
// caused.
func (s *serve) finalStatus(err error) *status.Status {
	if perr := s.abort.Load(); perr != nil {
		return perr.Status(s.n.self.String())
	}
	st := status.Convert(err)
	if transportFailure(st) {
		// gRPC's own transport failure toward the backend, not a status
		// the backend chose; its text names internal addresses.
		s.n.log.WarnContext(s.stream.Context(), "backend connection failed", slog.String(logging.KeyService, s.svc.GetId()),
			slog.Any(logging.KeyError, err))
		return exchange.Errorf(codes.Unavailable, exchange.ReasonBackendUnreachable,
			"the backend of service %s is unavailable", s.svc.GetId()).Status(s.n.self.String())
	}
	return st
}

// backendFailed answers an exchange whose backend call could not start. The
// cause stays in this node's log: backend addresses are the provider's
// internal network and must not reach other agencies.
func (s *serve) backendFailed(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		// The caller gave up; nothing failed here.
		return s.send(ctx, nil, false, true, nil, nil, status.FromContextError(ctx.Err()))
	}
	s.n.log.WarnContext(ctx, "backend call failed", slog.String(logging.KeyService, s.svc.GetId()),
		slog.Any(logging.KeyError, err))
	return s.fail(ctx, exchange.Errorf(codes.Unavailable, exchange.ReasonBackendUnreachable,
		"the backend of service %s is unavailable", s.svc.GetId()))
}

// fail answers the exchange with a platform failure after admission.
func (s *serve) fail(ctx context.Context, perr *exchange.Error) error {
	s.n.log.WarnContext(ctx, "exchange failed",
		logging.BoundedString(logging.KeyMessageID, s.request.GetMessageId()),
		slog.String(logging.KeyReason, perr.Reason), logging.BoundedString(logging.KeyDetail, perr.Msg))
	return s.send(ctx, nil, false, true, nil, nil, perr.Status(s.n.self.String()))
}

// send seals one response frame, records it, then sends it.
func (s *serve) send(ctx context.Context, payload []byte, hasMsg, final bool, headers, trailers []*exchangev1.MetadataEntry, st *status.Status) error {
	step, err := s.prepare(ctx, payload, hasMsg, final, headers, trailers, st)
	if err != nil {
		return err
	}
	index, err := s.n.awaitRecord(ctx, step.receipt, step.msgID)
	if err != nil {
		return err
	}
	return step.send(index)
}

// prepare builds one response frame and starts its evidence record, whose
// header the evidence writer signs with the rest of its commit; the
// returned step sends the frame once the record is durable.
func (s *serve) prepare(ctx context.Context, payload []byte, hasMsg, final bool, headers, trailers []*exchangev1.MetadataEntry, st *status.Status) (*step, error) {
	h, code := s.responseHeader(headers, final, trailers, st)
	s.resChain.Next(h)
	o, err := s.n.prepareOutgoing(h, payload, hasMsg)
	if err != nil {
		return nil, err
	}
	s.resChain.Advance(o.digest)
	r, send, err := s.startResponse(ctx, o, code)
	if err != nil {
		return nil, err
	}
	return &step{receipt: r, msgID: s.request.GetMessageId(), last: final, send: send, size: len(payload)}, nil
}

// responseHeader builds the header of a response frame.
func (s *serve) responseHeader(headers []*exchangev1.MetadataEntry, final bool, trailers []*exchangev1.MetadataEntry, st *status.Status) (*exchangev1.Header, codes.Code) {
	req := s.request
	h := &exchangev1.Header{
		MessageId:      req.GetMessageId(),
		Direction:      exchangev1.Direction_DIRECTION_RESPONSE,
		CallKind:       req.GetCallKind(),
		Client:         req.GetClient(),
		Service:        req.GetService(),
		Method:         req.GetMethod(),
		Purpose:        req.GetPurpose(),
		User:           req.GetUser(),
		Issue:          req.GetIssue(),
		Classification: req.GetClassification(),
		RequestDigest:  s.first,
		Metadata:       headers,
		Final:          final,
		SenderNode:     s.n.self.String(),
		AudienceNode:   s.peer,
	}
	code := codes.OK
	if final {
		h.Trailers = trailers
		h.Status = &exchangev1.CallStatus{Code: int32(st.Code()), Message: st.Message(), Details: st.Proto().GetDetails()}
		code = st.Code()
	}
	return h, code
}

// startResponse starts the record of a response frame (with a held-back
// request record, if any) and returns the function that sends the frame
// once everything it depends on is durable.
func (s *serve) startResponse(ctx context.Context, o *outgoing, code codes.Code) (*evidence.Receipt, func(uint64) error, error) {
	n := s.n
	msgID := s.request.GetMessageId()
	r, reqR, err := n.withDeferred(ctx, msgID, &s.deferred,
		o.record(n, evidencev1.RecordKind_RECORD_KIND_RESPONSE_SENT, s.peer, code))
	if err != nil {
		return nil, nil, err
	}
	if reqR != nil {
		// Only unary calls hold their request record back; no request
		// pump runs beside this.
		s.reqDurable = n.durableOnce(ctx, reqR, msgID)
	}
	reqDurable := s.reqDurable
	return r, func(uint64) error {
		if reqDurable != nil {
			if err := reqDurable(); err != nil {
				return err
			}
		}
		sealed, err := o.sealed(ctx, n, r)
		if err != nil {
			return err
		}
		return s.stream.Send(&exchangev1.ExchangeResponse{Frame: sealed.Frame})
	}, nil
}

// backendContext derives the backend call's context. When the caller set a
// deadline, the backend gets it minus margin, so that a backend running out
// of time still leaves the node time to sign, record and return the status
// before the caller gives up.
func backendContext(ctx context.Context, margin time.Duration) (context.Context, context.CancelFunc) {
	if dl, ok := ctx.Deadline(); ok && margin > 0 {
		if left := time.Until(dl); left > 2*margin {
			return context.WithDeadline(ctx, dl.Add(-margin))
		}
	}
	return context.WithCancel(ctx)
}

// transportFailure reports whether st is gRPC's own report of a broken
// connection rather than a status a backend returned.
func transportFailure(st *status.Status) bool {
	if st.Code() != codes.Unavailable && st.Code() != codes.Internal {
		return false
	}
	for _, p := range []string{"connection error", "error reading from server", "transport:", "connection closed"} {
		if strings.HasPrefix(st.Message(), p) {
			return true
		}
	}
	return false
}
