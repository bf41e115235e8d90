// Command conformance-server puts a pair of ketnoi nodes in the place of the
// "server under test" of the Connect conformance runner (connectconformance
// --mode server), with the Connect reference server as the provider node's
// backend.
//
// The runner expects to start one server process per server configuration
// and to learn its address from it. Starting a registry and two nodes does
// not fit in the ten seconds the runner waits for that answer, and the
// nodes must know their backend's address before they start, so the work
// is split over three modes of this one program:
//
//   - backend (the default): starts the reference server binary named by
//     --reference-server on a loopback port, hands it the server
//     configuration the nodes can carry (gRPC over HTTP/2, plain text, the
//     given --message-receive-limit), writes the address it answers with to
//     --ready-file as {"grpc": "127.0.0.1:PORT"} and runs until SIGINT or
//     SIGTERM. The test harness starts it, then the nodes in front of it.
//   - --answer HOST:PORT: the command given to the runner. It reads the
//     runner's ServerCompatRequest from standard input, checks that the
//     backend was started with what the request asks for, answers with the
//     consumer node's local endpoint and waits until the runner stops it.
//   - --write-descriptor-set FILE: compiles
//     connectrpc/conformance/v1/service.proto from --proto-root (the proto
//     directory of the conformance module) and writes a FileDescriptorSet
//     with it and everything it imports, for registering
//     connectrpc.conformance.v1.ConformanceService with the ketnoi registry.
//
// The conformance messages are read and written with protowire rather than
// generated types, because the generated code of the conformance module is
// internal to it.
package main

import (
	"bufio"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"github.com/bufbuild/protocompile"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/descriptorpb"
)

// Values of the conformance protocol's enums (connectrpc/conformance/v1/config.proto).
const (
	protocolGRPC = 2 // Protocol.PROTOCOL_GRPC
	httpVersion2 = 2 // HTTPVersion.HTTP_VERSION_2
)

// Field numbers of ServerCompatRequest and ServerCompatResponse
// (connectrpc/conformance/v1/server_compat.proto).
const (
	reqProtocol      = 1
	reqHTTPVersion   = 2
	reqUseTLS        = 4
	reqClientTLSCert = 5
	reqReceiveLimit  = 6
	reqServerCreds   = 7
	respHost         = 1
	respPort         = 2
)

// maxMessage bounds the delimited messages read, like the runner does.
const maxMessage = 1 << 20

func main() {
	refServer := flag.String("reference-server", "",
		"backend mode: the conformance reference server `binary`")
	limit := flag.Uint("message-receive-limit", 200*1024,
		"the reference server's limit on request message size, in bytes")
	readyFile := flag.String("ready-file", "",
		"backend mode: write the reference server's address to this `file`")
	answer := flag.String("answer", "",
		"answer the runner with this `host:port` (the consumer node's local endpoint)")
	lifetime := flag.Duration("max-lifetime", 20*time.Minute, "stop by itself after this long")
	descOut := flag.String("write-descriptor-set", "",
		"write the ConformanceService FileDescriptorSet to this `file` and exit")
	protoRoot := flag.String("proto-root", "",
		"the conformance module's proto `directory`, with --write-descriptor-set")
	flag.Parse()

	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	// Both serving modes run until SIGINT or SIGTERM, and never longer
	// than the lifetime, so that nothing outlives a killed test.
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	ctx, cancel := context.WithTimeout(ctx, *lifetime)
	var err error
	switch {
	case *descOut != "":
		err = writeDescriptorSet(ctx, *descOut, *protoRoot)
	case *answer != "":
		err = answerRunner(ctx, os.Stdin, os.Stdout, *answer, uint32(*limit))
	default:
		err = runBackend(ctx, log, *refServer, uint32(*limit), *readyFile)
	}
	cancel()
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "conformance-server:", err)
		os.Exit(1)
	}
}

// runBackend starts the reference server, publishes its address and runs
// until ctx ends or the reference server exits.
func runBackend(ctx context.Context, log *slog.Logger, binary string, limit uint32, readyFile string) error {
	if binary == "" {
		return errors.New("--reference-server is required in backend mode")
	}
	cmd := exec.Command(binary, "-bind", "127.0.0.1", "-port", "0")
	cmd.Stderr = os.Stderr
	// The reference server must not outlive this process, however it ends.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return fmt.Errorf("reference server stdin: %w", err)
	}
	// A pipe of our own rather than StdoutPipe, which Wait would close
	// while the answer may still be read.
	stdout, stdoutW, err := os.Pipe()
	if err != nil {
		return fmt.Errorf("reference server stdout: %w", err)
	}
	defer stdout.Close()
	cmd.Stdout = stdoutW
	err = cmd.Start()
	stdoutW.Close()
	if err != nil {
		return fmt.Errorf("start reference server: %w", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	stop := func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
	}

	addr, err := configureReferenceServer(stdin, stdout, limit)
	if err != nil {
		stop()
		return err
	}
	if err := writeReady(readyFile, addr); err != nil {
		stop()
		return err
	}
	log.InfoContext(ctx, "reference server ready", slog.String("addr", addr),
		slog.Uint64("message_receive_limit", uint64(limit)))

	select {
	case err := <-exited:
		return fmt.Errorf("reference server exited: %v", err)
	case <-ctx.Done():
	}
	if errors.Is(context.Cause(ctx), context.DeadlineExceeded) {
		log.WarnContext(ctx, "stopping after the maximum lifetime")
	}
	stop()
	return nil
}

