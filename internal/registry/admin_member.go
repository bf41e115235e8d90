package registry

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"slices"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	registryv1 "github.com/ketnoi/ketnoi/proto/ketnoi/registry/v1"
)

// AddSigningCertificate lists a further signing certificate for a member.
// Nodes accept every listed certificate, so a member rotates its signing
// key by adding the new certificate, switching its nodes to the new key,
// and then removing the old certificate.
func (s *adminServer) AddSigningCertificate(
	ctx context.Context,
	req *registryv1.AddSigningCertificateRequest,
) (*registryv1.AddSigningCertificateResponse, error) {
	m, err := s.r.parseMember("member_id", req.GetMemberId(), changing)
	if err != nil {
		return nil, err
	}
	cert, err := s.r.signingCertificate(m, req.GetSigningCertificate(), time.Now())
	if err != nil {
		return nil, err
	}

	var member *registryv1.Member
	version, err := s.r.change(func(tx *bolt.Tx, _ time.Time) error {
		var err error
		if member, err = loadMember(tx, m); err != nil {
			return err
		}
		if slices.ContainsFunc(member.SigningCertificates, func(der []byte) bool { return bytes.Equal(der, cert.Raw) }) {
			return status.Errorf(codes.AlreadyExists, "member %s already lists signing certificate sha256 %x",
				m, sha256.Sum256(cert.Raw))
		}
		member.SigningCertificates = append(member.SigningCertificates, cert.Raw)
		return putProto(tx.Bucket(bucketMembers), []byte(member.Id), member)
	})
	if err != nil {
		return nil, s.r.toStatus(ctx, "add signing certificate", err)
	}
	s.r.logChange(ctx, fmt.Sprintf("add signing certificate sha256 %x to member %s", sha256.Sum256(cert.Raw), m),
		version)
	return &registryv1.AddSigningCertificateResponse{Member: member, Version: version}, nil
}

// RemoveSigningCertificate takes a certificate off a member's list. The
// last one stays: a member without a certificate could sign nothing, and
// its successor must be listed before nodes switch to it anyway.
func (s *adminServer) RemoveSigningCertificate(
	ctx context.Context,
	req *registryv1.RemoveSigningCertificateRequest,
) (*registryv1.RemoveSigningCertificateResponse, error) {
	m, err := s.r.parseMember("member_id", req.GetMemberId(), changing)
	if err != nil {
		return nil, err
	}
	sum := req.GetCertificateSha256()
	if len(sum) != sha256.Size {
		return nil, invalidf("certificate_sha256", "want %d bytes, got %d", sha256.Size, len(sum))
	}

	var member *registryv1.Member
	version, err := s.r.change(func(tx *bolt.Tx, _ time.Time) error {
		var err error
		if member, err = loadMember(tx, m); err != nil {
			return err
		}
		i := slices.IndexFunc(member.SigningCertificates, func(der []byte) bool {
			d := sha256.Sum256(der)
			return bytes.Equal(d[:], sum)
		})
		if i < 0 {
			return status.Errorf(codes.NotFound, "member %s has no signing certificate with sha256 %x", m, sum)
		}
		if len(member.SigningCertificates) == 1 {
			return status.Errorf(codes.FailedPrecondition,
				"signing certificate sha256 %x is the only one of member %s; add its successor first", sum, m)
		}
		member.SigningCertificates = slices.Delete(member.SigningCertificates, i, i+1)
		return putProto(tx.Bucket(bucketMembers), []byte(member.Id), member)
	})
	if err != nil {
		return nil, s.r.toStatus(ctx, "remove signing certificate", err)
	}
	s.r.logChange(ctx, fmt.Sprintf("remove signing certificate sha256 %x of member %s", sum, m), version)
	return &registryv1.RemoveSigningCertificateResponse{Member: member, Version: version}, nil
}

// UpdateMember changes a registered member's official name. Its
// identifier cannot change: nodes, signatures and evidence records name
// the member by it. The name the member already has is no change: it
// succeeds and publishes nothing.
func (s *adminServer) UpdateMember(
	ctx context.Context,
	req *registryv1.UpdateMemberRequest,
) (*registryv1.UpdateMemberResponse, error) {
	m, err := s.r.parseMember("member_id", req.GetMemberId(), changing)
	if err != nil {
		return nil, err
	}
	name, err := text("name", req.GetName(), maxNameRunes)
	if err != nil {
		return nil, err
	}

	var member *registryv1.Member
	version, changed, err := s.r.changeIf(func(tx *bolt.Tx, _ time.Time) error {
		var err error
		if member, err = loadMember(tx, m); err != nil {
			return err
		}
		if member.Name == name {
			return errUnchanged
		}
		member.Name = name
		return putProto(tx.Bucket(bucketMembers), []byte(member.Id), member)
	})
	if err != nil {
		return nil, s.r.toStatus(ctx, "update member", err)
	}
	if changed {
		s.r.logChange(ctx, "rename member "+member.Id, version)
	}
	return &registryv1.UpdateMemberResponse{Member: member, Version: version, Unchanged: !changed}, nil
}

