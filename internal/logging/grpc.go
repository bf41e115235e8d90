package logging

import (
	"context"
	"log/slog"

	grpclogging "github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/logging"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
)

// CallInterceptors returns gRPC server interceptors that log the end of
// every call to l: successful calls at debug level (they are the common
// case), failures at the level grpc-go's middleware assigns their code,
// with the caller's SPIFFE ID when the connection has one. Payloads are
// never logged.
func CallInterceptors(l *slog.Logger) (grpc.UnaryServerInterceptor, grpc.StreamServerInterceptor) {
	logger := grpclogging.LoggerFunc(func(ctx context.Context, lvl grpclogging.Level, msg string, fields ...any) {
		l.Log(ctx, slog.Level(lvl), msg, fields...)
	})
	opts := []grpclogging.Option{
		grpclogging.WithLogOnEvents(grpclogging.FinishCall),
		grpclogging.WithLevels(callLevel),
		grpclogging.WithFieldsFromContext(peerField),
	}
	return grpclogging.UnaryServerInterceptor(logger, opts...), grpclogging.StreamServerInterceptor(logger, opts...)
}

func callLevel(c codes.Code) grpclogging.Level {
	if c == codes.OK {
		return grpclogging.LevelDebug
	}
	return grpclogging.DefaultServerCodeToLevel(c)
}

// peerField adds the caller's SPIFFE ID to call logs.
func peerField(ctx context.Context) grpclogging.Fields {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return nil
	}
	info, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok || len(info.State.PeerCertificates) == 0 {
		return nil
	}
	id, err := x509svid.IDFromCert(info.State.PeerCertificates[0])
	if err != nil {
		return nil
	}
	return grpclogging.Fields{KeyPeer, id.String()}
}
