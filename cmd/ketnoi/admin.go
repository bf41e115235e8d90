package main

import (
	"context"
	"errors"
	"io"
)

func runMember(ctx context.Context, args []string, stdout io.Writer) error {
	return errors.New("not built yet")
}
func runSubsystem(ctx context.Context, args []string, stdout io.Writer) error {
	return errors.New("not built yet")
}
func runNode(ctx context.Context, args []string, stdout io.Writer) error {
	return errors.New("not built yet")
}
func runService(ctx context.Context, args []string, stdout io.Writer) error {
	return errors.New("not built yet")
}
func runGrant(ctx context.Context, args []string, stdout io.Writer) error {
	return errors.New("not built yet")
}
func runCatalogue(ctx context.Context, args []string, stdout io.Writer) error {
	return errors.New("not built yet")
}
