package node

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	bolt "go.etcd.io/bbolt"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/ketnoi/ketnoi/internal/evidence"
	"github.com/ketnoi/ketnoi/internal/exchange"
	"github.com/ketnoi/ketnoi/internal/gconf"
	"github.com/ketnoi/ketnoi/internal/id"
	"github.com/ketnoi/ketnoi/internal/logging"
	"github.com/ketnoi/ketnoi/internal/pki/pkitest"
	"github.com/ketnoi/ketnoi/internal/sign"
	exchangev1 "github.com/ketnoi/ketnoi/proto/ketnoi/exchange/v1"
	registryv1 "github.com/ketnoi/ketnoi/proto/ketnoi/registry/v1"
)

const (
	testConsumer   = "spiffe://vn.ketnoi/node/NN/000.00.00.G22/vpcp"
	testProvider   = "spiffe://vn.ketnoi/node/NN/000.00.00.G09/bnv"
	testClient     = "VN/NN/000.00.00.G22/vanban"
	testService    = "VN/NN/000.00.00.G09/dvhc/vn.gov.dvhc.v1.AdminUnitService"
	testGRPCPrefix = "/vn.gov.dvhc.v1.AdminUnitService/"
)

// federation is a signed global configuration of two members, a consumer
// node of one and a provider node of the other, without any network.
type federation struct {
	ca       *pkitest.CA
	registry *sign.Signer
	g22, g09 *sign.Signer
	source   *gconf.Source
	// g22Certs, when set, are G22's registered signing certificates
	// instead of g22's.
	g22Certs [][]byte
	// noProvider leaves the provider's node out of the configuration.
	noProvider bool
}

