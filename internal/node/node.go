package node

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	bolt "go.etcd.io/bbolt"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/credentials/insecure"
	_ "google.golang.org/grpc/encoding/gzip" // applications may compress; the node accepts it
	"google.golang.org/grpc/experimental"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"

	"github.com/ketnoi/ketnoi/internal/evidence"
	"github.com/ketnoi/ketnoi/internal/exchange"
	"github.com/ketnoi/ketnoi/internal/gather"
	"github.com/ketnoi/ketnoi/internal/gconf"
	"github.com/ketnoi/ketnoi/internal/id"
	"github.com/ketnoi/ketnoi/internal/logging"
	"github.com/ketnoi/ketnoi/internal/mtls"
	"github.com/ketnoi/ketnoi/internal/proxy"
	"github.com/ketnoi/ketnoi/internal/ready"
	"github.com/ketnoi/ketnoi/internal/shutdown"
	"github.com/ketnoi/ketnoi/internal/sign"
	evidencev1 "github.com/ketnoi/ketnoi/proto/ketnoi/evidence/v1"
	exchangev1 "github.com/ketnoi/ketnoi/proto/ketnoi/exchange/v1"
	registryv1 "github.com/ketnoi/ketnoi/proto/ketnoi/registry/v1"
)

// Node is one running security server.
type Node struct {
	cfg      *Config
	log      *slog.Logger
	self     spiffeid.ID
	member   id.Member
	identity mtls.Identity
	signer   *sign.Signer
	batch    *exchange.BatchSigner
	verifier *exchange.Verifier
	roots    *x509.CertPool

	evidence *evidence.Log
	state    *bolt.DB
	registry *grpc.ClientConn
	gconf    *gconf.Source

	peers    *pool
	inbound  *inbound // federation connections peers opened to this node
	backends *pool
	backend  map[string]string // service id to backend address
	replay   *replayCache
	codec    *proxy.Codec
	pool     *proxy.Pool // buffers of every gRPC connection of the node
	now      func() time.Time

	logUnary  grpc.UnaryServerInterceptor
	logStream grpc.StreamServerInterceptor

	// active counts the exchanges in progress, as consumer and as
	// provider; the batch signer waits for more headers only when it is
	// high.
	active atomic.Int64
	gather *gather.Policy
}

// New loads the node's identity, keys and logs. Close releases them.
func New(cfg *Config, logger *slog.Logger) (*Node, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	td, err := spiffeid.TrustDomainFromString(cfg.TrustDomain)
	if err != nil {
		return nil, fmt.Errorf("trust domain: %w", err)
	}
	member, err := id.ParseMember(cfg.Member)
	if err != nil {
		return nil, fmt.Errorf("member: %w", err)
	}
	self, err := id.Node(td, member, cfg.Name)
	if err != nil {
		return nil, fmt.Errorf("node identity: %w", err)
	}
	identity, err := mtls.LoadFiles(cfg.TLS.Cert, cfg.TLS.Key, cfg.TLS.Bundle, td)
	if err != nil {
		return nil, fmt.Errorf("tls: %w", err)
	}
	if got, _ := identity.ID(); got != self {
		return nil, fmt.Errorf("tls.cert: SVID is %s, want %s", got, self)
	}
	signer, err := sign.LoadSigner(cfg.Signing.Cert, cfg.Signing.Key)
	if err != nil {
		return nil, fmt.Errorf("signing: %w", err)
	}
	roots := x509.NewCertPool()
	b, _ := identity.Bundle.GetX509BundleForTrustDomain(td)
	for _, c := range b.X509Authorities() {
		roots.AddCert(c)
	}
	if err := checkSigner(signer, member, roots); err != nil {
		return nil, err
	}

	n := &Node{
		cfg: cfg, log: logger.With(slog.String(logging.KeyNode, self.String())),
		self: self, member: member, identity: identity, signer: signer, roots: roots,
		verifier: exchange.NewVerifier(4096),
		backend:  map[string]string{}, replay: newReplayCache(2 * cfg.ClockSkew),
		codec: proxy.NewCodec(), pool: proxy.NewPool(), now: time.Now,
	}
	n.gather = &gather.Policy{Delay: *cfg.Batching.Delay, MinActive: cfg.Batching.MinActive, Active: &n.active}
	n.batch = exchange.NewBatchSigner(signer, n.gather)
	for _, be := range cfg.Backends {
		n.backend[be.Service] = be.Address
	}
	n.logUnary, n.logStream = logging.CallInterceptors(n.log)
	if err := n.open(); err != nil {
		n.Close()
		return nil, err
	}
	return n, nil
}

