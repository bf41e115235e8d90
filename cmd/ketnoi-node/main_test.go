package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
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
