package registry

import (
	"context"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	bolt "go.etcd.io/bbolt"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	registryv1 "github.com/ketnoi/ketnoi/proto/ketnoi/registry/v1"
)

// loadNode returns a registered node, or NotFound.
func loadNode(tx *bolt.Tx, sid spiffeid.ID) (*registryv1.Node, error) {
	stored := &registryv1.Node{}
	ok, err := getProto(tx.Bucket(bucketNodes), []byte(sid.String()), stored)
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, status.Errorf(codes.NotFound, "node %s is not registered", sid)
	}
	return stored, nil
}

// UpdateNode moves a registered node to a new federation address. Peers
// key their connections by SPIFFE ID and address, so with the new
// configuration they dial the new address and close the old connection.
func (s *adminServer) UpdateNode(
	ctx context.Context,
	req *registryv1.UpdateNodeRequest,
) (*registryv1.UpdateNodeResponse, error) {
	sid, _, err := s.r.parseNode("spiffe_id", req.GetSpiffeId())
	if err != nil {
		return nil, err
	}
	if err := checkAddress("address", req.GetAddress()); err != nil {
		return nil, err
	}

	var node *registryv1.Node
	version, err := s.r.change(func(tx *bolt.Tx, _ time.Time) error {
		var err error
		if node, err = loadNode(tx, sid); err != nil {
			return err
		}
		node.Address = req.GetAddress()
		return putProto(tx.Bucket(bucketNodes), []byte(node.SpiffeId), node)
	})
	if err != nil {
		return nil, s.r.toStatus(ctx, "update node", err)
	}
	s.r.logChange(ctx, "move node "+node.SpiffeId+" to "+node.Address, version)
	return &registryv1.UpdateNodeResponse{Node: node, Version: version}, nil
}

// RemoveNode removes a registered node. Nothing else in the store names a
// node, so nothing has to go first; peers refuse it at the handshake once
// they hold the new configuration.
func (s *adminServer) RemoveNode(
	ctx context.Context,
	req *registryv1.RemoveNodeRequest,
) (*registryv1.RemoveNodeResponse, error) {
	sid, _, err := s.r.parseNode("spiffe_id", req.GetSpiffeId())
	if err != nil {
		return nil, err
	}

	version, err := s.r.change(func(tx *bolt.Tx, _ time.Time) error {
		if _, err := loadNode(tx, sid); err != nil {
			return err
		}
		return tx.Bucket(bucketNodes).Delete([]byte(sid.String()))
	})
	if err != nil {
		return nil, s.r.toStatus(ctx, "remove node", err)
	}
	s.r.logChange(ctx, "remove node "+sid.String(), version)
	return &registryv1.RemoveNodeResponse{Version: version}, nil
}
