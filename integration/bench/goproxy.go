package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime/debug"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"

	"github.com/ketnoi/ketnoi/internal/mtls"
	"github.com/ketnoi/ketnoi/internal/pki"
	"github.com/ketnoi/ketnoi/internal/proxy"
)

// The grpc-go proxy baseline is the nginx pair's topology built from the
// same pieces as a node: grpc-go servers and clients, the node's raw frame
// codec, its flow-control windows, stream workers and GC setting, and
// mutual TLS with SPIFFE IDs between the two proxies. It forwards every
// call untouched and does nothing else: no signing, no verification, no
// evidence. The difference between its rows and the ketnoi rows is what
// the security work costs in this implementation; the difference between
// its rows and nginx's is what grpc-go itself costs.
//
// The proxies are this bench binary started again with goproxyEnv set, so
// their CPU and memory are measured per process like the nodes'.

// goproxyEnv, when set in the environment, makes the bench binary run one
// proxy of the baseline instead of the bench.
const goproxyEnv = "KETNOI_BENCH_GOPROXY"

// The same settings as a node (internal/node), so that the baseline differs
// from a node only in the work a node does per message.
const (
	goproxyStreamWorkers = 64
	goproxyStreamWindow  = 2 << 20
	goproxyConnWindow    = 8 << 20
	goproxyGCPercent     = 400
)

// startGoproxy starts proxy B (mTLS in, h2c to backend) and proxy A (h2c in,
// mTLS to B) and connects the client to A.
func startGoproxy(ctx context.Context, ca *pki.CA, dir, backend string) (*topology, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(dir, "bundle.pem"), ca.BundlePEM(), 0o644); err != nil {
		return nil, err
	}
	for _, name := range []string{"a", "b"} {
		iss, err := ca.IssueSVID(goproxyID(ca.TrustDomain, name), 2*time.Hour)
		if err != nil {
			return nil, fmt.Errorf("issue goproxy %s svid: %w", name, err)
		}
		if err := iss.Write(filepath.Join(dir, name+".pem"), filepath.Join(dir, name+"-key.pem")); err != nil {
			return nil, err
		}
	}
	self, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("find the bench binary: %w", err)
	}
	ports, err := freePorts(2)
	if err != nil {
		return nil, err
	}
	b, err := runGoproxy(ctx, self, dir, "b", ports[1], backend, ca.TrustDomain)
	if err != nil {
		return nil, err
	}
	a, err := runGoproxy(ctx, self, dir, "a", ports[0], ports[1], ca.TrustDomain)
	if err != nil {
		b.stop()
		return nil, err
	}
	return pairTopology("grpc-go proxy", "proxy", a, b, ports[0])
}

func goproxyID(td spiffeid.TrustDomain, name string) spiffeid.ID {
	return spiffeid.RequireFromPath(td, "/bench/goproxy-"+name)
}

// runGoproxy starts one proxy and waits for its listener.
func runGoproxy(ctx context.Context, self, dir, name, listen, upstream string, td spiffeid.TrustDomain) (*proc, error) {
	cmd := exec.Command(self, "--name", name, "--dir", dir, "--listen", listen, "--upstream", upstream,
		"--trust-domain", td.String())
	cmd.Env = append(os.Environ(), goproxyEnv+"=1")
	outFile := filepath.Join(dir, name+".out")
	p, err := startProc(cmd, outFile)
	if err != nil {
		return nil, fmt.Errorf("start goproxy %s: %w", name, err)
	}
	if err := p.waitReady(ctx, listen, func() []int { return []int{cmd.Process.Pid} }); err != nil {
		p.stop()
		log, _ := os.ReadFile(outFile)
		return nil, fmt.Errorf("goproxy %s: %w: %s", name, err, strings.TrimSpace(string(log)))
	}
	return p, nil
}

