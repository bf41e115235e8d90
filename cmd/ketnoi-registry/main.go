// Command ketnoi-registry runs the central registry of a ketnoi instance:
// members, subsystems, nodes, services, grants and the shared catalogue,
// published to nodes as a signed, versioned global configuration.
//
// It serves gRPC over mutual TLS with an X.509-SVID whose ID is
// "spiffe://<trust-domain>/registry": the registry and catalogue services to
// nodes and operators, the admin service to operators only.
//
// Usage:
//
//	ketnoi-registry --data FILE --svid-cert FILE --svid-key FILE --bundle FILE
//	                --signing-cert FILE --signing-key FILE
//	                [--listen 127.0.0.1:7443] [--ready-file FILE]
//	                [--trust-domain vn.ketnoi] [--instance VN]
//	                [--classes DANG,NN,MTTQ] [--config-ttl 24h]
//	                [--resume-above VERSION]
//	                [--log-level info] [--log-format text]
//
// Exit codes: 0 success, 1 the registry failed, 2 the command line is wrong.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/ketnoi/ketnoi/internal/exit"
	"github.com/ketnoi/ketnoi/internal/registry"
)

// config is the validated command line.
type config struct {
	listen      string
	readyFile   string
	data        string
	trustDomain spiffeid.TrustDomain
	instance    string
	classes     []string
	svidCert    string
	svidKey     string
	bundle      string
	signingCert string
	signingKey  string
	configTTL   time.Duration
	resumeAbove uint64
	logLevel    string
	logFormat   string
}

// minConfigTTL is the shortest --config-ttl: the registry re-issues its
// configuration every half TTL, and nodes stop serving at the first
// registry outage longer than that.
const minConfigTTL = time.Minute

// usageError marks an error in the command line; it exits with code 2.
type usageError = exit.UsageError

var usagef = exit.Usagef

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := cli(ctx, os.Args[1:], os.Stderr)
	stop()
	os.Exit(code)
}

// cli runs the command with args and returns the exit code. Errors are
// reported on stderr as one line.
func cli(ctx context.Context, args []string, stderr io.Writer) int {
	cfg, err := parseFlags(args, stderr)
	if err == nil {
		err = run(ctx, cfg, stderr)
	}
	return exit.Report(stderr, "ketnoi-registry", err)
}

// parseFlags parses and validates the command line.
func parseFlags(args []string, stderr io.Writer) (config, error) {
	var (
		cfg     config
		td      string
		classes string
	)
	fs := flag.NewFlagSet("ketnoi-registry", flag.ContinueOnError)
	// A bad flag is reported once, as one line, by cli; only -h prints
	// the usage.
	fs.SetOutput(io.Discard)
	fs.StringVar(&cfg.listen, "listen", "127.0.0.1:7443", "gRPC listen `address`")
	fs.StringVar(&cfg.readyFile, "ready-file", "", "write {\"grpc\": address} to this `file` once listening")
	fs.StringVar(&cfg.data, "data", "", "registry state `file` (bbolt); created if missing")
	fs.StringVar(&td, "trust-domain", "vn.ketnoi", "SPIFFE trust `domain`")
	fs.StringVar(&cfg.instance, "instance", "VN", "identifier `instance`")
	fs.StringVar(&classes, "classes", "DANG,NN,MTTQ", "comma-separated member `classes`")
	fs.StringVar(&cfg.svidCert, "svid-cert", "", "registry X.509-SVID certificate chain (PEM) `file`")
	fs.StringVar(&cfg.svidKey, "svid-key", "", "registry X.509-SVID private key (PEM PKCS#8) `file`")
	fs.StringVar(&cfg.bundle, "bundle", "", "trust bundle: instance CA certificates (PEM) `file`")
	fs.StringVar(&cfg.signingCert, "signing-cert", "", "configuration signing certificate (PEM) `file`")
	fs.StringVar(&cfg.signingKey, "signing-key", "", "configuration signing key (PEM PKCS#8) `file`")
	fs.DurationVar(&cfg.configTTL, "config-ttl", registry.DefaultConfigTTL,
		"validity of each published configuration, from 1m to 720h")
	fs.Var(versionFlag{&cfg.resumeAbove}, "resume-above",
		"after a restore from backup: publish the next configuration above this `version`, the newest one nodes hold")
	fs.StringVar(&cfg.logLevel, "log-level", "info", "log `level`: debug, info, warn or error")
	fs.StringVar(&cfg.logFormat, "log-format", "text", "log `format`: text or json")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fs.SetOutput(stderr)
			fs.Usage()
			return cfg, err
		}
		return cfg, usageError{Msg: err.Error()}
	}
	if fs.NArg() > 0 {
		return cfg, usagef("unexpected argument %q", fs.Arg(0))
	}

	// The address first: nothing is opened, nor logged, for a command
	// line that cannot serve.
	if err := checkListen(cfg.listen); err != nil {
		return cfg, err
	}
	var err error
	if cfg.trustDomain, err = spiffeid.TrustDomainFromString(td); err != nil {
		return cfg, usagef("--trust-domain %q: %v", td, err)
	}
	if err := registry.CheckInstance(cfg.instance); err != nil {
		return cfg, usagef("--instance: %v", err)
	}
	for c := range strings.SplitSeq(classes, ",") {
		if c = strings.TrimSpace(c); c == "" {
			return cfg, usagef("--classes %q: empty class", classes)
		}
		if err := registry.CheckClass(c); err != nil {
			return cfg, usagef("--classes %q: %v", classes, err)
		}
		cfg.classes = append(cfg.classes, c)
	}
	if cfg.configTTL < minConfigTTL || cfg.configTTL > registry.MaxConfigTTL {
		return cfg, usagef("--config-ttl %v: want at least 1m and at most 720h (30 days)", cfg.configTTL)
	}
	for _, f := range []struct{ name, value string }{
		{"data", cfg.data},
		{"svid-cert", cfg.svidCert},
		{"svid-key", cfg.svidKey},
		{"bundle", cfg.bundle},
		{"signing-cert", cfg.signingCert},
		{"signing-key", cfg.signingKey},
	} {
		if f.value == "" {
			return cfg, usagef("--%s is required", f.name)
		}
	}
	return cfg, nil
}

// checkListen refuses a --listen that is not host:port with a numeric
// port, as net.Listen would, but before the state file is opened.
func checkListen(addr string) error {
	_, port, err := net.SplitHostPort(addr)
	if err == nil {
		_, err = strconv.ParseUint(port, 10, 16)
	}
	if err != nil {
		return usagef("--listen %q: want host:port with a port from 0 to 65535, such as 127.0.0.1:7443", addr)
	}
	return nil
}

// versionFlag is a configuration version flag whose error says what it
// wants: the flag package's own for numbers is "parse error". Versions
// above registry.MaxResumeAbove are refused too: they leave too few
// versions to publish.
type versionFlag struct{ v *uint64 }

func (f versionFlag) String() string {
	if f.v == nil {
		return "0"
	}
	return strconv.FormatUint(*f.v, 10)
}

func (f versionFlag) Set(s string) error {
	n, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		return fmt.Errorf("want a configuration version, a whole number from 0 to %d",
			uint64(registry.MaxResumeAbove))
	}
	if n > registry.MaxResumeAbove {
		return fmt.Errorf("want at most %d: a higher version leaves fewer than 2^32 versions to publish",
			uint64(registry.MaxResumeAbove))
	}
	*f.v = n
	return nil
}
