// Package gconf verifies, indexes and caches the registry's signed global
// configuration on a node, and keeps it current through the registry's watch
// stream.
//
// A node trusts a configuration only when its signature verifies with a
// registry signing certificate that chains to the node's own anchor bundle;
// the configuration's own trust anchors are never used to verify itself.
package gconf

import (
	"crypto/x509"
	"errors"
	"fmt"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/ketnoi/ketnoi/internal/id"
	"github.com/ketnoi/ketnoi/internal/sign"
	registryv1 "github.com/ketnoi/ketnoi/proto/ketnoi/registry/v1"
)

// ErrInvalid is wrapped by every verification failure.
var ErrInvalid = errors.New("invalid global configuration")

// Verify checks a signed configuration against the anchor roots at time now
// and returns the configuration it carries.
func Verify(sc *registryv1.SignedConfiguration, roots *x509.CertPool, now time.Time) (*registryv1.GlobalConfiguration, error) {
	if sc == nil || len(sc.GetCertificateChain()) == 0 {
		return nil, fmt.Errorf("%w: no signer certificate", ErrInvalid)
	}
	chain := make([]*x509.Certificate, 0, len(sc.GetCertificateChain()))
	for i, der := range sc.GetCertificateChain() {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			return nil, fmt.Errorf("%w: certificate %d: %v", ErrInvalid, i, err)
		}
		chain = append(chain, c)
	}
	leaf := chain[0]
	if len(leaf.URIs) != 1 || leaf.URIs[0].String() != id.RegistrySigningURI {
		return nil, fmt.Errorf("%w: signer is not the registry (want URI %s)", ErrInvalid, id.RegistrySigningURI)
	}
	if err := sign.VerifyCertificate(leaf, chain[1:], roots, now); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	if err := sign.Verify(leaf, sign.TypeConfiguration, sc.GetConfiguration(), sc.GetSignature()); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalid, err)
	}

	cfg := &registryv1.GlobalConfiguration{}
	if err := proto.Unmarshal(sc.GetConfiguration(), cfg); err != nil {
		return nil, fmt.Errorf("%w: decode: %v", ErrInvalid, err)
	}
	return cfg, nil
}