// runGoproxyMain runs one proxy until SIGTERM: proxy "a" takes h2c and
// forwards over mTLS to "b"; "b" takes mTLS from "a" only and forwards h2c.
func runGoproxyMain(args []string) error {
	fs := flag.NewFlagSet("goproxy", flag.ContinueOnError)
	name := fs.String("name", "", "a (ingress) or b (egress)")
	dir := fs.String("dir", "", "directory with a.pem, b.pem, their keys and bundle.pem")
	listen := fs.String("listen", "", "loopback address to listen on")
	upstream := fs.String("upstream", "", "address to forward to")
	tdName := fs.String("trust-domain", "", "SPIFFE trust domain of the certificates")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *name != "a" && *name != "b" {
		return fmt.Errorf("--name %q: want a or b", *name)
	}
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(goproxyGCPercent)
	}
	td, err := spiffeid.TrustDomainFromString(*tdName)
	if err != nil {
		return fmt.Errorf("--trust-domain: %w", err)
	}
	id, err := mtls.LoadFiles(filepath.Join(*dir, *name+".pem"), filepath.Join(*dir, *name+"-key.pem"),
		filepath.Join(*dir, "bundle.pem"), td)
	if err != nil {
		return err
	}
	codec := proxy.NewCodec()
	var inCreds, outCreds credentials.TransportCredentials = insecure.NewCredentials(), insecure.NewCredentials()
	if *name == "a" {
		outCreds = mtls.ClientCredentials(id, tlsconfig.AuthorizeID(goproxyID(td, "b")))
	} else {
		inCreds = mtls.ServerCredentials(id, tlsconfig.AuthorizeID(goproxyID(td, "a")))
	}
	up, err := grpc.NewClient(*upstream, grpc.WithTransportCredentials(outCreds),
		grpc.WithInitialWindowSize(goproxyStreamWindow), grpc.WithInitialConnWindowSize(goproxyConnWindow),
		grpc.WithDefaultCallOptions(grpc.ForceCodecV2(codec),
			grpc.MaxCallRecvMsgSize(maxMessage), grpc.MaxCallSendMsgSize(maxMessage)))
	if err != nil {
		return fmt.Errorf("dial %s: %w", *upstream, err)
	}
	defer up.Close()
	srv := grpc.NewServer(grpc.Creds(inCreds), grpc.ForceServerCodecV2(codec),
		grpc.NumStreamWorkers(goproxyStreamWorkers),
		grpc.InitialWindowSize(goproxyStreamWindow), grpc.InitialConnWindowSize(goproxyConnWindow),
		grpc.MaxRecvMsgSize(maxMessage), grpc.MaxSendMsgSize(maxMessage),
		grpc.UnknownServiceHandler(forwarder(up)))
	lis, err := net.Listen("tcp", *listen)
	if err != nil {
		return err
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, os.Interrupt)
	go func() { <-sig; srv.Stop() }()
	return srv.Serve(lis)
}

// forwarder copies every call to up: metadata, messages both ways,
// half-close, headers, status and trailers.
func forwarder(up *grpc.ClientConn) grpc.StreamHandler {
	desc := &grpc.StreamDesc{ClientStreams: true, ServerStreams: true}
	return func(_ any, in grpc.ServerStream) error {
		method, ok := grpc.MethodFromServerStream(in)
		if !ok {
			return errors.New("no method on the stream")
		}
		ctx, cancel := context.WithCancel(in.Context())
		defer cancel()
		md, _ := metadata.FromIncomingContext(ctx)
		ctx = metadata.NewOutgoingContext(ctx, forwardable(md))
		out, err := up.NewStream(ctx, desc, method)
		if err != nil {
			return err
		}
		var wg sync.WaitGroup
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				f := new(proxy.Frame)
				if err := in.RecvMsg(f); err != nil {
					if errors.Is(err, io.EOF) {
						_ = out.CloseSend()
					} else {
						cancel()
					}
					return
				}
				if err := out.SendMsg(f); err != nil {
					return
				}
			}
		}()
		err = copyReplies(in, out)
		cancel()
		wg.Wait()
		return err
	}
}

// copyReplies sends the upstream's header, messages and trailer to in and
// returns the upstream's status.
func copyReplies(in grpc.ServerStream, out grpc.ClientStream) error {
	sentHeader := false
	for {
		f := new(proxy.Frame)
		err := out.RecvMsg(f)
		if !sentHeader {
			if h, herr := out.Header(); herr == nil && len(h) > 0 {
				_ = in.SendHeader(h)
			}
			sentHeader = true
		}
		if err != nil {
			in.SetTrailer(out.Trailer())
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
		if err := in.SendMsg(f); err != nil {
			return err
		}
	}
}

// forwardable drops the pseudo-headers and transport headers gRPC sets by
// itself, as a node does.
func forwardable(md metadata.MD) metadata.MD {
	out := metadata.MD{}
	for k, v := range md {
		if strings.HasPrefix(k, ":") || strings.HasPrefix(k, "grpc-") ||
			k == "content-type" || k == "user-agent" || k == "te" {
			continue
		}
		out[k] = v
	}
	return out
}
