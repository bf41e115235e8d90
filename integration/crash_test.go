package integration

import (
	"context"
	"errors"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/ketnoi/ketnoi/integration/cluster"
)

// recordLine starts each record of `ketnoi evidence trace`.
var recordLine = regexp.MustCompile(`(?m)^\s*record \d+$`)

// TestCrashKeepsAcknowledgedEvidence kills both nodes right after a run of
// calls, before their evidence writers fold the journal into the tree, and
// starts them again: every call the application saw answered must have all
// its records in both logs, and both logs must verify. The killed logs are
// first read with --log, which must verify the tree and fail, naming the
// records only in the journal: that shows the crash left records there, so
// the restart really recovered them.
func TestCrashKeepsAcknowledgedEvidence(t *testing.T) {
	if raceEnabled {
		// Recovery runs before any other goroutine of the log starts;
		// restarting race-built nodes only makes the race pass slower.
		t.Skip("the run without -race covers it")
	}
	c := startStandard(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	nodes := []string{"vpcp", "bnv"}

	var ids []string
	unfolded := false
	// Bounded: a fold landing between the last answer and the kill (about
	// one chance in a hundred) leaves nothing to recover; try again then.
	for round := 0; round < 3 && !unfolded; round++ {
		consumer := dial(t, c.LocalAddr("vpcp", cluster.ConsumerClient))
		for range 20 {
			_, trailer, err := convert(ctx, consumer, "00013")
			if err != nil {
				t.Fatalf("call: %v", err)
			}
			ids = append(ids, trailer.Get("ketnoi-message-id")[0])
		}
		for _, n := range nodes {
			c.Kill(n)
		}
		unfolded = true
		for _, n := range nodes {
			// The tree alone is read and verified, and the command fails
			// saying what it could not read.
			out, err := c.CLI(ctx, "evidence", "verify", "--log", filepath.Join(c.Dir, n, "evidence.db"))
			var ce *cluster.CLIError
			if !errors.As(err, &ce) || !strings.Contains(ce.Stderr, "not yet in the tree") {
				unfolded = false
				continue
			}
			if ce.ExitCode() != 1 || !strings.HasPrefix(out, "tree ok: ") {
				t.Errorf("verify --log of killed %s: exit %d, output %q; want exit 1 after verifying the tree", n, ce.ExitCode(), out)
			}
		}
		for _, n := range nodes {
			if err := c.Restart(ctx, n); err != nil {
				t.Fatal(err)
			}
		}
		if err := c.WaitSynced(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if !unfolded {
		t.Fatal("every kill came after a fold; the crash recovery was not exercised")
	}

	for _, n := range nodes {
		for _, id := range ids {
			out, err := trace(ctx, c, n, id)
			if err != nil || len(recordLine.FindAllString(out, -1)) != 2 {
				t.Fatalf("%s lost evidence of answered call %s: %v\n%s", n, id, err, out)
			}
		}
		if out, err := c.CLI(ctx, "evidence", "verify", "--node", c.Proc(n).Addrs["admin"]); err != nil || !strings.HasPrefix(out, "ok") {
			t.Errorf("verify %s after the crash: %v %s", n, err, out)
		}
	}
	if _, _, err := convert(ctx, dial(t, c.LocalAddr("vpcp", cluster.ConsumerClient)), "00013"); err != nil {
		t.Fatalf("call after the restart: %v", err)
	}
}
