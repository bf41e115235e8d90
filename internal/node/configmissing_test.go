package node

import (
	"context"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/ketnoi/ketnoi/internal/gconf"
	registryv1 "github.com/ketnoi/ketnoi/proto/ketnoi/registry/v1"
)

// refusingRegistry refuses every watch with err.
type refusingRegistry struct {
	registryv1.RegistryServiceClient
	err error
}

func (r refusingRegistry) WatchConfiguration(
	context.Context,
	*registryv1.WatchConfigurationRequest,
	...grpc.CallOption,
) (grpc.ServerStreamingClient[registryv1.WatchConfigurationResponse], error) {
	return nil, r.err
}

// TestConfigMissingNamesRefusal: a node without a configuration tells its
// applications that the registry refused it, when it did, rather than
// asking whether the registry is reachable.
func TestConfigMissingNamesRefusal(t *testing.T) {
	for _, tt := range []struct {
		name string
		err  error
		want string
	}{
		{"removed", status.Error(codes.PermissionDenied, "node was removed from the registry"),
			"node has no global configuration: the registry refuses this node: an operator removed it"},
		{"unreachable", status.Error(codes.Unavailable, "connection refused"),
			"node has no global configuration yet; is the registry reachable?"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			f := newFederation(t)
			db, err := gconf.OpenState(filepath.Join(t.TempDir(), "state.db"), time.Second)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { db.Close() })
			f.source, err = gconf.NewSource(db, refusingRegistry{err: tt.err}, f.ca.Pool(), nil)
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(t.Context())
			done := make(chan error, 1)
			go func() { done <- f.source.Run(ctx) }()
			t.Cleanup(func() { cancel(); <-done })
			// The first watch fails at once; a refusal is kept after it.
			refused := status.Code(tt.err) == codes.PermissionDenied
			for deadline := time.Now().Add(5 * time.Second); refused && f.source.Refused() == "" &&
				time.Now().Before(deadline); {
				time.Sleep(5 * time.Millisecond)
			}

			now := time.Now()
			c := &consumer{n: f.node(t, testConsumer, now, slog.New(slog.DiscardHandler)), client: testClientID(t)}
			_, perr := c.prepare(context.Background(), testGRPCPrefix+"ConvertOldUnit")
			if perr == nil || perr.Code != codes.Unavailable || !strings.HasPrefix(perr.Msg, tt.want) {
				t.Errorf("refusal %v, want Unavailable %q…", perr, tt.want)
			}
		})
	}
}
