package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/descriptorpb"

	"github.com/ketnoi/ketnoi/internal/pki"
)

func TestDescriptorSetDescribesTheEchoService(t *testing.T) {
	b, err := descriptorSet()
	if err != nil {
		t.Fatal(err)
	}
	var set descriptorpb.FileDescriptorSet
	if err := proto.Unmarshal(b, &set); err != nil {
		t.Fatalf("unmarshal descriptor set: %v", err)
	}
	files, err := protodesc.NewFiles(&set)
	if err != nil {
		t.Fatalf("descriptor set does not link: %v", err)
	}
	d, err := files.FindDescriptorByName(echoService)
	if err != nil {
		t.Fatalf("find %s: %v", echoService, err)
	}
	sd := d.(protoreflect.ServiceDescriptor)
	type method struct {
		Name, In, Out string
		ServerStreams bool
		ClientStreams bool
	}
	var got []method
	for i := range sd.Methods().Len() {
		m := sd.Methods().Get(i)
		got = append(got, method{string(m.Name()), string(m.Input().FullName()), string(m.Output().FullName()),
			m.IsStreamingServer(), m.IsStreamingClient()})
	}
	want := []method{
		{"Echo", "ketnoi.bench.v1.EchoRequest", "ketnoi.bench.v1.EchoResponse", false, false},
		{"Download", "ketnoi.bench.v1.DownloadRequest", "ketnoi.bench.v1.DownloadResponse", true, false},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("methods (-want +got):\n%s", diff)
	}
	dl, err := files.FindDescriptorByName("ketnoi.bench.v1.DownloadRequest")
	if err != nil {
		t.Fatal(err)
	}
	var fields []string
	md := dl.(protoreflect.MessageDescriptor)
	for i := range md.Fields().Len() {
		f := md.Fields().Get(i)
		fields = append(fields, string(f.Name())+"="+f.Kind().String()+"/"+f.JSONName())
	}
	if diff := cmp.Diff([]string{"total_bytes=int64/totalBytes", "chunk_bytes=int32/chunkBytes"}, fields); diff != "" {
		t.Errorf("DownloadRequest fields (-want +got):\n%s", diff)
	}
}

func TestDownloadRequestRoundTrip(t *testing.T) {
	b := downloadRequest(1<<30, 65536)
	// An unknown field after the known ones is skipped.
	b = append(b, 0x1a, 0x02, 'h', 'i')
	total, chunk, err := parseDownloadRequest(b)
	if err != nil {
		t.Fatal(err)
	}
	if total != 1<<30 || chunk != 65536 {
		t.Errorf("parsed (%d, %d), want (%d, 65536)", total, chunk, 1<<30)
	}
	if _, _, err := parseDownloadRequest([]byte{0x08}); err == nil {
		t.Error("truncated request parsed without error")
	}
}

