package mtls

import (
	"context"
	"errors"
	"net"
	"sync/atomic"
	"time"

	"google.golang.org/grpc/credentials"
)

// FirstBytesTimeout bounds the wait of an [AlertCatcher] for the server's
// first bytes after the handshake.
const FirstBytesTimeout = 3 * time.Second

// AlertCatcher is client transport credentials that also look at what
// the server sends first, before gRPC writes anything, to learn why a
// server refused the client's certificate.
//
// In TLS 1.3 the client's side of the handshake is done before the
// server checks the client's certificate, so a refusal arrives afterwards
// as a TLS alert (such as "bad certificate"). Once gRPC has written into
// the closed connection, the reset that answers it can discard the alert,
// and the call fails with whatever the broken connection gave, often
// "write: broken pipe". A gRPC server that accepted the certificate sends
// its HTTP/2 settings first, which gRPC then reads from the connection as
// usual. Catching the alert on the call's own connection, rather than in
// a second handshake, keeps the server's log to one refusal per attempt.
type AlertCatcher struct {
	credentials.TransportCredentials
	alert *atomic.Pointer[string] // shared with clones
}

// CatchAlerts wraps client TLS credentials in an [AlertCatcher].
func CatchAlerts(creds credentials.TransportCredentials) *AlertCatcher {
	return &AlertCatcher{TransportCredentials: creds, alert: new(atomic.Pointer[string])}
}

// Alert returns the TLS alert with which a server last refused a
// handshake of these credentials or their clones, such as "tls: bad
// certificate", or "" when none did or a later handshake was accepted.
func (a *AlertCatcher) Alert() string {
	if p := a.alert.Load(); p != nil {
		return *p
	}
	return ""
}

// ClientHandshake performs the TLS handshake, then waits up to
// [FirstBytesTimeout] (or ctx's deadline, if sooner) for the server's
// first bytes. An alert fails the handshake with it, and is kept for
// Alert; other bytes are handed to gRPC ahead of the connection's.
func (a *AlertCatcher) ClientHandshake(
	ctx context.Context,
	authority string,
	raw net.Conn,
) (net.Conn, credentials.AuthInfo, error) {
	conn, info, err := a.TransportCredentials.ClientHandshake(ctx, authority, raw)
	if err != nil {
		// Our own side refused the server, or the handshake broke: the
		// call's error says so.
		return nil, nil, err
	}
	deadline := time.Now().Add(FirstBytesTimeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	_ = conn.SetReadDeadline(deadline)
	first := make([]byte, 4096)
	n, err := conn.Read(first)
	_ = conn.SetReadDeadline(time.Time{})
	var (
		op      *net.OpError
		netErr  net.Error
		timeout = errors.As(err, &netErr) && netErr.Timeout()
	)
	switch {
	case errors.As(err, &op) && op.Op == "remote error":
		alert := op.Err.Error()
		a.alert.Store(&alert)
		conn.Close()
		return nil, nil, err
	case err != nil && !timeout:
		conn.Close()
		return nil, nil, err
	}
	// Accepted, or a server slow to send its settings, which is left to
	// gRPC's own limits.
	a.alert.Store(nil)
	return &readAhead{Conn: conn, pending: first[:n]}, info, nil
}

// Clone returns a copy whose alerts go where the original's do.
func (a *AlertCatcher) Clone() credentials.TransportCredentials {
	return &AlertCatcher{TransportCredentials: a.TransportCredentials.Clone(), alert: a.alert}
}

// readAhead is a connection from which bytes were read ahead; Read
// returns them before reading more.
type readAhead struct {
	net.Conn
	pending []byte
}

func (c *readAhead) Read(p []byte) (int, error) {
	if len(c.pending) == 0 {
		return c.Conn.Read(p)
	}
	n := copy(p, c.pending)
	c.pending = c.pending[n:]
	return n, nil
}
