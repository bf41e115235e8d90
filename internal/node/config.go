package node

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/ketnoi/ketnoi/internal/id"
)

// Config is a node's configuration file. Relative paths are resolved
// against the file's directory.
type Config struct {
	// Instance identifier, "VN".
	Instance string `yaml:"instance"`
	// SPIFFE trust domain, "vn.ketnoi".
	TrustDomain string `yaml:"trust_domain"`
	// Member that owns the node, "VN/NN/000.00.00.G22".
	Member string `yaml:"member"`
	// Node name, the last segment of the node's SPIFFE ID.
	Name string `yaml:"name"`
	// DataDir holds evidence.db and state.db.
	DataDir string `yaml:"data_dir"`

	// Registry is the anchor: where the registry listens.
	Registry struct {
		Address string `yaml:"address"`
	} `yaml:"registry"`

	// TLS holds the node's X.509-SVID and the trust bundle.
	TLS struct {
		Cert   string `yaml:"cert"`
		Key    string `yaml:"key"`
		Bundle string `yaml:"bundle"`
	} `yaml:"tls"`

	// Signing holds the member's message-signing certificate and key.
	Signing struct {
		Cert string `yaml:"cert"`
		Key  string `yaml:"key"`
	} `yaml:"signing"`

	// Federation is the endpoint other nodes call.
	Federation struct {
		Listen string `yaml:"listen"`
	} `yaml:"federation"`

	// Local endpoints for the agency's applications, each bound to the
	// subsystem that callers on it speak for.
	Local []LocalEndpoint `yaml:"local"`

	// Admin is an optional loopback endpoint for operators: health and the
	// evidence service (trace and verify of the live log).
	Admin struct {
		Listen string `yaml:"listen"`
	} `yaml:"admin"`

	// Backends serve the services this node provides.
	Backends []Backend `yaml:"backends"`

	// MaxMessageBytes limits one message in either direction; at most
	// MaxMaxMessageBytes.
	MaxMessageBytes int `yaml:"max_message_bytes"`
	// ClockSkew is how far a peer's message time may be from this node's.
	ClockSkew time.Duration `yaml:"clock_skew"`
	// DeadlineMargin is taken off the caller's remaining deadline before a
	// provider node calls its backend.
	DeadlineMargin time.Duration `yaml:"deadline_margin"`
	// EvidenceOrder is "strict" (default): a message moves on only once its
	// record is durable. With "overlap" a stream's first request leaves
	// while its record commits, and a unary call's request record is
	// written in the same commit as its response record; in both cases
	// nothing is answered before every record of the exchange is durable.
	// A crash can then lose the record of a request that was never
	// answered (a backend may still have acted on it).
	EvidenceOrder string `yaml:"evidence_order"`

	// Batching lets outgoing messages wait for more before they are signed
	// when many exchanges are in progress, so that one signature (and one
	// verification at the peer, one commit in each log) covers several.
	Batching struct {
		// Delay bounds the wait; 0 turns waiting off. Unset means
		// DefaultBatchDelay.
		Delay *time.Duration `yaml:"delay"`
		// MinActive is how many exchanges must be in progress on the node
		// before anything waits; unset or 0 means DefaultBatchMinActive.
		MinActive int `yaml:"min_active"`
	} `yaml:"batching"`
}

// Evidence orders.
const (
	EvidenceStrict  = "strict"
	EvidenceOverlap = "overlap"
)

// LocalEndpoint is a listener for applications of one subsystem.
type LocalEndpoint struct {
	Listen string `yaml:"listen"`
	Client string `yaml:"client"`
}

// Backend maps a provided service to the address of its gRPC server.
type Backend struct {
	Service string `yaml:"service"`
	Address string `yaml:"address"`
}

// MaxMaxMessageBytes is the largest max_message_bytes a node accepts.
// gRPC frames a message with a 32-bit length, and grpc-go keeps sizes in
// an int32, so a limit must leave room below 2 GiB for the signed header
// a frame between nodes adds; every message is also held whole in memory
// by both nodes, hashed and signed before it moves on, and its signed
// header, whose metadata and status count against the limit, is stored
// in the evidence log, which the ketnoi CLI reads record by record.
// 64 MiB is far above what a message of a data exchange needs; larger
// transfers belong in a stream of smaller messages, which a node passes
// on without holding more than a few of them.
const MaxMaxMessageBytes = 64 << 20

// Defaults.
const (
	DefaultMaxMessageBytes = 4 << 20
	DefaultClockSkew       = 2 * time.Minute
	DefaultDeadlineMargin  = 5 * time.Millisecond
	DefaultBatchDelay      = time.Millisecond
	DefaultBatchMinActive  = 8
)

