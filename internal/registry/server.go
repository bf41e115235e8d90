package registry

import (
	"context"
	"log/slog"
	"strings"
	"time"

	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/auth"
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/recovery"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/status"

	"github.com/ketnoi/ketnoi/internal/id"
	"github.com/ketnoi/ketnoi/internal/logging"
	"github.com/ketnoi/ketnoi/internal/mtls"
	cataloguev1 "github.com/ketnoi/ketnoi/proto/ketnoi/catalogue/v1"
	registryv1 "github.com/ketnoi/ketnoi/proto/ketnoi/registry/v1"
)

// MaxMessageSize bounds received messages: a code list import carries a
// few megabytes.
const MaxMessageSize = 64 << 20

// keepaliveMinTime is the shortest client ping interval the server accepts.
const keepaliveMinTime = 20 * time.Second

// ServerOptions returns the options the registry's gRPC server needs:
// message limits and the logging, authorization and recovery interceptors.
// The caller adds transport credentials, typically
// mtls.ServerCredentials(identity, tlsconfig.AuthorizeMemberOf(td)) wrapped
// in mtls.LogRefusals, since a refused handshake reaches no interceptor.
func (r *Registry) ServerOptions() []grpc.ServerOption {
	// The call log leaves out the calls the registry reports itself
	// (logging.SetReported).
	logUnary, logStream := logging.CallInterceptors(r.log)
	recoverOpt := recovery.WithRecoveryHandlerContext(r.recovered)
	return []grpc.ServerOption{
		grpc.MaxRecvMsgSize(MaxMessageSize),
		// Nodes keep a watch stream open and ping it; accept their pings.
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{
			MinTime:             keepaliveMinTime,
			PermitWithoutStream: true,
		}),
		grpc.ChainUnaryInterceptor(
			logUnary,
			auth.UnaryServerInterceptor(r.authorize),
			recovery.UnaryServerInterceptor(recoverOpt),
		),
		grpc.ChainStreamInterceptor(
			logStream,
			auth.StreamServerInterceptor(r.authorize),
			recovery.StreamServerInterceptor(recoverOpt),
		),
	}
}

// recovered turns a panic in a handler into an Internal status.
func (r *Registry) recovered(ctx context.Context, p any) error {
	r.log.ErrorContext(ctx, "handler panicked", slog.Any(logging.KeyError, p))
	return status.Error(codes.Internal, "internal error")
}

// callerKey keys the authorized caller's SPIFFE ID in a call context.
type callerKey struct{}

// callerFrom returns the SPIFFE ID that authorize put in ctx.
func callerFrom(ctx context.Context) spiffeid.ID {
	p, _ := ctx.Value(callerKey{}).(spiffeid.ID)
	return p
}

// authorize admits a call by the caller's SPIFFE ID and the called service:
// the admin service to operators, the registry and catalogue services to
// nodes and operators, health checks to any peer of the trust domain. A
// node ID need not be registered, since nodes may start first, but one
// that RemoveNode removed is refused (see refuseRemoved).
func (r *Registry) authorize(ctx context.Context) (context.Context, error) {
	caller, err := mtls.PeerID(ctx)
	if err != nil {
		return nil, status.Error(codes.Unauthenticated, "no authenticated peer")
	}
	method, _ := grpc.Method(ctx)
	service, _, _ := strings.Cut(strings.TrimPrefix(method, "/"), "/")

	admin := id.IsAdmin(r.cfg.TrustDomain, caller)
	switch service {
	case registryv1.AdminService_ServiceDesc.ServiceName:
		if !admin {
			return nil, status.Errorf(codes.PermissionDenied,
				"%s may not call %s: operators only", caller, service)
		}
	case registryv1.RegistryService_ServiceDesc.ServiceName,
		cataloguev1.CatalogueService_ServiceDesc.ServiceName:
		if !admin && !r.isNode(caller) {
			return nil, status.Errorf(codes.PermissionDenied,
				"%s may not call %s: nodes and operators only", caller, service)
		}
		if !admin {
			if err := r.refuseRemoved(ctx, caller); err != nil {
				return nil, err
			}
		}
	case healthpb.Health_ServiceDesc.ServiceName:
		if caller.TrustDomain() != r.cfg.TrustDomain {
			return nil, status.Errorf(codes.PermissionDenied, "%s is not in trust domain %s",
				caller, r.cfg.TrustDomain.Name())
		}
	default:
		return nil, status.Errorf(codes.PermissionDenied, "%s may not call %s", caller, method)
	}
	return context.WithValue(ctx, callerKey{}, caller), nil
}

// isNode reports whether p is a node SPIFFE ID of this trust domain.
func (r *Registry) isNode(p spiffeid.ID) bool {
	if p.TrustDomain() != r.cfg.TrustDomain {
		return false
	}
	_, _, err := id.ParseNode(p, r.cfg.Instance)
	return err == nil
}