func newFederation(t *testing.T) *federation {
	t.Helper()
	ca := pkitest.NewCA(t, "vn.ketnoi")
	db, err := bolt.Open(filepath.Join(t.TempDir(), "state.db"), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	src, err := gconf.NewSource(db, nil, ca.Pool(), nil)
	if err != nil {
		t.Fatal(err)
	}
	return &federation{
		ca: ca, registry: ca.RegistrySigner(t), source: src,
		g22: ca.Signer(t, "VN/NN/000.00.00.G22"), g09: ca.Signer(t, "VN/NN/000.00.00.G09"),
	}
}

// g22Registered returns G22's registered signing certificates.
func (f *federation) g22Registered() [][]byte {
	if f.g22Certs != nil {
		return f.g22Certs
	}
	return [][]byte{f.g22.Certificate().Raw}
}

// publish makes a configuration valid until expires the source's current
// one, as the registry's watch would.
func (f *federation) publish(t *testing.T, version uint64, expires time.Time) {
	t.Helper()
	cfg := &registryv1.GlobalConfiguration{
		Version:     version,
		IssuedAt:    timestamppb.New(expires.Add(-24 * time.Hour)),
		ExpiresAt:   timestamppb.New(expires),
		Instance:    "VN",
		TrustDomain: "vn.ketnoi",
		Members: []*registryv1.Member{
			{Id: "VN/NN/000.00.00.G22", Subsystems: []string{"vanban"},
				SigningCertificates: f.g22Registered()},
			{Id: "VN/NN/000.00.00.G09", Subsystems: []string{"dvhc"},
				SigningCertificates: [][]byte{f.g09.Certificate().Raw}},
		},
		Nodes: []*registryv1.Node{
			{SpiffeId: testConsumer, Member: "VN/NN/000.00.00.G22", Address: "127.0.0.1:1"},
			{SpiffeId: testProvider, Member: "VN/NN/000.00.00.G09", Address: "127.0.0.1:2"},
		},
		Services: []*registryv1.Service{{
			Id: testService, Provider: "VN/NN/000.00.00.G09/dvhc", GrpcService: "vn.gov.dvhc.v1.AdminUnitService",
			Classification: registryv1.Classification_CLASSIFICATION_NORMAL,
			Methods: []*registryv1.Method{
				{Name: "ConvertOldUnit"},
				{Name: "ListCommunes", ServerStreaming: true},
			},
		}},
	}
	if f.noProvider {
		cfg.Nodes = cfg.Nodes[:1]
	}
	raw, err := proto.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	sig, err := f.registry.Sign(sign.TypeConfiguration, raw)
	if err != nil {
		t.Fatal(err)
	}
	sc := &registryv1.SignedConfiguration{Configuration: raw, Signature: sig,
		CertificateChain: [][]byte{f.registry.Certificate().Raw}}
	if err := f.source.Accept(sc); err != nil {
		t.Fatalf("accept configuration %d: %v", version, err)
	}
}

// node returns a node named self of the federation whose clock is now and
// whose evidence log is closed, so that an exchange that gets as far as
// recording ends there.
func (f *federation) node(t *testing.T, self string, now time.Time, log *slog.Logger) *Node {
	t.Helper()
	n := f.recordingNode(t, self, now, log)
	if err := n.evidence.Close(); err != nil {
		t.Fatal(err)
	}
	return n
}

// recordingNode is node with its evidence log open.
func (f *federation) recordingNode(t *testing.T, self string, now time.Time, log *slog.Logger) *Node {
	t.Helper()
	l, err := evidence.Open(filepath.Join(t.TempDir(), "evidence.db"), evidence.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return &Node{
		cfg: &Config{ClockSkew: DefaultClockSkew, EvidenceOrder: EvidenceStrict}, log: log,
		self: spiffeid.RequireFromString(self), gconf: f.source, evidence: l,
		verifier: exchange.NewVerifier(16), replay: newReplayCache(2 * DefaultClockSkew),
		now: func() time.Time { return now },
	}
}

// fakeCall is the server side of one gRPC call: its context, the messages
// it receives, then recvErr.
type fakeCall struct {
	grpc.ServerStream
	ctx     context.Context
	recv    []proto.Message
	recvErr error
	trailer metadata.MD
}

func (c *fakeCall) Context() context.Context     { return c.ctx }
func (c *fakeCall) SetHeader(metadata.MD) error  { return nil }
func (c *fakeCall) SendHeader(metadata.MD) error { return nil }
func (c *fakeCall) SetTrailer(md metadata.MD)    { c.trailer = metadata.Join(c.trailer, md) }
func (c *fakeCall) SendMsg(any) error            { return nil }

func (c *fakeCall) RecvMsg(m any) error {
	if len(c.recv) == 0 {
		return c.recvErr
	}
	proto.Merge(m.(proto.Message), c.recv[0])
	c.recv = c.recv[1:]
	return nil
}

// transport names the method of a fake call, as grpc.MethodFromServerStream
// reads it.
type transport struct{ method string }

func (t transport) Method() string             { return t.method }
func (transport) SetHeader(metadata.MD) error  { return nil }
func (transport) SendHeader(metadata.MD) error { return nil }
func (transport) SetTrailer(metadata.MD) error { return nil }

// callLine runs handler as a server does for a method served as a
// bidirectional stream, under the node's call logging, and returns the
// call's log line.
func callLine(t *testing.T, method string, ss *fakeCall, srv any, handler grpc.StreamHandler) map[string]any {
	t.Helper()
	var buf bytes.Buffer
	_, logStream := logging.CallInterceptors(slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug})))
	ss.ctx = grpc.NewContextWithServerTransportStream(ss.ctx, transport{method})
	info := &grpc.StreamServerInfo{FullMethod: method, IsClientStream: true, IsServerStream: true}
	_ = logStream(srv, ss, info, handler)
	for l := range strings.SplitSeq(buf.String(), "\n") {
		var m map[string]any
		if json.Unmarshal([]byte(l), &m) == nil && m["msg"] == "finished call" {
			return m
		}
	}
	t.Fatalf("no call log line in %s", buf.String())
	return nil
}

