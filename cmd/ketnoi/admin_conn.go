package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"google.golang.org/grpc"
	"google.golang.org/grpc/status"

	"github.com/ketnoi/ketnoi/internal/id"
	"github.com/ketnoi/ketnoi/internal/mtls"
)

// registryCallTimeout bounds each registry command, connection included.
const registryCallTimeout = 30 * time.Second

// Environment variables that give the registry connection flags their
// defaults.
const (
	envRegistry = "KETNOI_REGISTRY"
	envCert     = "KETNOI_CERT"
	envKey      = "KETNOI_KEY"
	envBundle   = "KETNOI_BUNDLE"
)

// operatorEnv holds the environment defaults of the connection flags. It is
// the only place the CLI reads the environment.
type operatorEnv struct {
	registry, cert, key, bundle string
}

func readOperatorEnv() operatorEnv {
	return operatorEnv{
		registry: os.Getenv(envRegistry),
		cert:     os.Getenv(envCert),
		key:      os.Getenv(envKey),
		bundle:   os.Getenv(envBundle),
	}
}

// registryConn holds the connection flags shared by the commands that talk
// to the registry.
type registryConn struct {
	addr, trustDomain, cert, key, bundle string
}

// addRegistryFlags defines the connection flags on fs.
func addRegistryFlags(fs *flag.FlagSet) *registryConn {
	env := readOperatorEnv()
	c := &registryConn{}
	fs.StringVar(&c.addr, "registry", env.registry,
		"registry `address` host:port (default $"+envRegistry+")")
	fs.StringVar(&c.trustDomain, "trust-domain", "vn.ketnoi", "SPIFFE trust `domain` of the registry")
	fs.StringVar(&c.cert, "cert", env.cert,
		"operator X.509-SVID certificate (PEM) `file` (default $"+envCert+")")
	fs.StringVar(&c.key, "key", env.key, "operator X.509-SVID key (PEM PKCS#8) `file` (default $"+envKey+")")
	fs.StringVar(&c.bundle, "bundle", env.bundle, "trust bundle (PEM) `file` (default $"+envBundle+")")
	return c
}

// dial checks the connection flags and connects to the registry, accepting
// only a server whose SVID carries the registry's SPIFFE ID.
func (c *registryConn) dial() (*grpc.ClientConn, error) {
	for _, f := range []struct{ flag, env, value string }{
		{"registry", envRegistry, c.addr},
		{"cert", envCert, c.cert},
		{"key", envKey, c.key},
		{"bundle", envBundle, c.bundle},
	} {
		if f.value == "" {
			return nil, usagef("--%s is required (or set %s)", f.flag, f.env)
		}
	}
	td, err := spiffeid.TrustDomainFromString(c.trustDomain)
	if err != nil {
		return nil, usagef("--trust-domain %q: %v", c.trustDomain, err)
	}
	identity, err := mtls.LoadFiles(c.cert, c.key, c.bundle, td)
	if err != nil {
		return nil, err
	}
	creds := mtls.ClientCredentials(identity, tlsconfig.AuthorizeID(id.Registry(td)))
	conn, err := grpc.NewClient(c.addr, grpc.WithTransportCredentials(creds))
	if err != nil {
		return nil, fmt.Errorf("registry %s: %w", c.addr, err)
	}
	return conn, nil
}

// callRegistry connects to the registry and runs call within the command's
// time limit. A gRPC error becomes its status message and code, without the
// Go error chain around it.
func callRegistry(
	ctx context.Context,
	c *registryConn,
	call func(context.Context, *grpc.ClientConn) error,
) error {
	conn, err := c.dial()
	if err != nil {
		return err
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(ctx, registryCallTimeout)
	defer cancel()
	return rpcReason(call(ctx, conn))
}

// rpcReason turns a gRPC status error into a one-line reason.
func rpcReason(err error) error {
	if err == nil {
		return nil
	}
	if st, ok := status.FromError(err); ok {
		return fmt.Errorf("%s (%s)", st.Message(), st.Code())
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("no answer from the registry within %v", registryCallTimeout)
	}
	return err
}
