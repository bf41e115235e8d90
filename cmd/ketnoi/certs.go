package main

import (
	"context"
	"errors"
	"io"
)

func runCerts(ctx context.Context, args []string, stdout io.Writer) error {
	return errors.New("not built yet")
}
