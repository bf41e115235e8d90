package node

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/ketnoi/ketnoi/internal/evidence"
	"github.com/ketnoi/ketnoi/internal/exchange"
	"github.com/ketnoi/ketnoi/internal/gconf"
	"github.com/ketnoi/ketnoi/internal/id"
	"github.com/ketnoi/ketnoi/internal/logging"
	"github.com/ketnoi/ketnoi/internal/proxy"
	evidencev1 "github.com/ketnoi/ketnoi/proto/ketnoi/evidence/v1"
	exchangev1 "github.com/ketnoi/ketnoi/proto/ketnoi/exchange/v1"
	registryv1 "github.com/ketnoi/ketnoi/proto/ketnoi/registry/v1"
)

// consumer serves one local endpoint: every call an application makes on it
// is made on behalf of client.
type consumer struct {
	n      *Node
	client id.Client
}

// call is the state of one outgoing exchange.
type call struct {
	n        *Node
	view     *gconf.View
	template *exchangev1.Header
	// md is the application's metadata, copied once: gRPC copies the
	// whole map on every read of it.
	md       metadata.MD
	target   *registryv1.Node
	provider string // provider member
	reqChain exchange.Chain
	resChain exchange.Chain
	first    []byte // digest of the first request header
	// firstSigned is the first request header as signed and sent.
	firstSigned *exchangev1.SignedHeader
	// finished is set once a verified final response reached the app, and
	// finalErr is then the call's status.
	finished bool
	finalErr error
	// reqDurable waits for the first request's record while it may still
	// be committing (evidence_order: overlap): no response reaches the
	// application and no later request message leaves before it is
	// durable. Nil when the record was durable before the request left.
	reqDurable func() error
	// deferred is the first request's record of a unary call held back to
	// be committed with the response's (evidence_order: overlap).
	deferred *pendingRecord
	// unread is set when the application's side ended the call before its
	// request was read (its error, its cancellation, or gRPC refusing a
	// message over the size limit while reading it): nothing was signed
	// or recorded, so no exchange exists and no message id is named.
	unread bool
}