func checkSigner(s *sign.Signer, member id.Member, roots *x509.CertPool) error {
	c := s.Certificate()
	if len(c.URIs) != 1 {
		return errors.New("signing.cert: want exactly one URI SAN naming the member")
	}
	m, err := id.MemberFromURI(c.URIs[0])
	if err != nil {
		return fmt.Errorf("signing.cert: %w", err)
	}
	if m != member {
		return fmt.Errorf("signing.cert: certificate is for member %s, node belongs to %s", m, member)
	}
	if err := sign.VerifyCertificate(c, nil, roots, time.Now()); err != nil {
		return fmt.Errorf("signing.cert: %w", err)
	}
	return nil
}

func (n *Node) open() error {
	if err := os.MkdirAll(n.cfg.DataDir, 0o700); err != nil {
		return fmt.Errorf("data_dir: %w", err)
	}
	// The state file first: when data_dir holds another program's files,
	// the node stops before it creates an evidence log beside them.
	var err error
	n.state, err = gconf.OpenState(filepath.Join(n.cfg.DataDir, "state.db"), 2*time.Second)
	if err != nil {
		return err
	}
	// The writer signs the outgoing headers of each commit with one
	// signature: a header waits for the commit that makes its record
	// durable anyway, so signing there costs no latency and batches as
	// many headers as the commit holds.
	n.evidence, err = evidence.Open(filepath.Join(n.cfg.DataDir, "evidence.db"), evidence.Options{
		Logger: n.log, Node: n.self.String(), MaxBatch: exchange.MaxBatch, Gather: n.gather,
		Seal: func(headers [][]byte) ([]*exchangev1.SignedHeader, error) {
			return exchange.SignBatch(n.signer, headers)
		},
	})
	if err != nil {
		return fmt.Errorf("open evidence log: %w", err)
	}
	registryID := id.Registry(n.self.TrustDomain())
	// The registry refuses a certificate with a TLS alert that gRPC would
	// report as a broken connection; the catcher keeps it for the log.
	registryCreds := mtls.CatchAlerts(mtls.ClientCredentials(n.identity, tlsconfig.AuthorizeID(registryID)))
	n.registry, err = grpc.NewClient(n.cfg.Registry.Address,
		grpc.WithTransportCredentials(registryCreds),
		grpc.WithConnectParams(reconnect))
	if err != nil {
		return fmt.Errorf("registry client: %w", err)
	}
	n.gconf, err = gconf.NewSource(n.state, registryv1.NewRegistryServiceClient(n.registry), n.roots, n.log)
	if err != nil {
		return err
	}
	n.gconf.SetAlerts(registryCreds.Alert)
	n.inbound = newInbound()
	n.peers = newPool(func(key, addr string) (*grpc.ClientConn, error) {
		peerID, err := spiffeid.FromString(key)
		if err != nil {
			return nil, err
		}
		return grpc.NewClient(addr,
			grpc.WithTransportCredentials(mtls.ClientCredentials(n.identity, tlsconfig.AuthorizeID(peerID))),
			grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: 30 * time.Second, PermitWithoutStream: true}),
			grpc.WithConnectParams(reconnect),
			grpc.WithInitialWindowSize(streamWindow), grpc.WithInitialConnWindowSize(connWindow),
			experimental.WithBufferPool(n.pool),
			grpc.WithDefaultCallOptions(grpc.ForceCodecV2(exchange.NewCodec()),
				grpc.MaxCallRecvMsgSize(n.frameLimit()), grpc.MaxCallSendMsgSize(n.frameLimit())),
		)
	})
	n.backends = newPool(func(_, addr string) (*grpc.ClientConn, error) {
		return grpc.NewClient(addr,
			grpc.WithTransportCredentials(insecure.NewCredentials()),
			grpc.WithKeepaliveParams(backendKeepalive),
			grpc.WithConnectParams(reconnect),
			grpc.WithInitialWindowSize(streamWindow), grpc.WithInitialConnWindowSize(connWindow),
			experimental.WithBufferPool(n.pool),
			grpc.WithDefaultCallOptions(grpc.ForceCodecV2(n.codec),
				grpc.MaxCallRecvMsgSize(n.cfg.MaxMessageBytes), grpc.MaxCallSendMsgSize(n.cfg.MaxMessageBytes)),
		)
	})
	return nil
}

