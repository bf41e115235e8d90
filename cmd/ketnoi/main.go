// Command ketnoi is the operator and developer CLI of the ketnoi federation:
// development PKI, registry administration, shared catalogue, and evidence
// trace, search and verification.
//
// Exit codes: 0 success, 1 the operation failed, 2 the command line is wrong.
package main

import (
	"context"
	"fmt"
	"github.com/ketnoi/ketnoi/internal/exit"
	"io"
	"os"
	"os/signal"
	"syscall"
)

// command is one subcommand of the CLI.
type command struct {
	name    string
	summary string
	run     func(ctx context.Context, args []string, stdout io.Writer) error
}

var commands = []command{
	{"certs", "create a development CA and issue SVIDs and signing certificates", runCerts},
	{"member", "register, rename or remove members and rotate their signing certificates", runMember},
	{"subsystem", "register or remove subsystems", runSubsystem},
	{"node", "register, move or remove security-server nodes", runNode},
	{"service", "register, update or remove services", runService},
	{"grant", "allow or revoke a client's access to a service", runGrant},
	{"catalogue", "import and query shared code lists", runCatalogue},
	{"config", "show the registry's signed global configuration", runConfig},
	{"registry", "back up the registry's state", runRegistry},
	{"evidence", "trace exchanges, search and verify evidence logs", runEvidence},
}

// usageError marks an error in the command line; it exits with code 2.
type usageError = exit.UsageError

var usagef = exit.Usagef

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		printUsage(stderr)
		return 2
	}
	if args[0] == "help" || args[0] == "-h" || args[0] == "--help" {
		printUsage(stdout)
		return 0
	}
	for _, c := range commands {
		if c.name != args[0] {
			continue
		}
		return exit.Report(stderr, "ketnoi "+c.name, c.run(ctx, args[1:], stdout))
	}
	fmt.Fprintf(stderr, "ketnoi: unknown command %q (run \"ketnoi help\")\n", args[0])
	return 2
}

func printUsage(w io.Writer) {
	fmt.Fprintln(w, "usage: ketnoi <command> [arguments]")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "commands:")
	for _, c := range commands {
		fmt.Fprintf(w, "  %-10s %s\n", c.name, c.summary)
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Run \"ketnoi <command> -h\" for the arguments of a command.")
}
