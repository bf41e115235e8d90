package mtls

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"log/slog"
	"math/big"
	"net"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/ketnoi/ketnoi/internal/logging"
	"github.com/ketnoi/ketnoi/internal/logging/logtest"
	"github.com/ketnoi/ketnoi/internal/pki"
	"github.com/ketnoi/ketnoi/internal/pki/pkitest"
)

const (
	serverSPIFFE = "spiffe://vn.ketnoi/registry"
	clientSPIFFE = "spiffe://vn.ketnoi/node/NN/000.00.00.G22/vpcp"
)

// jsonLines returns the JSON log lines written to b so far.
func jsonLines(t *testing.T, b *logtest.Buffer) []map[string]any {
	t.Helper()
	var out []map[string]any
	for l := range strings.SplitSeq(strings.TrimSpace(b.String()), "\n") {
		if l == "" {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("log line %q: %v", l, err)
		}
		out = append(out, m)
	}
	return out
}

// handshakes serves creds' server handshake on loopback and reports the
// error of each one.
type handshakes struct {
	addr    string
	results chan error
}

func serveHandshakes(t *testing.T, creds credentials.TransportCredentials) *handshakes {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	h := &handshakes{addr: lis.Addr().String(), results: make(chan error, 16)}
	go func() {
		for {
			raw, err := lis.Accept()
			if err != nil {
				return // the listener closed
			}
			conn, _, err := creds.ServerHandshake(raw)
			if conn != nil {
				conn.Close()
			}
			h.results <- err
		}
	}()
	t.Cleanup(func() { lis.Close() })
	return h
}

// next waits for the result of the next server handshake.
func (h *handshakes) next(t *testing.T) error {
	t.Helper()
	select {
	case err := <-h.results:
		return err
	case <-time.After(10 * time.Second):
		t.Fatal("no server handshake within 10s")
		return nil
	}
}

// dial runs a client handshake with cfg and returns once the server's side
// has ended, with the server's error.
func (h *handshakes) dial(t *testing.T, cfg *tls.Config) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	var d tls.Dialer
	d.Config = cfg
	conn, err := d.DialContext(ctx, "tcp", h.addr)
	if err == nil {
		defer conn.Close()
	}
	return h.next(t)
}

