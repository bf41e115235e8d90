package integration

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/csv"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	bolt "go.etcd.io/bbolt"
	spb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/ketnoi/ketnoi/integration/cluster"
	"github.com/ketnoi/ketnoi/internal/dataset"
	"github.com/ketnoi/ketnoi/internal/evidence"
	"github.com/ketnoi/ketnoi/internal/exchange"
	"github.com/ketnoi/ketnoi/internal/mtls"
	"github.com/ketnoi/ketnoi/internal/pki"
	"github.com/ketnoi/ketnoi/internal/sign"
	exchangev1 "github.com/ketnoi/ketnoi/proto/ketnoi/exchange/v1"
	registryv1 "github.com/ketnoi/ketnoi/proto/ketnoi/registry/v1"
	dvhcv1 "github.com/ketnoi/ketnoi/proto/vn/gov/dvhc/v1"
)

const (
	consumerNode = "spiffe://vn.ketnoi/node/NN/000.00.00.G22/vpcp"
	providerNode = "spiffe://vn.ketnoi/node/NN/000.00.00.G09/bnv"
)

var binDir string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "ketnoi-bin-")
	if err != nil {
		panic(err)
	}
	binDir = dir
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	var flags []string
	if raceEnabled {
		// The binaries under test run with the race detector too.
		flags = append(flags, "-race")
	}
	if err := cluster.Build(ctx, "..", binDir, flags...); err != nil {
		cancel()
		os.RemoveAll(dir)
		panic(err)
	}
	cancel()
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

func startStandard(t *testing.T) *cluster.Cluster {
	t.Helper()
	return startStandardWith(t, "")
}

// startStandardWith starts the standard scenario with extra node
// configuration.
func startStandardWith(t *testing.T, nodeYAML string) *cluster.Cluster {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	return startScenario(ctx, t, nodeYAML, (*cluster.Cluster).Standard, "registry", "vpcp", "bnv", "btc", "dvhc")
}

// startScenario starts a cluster with extra node configuration and runs
// scenario on it, then waits until every node holds the registry's latest
// configuration. At cleanup it stops every process, fails the test on data
// races the race-built binaries reported and, when the test failed, prints
// the end of the logs of procs.
func startScenario(ctx context.Context, t *testing.T, nodeYAML string,
	scenario func(*cluster.Cluster, context.Context) error, procs ...string) *cluster.Cluster {
	t.Helper()
	var log strings.Builder
	c, err := cluster.New(ctx, t.TempDir(), binDir, &log)
	if err != nil {
		t.Fatalf("new cluster: %v\n%s", err, log.String())
	}
	c.NodeYAML = nodeYAML
	t.Cleanup(func() {
		c.Close()
		if races := c.DataRaces(); len(races) > 0 {
			t.Errorf("data races reported by %v", races)
		}
		if t.Failed() {
			for _, name := range procs {
				b, _ := os.ReadFile(filepath.Join(c.Dir, "logs", name+".log"))
				t.Logf("--- %s log ---\n%s", name, tail(b, 200))
			}
		}
	})
	if err := scenario(c, ctx); err != nil {
		t.Fatalf("scenario: %v\n%s", err, log.String())
	}
	if err := c.WaitSynced(ctx); err != nil {
		t.Fatal(err)
	}
	return c
}

// trace runs `ketnoi evidence trace` of exchange id on node's admin endpoint.
func trace(ctx context.Context, c *cluster.Cluster, node, id string) (string, error) {
	return c.CLI(ctx, "evidence", "trace", "--node", c.Proc(node).Addrs["admin"], id)
}

// noRecords reports whether a trace failed because the log holds no
// record of the exchange.
func noRecords(err error) bool {
	var ce *cluster.CLIError
	return errors.As(err, &ce) && ce.ExitCode() == 1 && strings.Contains(ce.Stderr, "no records")
}