// TestConsumerLogsCallKind: the local endpoint serves every method as a
// bidirectional stream, but its log names the method's own shape.
func TestConsumerLogsCallKind(t *testing.T) {
	f := newFederation(t)
	now := time.Now()
	f.publish(t, 1, now.Add(time.Hour))
	c := &consumer{n: f.node(t, testConsumer, now, slog.New(slog.DiscardHandler)), client: testClientID(t)}

	for method, want := range map[string]string{
		"ConvertOldUnit": logging.KindUnary,
		"ListCommunes":   logging.KindServerStream,
		// A method the configuration does not list keeps the declared kind.
		"NoSuchMethod": logging.KindBidiStream,
	} {
		t.Run(method, func(t *testing.T) {
			// The application goes away before sending its request.
			ss := &fakeCall{ctx: context.Background(), recvErr: status.Error(codes.Canceled, "client went away")}
			line := callLine(t, testGRPCPrefix+method, ss, nil, c.handle)
			if line[logging.KeyCallKind] != want {
				t.Errorf("kind = %v, want %s (line %v)", line[logging.KeyCallKind], want, line)
			}
		})
	}

	// A call refused before it is sent, once its method is known, is
	// logged with the method's shape too.
	f.noProvider = true
	f.publish(t, 2, now.Add(time.Hour))
	ss := &fakeCall{ctx: context.Background()}
	line := callLine(t, testGRPCPrefix+"ConvertOldUnit", ss, nil, c.handle)
	if line[logging.KeyCallKind] != logging.KindUnary || line[logging.KeyCode] != codes.Unavailable.String() {
		t.Errorf("refused call logged as kind %v code %v, want %s %s (line %v)", line[logging.KeyCallKind],
			line[logging.KeyCode], logging.KindUnary, codes.Unavailable, line)
	}

	// So is a call refused because the configuration expired.
	f.noProvider = false
	f.publish(t, 3, now.Add(-time.Second))
	for method, want := range map[string]string{"ConvertOldUnit": logging.KindUnary, "ListCommunes": logging.KindServerStream} {
		line := callLine(t, testGRPCPrefix+method, &fakeCall{ctx: context.Background()}, nil, c.handle)
		if line[logging.KeyCallKind] != want || line[logging.KeyCode] != codes.Unavailable.String() {
			t.Errorf("%s refused for an expired configuration logged as kind %v code %v, want %s %s",
				method, line[logging.KeyCallKind], line[logging.KeyCode], want, codes.Unavailable)
		}
	}
}

// TestProviderLogsCallKind: the federation endpoint serves every exchange
// as one bidirectional stream; its log names the shape of the call the
// signed request carries, also when the request is refused.
func TestProviderLogsCallKind(t *testing.T) {
	f := newFederation(t)
	now := time.Now()
	f.publish(t, 1, now.Add(-time.Second)) // expired: the provider refuses
	n := f.node(t, testProvider, now, slog.New(slog.DiscardHandler))
	ctx := fromConsumerNode(t, f)

	for _, tt := range []struct {
		method string
		kind   exchangev1.CallKind
		want   string
	}{
		{"ConvertOldUnit", exchangev1.CallKind_CALL_KIND_UNARY, logging.KindUnary},
		{"ListCommunes", exchangev1.CallKind_CALL_KIND_SERVER_STREAMING, logging.KindServerStream},
	} {
		t.Run(tt.method, func(t *testing.T) {
			h := &exchangev1.Header{
				MessageId: exchange.NewMessageID(), Direction: exchangev1.Direction_DIRECTION_REQUEST,
				CallKind: tt.kind, Client: testClient, Service: testService, Method: tt.method, Final: true,
				Classification: registryv1.Classification_CLASSIFICATION_NORMAL,
				SenderNode:     testConsumer, AudienceNode: testProvider,
			}
			ss := &fakeCall{ctx: ctx, recv: []proto.Message{signedRequest(t, f, h, now)}}
			line := callLine(t, exchangev1.FederationService_Exchange_FullMethodName, ss, &provider{n: n},
				exchangev1.FederationService_ServiceDesc.Streams[0].Handler)
			if line[logging.KeyCallKind] != tt.want {
				t.Errorf("kind = %v, want %s (line %v)", line[logging.KeyCallKind], tt.want, line)
			}
		})
	}

	t.Run("unsigned request", func(t *testing.T) {
		ss := &fakeCall{ctx: ctx, recv: []proto.Message{&exchangev1.ExchangeRequest{Frame: &exchangev1.Frame{}}}}
		line := callLine(t, exchangev1.FederationService_Exchange_FullMethodName, ss, &provider{n: n},
			exchangev1.FederationService_ServiceDesc.Streams[0].Handler)
		if line[logging.KeyCallKind] != logging.KindBidiStream {
			t.Errorf("kind = %v, want the declared %s for a request whose header does not verify",
				line[logging.KeyCallKind], logging.KindBidiStream)
		}
	})
}