// RemoveMember removes a registered member and its signing certificates
// once nothing registered depends on it (see memberDependents): nodes
// would then stop accepting its signatures while its nodes, services and
// grants were still published.
func (s *adminServer) RemoveMember(
	ctx context.Context,
	req *registryv1.RemoveMemberRequest,
) (*registryv1.RemoveMemberResponse, error) {
	m, err := s.r.parseMember("member_id", req.GetMemberId(), changing)
	if err != nil {
		return nil, err
	}

	version, err := s.r.change(func(tx *bolt.Tx, _ time.Time) error {
		member, err := loadMember(tx, m)
		if err != nil {
			return err
		}
		if err := memberDependents(tx, member); err != nil {
			return err
		}
		return tx.Bucket(bucketMembers).Delete([]byte(member.Id))
	})
	if err != nil {
		return nil, s.r.toStatus(ctx, "remove member", err)
	}
	s.r.logChange(ctx, "remove member "+m.String(), version)
	return &registryv1.RemoveMemberResponse{Version: version}, nil
}

// memberDependents refuses, naming them, while the member has nodes or
// subsystems, provides services or holds grants. Grants other members
// hold on its services depend on those services, which RemoveService
// keeps while grants name them.
func memberDependents(tx *bolt.Tx, member *registryv1.Member) error {
	mid := member.GetId()
	var nodes, services, grants []string
	all, err := loadAll(tx.Bucket(bucketNodes), newNode)
	if err != nil {
		return err
	}
	for _, n := range all {
		if n.GetMember() == mid {
			nodes = append(nodes, n.GetSpiffeId())
		}
	}
	ofMember := func(client string) bool { return memberOf(client) == mid }
	if services, err = servicesWhere(tx, ofMember); err != nil {
		return err
	}
	if grants, err = grantsWhere(tx, ofMember); err != nil {
		return err
	}
	subsystems := make([]string, 0, len(member.GetSubsystems()))
	for _, sub := range member.GetSubsystems() {
		subsystems = append(subsystems, mid+"/"+sub)
	}
	uses := dependents([]string{"nodes", "subsystems", "services", "grants"},
		[][]string{nodes, subsystems, services, grants})
	if uses == "" {
		return nil
	}
	return status.Errorf(codes.FailedPrecondition,
		"member %s still has %s; revoke the grants and remove the services, subsystems and nodes first", mid, uses)
}

// RemoveSubsystem removes a subsystem that provides no service and holds
// no grant, so that nothing published names a subsystem that is gone.
func (s *adminServer) RemoveSubsystem(
	ctx context.Context,
	req *registryv1.RemoveSubsystemRequest,
) (*registryv1.RemoveSubsystemResponse, error) {
	c, err := s.r.parseClient("subsystem_id", req.GetSubsystemId(), true, changing)
	if err != nil {
		return nil, err
	}

	version, err := s.r.change(func(tx *bolt.Tx, _ time.Time) error {
		member, err := loadMember(tx, c.Member)
		if err != nil {
			return err
		}
		i := slices.Index(member.GetSubsystems(), c.Subsystem)
		if i < 0 {
			return status.Errorf(codes.NotFound, "subsystem %s is not registered", c)
		}
		sub := c.String()
		services, err := servicesWhere(tx, func(provider string) bool { return provider == sub })
		if err != nil {
			return err
		}
		grants, err := grantsWhere(tx, func(client string) bool { return client == sub })
		if err != nil {
			return err
		}
		if uses := dependents([]string{"services", "grants"}, [][]string{services, grants}); uses != "" {
			return status.Errorf(codes.FailedPrecondition,
				"subsystem %s still has %s; revoke the grants and remove the services first", sub, uses)
		}
		member.Subsystems = slices.Delete(member.Subsystems, i, i+1)
		return putProto(tx.Bucket(bucketMembers), []byte(member.Id), member)
	})
	if err != nil {
		return nil, s.r.toStatus(ctx, "remove subsystem", err)
	}
	s.r.logChange(ctx, "remove subsystem "+c.String(), version)
	return &registryv1.RemoveSubsystemResponse{Version: version}, nil
}

// servicesWhere returns the identifiers of the services whose provider
// matches.
func servicesWhere(tx *bolt.Tx, match func(provider string) bool) ([]string, error) {
	all, err := loadAll(tx.Bucket(bucketServices), newService)
	if err != nil {
		return nil, err
	}
	var ids []string
	for _, svc := range all {
		if match(svc.GetProvider()) {
			ids = append(ids, svc.GetId())
		}
	}
	return ids, nil
}

// grantsWhere returns the identifiers of the grants whose client matches,
// in the order of their numbers.
func grantsWhere(tx *bolt.Tx, match func(client string) bool) ([]string, error) {
	all, err := loadAll(tx.Bucket(bucketGrants), newGrant)
	if err != nil {
		return nil, err
	}
	var ids []string
	for _, g := range all {
		if match(g.GetClient()) {
			ids = append(ids, g.GetId())
		}
	}
	return ids, nil
}

// dependents describes the non-empty lists, each after its kind, as
// "nodes a, b; grants g-1", or returns "" when all are empty.
func dependents(kinds []string, lists [][]string) string {
	var parts []string
	for i, l := range lists {
		if len(l) > 0 {
			parts = append(parts, kinds[i]+" "+strings.Join(l, ", "))
		}
	}
	return strings.Join(parts, "; ")
}
