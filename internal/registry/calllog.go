package registry

import (
	"context"
	"log/slog"
	"sync/atomic"

	"google.golang.org/grpc"
)

// The registry's call log (logging.CallInterceptors) writes a line for
// every call that fails. Two kinds of failure would fill it with lines
// that say nothing new: a removed node that keeps running retries its
// watch every few seconds and is refused each time, and at shutdown every
// node's watch ends. The registry reports those itself, rate-limited or
// as one line, and marks their calls quiet so that the call log leaves
// them out.

// callNote is shared by a call's interceptors and handler through its
// context. It is set up before the call log's interceptor, which reads
// it when the call has ended.
type callNote struct {
	quiet atomic.Bool // the registry has reported the call's end itself
}

// noteKey keys the callNote in a call's context.
type noteKey struct{}

// quietCall marks the call of ctx as reported by the registry itself, so
// that the call log leaves it out. It does nothing for a context without
// a note, such as a handler called directly in a test.
func quietCall(ctx context.Context) {
	if n, ok := ctx.Value(noteKey{}).(*callNote); ok {
		n.quiet.Store(true)
	}
}

// isQuiet reports whether the call of ctx was marked with quietCall.
func isQuiet(ctx context.Context) bool {
	n, ok := ctx.Value(noteKey{}).(*callNote)
	return ok && n.quiet.Load()
}

// noteUnary gives a unary call its callNote.
func noteUnary(
	ctx context.Context,
	req any,
	_ *grpc.UnaryServerInfo,
	handler grpc.UnaryHandler,
) (any, error) {
	return handler(context.WithValue(ctx, noteKey{}, &callNote{}), req)
}

// noteStream gives a streaming call its callNote.
func noteStream(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	ctx := context.WithValue(ss.Context(), noteKey{}, &callNote{})
	return handler(srv, &notedStream{ServerStream: ss, ctx: ctx})
}

// notedStream is a server stream whose context carries a callNote.
type notedStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (s *notedStream) Context() context.Context { return s.ctx }

// quietHandler is the call log's handler: it drops the lines of calls
// marked with quietCall and passes everything else on.
type quietHandler struct{ slog.Handler }

func (h quietHandler) Enabled(ctx context.Context, l slog.Level) bool {
	return !isQuiet(ctx) && h.Handler.Enabled(ctx, l)
}

func (h quietHandler) Handle(ctx context.Context, rec slog.Record) error {
	if isQuiet(ctx) {
		return nil
	}
	return h.Handler.Handle(ctx, rec)
}

func (h quietHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	return quietHandler{h.Handler.WithAttrs(attrs)}
}

func (h quietHandler) WithGroup(name string) slog.Handler {
	return quietHandler{h.Handler.WithGroup(name)}
}
