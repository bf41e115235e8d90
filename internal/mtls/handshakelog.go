package mtls

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"syscall"
	"time"

	"google.golang.org/grpc/credentials"

	"github.com/ketnoi/ketnoi/internal/logging"
)

// Reasons of failed handshakes that are not about the client's certificate.
const (
	ReasonNotTLS          = "client does not speak TLS"
	ReasonTLSVersion      = "client does not offer TLS 1.3"
	ReasonServerRefused   = "client refused the server's certificate"
	ReasonTimeout         = "handshake timed out"
	ReasonAbandoned       = "client closed the connection during the handshake"
	ReasonHandshakeFailed = "handshake failed"
)

// Refusals are logged at most refusalBurst a refusalPeriod; the rest are
// counted and reported in one line when the period ends, so that a scanner
// or a misconfigured client in a retry loop cannot flood the log.
const (
	refusalBurst  = 10
	refusalPeriod = time.Minute
)

// LogRefusals returns server credentials that log every handshake creds
// fails, with the client's address, the identity its certificate claims
// and the reason, at warn level (debug for a client that hung up), at most
// 10 lines a minute. gRPC itself only reports such failures to its own
// logger, which is off; the client only sees its connection drop, since in
// TLS 1.3 it finishes its side of the handshake before the server checks
// its certificate. Successful handshakes pass through untouched.
func LogRefusals(creds credentials.TransportCredentials, log *slog.Logger) credentials.TransportCredentials {
	return newRefusalLog(creds, log, newLimiter(refusalBurst, refusalPeriod))
}

// refusalLog is the credentials.TransportCredentials of LogRefusals.
type refusalLog struct {
	credentials.TransportCredentials
	log   *slog.Logger
	limit *limiter
	// quiet limits the debug lines of clients that hung up on their own,
	// apart from limit: with debug logging on, port probes must not use up
	// the budget of the refusals an operator needs to see.
	quiet *limiter
}

func newRefusalLog(creds credentials.TransportCredentials, log *slog.Logger, limit *limiter) *refusalLog {
	c := &refusalLog{TransportCredentials: creds, log: log, limit: limit, quiet: newLimiter(limit.burst, limit.period)}
	c.quiet.after = limit.after
	limit.report = func(n int) { c.logSuppressed(slog.LevelWarn, n) }
	c.quiet.report = func(n int) { c.logSuppressed(slog.LevelDebug, n) }
	return c
}

func (c *refusalLog) ServerHandshake(raw net.Conn) (net.Conn, credentials.AuthInfo, error) {
	conn, info, err := c.TransportCredentials.ServerHandshake(raw)
	if err != nil {
		c.logFailure(raw.RemoteAddr(), err)
	}
	return conn, info, err
}

// Clone keeps the clone's refusals within the same limit.
func (c *refusalLog) Clone() credentials.TransportCredentials {
	return &refusalLog{TransportCredentials: c.TransportCredentials.Clone(), log: c.log, limit: c.limit, quiet: c.quiet}
}

// logFailure logs one failed handshake from remote if the limit allows.
func (c *refusalLog) logFailure(remote net.Addr, err error) {
	ctx := context.Background()
	reason, lvl := handshakeReason(err)
	limit := c.limit
	if lvl < slog.LevelWarn {
		limit = c.quiet
	}
	if !c.log.Enabled(ctx, lvl) || !limit.allow(time.Now()) {
		return
	}
	attrs := make([]slog.Attr, 0, 6)
	if remote != nil {
		attrs = append(attrs, slog.String(logging.KeyRemoteAddress, remote.String()))
	}
	if pr, ok := errors.AsType[*PeerRefusedError](err); ok {
		if !pr.ID.IsZero() {
			attrs = append(attrs, slog.String(logging.KeyPeer, pr.ID.String()))
		}
		if pr.Subject != "" {
			attrs = append(attrs, slog.String(logging.KeySubject, pr.Subject))
		}
		if pr.Issuer != "" {
			attrs = append(attrs, slog.String(logging.KeyIssuer, pr.Issuer))
		}
		err = pr.Err
	}
	attrs = append(attrs, slog.String(logging.KeyReason, reason), slog.String(logging.KeyError, err.Error()))
	c.log.LogAttrs(ctx, lvl, "TLS handshake failed", attrs...)
}

// logSuppressed reports the failures a limit kept out of the log, at the
// level of the lines it kept out.
func (c *refusalLog) logSuppressed(lvl slog.Level, n int) {
	c.log.LogAttrs(context.Background(), lvl, "more TLS handshakes failed than are logged",
		slog.Int(logging.KeyCount, n), slog.Duration(logging.KeyPeriod, c.limit.period))
}

// handshakeReason names the cause of a failed server handshake and the
// level to log it at. crypto/tls has no typed errors for a missing
// certificate or an unsupported version, so those are recognised by text;
// TestLogRefusals pins the texts of the Go release in use.
func handshakeReason(err error) (string, slog.Level) {
	var (
		header tls.RecordHeaderError
		op     *net.OpError
		netErr net.Error
	)
	msg := err.Error()
	switch pr, ok := errors.AsType[*PeerRefusedError](err); {
	case ok:
		return pr.Reason, slog.LevelWarn
	case strings.Contains(msg, "didn't provide a certificate"):
		return ReasonNoCertificate, slog.LevelWarn
	case errors.As(err, &header):
		return ReasonNotTLS, slog.LevelWarn
	case strings.Contains(msg, "unsupported versions"):
		return ReasonTLSVersion, slog.LevelWarn
	case errors.As(err, &op) && op.Op == "remote error":
		return ReasonServerRefused, slog.LevelWarn
	case errors.As(err, &netErr) && netErr.Timeout():
		return ReasonTimeout, slog.LevelWarn
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, syscall.ECONNRESET):
		// Port probes and load-balancer checks connect and hang up.
		return ReasonAbandoned, slog.LevelDebug
	}
	return ReasonHandshakeFailed, slog.LevelWarn
}

// limiter lets burst events through per period and counts the others;
// report gets the count once the period in which the first of them fell
// has ended. Its memory is fixed whatever the rate of events.
type limiter struct {
	burst  int
	period time.Duration
	// after runs f after d; time.AfterFunc outside tests.
	after  func(d time.Duration, f func())
	report func(suppressed int)

	mu         sync.Mutex
	windowEnd  time.Time
	used       int
	suppressed int
	scheduled  bool
}

func newLimiter(burst int, period time.Duration) *limiter {
	return &limiter{
		burst: burst, period: period,
		after: func(d time.Duration, f func()) { time.AfterFunc(d, f) },
	}
}

// allow reports whether an event at now may be logged.
func (l *limiter) allow(now time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !now.Before(l.windowEnd) {
		l.windowEnd, l.used = now.Add(l.period), 0
	}
	if l.used < l.burst {
		l.used++
		return true
	}
	l.suppressed++
	if !l.scheduled {
		l.scheduled = true
		l.after(l.windowEnd.Sub(now), l.flush)
	}
	return false
}

// flush hands the count of suppressed events to report.
func (l *limiter) flush() {
	l.mu.Lock()
	n := l.suppressed
	l.suppressed, l.scheduled = 0, false
	l.mu.Unlock()
	if n > 0 {
		l.report(n)
	}
}
