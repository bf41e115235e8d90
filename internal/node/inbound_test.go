package node

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"

	"github.com/ketnoi/ketnoi/internal/mtls"
	"github.com/ketnoi/ketnoi/internal/pki/pkitest"
)

// A connection a peer opened is kept under its SPIFFE ID while it is open,
// closed when the peer leaves the configuration, and forgotten either way.
func TestInboundClosesConnectionsOfRetiredPeers(t *testing.T) {
	ca := pkitest.NewCA(t, "vn.ketnoi")
	server := mtls.Identity{SVID: ca.SVID(t, testProvider), Bundle: ca.Bundle()}
	in := newInbound()
	creds := in.track(mtls.ServerCredentials(server, tlsconfig.AuthorizeAny()))

	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer lis.Close()
	accepted := make(chan net.Conn, 4)
	go func() {
		for {
			raw, err := lis.Accept()
			if err != nil {
				return
			}
			conn, _, err := creds.ServerHandshake(raw)
			if err != nil {
				raw.Close()
				continue
			}
			accepted <- conn
		}
	}()
	dial := func(id string) *tls.Conn {
		t.Helper()
		client := mtls.Identity{SVID: ca.SVID(t, id), Bundle: ca.Bundle()}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		cfg := mtls.ClientConfig(client, tlsconfig.AuthorizeAny())
		cfg.NextProtos = []string{"h2"} // gRPC's server credentials insist on it
		d := tls.Dialer{Config: cfg}
		c, err := d.DialContext(ctx, "tcp", lis.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		select {
		case <-accepted:
		case <-time.After(10 * time.Second):
			t.Fatal("server side of the handshake did not finish")
		}
		return c.(*tls.Conn)
	}

	const retired = "spiffe://vn.ketnoi/node/NN/000.00.00.G12/btc"
	kept := dial(testConsumer)
	defer kept.Close()
	gone := dial(retired)
	defer gone.Close()
	if in.count(testConsumer) != 1 || in.count(retired) != 1 {
		t.Fatalf("tracked %d and %d connections, want 1 each", in.count(testConsumer), in.count(retired))
	}

	in.retain(func(peer string) bool { return peer == testConsumer })
	_ = gone.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := gone.Read(make([]byte, 1)); err == nil || isTimeout(err) {
		t.Fatalf("the retired peer's connection stayed open: read %v", err)
	}
	if in.count(retired) != 0 || in.count(testConsumer) != 1 {
		t.Errorf("after retain: %d and %d connections, want 0 and 1", in.count(retired), in.count(testConsumer))
	}
	_ = kept.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
	if _, err := kept.Read(make([]byte, 1)); err == nil || !isTimeout(err) {
		t.Errorf("the kept peer's connection: %v, want it open (a read timeout)", err)
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
