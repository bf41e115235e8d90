package gconf

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/ketnoi/ketnoi/internal/logging"
	registryv1 "github.com/ketnoi/ketnoi/proto/ketnoi/registry/v1"
)

var (
	bucketConfig = []byte("gconf")
	keyCurrent   = []byte("current")
)

// Source holds the node's current configuration: the last good one from the
// cache at start, then every newer version the registry publishes. When the
// registry is unreachable the node keeps serving from what it has until that
// expires.
type Source struct {
	client registryv1.RegistryServiceClient
	roots  *x509.CertPool
	db     *bolt.DB
	log    *slog.Logger
	now    func() time.Time

	mu      sync.Mutex // serializes Accept: compare, store and swap as one step
	cur     atomic.Pointer[View]
	swapped atomic.Pointer[chan struct{}] // closed and replaced on every swap

	// alert returns the TLS alert with which the registry last refused
	// the node's handshake, or ""; see SetAlerts.
	alert func() string
	// refused holds why the registry refused the node in the last watch,
	// empty when the last watch was not refused or delivered a version.
	refused atomic.Pointer[string]
}

// NewSource loads the cached configuration from db (a node state database)
// and returns a source that Run keeps current through client.
func NewSource(db *bolt.DB, client registryv1.RegistryServiceClient, roots *x509.CertPool, logger *slog.Logger) (*Source, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	s := &Source{client: client, roots: roots, db: db, log: logger, now: time.Now}
	ch := make(chan struct{})
	s.swapped.Store(&ch)
	if err := db.Update(func(tx *bolt.Tx) error {
		_, err := tx.CreateBucketIfNotExists(bucketConfig)
		return err
	}); err != nil {
		return nil, fmt.Errorf("gconf: create cache bucket: %w", err)
	}

	var raw []byte
	if err := db.View(func(tx *bolt.Tx) error {
		raw = append([]byte(nil), tx.Bucket(bucketConfig).Get(keyCurrent)...)
		return nil
	}); err != nil {
		return nil, fmt.Errorf("gconf: read cache: %w", err)
	}
	if len(raw) == 0 {
		return s, nil
	}
	sc := &registryv1.SignedConfiguration{}
	if err := proto.Unmarshal(raw, sc); err != nil {
		return nil, fmt.Errorf("gconf: decode cached configuration: %w", err)
	}
	cfg, err := Verify(sc, roots, s.now())
	if err != nil {
		// A cache that no longer verifies (for example after a CA change) is
		// not fatal: the node waits for the registry instead.
		logger.WarnContext(context.Background(), "cached global configuration rejected", slog.Any(logging.KeyError, err))
		return s, nil
	}
	s.cur.Store(NewTrustedView(cfg, s.roots, s.now()))
	logger.InfoContext(context.Background(), "loaded cached global configuration", slog.Uint64(logging.KeyVersion, cfg.GetVersion()))
	return s, nil
}

// SetAlerts gives the source the TLS alert with which the registry last
// refused the node's handshake, such as [mtls.AlertCatcher.Alert]
// returns: gRPC passes a refused certificate on only as an Unavailable
// status whose text depends on timing. Call it before Run.
func (s *Source) SetAlerts(alert func() string) { s.alert = alert }

// Refused says why the registry refused this node in its last attempt to
// watch the configuration, such as "an operator removed it", and is empty
// when it did not or the watch has delivered a configuration since. It
// lets a node without a configuration tell its callers that the registry
// answered and refused, rather than that it may be unreachable.
func (s *Source) Refused() string {
	if p := s.refused.Load(); p != nil {
		return *p
	}
	return ""
}

// Current returns the current view, or nil before any configuration arrived.
func (s *Source) Current() *View { return s.cur.Load() }

// Changed returns a channel closed at the next configuration change.
func (s *Source) Changed() <-chan struct{} { return *s.swapped.Load() }

