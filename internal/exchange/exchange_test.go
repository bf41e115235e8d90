package exchange_test

import (
	"bytes"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/testing/protocmp"

	"github.com/ketnoi/ketnoi/internal/exchange"
	"github.com/ketnoi/ketnoi/internal/pki/pkitest"
	"github.com/ketnoi/ketnoi/internal/sign"
	exchangev1 "github.com/ketnoi/ketnoi/proto/ketnoi/exchange/v1"
)

const (
	consumer = "VN/NN/000.00.00.G22"
	service  = "VN/NN/000.00.00.G09/dvhc/vn.gov.dvhc.v1.AdminUnitService"
)

// lookupOf registers the signers' certificates under their member IDs.
func lookupOf(signers map[string]*sign.Signer) exchange.CertLookup {
	byHash := map[[32]byte]struct {
		cert   *x509.Certificate
		member string
	}{}
	for m, s := range signers {
		byHash[[32]byte(s.CertificateSHA256())] = struct {
			cert   *x509.Certificate
			member string
		}{s.Certificate(), m}
	}
	return func(sum []byte) (*x509.Certificate, string, bool) {
		if len(sum) != 32 {
			return nil, "", false
		}
		e, ok := byHash[[32]byte(sum)]
		return e.cert, e.member, ok
	}
}

func requestHeader() *exchangev1.Header {
	return &exchangev1.Header{
		MessageId: exchange.NewMessageID(),
		Direction: exchangev1.Direction_DIRECTION_REQUEST,
		CallKind:  exchangev1.CallKind_CALL_KIND_UNARY,
		Client:    consumer + "/vanban",
		Service:   service,
		Method:    "GetProvince",
		Purpose:   "cap-giay-phep",
	}
}

func TestSealOpen(t *testing.T) {
	ca := pkitest.NewCA(t, "vn.ketnoi")
	s := ca.Signer(t, consumer)
	lookup := lookupOf(map[string]*sign.Signer{consumer: s})
	now := time.Now().UTC().Truncate(time.Microsecond)
	payload := []byte{0x0a, 0x02, '0', '1'}

	h := requestHeader()
	sealed, err := sealWith(s, h, payload, true, now)
	if err != nil {
		t.Fatalf("Seal: %v", err)
	}
	sum := sha256.Sum256(payload)
	if !bytes.Equal(sealed.Header.GetPayloadSha256(), sum[:]) || sealed.Header.GetPayloadLength() != 4 {
		t.Errorf("sealed payload digest/length = %x/%d, want %x/4",
			sealed.Header.GetPayloadSha256(), sealed.Header.GetPayloadLength(), sum)
	}
	if got := sealed.Header.GetCreatedAt().AsTime(); !got.Equal(now) {
		t.Errorf("CreatedAt = %v, want %v", got, now)
	}
	if sealed.Header.GetProtocolVersion() != exchange.ProtocolVersion {
		t.Errorf("ProtocolVersion = %d, want %d", sealed.Header.GetProtocolVersion(), exchange.ProtocolVersion)
	}
	hd := sha256.Sum256(sealed.Frame.GetSignedHeader().GetHeader())
	if !bytes.Equal(sealed.Digest, hd[:]) {
		t.Errorf("Digest is not the SHA-256 of the header bytes")
	}

	opened, xerr := openWith(sealed.Frame, lookup)
	if xerr != nil {
		t.Fatalf("Open: %v (%s)", xerr, xerr.Reason)
	}
	if !opened.Verified {
		t.Errorf("Opened.Verified = false")
	}
	if opened.SignerMember != consumer {
		t.Errorf("SignerMember = %q, want %q", opened.SignerMember, consumer)
	}
	if opened.Signer != s.Certificate() {
		t.Errorf("Signer is not the registered certificate")
	}
	if !bytes.Equal(opened.Digest, sealed.Digest) {
		t.Errorf("Opened.Digest = %x, want %x", opened.Digest, sealed.Digest)
	}
	if diff := cmp.Diff(sealed.Header, opened.Header, protocmp.Transform()); diff != "" {
		t.Errorf("opened header mismatch (-sealed +opened):\n%s", diff)
	}
	want := requestHeader()
	for _, f := range []struct{ name, got, want string }{
		{"client", opened.Header.GetClient(), want.GetClient()},
		{"service", opened.Header.GetService(), want.GetService()},
		{"method", opened.Header.GetMethod(), want.GetMethod()},
		{"purpose", opened.Header.GetPurpose(), want.GetPurpose()},
		{"message_id", opened.Header.GetMessageId(), h.GetMessageId()},
	} {
		if f.got != f.want {
			t.Errorf("opened %s = %q, want %q", f.name, f.got, f.want)
		}
	}
}

