package main

import (
	"context"
	"flag"
	"fmt"
	"io"

	"google.golang.org/grpc"

	"github.com/ketnoi/ketnoi/internal/id"
	registryv1 "github.com/ketnoi/ketnoi/proto/ketnoi/registry/v1"
)

// connectionUsage describes the flags every registry command shares.
const connectionUsage = `
Every command connects to the registry with an operator SVID
(spiffe://<trust-domain>/admin/<name>):
  --registry ADDR  --trust-domain vn.ketnoi  --cert FILE  --key FILE  --bundle FILE
defaulting to $KETNOI_REGISTRY, $KETNOI_CERT, $KETNOI_KEY and $KETNOI_BUNDLE.
`

const memberUsage = `usage:
  ketnoi member add --id INSTANCE/CLASS/CODE --name NAME --signing-cert FILE
  ketnoi member set-name --id INSTANCE/CLASS/CODE --name NAME
  ketnoi member remove --id INSTANCE/CLASS/CODE
  ketnoi member add-signing-cert --id INSTANCE/CLASS/CODE --signing-cert FILE
  ketnoi member remove-signing-cert --id INSTANCE/CLASS/CODE (--signing-cert FILE | --sha256 HEX)

A name is at most 256 characters, without control characters. set-name to
the name the member has already publishes nothing ("unchanged"). remove is
refused while the member has nodes or subsystems, provides services or
holds grants: revoke the grants, then remove the services, subsystems and
nodes first.

Nodes accept messages signed with any certificate their member lists. To
rotate a signing key, add the new certificate, switch the member's nodes
to the new key, then remove the old certificate; a member's last
certificate cannot be removed. "ketnoi config show" lists each
certificate's SHA-256.
` + connectionUsage

const subsystemUsage = `usage:
  ketnoi subsystem add --id INSTANCE/CLASS/CODE/SUBSYSTEM
  ketnoi subsystem remove --id INSTANCE/CLASS/CODE/SUBSYSTEM

remove is refused while the subsystem provides services or holds grants:
revoke the grants and remove the services first.
` + connectionUsage

const nodeUsage = `usage:
  ketnoi node add --id spiffe://TD/node/CLASS/CODE/NAME --address HOST:PORT
  ketnoi node set-address --id spiffe://TD/node/CLASS/CODE/NAME --address HOST:PORT
  ketnoi node remove --id spiffe://TD/node/CLASS/CODE/NAME

HOST:PORT is where other nodes dial the node's federation endpoint. Peers
move to a new address, or drop a removed node, as soon as the new
configuration reaches them; set-address to the address the node has
already publishes nothing ("unchanged"). A removed node is refused by the
registry until it is added again. The last node of a member that still
provides services or holds grants is not removed: remove the services and
revoke the grants, or add another node, first.
` + connectionUsage

const serviceUsage = `usage:
  ketnoi service add --id INSTANCE/CLASS/CODE/SUBSYSTEM/pkg.v1.Service
                     --descriptor-set FILE --description TEXT --custodian TEXT
                     [--classification normal|sensitive|secret|top-secret]
  ketnoi service update --id SERVICE [--descriptor-set FILE] [--description TEXT]
                        [--custodian TEXT] [--classification normal|sensitive|secret|top-secret]
  ketnoi service remove --id SERVICE

FILE is a serialized FileDescriptorSet holding the service and its imports
(protoc --include_imports --descriptor_set_out, or buf build -o).

update changes only what it is given; a new descriptor set replaces the
methods, and is refused while a grant names a method the set lacks; an
update to the values the service has already publishes nothing
("unchanged"). remove is refused while grants of the service exist:
revoke them first.
` + connectionUsage

// verb runs one subcommand, such as "add" of "ketnoi member add".
type verb func(ctx context.Context, args []string, stdout io.Writer) error

