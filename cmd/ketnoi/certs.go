package main

import (
	"context"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/url"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/ketnoi/ketnoi/internal/id"
	"github.com/ketnoi/ketnoi/internal/pki"
	"github.com/ketnoi/ketnoi/internal/registry"
)

const certsUsage = `usage:
  ketnoi certs init --dir DIR [--trust-domain vn.ketnoi] [--ttl 8760h] [--force]
  ketnoi certs svid --dir DIR --id SPIFFE_ID --name NAME [--ttl 720h] [--classes DANG,NN,MTTQ] [--force]
  ketnoi certs signing --dir DIR (--member INSTANCE/CLASS/CODE | --registry) --name NAME [--ttl 17520h]
                       [--classes DANG,NN,MTTQ] [--force]

init creates a development CA in DIR: ca.pem, ca-key.pem and bundle.pem.
svid and signing issue a certificate from the CA in DIR and write
DIR/NAME.pem and DIR/NAME-key.pem; they refuse to replace existing files,
and an existing CA, unless given --force. A member class must be one of
--classes, as ketnoi-registry is started with. For development and tests
only.
`

// runCerts manages the development PKI: a CA, X.509-SVIDs and signing
// certificates.
func runCerts(ctx context.Context, args []string, stdout io.Writer) error {
	if len(args) == 0 {
		return usagef("missing subcommand: want init, svid or signing")
	}
	switch args[0] {
	case "init":
		return certsInit(args[1:], stdout)
	case "svid":
		return certsSVID(args[1:], stdout)
	case "signing":
		return certsSigning(args[1:], stdout)
	case "help", "-h", "-help", "--help":
		_, err := io.WriteString(stdout, certsUsage)
		return err
	}
	return usagef("unknown subcommand %q: want init, svid or signing", args[0])
}

// errHelpShown tells a subcommand that -h printed its usage and there is
// nothing left to do.
var errHelpShown = errors.New("help shown")

// parseFlags parses args into fs. Parse errors become usage errors; -h
// prints the flags to stdout and returns errHelpShown.
func parseFlags(fs *flag.FlagSet, args []string, stdout io.Writer) error {
	fs.SetOutput(io.Discard)
	err := fs.Parse(args)
	if errors.Is(err, flag.ErrHelp) {
		fmt.Fprintf(stdout, "usage of ketnoi %s:\n", fs.Name())
		fs.SetOutput(stdout)
		fs.PrintDefaults()
		return errHelpShown
	}
	if err != nil {
		return usagef("%v", err)
	}
	if fs.NArg() > 0 {
		return usagef("unexpected argument %q", fs.Arg(0))
	}
	return nil
}

// helpOrError turns errHelpShown into success.
func helpOrError(err error) error {
	if errors.Is(err, errHelpShown) {
		return nil
	}
	return err
}

func certsInit(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("certs init", flag.ContinueOnError)
	dir := fs.String("dir", "", "directory to write the CA into (required)")
	tdName := fs.String("trust-domain", "vn.ketnoi", "SPIFFE trust domain of the instance")
	ttl := fs.Duration("ttl", 8760*time.Hour, "validity of the CA certificate")
	force := fs.Bool("force", false, "replace an existing CA in DIR")
	if err := parseFlags(fs, args, stdout); err != nil {
		return helpOrError(err)
	}
	if *dir == "" {
		return usagef("--dir is required")
	}
	td, err := spiffeid.TrustDomainFromString(*tdName)
	if err != nil {
		return usagef("--trust-domain %q: %v", *tdName, err)
	}
	if *ttl <= 0 {
		return usagef("--ttl %v: must be positive", *ttl)
	}

	ca, err := pki.NewCA(td, *ttl)
	if err != nil {
		return err
	}
	save := ca.Save
	if *force {
		save = ca.SaveOverwrite
	}
	if err := save(*dir); err != nil {
		if errors.Is(err, pki.ErrExists) {
			return fmt.Errorf("a CA already exists in %s (use --force to replace it)", *dir)
		}
		return err
	}

	expires := formatExpiry(ca.Cert, ca.Cert)
	caURI := td.ID().String()
	fmt.Fprintf(stdout, "wrote %s: CA %s, %s\n", filepath.Join(*dir, pki.CertFile), caURI, expires)
	fmt.Fprintf(stdout, "wrote %s: private key of CA %s\n", filepath.Join(*dir, pki.KeyFile), caURI)
	fmt.Fprintf(stdout, "wrote %s: trust bundle of %s, %s\n",
		filepath.Join(*dir, pki.BundleFile), td.Name(), expires)
	return nil
}

