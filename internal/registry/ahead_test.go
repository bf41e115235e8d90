package registry

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc"

	"github.com/ketnoi/ketnoi/internal/logging/logtest"
	registryv1 "github.com/ketnoi/ketnoi/proto/ketnoi/registry/v1"
)

// aheadLines returns the log lines that warn about a watcher ahead of the
// registry.
func aheadLines(logs *logtest.Buffer) []string {
	var out []string
	for l := range strings.SplitSeq(logs.String(), "\n") {
		if strings.Contains(l, "holds a newer configuration than the registry") {
			out = append(out, l)
		}
	}
	return out
}

// watchOnce runs WatchConfiguration as peer with a context that has
// already ended: the handler compares versions once and returns.
func watchOnce(t *testing.T, r *Registry, peer string, known uint64) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.WithValue(t.Context(), callerKey{}, spiffeid.RequireFromString(peer)))
	cancel()
	err := (&registryServer{r: r}).WatchConfiguration(
		&registryv1.WatchConfigurationRequest{KnownVersion: known},
		&endedWatch{ctx: ctx})
	if err == nil {
		t.Fatal("WatchConfiguration on an ended stream returned nil")
	}
}

// endedWatch is a watch stream whose caller has left.
type endedWatch struct {
	grpc.ServerStream
	ctx context.Context
}

func (e *endedWatch) Context() context.Context { return e.ctx }

func (e *endedWatch) Send(*registryv1.WatchConfigurationResponse) error { return e.ctx.Err() }

// A node that watches with a version above the registry's, as after a
// restore without ResumeAbove, gets nothing it would take: the registry
// warns, naming the node, both versions and the flag that fixes it, once
// per node and period.
func TestWatchWarnsWhenWatcherIsAhead(t *testing.T) {
	f := newFixture(t)
	logs := logTo(&f.cfg)
	f.restart(t)
	ctx := testContext(t)
	version := decode(t, f.reg.Configuration()).GetVersion()
	known := version + 5

	stream, err := f.registryClient(t, nodeID).WatchConfiguration(ctx,
		&registryv1.WatchConfigurationRequest{KnownVersion: known})
	if err != nil {
		t.Fatalf("WatchConfiguration: %v", err)
	}
	defer stream.CloseSend()
	for len(aheadLines(logs)) == 0 {
		select {
		case <-ctx.Done():
			t.Fatalf("no warning about a watcher ahead of the registry:\n%s", logs)
		case <-time.After(5 * time.Millisecond):
		}
	}
	line := aheadLines(logs)[0]
	for _, want := range []string{
		"level=WARN",
		"peer=" + nodeID,
		fmt.Sprintf("known_version=%d", known),
		fmt.Sprintf(" version=%d", version),
		fmt.Sprintf(`remedy="restart ketnoi-registry with --resume-above %d`, known),
	} {
		if !strings.Contains(line, want) {
			t.Errorf("warning lacks %s: %s", want, line)
		}
	}

	// The same node again, and at a version the registry holds too: no
	// new line. Another node: its own line.
	watchOnce(t, f.reg, nodeID, known)
	watchOnce(t, f.reg, nodeID, known+1)
	watchOnce(t, f.reg, "spiffe://vn.ketnoi/node/NN/000.00.00.G09/node2", version)
	if n := len(aheadLines(logs)); n != 1 {
		t.Errorf("%d warnings after the same node watched again, want 1:\n%s", n, logs)
	}
	watchOnce(t, f.reg, "spiffe://vn.ketnoi/node/NN/000.00.00.G09/node2", known)
	if n := len(aheadLines(logs)); n != 2 {
		t.Errorf("%d warnings after a second node watched ahead, want 2:\n%s", n, logs)
	}
}