// subcommand dispatches "ketnoi NOUN VERB": it runs the function named by
// args[0] or prints usage.
func subcommand(
	ctx context.Context,
	args []string,
	stdout io.Writer,
	usage string,
	verbs map[string]verb,
) error {
	if len(args) == 0 {
		return usagef("missing subcommand (run with -h for usage)")
	}
	if fn, ok := verbs[args[0]]; ok {
		return fn(ctx, args[1:], stdout)
	}
	switch args[0] {
	case "help", "-h", "-help", "--help":
		_, err := io.WriteString(stdout, usage)
		return err
	}
	return usagef("unknown subcommand %q (run with -h for usage)", args[0])
}

func runMember(ctx context.Context, args []string, stdout io.Writer) error {
	return subcommand(ctx, args, stdout, memberUsage, map[string]verb{
		"add":                 memberAdd,
		"set-name":            memberSetName,
		"remove":              memberRemove,
		"add-signing-cert":    memberAddSigningCert,
		"remove-signing-cert": memberRemoveSigningCert,
	})
}

func runSubsystem(ctx context.Context, args []string, stdout io.Writer) error {
	return subcommand(ctx, args, stdout, subsystemUsage, map[string]verb{
		"add":    subsystemAdd,
		"remove": subsystemRemove,
	})
}

func runNode(ctx context.Context, args []string, stdout io.Writer) error {
	return subcommand(ctx, args, stdout, nodeUsage, map[string]verb{
		"add":         nodeAdd,
		"set-address": nodeSetAddress,
		"remove":      nodeRemove,
	})
}

func runService(ctx context.Context, args []string, stdout io.Writer) error {
	return subcommand(ctx, args, stdout, serviceUsage, map[string]verb{
		"add":    serviceAdd,
		"update": serviceUpdate,
		"remove": serviceRemove,
	})
}

// requireFlags fails with a usage error naming the first of the named
// flags of fs that is empty.
func requireFlags(fs *flag.FlagSet, names ...string) error {
	for _, name := range names {
		if f := fs.Lookup(name); f == nil || f.Value.String() == "" {
			return usagef("--%s is required", name)
		}
	}
	return nil
}

// checkID runs parse on the value of --name and turns a malformed value
// into a usage error (exit 2) before anything is sent to the registry,
// which would refuse it too.
func checkID(name, value string, parse func(string) error) error {
	if err := parse(value); err != nil {
		return usagef("--%s: %v", name, err)
	}
	return nil
}

func parseMember(s string) error    { _, err := id.ParseMember(s); return err }
func parseSubsystem(s string) error { _, err := id.ParseSubsystem(s); return err }
func parseClient(s string) error    { _, err := id.ParseClient(s); return err }
func parseService(s string) error   { _, err := id.ParseService(s); return err }

// memberAdd registers a member with its signing certificate.
func memberAdd(ctx context.Context, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("member add", flag.ContinueOnError)
	memberID := fs.String("id", "", "member identifier, e.g. VN/NN/000.00.00.G22 (required)")
	name := fs.String("name", "", "official name of the member (required)")
	certFile := fs.String("signing-cert", "", "member signing certificate (PEM or DER) `file` (required)")
	conn := addRegistryFlags(fs)
	if err := parseFlags(fs, args, stdout); err != nil {
		return helpOrError(err)
	}
	if err := requireFlags(fs, "id", "name", "signing-cert"); err != nil {
		return err
	}
	if err := checkID("id", fs.Lookup("id").Value.String(), parseMember); err != nil {
		return err
	}
	if err := requireUTF8(fs, "name"); err != nil {
		return err
	}
	cert, err := readInput("signing-cert", *certFile)
	if err != nil {
		return err
	}

	return callRegistry(ctx, conn, func(ctx context.Context, cc *grpc.ClientConn) error {
		resp, err := registryv1.NewAdminServiceClient(cc).AddMember(ctx, &registryv1.AddMemberRequest{
			MemberId:           *memberID,
			Name:               *name,
			SigningCertificate: cert,
		})
		if err != nil {
			return err
		}
		m := resp.GetMember()
		fmt.Fprintf(stdout, "registered member %s (%s); configuration version %d\n",
			shown(m.GetId()), shown(m.GetName()), resp.GetVersion())
		return nil
	})
}