func certsSVID(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("certs svid", flag.ContinueOnError)
	dir := fs.String("dir", "", "directory holding the CA; the SVID is written there (required)")
	idFlag := fs.String("id", "", "SPIFFE ID, e.g. spiffe://vn.ketnoi/node/NN/000.00.00.G22/ss1 (required)")
	name := fs.String("name", "", "file name stem: writes NAME.pem and NAME-key.pem (required)")
	ttl := fs.Duration("ttl", 720*time.Hour, "validity of the SVID")
	classes := addClassesFlag(fs)
	force := fs.Bool("force", false, "replace NAME.pem and NAME-key.pem if they exist")
	if err := parseFlags(fs, args, stdout); err != nil {
		return helpOrError(err)
	}
	if err := checkLeafFlags(*dir, *name, *ttl); err != nil {
		return err
	}
	if *idFlag == "" {
		return usagef("--id is required")
	}
	sid, err := spiffeid.FromString(*idFlag)
	if err != nil {
		return usagef("--id %q: %v", *idFlag, err)
	}
	accepted, err := classes.list()
	if err != nil {
		return err
	}
	if err := checkWorkloadID(sid, accepted); err != nil {
		return usagef("--id: %v", err)
	}

	ca, err := pki.LoadCA(*dir)
	if err != nil {
		return err
	}
	if sid.TrustDomain() != ca.TrustDomain {
		return usagef("--id %s: not in the CA's trust domain %s", sid, ca.TrustDomain)
	}
	iss, err := ca.IssueSVID(sid, *ttl)
	if err != nil {
		return err
	}
	return writeIssued(stdout, ca, iss, *dir, *name, "SVID "+sid.String(), *force)
}

func certsSigning(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("certs signing", flag.ContinueOnError)
	dir := fs.String("dir", "", "directory holding the CA; the certificate is written there (required)")
	member := fs.String("member", "", "member whose signing certificate to issue, e.g. VN/NN/000.00.00.G22")
	registry := fs.Bool("registry", false, "issue the registry's configuration signing certificate")
	name := fs.String("name", "", "file name stem: writes NAME.pem and NAME-key.pem (required)")
	ttl := fs.Duration("ttl", 17520*time.Hour, "validity of the signing certificate (at most the CA's)")
	classes := addClassesFlag(fs)
	force := fs.Bool("force", false, "replace NAME.pem and NAME-key.pem if they exist")
	if err := parseFlags(fs, args, stdout); err != nil {
		return helpOrError(err)
	}
	if err := checkLeafFlags(*dir, *name, *ttl); err != nil {
		return err
	}
	accepted, err := classes.list()
	if err != nil {
		return err
	}
	uri, err := signingURI(*member, *registry, accepted)
	if err != nil {
		return err
	}

	ca, err := pki.LoadCA(*dir)
	if err != nil {
		return err
	}
	iss, err := ca.IssueSigning(uri, *ttl)
	if err != nil {
		return err
	}
	return writeIssued(stdout, ca, iss, *dir, *name, "signing certificate "+uri.String(), *force)
}

// classesFlag is the --classes flag of svid and signing: the member
// classes the registry accepts, so that a certificate for a member it
// would refuse is not issued.
type classesFlag struct{ value *string }

// addClassesFlag defines --classes on fs, with the registry's default.
func addClassesFlag(fs *flag.FlagSet) classesFlag {
	return classesFlag{fs.String("classes", strings.Join(registry.DefaultClasses, ","),
		"comma-separated member `classes` the registry accepts (its --classes)")}
}

// list returns the classes, refusing an empty one.
func (c classesFlag) list() ([]string, error) {
	var out []string
	for class := range strings.SplitSeq(*c.value, ",") {
		if class = strings.TrimSpace(class); class == "" {
			return nil, usagef("--classes %q: empty class", *c.value)
		}
		out = append(out, class)
	}
	return out, nil
}

// checkClass refuses a member whose class is not among classes.
func checkClass(m id.Member, classes []string) error {
	if !slices.Contains(classes, m.Class) {
		return fmt.Errorf("member class %q is not one of %s (see --classes)", m.Class, strings.Join(classes, ", "))
	}
	return nil
}

