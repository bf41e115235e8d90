package registry

import (
	"context"
	"log/slog"
	"strconv"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	bolt "go.etcd.io/bbolt"

	"github.com/ketnoi/ketnoi/internal/logging"
)

// warnAhead logs, at most once per peer and peerWarnEvery, that the peer
// watches with a configuration version above the registry's own. Nodes
// ignore a configuration not above the one they hold, so until the
// registry's version passes theirs none of its changes, revocations
// included, reach them: the registry was restored from a backup, or its
// state file replaced, and started without --resume-above.
func (r *Registry) warnAhead(ctx context.Context, peer spiffeid.ID, known, version uint64) {
	if due, _ := r.ahead.due(peer, r.isNode(peer), time.Now()); !due {
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
