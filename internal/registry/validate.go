package registry

import (
	"context"
	"crypto/x509"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	bolt "go.etcd.io/bbolt"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/ketnoi/ketnoi/internal/id"
	"github.com/ketnoi/ketnoi/internal/logging"
	"github.com/ketnoi/ketnoi/internal/sign"
)

// invalidf reports bad input in a request field.
func invalidf(field, format string, args ...any) error {
	return status.Errorf(codes.InvalidArgument, field+": "+format, args...)
}

// toStatus returns err unchanged when it is already a gRPC status, and
// otherwise logs it and returns an Internal status that names only the
// failed step.
func (r *Registry) toStatus(ctx context.Context, step string, err error) error {
	if _, ok := status.FromError(err); ok {
		return err
	}
	r.log.ErrorContext(ctx, "registry operation failed",
		slog.String(logging.KeyReason, step),
		slog.Any(logging.KeyError, err))
	return status.Errorf(codes.Internal, "%s: internal error", step)
}

// scope is what an admin call does with the member an identifier names,
// which decides whether the member's class must be one of the configured
// classes.
type scope bool

const (
	// adding registers something new: a member of a class the registry
	// is not configured with (any more) is refused.
	adding scope = false
	// changing changes or removes what is registered: any class is
	// accepted, so that members of a class dropped from the configured
	// classes can still be kept up to date and retired. What is not
	// registered is NotFound anyway.
	changing scope = true
)

// checkMember checks that m belongs to this instance and, when adding, to
// a configured class.
func (r *Registry) checkMember(field string, m id.Member, sc scope) error {
	if m.Instance != r.cfg.Instance {
		return invalidf(field, "instance %q is not this registry's instance %q", m.Instance, r.cfg.Instance)
	}
	if sc == adding && !slices.Contains(r.cfg.Classes, m.Class) {
		return invalidf(field, "member class %q is not one of %s", m.Class, strings.Join(r.cfg.Classes, ", "))
	}
	return nil
}

// warnDroppedClasses logs one warning naming the registered members whose
// class is not among the configured classes, as after a start with fewer
// --classes: they stay in the configuration and can be changed and
// removed, down to the member itself, but nothing can be added to them,
// not even a node that was removed.
func (r *Registry) warnDroppedClasses() error {
	var dropped []string
	err := r.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketMembers).ForEach(func(k, _ []byte) error {
			m, err := id.ParseMember(string(k))
			if err == nil && !slices.Contains(r.cfg.Classes, m.Class) {
				dropped = append(dropped, m.String())
			}
			return nil
		})
	})
	if err != nil || len(dropped) == 0 {
		return err
	}
	r.log.Warn("members of classes no longer accepted are registered: they can be changed and removed, "+
		"but no subsystem, node (also one removed before), service or grant can be added for them",
		slog.String(logging.KeyMembers, strings.Join(dropped, ",")),
		slog.String(logging.KeyClasses, strings.Join(r.cfg.Classes, ",")))
	return nil
}

// parseMember parses and checks a member identifier.
func (r *Registry) parseMember(field, s string, sc scope) (id.Member, error) {
	m, err := id.ParseMember(s)
	if err != nil {
		return id.Member{}, invalidf(field, "%v", err)
	}
	return m, r.checkMember(field, m, sc)
}

// parseClient parses and checks a member or subsystem identifier.
func (r *Registry) parseClient(field, s string, subsystem bool, sc scope) (id.Client, error) {
	parse := id.ParseClient
	if subsystem {
		parse = id.ParseSubsystem
	}
	c, err := parse(s)
	if err != nil {
		return id.Client{}, invalidf(field, "%v", err)
	}
	return c, r.checkMember(field, c.Member, sc)
}

// parseService parses and checks a service identifier.
func (r *Registry) parseService(field, s string, sc scope) (id.Service, error) {
	svc, err := id.ParseService(s)
	if err != nil {
		return id.Service{}, invalidf(field, "%v", err)
	}
	return svc, r.checkMember(field, svc.Provider.Member, sc)
}

// parseNode parses and checks a node's SPIFFE ID and returns it with the
// member its path names.
func (r *Registry) parseNode(field, s string, sc scope) (spiffeid.ID, id.Member, error) {
	sid, err := spiffeid.FromString(s)
	if err != nil {
		return spiffeid.ID{}, id.Member{}, invalidf(field, "%q: %v", s, err)
	}
	if sid.TrustDomain() != r.cfg.TrustDomain {
		return spiffeid.ID{}, id.Member{}, invalidf(field, "trust domain %q is not this registry's trust domain %q",
			sid.TrustDomain().Name(), r.cfg.TrustDomain.Name())
	}
	m, _, err := id.ParseNode(sid, r.cfg.Instance)
	if err != nil {
		return spiffeid.ID{}, id.Member{}, invalidf(field, "%v", err)
	}
	return sid, m, r.checkMember(field, m, sc)
}

