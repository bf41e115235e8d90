package registry

import (
	"context"
	"log/slog"
	"slices"
	"time"

	bolt "go.etcd.io/bbolt"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/ketnoi/ketnoi/internal/id"
	"github.com/ketnoi/ketnoi/internal/logging"
	registryv1 "github.com/ketnoi/ketnoi/proto/ketnoi/registry/v1"
)

// adminServer applies operators' changes. Each method validates its request,
// changes the store and publishes a new configuration version in one
// transaction; an update that asks for what is stored publishes nothing
// (see changeIf).
type adminServer struct {
	registryv1.UnimplementedAdminServiceServer
	r *Registry
}

// logChange records an accepted change with the operator who made it.
func (r *Registry) logChange(ctx context.Context, what string, version uint64) {
	r.log.InfoContext(ctx, "configuration changed",
		slog.String(logging.KeyReason, what),
		slog.Uint64(logging.KeyVersion, version),
		slog.String(logging.KeyPeer, callerFrom(ctx).String()))
}

// loadMember returns a registered member, or NotFound.
func loadMember(tx *bolt.Tx, m id.Member) (*registryv1.Member, error) {
	stored := &registryv1.Member{}
	ok, err := getProto(tx.Bucket(bucketMembers), []byte(m.String()), stored)
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, status.Errorf(codes.NotFound, "member %s is not registered", m)
	}
	return stored, nil
}

// requireClient checks that a member, or a subsystem of one, is registered.
func requireClient(tx *bolt.Tx, c id.Client) error {
	m, err := loadMember(tx, c.Member)
	if err != nil {
		return err
	}
	if c.Subsystem != "" && !slices.Contains(m.GetSubsystems(), c.Subsystem) {
		return status.Errorf(codes.NotFound, "subsystem %s is not registered", c)
	}
	return nil
}

// AddMember registers a member with its signing certificate.
func (s *adminServer) AddMember(
	ctx context.Context,
	req *registryv1.AddMemberRequest,
) (*registryv1.AddMemberResponse, error) {
	m, err := s.r.parseMember("member_id", req.GetMemberId(), adding)
	if err != nil {
		return nil, err
	}
	name, err := text("name", req.GetName(), maxNameRunes)
	if err != nil {
		return nil, err
	}
	cert, err := s.r.signingCertificate(m, req.GetSigningCertificate(), time.Now())
	if err != nil {
		return nil, err
	}
	member := &registryv1.Member{Id: m.String(), Name: name, SigningCertificates: [][]byte{cert.Raw}}

	version, err := s.r.change(func(tx *bolt.Tx, _ time.Time) error {
		b := tx.Bucket(bucketMembers)
		if b.Get([]byte(member.Id)) != nil {
			return status.Errorf(codes.AlreadyExists, "member %s is already registered", m)
		}
		return putProto(b, []byte(member.Id), member)
	})
	if err != nil {
		return nil, s.r.toStatus(ctx, "add member", err)
	}
	s.r.logChange(ctx, "add member "+member.Id, version)
	return &registryv1.AddMemberResponse{Member: member, Version: version}, nil
}

// AddSubsystem registers a subsystem of a registered member.
func (s *adminServer) AddSubsystem(
	ctx context.Context,
	req *registryv1.AddSubsystemRequest,
) (*registryv1.AddSubsystemResponse, error) {
	c, err := s.r.parseClient("subsystem_id", req.GetSubsystemId(), true, adding)
	if err != nil {
		return nil, err
	}

	version, err := s.r.change(func(tx *bolt.Tx, _ time.Time) error {
		m, err := loadMember(tx, c.Member)
		if err != nil {
			return err
		}
		if slices.Contains(m.Subsystems, c.Subsystem) {
			return status.Errorf(codes.AlreadyExists, "subsystem %s is already registered", c)
		}
		m.Subsystems = append(m.Subsystems, c.Subsystem)
		slices.Sort(m.Subsystems)
		return putProto(tx.Bucket(bucketMembers), []byte(m.Id), m)
	})
	if err != nil {
		return nil, s.r.toStatus(ctx, "add subsystem", err)
	}
	s.r.logChange(ctx, "add subsystem "+c.String(), version)
	return &registryv1.AddSubsystemResponse{Version: version}, nil
}

// AddNode registers a security-server node of a registered member. A node
// removed before may read the configuration again (see refuseRemoved).
func (s *adminServer) AddNode(
	ctx context.Context,
	req *registryv1.AddNodeRequest,
) (*registryv1.AddNodeResponse, error) {
	sid, m, err := s.r.parseNode("spiffe_id", req.GetSpiffeId(), adding)
	if err != nil {
		return nil, err
	}
	addr, err := normAddress("address", req.GetAddress())
	if err != nil {
		return nil, err
	}
	node := &registryv1.Node{SpiffeId: sid.String(), Member: m.String(), Address: addr}

	version, err := s.r.change(func(tx *bolt.Tx, _ time.Time) error {
		if _, err := loadMember(tx, m); err != nil {
			return err
		}
		b := tx.Bucket(bucketNodes)
		if b.Get([]byte(node.SpiffeId)) != nil {
			return status.Errorf(codes.AlreadyExists, "node %s is already registered", sid)
		}
		if err := checkAddressFree(tx, sid, addr); err != nil {
			return err
		}
		if err := forgetRemoved(tx, sid); err != nil {
			return err
		}
		return putProto(b, []byte(node.SpiffeId), node)
	})
	if err != nil {
		return nil, s.r.toStatus(ctx, "add node", err)
	}
	s.r.removed.forget(sid)
	s.r.logChange(ctx, "add node "+node.SpiffeId, version)
	return &registryv1.AddNodeResponse{Node: node, Version: version}, nil
}
