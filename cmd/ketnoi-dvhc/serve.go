package main

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/reflection"

	"github.com/ketnoi/ketnoi/internal/dvhc"
	"github.com/ketnoi/ketnoi/internal/logging"
	"github.com/ketnoi/ketnoi/internal/ready"
	"github.com/ketnoi/ketnoi/internal/shutdown"
	dvhcv1 "github.com/ketnoi/ketnoi/proto/vn/gov/dvhc/v1"
)

// shutdownTimeout bounds how long in-flight calls may take to finish once
// the process is asked to stop; calls still running after it are cut off.
const shutdownTimeout = 10 * time.Second

// run serves the administrative-units service on cfg.listen until ctx ends,
// then stops gracefully.
func run(ctx context.Context, cfg config, logger *slog.Logger) error {
	data, err := dvhc.Load()
	if err != nil {
		return err
	}
	lis, err := net.Listen("tcp", cfg.listen)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	addr := lis.Addr().String()
	if !isLoopback(lis.Addr()) {
		logger.WarnContext(ctx, "plain-text gRPC listening beyond loopback",
			slog.String(logging.KeyAddress, addr))
	}

	srv := grpc.NewServer()
	hs := health.NewServer()
	dvhcv1.RegisterAdminUnitServiceServer(srv, dvhc.NewServer(data))
	healthpb.RegisterHealthServer(srv, hs)
	reflection.Register(srv)
	hs.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	hs.SetServingStatus(dvhcv1.AdminUnitService_ServiceDesc.ServiceName,
		healthpb.HealthCheckResponse_SERVING)

	if err := ready.Write(cfg.readyFile, map[string]string{"grpc": addr}); err != nil {
		lis.Close()
		return err
	}
	logger.InfoContext(ctx, "serving administrative units",
		slog.String(logging.KeyAddress, addr),
		slog.String(logging.KeyService, dvhcv1.AdminUnitService_ServiceDesc.ServiceName))

	served := make(chan error, 1)
	go func() { served <- srv.Serve(lis) }()
	select {
	case err := <-served:
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}

	hs.Shutdown()
	shutdown.GRPC(shutdownTimeout, srv)
	<-served
	logger.InfoContext(ctx, "stopped", slog.String(logging.KeyAddress, addr))
	return nil
}

// isLoopback reports whether addr is a TCP address on a loopback interface.
func isLoopback(addr net.Addr) bool {
	tcp, ok := addr.(*net.TCPAddr)
	return ok && tcp.IP.IsLoopback()
}
