package registry

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"

	bolt "go.etcd.io/bbolt"
	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/ketnoi/ketnoi/internal/logging"
	cataloguev1 "github.com/ketnoi/ketnoi/proto/ketnoi/catalogue/v1"
	registryv1 "github.com/ketnoi/ketnoi/proto/ketnoi/registry/v1"
)

// Registry holds the state of an instance and publishes its configuration.
// It is safe for concurrent use.
type Registry struct {
	cfg  Config
	pool *x509.CertPool // trust anchors, for member signing certificates
	db   *bolt.DB
	log  *slog.Logger

	mu      sync.Mutex // serializes changes, so versions publish in order
	current atomic.Pointer[published]
	hub     *hub
	health  *health.Server
	ahead   peerWarnings // watchers holding a newer configuration
	removed peerWarnings // removed nodes that still call
	// floor is the newest configuration version nodes are known to hold:
	// ResumeAbove, or the newest a registered node reported (raiseFloor).
	// A registry restored from a backup publishes above it, so that its
	// changes reach nodes instead of being published at a version they
	// already hold with other content.
	floor atomic.Uint64

	stopReissue context.CancelFunc
	reissueDone chan struct{}
	shutdown    sync.Once
	closeOnce   sync.Once
	closeErr    error
}

// Open opens (or creates) the registry state file at path and publishes a
// new configuration version unless the stored one is still current. It
// fails with an error wrapping ErrLocked while another process holds the
// file, with one calling the file damaged when bbolt cannot read it, and
// with one naming both when the file holds registrations of another
// instance or trust domain than cfg's.
func Open(path string, cfg Config) (*Registry, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, fmt.Errorf("registry config: %w", err)
	}
	if cfg.ResumeAbove > 0 {
		// Refused before openDB creates the file.
		if info, err := os.Stat(path); errors.Is(err, fs.ErrNotExist) || err == nil && info.Size() == 0 {
			return nil, fmt.Errorf("registry: %w", errNothingToResume(path))
		}
	}
	db, err := openDB(path)
	if err != nil {
		return nil, fmt.Errorf("registry: %w", err)
	}
	if err := checkSettings(db, path, cfg); err != nil {
		db.Close()
		return nil, fmt.Errorf("registry: %w", err)
	}
	r := &Registry{
		cfg:         cfg,
		pool:        cfg.trustPool(),
		db:          db,
		log:         cfg.Logger,
		hub:         newHub(),
		health:      health.NewServer(),
		reissueDone: make(chan struct{}),
	}
	if err := r.resume(); err != nil {
		db.Close()
		return nil, fmt.Errorf("registry: %w", err)
	}
	if err := r.warnDroppedClasses(); err != nil {
		db.Close()
		return nil, fmt.Errorf("registry: %w", err)
	}
	for _, name := range []string{
		"",
		registryv1.RegistryService_ServiceDesc.ServiceName,
		registryv1.AdminService_ServiceDesc.ServiceName,
		cataloguev1.CatalogueService_ServiceDesc.ServiceName,
	} {
		r.health.SetServingStatus(name, healthpb.HealthCheckResponse_SERVING)
	}

	ctx, cancel := context.WithCancel(context.Background())
	r.stopReissue = cancel
	go r.reissueLoop(ctx)

	p := r.current.Load()
	r.log.Info("registry opened",
		slog.String(logging.KeyPath, path),
		slog.Uint64(logging.KeyVersion, p.version))
	return r, nil
}

// Register registers the registry, admin, catalogue and health services on
// s. The server should be built with ServerOptions.
func (r *Registry) Register(s *grpc.Server) {
	registryv1.RegisterRegistryServiceServer(s, &registryServer{r: r})
	registryv1.RegisterAdminServiceServer(s, &adminServer{r: r})
	cataloguev1.RegisterCatalogueServiceServer(s, &catalogueServer{r: r})
	healthpb.RegisterHealthServer(s, r.health)
}

// Configuration returns the current signed configuration. The caller must
// not modify it.
func (r *Registry) Configuration() *registryv1.SignedConfiguration {
	return r.current.Load().signed
}

// Shutdown reports the registry as not serving and ends every watch stream,
// so that a graceful stop of the gRPC server need not wait for them. Call it
// before grpc.Server.GracefulStop; changes are still accepted until Close.
// The watches it ends are logged as one line, not one failed call each.
func (r *Registry) Shutdown() {
	r.shutdown.Do(func() {
		r.health.Shutdown()
		if n := r.hub.close(); n > 0 {
			r.log.Info("registry shutting down: configuration watches ended",
				slog.Int(logging.KeyCount, n))
		}
	})
}

// Close stops re-issuing, ends watches and closes the state file. Call it
// after the gRPC server has stopped.
func (r *Registry) Close() error {
	r.closeOnce.Do(func() {
		r.Shutdown()
		r.stopReissue()
		<-r.reissueDone
		if err := r.db.Close(); err != nil {
			r.closeErr = fmt.Errorf("registry: close: %w", err)
		}
	})
	return r.closeErr
}