// TestExpiredConfiguration pins what the README tells operators about the
// configuration's expiry: a node refuses calls as consumer and as provider
// with Unavailable and CONFIG_EXPIRED, reports NOT_SERVING, and serves
// again as soon as a newer configuration arrives.
func TestExpiredConfiguration(t *testing.T) {
	f := newFederation(t)
	expiry := time.Now()
	f.publish(t, 1, expiry)
	after := expiry.Add(time.Second)
	cons := &consumer{n: f.node(t, testConsumer, after, slog.New(slog.DiscardHandler)), client: testClientID(t)}
	prov := &serve{n: f.node(t, testProvider, after, slog.New(slog.DiscardHandler)), peer: testConsumer}

	_, perr := cons.prepare(context.Background(), testGRPCPrefix+"ConvertOldUnit")
	if perr == nil || perr.Code != codes.Unavailable || perr.Reason != exchange.ReasonConfigExpired ||
		!strings.Contains(perr.Msg, "version 1 expired at") {
		t.Errorf("consumer after expiry: %v, want Unavailable %s naming the version", perr, exchange.ReasonConfigExpired)
	}
	perr = prov.admit(&exchange.Opened{Header: &exchangev1.Header{}})
	if perr == nil || perr.Code != codes.Unavailable || perr.Reason != exchange.ReasonConfigExpired {
		t.Errorf("provider after expiry: %v, want Unavailable %s", perr, exchange.ReasonConfigExpired)
	}
	checkHealth(t, cons.n, healthpb.HealthCheckResponse_NOT_SERVING)

	// The registry is back: its next configuration is accepted although
	// the current one has expired, and the node serves again.
	f.publish(t, 2, after.Add(24*time.Hour))
	if _, perr := cons.prepare(context.Background(), testGRPCPrefix+"ConvertOldUnit"); perr != nil {
		t.Errorf("consumer with a renewed configuration: %v", perr)
	}
	checkHealth(t, cons.n, healthpb.HealthCheckResponse_SERVING)
}