// leaf mints a client certificate signed by ca, valid from notBefore to
// notAfter, with uri as its URI SAN unless empty.
func leaf(t *testing.T, ca *pki.CA, uri string, notBefore, notAfter time.Time) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{Organization: []string{"Test agency"}},
		NotBefore:    notBefore,
		NotAfter:     notAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	if uri != "" {
		u, err := url.Parse(uri)
		if err != nil {
			t.Fatal(err)
		}
		tmpl.URIs = []*url.URL{u}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, key.Public(), ca.Key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// clientConfig trusts the server of ca and presents certs, as a gRPC
// client would.
func clientConfig(ca *pkitest.CA, certs ...tls.Certificate) *tls.Config {
	cfg := tlsconfig.TLSClientConfig(ca.Bundle(), tlsconfig.AuthorizeID(spiffeid.RequireFromString(serverSPIFFE)))
	cfg.MinVersion = tls.VersionTLS13
	cfg.NextProtos = []string{"h2"}
	cfg.Certificates = certs
	return cfg
}

func TestLogRefusals(t *testing.T) {
	ca := pkitest.NewCA(t, "vn.ketnoi")
	rogue := pkitest.NewCA(t, "vn.ketnoi") // same trust domain, other key
	other := pkitest.NewCA(t, "other.ketnoi")
	server := Identity{SVID: ca.SVID(t, serverSPIFFE), Bundle: ca.Bundle()}
	authz := tlsconfig.AuthorizeID(spiffeid.RequireFromString(clientSPIFFE))
	now := time.Now()
	valid := func(c *pkitest.CA, uri string) tls.Certificate {
		return leaf(t, c.PKI(), uri, now.Add(-time.Minute), now.Add(time.Hour))
	}
	tls12 := clientConfig(ca, valid(ca, clientSPIFFE))
	tls12.MinVersion, tls12.MaxVersion = tls.VersionTLS12, tls.VersionTLS12

	tests := []struct {
		name       string
		cfg        *tls.Config
		wantReason string
		wantPeer   string
		wantError  string // part of the logged error
	}{
		{"foreign CA", clientConfig(ca, valid(rogue, clientSPIFFE)),
			ReasonUnknownAuthority, clientSPIFFE, "unknown authority"},
		{"other trust domain", clientConfig(ca, valid(other, "spiffe://other.ketnoi/node/x")),
			ReasonForeignTrustDomain, "spiffe://other.ketnoi/node/x", "other.ketnoi"},
		{"ID not authorized", clientConfig(ca, valid(ca, "spiffe://vn.ketnoi/node/NN/000.00.00.G09/bnv")),
			ReasonNotAuthorized, "spiffe://vn.ketnoi/node/NN/000.00.00.G09/bnv", "unexpected ID"},
		{"expired", clientConfig(ca, leaf(t, ca.PKI(), clientSPIFFE, now.Add(-2*time.Hour), now.Add(-time.Hour))),
			ReasonExpired, clientSPIFFE, "expired"},
		{"not yet valid", clientConfig(ca, leaf(t, ca.PKI(), clientSPIFFE, now.Add(time.Hour), now.Add(2*time.Hour))),
			ReasonNotYetValid, clientSPIFFE, "expired or is not yet valid"},
		{"no SPIFFE ID", clientConfig(ca, valid(ca, "")), ReasonNotSVID, "", "no URI SAN"},
		{"no certificate", clientConfig(ca), ReasonNoCertificate, "", "didn't provide a certificate"},
		{"TLS 1.2", tls12, ReasonTLSVersion, "", "unsupported versions"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var buf logtest.Buffer
			log := slog.New(slog.NewJSONHandler(&buf, nil))
			h := serveHandshakes(t, LogRefusals(ServerCredentials(server, authz), log))
			if err := h.dial(t, tt.cfg); err == nil {
				t.Fatal("server accepted the handshake")
			}
			lines := jsonLines(t, &buf)
			if len(lines) != 1 {
				t.Fatalf("got %d log lines, want 1: %v", len(lines), lines)
			}
			l := lines[0]
			want := map[string]any{"level": "WARN", "msg": "TLS handshake failed", logging.KeyReason: tt.wantReason}
			if tt.wantPeer != "" {
				want[logging.KeyPeer] = tt.wantPeer
			}
			for k, v := range want {
				if l[k] != v {
					t.Errorf("log %s = %v, want %v (line %v)", k, l[k], v, l)
				}
			}
			if tt.wantPeer == "" && l[logging.KeyPeer] != nil {
				t.Errorf("log names peer %v, the client presented none", l[logging.KeyPeer])
			}
			if a, _ := l[logging.KeyRemoteAddress].(string); !strings.HasPrefix(a, "127.0.0.1:") {
				t.Errorf("log %s = %v, want the client's loopback address", logging.KeyRemoteAddress, a)
			}
			if e, _ := l[logging.KeyError].(string); !strings.Contains(e, tt.wantError) {
				t.Errorf("log %s = %q, want it to contain %q", logging.KeyError, e, tt.wantError)
			}
		})
	}

	t.Run("issuer and subject of a foreign certificate", func(t *testing.T) {
		var buf logtest.Buffer
		h := serveHandshakes(t, LogRefusals(ServerCredentials(server, authz), slog.New(slog.NewJSONHandler(&buf, nil))))
		_ = h.dial(t, clientConfig(ca, valid(rogue, clientSPIFFE)))
		l := jsonLines(t, &buf)[0]
		if l[logging.KeyIssuer] != rogue.PKI().Cert.Subject.String() || l[logging.KeySubject] != "O=Test agency" {
			t.Errorf("log issuer %v, subject %v; want %q, %q", l[logging.KeyIssuer], l[logging.KeySubject],
				rogue.PKI().Cert.Subject.String(), "O=Test agency")
		}
	})

	t.Run("accepted client", func(t *testing.T) {
		var buf logtest.Buffer
		log := slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
		h := serveHandshakes(t, LogRefusals(ServerCredentials(server, authz), log))
		if err := h.dial(t, clientConfig(ca, valid(ca, clientSPIFFE))); err != nil {
			t.Fatalf("server refused a valid client: %v", err)
		}
		if lines := jsonLines(t, &buf); len(lines) != 0 {
			t.Errorf("an accepted handshake was logged: %v", lines)
		}
	})

	t.Run("client that hangs up is a debug line", func(t *testing.T) {
		var buf logtest.Buffer
		log := slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
		h := serveHandshakes(t, LogRefusals(ServerCredentials(server, authz), log))
		conn, err := net.Dial("tcp", h.addr)
		if err != nil {
			t.Fatal(err)
		}
		conn.Close()
		_ = h.next(t)
		lines := jsonLines(t, &buf)
		if len(lines) != 1 || lines[0]["level"] != "DEBUG" || lines[0][logging.KeyReason] != ReasonAbandoned {
			t.Errorf("log %v; want one debug line with reason %q", lines, ReasonAbandoned)
		}
	})

	t.Run("plaintext client", func(t *testing.T) {
		var buf logtest.Buffer
		h := serveHandshakes(t, LogRefusals(ServerCredentials(server, authz), slog.New(slog.NewJSONHandler(&buf, nil))))
		conn, err := net.Dial("tcp", h.addr)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		if _, err := conn.Write([]byte("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")); err != nil {
			t.Fatal(err)
		}
		_ = h.next(t)
		if lines := jsonLines(t, &buf); len(lines) != 1 || lines[0][logging.KeyReason] != ReasonNotTLS {
			t.Errorf("log %v; want one line with reason %q", lines, ReasonNotTLS)
		}
	})
}

