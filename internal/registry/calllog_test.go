package registry

import (
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/ketnoi/ketnoi/internal/logging/logtest"
	registryv1 "github.com/ketnoi/ketnoi/proto/ketnoi/registry/v1"
)

// linesWith returns the log lines that contain every one of parts.
func linesWith(logs *logtest.Buffer, parts ...string) []string {
	var out []string
	for l := range strings.Lines(logs.String()) {
		all := true
		for _, p := range parts {
			all = all && strings.Contains(l, p)
		}
		if all {
			out = append(out, l)
		}
	}
	return out
}

// A removed node that keeps calling is refused every time, but the log
// says so once per node and period, with the count of refused calls the
// line stands for, instead of one failed call each. Other failures are
// logged as before.
func TestRemovedNodeLoggedOncePerPeriod(t *testing.T) {
	f := newFixture(t)
	logs := logTo(&f.cfg)
	f.restart(t)
	ctx := testContext(t)
	admin := f.admin(t)
	f.populate(t, ctx, admin)
	const node2 = "spiffe://vn.ketnoi/node/NN/000.00.00.G22/node2"
	if _, err := admin.AddNode(ctx, &registryv1.AddNodeRequest{SpiffeId: node2, Address: "127.0.0.1:8444"}); err != nil {
		t.Fatal(err)
	}
	if _, err := admin.RemoveNode(ctx, &registryv1.RemoveNodeRequest{SpiffeId: nodeID}); err != nil {
		t.Fatal(err)
	}

	const calls = 5
	for range calls {
		if err := f.getConfiguration(t, ctx, nodeID); status.Code(err) != codes.PermissionDenied {
			t.Fatalf("GetConfiguration as a removed node: %v, want PermissionDenied", err)
		}
	}
	const warning = `msg="a removed node still calls the registry; it is refused"`
	lines := linesWith(logs, warning)
	if len(lines) != 1 {
		t.Fatalf("%d warnings about the removed node after %d calls, want 1:\n%s", len(lines), calls, logs)
	}
	for _, want := range []string{
		"level=WARN", "peer=" + nodeID, "method=ketnoi.registry.v1.RegistryService/GetConfiguration",
		`detail="removed at `, "count=1 ", "period=10m0s", `remedy="stop the node, or add it again with ketnoi node add"`,
	} {
		if !strings.Contains(lines[0], want) {
			t.Errorf("warning lacks %s: %s", want, lines[0])
		}
	}
	if l := linesWith(logs, `msg="finished call"`, "code=PermissionDenied"); len(l) != 0 {
		t.Errorf("refusals of the removed node reached the call log:\n%s", strings.Join(l, ""))
	}

	// A period after the first line the next refusal is logged, counting
	// the ones passed over.
	sid := spiffeid.RequireFromString(nodeID)
	f.reg.removed.mu.Lock()
	f.reg.removed.peers[sid].last = time.Now().Add(-peerWarnEvery)
	f.reg.removed.mu.Unlock()
	if err := f.getConfiguration(t, ctx, nodeID); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("GetConfiguration as a removed node: %v, want PermissionDenied", err)
	}
	if lines := linesWith(logs, warning); len(lines) != 2 || !strings.Contains(lines[1], "count=5 ") {
		t.Errorf("warnings a period later = %q, want a second one with count=5", lines)
	}

	// A refusal of another kind is still the call log's.
	_, err := registryv1.NewAdminServiceClient(f.dial(t, node2)).RemoveNode(ctx,
		&registryv1.RemoveNodeRequest{SpiffeId: node2})
	if status.Code(err) != codes.PermissionDenied {
		t.Fatalf("RemoveNode by a node: %v, want PermissionDenied", err)
	}
	if l := linesWith(logs, `msg="finished call"`, "code=PermissionDenied", "peer="+node2); len(l) != 1 {
		t.Errorf("a node calling the admin service logged %d failed calls, want 1:\n%s", len(l), logs)
	}
}

// A node added again after its removal and then removed again is a new
// removal: its first refused call is warned about at once, not held back
// by the warnings about the earlier removal.
func TestRemovedAgainWarnedAgain(t *testing.T) {
	f := newFixture(t)
	logs := logTo(&f.cfg)
	f.restart(t)
	ctx := testContext(t)
	admin := f.admin(t)
	f.populate(t, ctx, admin)
	const warning = `msg="a removed node still calls the registry; it is refused"`

	for round := 1; round <= 2; round++ {
		if _, err := admin.RemoveNode(ctx, &registryv1.RemoveNodeRequest{SpiffeId: nodeID}); err != nil {
			t.Fatal(err)
		}
		for range 2 {
			if err := f.getConfiguration(t, ctx, nodeID); status.Code(err) != codes.PermissionDenied {
				t.Fatalf("round %d: GetConfiguration as a removed node: %v, want PermissionDenied", round, err)
			}
		}
		lines := linesWith(logs, warning, "peer="+nodeID)
		if len(lines) != round || !strings.Contains(lines[round-1], "count=1 ") {
			t.Fatalf("round %d: warnings = %q, want %d, the last with count=1", round, lines, round)
		}
		if _, err := admin.AddNode(ctx, &registryv1.AddNodeRequest{
			SpiffeId: nodeID, Address: "127.0.0.1:8443",
		}); err != nil {
			t.Fatalf("round %d: AddNode again: %v", round, err)
		}
	}
}

// At shutdown the watches the registry ends are one INFO line with their
// count, not one warning about a failed call each.
func TestShutdownEndsWatchesQuietly(t *testing.T) {
	f := newFixture(t)
	logs := logTo(&f.cfg)
	f.restart(t)
	ctx := testContext(t)
	f.populate(t, ctx, f.admin(t))

	var watches []registryv1.RegistryService_WatchConfigurationClient
	for _, peer := range []string{nodeID, adminID} {
		w, err := f.watchFirst(t, ctx, peer)
		if err != nil {
			t.Fatalf("first Recv of %s's watch: %v", peer, err)
		}
		watches = append(watches, w)
	}
	f.reg.Shutdown()
	for _, w := range watches {
		// The status reaches the client after the call log has seen the
		// call end.
		if _, err := w.Recv(); status.Code(err) != codes.Unavailable {
			t.Fatalf("watch after Shutdown: %v, want Unavailable", err)
		}
	}

	if l := linesWith(logs, `msg="finished call"`, "WatchConfiguration"); len(l) != 0 {
		t.Errorf("watches ended by the shutdown reached the call log:\n%s", strings.Join(l, ""))
	}
	l := linesWith(logs, `msg="registry shutting down: configuration watches ended"`)
	if len(l) != 1 || !strings.Contains(l[0], "level=INFO") || !strings.Contains(l[0], "count=2") {
		t.Errorf("shutdown lines = %q, want one INFO line with count=2", l)
	}
}
