package cluster

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// Identifiers of the Connect conformance scenario: Home Affairs offers the
// conformance suite's test service from a subsystem of its own.
const (
	ConformanceSub     = HomeAffairs + "/conformance"
	ConformanceService = ConformanceSub + "/connectrpc.conformance.v1.ConformanceService"
)

// Paths of the conformance programs below a cluster's binary directory.
const (
	// ConformanceRunner is connectconformance, the suite's runner, unchanged.
	ConformanceRunner = "conformance/connectconformance"
	// ConformanceReference is the suite's reference server, unchanged.
	ConformanceReference = "conformance/referenceserver"
	// ConformanceServer starts the reference server as the provider's
	// backend and answers the runner with the consumer node's address.
	ConformanceServer = "conformance/conformance-server"
	// ConformanceDescriptors is the FileDescriptorSet of the test service.
	ConformanceDescriptors = "conformance/conformance.binpb"
)

// ConformanceReceiveLimit is the request message limit of the backend, in
// bytes: the one the runner asks every server under test for.
const ConformanceReceiveLimit = 200 * 1024

// BuildConformance compiles the runner, the reference server and
// conformance-server of the tools module in toolsDir into binDir/conformance
// and writes the test service's descriptor set there, compiled from the
// .proto files of the conformance module that the tools module pins. The
// programs' dependencies stay out of the main module.
func BuildConformance(ctx context.Context, toolsDir, binDir string) error {
	out := filepath.Join(binDir, "conformance") + string(os.PathSeparator)
	if _, err := goTool(ctx, toolsDir, "build", "-o", out,
		"connectrpc.com/conformance/cmd/connectconformance",
		"connectrpc.com/conformance/cmd/referenceserver",
		"./conformance-server"); err != nil {
		return err
	}
	moduleDir, err := goTool(ctx, toolsDir, "list", "-m", "-f", "{{.Dir}}", "connectrpc.com/conformance")
	if err != nil {
		return err
	}
	cmd := exec.CommandContext(ctx, filepath.Join(binDir, ConformanceServer),
		"--write-descriptor-set", filepath.Join(binDir, ConformanceDescriptors),
		"--proto-root", filepath.Join(strings.TrimSpace(moduleDir), "proto"))
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("write conformance descriptor set: %v\n%s", err, b)
	}
	return nil
}

// goTool runs the go command in the tools module dir and returns its
// standard output. The tools module is used on its own even inside a
// workspace.
func goTool(ctx context.Context, dir string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GOWORK=off")
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("go %s: %v\n%s", strings.Join(args, " "), err, stderr.String())
	}
	return string(out), nil
}

// Conformance starts the scenario of the Connect conformance suite: the
// registry, the reference server behind conformance-server (process
// "conformance"), a consumer node (Government Office, local endpoint for
// ConsumerClient) and a provider node (Home Affairs) whose backend for
// ConformanceService is the reference server; every registration is done
// with the CLI and ConsumerClient is granted the service.
func (c *Cluster) Conformance(ctx context.Context) error {
	if err := c.StartRegistry(ctx); err != nil {
		return err
	}
	if _, err := c.start(ctx, "conformance", ConformanceServer,
		"--reference-server", filepath.Join(c.Bin, ConformanceReference),
		"--message-receive-limit", fmt.Sprint(ConformanceReceiveLimit)); err != nil {
		return err
	}
	backend := c.procs["conformance"].Addrs["grpc"]
	if err := c.pairOfNodes(ctx, ConformanceSub, map[string]string{ConformanceService: backend}); err != nil {
		return err
	}
	if _, err := c.CLI(ctx, "service", "add", "--id", ConformanceService,
		"--descriptor-set", filepath.Join(c.Bin, ConformanceDescriptors),
		"--description", "Connect conformance suite's reference server, for protocol conformance checks",
		"--custodian", "Trung tâm Công nghệ thông tin, Bộ Nội vụ"); err != nil {
		return err
	}
	_, err := c.CLI(ctx, "grant", "add", "--client", ConsumerClient, "--service", ConformanceService)
	return err
}

// RunConformance runs the conformance runner in server mode against the
// server at addr (the consumer node's local endpoint, or the reference
// server itself for a control run), with extra runner flags
// (configuration, known failures). It returns the runner's combined output;
// a non-zero exit, which the runner uses for any unexpected result, is an
// error.
func (c *Cluster) RunConformance(ctx context.Context, addr string, extra ...string) (string, error) {
	// The runner starts the answering program and stops it when done; the
	// lifetime bounds it should the runner itself be killed.
	lifetime := 15 * time.Minute
	if deadline, ok := ctx.Deadline(); ok {
		lifetime = time.Until(deadline)
	}
	args := append([]string{"--mode", "server"}, extra...)
	args = append(args, "--",
		filepath.Join(c.Bin, ConformanceServer),
		"--answer", addr,
		"--message-receive-limit", fmt.Sprint(ConformanceReceiveLimit),
		"--max-lifetime", lifetime.String())
	cmd := exec.CommandContext(ctx, filepath.Join(c.Bin, ConformanceRunner), args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
	out, err := cmd.CombinedOutput()
	return string(out), err
}
