package registry

import (
	"context"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	bolt "go.etcd.io/bbolt"

	"github.com/ketnoi/ketnoi/internal/logging"
)

// aheadWarnEvery is the least time between two warnings about one peer
// holding a newer configuration than the registry: a node opens its watch
// again within seconds whenever the stream breaks, and one line per peer
// and period is enough to be seen.
const aheadWarnEvery = 10 * time.Minute

// maxAheadPeers bounds the peers aheadWarnings remembers one by one, on
// top of dropping entries older than aheadWarnEvery once per period. Past
// it, other peers share one entry, so they are still warned about, only
// less often.
const maxAheadPeers = 4096

// aheadWarnings rate-limits, per peer, the warning that a watcher holds a
// configuration version above the registry's. Its zero value is ready.
type aheadWarnings struct {
	mu     sync.Mutex
	last   map[spiffeid.ID]time.Time // when each peer was last warned about
	pruned time.Time                 // when old entries were last dropped
}

// due reports whether a warning about peer is due at now, and if so
// records it. Only node IDs are remembered one by one: nodes are the
// callers that watch, and there are no more of them than the CA issued.
// Operators, and nodes past maxAheadPeers, share the zero ID.
func (a *aheadWarnings) due(peer spiffeid.ID, isNode bool, now time.Time) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.last == nil {
		a.last = make(map[spiffeid.ID]time.Time)
	}
	if !isNode {
		peer = spiffeid.ID{}
	}
	if now.Sub(a.pruned) >= aheadWarnEvery {
		// An entry older than the period holds no warning back any more,
		// so dropping it changes nothing.
		for p, t := range a.last {
			if now.Sub(t) >= aheadWarnEvery {
				delete(a.last, p)
			}
		}
		a.pruned = now
	}
	if _, ok := a.last[peer]; !ok && len(a.last) >= maxAheadPeers {
		peer = spiffeid.ID{}
	}
	if t, ok := a.last[peer]; ok && now.Sub(t) < aheadWarnEvery {
		return false
	}
	a.last[peer] = now
	return true
}

// warnAhead logs, at most once per peer and aheadWarnEvery, that the peer
// watches with a configuration version above the registry's own. Nodes
// ignore a configuration not above the one they hold, so until the
// registry's version passes theirs none of its changes, revocations
// included, reach them: the registry was restored from a backup, or its
// state file replaced, and started without --resume-above.
func (r *Registry) warnAhead(ctx context.Context, peer spiffeid.ID, known, version uint64) {
	if !r.ahead.due(peer, r.isNode(peer), time.Now()) {
		return
	}
	r.log.WarnContext(ctx, "a watcher holds a newer configuration than the registry: changes do not reach it",
		slog.String(logging.KeyPeer, peer.String()),
		slog.Uint64(logging.KeyKnownVersion, known),
		slog.Uint64(logging.KeyVersion, version),
		slog.String(logging.KeyRemedy, "restart ketnoi-registry with --resume-above "+
			strconv.FormatUint(known, 10)+" (or the highest version any node holds)"))
}

// maxFloorJump bounds how far above the registry's own version a node's
// report may raise the floor. A restore loses the versions published since
// its backup, a few a day (two re-issues and the changes), so a report a
// million versions ahead is a broken or hostile node, which must not use up
// the version numbers.
const maxFloorJump = 1 << 20

// raiseFloor notes that a node registered in the current configuration
// holds configuration version known, above the registry's version: the
// next version published is above it (see issue). Reports from callers
// that are not registered nodes, or implausibly far ahead, are ignored.
func (r *Registry) raiseFloor(peer spiffeid.ID, known, version uint64) {
	if known-version > maxFloorJump || !r.registeredNode(peer) {
		return
	}
	for {
		old := r.floor.Load()
		if known <= old || r.floor.CompareAndSwap(old, known) {
			return
		}
	}
}

// registeredNode reports whether peer is a node of the registry's state.
func (r *Registry) registeredNode(peer spiffeid.ID) bool {
	found := false
	_ = r.db.View(func(tx *bolt.Tx) error {
		found = tx.Bucket(bucketNodes).Get([]byte(peer.String())) != nil
		return nil
	})
	return found
}
