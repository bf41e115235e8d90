// Package id parses and formats ketnoi identifiers: members, clients
// (members or their subsystems), services, and the SPIFFE IDs of registry,
// nodes and operators.
//
// Identifiers follow the instance/class/code scheme of X-Road, with member
// codes taken from the agency electronic identifiers of QCVN 102:2016, for
// example "VN/NN/000.00.00.G22".
package id

import (
	"errors"
	"fmt"
	"net/url"
	"strings"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// ErrMalformed is wrapped by every parse error of this package.
var ErrMalformed = errors.New("malformed identifier")

// The grammar of identifier parts. Nodes parse identifiers on every
// exchange, so the parts are checked byte by byte rather than with
// regular expressions (which cost about a twentieth of a consumer node's
// CPU); the tests hold the equivalent expressions.
func upper(b byte) bool { return 'A' <= b && b <= 'Z' }
func lower(b byte) bool { return 'a' <= b && b <= 'z' }
func digit(b byte) bool { return '0' <= b && b <= '9' }

// token reports whether s has 1 to maxLen bytes, the first accepted by
// first and the others by rest.
func token(s string, maxLen int, first, rest func(byte) bool) bool {
	if len(s) == 0 || len(s) > maxLen || !first(s[0]) {
		return false
	}
	for i := 1; i < len(s); i++ {
		if !rest(s[i]) {
			return false
		}
	}
	return true
}

func validInstance(s string) bool {
	return token(s, 16, upper, func(b byte) bool { return upper(b) || digit(b) || b == '-' })
}

func validClass(s string) bool {
	return token(s, 16, upper, func(b byte) bool { return upper(b) || digit(b) })
}

func validCode(s string) bool {
	code := func(b byte) bool { return upper(b) || digit(b) || b == '.' }
	return token(s, 35, code, code)
}

func validLowerName(s string) bool {
	return token(s, 64, func(b byte) bool { return lower(b) || digit(b) },
		func(b byte) bool { return lower(b) || digit(b) || b == '_' || b == '-' })
}

func validIdent(s string) bool {
	return token(s, len(s), func(b byte) bool { return upper(b) || lower(b) || b == '_' },
		func(b byte) bool { return upper(b) || lower(b) || digit(b) || b == '_' })
}

// Member identifies an organisation: instance, member class and member code.
type Member struct {
	Instance string
	Class    string
	Code     string
}

// String formats the member as "VN/NN/000.00.00.G22".
func (m Member) String() string { return m.Instance + "/" + m.Class + "/" + m.Code }

// IsZero reports whether m is the zero Member.
func (m Member) IsZero() bool { return m == Member{} }

// Client identifies a caller: a member, or one of its subsystems.
type Client struct {
	Member
	Subsystem string // empty when the client is the member itself
}

// String formats the client as "VN/NN/000.00.00.G22" or
// "VN/NN/000.00.00.G22/vanban".
func (c Client) String() string {
	if c.Subsystem == "" {
		return c.Member.String()
	}
	return c.Member.String() + "/" + c.Subsystem
}

// Service identifies a gRPC service offered by a subsystem.
type Service struct {
	Provider Client // always has a subsystem
	Name     string // fully qualified gRPC service name
}

// String formats the service as
// "VN/NN/000.00.00.G09/dvhc/vn.gov.dvhc.v1.AdminUnitService".
func (s Service) String() string { return s.Provider.String() + "/" + s.Name }

func malformed(kind, s, why string) error {
	return fmt.Errorf("%w: %s %q: %s", ErrMalformed, kind, s, why)
}

func parseMemberParts(kind, s string, parts []string) (Member, error) {
	m := Member{Instance: parts[0], Class: parts[1], Code: parts[2]}
	switch {
	case !validInstance(m.Instance):
		return Member{}, malformed(kind, s, "instance must be 1-16 of A-Z 0-9 - starting with a letter")
	case !validClass(m.Class):
		return Member{}, malformed(kind, s, "member class must be 1-16 of A-Z 0-9 starting with a letter")
	case !validCode(m.Code):
		return Member{}, malformed(kind, s, "member code must be 1-35 of 0-9 A-Z .")
	}
	return m, nil
}

// ParseMember parses "INSTANCE/CLASS/CODE".
func ParseMember(s string) (Member, error) {
	parts := strings.Split(s, "/")
	if len(parts) != 3 {
		return Member{}, malformed("member", s, "want INSTANCE/CLASS/CODE")
	}
	return parseMemberParts("member", s, parts)
}

// ParseClient parses "INSTANCE/CLASS/CODE" or "INSTANCE/CLASS/CODE/SUBSYSTEM".
func ParseClient(s string) (Client, error) {
	parts := strings.Split(s, "/")
	if len(parts) != 3 && len(parts) != 4 {
		return Client{}, malformed("client", s, "want INSTANCE/CLASS/CODE[/SUBSYSTEM]")
	}
	m, err := parseMemberParts("client", s, parts[:3])
	if err != nil {
		return Client{}, err
	}
	c := Client{Member: m}
	if len(parts) == 4 {
		if !validLowerName(parts[3]) {
			return Client{}, malformed("client", s, subsystemGrammar)
		}
		c.Subsystem = parts[3]
	}
	return c, nil
}

// subsystemGrammar says what a subsystem name is made of.
const subsystemGrammar = "subsystem must be 1-64 of a-z 0-9 _ - starting with a letter or digit"

// ParseSubsystem parses "INSTANCE/CLASS/CODE/SUBSYSTEM", a client that
// must name a subsystem. Its errors call the identifier a subsystem.
func ParseSubsystem(s string) (Client, error) {
	parts := strings.Split(s, "/")
	if len(parts) != 4 {
		return Client{}, malformed("subsystem", s, "want INSTANCE/CLASS/CODE/SUBSYSTEM")
	}
	m, err := parseMemberParts("subsystem", s, parts[:3])
	if err != nil {
		return Client{}, err
	}
	if !validLowerName(parts[3]) {
		return Client{}, malformed("subsystem", s, subsystemGrammar)
	}
	return Client{Member: m, Subsystem: parts[3]}, nil
}

// ParseService parses "INSTANCE/CLASS/CODE/SUBSYSTEM/grpc.service.Name".
func ParseService(s string) (Service, error) {
	parts := strings.SplitN(s, "/", 5)
	if len(parts) != 5 {
		return Service{}, malformed("service", s, "want INSTANCE/CLASS/CODE/SUBSYSTEM/package.Service")
	}
	c, err := ParseSubsystem(strings.Join(parts[:4], "/"))
	if err != nil {
		return Service{}, fmt.Errorf("service %q: %w", s, err)
	}
	if !ValidGRPCName(parts[4]) {
		return Service{}, malformed("service", s, "gRPC service name must be a fully qualified name such as pkg.v1.Service")
	}
	return Service{Provider: c, Name: parts[4]}, nil
}

// ValidGRPCName reports whether s is a fully qualified protobuf name.
func ValidGRPCName(s string) bool {
	parts := strings.Split(s, ".")
	if len(parts) < 2 {
		return false
	}
	for _, p := range parts {
		if !validIdent(p) {
			return false
		}
	}
	return true
}

// ValidNodeName reports whether s can name a node.
func ValidNodeName(s string) bool { return validLowerName(s) }

// Registry returns the SPIFFE ID of the registry of a trust domain.
func Registry(td spiffeid.TrustDomain) spiffeid.ID {
	return spiffeid.RequireFromSegments(td, "registry")
}

// Admin returns the SPIFFE ID of an operator.
func Admin(td spiffeid.TrustDomain, name string) (spiffeid.ID, error) {
	if !validLowerName(name) {
		return spiffeid.ID{}, malformed("operator name", name, "must be 1-64 of a-z 0-9 _ -")
	}
	return spiffeid.FromSegments(td, "admin", name)
}

// IsAdmin reports whether id names an operator of td.
func IsAdmin(td spiffeid.TrustDomain, id spiffeid.ID) bool {
	if id.TrustDomain() != td {
		return false
	}
	segs := strings.Split(strings.TrimPrefix(id.Path(), "/"), "/")
	return len(segs) == 2 && segs[0] == "admin"
}

// Node returns the SPIFFE ID of a node of member m:
// "spiffe://vn.ketnoi/node/NN/000.00.00.G22/<name>".
func Node(td spiffeid.TrustDomain, m Member, name string) (spiffeid.ID, error) {
	if !validLowerName(name) {
		return spiffeid.ID{}, malformed("node name", name, "must be 1-64 of a-z 0-9 _ -")
	}
	return spiffeid.FromSegments(td, "node", m.Class, m.Code, name)
}

// ParseNode returns the member and node name encoded in a node SPIFFE ID.
// The instance is not part of the ID; the caller supplies it.
func ParseNode(id spiffeid.ID, instance string) (Member, string, error) {
	segs := strings.Split(strings.TrimPrefix(id.Path(), "/"), "/")
	if len(segs) != 4 || segs[0] != "node" {
		return Member{}, "", malformed("node SPIFFE ID", id.String(), "want spiffe://TD/node/CLASS/CODE/NAME")
	}
	m, err := parseMemberParts("node SPIFFE ID", id.String(), []string{instance, segs[1], segs[2]})
	if err != nil {
		return Member{}, "", err
	}
	if !validLowerName(segs[3]) {
		return Member{}, "", malformed("node SPIFFE ID", id.String(), "node name must be 1-64 of a-z 0-9 _ -")
	}
	return m, segs[3], nil
}

// memberURIPrefix starts the URI SAN of a member signing certificate.
const memberURIPrefix = "urn:ketnoi:member:"

// RegistrySigningURI is the URI SAN of the registry's configuration signing
// certificate.
const RegistrySigningURI = "urn:ketnoi:registry"

// MemberURI returns the URI SAN of m's signing certificate,
// "urn:ketnoi:member:VN/NN/000.00.00.G22".
func MemberURI(m Member) *url.URL {
	u, _ := url.Parse(memberURIPrefix + m.String())
	return u
}

// MemberFromURI parses the URI SAN of a member signing certificate.
func MemberFromURI(u *url.URL) (Member, error) {
	s := u.String()
	if !strings.HasPrefix(s, memberURIPrefix) {
		return Member{}, malformed("member URI", s, "want "+memberURIPrefix+"INSTANCE/CLASS/CODE")
	}
	return ParseMember(strings.TrimPrefix(s, memberURIPrefix))
}
