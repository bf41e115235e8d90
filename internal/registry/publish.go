package registry

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"slices"
	"time"

	bolt "go.etcd.io/bbolt"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/ketnoi/ketnoi/internal/logging"
	"github.com/ketnoi/ketnoi/internal/sign"
	registryv1 "github.com/ketnoi/ketnoi/proto/ketnoi/registry/v1"
)

// reissueRetry is the wait before retrying a failed re-issue.
const reissueRetry = time.Minute

// published is one signed configuration version.
type published struct {
	version  uint64
	issuedAt time.Time
	signed   *registryv1.SignedConfiguration
}

// errUnchanged is returned by a change function when the request asks for
// what is already stored: changeIf then publishes nothing, so that a
// repeated request does not make every node take a new configuration that
// differs only in its version.
var errUnchanged = errors.New("nothing to change")

// change runs fn in a write transaction and, when fn succeeds, publishes a
// new configuration version built from the same transaction. An error from
// fn, or from signing, leaves the store unchanged.
func (r *Registry) change(fn func(tx *bolt.Tx, now time.Time) error) (uint64, error) {
	version, _, err := r.changeIf(fn)
	return version, err
}

// changeIf is change for a request that may ask for what is already
// stored: when fn returns errUnchanged it returns the current version and
// changed false, having stored and published nothing.
func (r *Registry) changeIf(fn func(tx *bolt.Tx, now time.Time) error) (version uint64, changed bool, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	p, err := r.commitLocked(fn)
	if errors.Is(err, errUnchanged) {
		return r.current.Load().version, false, nil
	}
	if err != nil {
		return 0, false, err
	}
	return p.version, true, nil
}

// commitLocked is change with r.mu held.
func (r *Registry) commitLocked(fn func(tx *bolt.Tx, now time.Time) error) (*published, error) {
	now := time.Now()
	var p *published
	err := r.db.Update(func(tx *bolt.Tx) error {
		if err := fn(tx, now); err != nil {
			return err
		}
		var err error
		p, err = r.issue(tx, now)
		return err
	})
	if err != nil {
		return nil, err
	}
	r.current.Store(p)
	r.hub.publish(p)
	return p, nil
}

// issue builds, signs and stores the next configuration version.
func (r *Registry) issue(tx *bolt.Tx, now time.Time) (*published, error) {
	c, err := loadContent(tx)
	if err != nil {
		return nil, err
	}
	meta := tx.Bucket(bucketMeta)
	last := max(getUint(meta, keyVersion), r.floor.Load())
	if last == math.MaxUint64 {
		// The next version would wrap to 0, and nodes ignore a version not
		// above the one they hold.
		return nil, status.Errorf(codes.ResourceExhausted,
			"configuration version %d is the last one: no further version can be published", last)
	}
	version := last + 1
	r.frame(c)
	c.Version = version
	c.IssuedAt = timestamppb.New(now)
	c.ExpiresAt = timestamppb.New(now.Add(r.cfg.ConfigTTL))

	body, err := proto.MarshalOptions{Deterministic: true}.Marshal(c)
	if err != nil {
		return nil, fmt.Errorf("encode configuration: %w", err)
	}
	sig, err := r.cfg.Signer.Sign(sign.TypeConfiguration, body)
	if err != nil {
		return nil, fmt.Errorf("sign configuration: %w", err)
	}
	signed := &registryv1.SignedConfiguration{
		Configuration:    body,
		Signature:        sig,
		CertificateChain: [][]byte{r.cfg.Signer.Certificate().Raw},
	}

	if err := putProto(meta, keySigned, signed); err != nil {
		return nil, fmt.Errorf("store configuration: %w", err)
	}
	if err := putUint(meta, keyVersion, version); err != nil {
		return nil, fmt.Errorf("store configuration version: %w", err)
	}
	return &published{version: version, issuedAt: now, signed: signed}, nil
}

// frame sets the parts of a configuration that come from the registry's
// settings rather than its store.
func (r *Registry) frame(c *registryv1.GlobalConfiguration) {
	c.Instance = r.cfg.Instance
	c.TrustDomain = r.cfg.TrustDomain.Name()
	c.TrustAnchors = nil
	for _, a := range r.cfg.TrustAnchors {
		c.TrustAnchors = append(c.TrustAnchors, a.Raw)
	}
}

