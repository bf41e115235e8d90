package logging

import (
	"context"
	"log/slog"
	"strings"
	"time"

	grpclogging "github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/logging"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
)

// Keys of call logs beyond the shared ones.
const (
	KeyDuration = "duration"
	KeyCallKind = "kind"
)

// Values of KeyCallKind: the four shapes of a gRPC method, in the words
// grpc-go's middleware uses for them.
const (
	KindUnary        = "unary"
	KindClientStream = "client_stream"
	KindServerStream = "server_stream"
	KindBidiStream   = "bidi_stream"
)

// CallInterceptors returns gRPC server interceptors that log the end of
// every call to l: successful calls at debug level (they are the common
// case), failures at the level grpc-go's middleware assigns their code,
// with the method, its kind, code, duration, the caller's SPIFFE ID when
// the connection has one and the exchange's message id when the handler
// names it ([SetMessageID]). Payloads are never logged.
//
// The kind is the one the server declared for the method. A handler that
// serves calls of any shape as bidirectional streams, as a proxy does,
// names the real one with [SetCallKind].
//
// A handler that reports the end of a call itself, such as a refusal it
// logs once for many, keeps the call out of the log with [SetReported].
//
// The level is decided before any field is built, so a call that is not
// logged costs one clock read, one Enabled check and the call's context
// (one allocation, shared with the stream wrapper): on a node every
// exchange passes two of these interceptors.
func CallInterceptors(l *slog.Logger) (grpc.UnaryServerInterceptor, grpc.StreamServerInterceptor) {
	unary := func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		start := time.Now()
		cc := &callContext{Context: ctx, kind: KindUnary}
		resp, err := handler(cc, req)
		logCall(ctx, l, info.FullMethod, cc, start, err)
		return resp, err
	}
	stream := func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		start := time.Now()
		kind := KindServerStream
		switch {
		case info.IsClientStream && info.IsServerStream:
			kind = KindBidiStream
		case info.IsClientStream:
			kind = KindClientStream
		}
		cs := &callStream{ServerStream: ss, ctx: callContext{Context: ss.Context(), kind: kind, bidi: kind == KindBidiStream}}
		err := handler(srv, cs)
		logCall(ss.Context(), l, info.FullMethod, &cs.ctx, start, err)
		return err
	}
	return unary, stream
}

// SetCallKind names the shape of the call of ctx, one of the Kind
// constants, for its log line, when the method the server declared is a
// bidirectional stream that carries calls of other shapes. It does nothing
// for other calls. The handler must call it before it returns.
func SetCallKind(ctx context.Context, kind string) {
	if cc, ok := ctx.Value(callKey{}).(*callContext); ok && cc.bidi {
		cc.kind = kind
	}
}

// SetMessageID names the exchange the call of ctx carries, for its log
// line under KeyMessageID, so that the line can be matched with the
// evidence records of that exchange. Like [SetCallKind] it works on calls
// of methods declared as bidirectional streams, which is how a node
// serves every exchange, does nothing for others, and must be called
// before the handler returns. The id may come from a peer: the line holds
// at most [MaxValueBytes] of it.
func SetMessageID(ctx context.Context, id string) {
	if cc, ok := ctx.Value(callKey{}).(*callContext); ok && cc.bidi {
		cc.messageID = id
	}
}

// SetReported keeps the call of ctx out of the call log: its handler has
// reported how it ended itself, for instance in one line for many calls
// refused alike. It must be called before the handler returns.
func SetReported(ctx context.Context) {
	if cc, ok := ctx.Value(callKey{}).(*callContext); ok {
		cc.reported = true
	}
}

// callKey finds the callContext of a call.
type callKey struct{}

// callContext is the context of a call: the call's own, with what the
// handler may set for its log line.
type callContext struct {
	context.Context
	kind      string
	messageID string
	bidi      bool // declared a bidirectional stream: kind and id may be set
	reported  bool // the handler reported the call's end itself
}

func (c *callContext) Value(key any) any {
	if key == (callKey{}) {
		return c
	}
	return c.Context.Value(key)
}

// callStream hands the handler a stream whose context is a callContext.
// Both live in one allocation.
type callStream struct {
	grpc.ServerStream
	ctx callContext
}

func (s *callStream) Context() context.Context { return &s.ctx }

// logCall logs the end of one call if its level is enabled. The method
// and the error text come from the caller or from a peer (a provider's
// backend writes the status message a consumer node returns), so each is
// cut to MaxValueBytes: no one outside decides how long a node's log
// lines are.
func logCall(
	ctx context.Context,
	l *slog.Logger,
	method string,
	cc *callContext,
	start time.Time,
	err error,
) {
	code := status.Code(err)
	lvl := callLevel(code)
	if cc.reported || !l.Enabled(ctx, lvl) {
		return
	}
	kind, messageID := cc.kind, cc.messageID
	attrs := make([]slog.Attr, 0, 7)
	attrs = append(attrs,
		BoundedString(KeyMethod, strings.TrimPrefix(method, "/")),
		slog.String(KeyCallKind, kind),
		slog.String(KeyCode, code.String()),
		slog.Duration(KeyDuration, time.Since(start)))
	if id := peerID(ctx); id != "" {
		attrs = append(attrs, slog.String(KeyPeer, id))
	}
	if messageID != "" {
		attrs = append(attrs, BoundedString(KeyMessageID, messageID))
	}
	if err != nil {
		attrs = append(attrs, BoundedString(KeyError, status.Convert(err).Message()))
	}
	l.LogAttrs(ctx, lvl, "finished call", attrs...)
}

// callLevel is the level of a finished call: debug for OK, warn for
// Unimplemented, otherwise the level grpc-go's middleware gives the code on
// a server. A node answers Unimplemented for a caller's mistake (a method
// the service lacks, a second message to a unary method) or relays a
// backend's; neither is the node failing, which is what error level says.
func callLevel(c codes.Code) slog.Level {
	switch c {
	case codes.OK:
		return slog.LevelDebug
	case codes.Unimplemented:
		return slog.LevelWarn
	}
	return slog.Level(grpclogging.DefaultServerCodeToLevel(c))
}

// peerID is the caller's SPIFFE ID, or "" on a connection without one.
func peerID(ctx context.Context) string {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return ""
	}
	info, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok || len(info.State.PeerCertificates) == 0 {
		return ""
	}
	id, err := x509svid.IDFromCert(info.State.PeerCertificates[0])
	if err != nil {
		return ""
	}
	return id.String()
}
