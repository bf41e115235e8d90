package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"flag"
	"fmt"
	"io"
	"strings"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc"

	"github.com/ketnoi/ketnoi/internal/sign"
	registryv1 "github.com/ketnoi/ketnoi/proto/ketnoi/registry/v1"
)

func parseSPIFFEID(s string) error { _, err := spiffeid.FromString(s); return err }

// memberAddSigningCert lists a further signing certificate for a member.
func memberAddSigningCert(ctx context.Context, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("member add-signing-cert", flag.ContinueOnError)
	memberID := fs.String("id", "", "member identifier, e.g. VN/NN/000.00.00.G22 (required)")
	certFile := fs.String("signing-cert", "", "new member signing certificate (PEM or DER) `file` (required)")
	conn := addRegistryFlags(fs)
	if err := parseFlags(fs, args, stdout); err != nil {
		return helpOrError(err)
	}
	if err := requireFlags(fs, "id", "signing-cert"); err != nil {
		return err
	}
	if err := checkID("id", *memberID, parseMember); err != nil {
		return err
	}
	cert, err := readInput("signing-cert", *certFile)
	if err != nil {
		return err
	}

	return callRegistry(ctx, conn, func(ctx context.Context, cc *grpc.ClientConn) error {
		resp, err := registryv1.NewAdminServiceClient(cc).AddSigningCertificate(ctx,
			&registryv1.AddSigningCertificateRequest{MemberId: *memberID, SigningCertificate: cert})
		if err != nil {
			return err
		}
		certs := resp.GetMember().GetSigningCertificates()
		added := sha256.Sum256(certs[len(certs)-1])
		fmt.Fprintf(stdout, "added signing certificate sha256 %x to member %s (%d listed); configuration version %d\n",
			added, shown(resp.GetMember().GetId()), len(certs), resp.GetVersion())
		return nil
	})
}

// memberRemoveSigningCert takes a signing certificate off a member's list.
func memberRemoveSigningCert(ctx context.Context, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("member remove-signing-cert", flag.ContinueOnError)
	memberID := fs.String("id", "", "member identifier, e.g. VN/NN/000.00.00.G22 (required)")
	certFile := fs.String("signing-cert", "", "signing certificate (PEM or DER) `file` to remove")
	sumHex := fs.String("sha256", "", "SHA-256 of the certificate to remove, in `hex` as config show prints it")
	conn := addRegistryFlags(fs)
	if err := parseFlags(fs, args, stdout); err != nil {
		return helpOrError(err)
	}
	if err := requireFlags(fs, "id"); err != nil {
		return err
	}
	if err := checkID("id", *memberID, parseMember); err != nil {
		return err
	}
	if (*certFile == "") == (*sumHex == "") {
		return usagef("exactly one of --signing-cert and --sha256 is required")
	}
	sum, err := certificateSum(*certFile, *sumHex)
	if err != nil {
		return err
	}

	return callRegistry(ctx, conn, func(ctx context.Context, cc *grpc.ClientConn) error {
		resp, err := registryv1.NewAdminServiceClient(cc).RemoveSigningCertificate(ctx,
			&registryv1.RemoveSigningCertificateRequest{MemberId: *memberID, CertificateSha256: sum})
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "removed signing certificate sha256 %x of member %s (%d left); configuration version %d\n",
			sum, shown(resp.GetMember().GetId()), len(resp.GetMember().GetSigningCertificates()), resp.GetVersion())
		return nil
	})
}

// certificateSum returns the SHA-256 of the DER certificate in file, or
// the digest given in hex.
func certificateSum(file, sumHex string) ([]byte, error) {
	if sumHex != "" {
		sum, err := hex.DecodeString(sumHex)
		if err != nil || len(sum) != sha256.Size {
			return nil, usagef("--sha256 %q: want %d hexadecimal digits", sumHex, 2*sha256.Size)
		}
		return sum, nil
	}
	data, err := readInput("signing-cert", file)
	if err != nil {
		return nil, err
	}
	certs, err := sign.ParseCertificates(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", file, err)
	}
	sum := sha256.Sum256(certs[0].Raw)
	return sum[:], nil
}