// resume serves the stored configuration when it matches the store and the
// settings, is less than half its TTL old and is not below ResumeAbove;
// otherwise it publishes a new version, above ResumeAbove. ResumeAbove on a
// state file that holds no configuration is refused: nothing was restored,
// and publishing an empty federation above every node's version would
// empty theirs.
func (r *Registry) resume() (err error) {
	defer guardDamage(r.db.Path(), &err)()
	var (
		stored *published
		last   uint64 // the stored version, current or not
		fresh  bool   // no configuration was ever published
	)
	err = r.db.View(func(tx *bolt.Tx) error {
		meta := tx.Bucket(bucketMeta)
		last, fresh = getUint(meta, keyVersion), meta.Get(keySigned) == nil
		var err error
		stored, err = r.storedIfCurrent(tx)
		return err
	})
	if err != nil {
		return err
	}
	above := r.cfg.ResumeAbove
	switch {
	case above > 0 && fresh:
		return errNothingToResume(r.db.Path())
	case above > 0 && above <= last:
		r.log.Info("resume above ignored: the state file holds a configuration version at or above it",
			slog.Uint64(logging.KeyVersion, last), slog.Uint64(logging.KeyResumeAbove, above))
	}
	if stored != nil && stored.version >= above {
		r.current.Store(stored)
		return nil
	}
	// The same floor a node reporting a newer version raises: the
	// version published next is above it.
	r.floor.Store(max(r.floor.Load(), above))
	r.mu.Lock()
	defer r.mu.Unlock()
	p, err := r.commitLocked(func(tx *bolt.Tx, _ time.Time) error {
		meta := tx.Bucket(bucketMeta)
		// Grant numbers issued after the backup are lost with it too. Every
		// grant was added by a change of its own, so none issued before
		// version ResumeAbove is numbered above it: numbering on from there
		// never gives a new grant the identifier of one nodes or evidence
		// records already know.
		if getUint(meta, keyGrantSeq) < above {
			return putUint(meta, keyGrantSeq, above)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("publish configuration: %w", err)
	}
	if above > last {
		r.log.Info("resumed above the given configuration version",
			slog.Uint64(logging.KeyVersion, p.version), slog.Uint64(logging.KeyResumeAbove, above))
	}
	return nil
}

// errNothingToResume refuses ResumeAbove on a state file that holds no
// configuration: a missing or empty file, or one the registry never
// published from. The message names ketnoi-registry's flag, the one way
// ResumeAbove is set.
func errNothingToResume(path string) error {
	return fmt.Errorf("--resume-above is for a restored state file, but %s holds no configuration: "+
		"restore the backup to it first", path)
}

// storedIfCurrent returns the stored configuration, or nil when there is
// none or it must be replaced.
func (r *Registry) storedIfCurrent(tx *bolt.Tx) (*published, error) {
	signed := &registryv1.SignedConfiguration{}
	ok, err := getProto(tx.Bucket(bucketMeta), keySigned, signed)
	if err != nil || !ok {
		return nil, err
	}
	old := &registryv1.GlobalConfiguration{}
	if err := proto.Unmarshal(signed.GetConfiguration(), old); err != nil {
		return nil, fmt.Errorf("decode stored configuration: %w", err)
	}
	want, err := loadContent(tx)
	if err != nil {
		return nil, err
	}
	r.frame(want)

	issued := old.GetIssuedAt().AsTime()
	switch {
	case !slices.EqualFunc(signed.GetCertificateChain(), [][]byte{r.cfg.Signer.Certificate().Raw}, bytes.Equal):
		return nil, nil
	case old.GetExpiresAt().AsTime().Sub(issued) != r.cfg.ConfigTTL:
		return nil, nil
	case time.Since(issued) >= r.cfg.ConfigTTL/2:
		return nil, nil
	}
	version := old.GetVersion()
	old.Version, old.IssuedAt, old.ExpiresAt = 0, nil, nil
	if !proto.Equal(old, want) {
		return nil, nil
	}
	return &published{version: version, issuedAt: issued, signed: signed}, nil
}

// untilReissue is the time left before the current configuration is half
// way to its expiry.
func (r *Registry) untilReissue() time.Duration {
	return time.Until(r.current.Load().issuedAt.Add(r.cfg.ConfigTTL / 2))
}

// reissueLoop re-publishes the configuration whenever half its TTL has
// passed without another change.
func (r *Registry) reissueLoop(ctx context.Context) {
	defer close(r.reissueDone)
	t := time.NewTimer(r.untilReissue())
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if err := r.reissueIfDue(ctx); err != nil {
			r.log.ErrorContext(ctx, "re-issuing configuration failed", slog.Any(logging.KeyError, err))
			t.Reset(min(reissueRetry, r.cfg.ConfigTTL/4))
			continue
		}
		t.Reset(r.untilReissue())
	}
}

// reissueIfDue publishes the unchanged content under a new version unless
// another change has already done so.
func (r *Registry) reissueIfDue(ctx context.Context) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.untilReissue() > 0 {
		return nil
	}
	p, err := r.commitLocked(func(*bolt.Tx, time.Time) error { return nil })
	if err != nil {
		return err
	}
	r.log.InfoContext(ctx, "configuration re-issued", slog.Uint64(logging.KeyVersion, p.version))
	return nil
}