// LoadConfig reads and validates a YAML configuration file.
func LoadConfig(path string) (*Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	c := &Config{}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true) // a misspelt key must not be silently ignored
	if err := dec.Decode(c); err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("parse config %s: %w", path, yamlError(b, err))
	}
	base := filepath.Dir(path)
	for _, p := range []*string{&c.DataDir, &c.TLS.Cert, &c.TLS.Key, &c.TLS.Bundle, &c.Signing.Cert, &c.Signing.Key} {
		if *p != "" && !filepath.IsAbs(*p) {
			*p = filepath.Join(base, *p)
		}
	}
	if err := c.validate(); err != nil {
		return nil, fmt.Errorf("config %s: %w", path, err)
	}
	return c, nil
}

func (c *Config) validate() error {
	if c.Instance == "" {
		c.Instance = "VN"
	}
	if c.TrustDomain == "" {
		c.TrustDomain = "vn.ketnoi"
	}
	if c.MaxMessageBytes < 0 || c.ClockSkew < 0 || c.DeadlineMargin < 0 {
		return errors.New("max_message_bytes, clock_skew and deadline_margin must not be negative")
	}
	if c.MaxMessageBytes > MaxMaxMessageBytes {
		return fmt.Errorf("max_message_bytes: %d is over the maximum of %d (64 MiB); send larger data as a stream",
			c.MaxMessageBytes, MaxMaxMessageBytes)
	}
	if c.MaxMessageBytes == 0 {
		c.MaxMessageBytes = DefaultMaxMessageBytes
	}
	if c.ClockSkew == 0 {
		c.ClockSkew = DefaultClockSkew
	}
	if c.DeadlineMargin == 0 {
		c.DeadlineMargin = DefaultDeadlineMargin
	}
	if c.Batching.Delay == nil {
		d := DefaultBatchDelay
		c.Batching.Delay = &d
	}
	if *c.Batching.Delay < 0 || *c.Batching.Delay > time.Second || c.Batching.MinActive < 0 {
		return fmt.Errorf("batching: delay %s must be between 0 and 1s and min_active %d not negative",
			*c.Batching.Delay, c.Batching.MinActive)
	}
	if c.Batching.MinActive == 0 {
		c.Batching.MinActive = DefaultBatchMinActive
	}
	switch c.EvidenceOrder {
	case "":
		c.EvidenceOrder = EvidenceStrict
	case EvidenceStrict, EvidenceOverlap:
	default:
		return fmt.Errorf("evidence_order: %q, want strict or overlap", c.EvidenceOrder)
	}
	m, err := id.ParseMember(c.Member)
	if err != nil {
		return fmt.Errorf("member: %w", err)
	}
	if m.Instance != c.Instance {
		return fmt.Errorf("member: %s is not of instance %s", c.Member, c.Instance)
	}
	if !id.ValidNodeName(c.Name) {
		return fmt.Errorf("name: %q must be 1-64 of a-z 0-9 _ -", c.Name)
	}
	required := map[string]string{
		"data_dir": c.DataDir, "registry.address": c.Registry.Address,
		"tls.cert": c.TLS.Cert, "tls.key": c.TLS.Key, "tls.bundle": c.TLS.Bundle,
		"signing.cert": c.Signing.Cert, "signing.key": c.Signing.Key,
		"federation.listen": c.Federation.Listen,
	}
	for _, k := range []string{"data_dir", "registry.address", "tls.cert", "tls.key", "tls.bundle",
		"signing.cert", "signing.key", "federation.listen"} {
		if required[k] == "" {
			return fmt.Errorf("%s: required", k)
		}
	}
	for i, l := range c.Local {
		cl, err := id.ParseClient(l.Client)
		if err != nil {
			return fmt.Errorf("local[%d].client: %w", i, err)
		}
		if cl.Member != m {
			return fmt.Errorf("local[%d].client: %s is not a client of member %s", i, l.Client, c.Member)
		}
		if err := loopback(l.Listen, "local endpoints"); err != nil {
			return fmt.Errorf("local[%d].listen: %w", i, err)
		}
	}
	if c.Admin.Listen != "" {
		if err := loopback(c.Admin.Listen, "the admin endpoint"); err != nil {
			return fmt.Errorf("admin.listen: %w", err)
		}
	}
	for i, b := range c.Backends {
		s, err := id.ParseService(b.Service)
		if err != nil {
			return fmt.Errorf("backends[%d].service: %w", i, err)
		}
		if s.Provider.Member != m {
			return fmt.Errorf("backends[%d].service: %s is not a service of member %s", i, b.Service, c.Member)
		}
		if _, _, err := net.SplitHostPort(b.Address); err != nil {
			return fmt.Errorf("backends[%d].address: %w", i, err)
		}
	}
	return nil
}

// loopback accepts only listeners on loopback addresses: a local endpoint
// trusts its callers to speak for its subsystem, and the admin endpoint
// serves the evidence log to anyone who connects, so neither may face a
// network. what names the endpoint in the error.
func loopback(addr, what string) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return err
	}
	if host == "localhost" {
		return nil
	}
	ip := net.ParseIP(host)
	if ip == nil || !ip.IsLoopback() {
		return fmt.Errorf("%s must listen on a loopback address, not %s", what, host)
	}
	return nil
}