// tail returns the last n lines of b.
func tail(b []byte, n int) string {
	lines := strings.Split(string(b), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

func dial(t *testing.T, addr string) dvhcv1.AdminUnitServiceClient {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return dvhcv1.NewAdminUnitServiceClient(conn)
}

func convert(ctx context.Context, client dvhcv1.AdminUnitServiceClient, code string) (*dvhcv1.ConvertOldUnitResponse, metadata.MD, error) {
	var trailer metadata.MD
	resp, err := client.ConvertOldUnit(ctx, &dvhcv1.ConvertOldUnitRequest{OldCode: code}, grpc.Trailer(&trailer))
	return resp, trailer, err
}

func TestWalkingSkeleton(t *testing.T) {
	c := startStandard(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	consumer := dial(t, c.LocalAddr("vpcp", cluster.ConsumerClient))
	finance := dial(t, c.LocalAddr("btc", cluster.FinanceClient))

	var exchangeID, refusedID string
	t.Run("ConvertOldUnit returns the real successor", func(t *testing.T) {
		resp, trailer, err := convert(ctx, consumer, "00013")
		if err != nil {
			t.Fatalf("ConvertOldUnit(00013): %v", err)
		}
		if got := resp.GetOldUnit().GetFullName(); got != "Phường Quán Thánh" {
			t.Errorf("old unit = %q, want Phường Quán Thánh", got)
		}
		if len(resp.GetSuccessors()) != 1 {
			t.Fatalf("successors = %v, want one", resp.GetSuccessors())
		}
		s := resp.GetSuccessors()[0]
		if s.GetUnit().GetCode() != "00004" || s.GetUnit().GetFullName() != "Phường Ba Đình" || s.GetMergeType() != dvhcv1.MergeType_MERGE_TYPE_FULL {
			t.Errorf("successor = %v, want 00004 Phường Ba Đình (full)", s)
		}
		if ids := trailer.Get("ketnoi-message-id"); len(ids) != 1 || ids[0] == "" {
			t.Fatalf("trailer ketnoi-message-id = %v", ids)
		} else {
			exchangeID = ids[0]
		}
	})

	t.Run("the shared catalogue holds both editions and the countries", func(t *testing.T) {
		for _, q := range []struct{ list, version, code, want string }{
			{"vn-admin-units", "2025-03", "00013", "Phường Quán Thánh"},
			{"vn-admin-units", "2026-07", "00004", "Phường Ba Đình"},
			{"iso3166-countries", "7.14.0", "VN", "VNM"},
		} {
			out, err := c.CLI(ctx, "catalogue", "lookup", "--list", q.list, "--version", q.version, q.code)
			if err != nil || !strings.Contains(out, q.want) {
				t.Errorf("lookup %s/%s %s: %v\n%s", q.list, q.version, q.code, err, out)
			}
		}
	})

	t.Run("operators see the signed configuration", func(t *testing.T) {
		out, err := c.CLI(ctx, "config", "show")
		if err != nil {
			t.Fatal(err)
		}
		for _, want := range []string{"signature verified", cluster.GovernmentOffice, "Bộ Nội vụ", providerNode,
			cluster.AdminUnits, "g-1", cluster.ConsumerClient, "vn-admin-units 2026-07: 3355 entries"} {
			if !strings.Contains(out, want) {
				t.Errorf("config show lacks %q:\n%s", want, out)
			}
		}
	})

	t.Run("backend errors pass through unchanged", func(t *testing.T) {
		_, _, err := convert(ctx, consumer, "99999")
		st := status.Convert(err)
		if st.Code() != codes.NotFound {
			t.Fatalf("code = %v (%v), want NotFound", st.Code(), err)
		}
		if _, platform := exchange.PlatformReason(st); platform {
			t.Errorf("backend NotFound carries a platform detail: %v", st.Details())
		}
	})

	t.Run("ListCommunes streams every commune of Hà Nội", func(t *testing.T) {
		want := countCommunes(t, "01")
		stream, err := consumer.ListCommunes(ctx, &dvhcv1.ListCommunesRequest{ProvinceCode: "01"})
		if err != nil {
			t.Fatal(err)
		}
		got := 0
		for {
			m, err := stream.Recv()
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatalf("after %d communes: %v", got, err)
			}
			if m.GetUnit().GetParentCode() != "01" {
				t.Errorf("commune %s has parent %s", m.GetUnit().GetCode(), m.GetUnit().GetParentCode())
			}
			got++
		}
		if got != want {
			t.Errorf("streamed %d communes, want %d", got, want)
		}
	})

	t.Run("a member without a grant is refused by the provider", func(t *testing.T) {
		_, trailer, err := convert(ctx, finance, "00013")
		st := status.Convert(err)
		if st.Code() != codes.PermissionDenied {
			t.Fatalf("code = %v (%v), want PermissionDenied", st.Code(), err)
		}
		if reason, _ := exchange.PlatformReason(st); reason != exchange.ReasonGrantMissing {
			t.Errorf("reason = %q, want %s", reason, exchange.ReasonGrantMissing)
		}
		if !strings.Contains(st.Message(), cluster.FinanceClient) || !strings.Contains(st.Message(), "ConvertOldUnit") {
			t.Errorf("message %q does not name the client and method", st.Message())
		}
		if ids := trailer.Get("ketnoi-message-id"); len(ids) == 1 {
			refusedID = ids[0]
		} else {
			t.Errorf("refusal trailer has no message id: %v", trailer)
		}
		// The local endpoint serves every method as a stream; its log
		// names the method's own shape.
		waitLogLine(t, c, "btc", `method=vn.gov.dvhc.v1.AdminUnitService/ConvertOldUnit kind=unary code=PermissionDenied`)
	})

	t.Run("altered or mislabelled requests are rejected", func(t *testing.T) {
		testTampering(ctx, t, c)
	})

	t.Run("foreign or unlisted peers are refused at the handshake", func(t *testing.T) {
		testHandshake(ctx, t, c)
	})

	t.Run("a new grant reaches running nodes within seconds", func(t *testing.T) {
		if _, err := c.CLI(ctx, "grant", "add", "--client", cluster.FinanceClient, "--service", cluster.AdminUnits,
			"--method", "GetUnit"); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(10 * time.Second)
		for {
			resp, err := finance.GetUnit(ctx, &dvhcv1.GetUnitRequest{Code: "00004"})
			if err == nil {
				if resp.GetUnit().GetFullName() != "Phường Ba Đình" {
					t.Errorf("GetUnit(00004) = %v", resp.GetUnit())
				}
				break
			}
			if status.Code(err) != codes.PermissionDenied || time.Now().After(deadline) {
				t.Fatalf("GetUnit after grant: %v", err)
			}
			time.Sleep(100 * time.Millisecond)
		}
		// The grant names one method only.
		if _, _, err := convert(ctx, finance, "00013"); status.Code(err) != codes.PermissionDenied {
			t.Errorf("ConvertOldUnit with a GetUnit-only grant: %v, want PermissionDenied", err)
		}
	})

	t.Run("a provider moved to a new address is reached there", func(t *testing.T) {
		testMovedProvider(ctx, t, c)
	})

	t.Run("operators trace and verify the live logs", func(t *testing.T) {
		if exchangeID == "" {
			t.Skip("no exchange")
		}
		for _, node := range []string{"vpcp", "bnv"} {
			admin := c.Proc(node).Addrs["admin"]
			out, err := c.CLI(ctx, "evidence", "trace", "--node", admin, exchangeID)
			if err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(out, exchangeID) || !strings.Contains(out, "ConvertOldUnit") {
				t.Errorf("live trace on %s:\n%s", node, out)
			}
			out, err = c.CLI(ctx, "evidence", "verify", "--node", admin)
			if err != nil || !strings.HasPrefix(out, "ok") {
				t.Errorf("live verify on %s: %v\n%s", node, err, out)
			}
		}
	})

	t.Run("nodes keep serving while the registry is down", func(t *testing.T) {
		c.Stop("registry")
		if _, _, err := convert(ctx, consumer, "00013"); err != nil {
			t.Fatalf("call with registry stopped: %v", err)
		}
		// A restarted node starts from its cached configuration.
		for _, n := range []string{"vpcp", "bnv"} {
			if err := c.Restart(ctx, n); err != nil {
				t.Fatal(err)
			}
		}
		consumer = dial(t, c.LocalAddr("vpcp", cluster.ConsumerClient))
		if _, _, err := convert(ctx, consumer, "00013"); err != nil {
			t.Fatalf("call after node restarts with registry stopped: %v", err)
		}
	})

	t.Run("a failed call is recorded by the consumer with its cause", func(t *testing.T) {
		c.Stop("bnv")
		_, trailer, err := convert(ctx, dial(t, c.LocalAddr("vpcp", cluster.ConsumerClient)), "00013")
		st := status.Convert(err)
		if reason, _ := exchange.PlatformReason(st); st.Code() != codes.Unavailable || reason != exchange.ReasonProviderUnreachable {
			t.Fatalf("call with the provider node down: %v (reason %q), want Unavailable %s", err, reason, exchange.ReasonProviderUnreachable)
		}
		ids := trailer.Get("ketnoi-message-id")
		if len(ids) != 1 {
			t.Fatalf("failed call carries no message id: %v", trailer)
		}
		out, err := c.CLI(ctx, "evidence", "trace", "--node", c.Proc("vpcp").Addrs["admin"], ids[0])
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(out, "REQUEST_SENT") || !strings.Contains(out, "FAILED") || !strings.Contains(out, exchange.ReasonProviderUnreachable) {
			t.Errorf("consumer evidence of the failed call:\n%s", out)
		}
	})

	// Evidence is read from the log files, so the nodes stop first.
	c.Stop("vpcp")
	c.Stop("bnv")
	consumerLog := filepath.Join(c.Dir, "vpcp", "evidence.db")
	providerLog := filepath.Join(c.Dir, "bnv", "evidence.db")

	t.Run("both nodes hold matching evidence of the exchange", func(t *testing.T) {
		if exchangeID == "" {
			t.Skip("no exchange")
		}
		cons := entries(t, consumerLog, exchangeID)
		prov := entries(t, providerLog, exchangeID)
		wantKinds(t, cons, "REQUEST_SENT", "RESPONSE_RECEIVED")
		wantKinds(t, prov, "REQUEST_RECEIVED", "RESPONSE_SENT")
		for i := range cons {
			if string(cons[i].Record.GetHeader()) != string(prov[i].Record.GetHeader()) {
				t.Errorf("record %d: consumer and provider hold different signed headers", i)
			}
			if cons[i].Header.GetMessageId() != exchangeID || prov[i].Header.GetMessageId() != exchangeID {
				t.Errorf("record %d: message ids %s / %s", i, cons[i].Header.GetMessageId(), prov[i].Header.GetMessageId())
			}
			if string(cons[i].Header.GetPayloadSha256()) != string(prov[i].Header.GetPayloadSha256()) {
				t.Errorf("record %d: payload digests differ", i)
			}
		}
		out, err := c.CLI(ctx, "evidence", "trace", "--log", consumerLog, exchangeID)
		if err != nil {
			t.Fatal(err)
		}
		for _, want := range []string{exchangeID, cluster.ConsumerClient, cluster.AdminUnits, "ConvertOldUnit", "REQUEST_SENT", "RESPONSE_RECEIVED"} {
			if !strings.Contains(out, want) {
				t.Errorf("trace output lacks %q:\n%s", want, out)
			}
		}
	})

	t.Run("the refusal is in both nodes' evidence", func(t *testing.T) {
		if refusedID == "" {
			t.Skip("no refusal")
		}
		prov := entries(t, providerLog, refusedID)
		wantKinds(t, prov, "REFUSED", "RESPONSE_SENT")
		if !strings.Contains(prov[0].Record.GetReason(), exchange.ReasonGrantMissing) ||
			codes.Code(prov[0].Record.GetCode()) != codes.PermissionDenied {
			t.Errorf("refusal record: code %v reason %q", codes.Code(prov[0].Record.GetCode()), prov[0].Record.GetReason())
		}
	})

	t.Run("evidence verify accepts intact logs and names a flipped record", func(t *testing.T) {
		for _, l := range []string{consumerLog, providerLog} {
			out, err := c.CLI(ctx, "evidence", "verify", "--log", l, "--bundle", c.Path("bundle.pem"))
			if err != nil || !strings.HasPrefix(out, "ok") {
				t.Fatalf("verify %s: %v\n%s", l, err, out)
			}
		}
		flipped := filepath.Join(t.TempDir(), "flipped.db")
		index := flipLeafByte(t, providerLog, flipped)
		_, err := c.CLI(ctx, "evidence", "verify", "--log", flipped, "--bundle", c.Path("bundle.pem"))
		var ce *cluster.CLIError
		if !errors.As(err, &ce) || ce.ExitCode() != 1 {
			t.Fatalf("verify of a flipped log: %v, want exit 1", err)
		}
		if want := "record " + index; !strings.Contains(ce.Stderr, want) {
			t.Errorf("verify error %q does not name %s", ce.Stderr, want)
		}
	})
}

// countCommunes counts the communes of a province in the 2026-07 edition.
func countCommunes(t *testing.T, province string) int {
	t.Helper()
	f, err := dataset.Open(dataset.AdminUnits2026)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	rows, err := csv.NewReader(f).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, r := range rows[1:] {
		if r[0] == "ward" && r[7] == province {
			n++
		}
	}
	if n == 0 {
		t.Fatalf("no communes for province %s in the data", province)
	}
	return n
}

func entries(t *testing.T, path, msgID string) []evidence.Entry {
	t.Helper()
	l, err := evidence.OpenReadOnly(path)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	es, err := l.ByMessageID(msgID)
	if err != nil {
		t.Fatal(err)
	}
	return es
}

func wantKinds(t *testing.T, es []evidence.Entry, kinds ...string) {
	t.Helper()
	var got []string
	for _, e := range es {
		got = append(got, strings.TrimPrefix(e.Record.GetKind().String(), "RECORD_KIND_"))
	}
	if strings.Join(got, ",") != strings.Join(kinds, ",") {
		t.Fatalf("record kinds = %v, want %v", got, kinds)
	}
}

// actAsConsumerNode returns a federation client to the provider node that
// presents the consumer node's SVID and signs with its member key, so a
// test can send frames no honest node would.
func actAsConsumerNode(t *testing.T, c *cluster.Cluster) (exchangev1.FederationServiceClient, *exchange.BatchSigner) {
	t.Helper()
	td := spiffeid.RequireTrustDomainFromString(cluster.TrustDomain)
	ident, err := mtls.LoadFiles(c.Path("vpcp.pem"), c.Path("vpcp-key.pem"), c.Path("bundle.pem"), td)
	if err != nil {
		t.Fatal(err)
	}
	signer, err := sign.LoadSigner(c.Path("vpcp-sign.pem"), c.Path("vpcp-sign-key.pem"))
	if err != nil {
		t.Fatal(err)
	}
	conn, err := grpc.NewClient(c.Proc("bnv").Addrs["federation"], grpc.WithTransportCredentials(
		mtls.ClientCredentials(ident, tlsconfig.AuthorizeID(spiffeid.RequireFromString(providerNode)))))
	if err != nil {
		t.Fatal(err)
	}
	batch := exchange.NewBatchSigner(signer, nil)
	t.Cleanup(func() { conn.Close(); batch.Close() })
	return exchangev1.NewFederationServiceClient(conn), batch
}

// testTampering plays a consumer node that alters a message after signing.
func testTampering(ctx context.Context, t *testing.T, c *cluster.Cluster) {
	fed, batch := actAsConsumerNode(t, c)
	payload, _ := proto.Marshal(&dvhcv1.ConvertOldUnitRequest{OldCode: "00013"})

	cases := []struct {
		name   string
		header func(h *exchangev1.Header) // changes made before signing
		alter  func(f *exchangev1.Frame)  // changes made after signing
		code   codes.Code
		reason string
		msg    string
	}{
		{"payload", nil, func(f *exchangev1.Frame) {
			f.Payload = append([]byte(nil), f.Payload...)
			f.Payload[len(f.Payload)-1] ^= 1
		}, codes.Unauthenticated, exchange.ReasonPayloadMismatch, "does not match its signed digest"},
		{"header", nil, func(f *exchangev1.Frame) {
			h := f.SignedHeader.Header
			i := strings.Index(string(h), "ConvertOldUnit")
			h[i+len("ConvertOldUnit")-1] = 'X'
		}, codes.Unauthenticated, exchange.ReasonSignatureInvalid, "does not verify"},
		{"classification lowered", func(h *exchangev1.Header) {
			h.Classification = registryv1.Classification_CLASSIFICATION_UNSPECIFIED
		}, nil, codes.InvalidArgument, exchange.ReasonHeaderMalformed, "the service is CLASSIFICATION_NORMAL"},
		{"unary request left open", func(h *exchangev1.Header) { h.Final = false }, nil,
			codes.InvalidArgument, exchange.ReasonHeaderMalformed, "takes one request message"},
	}
	for _, tc := range cases {
		h := &exchangev1.Header{
			MessageId: exchange.NewMessageID(), Direction: exchangev1.Direction_DIRECTION_REQUEST,
			CallKind: exchangev1.CallKind_CALL_KIND_UNARY, Client: cluster.ConsumerClient,
			Service: cluster.AdminUnits, Method: "ConvertOldUnit", Final: true,
			SenderNode: consumerNode, AudienceNode: providerNode,
			Classification: registryv1.Classification_CLASSIFICATION_NORMAL,
		}
		if tc.header != nil {
			tc.header(h)
		}
		sealed, err := exchange.Seal(ctx, batch, h, payload, true, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		if tc.alter != nil {
			tc.alter(sealed.Frame)
		}
		stream, err := fed.Exchange(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if err := stream.Send(&exchangev1.ExchangeRequest{Frame: sealed.Frame}); err != nil {
			t.Fatal(err)
		}
		_ = stream.CloseSend()
		resp, err := stream.Recv()
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		var rh exchangev1.Header
		if err := proto.Unmarshal(resp.GetFrame().GetSignedHeader().GetHeader(), &rh); err != nil {
			t.Fatal(err)
		}
		if codes.Code(rh.GetStatus().GetCode()) != tc.code || !rh.GetFinal() || rh.GetHasMessage() {
			t.Errorf("%s: response status %v final=%v, want a final %v refusal", tc.name, rh.GetStatus(), rh.GetFinal(), tc.code)
		}
		if !strings.Contains(rh.GetStatus().GetMessage(), tc.msg) {
			t.Errorf("%s: status message %q is not precise", tc.name, rh.GetStatus().GetMessage())
		}
		// The refusal is signed by the provider and bound to what was received.
		if string(rh.GetRequestDigest()) != string(sha(sealed.Frame.GetSignedHeader().GetHeader())) {
			t.Errorf("%s: refusal not bound to the received header", tc.name)
		}
		if !strings.Contains(statusDetailReason(rh.GetStatus()), tc.reason) {
			t.Errorf("%s: reason %q, want %s", tc.name, statusDetailReason(rh.GetStatus()), tc.reason)
		}
	}
}

// testHandshake connects to the provider node with identities it must not
// accept: another trust domain, and an ID the configuration does not list.
func testHandshake(ctx context.Context, t *testing.T, c *cluster.Cluster) {
	addr := c.Proc("bnv").Addrs["federation"]
	td := spiffeid.RequireTrustDomainFromString(cluster.TrustDomain)
	provider := spiffeid.RequireFromString(providerNode)
	check := func(ident mtls.Identity) error {
		conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(mtls.ClientCredentials(ident, tlsconfig.AuthorizeID(provider))))
		if err != nil {
			return err
		}
		defer conn.Close()
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		_, err = healthpb.NewHealthClient(conn).Check(cctx, &healthpb.HealthCheckRequest{})
		return err
	}

	legit, err := mtls.LoadFiles(c.Path("vpcp.pem"), c.Path("vpcp-key.pem"), c.Path("bundle.pem"), td)
	if err != nil {
		t.Fatal(err)
	}
	if err := check(legit); err != nil {
		t.Fatalf("a listed node is refused: %v", err)
	}

	if _, err := c.CLI(ctx, "certs", "svid", "--dir", c.PKI(), "--id", "spiffe://vn.ketnoi/node/NN/000.00.00.X99/rogue", "--name", "rogue"); err != nil {
		t.Fatal(err)
	}
	rogue, err := mtls.LoadFiles(c.Path("rogue.pem"), c.Path("rogue-key.pem"), c.Path("bundle.pem"), td)
	if err != nil {
		t.Fatal(err)
	}
	if err := check(rogue); status.Code(err) != codes.Unavailable {
		t.Errorf("unlisted SPIFFE ID: %v, want the handshake refused (Unavailable)", err)
	}

	otherTD := spiffeid.RequireTrustDomainFromString("other.ketnoi")
	other, err := pki.NewCA(otherTD, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	issued, err := other.IssueSVID(spiffeid.RequireFromString("spiffe://other.ketnoi/node/NN/000.00.00.G22/vpcp"), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := issued.Write(filepath.Join(dir, "svid.pem"), filepath.Join(dir, "key.pem")); err != nil {
		t.Fatal(err)
	}
	foreign, err := mtls.LoadFiles(filepath.Join(dir, "svid.pem"), filepath.Join(dir, "key.pem"), c.Path("bundle.pem"), td)
	if err != nil {
		t.Fatal(err)
	}
	if err := check(foreign); status.Code(err) != codes.Unavailable {
		t.Errorf("foreign trust domain: %v, want the handshake refused (Unavailable)", err)
	}

	// The clients only saw their connections drop; the node's log says
	// who was refused and why.
	waitLogLine(t, c, "bnv", `msg="TLS handshake failed"`, "peer=spiffe://vn.ketnoi/node/NN/000.00.00.X99/rogue",
		`reason="SPIFFE ID not authorized"`)
	waitLogLine(t, c, "bnv", `msg="TLS handshake failed"`, "peer=spiffe://other.ketnoi/node/NN/000.00.00.G22/vpcp",
		`reason="trust domain not in the bundle"`)
}

// waitLogLine waits up to 5 s for a line of a process's log that holds
// every one of parts: a process may log a call after its caller has seen
// the result.
func waitLogLine(t *testing.T, c *cluster.Cluster, name string, parts ...string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		b, err := os.ReadFile(filepath.Join(c.Dir, "logs", name+".log"))
		if err != nil {
			t.Fatal(err)
		}
		for line := range strings.SplitSeq(string(b), "\n") {
			if containsAll(line, parts) {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Errorf("log of %s has no line with all of %q", name, parts)
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func containsAll(s string, parts []string) bool {
	for _, p := range parts {
		if !strings.Contains(s, p) {
			return false
		}
	}
	return true
}

func sha(b []byte) []byte {
	s := sha256.Sum256(b)
	return s[:]
}

// statusDetailReason returns the ErrorInfo reason of a signed status.
func statusDetailReason(cs *exchangev1.CallStatus) string {
	st := status.FromProto(&spb.Status{Code: cs.GetCode(), Message: cs.GetMessage(), Details: cs.GetDetails()})
	r, _ := exchange.PlatformReason(st)
	return r
}

// flipLeafByte copies a log and flips one byte of its last record; it
// returns the record's index.
func flipLeafByte(t *testing.T, src, dst string) string {
	t.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dst, b, 0o600); err != nil {
		t.Fatal(err)
	}
	db, err := bolt.Open(dst, 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var index uint64
	err = db.Update(func(tx *bolt.Tx) error {
		leaves := tx.Bucket([]byte("leaves"))
		k, v := leaves.Cursor().Last()
		index = binary.BigEndian.Uint64(k)
		nv := append([]byte(nil), v...)
		nv[len(nv)/2] ^= 0x01
		return leaves.Put(append([]byte(nil), k...), nv)
	})
	if err != nil {
		t.Fatal(err)
	}
	return strconv.FormatUint(index, 10)
}