// streamWorkers is how many goroutines of a local or federation server
// stay to run calls. A call runs on an idle worker, whose stack has already
// grown to what an exchange needs, instead of a new goroutine that grows
// its stack again (about a twentieth of a node's CPU under load); calls
// beyond this many at once get goroutines of their own as usual.
const streamWorkers = 64

// HTTP/2 flow-control windows of every connection a node makes or
// accepts. grpc-go sizes windows from its bandwidth-delay estimate, which on
// a fast link with a node waiting for its evidence commits stays small and
// stalls large streams: a stream in 1 MiB messages ran about 40% faster
// with these fixed windows. They also bound what a stream can buffer in the
// node when its reader is slow.
const (
	streamWindow = 2 << 20
	connWindow   = 8 << 20
)

// frameLimit is the largest frame between nodes: a message plus its signed
// header.
func (n *Node) frameLimit() int { return n.cfg.MaxMessageBytes + headerAllowance }

// headerAllowance is what a frame between nodes may carry on top of a
// message of max_message_bytes: its signed header and metadata.
const headerAllowance = 64 << 10

// Close releases the node's connections and databases.
func (n *Node) Close() error {
	var errs []error
	n.batch.Close()
	if n.peers != nil {
		n.peers.close()
	}
	if n.backends != nil {
		n.backends.close()
	}
	if n.registry != nil {
		errs = append(errs, n.registry.Close())
	}
	if n.evidence != nil {
		errs = append(errs, n.evidence.Close())
	}
	if n.state != nil {
		errs = append(errs, n.state.Close())
	}
	return errors.Join(errs...)
}

// Run serves until ctx ends, then stops gracefully. It writes the bound
// addresses to readyFile (if not empty) once every listener is up.
func (n *Node) Run(ctx context.Context, readyFile string) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	// A ready file left by an earlier run must not announce this one.
	if readyFile != "" {
		_ = os.Remove(readyFile)
		defer os.Remove(readyFile)
	}

	fedLis, err := net.Listen("tcp", n.cfg.Federation.Listen)
	if err != nil {
		return fmt.Errorf("federation listener: %w", err)
	}
	fed := n.federationServer()
	addrs := map[string]string{"federation": fedLis.Addr().String()}

	var servers []*grpc.Server
	var lis []net.Listener
	for _, le := range n.cfg.Local {
		l, err := net.Listen("tcp", le.Listen)
		if err != nil {
			fedLis.Close()
			for _, o := range lis {
				o.Close()
			}
			return fmt.Errorf("local listener %s: %w", le.Listen, err)
		}
		client, _ := id.ParseClient(le.Client)
		servers = append(servers, n.localServer(client))
		lis = append(lis, l)
		addrs["local/"+le.Client] = l.Addr().String()
	}

	if n.cfg.Admin.Listen != "" {
		l, err := net.Listen("tcp", n.cfg.Admin.Listen)
		if err != nil {
			fedLis.Close()
			for _, o := range lis {
				o.Close()
			}
			return fmt.Errorf("admin listener: %w", err)
		}
		servers = append(servers, n.adminServer())
		lis = append(lis, l)
		addrs["admin"] = l.Addr().String()
	}

	var wg sync.WaitGroup
	errc := make(chan error, len(servers)+2)
	wg.Go(func() { errc <- fed.Serve(fedLis) })
	for i, s := range servers {
		wg.Go(func() { errc <- s.Serve(lis[i]) })
	}
	wg.Go(func() { _ = n.gconf.Run(ctx) })
	wg.Go(func() { n.watchRegistration(ctx) })

	var runErr error
	if err := ready.Write(readyFile, addrs); err != nil {
		runErr = err
		cancel()
	} else {
		n.log.InfoContext(ctx, "node serving", slog.String(logging.KeyAddress, addrs["federation"]),
			slog.Int(logging.KeyEndpoints, len(n.cfg.Local)), slog.String(logging.KeyAdmin, addrs["admin"]))
	}

	select {
	case <-ctx.Done():
	case runErr = <-errc:
		cancel()
	}
	shutdown.GRPC(5*time.Second, append(servers, fed)...)
	wg.Wait()
	return runErr
}

