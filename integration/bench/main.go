// Command bench measures what ketnoi costs on one machine. It runs the same
// echo service four ways, side by side, with one client process:
//
//   - direct mTLS: client -> backend, TLS 1.3 with X.509-SVIDs;
//   - ketnoi: client -> consumer node -> (mTLS, signed frames, durable
//     evidence) -> provider node -> backend (h2c);
//   - nginx mTLS: client -> nginx A (h2c) -> mTLS -> nginx B -> backend
//     (h2c), a plain proxy pair as a baseline, when nginx is installed;
//   - grpc-go proxy: the same pair built from grpc-go and the node's codec
//     and settings, forwarding only (no signing, no evidence; see
//     goproxy.go).
//
// Cases: unary Echo with 100 B, 10 KiB and 1 MiB payloads at concurrency
// 1, 16 and 64, and a server-streamed Download of 1 GiB. It prints Markdown
// tables of throughput, p50/p99 latency, CPU per exchange and peak RSS of
// every process between client and backend, the ratios to direct, and the
// goals of the performance issue with met or not met.
//
// Usage:
//
//	go run ./integration/bench --bin bin [--duration 4s] [--stream-bytes N]
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/ketnoi/ketnoi/integration/cluster"
	"github.com/ketnoi/ketnoi/internal/pki"
)

func main() {
	// A closed stdout (bench | head) must not kill the bench before it
	// stops the processes it started.
	signal.Ignore(syscall.SIGPIPE)
	if os.Getenv(goproxyEnv) != "" {
		if err := runGoproxyMain(os.Args[1:]); err != nil {
			fmt.Fprintf(os.Stderr, "goproxy: %v\n", err)
			os.Exit(1)
		}
		return
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if errors.Is(err, flag.ErrHelp) {
		os.Exit(2)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "bench: %v\n", err)
		os.Exit(1)
	}
}

// options are the command-line settings.
type options struct {
	bin         string
	duration    time.Duration
	streamBytes int64
	chunks      []int32
	paths       map[string]bool
	order       string
	keep        bool
	workers     string
	payloads    []int
	conc        []int
	debugPorts  []int
}

func parseOptions(args []string, stderr io.Writer) (options, error) {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o options
	fs.StringVar(&o.bin, "bin", "bin", "directory with the ketnoi binaries (make build)")
	fs.DurationVar(&o.duration, "duration", 4*time.Second, "length of each unary case")
	fs.Int64Var(&o.streamBytes, "stream-bytes", 1<<30, "bytes of the Download case")
	chunks := fs.String("chunks", "1048576,65536", "comma-separated message sizes of the Download case")
	payloads := fs.String("payloads", "100,10240,1048576", "comma-separated payload sizes of the unary cases")
	conc := fs.String("concurrency", "1,16,64", "comma-separated concurrencies of the unary cases")
	paths := fs.String("paths", "direct,ketnoi,nginx,goproxy", "comma-separated paths to measure: direct, ketnoi, nginx, goproxy")
	order := fs.String("evidence-order", "strict", "evidence_order of the ketnoi nodes: strict or overlap")
	fs.BoolVar(&o.keep, "keep", false, "keep the state directory (logs, configs)")
	fs.StringVar(&o.workers, "nginx-workers", "auto", "worker_processes of each nginx: a count or auto (one per CPU)")
	debugPorts := fs.String("debug-ports", "", "two loopback ports on which the consumer and provider nodes serve /debug/pprof (off when empty)")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if o.duration <= 0 || o.duration > time.Minute {
		return o, fmt.Errorf("--duration %s: want 0 < d <= 1m", o.duration)
	}
	if o.streamBytes < 0 || o.streamBytes > 16<<30 {
		return o, fmt.Errorf("--stream-bytes %d: want 0 to 16 GiB", o.streamBytes)
	}
	var err error
	if o.payloads, err = intList("payloads", *payloads, 4<<20-64); err != nil {
		return o, err
	}
	if o.conc, err = intList("concurrency", *conc, 1024); err != nil {
		return o, err
	}
	cs, err := intList("chunks", *chunks, maxChunk)
	if err != nil {
		return o, err
	}
	for _, c := range cs {
		o.chunks = append(o.chunks, int32(c))
	}
	if *debugPorts != "" {
		if o.debugPorts, err = intList("debug-ports", *debugPorts, 65535); err != nil {
			return o, err
		}
		if len(o.debugPorts) != 2 {
			return o, fmt.Errorf("--debug-ports %q: want two ports, consumer first", *debugPorts)
		}
	}
	o.order = *order
	if o.order != "strict" && o.order != "overlap" {
		return o, fmt.Errorf("--evidence-order: %q, want strict or overlap", o.order)
	}
	o.paths = map[string]bool{}
	for _, p := range strings.Split(*paths, ",") {
		if p != "direct" && p != "ketnoi" && p != "nginx" && p != "goproxy" {
			return o, fmt.Errorf("--paths: unknown path %q", p)
		}
		o.paths[p] = true
	}
	if n, err := strconv.Atoi(o.workers); o.workers != "auto" && (err != nil || n <= 0) {
		return o, fmt.Errorf("--nginx-workers %q: want a positive count or auto", o.workers)
	}
	if !o.paths["direct"] {
		return o, errors.New("--paths: direct is required, every ratio is to it")
	}
	return o, nil
}

