package registry

import (
	"sync"
)

// hub fans published configurations out to watch streams. Publishing never
// blocks on a watcher: each watcher holds at most one pending version, and a
// newer version replaces an older one it has not taken yet.
type hub struct {
	mu       sync.Mutex
	watchers map[*watcher]struct{}
	closed   chan struct{} // closed when the registry shuts down
}

// watcher is the mailbox of one watch stream.
type watcher struct {
	pending chan *published // capacity one: the newest version not yet taken
}

func newHub() *hub {
	return &hub{watchers: make(map[*watcher]struct{}), closed: make(chan struct{})}
}

// subscribe adds a watcher; the caller must unsubscribe it.
func (h *hub) subscribe() *watcher {
	w := &watcher{pending: make(chan *published, 1)}
	h.mu.Lock()
	h.watchers[w] = struct{}{}
	h.mu.Unlock()
	return w
}

// unsubscribe removes a watcher.
func (h *hub) unsubscribe(w *watcher) {
	h.mu.Lock()
	delete(h.watchers, w)
	h.mu.Unlock()
}

// publish hands p to every watcher, replacing any version still pending.
func (h *hub) publish(p *published) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for w := range h.watchers {
		select {
		case <-w.pending:
		default:
		}
		// Only this goroutine (holding h.mu) sends, so the slot is free now.
		w.pending <- p
	}
}

// close ends every watch and returns how many were open.
func (h *hub) close() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	select {
	case <-h.closed:
	default:
		close(h.closed)
	}
	return len(h.watchers)
}