// TestLogRefusalsRateLimit floods a server with refused handshakes: only
// the burst is logged, then one line counts the rest.
func TestLogRefusalsRateLimit(t *testing.T) {
	ca := pkitest.NewCA(t, "vn.ketnoi")
	rogue := pkitest.NewCA(t, "vn.ketnoi")
	server := Identity{SVID: ca.SVID(t, serverSPIFFE), Bundle: ca.Bundle()}
	var buf logtest.Buffer
	log := slog.New(slog.NewJSONHandler(&buf, nil))
	limit := newLimiter(2, time.Minute)
	var flush func()
	limit.after = func(d time.Duration, f func()) {
		if d <= 0 || d > time.Minute {
			t.Errorf("summary scheduled in %v, want within the period", d)
		}
		flush = f
	}
	creds := newRefusalLog(ServerCredentials(server, tlsconfig.AuthorizeAny()), log, limit)
	h := serveHandshakes(t, creds)
	cfg := clientConfig(ca, leaf(t, rogue.PKI(), clientSPIFFE, time.Now().Add(-time.Minute), time.Now().Add(time.Hour)))

	const attempts = 5
	for range attempts {
		if err := h.dial(t, cfg); err == nil {
			t.Fatal("server accepted a foreign certificate")
		}
	}
	if lines := jsonLines(t, &buf); len(lines) != 2 {
		t.Fatalf("got %d log lines for %d refusals, want the burst of 2: %v", len(lines), attempts, lines)
	}
	if flush == nil {
		t.Fatal("no summary scheduled for the suppressed refusals")
	}
	flush()
	lines := jsonLines(t, &buf)
	if len(lines) != 3 {
		t.Fatalf("got %d log lines after the period, want 3: %v", len(lines), lines)
	}
	if l := lines[2]; l["level"] != "WARN" || l[logging.KeyCount] != float64(attempts-2) {
		t.Errorf("summary line %v; want a warning with %s %d", l, logging.KeyCount, attempts-2)
	}
	flush()
	if got := len(jsonLines(t, &buf)); got != 3 {
		t.Errorf("a second flush with nothing suppressed logged; %d lines", got)
	}
}

