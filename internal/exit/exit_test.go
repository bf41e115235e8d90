package exit_test

import (
	"errors"
	"flag"
	"fmt"
	"strings"
	"testing"

	"github.com/ketnoi/ketnoi/internal/exit"
)

func TestReport(t *testing.T) {
	for _, tc := range []struct {
		err  error
		code int
		out  string
	}{
		{nil, 0, ""},
		{flag.ErrHelp, 0, ""},
		{exit.Usagef("--id is required"), 2, "tool: --id is required\n"},
		{fmt.Errorf("start: %w", exit.Usagef("bad flag")), 2, "tool: start: bad flag\n"},
		{errors.New("listen: address in use"), 1, "tool: listen: address in use\n"},
	} {
		var b strings.Builder
		if code := exit.Report(&b, "tool", tc.err); code != tc.code || b.String() != tc.out {
			t.Errorf("Report(%v) = %d %q, want %d %q", tc.err, code, b.String(), tc.code, tc.out)
		}
	}
}
