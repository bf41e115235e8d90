package registry

import (
	"context"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	bolt "go.etcd.io/bbolt"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/ketnoi/ketnoi/internal/id"
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
// The address the node already has, in any spelling normAddress takes
// to the same form, is no change: it succeeds and publishes nothing. An
// address another node has is refused.
func (s *adminServer) UpdateNode(
	ctx context.Context,
	req *registryv1.UpdateNodeRequest,
) (*registryv1.UpdateNodeResponse, error) {
	sid, _, err := s.r.parseNode("spiffe_id", req.GetSpiffeId(), changing)
	if err != nil {
		return nil, err
	}
	addr, err := normAddress("address", req.GetAddress())
	if err != nil {
		return nil, err
	}

	var node *registryv1.Node
	version, changed, err := s.r.changeIf(func(tx *bolt.Tx, _ time.Time) error {
		var err error
		if node, err = loadNode(tx, sid); err != nil {
			return err
		}
		if node.Address == addr {
			return errUnchanged
		}
		if err := checkAddressFree(tx, sid, addr); err != nil {
			return err
		}
		node.Address = addr
		return putProto(tx.Bucket(bucketNodes), []byte(node.SpiffeId), node)
	})
	if err != nil {
		return nil, s.r.toStatus(ctx, "update node", err)
	}
	if changed {
		s.r.logChange(ctx, "move node "+node.SpiffeId+" to "+node.Address, version)
	}
	return &registryv1.UpdateNodeResponse{Node: node, Version: version, Unchanged: !changed}, nil
}

// checkAddressFree refuses addr, a normalised address, when a node other
// than sid is registered at it: peers key connections by address too, and
// calls meant for one node would reach the other, which refuses them.
// Addresses stored before they were normalised are compared in their
// normalised form.
func checkAddressFree(tx *bolt.Tx, sid spiffeid.ID, addr string) error {
	nodes, err := loadAll(tx.Bucket(bucketNodes), newNode)
	if err != nil {
		return err
	}
	for _, n := range nodes {
		if n.GetSpiffeId() == sid.String() {
			continue
		}
		other := n.GetAddress()
		if norm, err := normAddress("address", other); err == nil {
			other = norm
		}
		if other == addr {
			return status.Errorf(codes.FailedPrecondition,
				"address %s is the address of node %s already; two nodes cannot share an address",
				addr, n.GetSpiffeId())
		}
	}
	return nil
}

// RemoveNode removes a registered node. Peers refuse it at the handshake
// once they hold the new configuration, and the registry refuses it from
// now on (see refuseRemoved). The last node of a member that still
// provides services or holds grants stays (see checkLastNode).
func (s *adminServer) RemoveNode(
	ctx context.Context,
	req *registryv1.RemoveNodeRequest,
) (*registryv1.RemoveNodeResponse, error) {
	sid, _, err := s.r.parseNode("spiffe_id", req.GetSpiffeId(), changing)
	if err != nil {
		return nil, err
	}

	version, err := s.r.change(func(tx *bolt.Tx, now time.Time) error {
		node, err := loadNode(tx, sid)
		if err != nil {
			return err
		}
		if err := checkLastNode(tx, node); err != nil {
			return err
		}
		if err := tx.Bucket(bucketNodes).Delete([]byte(sid.String())); err != nil {
			return err
		}
		return markRemoved(tx, sid, now)
	})
	if err != nil {
		return nil, s.r.toStatus(ctx, "remove node", err)
	}
	s.r.logChange(ctx, "remove node "+sid.String(), version)
	return &registryv1.RemoveNodeResponse{Version: version}, nil
}

// checkLastNode refuses to remove node when it is the last node of its
// member and the member still provides services or holds grants: with no
// node its services answer no one and its grants serve no one, while every
// node's configuration goes on listing them. Grants other members hold on
// its services depend on those services, which RemoveService keeps while
// grants name them, so the services stand for them here.
func checkLastNode(tx *bolt.Tx, node *registryv1.Node) error {
	member := node.GetMember()
	nodes, err := loadAll(tx.Bucket(bucketNodes), newNode)
	if err != nil {
		return err
	}
	for _, n := range nodes {
		if n.GetMember() == member && n.GetSpiffeId() != node.GetSpiffeId() {
			return nil
		}
	}

	services, err := loadAll(tx.Bucket(bucketServices), newService)
	if err != nil {
		return err
	}
	grants, err := loadAll(tx.Bucket(bucketGrants), newGrant)
	if err != nil {
		return err
	}
	var provides, holds []string
	for _, svc := range services {
		if memberOf(svc.GetProvider()) == member {
			provides = append(provides, svc.GetId())
		}
	}
	for _, g := range grants {
		if memberOf(g.GetClient()) == member {
			holds = append(holds, g.GetId())
		}
	}

	var still, remedy string
	switch {
	case len(provides) > 0 && len(holds) > 0:
		still = "provides services " + strings.Join(provides, ", ") +
			" and holds grants " + strings.Join(holds, ", ")
		remedy = "remove the services and revoke the grants"
	case len(provides) > 0:
		still, remedy = "provides services "+strings.Join(provides, ", "), "remove them"
	case len(holds) > 0:
		still, remedy = "holds grants "+strings.Join(holds, ", "), "revoke them"
	default:
		return nil
	}
	return status.Errorf(codes.FailedPrecondition,
		"node %s is the last node of member %s, which still %s; %s or add another node first",
		node.GetSpiffeId(), member, still, remedy)
}

// memberOf returns the member of a stored client or provider identifier,
// or "" for one that does not parse, which the store never holds.
func memberOf(client string) string {
	c, err := id.ParseClient(client)
	if err != nil {
		return ""
	}
	return c.Member.String()
}
