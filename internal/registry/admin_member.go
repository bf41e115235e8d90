package registry

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"slices"
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
