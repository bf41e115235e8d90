// Package exchange builds, signs and checks the frames two nodes exchange
// for one gRPC call: every message travels with a signed header that names
// the client, service, method and purpose, commits to the exact payload
// bytes, links to the previous message of its direction, and, for responses,
// to the request it answers.
package exchange

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/binary"
	"encoding/hex"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/ketnoi/ketnoi/internal/sign"
	exchangev1 "github.com/ketnoi/ketnoi/proto/ketnoi/exchange/v1"
)

// ProtocolVersion is the header version this package writes and accepts.
const ProtocolVersion = 1

// NewMessageID returns a fresh exchange identifier: a UUIDv7, so identifiers
// sort by creation time and carry 74 random bits.
func NewMessageID() string {
	var u [16]byte
	_, _ = rand.Read(u[:])
	ms := uint64(time.Now().UnixMilli())
	binary.BigEndian.PutUint16(u[0:2], uint16(ms>>32))
	binary.BigEndian.PutUint32(u[2:6], uint32(ms))
	u[6] = 0x70 | (u[6] & 0x0f)
	u[8] = 0x80 | (u[8] & 0x3f)
	h := hex.EncodeToString(u[:])
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:32]
}

// Sealed is a signed frame with its header and the header's digest.
type Sealed struct {
	Frame  *exchangev1.Frame
	Header *exchangev1.Header
	// Digest is the SHA-256 of the exact header bytes; responses carry the
	// first request's digest, and each message carries its predecessor's.
	Digest []byte
}

// Seal completes h for payload (digest, length, creation time, signer) and
// signs it through the batch signer. hasMessage says whether the frame
// carries a message; the payload of a frame without one must be empty.
func Seal(ctx context.Context, bs *BatchSigner, h *exchangev1.Header, payload []byte, hasMessage bool, now time.Time) (*Sealed, error) {
	raw, err := complete(bs, h, payload, hasMessage, now)
	if err != nil {
		return nil, err
	}
	sh, err := bs.Sign(ctx, raw)
	if err != nil {
		return nil, err
	}
	return sealed(h, raw, sh, payload), nil
}

// Prepare completes h for payload like Seal and returns the exact header
// bytes to sign and their SHA-256, for a caller whose signature comes later
// in a batch (a node's evidence log signs each commit's headers together).
func Prepare(s *sign.Signer, h *exchangev1.Header, payload []byte, hasMessage bool, now time.Time) (raw, digest []byte, err error) {
	raw, err = completeFor(s, h, payload, hasMessage, now)
	if err != nil {
		return nil, nil, err
	}
	d := sha256.Sum256(raw)
	return raw, d[:], nil
}

// Assemble builds the frame of a header prepared with Prepare once its
// signed form is there.
func Assemble(h *exchangev1.Header, digest []byte, sh *exchangev1.SignedHeader, payload []byte) *Sealed {
	return &Sealed{Frame: &exchangev1.Frame{SignedHeader: sh, Payload: payload}, Header: h, Digest: digest}
}

// maxSignatureOverhead bounds what signing adds to a frame: an ASN.1 ECDSA
// P-256 signature (at most 72 bytes) and a batch proof of up to MaxBatch
// headers (root, size, index and one hash per tree level), with their
// protobuf tags and lengths, and what the two enclosing length prefixes
// may grow by.
const maxSignatureOverhead = (2 + 72) + (3 + (2 + 32) + 11 + 11 + 11*(2+32)) + 8

// wrapperOverhead is what the ExchangeRequest or ExchangeResponse around a
// frame adds: one tag and a length of up to five bytes.
const wrapperOverhead = 1 + 5

// SealedSize bounds the size of the message that carries raw and payload
// between nodes once the header is signed, so that a message too large for
// the peer is refused before anything is signed or recorded.
func SealedSize(raw, payload []byte) int {
	return frameSize(len(raw), len(payload)) + maxSignatureOverhead + wrapperOverhead
}

// frameSize is proto.Size of a Frame whose signed header holds a header of
// headerLen bytes and nothing else, with a payload of payloadLen bytes,
// counted without building the messages: every outgoing message is
// checked against the size limit.
func frameSize(headerLen, payloadLen int) int {
	sh := 0
	if headerLen > 0 {
		sh = protowire.SizeTag(1) + protowire.SizeBytes(headerLen)
	}
	size := protowire.SizeTag(1) + protowire.SizeBytes(sh)
	if payloadLen > 0 {
		size += protowire.SizeTag(2) + protowire.SizeBytes(payloadLen)
	}
	return size
}

// WireSize is the size of the message that carries a sealed frame between
// nodes.
func WireSize(f *exchangev1.Frame) int {
	return proto.Size(f) + wrapperOverhead
}

// complete fills in the header fields a signer vouches for and returns the
// exact bytes to sign.
func complete(bs *BatchSigner, h *exchangev1.Header, payload []byte, hasMessage bool, now time.Time) ([]byte, error) {
	return completeFor(bs.Signer(), h, payload, hasMessage, now)
}

