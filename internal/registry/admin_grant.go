package registry

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	registryv1 "github.com/ketnoi/ketnoi/proto/ketnoi/registry/v1"
)

// grantPrefix starts every grant identifier, "g-<n>".
const grantPrefix = "g-"

// AddGrant allows a registered client to call a registered service, on all
// or some of its methods, for any or some purposes.
func (s *adminServer) AddGrant(
	ctx context.Context,
	req *registryv1.AddGrantRequest,
) (*registryv1.AddGrantResponse, error) {
	client, err := s.r.parseClient("client", req.GetClient(), false, adding)
	if err != nil {
		return nil, err
	}
	svc, err := s.r.parseService("service", req.GetService(), adding)
	if err != nil {
		return nil, err
	}
	methods, err := sortedSet("methods", req.GetMethods(), methodFault)
	if err != nil {
		return nil, err
	}
	purposes, err := sortedSet("purposes", req.GetPurposes(), purposeFault)
	if err != nil {
		return nil, err
	}
	expires := req.GetExpiresAt()
	if expires != nil {
		if err := expires.CheckValid(); err != nil {
			return nil, invalidf("expires_at", "%v", err)
		}
		if !expires.AsTime().After(time.Now()) {
			return nil, invalidf("expires_at", "%s is not in the future", expires.AsTime().Format(time.RFC3339))
		}
	}

	var grant *registryv1.Grant
	version, err := s.r.change(func(tx *bolt.Tx, now time.Time) error {
		if err := requireClient(tx, client); err != nil {
			return err
		}
		service, err := loadService(tx, svc.String())
		if err != nil {
			return err
		}
		if err := checkMethods(service, methods); err != nil {
			return err
		}
		if dup, err := sameGrant(tx, client.String(), svc.String(), methods, purposes); err != nil {
			return err
		} else if dup != "" {
			return status.Errorf(codes.AlreadyExists, "grant %s already allows %s to call %s on the same methods and purposes",
				dup, client, svc)
		}

		meta := tx.Bucket(bucketMeta)
		seq := getUint(meta, keyGrantSeq) + 1
		if err := putUint(meta, keyGrantSeq, seq); err != nil {
			return err
		}
		grant = &registryv1.Grant{
			Id:        grantPrefix + strconv.FormatUint(seq, 10),
			Client:    client.String(),
			Service:   svc.String(),
			Methods:   methods,
			Purposes:  purposes,
			CreatedAt: timestamppb.New(now),
			ExpiresAt: expires,
		}
		return putProto(tx.Bucket(bucketGrants), grantKey(seq), grant)
	})
	if err != nil {
		return nil, s.r.toStatus(ctx, "add grant", err)
	}
	s.r.logChange(ctx, fmt.Sprintf("add grant %s: %s to %s", grant.Id, grant.Client, grant.Service), version)
	return &registryv1.AddGrantResponse{Grant: grant, Version: version}, nil
}

// sameGrant returns the id of a grant with the same client, service,
// methods and purposes, or "". An operator who means to extend a grant's
// validity revokes the old one.
func sameGrant(tx *bolt.Tx, client, service string, methods, purposes []string) (string, error) {
	found := ""
	err := tx.Bucket(bucketGrants).ForEach(func(_, v []byte) error {
		g := &registryv1.Grant{}
		if err := proto.Unmarshal(v, g); err != nil {
			return err
		}
		if g.GetClient() == client && g.GetService() == service &&
			slices.Equal(g.GetMethods(), methods) && slices.Equal(g.GetPurposes(), purposes) {
			found = g.GetId()
		}
		return nil
	})
	return found, err
}

// grantsOf returns the grants of a service in the order of their numbers.
func grantsOf(tx *bolt.Tx, serviceID string) ([]*registryv1.Grant, error) {
	all, err := loadAll(tx.Bucket(bucketGrants), newGrant)
	if err != nil {
		return nil, err
	}
	return slices.DeleteFunc(all, func(g *registryv1.Grant) bool { return g.GetService() != serviceID }), nil
}

// checkMethods checks that the service defines every named method.
func checkMethods(service *registryv1.Service, methods []string) error {
	for _, name := range methods {
		has := slices.ContainsFunc(service.GetMethods(), func(m *registryv1.Method) bool {
			return m.GetName() == name
		})
		if !has {
			return invalidf("methods", "service %s has no method %q", service.GetId(), name)
		}
	}
	return nil
}

// RevokeGrant removes a grant.
func (s *adminServer) RevokeGrant(
	ctx context.Context,
	req *registryv1.RevokeGrantRequest,
) (*registryv1.RevokeGrantResponse, error) {
	gid := req.GetGrantId()
	seq, err := parseGrantID(gid)
	if err != nil {
		return nil, err
	}

	version, err := s.r.change(func(tx *bolt.Tx, _ time.Time) error {
		b := tx.Bucket(bucketGrants)
		if b.Get(grantKey(seq)) == nil {
			return status.Errorf(codes.NotFound, "grant %s does not exist", gid)
		}
		return b.Delete(grantKey(seq))
	})
	if err != nil {
		return nil, s.r.toStatus(ctx, "revoke grant", err)
	}
	s.r.logChange(ctx, "revoke grant "+gid, version)
	return &registryv1.RevokeGrantResponse{Version: version}, nil
}

// parseGrantID returns the number of a grant identifier "g-<n>".
func parseGrantID(gid string) (uint64, error) {
	digits, ok := strings.CutPrefix(gid, grantPrefix)
	seq, err := strconv.ParseUint(digits, 10, 64)
	if !ok || err != nil || seq == 0 || strconv.FormatUint(seq, 10) != digits {
		return 0, invalidf("grant_id", "%q is not a grant identifier (want g-<number>)", gid)
	}
	return seq, nil
}