// nodeSetAddress moves a node to a new federation address.
var nodeSetAddress = nodeAddressCommand{
	name:         "node set-address",
	addressUsage: "new federation endpoint",
	call: func(ctx context.Context, admin registryv1.AdminServiceClient, nodeID, address string) (string, error) {
		resp, err := admin.UpdateNode(ctx, &registryv1.UpdateNodeRequest{SpiffeId: nodeID, Address: address})
		if err != nil {
			return "", err
		}
		n := resp.GetNode()
		if resp.GetUnchanged() {
			return fmt.Sprintf("node %s is already at %s: unchanged; configuration version %d",
				shown(n.GetSpiffeId()), shown(n.GetAddress()), resp.GetVersion()), nil
		}
		return fmt.Sprintf("node %s is now at %s; configuration version %d",
			shown(n.GetSpiffeId()), shown(n.GetAddress()), resp.GetVersion()), nil
	},
}.run

// nodeRemove removes a node.
var nodeRemove = idCommand{
	name:    "node remove",
	idUsage: "node SPIFFE ID, e.g. spiffe://vn.ketnoi/node/NN/000.00.00.G22/node1",
	parse:   parseSPIFFEID,
	call: func(ctx context.Context, admin registryv1.AdminServiceClient, id string) (string, error) {
		resp, err := admin.RemoveNode(ctx, &registryv1.RemoveNodeRequest{SpiffeId: id})
		if err != nil {
			return "", err
		}
		return fmt.Sprintf("removed node %s; configuration version %d", shown(id), resp.GetVersion()), nil
	},
}.run

// serviceUpdate changes the given fields of a service.
func serviceUpdate(ctx context.Context, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("service update", flag.ContinueOnError)
	serviceID := fs.String("id", "", "service identifier: subsystem plus gRPC service name (required)")
	descFile := fs.String("descriptor-set", "",
		"new serialized FileDescriptorSet `file` with the service; its methods replace the registered ones")
	description := fs.String("description", "", "new description of what the service offers")
	custodian := fs.String("custodian", "", "new person or unit who keeps the data correct")
	class := fs.String("classification", "",
		"new data classification: normal, sensitive, secret or top-secret")
	conn := addRegistryFlags(fs)
	if err := parseFlags(fs, args, stdout); err != nil {
		return helpOrError(err)
	}
	if err := requireFlags(fs, "id"); err != nil {
		return err
	}
	if err := checkID("id", *serviceID, parseService); err != nil {
		return err
	}
	// An explicit empty value is a change asked for, not none: it is
	// refused for what it is. Every service has a description and a
	// custodian (service add requires both), so neither can be cleared.
	for _, name := range []string{"description", "custodian"} {
		if flagSet(fs, name) && strings.TrimSpace(fs.Lookup(name).Value.String()) == "" {
			return usagef("--%s must not be empty: every service has one; give the new text", name)
		}
	}
	if *descFile == "" && *description == "" && *custodian == "" && *class == "" {
		return usagef("nothing to change: give --descriptor-set, --description, --custodian or --classification")
	}
	if err := requireUTF8(fs, "description", "custodian"); err != nil {
		return err
	}
	req := &registryv1.UpdateServiceRequest{ServiceId: *serviceID, Description: *description, Custodian: *custodian}
	var err error
	if *class != "" {
		if req.Classification, err = parseClassification(*class); err != nil {
			return err
		}
	}
	if *descFile != "" {
		if req.FileDescriptorSet, err = readDescriptorSet(*descFile); err != nil {
			return err
		}
	}

	return callRegistry(ctx, conn, func(ctx context.Context, cc *grpc.ClientConn) error {
		resp, err := registryv1.NewAdminServiceClient(cc).UpdateService(ctx, req)
		if err != nil {
			return err
		}
		verb := "updated"
		if resp.GetUnchanged() {
			verb = "unchanged"
		}
		fmt.Fprintln(stdout, serviceLine(verb, resp.GetService(), resp.GetVersion()))
		return nil
	})
}