// Warnings are due once per peer and period, each standing for the
// occasions passed over since the previous one, and the peers remembered
// stay bounded: entries that hold nothing back are dropped once per
// period, and past the bound new peers share one entry.
func TestPeerWarningsRateLimit(t *testing.T) {
	var w peerWarnings
	t0 := time.Now()
	node := func(i int) spiffeid.ID {
		return spiffeid.RequireFromString(fmt.Sprintf("spiffe://vn.ketnoi/node/NN/000.00.00.G22/n%d", i))
	}
	due := func(t *testing.T, peer spiffeid.ID, isNode bool, now time.Time, want bool, wantN int) {
		t.Helper()
		if got, n := w.due(peer, isNode, now); got != want || n != wantN {
			t.Errorf("due(%s at %v) = %t, %d; want %t, %d", peer, now.Sub(t0), got, n, want, wantN)
		}
	}

	due(t, node(0), true, t0, true, 1)
	due(t, node(0), true, t0.Add(time.Second), false, 0)
	due(t, node(0), true, t0.Add(peerWarnEvery-time.Second), false, 0)
	t1 := t0.Add(peerWarnEvery)
	due(t, node(0), true, t1, true, 3) // it and the two passed over
	due(t, spiffeid.RequireFromString(adminID), false, t1, true, 1)
	due(t, spiffeid.RequireFromString("spiffe://vn.ketnoi/admin/bob"), false, t1, false, 0) // the operators' entry

	for i := 1; len(w.peers) < maxWarnPeers; i++ {
		if ok, _ := w.due(node(i), true, t1); !ok {
			t.Fatalf("first warning about node %d is not due", i)
		}
	}
	// Full of entries within the period: a new node shares the operators'
	// entry, warned about at t1.
	due(t, node(-1), true, t1.Add(time.Minute), false, 0)
	if len(w.peers) > maxWarnPeers {
		t.Errorf("%d peers remembered, bound %d", len(w.peers), maxWarnPeers)
	}
	// A period later the entries with nothing passed over go; the shared
	// one, which passed over bob and node -1, stays to count them.
	t2 := t1.Add(peerWarnEvery + time.Minute)
	due(t, node(-2), true, t2, true, 1)
	if len(w.peers) != 2 {
		t.Errorf("%d peers remembered a period later, want the new one and the shared one", len(w.peers))
	}
	due(t, spiffeid.RequireFromString(adminID), false, t2, true, 3)
	// Two periods after its last warning an entry goes anyway.
	due(t, node(-2), true, t2.Add(time.Second), false, 0)
	due(t, node(-3), true, t2.Add(2*peerWarnEvery), true, 1)
	if _, ok := w.peers[node(-2)]; ok {
		t.Error("an entry two periods old is still remembered")
	}
}

// A registry behind its nodes, as after a restore without ResumeAbove,
// publishes its next change above the newest version a registered node
// reported, so that the change reaches the nodes instead of going out at a
// version they already hold with other content. Reports of unregistered
// callers, and reports implausibly far ahead, move nothing.
func TestChangesPublishAboveWhatNodesHold(t *testing.T) {
	f := newFixture(t)
	ctx := testContext(t)
	admin := f.admin(t)
	f.populate(t, ctx, admin)
	version := decode(t, f.reg.Configuration()).GetVersion()

	watchOnce(t, f.reg, "spiffe://vn.ketnoi/node/NN/000.00.00.G09/unregistered", version+100)
	watchOnce(t, f.reg, nodeID, version+maxFloorJump+1)
	resp, err := admin.AddSubsystem(ctx, &registryv1.AddSubsystemRequest{SubsystemId: memberG22 + "/one"})
	if err != nil {
		t.Fatal(err)
	}
	if resp.GetVersion() != version+1 {
		t.Errorf("after reports that must not count, next version = %d, want %d", resp.GetVersion(), version+1)
	}

	held := version + 3 // the registered node holds versions lost with a backup
	watchOnce(t, f.reg, nodeID, held)
	resp, err = admin.AddSubsystem(ctx, &registryv1.AddSubsystemRequest{SubsystemId: memberG22 + "/two"})
	if err != nil {
		t.Fatal(err)
	}
	if resp.GetVersion() != held+1 {
		t.Errorf("next version after node %s reported %d = %d, want %d", nodeID, held, resp.GetVersion(), held+1)
	}
}
