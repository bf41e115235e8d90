package integration

import (
	"context"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ketnoi/ketnoi/integration/cluster"
)

// relay forwards every TCP connection it accepts on loopback to target and
// counts them: a second address at which a node can be reached without
// restarting it. TLS passes through untouched, and nodes authorize peers
// by SPIFFE ID, not by address.
type relay struct {
	lis      net.Listener
	target   string
	accepted atomic.Int64
	open     atomic.Int64
	wg       sync.WaitGroup
	mu       sync.Mutex
	conns    map[net.Conn]bool
}

// startRelay listens on 127.0.0.1 and relays to target until the test ends.
func startRelay(t *testing.T, target string) *relay {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &relay{lis: lis, target: target, conns: map[net.Conn]bool{}}
	r.wg.Go(r.serve)
	t.Cleanup(func() {
		lis.Close()
		r.mu.Lock()
		for c := range r.conns {
			c.Close()
		}
		r.conns = nil
		r.mu.Unlock()
		r.wg.Wait()
	})
	return r
}

// serve accepts until the listener is closed.
func (r *relay) serve() {
	for {
		in, err := r.lis.Accept()
		if err != nil {
			return
		}
		r.accepted.Add(1)
		r.wg.Go(func() { r.pipe(in) })
	}
}

// pipe copies both ways between in and a new connection to the target and
// closes both when either side closes.
func (r *relay) pipe(in net.Conn) {
	defer in.Close()
	out, err := net.DialTimeout("tcp", r.target, 5*time.Second)
	if err != nil {
		return
	}
	defer out.Close()
	if !r.track(in, out) {
		return
	}
	r.open.Add(1)
	defer r.open.Add(-1)
	defer r.untrack(in, out)
	done := make(chan struct{}, 2)
	go func() { io.Copy(out, in); done <- struct{}{} }()
	go func() { io.Copy(in, out); done <- struct{}{} }()
	<-done
}

// track registers conns for closing at cleanup; it reports false once the
// relay is closed.
func (r *relay) track(conns ...net.Conn) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.conns == nil {
		return false
	}
	for _, c := range conns {
		r.conns[c] = true
	}
	return true
}

func (r *relay) untrack(conns ...net.Conn) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, c := range conns {
		delete(r.conns, c)
	}
}

// testMovedProvider registers the provider node at a second address (a
// relay to its federation listener) with `ketnoi node set-address`, and
// checks that the consumer's calls go there once it holds the new
// configuration; then moves it back and checks that the consumer closes
// its connection to the address no longer registered.
func testMovedProvider(ctx context.Context, t *testing.T, c *cluster.Cluster) {
	consumer := dial(t, c.LocalAddr("vpcp", cluster.ConsumerClient))
	home := c.Proc("bnv").Addrs["federation"]
	r := startRelay(t, home)
	move := func(addr string) {
		t.Helper()
		if _, err := c.CLI(ctx, "node", "set-address", "--id", providerNode, "--address", addr); err != nil {
			t.Fatal(err)
		}
		if err := c.WaitSynced(ctx); err != nil {
			t.Fatal(err)
		}
	}

	move(r.lis.Addr().String())
	if _, _, err := convert(ctx, consumer, "00013"); err != nil {
		t.Fatalf("call after the provider moved: %v", err)
	}
	if r.accepted.Load() == 0 {
		t.Fatal("the call did not go through the provider's new address")
	}

	move(home)
	deadline := time.Now().Add(10 * time.Second)
	for r.open.Load() != 0 {
		if time.Now().After(deadline) {
			t.Fatal("the consumer kept its connection to the provider's old address")
		}
		time.Sleep(20 * time.Millisecond)
	}
	accepted := r.accepted.Load()
	if _, _, err := convert(ctx, consumer, "00013"); err != nil {
		t.Fatalf("call after the provider moved back: %v", err)
	}
	if n := r.accepted.Load(); n != accepted {
		t.Errorf("the consumer dialled the old address again (%d connections, was %d)", n, accepted)
	}
}
