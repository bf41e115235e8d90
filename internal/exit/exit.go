// Package exit holds what every ketnoi binary does alike at its edge:
// a wrong command line exits with code 2, a failed operation with code 1,
// and either is reported as one line on standard error.
package exit

import (
	"errors"
	"flag"
	"fmt"
	"io"
)

// UsageError is a wrong command line; it exits with code 2.
type UsageError struct{ Msg string }

func (e UsageError) Error() string { return e.Msg }

// Usagef returns a UsageError.
func Usagef(format string, args ...any) error {
	return UsageError{fmt.Sprintf(format, args...)}
}

// Code is 0 for success or a help request, 2 for a usage error and 1
// for anything else.
func Code(err error) int {
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp):
		return 0
	case errors.As(err, new(UsageError)):
		return 2
	default:
		return 1
	}
}

// Report writes a failure as "name: reason" on w and returns the exit code.
func Report(w io.Writer, name string, err error) int {
	code := Code(err)
	if code != 0 {
		fmt.Fprintf(w, "%s: %v\n", name, err)
	}
	return code
}
