package node

import (
	"net"
	"sync"

	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc/credentials"
)

// inbound keeps, by peer SPIFFE ID, the federation connections other nodes
// opened to this one, so that a node retired from the global configuration
// loses the connections it holds and not only new ones. Its calls on them
// would be refused anyway (PEER_MISMATCH), but a retired node keeping a
// live, keepalive-fed connection into an agency is not what an operator
// who removed it expects.
type inbound struct {
	mu    sync.Mutex
	conns map[string]map[*inboundConn]struct{}
}

func newInbound() *inbound {
	return &inbound{conns: map[string]map[*inboundConn]struct{}{}}
}

// track wraps server credentials so that every connection they accept is
// kept by its peer's SPIFFE ID until it closes.
func (in *inbound) track(creds credentials.TransportCredentials) credentials.TransportCredentials {
	return &trackedCreds{TransportCredentials: creds, in: in}
}

// retain closes the connections of every peer keep refuses; gRPC then ends
// the calls on them as if the peer had gone away.
func (in *inbound) retain(keep func(peer string) bool) {
	in.mu.Lock()
	defer in.mu.Unlock()
	for peer, set := range in.conns {
		if keep(peer) {
			continue
		}
		for c := range set {
			// The connection's own Close finds it gone from the set.
			c.Conn.Close()
		}
		delete(in.conns, peer)
	}
}

// count returns how many tracked connections peer has open.
func (in *inbound) count(peer string) int {
	in.mu.Lock()
	defer in.mu.Unlock()
	return len(in.conns[peer])
}

func (in *inbound) add(c *inboundConn) {
	in.mu.Lock()
	defer in.mu.Unlock()
	set := in.conns[c.peer]
	if set == nil {
		set = map[*inboundConn]struct{}{}
		in.conns[c.peer] = set
	}
	set[c] = struct{}{}
}

func (in *inbound) remove(c *inboundConn) {
	in.mu.Lock()
	defer in.mu.Unlock()
	if set := in.conns[c.peer]; set != nil {
		delete(set, c)
		if len(set) == 0 {
			delete(in.conns, c.peer)
		}
	}
}

// trackedCreds is the credentials.TransportCredentials of inbound.track.
type trackedCreds struct {
	credentials.TransportCredentials
	in *inbound
}

func (c *trackedCreds) ServerHandshake(raw net.Conn) (net.Conn, credentials.AuthInfo, error) {
	conn, info, err := c.TransportCredentials.ServerHandshake(raw)
	if err != nil {
		return conn, info, err
	}
	tls, ok := info.(credentials.TLSInfo)
	if !ok || len(tls.State.PeerCertificates) == 0 {
		return conn, info, nil
	}
	id, err := x509svid.IDFromCert(tls.State.PeerCertificates[0])
	if err != nil {
		return conn, info, nil
	}
	tc := &inboundConn{Conn: conn, in: c.in, peer: id.String()}
	c.in.add(tc)
	return tc, info, nil
}

// Clone keeps the clone's connections in the same set.
func (c *trackedCreds) Clone() credentials.TransportCredentials {
	return &trackedCreds{TransportCredentials: c.TransportCredentials.Clone(), in: c.in}
}

// inboundConn is a tracked connection; closing it forgets it.
type inboundConn struct {
	net.Conn
	in   *inbound
	peer string
	once sync.Once
}

func (c *inboundConn) Close() error {
	c.once.Do(func() { c.in.remove(c) })
	return c.Conn.Close()
}
