package registry

import (
	"context"
	"log/slog"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	bolt "go.etcd.io/bbolt"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/ketnoi/ketnoi/internal/logging"
)

// A node's SVID outlives its registration: it stays valid until it expires,
// and the registry serves its configuration to node-shaped IDs it does not
// know, since nodes may start before they are registered. So the registry
// remembers the nodes RemoveNode removed, in the state file, and refuses
// them until AddNode registers the same ID again.

// markRemoved remembers that node sid was removed at now.
func markRemoved(tx *bolt.Tx, sid spiffeid.ID, now time.Time) error {
	at := now.UTC().Format(time.RFC3339)
	return tx.Bucket(bucketRemovedNodes).Put([]byte(sid.String()), []byte(at))
}

// forgetRemoved lifts the refusal of a node that is registered again.
func forgetRemoved(tx *bolt.Tx, sid spiffeid.ID) error {
	return tx.Bucket(bucketRemovedNodes).Delete([]byte(sid.String()))
}

// refuseRemoved returns a PermissionDenied status when peer is a node that
// RemoveNode removed and AddNode has not added again, and nil otherwise.
// A refusal is logged by warnRemoved instead of the call log.
func (r *Registry) refuseRemoved(ctx context.Context, peer spiffeid.ID) error {
	var at string
	err := r.db.View(func(tx *bolt.Tx) error {
		at = string(tx.Bucket(bucketRemovedNodes).Get([]byte(peer.String())))
		return nil
	})
	if err != nil {
		return r.toStatus(ctx, "check removed nodes", err)
	}
	if at == "" {
		return nil
	}
	r.warnRemoved(ctx, peer, at)
	return status.Errorf(codes.PermissionDenied,
		"node %s was removed from the registry at %s; it is refused until an operator adds it again", peer, at)
}

// warnRemoved logs, at most once per node and peerWarnEvery, that a
// removed node still calls the registry, with the count of refused calls
// the line stands for, and keeps the call out of the call log. A removed
// node that keeps running retries its watch every few seconds, forever:
// one line per refusal would be hundreds an hour.
func (r *Registry) warnRemoved(ctx context.Context, peer spiffeid.ID, at string) {
	logging.SetReported(ctx)
	due, n := r.removed.due(peer, true, time.Now())
	if !due {
		return
	}
	method, _ := grpc.Method(ctx)
	r.log.WarnContext(ctx, "a removed node still calls the registry; it is refused",
		slog.String(logging.KeyPeer, peer.String()),
		slog.String(logging.KeyMethod, strings.TrimPrefix(method, "/")),
		slog.String(logging.KeyDetail, "removed at "+at),
		slog.Int(logging.KeyCount, n),
		slog.Duration(logging.KeyPeriod, peerWarnEvery),
		slog.String(logging.KeyRemedy, "stop the node, or add it again with ketnoi node add"))
}
