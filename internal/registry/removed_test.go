package registry

import (
	"context"
	"os"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	cataloguev1 "github.com/ketnoi/ketnoi/proto/ketnoi/catalogue/v1"
	registryv1 "github.com/ketnoi/ketnoi/proto/ketnoi/registry/v1"
)

// getConfiguration reads the configuration as the workload spiffeID.
func (f *fixture) getConfiguration(t *testing.T, ctx context.Context, spiffeID string) error {
	t.Helper()
	_, err := f.registryClient(t, spiffeID).GetConfiguration(ctx, &registryv1.GetConfigurationRequest{})
	return err
}

// watchFirst opens a watch as spiffeID and returns the stream and the
// error of its first Recv.
func (f *fixture) watchFirst(
	t *testing.T,
	ctx context.Context,
	spiffeID string,
) (registryv1.RegistryService_WatchConfigurationClient, error) {
	t.Helper()
	stream, err := f.registryClient(t, spiffeID).WatchConfiguration(ctx, &registryv1.WatchConfigurationRequest{})
	if err != nil {
		t.Fatalf("WatchConfiguration as %s: %v", spiffeID, err)
	}
	_, err = stream.Recv()
	return stream, err
}

// A node removed with RemoveNode no longer reads the configuration or the
// catalogue, its open watch ends at once, and the refusal survives a
// restart and a restore from a backup taken after the removal; AddNode of
// the same ID lifts it. Node IDs never registered still read, since nodes
// may start before they are registered.
func TestRemovedNodeRefused(t *testing.T) {
	f := newFixture(t)
	ctx := testContext(t)
	admin := f.admin(t)
	f.populate(t, ctx, admin)
	const unregistered = "spiffe://vn.ketnoi/node/NN/000.00.00.G22/spare"

	watch, err := f.watchFirst(t, ctx, nodeID)
	if err != nil {
		t.Fatalf("first Recv of the node's watch: %v", err)
	}
	others := map[string]registryv1.RegistryService_WatchConfigurationClient{}
	for _, id := range []string{adminID, unregistered} {
		if others[id], err = f.watchFirst(t, ctx, id); err != nil {
			t.Fatalf("first Recv of %s's watch: %v", id, err)
		}
	}

	resp, err := admin.RemoveNode(ctx, &registryv1.RemoveNodeRequest{SpiffeId: nodeID})
	if err != nil {
		t.Fatalf("RemoveNode: %v", err)
	}
	wantMsg := "node " + nodeID + " was removed from the registry at "
	refused := func(t *testing.T, what string, err error) {
		t.Helper()
		st := status.Convert(err)
		if st.Code() != codes.PermissionDenied || !strings.HasPrefix(st.Message(), wantMsg) ||
			!strings.HasSuffix(st.Message(), "; it is refused until an operator adds it again") {
			t.Errorf("%s: %v %q, want PermissionDenied %q...", what, st.Code(), st.Message(), wantMsg)
		}
	}

	// The open watch ends instead of receiving the version without it;
	// the test's deadline bounds the wait.
	if _, err := watch.Recv(); err == nil {
		t.Errorf("the removed node's watch received a configuration")
	} else {
		refused(t, "open watch", err)
	}
	for id, w := range others {
		if c, err := w.Recv(); err != nil || decode(t, c.GetConfiguration()).GetVersion() != resp.GetVersion() {
			t.Errorf("%s's watch: %v, want version %d", id, err, resp.GetVersion())
		}
	}

	check := func(t *testing.T) {
		t.Helper()
		refused(t, "GetConfiguration", f.getConfiguration(t, ctx, nodeID))
		_, err := f.watchFirst(t, ctx, nodeID)
		refused(t, "new watch", err)
		_, err = cataloguev1.NewCatalogueServiceClient(f.dial(t, nodeID)).
			ListCodeLists(ctx, &cataloguev1.ListCodeListsRequest{})
		refused(t, "ListCodeLists", err)
		if err := f.getConfiguration(t, ctx, unregistered); err != nil {
			t.Errorf("GetConfiguration as a node never registered: %v", err)
		}
	}
	t.Run("after removal", check)

	f.restart(t)
	t.Run("after restart", check)

	data, _ := backup(t, f.admin(t))
	f.close()
	if err := os.WriteFile(f.path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	f.start(t)
	t.Run("after restore", check)

	if _, err := f.admin(t).AddNode(ctx, &registryv1.AddNodeRequest{
		SpiffeId: nodeID, Address: "127.0.0.1:8443",
	}); err != nil {
		t.Fatalf("AddNode again: %v", err)
	}
	if err := f.getConfiguration(t, ctx, nodeID); err != nil {
		t.Errorf("GetConfiguration after AddNode again: %v", err)
	}
	if _, err := f.watchFirst(t, ctx, nodeID); err != nil {
		t.Errorf("watch after AddNode again: %v", err)
	}
}
