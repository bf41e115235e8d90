package integration

import (
	"context"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/ketnoi/ketnoi/integration/cluster"
)

// conformanceArgsEnv holds extra flags for the conformance runner, split
// at spaces, for looking into failures: for example "--run Errors/**
// --trace" runs one suite and prints the HTTP traces of failing cases.
const conformanceArgsEnv = "KETNOI_CONFORMANCE_ARGS"

// The runner's count of its results, and of the known failures that
// failed as required.
var (
	runnerSummary  = regexp.MustCompile(`(?m)^(\d+) passed, (\d+) failed$`)
	runnerExpected = regexp.MustCompile(`Another (\d+) failed as expected`)
)

// TestConnectConformance runs the gRPC cases of the Connect conformance
// suite (connectrpc.com/conformance, pinned in conformance/tools) through
// two nodes: the suite's reference clients call the consumer node, the
// suite's reference server is the provider node's backend. Cases the nodes
// are known to fail are listed with their cause in
// conformance/known-failing.txt, where the runner requires them to fail, so
// a fix shows up as a failure until its line is removed, or in
// conformance/known-flaky.txt when their outcome depends on timing.
func TestConnectConformance(t *testing.T) {
	if testing.Short() {
		t.Skip("the Connect conformance suite does not run with -short")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	if err := cluster.BuildConformance(ctx, filepath.Join("conformance", "tools"), binDir); err != nil {
		t.Fatal(err)
	}
	c := startScenario(ctx, t, "", (*cluster.Cluster).Conformance, "registry", "vpcp", "bnv", "conformance")

	conf, err := filepath.Abs(filepath.Join("conformance", "config.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	known, err := filepath.Abs(filepath.Join("conformance", "known-failing.txt"))
	if err != nil {
		t.Fatal(err)
	}
	flaky, err := filepath.Abs(filepath.Join("conformance", "known-flaky.txt"))
	if err != nil {
		t.Fatal(err)
	}
	extra := strings.Fields(os.Getenv(conformanceArgsEnv))
	targets := []struct {
		name, addr string
		flags      []string
	}{
		// The control: the suite against its own reference server, so
		// that a failure through the nodes is not one of the setup.
		{"direct", c.Proc("conformance").Addrs["grpc"], nil},
		{"node", c.LocalAddr("vpcp", cluster.ConsumerClient),
			[]string{"--known-failing", "@" + known, "--known-flaky", "@" + flaky}},
	}
	for _, target := range targets {
		t.Run(target.name, func(t *testing.T) {
			args := append([]string{"-v", "--conf", conf}, target.flags...)
			start := time.Now()
			out, err := c.RunConformance(ctx, target.addr, append(args, extra...)...)
			t.Logf("runner output (%s):\n%s", time.Since(start).Round(time.Millisecond), out)
			if m := runnerSummary.FindStringSubmatch(out); m != nil {
				known := "0"
				if e := runnerExpected.FindStringSubmatch(out); e != nil {
					known = e[1]
				}
				t.Logf("Connect conformance, %s: %s cases passed, %s listed cases failed as allowed, "+
					"%s failed unexpectedly", target.name, m[1], known, m[2])
			}
			if err != nil {
				t.Errorf("conformance runner: %v", err)
			}
		})
	}
}
