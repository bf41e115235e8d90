package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
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

	// Set by dial: the TLS settings of the connection and the SPIFFE ID
	// the CLI presents, for refusedBy.
	tls *tls.Config
	id  spiffeid.ID
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
	c.tls = mtls.ClientConfig(identity, tlsconfig.AuthorizeID(id.Registry(td)))
	c.id, _ = identity.ID()
	conn, err := grpc.NewClient(c.addr, grpc.WithTransportCredentials(credentials.NewTLS(c.tls)))
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
	ctx, cancel := context.WithTimeout(ctx, registryCallTimeout)
	defer cancel()
	return callRegistryStream(ctx, c, call)
}

// callRegistryStream is callRegistry without its time limit, for a stream
// the caller bounds itself.
func callRegistryStream(
	ctx context.Context,
	c *registryConn,
	call func(context.Context, *grpc.ClientConn) error,
) error {
	conn, err := c.dial()
	if err != nil {
		return err
	}
	defer conn.Close()
	return c.reason(ctx, call(ctx, conn))
}

// reason is rpcReason, with a hint when the registry refused the CLI's
// certificate. gRPC cannot tell that case apart: in TLS 1.3 the client's
// side of the handshake is done before the registry checks its
// certificate, so the call fails with whatever the closed connection gave,
// often "broken pipe".
func (c *registryConn) reason(ctx context.Context, err error) error {
	if status.Code(err) != codes.Unavailable || c.tls == nil {
		return rpcReason(err)
	}
	alert, refused := c.refusedBy(ctx)
	if !refused {
		return rpcReason(err)
	}
	return fmt.Errorf("%w; the registry refused certificate %s (%s): "+
		"check --cert/--key, --bundle and --trust-domain; the registry's log says why", rpcReason(err), c.id, alert)
}

// probeTimeout bounds the handshake and the wait for the registry's first
// bytes in refusedBy.
const probeTimeout = 3 * time.Second

// refusedBy makes one TLS handshake with the registry as the failed call
// did and reads what the registry sends first: a registry that accepted the
// certificate sends its HTTP/2 settings, one that refused it sends a TLS
// alert (such as "bad certificate"), which refusedBy returns. The probe
// writes nothing after the handshake, so the alert is not lost to a reset
// connection as the failed call's was.
func (c *registryConn) refusedBy(ctx context.Context) (alert string, refused bool) {
	ctx, cancel := context.WithTimeout(ctx, probeTimeout)
	defer cancel()
	cfg := c.tls.Clone()
	cfg.NextProtos = []string{"h2"}
	d := tls.Dialer{Config: cfg}
	conn, err := d.DialContext(ctx, "tcp", c.addr)
	if err != nil {
		// Our own side refused the registry, or it is unreachable: the
		// call's error already says so.
		return "", false
	}
	defer conn.Close()
	if deadline, ok := ctx.Deadline(); ok {
		_ = conn.SetReadDeadline(deadline)
	}
	_, err = conn.Read(make([]byte, 1))
	var op *net.OpError
	if errors.As(err, &op) && op.Op == "remote error" {
		return op.Err.Error(), true
	}
	return "", false
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
		return errors.New("the registry did not answer in time")
	}
	return err
}