// idCommand is a registry command whose one argument is --id, such as
// subsystem add or node remove.
type idCommand struct {
	name    string
	idUsage string
	// parse checks the identifier before anything is sent; nil leaves it
	// to the registry.
	parse func(string) error
	// call makes the change and returns the line to print.
	call func(ctx context.Context, admin registryv1.AdminServiceClient, id string) (string, error)
}

func (c idCommand) run(ctx context.Context, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet(c.name, flag.ContinueOnError)
	idValue := fs.String("id", "", c.idUsage+" (required)")
	conn := addRegistryFlags(fs)
	if err := parseFlags(fs, args, stdout); err != nil {
		return helpOrError(err)
	}
	if err := requireFlags(fs, "id"); err != nil {
		return err
	}
	if c.parse != nil {
		if err := checkID("id", *idValue, c.parse); err != nil {
			return err
		}
	}
	if err := requireUTF8(fs, "id"); err != nil {
		return err
	}
	return callRegistry(ctx, conn, func(ctx context.Context, cc *grpc.ClientConn) error {
		line, err := c.call(ctx, registryv1.NewAdminServiceClient(cc), *idValue)
		if err != nil {
			return err
		}
		fmt.Fprintln(stdout, line)
		return nil
	})
}

// subsystemAdd registers a subsystem of a member.
var subsystemAdd = idCommand{
	name:    "subsystem add",
	idUsage: "subsystem identifier, e.g. VN/NN/000.00.00.G22/vanban",
	parse:   parseSubsystem,
	call: func(ctx context.Context, admin registryv1.AdminServiceClient, id string) (string, error) {
		resp, err := admin.AddSubsystem(ctx, &registryv1.AddSubsystemRequest{SubsystemId: id})
		if err != nil {
			return "", err
		}
		return fmt.Sprintf("registered subsystem %s; configuration version %d", id, resp.GetVersion()), nil
	},
}.run

// nodeAddressCommand is a registry command that takes a node's SPIFFE ID
// and federation address: node add and node set-address. call makes the
// change and returns the line to print.
type nodeAddressCommand struct {
	name         string
	addressUsage string
	call         func(ctx context.Context, admin registryv1.AdminServiceClient, nodeID, address string) (string, error)
}

func (c nodeAddressCommand) run(ctx context.Context, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet(c.name, flag.ContinueOnError)
	nodeID := fs.String("id", "",
		"node SPIFFE ID, e.g. spiffe://vn.ketnoi/node/NN/000.00.00.G22/node1 (required)")
	address := fs.String("address", "", c.addressUsage+" `host:port` of the node (required)")
	conn := addRegistryFlags(fs)
	if err := parseFlags(fs, args, stdout); err != nil {
		return helpOrError(err)
	}
	if err := requireFlags(fs, "id", "address"); err != nil {
		return err
	}
	if err := checkID("id", *nodeID, parseSPIFFEID); err != nil {
		return err
	}
	if err := requireUTF8(fs, "address"); err != nil {
		return err
	}
	return callRegistry(ctx, conn, func(ctx context.Context, cc *grpc.ClientConn) error {
		line, err := c.call(ctx, registryv1.NewAdminServiceClient(cc), *nodeID, *address)
		if err != nil {
			return err
		}
		fmt.Fprintln(stdout, line)
		return nil
	})
}