// watchRegistration warns, at each configuration change, when this node,
// one of its local clients, its signing certificate or a service its
// backends: entries name is missing from the global configuration: the
// node serves, but peers would refuse it and its calls would fail (a
// certificate removed in a rotation before the node was switched to the
// new one is refused as SIGNER_UNKNOWN), and a backend whose service is
// not registered, often a typo in its identifier, is never called. The
// warning is repeated only when what is missing changes.
func (n *Node) watchRegistration(ctx context.Context) {
	last := ""
	for {
		changed := n.gconf.Changed()
		if v := n.gconf.Current(); v != nil {
			var missing []string
			if _, ok := v.Node(n.self.String()); !ok {
				missing = append(missing, "node "+n.self.String())
			}
			for _, le := range n.cfg.Local {
				if c, err := id.ParseClient(le.Client); err == nil && !v.HasClient(c) {
					missing = append(missing, "client "+le.Client)
				}
			}
			if _, owner, ok := v.SigningCertificate(n.signer.CertificateSHA256()); !ok || owner != n.member.String() {
				missing = append(missing, fmt.Sprintf("signing certificate %x of member %s",
					n.signer.CertificateSHA256(), n.member))
			}
			for _, be := range n.cfg.Backends {
				if _, ok := v.Service(be.Service); !ok {
					missing = append(missing, "service "+be.Service+" (backends)")
				}
			}
			// Connections to nodes that left the configuration, or moved,
			// are closed instead of idling with keepalives forever, and so
			// are the connections nodes that left opened to this one.
			keep := map[string]bool{}
			for _, nd := range v.Config.GetNodes() {
				keep[nd.GetSpiffeId()+"|"+nd.GetAddress()] = true
			}
			n.peers.retain(keep)
			n.inbound.retain(func(peer string) bool {
				_, ok := v.Node(peer)
				return ok
			})
			now := strings.Join(missing, ", ")
			if now != last && now != "" {
				n.log.WarnContext(ctx, "not in the global configuration; register with the ketnoi CLI",
					slog.String(logging.KeyMissing, now), slog.Uint64(logging.KeyVersion, v.Version()))
			}
			last = now
		}
		if !n.awaitChangeOrExpiry(ctx, changed) {
			return
		}
	}
}

// awaitChangeOrExpiry waits for the next configuration, and says in the log
// when the current one expires meanwhile: the node then refuses every
// exchange and reports NOT_SERVING, which an operator must not have to
// find out from the callers. It reports false once ctx ends.
func (n *Node) awaitChangeOrExpiry(ctx context.Context, changed <-chan struct{}) bool {
	var expired <-chan time.Time
	v := n.gconf.Current()
	if v != nil {
		if d := v.ExpiresAt().Sub(n.now()); d > 0 {
			t := time.NewTimer(d)
			defer t.Stop()
			expired = t.C
		}
	}
	select {
	case <-ctx.Done():
		return false
	case <-changed:
		return true
	case <-expired:
		n.log.ErrorContext(ctx, "global configuration expired: exchanges are refused until the registry sends a newer one",
			slog.Uint64(logging.KeyVersion, v.Version()), slog.Time(logging.KeyExpiresAt, v.ExpiresAt()))
	}
	select {
	case <-ctx.Done():
		return false
	case <-changed:
		return true
	}
}

