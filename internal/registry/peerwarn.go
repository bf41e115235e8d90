package registry

import (
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// peerWarnEvery is the least time between two warnings of one kind about
// one peer: a node calls again within seconds whenever a call fails or
// its watch breaks, and one line per peer and period, with the count of
// the occasions it stands for, is enough to be seen.
const peerWarnEvery = 10 * time.Minute

// maxWarnPeers bounds the peers a peerWarnings remembers one by one, on
// top of dropping, once per period, the entries that hold nothing back.
// Past it, other peers share one entry, so they are still warned about,
// only less often.
const maxWarnPeers = 4096

// peerWarnings rate-limits one kind of warning per peer. Its zero value
// is ready.
type peerWarnings struct {
	mu     sync.Mutex
	peers  map[spiffeid.ID]*peerWarning
	pruned time.Time // when entries were last dropped
}

// peerWarning is what a peerWarnings remembers of one peer.
type peerWarning struct {
	last    time.Time // when the peer was last warned about
	skipped int       // occasions since then that were not logged
}

// due reports whether a warning about peer is due at now, and how many
// occasions since the previous warning it stands for, this one included;
// an occasion that is not due is counted towards the next warning. Only
// node IDs are remembered one by one: nodes are the callers that repeat
// themselves, and there are no more of them than the CA issued.
// Operators, and nodes past maxWarnPeers, share the zero ID.
func (w *peerWarnings) due(peer spiffeid.ID, isNode bool, now time.Time) (bool, int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.peers == nil {
		w.peers = make(map[spiffeid.ID]*peerWarning)
	}
	if !isNode {
		peer = spiffeid.ID{}
	}
	if now.Sub(w.pruned) >= peerWarnEvery {
		w.prune(now)
	}
	e, ok := w.peers[peer]
	if !ok && len(w.peers) >= maxWarnPeers {
		peer = spiffeid.ID{}
		e, ok = w.peers[peer]
	}
	if ok && now.Sub(e.last) < peerWarnEvery {
		e.skipped++
		return false, 0
	}
	n := 1
	if ok {
		n += e.skipped
	}
	w.peers[peer] = &peerWarning{last: now}
	return true, n
}

// prune drops the entries that hold no warning back any more: warned
// about a period ago or more with no occasion since, or two periods ago
// or more, when the occasions passed over then are not worth keeping for
// a peer that has not come back since.
func (w *peerWarnings) prune(now time.Time) {
	for p, e := range w.peers {
		if age := now.Sub(e.last); age >= 2*peerWarnEvery || age >= peerWarnEvery && e.skipped == 0 {
			delete(w.peers, p)
		}
	}
	w.pruned = now
}

// forget drops what w remembers of peer, so that the next occasion about
// it is warned about at once. AddNode forgets a node's removal warnings:
// removed again later, it is a new removal, not the one already warned
// about. Peers sharing the zero ID are not forgotten one by one.
func (w *peerWarnings) forget(peer spiffeid.ID) {
	w.mu.Lock()
	defer w.mu.Unlock()
	delete(w.peers, peer)
}
