package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
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

	// Set by dial: the SPIFFE ID the CLI presents, and the credentials
	// that catch the TLS alert with which the registry refuses it.
	id    spiffeid.ID
	creds *mtls.AlertCatcher
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
	// The usage names the variable as the default; the value it has now
	// would print as a second "(default ...)".
	for _, name := range []string{"registry", "cert", "key", "bundle"} {
		fs.Lookup(name).DefValue = ""
	}
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
	if _, port, err := net.SplitHostPort(c.addr); err != nil || !validPort(port) {
		return nil, usagef("--registry %q: want the registry's host:port, such as 127.0.0.1:7443", c.addr)
	}
	td, err := spiffeid.TrustDomainFromString(c.trustDomain)
	if err != nil {
		return nil, usagef("--trust-domain %q: %v", c.trustDomain, err)
	}
	for _, f := range []struct{ flag, path string }{{"cert", c.cert}, {"key", c.key}, {"bundle", c.bundle}} {
		if _, err := readInput(f.flag, f.path); err != nil {
			return nil, err
		}
	}
	identity, err := mtls.LoadFiles(c.cert, c.key, c.bundle, td)
	if err != nil {
		return nil, err
	}
	c.id, _ = identity.ID()
	if err := c.checkTrustDomain(identity, td); err != nil {
		return nil, err
	}
	c.creds = mtls.CatchAlerts(mtls.ClientCredentials(identity, tlsconfig.AuthorizeID(id.Registry(td))))
	conn, err := grpc.NewClient(c.addr, grpc.WithTransportCredentials(c.creds),
		grpc.WithUnaryInterceptor(checkRequestUTF8))
	if err != nil {
		return nil, fmt.Errorf("registry %s: %w", c.addr, err)
	}
	return conn, nil
}

// checkTrustDomain refuses a --trust-domain that the bundle or the
// operator's SVID does not belong to, before a handshake that would fail
// with go-spiffe's words for it: the bundle file is loaded as td's, so the
// registry's certificate, of another trust domain, finds no roots. A CA
// certificate names its trust domain in a URI SAN, as ketnoi's development
// CA does; when none does, the SVID's trust domain tells.
func (c *registryConn) checkTrustDomain(identity mtls.Identity, td spiffeid.TrustDomain) error {
	bundle, err := identity.Bundle.GetX509BundleForTrustDomain(td)
	if err != nil {
		return err
	}
	var named []string
	for _, ca := range bundle.X509Authorities() {
		for _, u := range ca.URIs {
			if sid, err := spiffeid.FromURI(u); err == nil && sid.Path() == "" {
				if sid.TrustDomain() == td {
					return nil
				}
				named = append(named, sid.TrustDomain().Name())
			}
		}
	}
	if len(named) > 0 {
		return usagef("--trust-domain %s: the bundle %s holds no roots for it, only for %s",
			td.Name(), c.bundle, strings.Join(named, ", "))
	}
	if c.id.TrustDomain() != td {
		return usagef("--trust-domain %s: the operator certificate %s is of trust domain %s",
			td.Name(), c.cert, c.id.TrustDomain().Name())
	}
	return nil
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
	return c.reason(call(ctx, conn))
}

// reason is rpcReason, with a hint when the registry refused the CLI's
// certificate: gRPC reports that only as an Unavailable status whose text
// depends on timing.
func (c *registryConn) reason(err error) error {
	if status.Code(err) != codes.Unavailable || c.creds == nil || c.creds.Alert() == "" {
		return rpcReason(err)
	}
	return fmt.Errorf("%w; the registry refused certificate %s (%s): "+
		"check --cert/--key, --bundle and --trust-domain; the registry's log says why",
		rpcReason(err), c.id, c.creds.Alert())
}

// rpcReason turns a gRPC status error into a one-line reason.
func rpcReason(err error) error {
	if err == nil {
		return nil
	}
	if st, ok := status.FromError(err); ok {
		// The message may quote what an operator once sent.
		return fmt.Errorf("%s (%s)", escaped(st.Message()), st.Code())
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return errors.New("the registry did not answer in time")
	}
	return err
}

// validPort reports whether port is a TCP port number from 1 to 65535.
func validPort(port string) bool {
	n, err := strconv.ParseUint(port, 10, 16)
	return err == nil && n > 0
}