// signingURI returns the URI SAN chosen by exactly one of --member and
// --registry.
func signingURI(member string, registry bool, classes []string) (*url.URL, error) {
	switch {
	case member != "" && registry:
		return nil, usagef("--member and --registry exclude each other")
	case registry:
		u, err := url.Parse(id.RegistrySigningURI)
		if err != nil {
			return nil, fmt.Errorf("registry signing URI: %w", err)
		}
		return u, nil
	case member == "":
		return nil, usagef("one of --member or --registry is required")
	}
	m, err := id.ParseMember(member)
	if err != nil {
		return nil, usagef("--member: %v", err)
	}
	if err := checkClass(m, classes); err != nil {
		return nil, usagef("--member %s: %v", m, err)
	}
	return id.MemberURI(m), nil
}

// leafNameRE limits NAME to a plain file name stem.
var leafNameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)

// checkLeafFlags validates the flags svid and signing share. NAME may not
// make the output collide with the CA's files or with another
// certificate's key file.
func checkLeafFlags(dir, name string, ttl time.Duration) error {
	switch {
	case dir == "":
		return usagef("--dir is required")
	case name == "":
		return usagef("--name is required")
	case !leafNameRE.MatchString(name):
		return usagef("--name %q: want 1-64 of A-Z a-z 0-9 . _ - starting with a letter or digit", name)
	case strings.HasSuffix(name, "-key"):
		return usagef("--name %q: must not end in -key, the suffix of key files", name)
	case ttl <= 0:
		return usagef("--ttl %v: must be positive", ttl)
	}
	for _, reserved := range []string{pki.CertFile, pki.KeyFile, pki.BundleFile} {
		if name+".pem" == reserved {
			return usagef("--name %q: would overwrite the CA file %s", name, reserved)
		}
	}
	return nil
}

// anyInstance stands in for the instance when checking a node or
// application ID: SPIFFE IDs carry the member class and code but not the
// instance, so any valid instance checks the rest.
const anyInstance = "VN"

// checkWorkloadID checks that sid has the path of a ketnoi workload:
// registry, node, operator or application, the member class of a node or
// application among classes.
func checkWorkloadID(sid spiffeid.ID, classes []string) error {
	segs := strings.Split(strings.TrimPrefix(sid.Path(), "/"), "/")
	switch segs[0] {
	case "registry":
		if len(segs) != 1 {
			return errors.New("the registry ID has no path below /registry")
		}
		return nil
	case "node":
		m, _, err := id.ParseNode(sid, anyInstance)
		if err != nil {
			return err
		}
		return checkClass(m, classes)
	case "admin":
		if len(segs) != 2 {
			return errors.New("want spiffe://TD/admin/NAME")
		}
		_, err := id.Admin(sid.TrustDomain(), segs[1])
		return err
	case "app":
		if len(segs) != 4 {
			return errors.New("want spiffe://TD/app/CLASS/CODE/SUBSYSTEM")
		}
		c, err := id.ParseSubsystem(strings.Join(append([]string{anyInstance}, segs[1:]...), "/"))
		if err != nil {
			return err
		}
		return checkClass(c.Member, classes)
	}
	return errors.New("want a path of /registry, /node/CLASS/CODE/NAME, /admin/NAME " +
		"or /app/CLASS/CODE/SUBSYSTEM")
}

// writeIssued writes DIR/NAME.pem and DIR/NAME-key.pem and prints one line
// for each. Existing files are replaced only with force: the key they hold
// may be in use, and is lost once replaced.
func writeIssued(stdout io.Writer, ca *pki.CA, iss *pki.Issued, dir, name, what string, force bool) error {
	certFile := filepath.Join(dir, name+".pem")
	keyFile := filepath.Join(dir, name+"-key.pem")
	write := iss.WriteNew
	if force {
		write = iss.Write
	}
	if err := write(certFile, keyFile); err != nil {
		if errors.Is(err, pki.ErrFileExists) {
			return fmt.Errorf("%w (use --force to replace %s and %s)", err, certFile, keyFile)
		}
		return err
	}
	expires := formatExpiry(iss.Cert, ca.Cert)
	fmt.Fprintf(stdout, "wrote %s: %s, %s\n", certFile, what, expires)
	fmt.Fprintf(stdout, "wrote %s: private key of %s\n", keyFile, what)
	return nil
}

// formatExpiry describes when cert expires, and says so when the CA's own
// expiry cut its validity short.
func formatExpiry(cert, caCert *x509.Certificate) string {
	s := "expires " + cert.NotAfter.UTC().Format(time.RFC3339)
	if cert != caCert && cert.NotAfter.Equal(caCert.NotAfter) {
		s += " (limited by the CA's expiry)"
	}
	return s
}
