package registry

import (
	"context"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	cataloguev1 "github.com/ketnoi/ketnoi/proto/ketnoi/catalogue/v1"
	registryv1 "github.com/ketnoi/ketnoi/proto/ketnoi/registry/v1"
)

func TestAuthorization(t *testing.T) {
	f := newFixture(t)
	ctx := testContext(t)
	const appID = "spiffe://vn.ketnoi/app/NN/000.00.00.G22/vanban"

	tests := []struct {
		name     string
		caller   string
		call     func(t *testing.T, caller string) error
		wantCode codes.Code
		wantMsg  string
	}{
		{"node calls admin", nodeID, func(t *testing.T, caller string) error {
			c := registryv1.NewAdminServiceClient(f.dial(t, caller))
			_, err := c.AddSubsystem(ctx, &registryv1.AddSubsystemRequest{SubsystemId: memberG22 + "/x"})
			return err
		}, codes.PermissionDenied, nodeID + " may not call ketnoi.registry.v1.AdminService: operators only"},
		{"app calls admin", appID, func(t *testing.T, caller string) error {
			c := registryv1.NewAdminServiceClient(f.dial(t, caller))
			_, err := c.RevokeGrant(ctx, &registryv1.RevokeGrantRequest{GrantId: "g-1"})
			return err
		}, codes.PermissionDenied, appID + " may not call ketnoi.registry.v1.AdminService"},
		{"app reads configuration", appID, func(t *testing.T, caller string) error {
			_, err := f.registryClient(t, caller).GetConfiguration(ctx, &registryv1.GetConfigurationRequest{})
			return err
		}, codes.PermissionDenied, appID + " may not call ketnoi.registry.v1.RegistryService: nodes and operators only"},
		{"app reads catalogue", appID, func(t *testing.T, caller string) error {
			c := cataloguev1.NewCatalogueServiceClient(f.dial(t, caller))
			_, err := c.ListCodeLists(ctx, &cataloguev1.ListCodeListsRequest{})
			return err
		}, codes.PermissionDenied, appID + " may not call ketnoi.catalogue.v1.CatalogueService"},
		{"node reads configuration", nodeID, func(t *testing.T, caller string) error {
			_, err := f.registryClient(t, caller).GetConfiguration(ctx, &registryv1.GetConfigurationRequest{})
			return err
		}, codes.OK, ""},
		{"node reads catalogue", nodeID, func(t *testing.T, caller string) error {
			c := cataloguev1.NewCatalogueServiceClient(f.dial(t, caller))
			_, err := c.ListCodeLists(ctx, &cataloguev1.ListCodeListsRequest{})
			return err
		}, codes.OK, ""},
		{"admin reads configuration", adminID, func(t *testing.T, caller string) error {
			_, err := f.registryClient(t, caller).GetConfiguration(ctx, &registryv1.GetConfigurationRequest{})
			return err
		}, codes.OK, ""},
		{"app checks health", appID, func(t *testing.T, caller string) error {
			resp, err := healthpb.NewHealthClient(f.dial(t, caller)).Check(ctx, &healthpb.HealthCheckRequest{})
			if err == nil && resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
				t.Errorf("health status = %v, want SERVING", resp.GetStatus())
			}
			return err
		}, codes.OK, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st := status.Convert(tt.call(t, tt.caller))
			if st.Code() != tt.wantCode || !strings.HasPrefix(st.Message(), tt.wantMsg) {
				t.Errorf("status = %v %q, want %v %q...", st.Code(), st.Message(), tt.wantCode, tt.wantMsg)
			}
		})
	}
}

func TestHubKeepsOnlyNewestPending(t *testing.T) {
	h := newHub()
	w := h.subscribe()
	// Publishing to a watcher that reads nothing must not block.
	for v := uint64(1); v <= 3; v++ {
		h.publish(&published{version: v})
	}
	got := <-w.pending
	if got.version != 3 {
		t.Errorf("pending version = %d, want 3", got.version)
	}
	select {
	case p := <-w.pending:
		t.Errorf("second pending version %d, want none", p.version)
	default:
	}

	h.unsubscribe(w)
	h.publish(&published{version: 4})
	select {
	case p := <-w.pending:
		t.Errorf("unsubscribed watcher received version %d", p.version)
	default:
	}
}

func TestWatchUnsubscribesWhenCallerLeaves(t *testing.T) {
	f := newFixture(t)
	ctx := testContext(t)
	known := decode(t, f.reg.Configuration()).GetVersion()

	watchCtx, cancel := context.WithCancel(ctx)
	stream, err := f.registryClient(t, nodeID).WatchConfiguration(watchCtx,
		&registryv1.WatchConfigurationRequest{KnownVersion: known - 1})
	if err != nil {
		t.Fatalf("WatchConfiguration: %v", err)
	}
	if _, err := stream.Recv(); err != nil {
		t.Fatalf("Recv: %v", err)
	}
	if n := f.reg.hub.count(); n != 1 {
		t.Fatalf("watchers while watching = %d, want 1", n)
	}
	cancel()

	// The handler notices the cancellation asynchronously; wait for it
	// within the test's deadline.
	for f.reg.hub.count() != 0 {
		select {
		case <-ctx.Done():
			t.Fatalf("watcher still subscribed after its caller left")
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// count returns the number of subscribed watchers.
func (h *hub) count() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.watchers)
}
