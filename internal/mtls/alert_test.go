package mtls

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/ketnoi/ketnoi/internal/pki/pkitest"
)

// TestAlertCatcher: a server that refuses the client's certificate says
// so with a TLS alert after the client's side of the handshake is done;
// AlertCatcher keeps it for Alert, whatever gRPC's error says. A client
// the server accepts gets its calls answered through the bytes read ahead,
// and an accepted handshake clears an earlier alert.
func TestAlertCatcher(t *testing.T) {
	ca := pkitest.NewCA(t, "vn.ketnoi")
	rogue := pkitest.NewCA(t, "vn.ketnoi")
	server := Identity{SVID: ca.SVID(t, serverSPIFFE), Bundle: ca.Bundle()}
	srv := grpc.NewServer(grpc.Creds(
		ServerCredentials(server, tlsconfig.AuthorizeMemberOf(spiffeid.RequireTrustDomainFromString("vn.ketnoi")))))
	healthpb.RegisterHealthServer(srv, health.NewServer())
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(lis)
	t.Cleanup(srv.Stop)

	check := func(creds *AlertCatcher) error {
		t.Helper()
		conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(creds))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
		defer cancel()
		_, err = healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
		return err
	}
	authz := tlsconfig.AuthorizeID(spiffeid.RequireFromString(serverSPIFFE))

	refused := CatchAlerts(ClientCredentials(Identity{SVID: rogue.SVID(t, clientSPIFFE), Bundle: ca.Bundle()}, authz))
	if err := check(refused); status.Code(err) != codes.Unavailable {
		t.Fatalf("health check with a foreign certificate: %v, want Unavailable", err)
	}
	if alert := refused.Alert(); !strings.HasPrefix(alert, "tls: ") {
		t.Errorf("Alert() = %q after a refused certificate, want a TLS alert", alert)
	}

	accepted := CatchAlerts(ClientCredentials(Identity{SVID: ca.SVID(t, clientSPIFFE), Bundle: ca.Bundle()}, authz))
	if err := check(accepted); err != nil {
		t.Fatalf("health check with an accepted certificate: %v", err)
	}
	if alert := accepted.Alert(); alert != "" {
		t.Errorf("Alert() = %q after an accepted certificate, want none", alert)
	}

	// A clone reports to the original; an accepted handshake clears the
	// alert a refused one left.
	clone := accepted.Clone().(*AlertCatcher)
	clone.alert.Store(refused.alert.Load())
	if accepted.Alert() == "" {
		t.Fatal("a clone's alert does not reach the original")
	}
	if err := check(clone); err != nil {
		t.Fatalf("health check through a clone: %v", err)
	}
	if alert := accepted.Alert(); alert != "" {
		t.Errorf("Alert() = %q after an accepted handshake, want none", alert)
	}
}