func (n *Node) federationServer() *grpc.Server {
	authz := func(peer spiffeid.ID, _ [][]*x509.Certificate) error {
		v := n.gconf.Current()
		if v == nil {
			return errors.New("no global configuration: refusing all peers")
		}
		if _, ok := v.Node(peer.String()); !ok {
			return fmt.Errorf("peer %s is not a node of the global configuration", peer)
		}
		return nil
	}
	s := grpc.NewServer(
		grpc.Creds(n.inbound.track(mtls.LogRefusals(mtls.ServerCredentials(n.identity, authz), n.log))),
		grpc.MaxRecvMsgSize(n.frameLimit()),
		grpc.MaxSendMsgSize(n.frameLimit()),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 20 * time.Second, PermitWithoutStream: true}),
		grpc.KeepaliveParams(serverKeepalive),
		grpc.NumStreamWorkers(streamWorkers),
		grpc.InitialWindowSize(streamWindow), grpc.InitialConnWindowSize(connWindow),
		experimental.BufferPool(n.pool),
		grpc.ForceServerCodecV2(exchange.NewCodec()),
		grpc.ChainStreamInterceptor(n.logStream, recoverStream(n.log)),
	)
	exchangev1.RegisterFederationServiceServer(s, &provider{n: n})
	hs := health.NewServer()
	healthpb.RegisterHealthServer(s, hs)
	return s
}

// adminServer serves operators on loopback: health and the live evidence
// log. It keeps gRPC's default send limit (2 GiB): the evidence service
// bounds its responses itself, to one record, however large, plus 2 MiB.
func (n *Node) adminServer() *grpc.Server {
	s := grpc.NewServer(grpc.ChainUnaryInterceptor(n.logUnary, recoverUnary(n.log)))
	healthpb.RegisterHealthServer(s, &nodeHealth{n: n})
	evidencev1.RegisterEvidenceServiceServer(s, evidence.NewService(n.evidence, n.roots))
	return s
}

// reconnect caps the wait between attempts to reach a registry, peer node
// or backend that went away at 3 s. gRPC's default grows it to two
// minutes, so after an outage of half a minute calls kept failing for 10 to
// 20 s after the other side was back; a node has few connections, and
// trying every few seconds costs nothing worth saving.
var reconnect = grpc.ConnectParams{
	Backoff:           backoff.Config{BaseDelay: 250 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: 3 * time.Second},
	MinConnectTimeout: 5 * time.Second,
}

// backendKeepalive ends a call whose backend vanished without closing its
// connection. It pings a quiet connection only while calls are open, and
// less often than gRPC's default server policy (one ping per 5 minutes)
// allows, so that backends need no keepalive settings of their own.
var backendKeepalive = keepalive.ClientParameters{Time: 6 * time.Minute, Timeout: 20 * time.Second}

// appKeepalive lets applications ping as often as grpc-go clients may
// (every 10 s), with or without a call open. gRPC's default policy allows
// one ping per 5 minutes and answers the third faster one with GOAWAY,
// which would end the real-time feeds that such pings are meant to keep up.
var appKeepalive = keepalive.EnforcementPolicy{MinTime: 10 * time.Second, PermitWithoutStream: true}

// serverKeepalive makes a node ping a client whose connection has been
// quiet for a minute and drop it when no answer comes in 20 s. A feed whose
// caller vanished without closing its connection (host down, cable cut)
// then ends, and is recorded as ended, within about 80 s instead of after
// gRPC's default two hours.
var serverKeepalive = keepalive.ServerParameters{Time: time.Minute, Timeout: 20 * time.Second}

func (n *Node) localServer(client id.Client) *grpc.Server {
	c := &consumer{n: n, client: client}
	s := grpc.NewServer(
		grpc.ForceServerCodecV2(n.codec),
		grpc.UnknownServiceHandler(c.handle),
		grpc.MaxRecvMsgSize(n.cfg.MaxMessageBytes),
		grpc.MaxSendMsgSize(n.cfg.MaxMessageBytes),
		grpc.KeepaliveEnforcementPolicy(appKeepalive),
		grpc.KeepaliveParams(serverKeepalive),
		grpc.NumStreamWorkers(streamWorkers),
		grpc.InitialWindowSize(streamWindow), grpc.InitialConnWindowSize(connWindow),
		experimental.BufferPool(n.pool),
		grpc.ChainStreamInterceptor(n.logStream, recoverStream(n.log)),
		grpc.ChainUnaryInterceptor(n.logUnary, recoverUnary(n.log)),
	)
	healthpb.RegisterHealthServer(s, &nodeHealth{n: n})
	return s
}
