// Command ketnoi-dvhc is the Ministry of Home Affairs' administrative-units
// backend: it serves vn.gov.dvhc.v1.AdminUnitService over the unit lists
// built into the binary, with gRPC health checking and server reflection.
//
// It speaks plain-text gRPC and is meant to listen on loopback behind the
// agency's own ketnoi node, which authenticates, authorizes and signs every
// exchange before it reaches this process.
//
// Usage:
//
//	ketnoi-dvhc [--listen 127.0.0.1:9090] [--ready-file FILE]
//	            [--log-level info] [--log-format text]
//	ketnoi-dvhc --write-descriptor-set FILE
//
// Exit codes: 0 success, 1 the server failed, 2 the command line is wrong.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/ketnoi/ketnoi/internal/dvhc"
	"github.com/ketnoi/ketnoi/internal/exit"
	"github.com/ketnoi/ketnoi/internal/logging"
)

// config is the validated command line.
type config struct {
	listen             string
	readyFile          string
	logLevel           string
	logFormat          string
	writeDescriptorSet string
}

// usageError marks an error in the command line; it exits with code 2.
type usageError = exit.UsageError

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := cli(ctx, os.Args[1:], os.Stderr)
	stop()
	os.Exit(code)
}

// cli runs the command with args and returns the exit code. Errors are
// reported on stderr as one line.
func cli(ctx context.Context, args []string, stderr io.Writer) int {
	err := runArgs(ctx, args, stderr)
	return exit.Report(stderr, "ketnoi-dvhc", err)
}

// runArgs parses args, then either writes the descriptor set or serves
// until ctx ends.
func runArgs(ctx context.Context, args []string, stderr io.Writer) error {
	cfg, err := parseFlags(args, stderr)
	if err != nil {
		return err
	}
	if cfg.writeDescriptorSet != "" {
		return writeDescriptorSet(cfg.writeDescriptorSet)
	}
	logger, err := logging.New(stderr, cfg.logLevel, cfg.logFormat)
	if err != nil {
		return usageError{Msg: err.Error()}
	}
	return run(ctx, cfg, logger)
}

// parseFlags reads the command line into a config.
func parseFlags(args []string, stderr io.Writer) (config, error) {
	var cfg config
	fs := flag.NewFlagSet("ketnoi-dvhc", flag.ContinueOnError)
	// A bad flag is reported once, as one line, by exit.Report; only -h
	// prints the usage.
	fs.SetOutput(io.Discard)
	fs.StringVar(&cfg.listen, "listen", "127.0.0.1:9090",
		"`address` to serve plain-text gRPC on; keep it on loopback")
	fs.StringVar(&cfg.readyFile, "ready-file", "",
		"write {\"grpc\": address} to this `file` once listening")
	fs.StringVar(&cfg.logLevel, "log-level", "info", "debug, info, warn or error")
	fs.StringVar(&cfg.logFormat, "log-format", "text", "text or json")
	fs.StringVar(&cfg.writeDescriptorSet, "write-descriptor-set", "",
		"write the service's FileDescriptorSet to `file` and exit")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fs.SetOutput(stderr)
			fs.Usage()
			return config{}, err
		}
		return config{}, usageError{Msg: err.Error()}
	}
	if fs.NArg() > 0 {
		return config{}, usageError{Msg: fmt.Sprintf("unexpected argument %q", fs.Arg(0))}
	}
	if cfg.listen == "" {
		return config{}, usageError{Msg: "--listen must not be empty"}
	}
	return cfg, nil
}

// writeDescriptorSet writes the service's descriptor set to path.
func writeDescriptorSet(path string) error {
	b, err := dvhc.DescriptorSet()
	if err != nil {
		return err
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		return fmt.Errorf("write descriptor set: %w", err)
	}
	return nil
}
