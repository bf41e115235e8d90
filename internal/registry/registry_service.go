package registry

import (
	"context"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/ketnoi/ketnoi/internal/logging"
	registryv1 "github.com/ketnoi/ketnoi/proto/ketnoi/registry/v1"
)

// registryServer serves the signed configuration to nodes and operators.
type registryServer struct {
	registryv1.UnimplementedRegistryServiceServer
	r *Registry
}

// GetConfiguration returns the current signed configuration.
func (s *registryServer) GetConfiguration(
	context.Context,
	*registryv1.GetConfigurationRequest,
) (*registryv1.GetConfigurationResponse, error) {
	return &registryv1.GetConfigurationResponse{Configuration: s.r.Configuration()}, nil
}

// WatchConfiguration sends the current configuration when it is newer than
// the caller's, then every version published while the stream lasts. A
// watcher that falls behind skips to the newest version. A watcher that
// holds a newer version than the registry's gets nothing and would not
// take it, so the registry warns about it (see warnAhead). The watch of a
// node that RemoveNode removes ends with PermissionDenied instead of
// receiving the version without it: the check on each new version sees the
// removal, which is stored before that version is published.
func (s *registryServer) WatchConfiguration(
	req *registryv1.WatchConfigurationRequest,
	stream grpc.ServerStreamingServer[registryv1.WatchConfigurationResponse],
) error {
	w := s.r.hub.subscribe()
	defer s.r.hub.unsubscribe(w)

	ctx := stream.Context()
	peer := callerFrom(ctx)
	sent := req.GetKnownVersion()
	next := s.r.current.Load()
	for {
		if err := s.r.refuseRemoved(ctx, peer); err != nil {
			return err
		}
		switch {
		case next.version > sent:
			err := stream.Send(&registryv1.WatchConfigurationResponse{Configuration: next.signed})
			if err != nil {
				return err
			}
			sent = next.version
		case next.version < sent:
			// Only the caller's known_version can be above: what was sent
			// came from here.
			s.r.raiseFloor(peer, sent, next.version)
			s.r.warnAhead(ctx, peer, sent, next.version)
		}
		select {
		case next = <-w.pending:
		case <-ctx.Done():
			return status.FromContextError(ctx.Err()).Err()
		case <-s.r.hub.closed:
			// Shutdown logs one line for all the watches it ends.
			logging.SetReported(ctx)
			return status.Error(codes.Unavailable, "registry is shutting down")
		}
	}
}