func completeFor(s *sign.Signer, h *exchangev1.Header, payload []byte, hasMessage bool, now time.Time) ([]byte, error) {
	h.ProtocolVersion = ProtocolVersion
	h.CreatedAt = timestamppb.New(now)
	h.HasMessage = hasMessage
	sum := sha256.Sum256(payload)
	h.PayloadSha256 = sum[:]
	h.PayloadLength = uint64(len(payload))
	h.SignerCertificateSha256 = s.CertificateSHA256()
	return proto.MarshalOptions{Deterministic: true}.Marshal(h)
}

func sealed(h *exchangev1.Header, raw []byte, sh *exchangev1.SignedHeader, payload []byte) *Sealed {
	d := sha256.Sum256(raw)
	return &Sealed{
		Frame:  &exchangev1.Frame{SignedHeader: sh, Payload: payload},
		Header: h,
		Digest: d[:],
	}
}

// Opened is a frame whose header parsed, whether or not it verified.
type Opened struct {
	Frame  *exchangev1.Frame
	Header *exchangev1.Header
	Digest []byte
	// Signer is the registered certificate that verified the signature.
	Signer *x509.Certificate
	// SignerMember is the member the signing certificate is registered to.
	SignerMember string
	// Verified is true when the signature and payload digest checked out.
	Verified bool
}

// CertLookup finds a registered signing certificate by its SHA-256 and
// returns the member it belongs to.
type CertLookup func(sum []byte) (*x509.Certificate, string, bool)

// Open parses f's header and verifies its signature (with v, which caches
// verified batch roots) and payload digest. It returns the parsed frame even
// on failure (Header may then be nil when the bytes do not parse) so the
// refusal can be recorded.
func Open(f *exchangev1.Frame, certs CertLookup, v *Verifier) (*Opened, *Error) {
	sh := f.GetSignedHeader()
	raw := sh.GetHeader()
	d := sha256.Sum256(raw)
	o := &Opened{Frame: f, Digest: d[:]}
	h := &exchangev1.Header{}
	if len(raw) == 0 || proto.Unmarshal(raw, h) != nil {
		return o, Errorf(codes.InvalidArgument, ReasonHeaderMalformed, "signed header is missing or does not parse")
	}
	o.Header = h
	if h.GetProtocolVersion() != ProtocolVersion {
		return o, Errorf(codes.InvalidArgument, ReasonProtocolVersion,
			"header protocol version %d is not supported (want %d)", h.GetProtocolVersion(), ProtocolVersion)
	}
	cert, member, ok := certs(h.GetSignerCertificateSha256())
	if !ok {
		return o, Errorf(codes.Unauthenticated, ReasonSignerUnknown,
			"signing certificate %x is not registered in the global configuration", prefix(h.GetSignerCertificateSha256()))
	}
	o.SignerMember = member
	if at := h.GetCreatedAt().AsTime(); at.Before(cert.NotBefore) || at.After(cert.NotAfter) {
		return o, Errorf(codes.Unauthenticated, ReasonSignerUnknown,
			"signing certificate of member %s is not valid at the message's time %s", member, at.UTC().Format(time.RFC3339))
	}
	if err := v.Verify(cert, sh); err != nil {
		return o, Errorf(codes.Unauthenticated, ReasonSignatureInvalid,
			"signature of message %s (%s #%d) does not verify", h.GetMessageId(), h.GetDirection(), h.GetSequence())
	}
	o.Signer = cert
	sum := sha256.Sum256(f.GetPayload())
	if !bytes.Equal(sum[:], h.GetPayloadSha256()) || uint64(len(f.GetPayload())) != h.GetPayloadLength() {
		return o, Errorf(codes.Unauthenticated, ReasonPayloadMismatch,
			"payload of message %s (%s #%d) does not match its signed digest", h.GetMessageId(), h.GetDirection(), h.GetSequence())
	}
	if !h.GetHasMessage() && len(f.GetPayload()) != 0 {
		return o, Errorf(codes.InvalidArgument, ReasonHeaderMalformed, "frame without a message carries a payload")
	}
	o.Verified = true
	return o, nil
}

func prefix(b []byte) []byte {
	if len(b) > 8 {
		return b[:8]
	}
	return b
}

// Chain tracks the sequence and digest links of one direction of a call.
// Senders call Next before sealing and Advance after; receivers call Check.
type Chain struct {
	next uint64
	prev []byte
}

// Next sets h's sequence number and previous digest.
func (c *Chain) Next(h *exchangev1.Header) {
	h.Sequence = c.next
	h.PreviousDigest = c.prev
}

// Advance records a sealed or accepted message.
func (c *Chain) Advance(digest []byte) {
	c.next++
	c.prev = digest
}

// Check verifies that h follows the previous message and advances.
func (c *Chain) Check(h *exchangev1.Header, digest []byte) *Error {
	if h.GetSequence() != c.next {
		return Errorf(codes.DataLoss, ReasonSequence,
			"message %s: got %s #%d, want #%d (dropped, reordered or replayed message)",
			h.GetMessageId(), h.GetDirection(), h.GetSequence(), c.next)
	}
	if !bytes.Equal(h.GetPreviousDigest(), c.prev) {
		return Errorf(codes.DataLoss, ReasonSequence,
			"message %s: %s #%d does not link to its predecessor", h.GetMessageId(), h.GetDirection(), h.GetSequence())
	}
	c.Advance(digest)
	return nil
}
