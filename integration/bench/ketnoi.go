package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/ketnoi/ketnoi/integration/cluster"
)

// The bench federation: the Government Office consumes the echo service
// that Home Affairs provides.
const (
	benchConsumer = cluster.GovernmentOffice + "/benchapp"
	benchProvider = cluster.HomeAffairs + "/bench"
	benchService  = benchProvider + "/" + echoService
)

// startKetnoi starts a registry and two nodes from the binaries in bin,
// registers the echo service at backend (plaintext, behind the provider
// node) with the ketnoi CLI, and connects the client to the consumer
// node's local endpoint. With two debugPorts the consumer and provider
// nodes serve /debug/pprof on them, for profiling a case while it runs.
func startKetnoi(ctx context.Context, dir, bin, backend, order string, debugPorts []int, log io.Writer) (*topology, error) {
	c, err := cluster.New(ctx, dir, bin, log)
	if err != nil {
		return nil, err
	}
	c.NodeYAML = "evidence_order: " + order + "\n"
	if len(debugPorts) == 2 {
		c.NodeArgs = map[string][]string{
			"consumer": {"--debug-listen", fmt.Sprintf("127.0.0.1:%d", debugPorts[0])},
			"provider": {"--debug-listen", fmt.Sprintf("127.0.0.1:%d", debugPorts[1])},
		}
	}
	if err := setupKetnoi(ctx, c, backend); err != nil {
		c.Close()
		return nil, fmt.Errorf("%w (logs in %s)", err, filepath.Join(dir, "logs"))
	}
	conn, err := dial(c.LocalAddr("consumer", benchConsumer), nil)
	if err != nil {
		c.Close()
		return nil, err
	}
	return &topology{
		Name: "ketnoi",
		Conn: conn,
		Procs: []watched{
			{Label: "consumer node", PIDs: []int{c.Proc("consumer").PID()}},
			{Label: "provider node", PIDs: []int{c.Proc("provider").PID()}},
		},
		close: c.Close,
	}, nil
}

func setupKetnoi(ctx context.Context, c *cluster.Cluster, backend string) error {
	if err := c.StartRegistry(ctx); err != nil {
		return err
	}
	nodes := []cluster.NodeSpec{
		{Name: "consumer", Member: cluster.GovernmentOffice, Local: []string{benchConsumer}},
		{Name: "provider", Member: cluster.HomeAffairs, Backends: map[string]string{benchService: backend}},
	}
	for _, n := range nodes {
		if err := c.StartNode(ctx, n); err != nil {
			return err
		}
		if _, err := c.CLI(ctx, "member", "add", "--id", n.Member, "--name", n.Name+" member",
			"--signing-cert", c.Path(n.Name+"-sign.pem")); err != nil {
			return err
		}
		parts := strings.Split(n.Member, "/")
		sid := fmt.Sprintf("spiffe://%s/node/%s/%s/%s", cluster.TrustDomain, parts[1], parts[2], n.Name)
		if _, err := c.CLI(ctx, "node", "add", "--id", sid, "--address", c.Proc(n.Name).Addrs["federation"]); err != nil {
			return err
		}
	}
	for _, sub := range []string{benchConsumer, benchProvider} {
		if _, err := c.CLI(ctx, "subsystem", "add", "--id", sub); err != nil {
			return err
		}
	}

	set, err := descriptorSet()
	if err != nil {
		return err
	}
	descFile := filepath.Join(c.Dir, "echo.binpb")
	if err := os.WriteFile(descFile, set, 0o644); err != nil {
		return fmt.Errorf("write descriptor set: %w", err)
	}
	if _, err := c.CLI(ctx, "service", "add", "--id", benchService, "--descriptor-set", descFile,
		"--description", "Echo and bulk download for benchmarks", "--custodian", "ketnoi bench",
		"--classification", "normal"); err != nil {
		return err
	}
	if _, err := c.CLI(ctx, "grant", "add", "--client", benchConsumer, "--service", benchService); err != nil {
		return err
	}
	return c.WaitSynced(ctx)
}