// nodeAdd registers a security-server node.
var nodeAdd = nodeAddressCommand{
	name:         "node add",
	addressUsage: "federation endpoint",
	call: func(ctx context.Context, admin registryv1.AdminServiceClient, nodeID, address string) (string, error) {
		resp, err := admin.AddNode(ctx, &registryv1.AddNodeRequest{SpiffeId: nodeID, Address: address})
		if err != nil {
			return "", err
		}
		n := resp.GetNode()
		return fmt.Sprintf("registered node %s of %s at %s; configuration version %d",
			shown(n.GetSpiffeId()), shown(n.GetMember()), shown(n.GetAddress()), resp.GetVersion()), nil
	},
}.run

// classifications maps --classification values to the enum.
var classifications = map[string]registryv1.Classification{
	"normal":     registryv1.Classification_CLASSIFICATION_NORMAL,
	"sensitive":  registryv1.Classification_CLASSIFICATION_SENSITIVE,
	"secret":     registryv1.Classification_CLASSIFICATION_SECRET,
	"top-secret": registryv1.Classification_CLASSIFICATION_TOP_SECRET,
}

// classificationName is the --classification value of c.
func classificationName(c registryv1.Classification) string {
	for name, v := range classifications {
		if v == c {
			return name
		}
	}
	return c.String()
}

// serviceAdd registers a gRPC service of a subsystem.
func serviceAdd(ctx context.Context, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("service add", flag.ContinueOnError)
	serviceID := fs.String("id", "", "service identifier: subsystem plus gRPC service name (required)")
	descFile := fs.String("descriptor-set", "",
		"serialized FileDescriptorSet `file` with the service (required)")
	description := fs.String("description", "", "what the service offers (required)")
	custodian := fs.String("custodian", "", "person or unit who keeps the data correct (required)")
	class := fs.String("classification", "normal",
		"data classification: normal, sensitive, secret or top-secret")
	conn := addRegistryFlags(fs)
	if err := parseFlags(fs, args, stdout); err != nil {
		return helpOrError(err)
	}
	if err := requireFlags(fs, "id", "descriptor-set", "description", "custodian"); err != nil {
		return err
	}
	if err := checkID("id", fs.Lookup("id").Value.String(), parseService); err != nil {
		return err
	}
	if err := requireUTF8(fs, "description", "custodian"); err != nil {
		return err
	}
	classification, err := parseClassification(*class)
	if err != nil {
		return err
	}
	set, err := readDescriptorSet(*descFile)
	if err != nil {
		return err
	}

	return callRegistry(ctx, conn, func(ctx context.Context, cc *grpc.ClientConn) error {
		resp, err := registryv1.NewAdminServiceClient(cc).AddService(ctx, &registryv1.AddServiceRequest{
			ServiceId:         *serviceID,
			FileDescriptorSet: set,
			Description:       *description,
			Custodian:         *custodian,
			Classification:    classification,
		})
		if err != nil {
			return err
		}
		fmt.Fprintln(stdout, serviceLine("registered", resp.GetService(), resp.GetVersion()))
		return nil
	})
}

// parseClassification reads a --classification value.
func parseClassification(name string) (registryv1.Classification, error) {
	c, ok := classifications[name]
	if !ok {
		return 0, usagef("--classification %q: want normal, sensitive, secret or top-secret", name)
	}
	return c, nil
}

// readDescriptorSet reads a --descriptor-set file. An empty file is
// refused: on the wire it is no set at all, which service update would
// take as "keep the registered methods" without a word.
func readDescriptorSet(file string) ([]byte, error) {
	set, err := readInput("descriptor-set", file)
	if err != nil {
		return nil, err
	}
	if len(set) == 0 {
		return nil, usagef("--descriptor-set %s: the file is empty", file)
	}
	return set, nil
}

// serviceLine is what service add and service update print.
func serviceLine(verb string, s *registryv1.Service, version uint64) string {
	return fmt.Sprintf("%s service %s (%s, methods %s); configuration version %d",
		verb, shown(s.GetId()), classificationName(s.GetClassification()), shownList(methodNames(s)), version)
}