func testClientID(t *testing.T) id.Client {
	t.Helper()
	c, err := id.ParseClient(testClient)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func checkHealth(t *testing.T, n *Node, want healthpb.HealthCheckResponse_ServingStatus) {
	t.Helper()
	resp, err := (&nodeHealth{n: n}).Check(context.Background(), &healthpb.HealthCheckRequest{})
	if err != nil || resp.GetStatus() != want {
		t.Errorf("health = %v, %v; want %v", resp.GetStatus(), err, want)
	}
}

// TestCallLogNamesMessageID: the finished-call line of an exchange names
// its message id, the one the application gets in its trailer and the
// evidence records are under, also when the call is refused: by the
// consumer before sending, or by the provider on the header it received.
// A call whose request the consumer never read names none.
func TestCallLogNamesMessageID(t *testing.T) {
	f := newFederation(t)
	now := time.Now()
	f.publish(t, 1, now.Add(time.Hour))
	c := &consumer{n: f.node(t, testConsumer, now, slog.New(slog.DiscardHandler)), client: testClientID(t)}
	t.Run("consumer refused", func(t *testing.T) {
		ss := &fakeCall{ctx: context.Background(), recvErr: status.Error(codes.Canceled, "client went away")}
		line := callLine(t, testGRPCPrefix+"Delete", ss, nil, c.handle)
		ids := ss.trailer.Get(MDMessageID)
		if len(ids) != 1 || line[logging.KeyMessageID] != ids[0] {
			t.Errorf("line names %s %v, trailer %v (line %v)", logging.KeyMessageID, line[logging.KeyMessageID], ids, line)
		}
	})
	// When the application's side ends the call before its request is
	// read, nothing is signed or recorded: no exchange, no message id.
	for name, ss := range map[string]*fakeCall{
		"cancelled": {recvErr: status.Error(codes.Canceled, "client went away")},
		"too large": {recvErr: status.Error(codes.ResourceExhausted,
			"grpc: received message larger than max (5000000 vs. 4194304)")},
	} {
		t.Run("consumer "+name, func(t *testing.T) {
			ss.ctx = context.Background()
			line := callLine(t, testGRPCPrefix+"ConvertOldUnit", ss, nil, c.handle)
			if id, ok := line[logging.KeyMessageID]; ok || len(ss.trailer.Get(MDMessageID)) != 0 {
				t.Errorf("line names %s %v, trailer %v; want neither (line %v)", logging.KeyMessageID, id,
					ss.trailer.Get(MDMessageID), line)
			}
			want := status.Convert(ss.recvErr).Code().String()
			if line[logging.KeyCode] != want {
				t.Errorf("code %v, want %s (line %v)", line[logging.KeyCode], want, line)
			}
		})
	}

	t.Run("provider", func(t *testing.T) {
		f.publish(t, 2, now.Add(-time.Second)) // expired: the provider refuses
		n := f.node(t, testProvider, now, slog.New(slog.DiscardHandler))
		ctx := fromConsumerNode(t, f)
		h := &exchangev1.Header{
			MessageId: exchange.NewMessageID(), Direction: exchangev1.Direction_DIRECTION_REQUEST,
			CallKind: exchangev1.CallKind_CALL_KIND_UNARY, Client: testClient, Service: testService,
			Method: "ConvertOldUnit", Final: true, Classification: registryv1.Classification_CLASSIFICATION_NORMAL,
			SenderNode: testConsumer, AudienceNode: testProvider,
		}
		ss := &fakeCall{ctx: ctx, recv: []proto.Message{signedRequest(t, f, h, now)}}
		line := callLine(t, exchangev1.FederationService_Exchange_FullMethodName, ss, &provider{n: n},
			exchangev1.FederationService_ServiceDesc.Streams[0].Handler)
		if line[logging.KeyMessageID] != h.GetMessageId() {
			t.Errorf("line names %s %v, want %s (line %v)", logging.KeyMessageID, line[logging.KeyMessageID],
				h.GetMessageId(), line)
		}
	})
}

// fromConsumerNode is the context of a call to the federation endpoint
// over a connection from the consumer node.
func fromConsumerNode(t *testing.T, f *federation) context.Context {
	t.Helper()
	svid := f.ca.SVID(t, testConsumer)
	return peer.NewContext(context.Background(), &peer.Peer{AuthInfo: credentials.TLSInfo{
		State: tls.ConnectionState{PeerCertificates: []*x509.Certificate{svid.Certificates[0]}},
	}})
}

// signedRequest is the request of header h with a small payload, signed by
// the consumer's member as its node would at now.
func signedRequest(t *testing.T, f *federation, h *exchangev1.Header, now time.Time) *exchangev1.ExchangeRequest {
	t.Helper()
	payload := []byte("request")
	raw, digest, err := exchange.Prepare(f.g22, h, payload, true, now)
	if err != nil {
		t.Fatal(err)
	}
	shs, err := exchange.SignBatch(f.g22, [][]byte{raw})
	if err != nil {
		t.Fatal(err)
	}
	return &exchangev1.ExchangeRequest{Frame: exchange.Assemble(h, digest, shs[0], payload).Frame}
}