// normAddress checks a host:port endpoint that other nodes dial, the host
// an IP address or a DNS name and the port a number, and returns it in one
// form: a DNS name in lower case, an IP address as Go formats it, the port
// in decimal without leading zeros, joined by net.JoinHostPort (which
// brackets IPv6). Anything else would be published to every node and fail
// only when one dials it; and two spellings of one endpoint must compare
// equal, so that moving a node to where it is changes nothing and two
// nodes cannot be registered at one address.
func normAddress(field, addr string) (string, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "", invalidf(field, "%q is not host:port: %v", addr, err)
	}
	if host == "" {
		return "", invalidf(field, "%q has no host", addr)
	}
	ip := net.ParseIP(host)
	if ip != nil && ip.IsUnspecified() {
		// What a node listens on, not where other nodes can reach it.
		return "", invalidf(field,
			"%q is an unspecified address; register the host name or address other nodes dial", addr)
	}
	if ip == nil {
		if i := strings.IndexByte(host, '%'); i >= 0 && net.ParseIP(host[:i]) != nil {
			// A zone names an interface of one host; other nodes have
			// their own interfaces, if any of that name.
			return "", invalidf(field, "%q: IPv6 zones (%s) are not allowed: register an address "+
				"other nodes can dial", addr, host[i:])
		}
		if nonASCII(host) {
			return "", invalidf(field, "%q: host %q is not ASCII: register an internationalised "+
				"domain name in its punycode (xn--) form", addr, host)
		}
		if reason := checkDNSName(host); reason != "" {
			return "", invalidf(field, "%q: host %q is neither an IP address nor a DNS name: %s", addr, host, reason)
		}
		host = strings.ToLower(host)
	} else {
		host = ip.String()
	}
	n, err := strconv.ParseUint(port, 10, 16)
	if err != nil || n == 0 {
		return "", invalidf(field, "%q: port must be a number from 1 to 65535", addr)
	}
	return net.JoinHostPort(host, strconv.FormatUint(n, 10)), nil
}

// nonASCII reports whether s holds a byte outside ASCII.
func nonASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return true
		}
	}
	return false
}

// checkDNSName returns why name is not a DNS host name (RFC 1123: labels
// of letters, digits and '-', neither starting nor ending with '-', 1-63
// characters each, 253 in all, and an optional final dot), or "".
func checkDNSName(name string) string {
	name = strings.TrimSuffix(name, ".")
	if len(name) > 253 {
		return fmt.Sprintf("%d characters, more than 253", len(name))
	}
	allDigits := true
	for label := range strings.SplitSeq(name, ".") {
		switch {
		case label == "":
			return "it has an empty label"
		case len(label) > 63:
			return fmt.Sprintf("label %q has %d characters, more than 63", label, len(label))
		case label[0] == '-' || label[len(label)-1] == '-':
			return fmt.Sprintf("label %q starts or ends with '-'", label)
		}
		for _, c := range label {
			if !isDNSChar(c) {
				return fmt.Sprintf("character %q is not a letter, digit, '-' or '.'", c)
			}
			allDigits = allDigits && c >= '0' && c <= '9'
		}
	}
	if allDigits {
		// A name of numbers alone is read as an IPv4 address.
		return "it is made of numbers, like an IPv4 address, but is not one"
	}
	return ""
}

func isDNSChar(c rune) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-'
}

// signingCertificate checks that data holds a signing certificate issued by
// the trust anchors to member m, and returns it.
func (r *Registry) signingCertificate(m id.Member, data []byte, now time.Time) (*x509.Certificate, error) {
	const field = "signing_certificate"
	if len(data) == 0 {
		return nil, invalidf(field, "must not be empty")
	}
	certs, err := sign.ParseCertificates(data)
	if err != nil {
		return nil, invalidf(field, "%v", err)
	}
	leaf := certs[0]
	if err := sign.VerifyCertificate(leaf, certs[1:], r.pool, now); err != nil {
		return nil, invalidf(field, "%v", err)
	}
	if len(leaf.URIs) == 0 {
		return nil, invalidf(field, "has no URI SAN naming the member")
	}
	owner, err := id.MemberFromURI(leaf.URIs[0])
	if err != nil {
		return nil, invalidf(field, "%v", err)
	}
	if owner != m {
		return nil, invalidf(field, "issued to member %s, not %s", owner, m)
	}
	return leaf, nil
}

// sortedSet returns the distinct values of ss in order, failing, with the
// value's index, on one that fault finds wrong.
func sortedSet(field string, ss []string, fault func(string) string) ([]string, error) {
	out := make([]string, 0, len(ss))
	for i, s := range ss {
		if reason := fault(s); reason != "" {
			return nil, invalidf(fmt.Sprintf("%s[%d]", field, i), "%s", reason)
		}
		out = append(out, s)
	}
	slices.Sort(out)
	return slices.Compact(out), nil
}
