package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"google.golang.org/grpc"

	"github.com/ketnoi/ketnoi/internal/id"
	"github.com/ketnoi/ketnoi/internal/logging"
	"github.com/ketnoi/ketnoi/internal/mtls"
	"github.com/ketnoi/ketnoi/internal/ready"
	"github.com/ketnoi/ketnoi/internal/registry"
	"github.com/ketnoi/ketnoi/internal/shutdown"
	"github.com/ketnoi/ketnoi/internal/sign"
)

// stopTimeout bounds the wait for in-flight calls on shutdown.
const stopTimeout = 10 * time.Second

// run serves the registry until ctx ends, then stops gracefully.
func run(ctx context.Context, cfg config, stderr io.Writer) error {
	logger, err := logging.New(stderr, cfg.logLevel, cfg.logFormat)
	if err != nil {
		return usageError{Msg: err.Error()}
	}
	identity, err := loadIdentity(cfg)
	if err != nil {
		return err
	}
	regCfg, err := registryConfig(cfg, logger)
	if err != nil {
		return err
	}

	reg, err := registry.Open(cfg.data, regCfg)
	if err != nil {
		return err
	}
	defer reg.Close()

	creds := mtls.ServerCredentials(identity, tlsconfig.AuthorizeMemberOf(cfg.trustDomain))
	opts := append(reg.ServerOptions(), grpc.Creds(mtls.LogRefusals(creds, logger)))
	srv := grpc.NewServer(opts...)
	reg.Register(srv)

	lis, err := net.Listen("tcp", cfg.listen)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	addr := lis.Addr().String()
	served := make(chan error, 1)
	go func() { served <- srv.Serve(lis) }()
	if err := ready.Write(cfg.readyFile, map[string]string{"grpc": addr}); err != nil {
		srv.Stop()
		return err
	}
	logger.InfoContext(ctx, "registry listening", slog.String(logging.KeyAddress, addr))

	select {
	case err := <-served:
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}
	logger.InfoContext(ctx, "registry stopping")
	reg.Shutdown()
	shutdown.GRPC(stopTimeout, srv)
	return nil
}

// loadIdentity loads the registry's SVID and checks that it carries the
// registry's SPIFFE ID, which is the only ID nodes accept.
func loadIdentity(cfg config) (mtls.Identity, error) {
	identity, err := mtls.LoadFiles(cfg.svidCert, cfg.svidKey, cfg.bundle, cfg.trustDomain)
	if err != nil {
		return mtls.Identity{}, err
	}
	got, err := identity.ID()
	if err != nil {
		return mtls.Identity{}, fmt.Errorf("SVID %s: %w", cfg.svidCert, err)
	}
	if want := id.Registry(cfg.trustDomain); got != want {
		return mtls.Identity{}, fmt.Errorf("SVID %s is for %s, want %s", cfg.svidCert, got, want)
	}
	return identity, nil
}

// registryConfig loads the trust anchors and the configuration signer.
func registryConfig(cfg config, logger *slog.Logger) (registry.Config, error) {
	pemBytes, err := os.ReadFile(cfg.bundle)
	if err != nil {
		return registry.Config{}, fmt.Errorf("read bundle: %w", err)
	}
	anchors, err := sign.ParseCertificates(pemBytes)
	if err != nil {
		return registry.Config{}, fmt.Errorf("bundle %s: %w", cfg.bundle, err)
	}
	signer, err := sign.LoadSigner(cfg.signingCert, cfg.signingKey)
	if err != nil {
		return registry.Config{}, err
	}
	return registry.Config{
		Instance:     cfg.instance,
		TrustDomain:  cfg.trustDomain,
		Classes:      cfg.classes,
		ConfigTTL:    cfg.configTTL,
		ResumeAbove:  cfg.resumeAbove,
		Signer:       signer,
		TrustAnchors: anchors,
		Logger:       logger,
	}, nil
}