// With debug logging on, clients that hang up during the handshake (port
// probes) are logged on a budget of their own: a flood of them leaves the
// refusals' budget whole.
func TestLogRefusalsProbesHaveTheirOwnBudget(t *testing.T) {
	ca := pkitest.NewCA(t, "vn.ketnoi")
	rogue := pkitest.NewCA(t, "vn.ketnoi")
	server := Identity{SVID: ca.SVID(t, serverSPIFFE), Bundle: ca.Bundle()}
	var buf logtest.Buffer
	log := slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	limit := newLimiter(2, time.Minute)
	limit.after = func(time.Duration, func()) {}
	h := serveHandshakes(t, newRefusalLog(ServerCredentials(server, tlsconfig.AuthorizeAny()), log, limit))

	for range 5 {
		c, err := net.Dial("tcp", h.addr)
		if err != nil {
			t.Fatal(err)
		}
		c.Close()
		h.next(t)
	}
	cfg := clientConfig(ca, leaf(t, rogue.PKI(), clientSPIFFE, time.Now().Add(-time.Minute), time.Now().Add(time.Hour)))
	if err := h.dial(t, cfg); err == nil {
		t.Fatal("server accepted a foreign certificate")
	}
	var probes, refusals int
	for _, l := range jsonLines(t, &buf) {
		switch l["level"] {
		case "DEBUG":
			probes++
		case "WARN":
			refusals++
		}
	}
	if probes != 2 || refusals != 1 {
		t.Errorf("logged %d probe lines and %d refusals, want the probes' burst of 2 and the refusal", probes, refusals)
	}
}

// TestLimiterWindows checks that the budget returns with each period and
// that memory does not grow with the number of events.
func TestLimiterWindows(t *testing.T) {
	l := newLimiter(3, time.Minute)
	var scheduled int
	l.after = func(time.Duration, func()) { scheduled++ }
	var reported []int
	l.report = func(n int) { reported = append(reported, n) }
	t0 := time.Now()

	allowed := 0
	for i := range 1000 {
		if l.allow(t0.Add(time.Duration(i) * time.Millisecond)) {
			allowed++
		}
	}
	if allowed != 3 || l.suppressed != 997 || scheduled != 1 {
		t.Fatalf("first period: %d allowed, %d suppressed, %d summaries scheduled; want 3, 997, 1",
			allowed, l.suppressed, scheduled)
	}
	l.flush()
	if len(reported) != 1 || reported[0] != 997 {
		t.Fatalf("reported %v, want [997]", reported)
	}
	if !l.allow(t0.Add(time.Minute)) {
		t.Error("the budget did not come back after the period")
	}
}

// TestLogRefusalsGRPC runs the wrapper the way the registry and nodes do:
// a gRPC server whose client presents a certificate of a foreign CA. The
// client only learns that its connection broke; the server's log says why.
func TestLogRefusalsGRPC(t *testing.T) {
	ca := pkitest.NewCA(t, "vn.ketnoi")
	rogue := pkitest.NewCA(t, "vn.ketnoi")
	server := Identity{SVID: ca.SVID(t, serverSPIFFE), Bundle: ca.Bundle()}
	var buf logtest.Buffer
	log := slog.New(slog.NewJSONHandler(&buf, nil))
	srv := grpc.NewServer(grpc.Creds(LogRefusals(
		ServerCredentials(server, tlsconfig.AuthorizeMemberOf(spiffeid.RequireTrustDomainFromString("vn.ketnoi"))), log)))
	healthpb.RegisterHealthServer(srv, health.NewServer())
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(lis)
	t.Cleanup(srv.Stop)

	client := Identity{SVID: rogue.SVID(t, clientSPIFFE), Bundle: ca.Bundle()}
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(
		ClientCredentials(client, tlsconfig.AuthorizeID(spiffeid.RequireFromString(serverSPIFFE)))))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	_, err = healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
	if status.Code(err) != codes.Unavailable {
		t.Fatalf("health check with a foreign certificate: %v, want Unavailable", err)
	}

	deadline := time.Now().Add(5 * time.Second)
	for len(jsonLines(t, &buf)) == 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	lines := jsonLines(t, &buf)
	if len(lines) == 0 {
		t.Fatal("the server logged no refused handshake")
	}
	if l := lines[0]; l[logging.KeyReason] != ReasonUnknownAuthority || l[logging.KeyPeer] != clientSPIFFE {
		t.Errorf("log line %v; want reason %q and peer %s", l, ReasonUnknownAuthority, clientSPIFFE)
	}
}
