package gconf

import (
	"crypto/sha256"
	"crypto/x509"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/ketnoi/ketnoi/internal/id"
	"github.com/ketnoi/ketnoi/internal/sign"
	registryv1 "github.com/ketnoi/ketnoi/proto/ketnoi/registry/v1"
)

// View is a verified configuration indexed for the lookups an exchange
// makes. A View is immutable and safe for concurrent use.
type View struct {
	Config *registryv1.GlobalConfiguration

	members  map[string]*registryv1.Member
	certs    map[[32]byte]signingCert
	nodes    map[string]*registryv1.Node
	byMember map[string][]*registryv1.Node
	services map[string]*registryv1.Service
	byName   map[string][]*registryv1.Service
	grants   map[string][]*registryv1.Grant // by service id
}

type signingCert struct {
	cert   *x509.Certificate
	member string
}

// NewView indexes cfg. Signing certificates that do not parse, or whose
// URI SAN names another member than the one they are listed under, are
// skipped: they can then never verify a signature.
func NewView(cfg *registryv1.GlobalConfiguration) *View {
	return newView(cfg, nil, time.Time{})
}

// NewTrustedView is NewView that also skips signing certificates that do
// not chain to roots at time now (expired, or issued by another CA).
func NewTrustedView(cfg *registryv1.GlobalConfiguration, roots *x509.CertPool, now time.Time) *View {
	return newView(cfg, roots, now)
}

func newView(cfg *registryv1.GlobalConfiguration, roots *x509.CertPool, now time.Time) *View {
	v := &View{
		Config:   cfg,
		members:  map[string]*registryv1.Member{},
		certs:    map[[32]byte]signingCert{},
		nodes:    map[string]*registryv1.Node{},
		byMember: map[string][]*registryv1.Node{},
		services: map[string]*registryv1.Service{},
		byName:   map[string][]*registryv1.Service{},
		grants:   map[string][]*registryv1.Grant{},
	}
	for _, m := range cfg.GetMembers() {
		v.members[m.GetId()] = m
		for _, der := range m.GetSigningCertificates() {
			c, err := x509.ParseCertificate(der)
			if err != nil || !namesMember(c, m.GetId()) {
				continue
			}
			if roots != nil && sign.VerifyCertificate(c, nil, roots, now) != nil {
				continue
			}
			v.certs[sha256.Sum256(der)] = signingCert{cert: c, member: m.GetId()}
		}
	}
	for _, n := range cfg.GetNodes() {
		v.nodes[n.GetSpiffeId()] = n
		v.byMember[n.GetMember()] = append(v.byMember[n.GetMember()], n)
	}
	for _, s := range cfg.GetServices() {
		v.services[s.GetId()] = s
		v.byName[s.GetGrpcService()] = append(v.byName[s.GetGrpcService()], s)
	}
	for _, g := range cfg.GetGrants() {
		v.grants[g.GetService()] = append(v.grants[g.GetService()], g)
	}
	return v
}

// Version returns the configuration version.
func (v *View) Version() uint64 { return v.Config.GetVersion() }

// ExpiresAt returns the configuration's expiry.
func (v *View) ExpiresAt() time.Time { return v.Config.GetExpiresAt().AsTime() }

// Expired reports whether the configuration may no longer be used at now.
func (v *View) Expired(now time.Time) bool { return !now.Before(v.ExpiresAt()) }

// Member returns a registered member.
func (v *View) Member(memberID string) (*registryv1.Member, bool) {
	m, ok := v.members[memberID]
	return m, ok
}

// HasClient reports whether client (a member or subsystem) is registered.
func (v *View) HasClient(c id.Client) bool {
	m, ok := v.members[c.Member.String()]
	if !ok {
		return false
	}
	return c.Subsystem == "" || slices.Contains(m.GetSubsystems(), c.Subsystem)
}

// SigningCertificate returns the registered signing certificate with the
// given SHA-256 and the member it belongs to.
func (v *View) SigningCertificate(sum []byte) (*x509.Certificate, string, bool) {
	if len(sum) != sha256.Size {
		return nil, "", false
	}
	sc, ok := v.certs[[32]byte(sum)]
	return sc.cert, sc.member, ok
}

// Node returns a registered node by SPIFFE ID.
func (v *View) Node(spiffeID string) (*registryv1.Node, bool) {
	n, ok := v.nodes[spiffeID]
	return n, ok
}

// NodesOf returns the nodes of a member.
func (v *View) NodesOf(memberID string) []*registryv1.Node { return v.byMember[memberID] }

// Service returns a service by its full identifier.
func (v *View) Service(serviceID string) (*registryv1.Service, bool) {
	s, ok := v.services[serviceID]
	return s, ok
}

// ServicesNamed returns every service offering the gRPC service name.
func (v *View) ServicesNamed(grpcService string) []*registryv1.Service { return v.byName[grpcService] }

// Method returns a method of a service.
func Method(s *registryv1.Service, name string) (*registryv1.Method, bool) {
	for _, m := range s.GetMethods() {
		if m.GetName() == name {
			return m, true
		}
	}
	return nil, false
}

// ErrNoGrant is wrapped by Authorize when no grant allows a call.
var ErrNoGrant = errors.New("no grant")

// Authorize returns the grant that allows client to call method of service
// for purpose at time now. A grant to a member covers its subsystems.
func (v *View) Authorize(client id.Client, serviceID, method, purpose string, now time.Time) (*registryv1.Grant, error) {
	for _, g := range v.grants[serviceID] {
		if g.GetClient() != client.String() && g.GetClient() != client.Member.String() {
			continue
		}
		if len(g.GetMethods()) > 0 && !slices.Contains(g.GetMethods(), method) {
			continue
		}
		if len(g.GetPurposes()) > 0 && !slices.Contains(g.GetPurposes(), purpose) {
			continue
		}
		if g.GetExpiresAt() != nil && !now.Before(g.GetExpiresAt().AsTime()) {
			continue
		}
		return g, nil
	}
	if purpose == "" {
		return nil, fmt.Errorf("%w allows %s to call %s/%s", ErrNoGrant, client, serviceID, method)
	}
	return nil, fmt.Errorf("%w allows %s to call %s/%s for purpose %q", ErrNoGrant, client, serviceID, method, purpose)
}

// namesMember reports whether a signing certificate's URI SAN names member.
func namesMember(c *x509.Certificate, member string) bool {
	if len(c.URIs) != 1 {
		return false
	}
	m, err := id.MemberFromURI(c.URIs[0])
	return err == nil && m.String() == member
}
