package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ketnoi/ketnoi/internal/exit"
)

// A bad command line is one line and exit code 2; -h prints the usage.
func TestCommandLine(t *testing.T) {
	for _, args := range [][]string{
		{"--no-such-flag"},
		{"--config"},
		{"extra"},
		{"--log-level", "loud"},
	} {
		var stderr bytes.Buffer
		err := run(context.Background(), args, &stderr)
		var out bytes.Buffer
		code := exit.Report(&out, "ketnoi-node", err)
		if code != 2 || strings.Count(out.String(), "\n") != 1 || stderr.Len() != 0 {
			t.Errorf("%q: exit %d, report %q, stderr %q; want exit 2 and one line only", args, code, out.String(), stderr.String())
		}
	}

	var stderr bytes.Buffer
	if err := run(context.Background(), []string{"-h"}, &stderr); !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("-h: %v, want flag.ErrHelp", err)
	}
	if !strings.Contains(stderr.String(), "-config") {
		t.Errorf("-h printed %q, want the usage", stderr.String())
	}
}

// A configuration file with a misspelt key or a duration without a unit
// fails with one line naming the file, the line and the key.
func TestConfigErrorIsOneLine(t *testing.T) {
	for _, tc := range []struct{ add, want string }{
		{"federaton: {listen: \"127.0.0.1:0\"}\n", "line 4: unknown key federaton"},
		{"clock_skew: 90\n", "line 4: clock_skew: `90` is not a duration"},
	} {
		path := filepath.Join(t.TempDir(), "node.yaml")
		body := "member: VN/NN/000.00.00.G22\nname: node1\ndata_dir: data\n" + tc.add
		if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		var stderr, out bytes.Buffer
		err := run(context.Background(), []string{"--config", path}, &stderr)
		code := exit.Report(&out, "ketnoi-node", err)
		if code != 1 || strings.Count(out.String(), "\n") != 1 || !strings.Contains(out.String(), path+": "+tc.want) {
			t.Errorf("%q: exit %d, report %q; want exit 1 and one line naming %s and %q",
				tc.add, code, out.String(), path, tc.want)
		}
	}
}
