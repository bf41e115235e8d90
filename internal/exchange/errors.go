package exchange

import (
	"fmt"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// ErrorDomain is the ErrorInfo domain of failures that the platform itself
// (a node) produced, as opposed to statuses a provider's backend returned.
const ErrorDomain = "ketnoi"

// Reasons carried in the ErrorInfo detail of platform failures. They are a
// contract with applications: add new ones, never change existing ones.
const (
	ReasonConfigMissing       = "CONFIG_MISSING"
	ReasonConfigExpired       = "CONFIG_EXPIRED"
	ReasonServiceUnknown      = "SERVICE_UNKNOWN"
	ReasonServiceAmbiguous    = "SERVICE_AMBIGUOUS"
	ReasonMethodUnknown       = "METHOD_UNKNOWN"
	ReasonServiceNotServed    = "SERVICE_NOT_SERVED"
	ReasonClientUnknown       = "CLIENT_UNKNOWN"
	ReasonGrantMissing        = "GRANT_MISSING"
	ReasonHeaderMalformed     = "HEADER_MALFORMED"
	ReasonProtocolVersion     = "PROTOCOL_VERSION"
	ReasonSignerUnknown       = "SIGNER_UNKNOWN"
	ReasonSignerMismatch      = "SIGNER_MISMATCH"
	ReasonSignatureInvalid    = "SIGNATURE_INVALID"
	ReasonPayloadMismatch     = "PAYLOAD_DIGEST_MISMATCH"
	ReasonSequence            = "SEQUENCE_BROKEN"
	ReasonBinding             = "REQUEST_BINDING_MISMATCH"
	ReasonReplay              = "REPLAY"
	ReasonStale               = "STALE_MESSAGE"
	ReasonAudience            = "AUDIENCE_MISMATCH"
	ReasonPeerMismatch        = "PEER_MISMATCH"
	ReasonEvidenceUnavailable = "EVIDENCE_UNAVAILABLE"
	ReasonProviderUnreachable = "PROVIDER_UNREACHABLE"
	ReasonPeerRefused         = "PEER_REFUSED"
	ReasonBackendUnreachable  = "BACKEND_UNREACHABLE"
	ReasonMessageTooLarge     = "MESSAGE_TOO_LARGE"
	ReasonTooManyMessages     = "TOO_MANY_MESSAGES"
)

// Error is a failure of a node check. It becomes a gRPC status whose
// ErrorInfo detail tells the caller that the platform, not the provider's
// backend, refused, and which check failed.
type Error struct {
	Code   codes.Code
	Reason string
	Msg    string
}

// Errorf returns an *Error.
func Errorf(code codes.Code, reason, format string, args ...any) *Error {
	return &Error{Code: code, Reason: reason, Msg: fmt.Sprintf(format, args...)}
}

// Error returns the message the caller sees.
func (e *Error) Error() string { return e.Msg }

// Status converts e into a status naming the node that refused.
func (e *Error) Status(node string) *status.Status {
	st := status.New(e.Code, e.Msg)
	withInfo, err := st.WithDetails(&errdetails.ErrorInfo{
		Reason:   e.Reason,
		Domain:   ErrorDomain,
		Metadata: map[string]string{"node": node},
	})
	if err != nil {
		return st
	}
	return withInfo
}

// PlatformReason returns the ErrorInfo reason when st was produced by a
// ketnoi node, and false for statuses from a provider's backend.
func PlatformReason(st *status.Status) (string, bool) {
	for _, d := range st.Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok && info.GetDomain() == ErrorDomain {
			return info.GetReason(), true
		}
	}
	return "", false
}
