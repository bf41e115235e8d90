package registry

import (
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"regexp"
	"slices"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/ketnoi/ketnoi/internal/id"
	"github.com/ketnoi/ketnoi/internal/sign"
)

// DefaultClasses are the member classes of an instance unless configured
// otherwise: Party bodies, state bodies, and the Fatherland Front with the
// socio-political organisations.
var DefaultClasses = []string{"DANG", "NN", "MTTQ"}

// DefaultConfigTTL is how long a published configuration stays valid unless
// configured otherwise.
const DefaultConfigTTL = 24 * time.Hour

// MaxConfigTTL bounds ConfigTTL: a node cut off from the registry goes on
// applying the grants, nodes and signing certificates removed since its
// last update for up to the TTL, and a month is longer than any
// revocation should wait.
const MaxConfigTTL = 30 * 24 * time.Hour

// MaxResumeAbove is the highest ResumeAbove accepted: it leaves 2^32
// configuration versions to publish, each change and each re-issue using
// one, which lasts longer than any registry runs. A higher value is a
// mistake, not a version nodes hold: a registry near the last version
// could soon publish nothing more, and no change, revocations included,
// would reach the nodes.
const MaxResumeAbove = math.MaxUint64 - 1<<32

var (
	instanceRE = regexp.MustCompile(`^[A-Z][A-Z0-9-]{0,15}$`)
	classRE    = regexp.MustCompile(`^[A-Z][A-Z0-9]{0,15}$`)
)

// Config holds what a registry needs besides its state file.
type Config struct {
	// Instance is the identifier instance, for example "VN".
	Instance string
	// TrustDomain is the SPIFFE trust domain of the instance.
	TrustDomain spiffeid.TrustDomain
	// Classes are the accepted member classes; empty means DefaultClasses.
	Classes []string
	// ConfigTTL is the validity of each published configuration; zero means
	// DefaultConfigTTL. It may be at most MaxConfigTTL.
	ConfigTTL time.Duration
	// ResumeAbove, when above the stored configuration version, makes the
	// registry publish its state at start as version ResumeAbove+1. A
	// registry restored from a backup holds an older version than its nodes
	// have seen, and nodes ignore a configuration older than the one they
	// hold, so without this its changes, revocations included, would not
	// reach them until its version caught up. At or below the stored
	// version it is ignored, as on a later start with the same setting,
	// and Open logs so; on a state file that holds no configuration
	// (missing, empty, never published from) Open refuses it, since
	// nothing was restored and the empty state would replace every
	// node's configuration. It may be at most MaxResumeAbove.
	ResumeAbove uint64
	// Signer signs published configurations.
	Signer *sign.Signer
	// TrustAnchors are the instance CA certificates: member signing
	// certificates must chain to them, and they are published to nodes.
	TrustAnchors []*x509.Certificate
	// Logger receives operational logs; nil discards them.
	Logger *slog.Logger
}

// CheckInstance returns an error saying what an instance identifier
// looks like unless s is one, such as "VN". Open refuses a Config whose
// Instance fails it; a command line checks its flag with it first.
func CheckInstance(s string) error {
	if !instanceRE.MatchString(s) {
		return fmt.Errorf("instance %q: want 1-16 of A-Z 0-9 - starting with a letter", s)
	}
	return nil
}

// CheckClass returns an error saying what a member class looks like
// unless s is one, such as "NN". Open refuses a Config with a class that
// fails it; a command line checks its flag with it first.
func CheckClass(s string) error {
	if !classRE.MatchString(s) {
		return fmt.Errorf("member class %q: want 1-16 of A-Z 0-9 starting with a letter", s)
	}
	return nil
}

// withDefaults validates c and fills in its defaults.
func (c Config) withDefaults() (Config, error) {
	if err := CheckInstance(c.Instance); err != nil {
		return c, err
	}
	if c.TrustDomain.IsZero() {
		return c, errors.New("trust domain is not set")
	}
	if len(c.Classes) == 0 {
		c.Classes = DefaultClasses
	}
	c.Classes = slices.Clone(c.Classes)
	for _, cl := range c.Classes {
		if err := CheckClass(cl); err != nil {
			return c, err
		}
	}
	if c.ConfigTTL == 0 {
		c.ConfigTTL = DefaultConfigTTL
	}
	if c.ConfigTTL < 0 {
		return c, fmt.Errorf("configuration TTL %v is negative", c.ConfigTTL)
	}
	if c.ConfigTTL > MaxConfigTTL {
		return c, fmt.Errorf("configuration TTL %v is longer than %v", c.ConfigTTL, MaxConfigTTL)
	}
	if c.ResumeAbove > MaxResumeAbove {
		return c, fmt.Errorf("resume above %d: it leaves fewer than 2^32 configuration versions to publish; "+
			"the highest accepted is %d", c.ResumeAbove, uint64(MaxResumeAbove))
	}
	if len(c.TrustAnchors) == 0 {
		return c, errors.New("no trust anchors")
	}
	if err := c.checkSigner(); err != nil {
		return c, err
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c, nil
}

// trustPool returns the trust anchors as a certificate pool.
func (c Config) trustPool() *x509.CertPool {
	pool := x509.NewCertPool()
	for _, a := range c.TrustAnchors {
		pool.AddCert(a)
	}
	return pool
}

// checkSigner checks that nodes will accept configurations signed by
// c.Signer: its certificate names the registry and chains to the trust
// anchors.
func (c Config) checkSigner() error {
	if c.Signer == nil {
		return errors.New("configuration signer is not set")
	}
	cert := c.Signer.Certificate()
	if len(cert.URIs) != 1 || cert.URIs[0].String() != id.RegistrySigningURI {
		return fmt.Errorf("signing certificate: want the single URI SAN %s", id.RegistrySigningURI)
	}
	if err := sign.VerifyCertificate(cert, nil, c.trustPool(), time.Now()); err != nil {
		return fmt.Errorf("signing certificate: %w", err)
	}
	return nil
}
