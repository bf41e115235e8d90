package main

import (
	"context"
	"crypto/sha256"
	"crypto/x509"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"google.golang.org/grpc"

	"github.com/ketnoi/ketnoi/internal/gconf"
	"github.com/ketnoi/ketnoi/internal/sign"
	registryv1 "github.com/ketnoi/ketnoi/proto/ketnoi/registry/v1"
)

const configUsage = `usage:
  ketnoi config show

show fetches the registry's current global configuration, verifies its
signature against the trust bundle, and lists what it holds: members with
their subsystems, nodes, services, grants and code lists.
` + connectionUsage

func runConfig(ctx context.Context, args []string, stdout io.Writer) error {
	return subcommand(ctx, args, stdout, configUsage, map[string]verb{
		"show": configShow,
	})
}

func configShow(ctx context.Context, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("config show", flag.ContinueOnError)
	conn := addRegistryFlags(fs)
	if err := parseFlags(fs, args, stdout); err != nil {
		return helpOrError(err)
	}
	return callRegistry(ctx, conn, func(ctx context.Context, cc *grpc.ClientConn) error {
		resp, err := registryv1.NewRegistryServiceClient(cc).GetConfiguration(ctx, &registryv1.GetConfigurationRequest{})
		if err != nil {
			return err
		}
		pem, err := os.ReadFile(conn.bundle)
		if err != nil {
			return err
		}
		anchors, err := sign.ParseCertificates(pem)
		if err != nil {
			return fmt.Errorf("--bundle: %w", err)
		}
		roots := x509.NewCertPool()
		for _, a := range anchors {
			roots.AddCert(a)
		}
		cfg, err := gconf.Verify(resp.GetConfiguration(), roots, time.Now())
		if err != nil {
			return err
		}
		printConfig(stdout, cfg)
		return nil
	})
}

// printConfig lists what cfg holds. Every value from the configuration is
// printed as shown prints it, so that a value holding a newline or a
// terminal escape cannot print a row or a heading of its own.
func printConfig(w io.Writer, cfg *registryv1.GlobalConfiguration) {
	fmt.Fprintf(w, "global configuration version %d (signature verified), instance %s, trust domain %s\n",
		cfg.GetVersion(), shown(cfg.GetInstance()), shown(cfg.GetTrustDomain()))
	fmt.Fprintf(w, "issued %s, expires %s\n",
		cfg.GetIssuedAt().AsTime().UTC().Format(time.RFC3339), cfg.GetExpiresAt().AsTime().UTC().Format(time.RFC3339))
	fmt.Fprintf(w, "\nmembers (%d)\n", len(cfg.GetMembers()))
	for _, m := range cfg.GetMembers() {
		fmt.Fprintf(w, "  %-24s %s; subsystems: %s; signing certificates: %d\n",
			shown(m.GetId()), shown(m.GetName()), orWord(m.GetSubsystems(), "none"), len(m.GetSigningCertificates()))
		// The digest is what "member remove-signing-cert --sha256" takes.
		for _, der := range m.GetSigningCertificates() {
			expires := "does not parse"
			if c, err := x509.ParseCertificate(der); err == nil {
				expires = "expires " + c.NotAfter.UTC().Format(time.RFC3339)
			}
			fmt.Fprintf(w, "    signing certificate sha256 %x, %s\n", sha256.Sum256(der), expires)
		}
	}
	fmt.Fprintf(w, "\nnodes (%d)\n", len(cfg.GetNodes()))
	for _, n := range cfg.GetNodes() {
		fmt.Fprintf(w, "  %s at %s\n", shown(n.GetSpiffeId()), shown(n.GetAddress()))
	}
	fmt.Fprintf(w, "\nservices (%d)\n", len(cfg.GetServices()))
	for _, s := range cfg.GetServices() {
		fmt.Fprintf(w, "  %s [%s] methods: %s; custodian: %s\n", shown(s.GetId()),
			classificationName(s.GetClassification()), shownList(methodNames(s)), shown(s.GetCustodian()))
		fmt.Fprintf(w, "    description: %s\n", shownOr(s.GetDescription(), "none"))
	}
	fmt.Fprintf(w, "\ngrants (%d)\n", len(cfg.GetGrants()))
	for _, g := range cfg.GetGrants() {
		expires := ""
		if g.GetExpiresAt() != nil {
			expires = ", until " + g.GetExpiresAt().AsTime().UTC().Format(time.RFC3339)
		}
		fmt.Fprintf(w, "  %-6s %s -> %s; methods: %s; purposes: %s%s\n", shown(g.GetId()), shown(g.GetClient()),
			shown(g.GetService()), orWord(g.GetMethods(), "all"), orWord(g.GetPurposes(), "any"), expires)
	}
	fmt.Fprintf(w, "\ncode lists (%d)\n", len(cfg.GetCodeLists()))
	for _, l := range cfg.GetCodeLists() {
		fmt.Fprintf(w, "  %s %s: %d entries, sha256 %x\n",
			shown(l.GetList()), shown(l.GetVersion()), l.GetEntryCount(), l.GetSha256())
	}
}

// orWord joins s, each value as shownList prints it, or returns word for
// an empty list (no restriction). A value equal to word is quoted wherever
// it stands, so that a purpose named "any" does not read as no
// restriction, alone or in a list.
func orWord(s []string, word string) string {
	if len(s) == 0 {
		return word
	}
	out := make([]string, len(s))
	for i, v := range s {
		if v == word {
			out[i] = strconv.Quote(v)
		} else {
			out[i] = shownItem(v)
		}
	}
	return strings.Join(out, ", ")
}

// shownOr returns s as shown prints it, or word when s is empty; s equal
// to word is quoted, so that it does not read as empty.
func shownOr(s, word string) string {
	switch s {
	case "":
		return word
	case word:
		return strconv.Quote(s)
	}
	return shown(s)
}
