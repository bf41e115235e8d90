package mtls

import (
	"crypto/x509"
	"errors"
	"fmt"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// Reasons a server gives for refusing a peer's certificate, as logged and
// as set in [PeerRefusedError.Reason]. go-spiffe's errors say the same in
// longer, library-specific words; these name what an operator must fix.
const (
	ReasonNoCertificate      = "no client certificate"
	ReasonNotSVID            = "certificate is not an X.509-SVID"
	ReasonInvalidLeaf        = "certificate is not a valid SVID leaf"
	ReasonForeignTrustDomain = "trust domain not in the bundle"
	ReasonUnknownAuthority   = "certificate signed by an unknown authority"
	ReasonExpired            = "certificate expired"
	ReasonNotYetValid        = "certificate not yet valid"
	ReasonInvalidChain       = "certificate chain invalid"
	ReasonNotAuthorized      = "SPIFFE ID not authorized"
)

// PeerRefusedError is the error of a server handshake that refused the
// certificate the client presented. It carries what the client claimed to
// be, read from the unverified leaf, so that a refusal can be logged with
// the identity an operator will recognise.
type PeerRefusedError struct {
	// Reason is one of the Reason constants.
	Reason string
	// ID is the SPIFFE ID of the leaf, zero when it carries none.
	ID spiffeid.ID
	// Subject and Issuer are the leaf's distinguished names, empty when the
	// leaf could not be parsed.
	Subject, Issuer string
	// Err is the verifier's or authorizer's error.
	Err error
}

func (e *PeerRefusedError) Error() string {
	return fmt.Sprintf("mtls: peer certificate refused: %s: %v", e.Reason, e.Err)
}

func (e *PeerRefusedError) Unwrap() error { return e.Err }

// errUnauthorized marks an error of the caller's authorizer, so that a chain
// that verified but names an ID the server does not accept is told apart
// from a chain that did not verify.
type errUnauthorized struct{ err error }

func (e errUnauthorized) Error() string { return e.err.Error() }
func (e errUnauthorized) Unwrap() error { return e.err }

// markUnauthorized wraps the errors of authz in errUnauthorized.
func markUnauthorized(authz tlsconfig.Authorizer) tlsconfig.Authorizer {
	return func(id spiffeid.ID, chains [][]*x509.Certificate) error {
		if err := authz(id, chains); err != nil {
			return errUnauthorized{err}
		}
		return nil
	}
}

// explainRefusals wraps a VerifyPeerCertificate callback so that its errors
// become a [PeerRefusedError]. The leaf is parsed again only on failure:
// successful handshakes pay one extra function call.
func explainRefusals(
	verify func([][]byte, [][]*x509.Certificate) error,
	bundle x509bundle.Source,
) func([][]byte, [][]*x509.Certificate) error {
	return func(raw [][]byte, chains [][]*x509.Certificate) error {
		err := verify(raw, chains)
		if err == nil {
			return nil
		}
		return refusal(raw, bundle, err, time.Now())
	}
}

// refusal describes why verify refused the chain raw with err.
func refusal(raw [][]byte, bundle x509bundle.Source, err error, now time.Time) *PeerRefusedError {
	e := &PeerRefusedError{Err: err}
	var leaf *x509.Certificate
	if len(raw) > 0 {
		leaf, _ = x509.ParseCertificate(raw[0])
	}
	switch {
	case len(raw) == 0:
		e.Reason = ReasonNoCertificate
		return e
	case leaf == nil:
		e.Reason = ReasonInvalidChain
		return e
	}
	e.Subject, e.Issuer = leaf.Subject.String(), leaf.Issuer.String()
	id, idErr := x509svid.IDFromCert(leaf)
	if idErr == nil {
		e.ID = id
	}
	e.Reason = refusalReason(err, id, idErr, leaf, bundle, now)
	return e
}

// refusalReason picks the Reason for err, checking the most specific
// causes first.
func refusalReason(
	err error,
	id spiffeid.ID,
	idErr error,
	leaf *x509.Certificate,
	bundle x509bundle.Source,
	now time.Time,
) string {
	var (
		unauthorized errUnauthorized
		unknownCA    x509.UnknownAuthorityError
		invalid      x509.CertificateInvalidError
	)
	switch {
	case errors.As(err, &unauthorized):
		return ReasonNotAuthorized
	case idErr != nil:
		return ReasonNotSVID
	case leaf.IsCA || leaf.KeyUsage&(x509.KeyUsageCertSign|x509.KeyUsageCRLSign) != 0:
		return ReasonInvalidLeaf
	case !hasBundle(bundle, id.TrustDomain()):
		return ReasonForeignTrustDomain
	case errors.As(err, &unknownCA):
		return ReasonUnknownAuthority
	case errors.As(err, &invalid) && invalid.Reason == x509.Expired:
		if invalid.Cert != nil && now.Before(invalid.Cert.NotBefore) {
			return ReasonNotYetValid
		}
		return ReasonExpired
	}
	return ReasonInvalidChain
}

func hasBundle(bundle x509bundle.Source, td spiffeid.TrustDomain) bool {
	_, err := bundle.GetX509BundleForTrustDomain(td)
	return err == nil
}
