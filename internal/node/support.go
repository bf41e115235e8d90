package node

import (
	"context"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/recovery"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/ketnoi/ketnoi/internal/logging"
	exchangev1 "github.com/ketnoi/ketnoi/proto/ketnoi/exchange/v1"
)

// pool keeps one client connection per remote endpoint: a TLS handshake
// costs about a millisecond of CPU, so nodes never dial per call.
type pool struct {
	mu    sync.Mutex
	conns map[string]*grpc.ClientConn
	dial  func(key, addr string) (*grpc.ClientConn, error)
}

func newPool(dial func(key, addr string) (*grpc.ClientConn, error)) *pool {
	return &pool{conns: map[string]*grpc.ClientConn{}, dial: dial}
}

func (p *pool) get(key, addr string) (*grpc.ClientConn, error) {
	k := key + "|" + addr
	p.mu.Lock()
	defer p.mu.Unlock()
	if c, ok := p.conns[k]; ok {
		return c, nil
	}
	c, err := p.dial(key, addr)
	if err != nil {
		return nil, err
	}
	p.conns[k] = c
	return c, nil
}

// retain closes the connections whose key is not in keep; calls still
// running on them fail, as they would if the peer had gone away.
func (p *pool) retain(keep map[string]bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for k, c := range p.conns {
		if !keep[k] {
			c.Close()
			delete(p.conns, k)
		}
	}
}

func (p *pool) close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for k, c := range p.conns {
		c.Close()
		delete(p.conns, k)
	}
}

// replayCache remembers message identifiers for longer than the accepted
// clock skew, so a captured request cannot be played again while its time
// stamp is still fresh.
type replayCache struct {
	mu      sync.Mutex
	ttl     time.Duration
	seen    map[string]time.Time
	sweeps  time.Time
	started time.Time
}

func newReplayCache(ttl time.Duration) *replayCache {
	return &replayCache{ttl: ttl, seen: map[string]time.Time{}, started: time.Now()}
}

// complete reports whether the cache holds every message id that can still
// be fresh: once it has run for its whole window it needs no help from the
// evidence log; before that, messages received before a restart are only
// in the log.
func (r *replayCache) complete(now time.Time) bool {
	return now.Sub(r.started) >= r.ttl
}

// add records key and reports false when it was already seen.
func (r *replayCache) add(key string, now time.Time) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if now.Sub(r.sweeps) > r.ttl {
		for k, t := range r.seen {
			if now.Sub(t) > r.ttl {
				delete(r.seen, k)
			}
		}
		r.sweeps = now
	}
	if _, ok := r.seen[key]; ok {
		return false
	}
	r.seen[key] = now
	return true
}

// recovered turns a panic in a handler into Internal, logged once.
func recovered(log *slog.Logger) recovery.Option {
	return recovery.WithRecoveryHandlerContext(func(ctx context.Context, p any) error {
		log.ErrorContext(ctx, "panic in handler", slog.Any(logging.KeyPanic, p))
		return status.Error(codes.Internal, "internal error in node")
	})
}

func recoverStream(log *slog.Logger) grpc.StreamServerInterceptor {
	return recovery.StreamServerInterceptor(recovered(log))
}

func recoverUnary(log *slog.Logger) grpc.UnaryServerInterceptor {
	return recovery.UnaryServerInterceptor(recovered(log))
}

// Metadata keys ketnoi reads from applications or adds for backends and
// applications. Keys with the "ketnoi-" prefix never pass through a node.
const (
	MDService   = "ketnoi-service"
	MDPurpose   = "ketnoi-purpose"
	MDUser      = "ketnoi-user"
	MDIssue     = "ketnoi-issue"
	MDClient    = "ketnoi-client"
	MDMessageID = "ketnoi-message-id"
	MDEvidence  = "ketnoi-evidence-index"
)

// hopByHop lists metadata that belongs to one connection or to the caller's
// own security context and must not cross to another agency. The
// content-length and content-encoding of one HTTP/2 stream do not describe
// the next: a node may send the messages in another encoding, and a backend
// that holds the body to a stale length fails the call.
var hopByHop = map[string]bool{
	"authorization": true, "cookie": true, "connection": true, "te": true,
	"user-agent": true, "content-type": true, "host": true, "keep-alive": true,
	"proxy-authorization": true, "transfer-encoding": true, "upgrade": true,
	"content-length": true, "content-encoding": true,
}

// passable reports whether a metadata key may pass through a node.
func passable(k string) bool {
	return !hopByHop[k] && !strings.HasPrefix(k, ":") && !strings.HasPrefix(k, "grpc-") &&
		!strings.HasPrefix(k, "ketnoi-")
}

func toEntries(md metadata.MD) []*exchangev1.MetadataEntry {
	var out []*exchangev1.MetadataEntry
	keys := make([]string, 0, len(md))
	for k := range md {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		if !passable(k) {
			continue
		}
		for _, v := range md[k] {
			out = append(out, &exchangev1.MetadataEntry{Key: k, Value: []byte(v)})
		}
	}
	return out
}

func fromEntries(es []*exchangev1.MetadataEntry) metadata.MD {
	md := metadata.MD{}
	for _, e := range es {
		if passable(e.GetKey()) {
			md.Append(e.GetKey(), string(e.GetValue()))
		}
	}
	return md
}

func first(md metadata.MD, k string) string {
	if v := md.Get(k); len(v) > 0 {
		return v[0]
	}
	return ""
}

// nodeHealth reports SERVING while the node holds an unexpired global
// configuration, so probes see when the node would refuse exchanges.
type nodeHealth struct {
	healthpb.UnimplementedHealthServer
	n *Node
}

func (h *nodeHealth) Check(context.Context, *healthpb.HealthCheckRequest) (*healthpb.HealthCheckResponse, error) {
	v := h.n.gconf.Current()
	if v == nil || v.Expired(h.n.now()) {
		return &healthpb.HealthCheckResponse{Status: healthpb.HealthCheckResponse_NOT_SERVING}, nil
	}
	return &healthpb.HealthCheckResponse{Status: healthpb.HealthCheckResponse_SERVING}, nil
}