// serviceRemove removes a service that no grant names.
var serviceRemove = idCommand{
	name:    "service remove",
	idUsage: "service identifier: subsystem plus gRPC service name",
	parse:   parseService,
	call: func(ctx context.Context, admin registryv1.AdminServiceClient, id string) (string, error) {
		resp, err := admin.RemoveService(ctx, &registryv1.RemoveServiceRequest{ServiceId: id})
		if err != nil {
			return "", err
		}
		return fmt.Sprintf("removed service %s; configuration version %d", shown(id), resp.GetVersion()), nil
	},
}.run

// methodNames lists a service's method names in descriptor order.
func methodNames(s *registryv1.Service) []string {
	names := make([]string, 0, len(s.GetMethods()))
	for _, m := range s.GetMethods() {
		names = append(names, m.GetName())
	}
	return names
}

// memberSetName changes a member's official name.
func memberSetName(ctx context.Context, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("member set-name", flag.ContinueOnError)
	memberID := fs.String("id", "", "member identifier, e.g. VN/NN/000.00.00.G22 (required)")
	name := fs.String("name", "", "new official name of the member (required)")
	conn := addRegistryFlags(fs)
	if err := parseFlags(fs, args, stdout); err != nil {
		return helpOrError(err)
	}
	if err := requireFlags(fs, "id", "name"); err != nil {
		return err
	}
	if err := checkID("id", *memberID, parseMember); err != nil {
		return err
	}
	if err := requireUTF8(fs, "name"); err != nil {
		return err
	}

	return callRegistry(ctx, conn, func(ctx context.Context, cc *grpc.ClientConn) error {
		resp, err := registryv1.NewAdminServiceClient(cc).UpdateMember(ctx,
			&registryv1.UpdateMemberRequest{MemberId: *memberID, Name: *name})
		if err != nil {
			return err
		}
		m := resp.GetMember()
		if resp.GetUnchanged() {
			fmt.Fprintf(stdout, "member %s is already named %s: unchanged; configuration version %d\n",
				shown(m.GetId()), shown(m.GetName()), resp.GetVersion())
			return nil
		}
		fmt.Fprintf(stdout, "member %s is now named %s; configuration version %d\n",
			shown(m.GetId()), shown(m.GetName()), resp.GetVersion())
		return nil
	})
}

// memberRemove removes a member nothing depends on any more.
var memberRemove = idCommand{
	name:    "member remove",
	idUsage: "member identifier, e.g. VN/NN/000.00.00.G22",
	parse:   parseMember,
	call: func(ctx context.Context, admin registryv1.AdminServiceClient, id string) (string, error) {
		resp, err := admin.RemoveMember(ctx, &registryv1.RemoveMemberRequest{MemberId: id})
		if err != nil {
			return "", err
		}
		return fmt.Sprintf("removed member %s; configuration version %d", id, resp.GetVersion()), nil
	},
}.run

// subsystemRemove removes a subsystem no service or grant names.
var subsystemRemove = idCommand{
	name:    "subsystem remove",
	idUsage: "subsystem identifier, e.g. VN/NN/000.00.00.G22/vanban",
	parse:   parseSubsystem,
	call: func(ctx context.Context, admin registryv1.AdminServiceClient, id string) (string, error) {
		resp, err := admin.RemoveSubsystem(ctx, &registryv1.RemoveSubsystemRequest{SubsystemId: id})
		if err != nil {
			return "", err
		}
		return fmt.Sprintf("removed subsystem %s; configuration version %d", id, resp.GetVersion()), nil
	},
}.run