// configureReferenceServer sends the reference server its configuration
// and returns the address it then serves on.
func configureReferenceServer(stdin io.WriteCloser, stdout io.Reader, limit uint32) (string, error) {
	var req []byte
	req = protowire.AppendTag(req, reqProtocol, protowire.VarintType)
	req = protowire.AppendVarint(req, protocolGRPC)
	req = protowire.AppendTag(req, reqHTTPVersion, protowire.VarintType)
	req = protowire.AppendVarint(req, httpVersion2)
	req = protowire.AppendTag(req, reqReceiveLimit, protowire.VarintType)
	req = protowire.AppendVarint(req, uint64(limit))
	if err := writeDelimited(stdin, req); err != nil {
		return "", fmt.Errorf("send reference server its configuration: %w", err)
	}
	if err := stdin.Close(); err != nil {
		return "", fmt.Errorf("send reference server its configuration: %w", err)
	}

	type result struct {
		msg []byte
		err error
	}
	got := make(chan result, 1)
	go func() {
		msg, err := readDelimited(bufio.NewReader(stdout))
		got <- result{msg, err}
	}()
	var r result
	select {
	case r = <-got:
	case <-time.After(30 * time.Second):
		return "", errors.New("reference server did not answer within 30 s")
	}
	if r.err != nil {
		return "", fmt.Errorf("read reference server's answer: %w", r.err)
	}
	host, port, err := parseResponse(r.msg)
	if err != nil {
		return "", fmt.Errorf("reference server's answer: %w", err)
	}
	// Drain anything else it prints so that it never blocks on a full pipe.
	go func() { _, _ = io.Copy(io.Discard, stdout) }()
	return net.JoinHostPort(host, strconv.Itoa(int(port))), nil
}

// answerRunner reads the runner's server configuration, refuses one that
// the backend was not started for, and answers with the consumer node's
// address. It then stays up, since the runner counts an early exit as a
// crash of the server under test.
func answerRunner(ctx context.Context, in io.Reader, out io.Writer, answer string, limit uint32) error {
	host, portStr, err := net.SplitHostPort(answer)
	if err != nil {
		return fmt.Errorf("--answer: %w", err)
	}
	port, err := strconv.ParseUint(portStr, 10, 16)
	if err != nil {
		return fmt.Errorf("--answer port: %w", err)
	}
	msg, err := readDelimited(in)
	if err != nil {
		return fmt.Errorf("read server configuration: %w", err)
	}
	if err := checkRequest(msg, limit); err != nil {
		return err
	}
	var resp []byte
	resp = protowire.AppendTag(resp, respHost, protowire.BytesType)
	resp = protowire.AppendString(resp, host)
	resp = protowire.AppendTag(resp, respPort, protowire.VarintType)
	resp = protowire.AppendVarint(resp, port)
	if err := writeDelimited(out, resp); err != nil {
		return fmt.Errorf("answer runner: %w", err)
	}
	<-ctx.Done()
	return nil
}

// checkRequest refuses a server configuration that the node pair in front
// of the backend cannot serve: the consumer's local endpoint is plain-text
// gRPC over HTTP/2, and the backend's message limit is fixed at start.
func checkRequest(msg []byte, limit uint32) error {
	var protocol, version, gotLimit uint64
	var useTLS bool
	for len(msg) > 0 {
		num, typ, n := protowire.ConsumeTag(msg)
		if n < 0 {
			return fmt.Errorf("server configuration: %w", protowire.ParseError(n))
		}
		msg = msg[n:]
		var v uint64
		if typ == protowire.VarintType {
			v, n = protowire.ConsumeVarint(msg)
		} else {
			n = protowire.ConsumeFieldValue(num, typ, msg)
		}
		if n < 0 {
			return fmt.Errorf("server configuration field %d: %w", num, protowire.ParseError(n))
		}
		msg = msg[n:]
		switch num {
		case reqProtocol:
			protocol = v
		case reqHTTPVersion:
			version = v
		case reqUseTLS:
			useTLS = v != 0
		case reqClientTLSCert, reqServerCreds:
			useTLS = true
		case reqReceiveLimit:
			gotLimit = v
		}
	}
	switch {
	case protocol != protocolGRPC:
		return fmt.Errorf("runner asks for protocol %d; the nodes carry only gRPC (%d)", protocol, protocolGRPC)
	case version != httpVersion2:
		return fmt.Errorf("runner asks for HTTP version %d; gRPC runs on HTTP/2 only", version)
	case useTLS:
		return errors.New("runner asks for TLS; the consumer node's local endpoint is plain text")
	case gotLimit != uint64(limit):
		return fmt.Errorf("runner asks for a message receive limit of %d bytes; the backend was started with %d",
			gotLimit, limit)
	}
	return nil
}