func TestSealOpenEmptyFrame(t *testing.T) {
	ca := pkitest.NewCA(t, "vn.ketnoi")
	s := ca.Signer(t, consumer)
	lookup := lookupOf(map[string]*sign.Signer{consumer: s})

	sealed, err := sealWith(s, requestHeader(), nil, false, time.Now())
	if err != nil {
		t.Fatalf("Seal: %v", err)
	}
	if o, xerr := openWith(sealed.Frame, lookup); xerr != nil || !o.Verified || o.Header.GetHasMessage() {
		t.Fatalf("Open of a frame without message: verified=%v has_message=%v err=%v",
			o.Verified, o.Header.GetHasMessage(), xerr)
	}

	// A payload smuggled into a frame whose header says "no message" but
	// commits to it anyway must still be refused.
	sealed, err = sealWith(s, requestHeader(), []byte("x"), false, time.Now())
	if err != nil {
		t.Fatalf("Seal: %v", err)
	}
	o, xerr := openWith(sealed.Frame, lookup)
	if xerr == nil || xerr.Reason != exchange.ReasonHeaderMalformed || o.Verified {
		t.Errorf("Open of a message-less frame with payload: err=%v verified=%v, want %s",
			xerr, o.Verified, exchange.ReasonHeaderMalformed)
	}
}

// flipInString flips one byte of the first occurrence of s in the encoded
// header, so the header still parses but no longer matches its signature.
func flipInString(t *testing.T, raw []byte, s string) []byte {
	t.Helper()
	i := bytes.Index(raw, []byte(s))
	if i < 0 {
		t.Fatalf("%q not found in the header bytes", s)
	}
	out := bytes.Clone(raw)
	out[i] ^= 0x20 // changes letter case, stays valid UTF-8
	return out
}

