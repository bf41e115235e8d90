package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/timestamppb"

	registryv1 "github.com/ketnoi/ketnoi/proto/ketnoi/registry/v1"
)

const grantUsage = `usage:
  ketnoi grant add --client CLIENT --service SERVICE [--method M ...] [--purpose P ...]
                   [--expires 2027-01-01T00:00:00Z]
  ketnoi grant revoke --id g-N

add prints the new grant's identifier first on its line. Without --method
the grant covers every method; without --purpose, any purpose.
` + connectionUsage

// repeatedFlag collects every value of a flag given more than once.
type repeatedFlag []string

func (r *repeatedFlag) String() string { return strings.Join(*r, ",") }

func (r *repeatedFlag) Set(v string) error {
	*r = append(*r, v)
	return nil
}

func runGrant(ctx context.Context, args []string, stdout io.Writer) error {
	return subcommand(ctx, args, stdout, grantUsage, map[string]verb{
		"add":    grantAdd,
		"revoke": grantRevoke,
	})
}

// grantAdd allows a client to call a service.
func grantAdd(ctx context.Context, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("grant add", flag.ContinueOnError)
	client := fs.String("client", "", "client: member or subsystem identifier (required)")
	service := fs.String("service", "", "service identifier (required)")
	var methods, purposes repeatedFlag
	fs.Var(&methods, "method", "allowed `method`; repeat for several (default all)")
	fs.Var(&purposes, "purpose", "allowed `purpose` code; repeat for several (default any)")
	expires := fs.String("expires", "", "end of validity, RFC 3339 `time` (default none)")
	conn := addRegistryFlags(fs)
	if err := parseFlags(fs, args, stdout); err != nil {
		return helpOrError(err)
	}
	if err := requireFlags(fs, "client", "service"); err != nil {
		return err
	}
	if err := checkID("client", fs.Lookup("client").Value.String(), parseClient); err != nil {
		return err
	}
	if err := checkID("service", fs.Lookup("service").Value.String(), parseService); err != nil {
		return err
	}
	if err := requireUTF8(fs, "method", "purpose"); err != nil {
		return err
	}
	req := &registryv1.AddGrantRequest{
		Client:   *client,
		Service:  *service,
		Methods:  methods,
		Purposes: purposes,
	}
	if *expires != "" {
		t, err := time.Parse(time.RFC3339, *expires)
		if err != nil {
			return usagef("--expires %q: want an RFC 3339 time such as 2027-01-01T00:00:00Z", *expires)
		}
		req.ExpiresAt = timestamppb.New(t)
	}

	return callRegistry(ctx, conn, func(ctx context.Context, cc *grpc.ClientConn) error {
		resp, err := registryv1.NewAdminServiceClient(cc).AddGrant(ctx, req)
		if err != nil {
			return err
		}
		g := resp.GetGrant()
		fmt.Fprintf(stdout, "%s granted %s access to %s (methods: %s; purposes: %s); configuration version %d\n",
			shown(g.GetId()), shown(g.GetClient()), shown(g.GetService()),
			orWord(g.GetMethods(), "all"), orWord(g.GetPurposes(), "any"), resp.GetVersion())
		return nil
	})
}

// grantRevoke removes a grant.
var grantRevoke = idCommand{
	name:    "grant revoke",
	idUsage: "grant identifier, e.g. g-1",
	call: func(ctx context.Context, admin registryv1.AdminServiceClient, id string) (string, error) {
		resp, err := admin.RevokeGrant(ctx, &registryv1.RevokeGrantRequest{GrantId: id})
		if err != nil {
			return "", err
		}
		return fmt.Sprintf("revoked grant %s; configuration version %d", shown(id), resp.GetVersion()), nil
	},
}.run