// Accept verifies sc and makes it current when it is newer than what the
// source holds, storing it durably first.
func (s *Source) Accept(sc *registryv1.SignedConfiguration) error {
	cfg, err := Verify(sc, s.roots, s.now())
	if err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if cur := s.cur.Load(); cur != nil && cfg.GetVersion() <= cur.Version() {
		if cfg.GetVersion() < cur.Version() {
			// A registry started on an empty or restored database; its
			// changes never reach this node until its versions pass ours.
			s.log.WarnContext(context.Background(), "registry serves an older global configuration than this node holds; keeping the newer one",
				slog.Uint64(logging.KeyVersion, cfg.GetVersion()), slog.Uint64("held_version", cur.Version()))
		}
		return nil
	}
	raw, err := proto.Marshal(sc)
	if err != nil {
		return fmt.Errorf("gconf: encode: %w", err)
	}
	if err := s.db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketConfig).Put(keyCurrent, raw)
	}); err != nil {
		return fmt.Errorf("gconf: store: %w", err)
	}
	s.cur.Store(NewTrustedView(cfg, s.roots, s.now()))
	next := make(chan struct{})
	old := s.swapped.Swap(&next)
	close(*old)
	s.log.InfoContext(context.Background(), "global configuration updated", slog.Uint64(logging.KeyVersion, cfg.GetVersion()))
	return nil
}

// Run watches the registry until ctx ends, reconnecting with a capped
// backoff. It returns ctx's error.
func (s *Source) Run(ctx context.Context) error {
	const minWait, maxWait = 200 * time.Millisecond, 5 * time.Second
	wait := minWait
	failing := false
	for {
		err := s.watch(ctx)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if errors.Is(err, errProgress) {
			// The watch worked for a while: a new outage deserves a new log
			// line and a quick retry.
			failing, wait = false, minWait
		}
		hint := registryRefusal(err, s.lastAlert())
		if hint != "" {
			s.refused.Store(&hint)
		} else {
			s.refused.Store(nil)
		}
		if !failing {
			attrs := []any{slog.Any(logging.KeyError, err)}
			if hint != "" {
				attrs = append(attrs, slog.String(logging.KeyReason, hint))
			}
			switch {
			case s.Current() == nil && hint != "":
				s.log.WarnContext(ctx, "registry refused this node and no global configuration yet; exchanges are refused", attrs...)
			case s.Current() == nil:
				s.log.WarnContext(ctx, "registry unreachable and no global configuration yet; exchanges are refused", attrs...)
			default:
				s.log.WarnContext(ctx, "registry watch interrupted; serving from the current configuration", attrs...)
			}
			failing = true
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(wait):
		}
		wait = min(wait*2, maxWait)
	}
}

// lastAlert returns the alert SetAlerts gave, or "".
func (s *Source) lastAlert() string {
	if s.alert == nil {
		return ""
	}
	return s.alert()
}

// registryRefusal says what an operator should do when err shows that the
// registry refuses this node, and is empty otherwise. The registry refuses
// a certificate with a TLS alert, which is how a server refusing the
// client's certificate answers in TLS 1.3 and which gRPC passes on only as
// an Unavailable status, at best with the alert in its text (alert is the
// one the node's credentials caught, or ""); it refuses a node an
// operator removed with PermissionDenied.
func registryRefusal(err error, alert string) string {
	const certificate = "the registry refused this node's certificate"
	const check = ": check the node's svid and bundle settings; the registry's log says why"
	switch {
	case err == nil:
		return ""
	case status.Code(err) == codes.PermissionDenied:
		return "the registry refuses this node: an operator removed it or it may not read the configuration; " +
			"peers refuse it once their configuration lacks it, and this node refuses calls once its configuration expires"
	case status.Code(err) == codes.Unavailable && alert != "":
		return certificate + " (" + alert + ")" + check
	case strings.Contains(err.Error(), "remote error: tls:"):
		return certificate + check
	}
	return ""
}

// errProgress reports that a watch delivered at least one configuration
// before it ended, so the next attempt should not back off long.
var errProgress = errors.New("watch ended after progress")

func (s *Source) watch(ctx context.Context) error {
	var known uint64
	if v := s.cur.Load(); v != nil {
		known = v.Version()
	}
	stream, err := s.client.WatchConfiguration(ctx, &registryv1.WatchConfigurationRequest{KnownVersion: known})
	if err != nil {
		return err
	}
	progressed := false
	for {
		resp, err := stream.Recv()
		if err != nil {
			if progressed {
				return fmt.Errorf("%w: %w", errProgress, err)
			}
			return err
		}
		if err := s.Accept(resp.GetConfiguration()); err != nil {
			s.log.ErrorContext(ctx, "rejected global configuration from registry", slog.Any(logging.KeyError, err))
			continue
		}
		progressed = true
	}
}
