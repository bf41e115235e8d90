// Command ketnoi-node runs an agency's security server: the local endpoint
// for the agency's applications and the federation endpoint for other
// agencies' nodes. See deploy/ for configuration files.
package main

import (
	"context"
	"errors"
	"flag"
	"io"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"

	"github.com/ketnoi/ketnoi/internal/exit"
	"github.com/ketnoi/ketnoi/internal/logging"
	"github.com/ketnoi/ketnoi/internal/node"
)

// defaultGCPercent trades memory for CPU: a node's live heap is small (tens
// of MiB) while every exchange allocates frames and records, so collecting
// less often saves about a tenth of a node's CPU per exchange. GOGC, when
// set, wins.
const defaultGCPercent = 400

func main() {
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(defaultGCPercent)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stderr)
	stop()
	os.Exit(exit.Report(os.Stderr, "ketnoi-node", err))
}

func run(ctx context.Context, args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("ketnoi-node", flag.ContinueOnError)
	// A bad flag is reported once, as one line, by exit.Report; only -h
	// prints the usage.
	fs.SetOutput(io.Discard)
	config := fs.String("config", "node.yaml", "configuration file")
	readyFile := fs.String("ready-file", "", "write the bound addresses as JSON to this file once serving")
	level := fs.String("log-level", "info", "log level: debug, info, warn, error")
	format := fs.String("log-format", "text", "log format: text or json")
	debug := fs.String("debug-listen", "", "serve /debug/pprof on this loopback address (off when empty)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fs.SetOutput(stderr)
			fs.Usage()
			return err
		}
		return exit.UsageError{Msg: err.Error()}
	}
	if fs.NArg() > 0 {
		return exit.Usagef("unexpected arguments %q (all settings are flags or in --config)", fs.Args())
	}
	if _, err := logging.New(io.Discard, *level, *format); err != nil {
		return exit.UsageError{Msg: err.Error()}
	}
	logger, err := logging.New(stderr, *level, *format)
	if err != nil {
		return err
	}
	if *debug != "" {
		stop, err := serveDebug(*debug, logger)
		if err != nil {
			return err
		}
		defer stop()
	}
	cfg, err := node.LoadConfig(*config)
	if err != nil {
		return err
	}
	n, err := node.New(cfg, logger)
	if err != nil {
		return err
	}
	defer n.Close()
	return n.Run(ctx, *readyFile)
}