// parseResponse returns host and port of a ServerCompatResponse.
func parseResponse(msg []byte) (string, uint32, error) {
	var host string
	var port uint64
	for len(msg) > 0 {
		num, typ, n := protowire.ConsumeTag(msg)
		if n < 0 {
			return "", 0, protowire.ParseError(n)
		}
		msg = msg[n:]
		switch {
		case num == respHost && typ == protowire.BytesType:
			host, n = protowire.ConsumeString(msg)
		case num == respPort && typ == protowire.VarintType:
			port, n = protowire.ConsumeVarint(msg)
		default:
			n = protowire.ConsumeFieldValue(num, typ, msg)
		}
		if n < 0 {
			return "", 0, protowire.ParseError(n)
		}
		msg = msg[n:]
	}
	if host == "" || port == 0 || port > 65535 {
		return "", 0, fmt.Errorf("no usable address (host %q, port %d)", host, port)
	}
	return host, uint32(port), nil
}

// readDelimited reads one message framed as the conformance protocol does:
// a big-endian 32-bit length, then that many bytes.
func readDelimited(r io.Reader) ([]byte, error) {
	var size [4]byte
	if _, err := io.ReadFull(r, size[:]); err != nil {
		return nil, err
	}
	n := binary.BigEndian.Uint32(size[:])
	if n > maxMessage {
		return nil, fmt.Errorf("message of %d bytes is over the %d byte bound", n, maxMessage)
	}
	msg := make([]byte, n)
	if _, err := io.ReadFull(r, msg); err != nil {
		return nil, err
	}
	return msg, nil
}

// writeDelimited writes one message with the framing of readDelimited.
func writeDelimited(w io.Writer, msg []byte) error {
	b := binary.BigEndian.AppendUint32(make([]byte, 0, 4+len(msg)), uint32(len(msg)))
	_, err := w.Write(append(b, msg...))
	return err
}

// writeReady atomically writes {"grpc": addr} to path.
func writeReady(path, addr string) error {
	if path == "" {
		return nil
	}
	b, err := json.Marshal(map[string]string{"grpc": addr})
	if err != nil {
		return err
	}
	tmp := filepath.Join(filepath.Dir(path), "."+filepath.Base(path)+".tmp")
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		return fmt.Errorf("write ready file: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("write ready file: %w", err)
	}
	return nil
}

// writeDescriptorSet compiles the conformance service definition and writes
// it with all its imports, dependencies first.
func writeDescriptorSet(ctx context.Context, path, protoRoot string) error {
	if protoRoot == "" {
		return errors.New("--proto-root is required with --write-descriptor-set")
	}
	compiler := protocompile.Compiler{
		Resolver: protocompile.WithStandardImports(&protocompile.SourceResolver{ImportPaths: []string{protoRoot}}),
	}
	files, err := compiler.Compile(ctx, "connectrpc/conformance/v1/service.proto")
	if err != nil {
		return fmt.Errorf("compile conformance service: %w", err)
	}
	set := &descriptorpb.FileDescriptorSet{}
	seen := map[string]bool{}
	var add func(fd protoreflect.FileDescriptor)
	add = func(fd protoreflect.FileDescriptor) {
		if seen[fd.Path()] {
			return
		}
		seen[fd.Path()] = true
		imports := fd.Imports()
		for i := range imports.Len() {
			add(imports.Get(i).FileDescriptor)
		}
		set.File = append(set.File, protodesc.ToFileDescriptorProto(fd))
	}
	for _, f := range files {
		add(f)
	}
	if set.File[len(set.File)-1].GetPackage() != "connectrpc.conformance.v1" {
		return errors.New("compiled descriptors lack connectrpc.conformance.v1")
	}
	b, err := proto.Marshal(set)
	if err != nil {
		return fmt.Errorf("marshal descriptor set: %w", err)
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		return fmt.Errorf("write descriptor set: %w", err)
	}
	return nil
}