func TestOpenRefusals(t *testing.T) {
	ca := pkitest.NewCA(t, "vn.ketnoi")
	s := ca.Signer(t, consumer)
	lookup := lookupOf(map[string]*sign.Signer{consumer: s})
	other := ca.Signer(t, "VN/NN/000.00.00.G09")

	seal := func(s *sign.Signer, mutate func(*exchangev1.Header)) *exchangev1.Frame {
		t.Helper()
		h := requestHeader()
		if mutate != nil {
			mutate(h)
		}
		sealed, err := sealWith(s, h, []byte("payload"), true, time.Now())
		if err != nil {
			t.Fatalf("Seal: %v", err)
		}
		return sealed.Frame
	}
	// A header of another protocol version, signed properly.
	v2 := requestHeader()
	v2.ProtocolVersion = 2
	v2.SignerCertificateSha256 = s.CertificateSHA256()
	v2raw, err := proto.Marshal(v2)
	if err != nil {
		t.Fatal(err)
	}
	v2sig, err := s.Sign(sign.TypeHeader, v2raw)
	if err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name       string
		frame      func() *exchangev1.Frame
		reason     string
		code       codes.Code
		wantHeader bool
	}{
		{
			name: "changed payload",
			frame: func() *exchangev1.Frame {
				f := seal(s, nil)
				f.Payload = []byte("paylaod")
				return f
			},
			reason: exchange.ReasonPayloadMismatch, code: codes.Unauthenticated, wantHeader: true,
		},
		{
			name: "truncated payload",
			frame: func() *exchangev1.Frame {
				f := seal(s, nil)
				f.Payload = f.Payload[:3]
				return f
			},
			reason: exchange.ReasonPayloadMismatch, code: codes.Unauthenticated, wantHeader: true,
		},
		{
			name: "changed header byte",
			frame: func() *exchangev1.Frame {
				f := seal(s, nil)
				f.SignedHeader.Header = flipInString(t, f.GetSignedHeader().GetHeader(), "GetProvince")
				return f
			},
			reason: exchange.ReasonSignatureInvalid, code: codes.Unauthenticated, wantHeader: true,
		},
		{
			name: "signature of another key",
			frame: func() *exchangev1.Frame {
				f := seal(s, nil)
				f.SignedHeader.Signature = seal(other, nil).GetSignedHeader().GetSignature()
				return f
			},
			reason: exchange.ReasonSignatureInvalid, code: codes.Unauthenticated, wantHeader: true,
		},
		{
			name:   "unknown signer",
			frame:  func() *exchangev1.Frame { return seal(other, nil) },
			reason: exchange.ReasonSignerUnknown, code: codes.Unauthenticated, wantHeader: true,
		},
		{
			name: "garbage header",
			frame: func() *exchangev1.Frame {
				return &exchangev1.Frame{SignedHeader: &exchangev1.SignedHeader{Header: []byte{0xff, 0xff, 0xff}}}
			},
			reason: exchange.ReasonHeaderMalformed, code: codes.InvalidArgument,
		},
		{
			name:   "no header",
			frame:  func() *exchangev1.Frame { return &exchangev1.Frame{Payload: []byte("x")} },
			reason: exchange.ReasonHeaderMalformed, code: codes.InvalidArgument,
		},
		{
			name: "protocol version 2",
			frame: func() *exchangev1.Frame {
				return &exchangev1.Frame{SignedHeader: &exchangev1.SignedHeader{Header: v2raw, Signature: v2sig}}
			},
			reason: exchange.ReasonProtocolVersion, code: codes.InvalidArgument, wantHeader: true,
		},
	}
	for _, tt := range tests {
		f := tt.frame()
		o, xerr := openWith(f, lookup)
		if xerr == nil {
			t.Errorf("%s: Open succeeded, want %s", tt.name, tt.reason)
			continue
		}
		if xerr.Reason != tt.reason || xerr.Code != tt.code {
			t.Errorf("%s: Open = %s/%v (%v), want %s/%v", tt.name, xerr.Reason, xerr.Code, xerr, tt.reason, tt.code)
		}
		if o == nil || o.Verified {
			t.Errorf("%s: Opened = %+v, want a non-nil unverified result", tt.name, o)
			continue
		}
		if o.Frame != f {
			t.Errorf("%s: Opened.Frame is not the input frame", tt.name)
		}
		if (o.Header != nil) != tt.wantHeader {
			t.Errorf("%s: Opened.Header present = %v, want %v", tt.name, o.Header != nil, tt.wantHeader)
		}
	}
}