// intList parses a comma-separated list of integers between 1 and limit.
func intList(flagName, s string, limit int) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n <= 0 || n > limit {
			return nil, fmt.Errorf("--%s %q: want integers between 1 and %d", flagName, f, limit)
		}
		out = append(out, n)
	}
	return out, nil
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	o, err := parseOptions(args, stderr)
	if err != nil {
		return err
	}
	bin, err := filepath.Abs(o.bin)
	if err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "ketnoi-bench-")
	if err != nil {
		return err
	}
	if o.keep {
		fmt.Fprintf(stderr, "state in %s\n", dir)
	} else {
		defer os.RemoveAll(dir)
	}
	// Every case is bounded on its own; this bounds the whole run.
	ctx, cancel := context.WithTimeout(ctx, 20*time.Minute)
	defer cancel()
	began := time.Now()

	paths, skipped, err := startPaths(ctx, o, dir, bin, stderr)
	for _, p := range paths {
		defer p.Close()
	}
	if err != nil {
		return err
	}
	rep := &report{Machine: describeMachine(), Skipped: skipped, LoadBefore: loadAverage()}
	measure(ctx, o, paths, rep, stderr)
	rep.Took = time.Since(began)
	rep.LoadAfter = loadAverage()
	rep.print(stdout)
	return ctx.Err()
}

// startPaths starts every requested path; a missing nginx skips its rows.
func startPaths(ctx context.Context, o options, dir, bin string, stderr io.Writer) ([]*topology, []string, error) {
	ca, err := pki.NewCA(spiffeid.RequireTrustDomainFromString(cluster.TrustDomain), 3*time.Hour)
	if err != nil {
		return nil, nil, fmt.Errorf("create bench ca: %w", err)
	}
	backend, stopBackend, err := serve()
	if err != nil {
		return nil, nil, err
	}
	var paths []*topology
	var skipped []string
	direct, err := startDirect(ca)
	if err != nil {
		stopBackend()
		return nil, nil, err
	}
	paths = append(paths, direct)
	fail := func(err error) ([]*topology, []string, error) {
		stopBackend()
		return paths, skipped, err
	}
	if o.paths["ketnoi"] {
		fmt.Fprintln(stderr, "starting registry, consumer node and provider node")
		k, err := startKetnoi(ctx, filepath.Join(dir, "ketnoi"), bin, backend, o.order, o.debugPorts, io.Discard)
		if err != nil {
			return fail(fmt.Errorf("start ketnoi: %w", err))
		}
		paths = append(paths, k)
	}
	if o.paths["nginx"] {
		fmt.Fprintln(stderr, "starting nginx A and B")
		n, err := startNginx(ctx, ca, filepath.Join(dir, "nginx"), backend, o.workers)
		if err != nil {
			// Without nginx the other rows still mean something.
			skipped = append(skipped, "nginx mTLS: "+err.Error())
			fmt.Fprintf(stderr, "skipping the nginx rows: %v\n", err)
		} else {
			paths = append(paths, n)
		}
	}
	if o.paths["goproxy"] {
		fmt.Fprintln(stderr, "starting grpc-go proxies A and B")
		g, err := startGoproxy(ctx, ca, filepath.Join(dir, "goproxy"), backend)
		if err != nil {
			return fail(fmt.Errorf("start grpc-go proxies: %w", err))
		}
		paths = append(paths, g)
	}
	// The plaintext backend outlives the paths that use it.
	paths[0].close = chain(paths[0].close, stopBackend)
	for _, p := range paths {
		if err := echoOnce(ctx, p.Conn, payloadMessage(16)); err != nil {
			return fail(fmt.Errorf("first call through %s: %w", p.Name, err))
		}
	}
	return paths, skipped, nil
}

func chain(fs ...func()) func() {
	return func() {
		for _, f := range fs {
			f()
		}
	}
}