// TestMain lets the test binary act as a proxy of the grpc-go baseline,
// as the bench binary does, so the baseline can be tested end to end.
func TestMain(m *testing.M) {
	if os.Getenv(goproxyEnv) != "" {
		if err := runGoproxyMain(os.Args[1:]); err != nil {
			fmt.Fprintf(os.Stderr, "goproxy: %v\n", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// TestGoproxyForwardsEveryCallShape runs the grpc-go proxy pair as two
// processes over mutual TLS and checks that echo payloads, a server stream
// and a backend's error status come through unchanged.
func TestGoproxyForwardsEveryCallShape(t *testing.T) {
	ca, err := pki.NewCA(spiffeid.RequireTrustDomainFromString("bench.test"), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	backend, stop, err := serve()
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	g, err := startGoproxy(ctx, ca, t.TempDir(), backend)
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	if len(g.Procs) != 2 || g.Procs[0].PIDs[0] == os.Getpid() {
		t.Fatalf("proxies %+v, want two processes of their own", g.Procs)
	}
	for _, size := range []int{1, 100, 1 << 20} {
		if err := echoOnce(ctx, g.Conn, payloadMessage(size)); err != nil {
			t.Errorf("echo %d bytes through the proxies: %v", size, err)
		}
	}
	r := runDownload(ctx, g.Conn, 1_000_003, 65536, time.Minute)
	if r.Err != nil || r.Bytes != 1_000_003 || r.Messages != 16 {
		t.Errorf("download through the proxies: %d bytes in %d messages, %v; want 1000003 in 16",
			r.Bytes, r.Messages, r.Err)
	}
	r = runDownload(ctx, g.Conn, 10, 0, time.Minute)
	if st := status.Convert(r.Err); st.Code() != codes.InvalidArgument || !strings.Contains(st.Message(), "chunk") {
		t.Errorf("download with chunk 0 through the proxies: %v, want the backend's InvalidArgument", r.Err)
	}
}

func TestEchoAndDownloadOverLoopback(t *testing.T) {
	addr, stop, err := serve()
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	conn, err := dial(addr, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	for _, size := range []int{1, 100, 10 << 10, 1 << 20} {
		if err := echoOnce(ctx, conn, payloadMessage(size)); err != nil {
			t.Errorf("echo %d bytes: %v", size, err)
		}
	}

	r := runDownload(ctx, conn, 1_000_003, 65536, time.Minute)
	if r.Err != nil {
		t.Fatalf("download: %v", r.Err)
	}
	if r.Bytes != 1_000_003 || r.Messages != 16 {
		t.Errorf("download got %d bytes in %d messages, want 1000003 in 16", r.Bytes, r.Messages)
	}

	r = runDownload(ctx, conn, 10, 0, time.Minute)
	if status.Code(r.Err) != codes.InvalidArgument {
		t.Errorf("download with chunk 0: %v, want InvalidArgument", r.Err)
	}
}

func TestRunUnaryStopsAtTheCallBudget(t *testing.T) {
	ca, err := pki.NewCA(spiffeid.RequireTrustDomainFromString("vn.ketnoi"), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	direct, err := startDirect(ca)
	if err != nil {
		t.Fatal(err)
	}
	defer direct.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	r := runUnary(ctx, direct.Conn, unaryCase{Payload: 100, Concurrency: 4, Duration: time.Minute, MaxCalls: 50})
	if r.FirstErr != nil {
		t.Fatalf("calls over mTLS failed: %v", r.FirstErr)
	}
	if r.Calls != 50 || r.Errors != 0 {
		t.Errorf("calls = %d, errors = %d; want 50 and 0", r.Calls, r.Errors)
	}
	if r.P50 <= 0 || r.P99 < r.P50 {
		t.Errorf("p50 = %s, p99 = %s; want 0 < p50 <= p99", r.P50, r.P99)
	}
}

func TestPercentile(t *testing.T) {
	ms := func(ns ...int) []time.Duration {
		var out []time.Duration
		for _, n := range ns {
			out = append(out, time.Duration(n)*time.Millisecond)
		}
		return out
	}
	tests := []struct {
		name string
		in   []time.Duration
		q    float64
		want time.Duration
	}{
		{"empty", nil, 0.5, 0},
		{"one", ms(7), 0.99, 7 * time.Millisecond},
		{"median of unsorted", ms(5, 1, 3, 2, 4), 0.5, 3 * time.Millisecond},
		{"p99 of 100", ms(100, 99, 98, 97, 96, 95, 94, 93, 92, 91, 90, 89, 88, 87, 86, 85, 84, 83, 82, 81,
			80, 79, 78, 77, 76, 75, 74, 73, 72, 71, 70, 69, 68, 67, 66, 65, 64, 63, 62, 61, 60, 59, 58, 57,
			56, 55, 54, 53, 52, 51, 50, 49, 48, 47, 46, 45, 44, 43, 42, 41, 40, 39, 38, 37, 36, 35, 34, 33,
			32, 31, 30, 29, 28, 27, 26, 25, 24, 23, 22, 21, 20, 19, 18, 17, 16, 15, 14, 13, 12, 11, 10, 9,
			8, 7, 6, 5, 4, 3, 2, 1), 0.99, 99 * time.Millisecond},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := percentile(tt.in, tt.q); got != tt.want {
				t.Errorf("percentile(%v) = %s, want %s", tt.q, got, tt.want)
			}
		})
	}
}

func TestProcReadsThisProcess(t *testing.T) {
	w := watched{Label: "self", PIDs: []int{os.Getpid()}}
	if err := w.resetPeak(); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 32<<20)
	for i := range buf {
		buf[i] = byte(i)
	}
	s := w.read()
	if s.ReadErr != nil {
		t.Fatal(s.ReadErr)
	}
	if s.RSS < int64(len(buf)) || s.PeakRSS < s.RSS {
		t.Errorf("rss = %d, peak = %d after touching %d bytes; want rss >= touched, peak >= rss",
			s.RSS, s.PeakRSS, len(buf))
	}
	if s.CPU <= 0 {
		t.Errorf("cpu = %s, want > 0", s.CPU)
	}
	_ = buf[len(buf)-1]
}

func TestNginxConfigsAreAccepted(t *testing.T) {
	bin, err := nginxBinary()
	if err != nil {
		t.Skip(err)
	}
	dir := t.TempDir()
	ca, err := pki.NewCA(spiffeid.RequireTrustDomainFromString("vn.ketnoi"), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if err := writeNginxPKI(ca, dir); err != nil {
		t.Fatal(err)
	}
	for _, p := range []nginxParams{
		{Name: "a", Dir: dir, Listen: "127.0.0.1:1", Upstream: "127.0.0.1:2", Ingress: true, Workers: "1"},
		{Name: "b", Dir: dir, Listen: "127.0.0.1:2", Upstream: "127.0.0.1:3", Workers: "auto"},
	} {
		var conf strings.Builder
		if err := nginxConf.Execute(&conf, p); err != nil {
			t.Fatal(err)
		}
		file := filepath.Join(dir, p.Name+".conf")
		if err := os.WriteFile(file, []byte(conf.String()), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.MkdirAll(filepath.Join(dir, p.Name+"-tmp"), 0o755); err != nil {
			t.Fatal(err)
		}
		out, err := exec.Command(bin, "-t", "-p", dir, "-c", file, "-e", filepath.Join(dir, "test.log")).CombinedOutput()
		if err != nil {
			t.Errorf("nginx -t rejects config %s: %v\n%s\n%s", p.Name, err, out, conf.String())
		}
	}
}

// The goals are judged per path: the grpc-go proxy pair's verdicts come
// from its own rows, and its table is printed only when it was measured.
func TestGoalsPerPath(t *testing.T) {
	row := func(path string, conc, calls int, p50 time.Duration, cpu ...time.Duration) unaryRow {
		r := unaryRow{Case: unaryCase{Payload: 100, Concurrency: conc}, Path: path,
			Res: unaryResult{Calls: calls, Elapsed: time.Second, P50: p50}}
		for _, c := range cpu {
			r.Uses = append(r.Uses, use{CPU: c})
		}
		return r
	}
	r := &report{Unary: []unaryRow{
		row("direct mTLS", 64, 40000, time.Millisecond),
		row("nginx mTLS", 64, 10000, 5*time.Millisecond, time.Second, time.Second),
		row(ketnoiPath, 64, 5000, 10*time.Millisecond, time.Second, time.Second),
		row(goproxyPath, 64, 11000, 4*time.Millisecond, 550*time.Millisecond, 550*time.Millisecond),
		row("direct mTLS", 1, 10000, 50*time.Microsecond),
		row(ketnoiPath, 1, 500, 2*time.Millisecond, 400*time.Millisecond, 400*time.Millisecond),
		row(goproxyPath, 1, 1500, 600*time.Microsecond, 400*time.Millisecond, 400*time.Millisecond),
	}}
	verdicts := func(path string) []string {
		var out []string
		for _, g := range r.goals(path) {
			out = append(out, fmt.Sprintf("%t %s", g.Met, g.Measured))
		}
		return out
	}
	want := []string{
		"false c64: 200/200 µs; c1: 800/800 µs (in/out)",
		"false 5000 vs 10000 req/s = 50%",
		"false 5000 vs 40000 req/s = 12%",
		"false 2.00 ms − 50 µs = +1.95 ms",
	}
	if diff := cmp.Diff(want, verdicts(ketnoiPath)); diff != "" {
		t.Errorf("ketnoi goals (-want +got):\n%s", diff)
	}
	want = []string{
		"false c64: 50/50 µs; c1: 267/267 µs (in/out)",
		"true 11000 vs 10000 req/s = 110%",
		"true 11000 vs 40000 req/s = 28%",
		"true 600 µs − 50 µs = +550 µs",
	}
	if diff := cmp.Diff(want, verdicts(goproxyPath)); diff != "" {
		t.Errorf("grpc-go proxy goals (-want +got):\n%s", diff)
	}

	var out strings.Builder
	r.printGoals(&out)
	if !strings.Contains(out.String(), "for the grpc-go proxy pair") {
		t.Errorf("goals printed without the grpc-go proxy table:\n%s", out.String())
	}
	r.Unary = r.Unary[:3]
	out.Reset()
	r.printGoals(&out)
	if strings.Contains(out.String(), "grpc-go proxy") {
		t.Errorf("grpc-go proxy table printed without its rows:\n%s", out.String())
	}
}