func TestChain(t *testing.T) {
	ca := pkitest.NewCA(t, "vn.ketnoi")
	s := ca.Signer(t, consumer)

	// The sender seals four messages of one direction.
	var send exchange.Chain
	var msgs []*exchange.Sealed
	id := exchange.NewMessageID()
	for i := range 4 {
		h := requestHeader()
		h.MessageId = id
		send.Next(h)
		if h.GetSequence() != uint64(i) {
			t.Fatalf("Next set sequence %d, want %d", h.GetSequence(), i)
		}
		sealed, err := sealWith(s, h, []byte{byte(i)}, true, time.Now())
		if err != nil {
			t.Fatalf("Seal: %v", err)
		}
		send.Advance(sealed.Digest)
		msgs = append(msgs, sealed)
	}
	if len(msgs[0].Header.GetPreviousDigest()) != 0 {
		t.Errorf("first message has a previous digest %x", msgs[0].Header.GetPreviousDigest())
	}
	for i := 1; i < len(msgs); i++ {
		if !bytes.Equal(msgs[i].Header.GetPreviousDigest(), msgs[i-1].Digest) {
			t.Errorf("message %d does not link to message %d", i, i-1)
		}
	}

	tests := []struct {
		name   string
		order  []int
		failAt int // index into order of the first refused message; -1 if none
	}{
		{"in order", []int{0, 1, 2, 3}, -1},
		{"dropped", []int{0, 1, 3}, 2},
		{"reordered", []int{0, 2, 1, 3}, 1},
		{"replayed", []int{0, 1, 1, 2}, 2},
		{"first missing", []int{1, 2, 3}, 0},
	}
	for _, tt := range tests {
		var recv exchange.Chain
		failed := -1
		for pos, i := range tt.order {
			if xerr := recv.Check(msgs[i].Header, msgs[i].Digest); xerr != nil {
				if xerr.Reason != exchange.ReasonSequence || xerr.Code != codes.DataLoss {
					t.Errorf("%s: Check = %s/%v, want %s/DataLoss", tt.name, xerr.Reason, xerr.Code, exchange.ReasonSequence)
				}
				failed = pos
				break
			}
		}
		if failed != tt.failAt {
			t.Errorf("%s: first refusal at position %d, want %d", tt.name, failed, tt.failAt)
		}
	}

	// Right sequence number, wrong link: a message from another call.
	var recv exchange.Chain
	if xerr := recv.Check(msgs[0].Header, msgs[0].Digest); xerr != nil {
		t.Fatalf("Check #0: %v", xerr)
	}
	forged := proto.Clone(msgs[1].Header).(*exchangev1.Header)
	forged.PreviousDigest = bytes.Repeat([]byte{1}, 32)
	if xerr := recv.Check(forged, msgs[1].Digest); xerr == nil || xerr.Reason != exchange.ReasonSequence {
		t.Errorf("Check of a message with a wrong previous digest = %v, want %s", xerr, exchange.ReasonSequence)
	}
}

func TestNewMessageID(t *testing.T) {
	seen := map[string]bool{}
	for range 1000 {
		s := exchange.NewMessageID()
		if seen[s] {
			t.Fatalf("NewMessageID repeated %s", s)
		}
		seen[s] = true

		parts := strings.Split(s, "-")
		if len(parts) != 5 || len(parts[0]) != 8 || len(parts[1]) != 4 || len(parts[2]) != 4 ||
			len(parts[3]) != 4 || len(parts[4]) != 12 {
			t.Fatalf("NewMessageID = %q, want 8-4-4-4-12 hex groups", s)
		}
		b, err := hex.DecodeString(strings.Join(parts, ""))
		if err != nil {
			t.Fatalf("NewMessageID = %q: %v", s, err)
		}
		if v := b[6] >> 4; v != 7 {
			t.Fatalf("NewMessageID = %q: version %d, want 7", s, v)
		}
		if b[8]&0xc0 != 0x80 {
			t.Fatalf("NewMessageID = %q: variant bits %02b, want 10", s, b[8]>>6)
		}
	}
}

func TestNewMessageIDTimestamp(t *testing.T) {
	before := time.Now().UnixMilli()
	s := exchange.NewMessageID()
	after := time.Now().UnixMilli()
	b, err := hex.DecodeString(strings.ReplaceAll(s, "-", ""))
	if err != nil {
		t.Fatal(err)
	}
	var ms int64
	for _, x := range b[:6] {
		ms = ms<<8 | int64(x)
	}
	if ms < before || ms > after {
		t.Errorf("NewMessageID timestamp %d ms outside [%d, %d]", ms, before, after)
	}
}

// Every payload byte is hashed once by the node that signs its header and
// once by the node that verifies it: the per-byte cost of a stream that no
// batching shares.
func BenchmarkPayloadDigest(b *testing.B) {
	payload := bytes.Repeat([]byte{0xa5}, 1<<20)
	b.SetBytes(int64(len(payload)))
	for b.Loop() {
		sha256.Sum256(payload)
	}
}