func (c *consumer) handle(_ any, ss grpc.ServerStream) error {
	n := c.n
	n.active.Add(1)
	defer n.active.Add(-1)
	ctx := ss.Context()
	full, _ := grpc.MethodFromServerStream(ss)
	cl, perr := c.prepare(ctx, full)
	// Every outcome, failures and refusals included, tells the caller
	// which exchange to trace, and so does the call's log line; only a
	// call whose request was never read (cl.unread) has no exchange.
	logging.SetMessageID(ctx, cl.template.GetMessageId())
	defer func() {
		if !cl.finished && !cl.unread {
			ss.SetTrailer(metadata.Pairs(MDMessageID, cl.template.GetMessageId()))
		}
	}()
	if perr != nil {
		cl.refuse(ctx, full, perr)
		return perr.Status(n.self.String()).Err()
	}
	clientStreams := cl.template.GetCallKind() == exchangev1.CallKind_CALL_KIND_CLIENT_STREAMING ||
		cl.template.GetCallKind() == exchangev1.CallKind_CALL_KIND_BIDI_STREAMING
	first, final, err := cl.firstFrame(ctx, ss, clientStreams)
	if err != nil && cl.unread {
		// No exchange exists: the log line must not name an id that no
		// record is under and the application never received.
		logging.SetMessageID(ctx, "")
		return err
	}
	if err != nil {
		// The node refused the application's first message (too many for
		// the method, too large to send): that refusal is recorded too,
		// unless it is the evidence log that failed.
		st := status.Convert(err)
		if reason, ok := exchange.PlatformReason(st); ok && reason != exchange.ReasonEvidenceUnavailable {
			cl.refuse(ctx, full, &exchange.Error{Code: st.Code(), Reason: reason, Msg: st.Message()})
		}
		return err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := cl.open(ctx, first, final)
	if err != nil {
		cl.recordFailure(ctx, err)
		return err
	}
	sendErr := make(chan error, 1)
	if !final {
		first := cl.reqDurable
		go func() {
			err := cl.pumpRequests(ctx, ss, stream, first)
			if err != nil {
				cancel()
			}
			sendErr <- err
		}()
	} else {
		sendErr <- nil
	}

	err = cl.relayResponses(ctx, ss, stream)
	if err != nil {
		cancel()
		// A call cancelled because the request side failed reports that
		// failure. Any other end returns at once: the request pump may be
		// waiting for the application, and returning is what releases it.
		if status.Code(err) == codes.Canceled {
			if se := <-sendErr; se != nil {
				err = se
			}
		}
		if !cl.finished {
			cl.recordFailure(ctx, err)
		}
		return err
	}
	return nil
}

// recordFailure records how an exchange ended when no verified final
// response did: the consumer's log must show that the call failed, and why,
// not only that a request was sent.
func (cl *call) recordFailure(ctx context.Context, err error) {
	st := status.Convert(err)
	reason, _ := exchange.PlatformReason(st)
	if reason == "" {
		reason = st.Code().String()
	}
	cl.recordEnd(ctx, cl.n.newRecord(evidencev1.RecordKind_RECORD_KIND_FAILED, cl.firstSigned, cl.template.GetMessageId(),
		cl.target.GetSpiffeId(), true, st.Code(), reason+": "+st.Message(), nil))
}

// recordEnd records how a call ended without a verified final response,
// together with the request's record if that was held back.
func (cl *call) recordEnd(ctx context.Context, pr pendingRecord) {
	msgID := cl.template.GetMessageId()
	r, req, err := cl.n.withDeferred(ctx, msgID, &cl.deferred, pr)
	if err != nil {
		return
	}
	if req != nil {
		_, _ = cl.n.awaitRecord(ctx, req, msgID)
	}
	_, _ = cl.n.awaitRecord(ctx, r, msgID)
}

// prepare resolves the call against the global configuration. It always
// returns the call with its message id; when it refuses the call, the
// call's template holds as much as was resolved, for the refusal's record.
func (c *consumer) prepare(ctx context.Context, full string) (*call, *exchange.Error) {
	n := c.n
	md, _ := metadata.FromIncomingContext(ctx)
	svcName, method, ok := splitMethod(full)
	if !ok {
		method = full
	}
	cl := &call{n: n, md: md, template: &exchangev1.Header{
		MessageId:  exchange.NewMessageID(),
		Client:     c.client.String(),
		Service:    first(md, MDService),
		Method:     method,
		Purpose:    first(md, MDPurpose),
		User:       first(md, MDUser),
		Issue:      first(md, MDIssue),
		SenderNode: n.self.String(),
	}}
	v := n.gconf.Current()
	if v == nil {
		// The reason is the node's, not the caller's: it goes no further
		// than the node's own applications.
		if refused := n.gconf.Refused(); refused != "" {
			return cl, exchange.Errorf(codes.Unavailable, exchange.ReasonConfigMissing,
				"node has no global configuration: %s", refused)
		}
		return cl, exchange.Errorf(codes.Unavailable, exchange.ReasonConfigMissing,
			"node has no global configuration yet; is the registry reachable?")
	}
	cl.view = v
	var (
		svc  *registryv1.Service
		m    *registryv1.Method
		perr *exchange.Error
	)
	if !ok {
		perr = exchange.Errorf(codes.Unimplemented, exchange.ReasonMethodUnknown, "malformed method name %q", full)
	} else if svc, perr = resolve(v, c.client, svcName, cl.template, n.now()); perr == nil {
		cl.template.Service = svc.GetId()
		cl.template.Classification = svc.GetClassification()
		if m, ok = gconf.Method(svc, method); ok {
			cl.template.CallKind = callKind(m)
			// The call's log line names the method's own shape, also when
			// the call is refused before it is sent.
			setLogKind(ctx, cl.template.CallKind)
		} else {
			perr = exchange.Errorf(codes.Unimplemented, exchange.ReasonMethodUnknown,
				"service %s has no method %s", svc.GetId(), method)
		}
	}
	// An expired configuration is the first reason: whatever it says of
	// the method may no longer hold.
	if v.Expired(n.now()) {
		return cl, exchange.Errorf(codes.Unavailable, exchange.ReasonConfigExpired,
			"global configuration version %d expired at %s", v.Version(), v.ExpiresAt().UTC().Format("2006-01-02T15:04:05Z"))
	}
	if perr != nil {
		return cl, perr
	}
	sid, err := id.ParseService(svc.GetId())
	if err != nil {
		return cl, exchange.Errorf(codes.Internal, exchange.ReasonServiceUnknown, "registry lists malformed service %q", svc.GetId())
	}
	cl.provider = sid.Provider.Member.String()
	nodes := v.NodesOf(cl.provider)
	if len(nodes) == 0 {
		return cl, exchange.Errorf(codes.Unavailable, exchange.ReasonProviderUnreachable,
			"provider member %s has no registered node", cl.provider)
	}
	cl.target = nodes[0]
	cl.template.AudienceNode = nodes[0].GetSpiffeId()
	return cl, nil
}

// refuse logs and records a call the node refused before sending
// anything. The method name is the application's, cut to the log's bound
// and written without its leading "/", as the call's finished-call line
// writes it.
func (cl *call) refuse(ctx context.Context, method string, perr *exchange.Error) {
	cl.n.log.InfoContext(ctx, "call refused before sending",
		logging.BoundedString(logging.KeyMethod, strings.TrimPrefix(method, "/")),
		slog.String(logging.KeyMessageID, cl.template.GetMessageId()), slog.String(logging.KeyReason, perr.Reason))
	cl.recordRefusal(ctx, perr)
}

// recordRefusal records a call the node refused before sending anything,
// as the provider records the calls it refuses: the application's node
// must be able to show that it, not the provider, stopped the call, and
// why. The record holds the unsigned header of what the call asked for.
// The call is refused whether or not the record is made; a failure to
// record is logged as evidence failures are.
func (cl *call) recordRefusal(ctx context.Context, perr *exchange.Error) {
	n := cl.n
	// The call ends here: its template becomes the refusal's header.
	h := cl.template
	h.ProtocolVersion = exchange.ProtocolVersion
	h.Direction = exchangev1.Direction_DIRECTION_REQUEST
	h.CreatedAt = timestamppb.New(n.now())
	raw, err := proto.Marshal(h)
	if err != nil {
		_ = n.evidenceFailed(ctx, h.GetMessageId(), fmt.Errorf("encode refused call's header: %w", err))
		return
	}
	_ = n.recordNow(ctx, h.GetMessageId(), n.newRecord(evidencev1.RecordKind_RECORD_KIND_REFUSED,
		&exchangev1.SignedHeader{Header: raw}, h.GetMessageId(), h.GetAudienceNode(), false,
		perr.Code, perr.Reason+": "+perr.Msg, nil))
}

// resolve returns the registered service a call for gRPC service grpcName
// goes to: the one its ketnoi-service metadata names (in the template),
// else the only one offering grpcName. When several members offer
// grpcName, a member registering a service of the same name must not
// break calls that were unambiguous for their client: among them, the
// one whose grants allow client to make the call (its method, for its
// purpose, at now) is chosen, as the provider will authorise it. With
// none such, or several, the call must name one.
func resolve(
	v *gconf.View,
	client id.Client,
	grpcName string,
	call *exchangev1.Header,
	now time.Time,
) (*registryv1.Service, *exchange.Error) {
	if named := call.GetService(); named != "" {
		if _, err := id.ParseService(named); err != nil {
			return nil, exchange.Errorf(codes.InvalidArgument, exchange.ReasonServiceUnknown, "%s metadata: %v", MDService, err)
		}
		s, ok := v.Service(named)
		if !ok {
			return nil, exchange.Errorf(codes.NotFound, exchange.ReasonServiceUnknown,
				"service %s (from %s metadata) is not registered", named, MDService)
		}
		if s.GetGrpcService() != grpcName {
			return nil, exchange.Errorf(codes.InvalidArgument, exchange.ReasonServiceUnknown,
				"service %s offers %s, but the call is for %s", named, s.GetGrpcService(), grpcName)
		}
		return s, nil
	}
	switch ss := v.ServicesNamed(grpcName); len(ss) {
	case 0:
		return nil, exchange.Errorf(codes.Unimplemented, exchange.ReasonServiceUnknown,
			"no member offers gRPC service %s", grpcName)
	case 1:
		return ss[0], nil
	default:
		var granted []*registryv1.Service
		for _, s := range ss {
			if _, err := v.Authorize(client, s.GetId(), call.GetMethod(), call.GetPurpose(), now); err == nil {
				granted = append(granted, s)
			}
		}
		if len(granted) == 1 {
			return granted[0], nil
		}
		if len(granted) > 1 {
			ss = granted
		}
		ids := make([]string, len(ss))
		for i, s := range ss {
			ids[i] = s.GetId()
		}
		return nil, exchange.Errorf(codes.FailedPrecondition, exchange.ReasonServiceAmbiguous,
			"several providers offer %s (%s); name one in %s metadata", grpcName, strings.Join(ids, ", "), MDService)
	}
}

func splitMethod(full string) (svc, method string, ok bool) {
	full = strings.TrimPrefix(full, "/")
	i := strings.LastIndexByte(full, '/')
	if i <= 0 || i == len(full)-1 {
		return "", "", false
	}
	return full[:i], full[i+1:], true
}

func callKind(m *registryv1.Method) exchangev1.CallKind {
	switch {
	case m.GetClientStreaming() && m.GetServerStreaming():
		return exchangev1.CallKind_CALL_KIND_BIDI_STREAMING
	case m.GetClientStreaming():
		return exchangev1.CallKind_CALL_KIND_CLIENT_STREAMING
	case m.GetServerStreaming():
		return exchangev1.CallKind_CALL_KIND_SERVER_STREAMING
	default:
		return exchangev1.CallKind_CALL_KIND_UNARY
	}
}

// setLogKind names the shape of a proxied call for the call log: the node
// serves every method as a bidirectional stream, whatever the method's own
// shape. An unspecified kind leaves the one the server declared.
func setLogKind(ctx context.Context, k exchangev1.CallKind) {
	switch k {
	case exchangev1.CallKind_CALL_KIND_UNARY:
		logging.SetCallKind(ctx, logging.KindUnary)
	case exchangev1.CallKind_CALL_KIND_CLIENT_STREAMING:
		logging.SetCallKind(ctx, logging.KindClientStream)
	case exchangev1.CallKind_CALL_KIND_SERVER_STREAMING:
		logging.SetCallKind(ctx, logging.KindServerStream)
	case exchangev1.CallKind_CALL_KIND_BIDI_STREAMING:
		logging.SetCallKind(ctx, logging.KindBidiStream)
	}
}

// firstFrame reads the application's first message, then signs and
// records the first request frame. The frame closes the request direction
// (final) for calls where the client sends one message, and for streams the
// client half-closes before sending anything.
func (cl *call) firstFrame(ctx context.Context, ss grpc.ServerStream, clientStreams bool) (*exchange.Sealed, bool, error) {
	md := cl.md
	var (
		payload []byte
		hasMsg  bool
		err     error
	)
	if !clientStreams {
		// One request message: it travels, and is signed, with the call.
		f := &proxy.Frame{}
		if err = ss.RecvMsg(f); err != nil && err != io.EOF {
			cl.unread = true
			return nil, false, err
		}
		if hasMsg = err == nil; hasMsg {
			payload = f.Bytes()
			f.Free()
			// The method takes one request message: a second one is a
			// cardinality violation, which gRPC answers Unimplemented,
			// and must not vanish unsent and unrecorded.
			switch err := ss.RecvMsg(&proxy.Frame{}); {
			case err == nil:
				return nil, false, exchange.Errorf(codes.Unimplemented, exchange.ReasonTooManyMessages,
					"method %s takes one request message; the caller sent more", cl.template.GetMethod()).
					Status(cl.n.self.String()).Err()
			case err != io.EOF:
				cl.unread = true
				return nil, false, err
			}
		}
	}
	// A client or bidi stream opens with a frame that carries no message, so
	// that a server that speaks first is reached before the client sends.
	final := !clientStreams
	h := cl.header(exchangev1.Direction_DIRECTION_REQUEST, &cl.reqChain)
	h.Metadata = toEntries(md)
	h.Final = final
	var sealed *exchange.Sealed
	switch {
	case cl.n.cfg.EvidenceOrder == EvidenceOverlap && cl.template.GetCallKind() == exchangev1.CallKind_CALL_KIND_UNARY:
		// The record is committed together with the response's, before
		// the application sees the response.
		if sealed, err = cl.seal(ctx, h, payload, hasMsg); err == nil {
			pr := cl.n.newRecord(evidencev1.RecordKind_RECORD_KIND_REQUEST_SENT, sealed.Frame.GetSignedHeader(),
				h.GetMessageId(), cl.target.GetSpiffeId(), true, codes.OK, "", cl.n.signer.Certificate().Raw)
			cl.deferred = &pr
			cl.reqChain.Advance(sealed.Digest)
		}
	case cl.n.cfg.EvidenceOrder == EvidenceOverlap:
		// The record commits while the request travels; no response
		// reaches the application before it is durable.
		var r *evidence.Receipt
		if sealed, r, err = cl.sealAndStart(ctx, h, payload, hasMsg); err == nil {
			cl.reqDurable = cl.n.durableOnce(ctx, r, h.GetMessageId())
		}
	default:
		sealed, err = cl.sealAndRecord(ctx, h, payload, hasMsg)
	}
	if err != nil {
		return nil, false, err
	}
	cl.first = sealed.Digest
	cl.firstSigned = sealed.Frame.GetSignedHeader()
	return sealed, final, nil
}

// open starts the exchange with the provider node and sends the first
// frame.
func (cl *call) open(ctx context.Context, first *exchange.Sealed, final bool) (exchangev1.FederationService_ExchangeClient, error) {
	n := cl.n
	conn, err := n.peers.get(cl.target.GetSpiffeId(), cl.target.GetAddress())
	if err != nil {
		return nil, exchange.Errorf(codes.Unavailable, exchange.ReasonProviderUnreachable,
			"cannot reach provider node %s: %v", cl.target.GetSpiffeId(), err).Status(n.self.String()).Err()
	}
	stream, err := exchangev1.NewFederationServiceClient(conn).Exchange(ctx)
	if err != nil {
		return nil, cl.transportError(ctx, err)
	}
	if err := stream.Send(&exchangev1.ExchangeRequest{Frame: first.Frame}); err != nil {
		return nil, cl.transportError(ctx, err)
	}
	if final {
		if err := stream.CloseSend(); err != nil {
			return nil, cl.transportError(ctx, err)
		}
	}
	return stream, nil
}

// pumpRequests relays further request messages of a client stream, each
// sent once its record is durable while the next ones are read, signed and
// recorded. With first set, none is sent before the first request's
// record is durable too.
func (cl *call) pumpRequests(ctx context.Context, ss grpc.ServerStream, stream exchangev1.FederationService_ExchangeClient,
	first func() error) error {
	p := newPipeline(ctx, cl.n, pipelineDepth)
	for {
		f := &proxy.Frame{}
		err := ss.RecvMsg(f)
		if err != nil && err != io.EOF {
			_ = p.close()
			return err
		}
		hasMsg := err == nil
		var payload []byte
		if hasMsg {
			payload = f.Bytes()
			f.Free()
		}
		h := cl.header(exchangev1.Direction_DIRECTION_REQUEST, &cl.reqChain)
		h.Final = !hasMsg
		o, r, serr := cl.startOutgoing(ctx, h, payload, hasMsg)
		if serr == nil {
			serr = p.push(step{receipt: r, msgID: h.GetMessageId(), last: !hasMsg, size: len(payload), send: func(uint64) error {
				if first != nil {
					if err := first(); err != nil {
						return err
					}
				}
				sealed, err := o.sealed(ctx, cl.n, r)
				if err != nil {
					return err
				}
				if err := stream.Send(&exchangev1.ExchangeRequest{Frame: sealed.Frame}); err != nil {
					// The provider ended the call; its final frame says why.
					return errProviderEnded
				}
				if !hasMsg {
					return stream.CloseSend()
				}
				return nil
			}})
		}
		if serr != nil || !hasMsg {
			if cerr := p.close(); serr == nil {
				serr = cerr
			}
			if serr == errProviderEnded {
				return nil
			}
			return serr
		}
	}
}

// errProviderEnded stops a request pump when the provider has already
// ended the call.
var errProviderEnded = errors.New("provider ended the call")

func (cl *call) header(dir exchangev1.Direction, chain *exchange.Chain) *exchangev1.Header {
	h := cloneHeader(cl.template)
	h.Direction = dir
	chain.Next(h)
	return h
}

// sealAndRecord records a request frame, whose header the evidence writer
// signs with the rest of its commit, and returns the frame once the record
// is durable.
func (cl *call) sealAndRecord(ctx context.Context, h *exchangev1.Header, payload []byte, hasMsg bool) (*exchange.Sealed, error) {
	o, r, err := cl.startOutgoing(ctx, h, payload, hasMsg)
	if err != nil {
		return nil, err
	}
	if _, err := cl.n.awaitRecord(ctx, r, h.GetMessageId()); err != nil {
		return nil, err
	}
	return o.sealed(ctx, cl.n, r)
}

// sealAndStart starts the record of a request frame and returns the frame
// once it is signed, while its record may still be committing.
func (cl *call) sealAndStart(ctx context.Context, h *exchangev1.Header, payload []byte, hasMsg bool) (*exchange.Sealed, *evidence.Receipt, error) {
	o, r, err := cl.startOutgoing(ctx, h, payload, hasMsg)
	if err != nil {
		return nil, nil, err
	}
	sealed, err := o.sealed(ctx, cl.n, r)
	if err != nil {
		return nil, nil, err
	}
	return sealed, r, nil
}

// startOutgoing prepares a request frame, starts its record (the evidence
// writer signs it) and moves the request chain on to it.
func (cl *call) startOutgoing(ctx context.Context, h *exchangev1.Header, payload []byte, hasMsg bool) (*outgoing, *evidence.Receipt, error) {
	n := cl.n
	o, err := n.prepareOutgoing(h, payload, hasMsg)
	if err != nil {
		return nil, nil, err
	}
	rs, err := n.startRecords(ctx, h.GetMessageId(),
		o.record(n, evidencev1.RecordKind_RECORD_KIND_REQUEST_SENT, cl.target.GetSpiffeId(), codes.OK))
	if err != nil {
		return nil, nil, err
	}
	cl.reqChain.Advance(o.digest)
	return o, rs[0], nil
}

// seal signs a request frame at once, for a record that is committed later
// with the response's (evidence_order: overlap).
func (cl *call) seal(ctx context.Context, h *exchangev1.Header, payload []byte, hasMsg bool) (*exchange.Sealed, error) {
	sealed, err := exchange.Seal(ctx, cl.n.batch, h, payload, hasMsg, cl.n.now())
	if err != nil {
		return nil, status.Errorf(codes.Internal, "sign request: %v", err)
	}
	if err := cl.n.checkFrameSize(sealed); err != nil {
		return nil, err
	}
	return sealed, nil
}

// relayResponses verifies and records each response frame, then hands it to
// the application. Records of stream messages are committed while the next
// messages are verified; each message reaches the application only once its
// record is durable.
func (cl *call) relayResponses(ctx context.Context, ss grpc.ServerStream, stream exchangev1.FederationService_ExchangeClient) error {
	n := cl.n
	msgID := cl.template.GetMessageId()
	depth := 0 // one response message: sent inline
	if k := cl.template.GetCallKind(); k == exchangev1.CallKind_CALL_KIND_SERVER_STREAMING || k == exchangev1.CallKind_CALL_KIND_BIDI_STREAMING {
		depth = pipelineDepth
	}
	p := newPipeline(ctx, n, depth)
	for first := true; ; first = false {
		resp, err := stream.Recv()
		if err == io.EOF {
			err = exchange.Errorf(codes.DataLoss, exchange.ReasonSequence,
				"provider node closed exchange %s without a signed final response", msgID).Status(n.self.String()).Err()
		} else if err != nil {
			err = cl.transportError(ctx, err)
		}
		if err != nil {
			if cerr := p.close(); cerr != nil {
				return cerr
			}
			return err
		}
		o, perr := cl.check(resp.GetFrame())
		if perr != nil {
			// Messages before the bad one still reach the application.
			if cerr := p.close(); cerr != nil {
				return cerr
			}
			return cl.refuseResponse(ctx, o, perr)
		}
		st, err := cl.responseStep(ctx, ss, o, first)
		if err == nil {
			err = p.push(st)
		}
		if err != nil {
			_ = p.close()
			return err
		}
		if o.Header.GetFinal() {
			if err := p.close(); err != nil {
				return err
			}
			return cl.finalErr
		}
	}
}

// refuseResponse records a response frame that failed its checks and
// returns the status the application gets.
func (cl *call) refuseResponse(ctx context.Context, o *exchange.Opened, perr *exchange.Error) error {
	n := cl.n
	msgID := cl.template.GetMessageId()
	cl.recordEnd(ctx, n.refusalRecord(o, msgID, cl.target.GetSpiffeId(), perr))
	n.log.WarnContext(ctx, "response refused", slog.String(logging.KeyMessageID, msgID),
		slog.String(logging.KeyReason, perr.Reason))
	return perr.Status(n.self.String()).Err()
}

// responseStep starts the record of a verified response frame and returns
// the step that hands the frame to the application once it is durable
// (together with the request's record, when that was still committing).
func (cl *call) responseStep(ctx context.Context, ss grpc.ServerStream, o *exchange.Opened, first bool) (step, error) {
	n := cl.n
	msgID := cl.template.GetMessageId()
	h := o.Header
	code := codes.OK
	if h.GetFinal() {
		code = codes.Code(h.GetStatus().GetCode())
	}
	r, reqR, err := n.withDeferred(ctx, msgID, &cl.deferred,
		n.newRecord(evidencev1.RecordKind_RECORD_KIND_RESPONSE_RECEIVED, o.Frame.GetSignedHeader(),
			msgID, cl.target.GetSpiffeId(), true, code, "", o.Signer.Raw))
	if err != nil {
		return step{}, err
	}
	if reqR != nil {
		// Only unary calls hold their request record back; no request
		// pump runs beside this.
		cl.reqDurable = n.durableOnce(ctx, reqR, msgID)
	}
	reqDurable := cl.reqDurable
	payload := o.Frame.GetPayload()
	return step{receipt: r, msgID: msgID, last: h.GetFinal(), size: len(payload), send: func(index uint64) error {
		if reqDurable != nil {
			if err := reqDurable(); err != nil {
				return err
			}
		}
		if first {
			md := fromEntries(h.GetMetadata())
			md.Set(MDMessageID, msgID)
			if err := ss.SendHeader(md); err != nil {
				return err
			}
		}
		if h.GetHasMessage() {
			if err := ss.SendMsg(proxy.NewFrame(payload)); err != nil {
				return err
			}
		}
		if h.GetFinal() {
			tr := fromEntries(h.GetTrailers())
			tr.Set(MDMessageID, msgID)
			tr.Set(MDEvidence, strconv.FormatUint(index, 10))
			ss.SetTrailer(tr)
			cl.finalErr = statusFromHeader(h).Err()
			cl.finished = true
		}
		return nil
	}}, nil
}

// check verifies a response frame against this call.
func (cl *call) check(f *exchangev1.Frame) (*exchange.Opened, *exchange.Error) {
	o, perr := exchange.Open(f, cl.n.certLookup(), cl.n.verifier)
	if perr != nil {
		return o, perr
	}
	h := o.Header
	switch {
	case o.SignerMember != cl.provider:
		return o, exchange.Errorf(codes.Unauthenticated, exchange.ReasonSignerMismatch,
			"response signed by member %s, want provider %s", o.SignerMember, cl.provider)
	case h.GetMessageId() != cl.template.GetMessageId() || h.GetDirection() != exchangev1.Direction_DIRECTION_RESPONSE:
		return o, exchange.Errorf(codes.DataLoss, exchange.ReasonBinding,
			"frame is not a response of exchange %s", cl.template.GetMessageId())
	case h.GetSenderNode() != cl.target.GetSpiffeId() || h.GetAudienceNode() != cl.n.self.String():
		return o, exchange.Errorf(codes.Unauthenticated, exchange.ReasonAudience,
			"response from %s to %s, want from %s to %s", h.GetSenderNode(), h.GetAudienceNode(),
			cl.target.GetSpiffeId(), cl.n.self)
	case !bytes.Equal(h.GetRequestDigest(), cl.first):
		return o, exchange.Errorf(codes.DataLoss, exchange.ReasonBinding,
			"response of %s is not bound to the request this node sent", h.GetMessageId())
	}
	if perr := cl.resChain.Check(h, o.Digest); perr != nil {
		return o, perr
	}
	return o, nil
}

// transportError turns a failure of the node-to-node stream into a status:
// a cancelled call stays cancelled, everything else is the platform's.
func (cl *call) transportError(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return status.FromContextError(ctx.Err()).Err()
	}
	st := status.Convert(err)
	if _, ok := exchange.PlatformReason(st); ok {
		return err
	}
	if errors.Is(err, io.EOF) {
		st = status.New(codes.Unavailable, "connection closed")
	}
	if strings.Contains(st.Message(), "tls: bad certificate") || strings.Contains(st.Message(), "certificate required") {
		// The provider's authorizer turned this node away during the
		// handshake: usually this node is missing from the configuration
		// the provider holds.
		return exchange.Errorf(codes.PermissionDenied, exchange.ReasonPeerRefused,
			"provider node %s refused this node's identity %s at the TLS handshake; is this node registered?",
			cl.target.GetSpiffeId(), cl.n.self).Status(cl.n.self.String()).Err()
	}
	return exchange.Errorf(codes.Unavailable, exchange.ReasonProviderUnreachable,
		"provider node %s: %s", cl.target.GetSpiffeId(), st.Message()).Status(cl.n.self.String()).Err()
}
