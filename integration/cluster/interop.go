package cluster

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// Identifiers of the gRPC interop scenario: Home Affairs offers grpc-go's
// interop test services from a subsystem of their own.
const (
	InteropSub     = HomeAffairs + "/interop"
	InteropService = InteropSub + "/grpc.testing.TestService"
	InteropORCA    = InteropSub + "/xds.service.orca.v3.OpenRcaService"
)

// Paths of the interop programs below a cluster's binary directory.
const (
	InteropClient = "interop/client"         // grpc-go's interop client, unchanged
	InteropServer = "interop/interop-server" // grpc-go's interop services on a loopback address
)

// BuildInterop compiles the interop client and server of the tools module
// in toolsDir into binDir/interop. The tools module pins its own grpc-go
// release, so the programs' dependencies stay out of the main module.
func BuildInterop(ctx context.Context, toolsDir, binDir string) error {
	out := filepath.Join(binDir, "interop") + string(os.PathSeparator)
	cmd := exec.CommandContext(ctx, "go", "build", "-o", out,
		"google.golang.org/grpc/interop/client", "./interop-server")
	cmd.Dir = toolsDir
	// The tools module is built on its own even inside a workspace.
	cmd.Env = append(os.Environ(), "GOWORK=off")
	b, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("go build interop programs: %v\n%s", err, b)
	}
	return nil
}

// StartInteropServer starts the interop server as process "interop"; its
// address is then in Proc("interop").Addrs["grpc"].
func (c *Cluster) StartInteropServer(ctx context.Context) error {
	_, err := c.start(ctx, "interop", InteropServer, "--listen", "127.0.0.1:0")
	return err
}

// Interop starts the scenario of the gRPC interop suite: the registry, the
// interop server, a consumer node (Government Office, local endpoint for
// ConsumerClient) and a provider node (Home Affairs) whose backend for
// InteropService and InteropORCA is the interop server; every registration
// is done with the CLI and ConsumerClient is granted both services.
func (c *Cluster) Interop(ctx context.Context) error {
	if err := c.StartRegistry(ctx); err != nil {
		return err
	}
	if err := c.StartInteropServer(ctx); err != nil {
		return err
	}
	return c.interopServices(ctx, c.procs["interop"].Addrs["grpc"])
}

// InteropBackedBy returns the Interop scenario with the interop services
// served by backend, a plain-text gRPC server the caller runs (for example
// one that reports what reached it), instead of the interop server process.
func InteropBackedBy(backend string) func(*Cluster, context.Context) error {
	return func(c *Cluster, ctx context.Context) error {
		if err := c.StartRegistry(ctx); err != nil {
			return err
		}
		return c.interopServices(ctx, backend)
	}
}

// interopServices starts the pair of nodes with backend behind the interop
// services, then registers and grants the services.
func (c *Cluster) interopServices(ctx context.Context, backend string) error {
	if err := c.pairOfNodes(ctx, InteropSub, map[string]string{InteropService: backend, InteropORCA: backend}); err != nil {
		return err
	}
	desc := filepath.Join(c.Dir, "interop.binpb")
	if err := c.run(ctx, InteropServer, "--write-descriptor-set", desc); err != nil {
		return err
	}
	services := []struct{ id, description string }{
		{InteropService, "grpc-go interop test service, for protocol conformance checks"},
		{InteropORCA, "ORCA out-of-band load reports of the interop server"},
	}
	for _, s := range services {
		if _, err := c.CLI(ctx, "service", "add", "--id", s.id, "--descriptor-set", desc,
			"--description", s.description, "--custodian", "Trung tâm Công nghệ thông tin, Bộ Nội vụ"); err != nil {
			return err
		}
		if _, err := c.CLI(ctx, "grant", "add", "--client", ConsumerClient, "--service", s.id); err != nil {
			return err
		}
	}
	return nil
}

// pairOfNodes starts a consumer node (Government Office, "vpcp", local
// endpoint for ConsumerClient) and a provider node (Home Affairs, "bnv")
// with backends, and registers with the CLI both members, both nodes, the
// consumer client and the provider subsystem sub.
func (c *Cluster) pairOfNodes(ctx context.Context, sub string, backends map[string]string) error {
	nodes := []struct {
		spec NodeSpec
		name string
	}{
		{NodeSpec{Name: "vpcp", Member: GovernmentOffice, Local: []string{ConsumerClient}}, "Văn phòng Chính phủ"},
		{NodeSpec{Name: "bnv", Member: HomeAffairs, Backends: backends}, "Bộ Nội vụ"},
	}
	for _, n := range nodes {
		if err := c.StartNode(ctx, n.spec); err != nil {
			return err
		}
		if _, err := c.CLI(ctx, "member", "add", "--id", n.spec.Member, "--name", n.name,
			"--signing-cert", c.Path(n.spec.Name+"-sign.pem")); err != nil {
			return err
		}
	}
	for _, s := range []string{ConsumerClient, sub} {
		if _, err := c.CLI(ctx, "subsystem", "add", "--id", s); err != nil {
			return err
		}
	}
	for _, n := range nodes {
		parts := strings.Split(n.spec.Member, "/")
		sid := fmt.Sprintf("spiffe://%s/node/%s/%s/%s", TrustDomain, parts[1], parts[2], n.spec.Name)
		if _, err := c.CLI(ctx, "node", "add", "--id", sid, "--address", c.procs[n.spec.Name].Addrs["federation"]); err != nil {
			return err
		}
	}
	return nil
}

// RunInteropClient runs the interop client, plain text, against addr (the
// consumer node's local endpoint, or the interop server itself for a
// control run) with extra flags appended; it returns the client's combined
// output.
func (c *Cluster) RunInteropClient(ctx context.Context, addr, testCase string, extra ...string) (string, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "", fmt.Errorf("interop client target: %w", err)
	}
	args := append([]string{"--server_host=" + host, "--server_port=" + port, "--use_tls=false",
		"--test_case=" + testCase}, extra...)
	cmd := exec.CommandContext(ctx, filepath.Join(c.Bin, InteropClient), args...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}
