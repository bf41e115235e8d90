package exchange

import (
	"errors"

	"google.golang.org/grpc/encoding"
	_ "google.golang.org/grpc/encoding/proto" // registers the fallback codec
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	exchangev1 "github.com/ketnoi/ketnoi/proto/ketnoi/exchange/v1"
)

// zeroCopyMin is the payload size from which Codec moves payloads without
// copying them: below it one copy costs less than a second buffer.
const zeroCopyMin = 16 << 10

// Codec is the gRPC codec of the federation endpoint. On the wire it is
// plain protobuf (its name is "proto"), but it spares copies of the payload
// of an ExchangeRequest or ExchangeResponse: marshalling writes the frame's
// fields around the payload and hands the payload to gRPC as a buffer of
// its own, and unmarshalling parses the frame itself, so the payload is
// joined from gRPC's receive buffers once (grpc-go splits messages into
// 16 KiB HTTP/2 frames) instead of joined and then copied out again; a
// message that arrived in one buffer is used in place. Every other message,
// and any frame with fields this codec does not know, goes through the
// standard protobuf codec.
type Codec struct {
	fallback encoding.CodecV2
}

// NewCodec returns the federation codec.
func NewCodec() *Codec {
	return &Codec{fallback: encoding.GetCodecV2("proto")}
}

// Name returns "proto".
func (*Codec) Name() string { return "proto" }

// Marshal encodes v.
func (c *Codec) Marshal(v any) (mem.BufferSlice, error) {
	var f *exchangev1.Frame
	switch m := v.(type) {
	case *exchangev1.ExchangeRequest:
		f = m.GetFrame()
	case *exchangev1.ExchangeResponse:
		f = m.GetFrame()
	default:
		return c.fallback.Marshal(v)
	}
	if len(f.GetPayload()) < zeroCopyMin {
		return c.fallback.Marshal(v)
	}
	sh, err := proto.Marshal(f.GetSignedHeader())
	if err != nil {
		return nil, err
	}
	payload := f.GetPayload()
	frameLen := protowire.SizeTag(1) + protowire.SizeBytes(len(sh)) + protowire.SizeTag(2) + protowire.SizeBytes(len(payload))
	if f.GetSignedHeader() == nil {
		frameLen -= protowire.SizeTag(1) + protowire.SizeBytes(0)
	}
	// A message with fields this layout leaves out (unknown fields, or
	// fields added later) is encoded in full by the standard codec.
	if proto.Size(v.(proto.Message)) != protowire.SizeTag(1)+protowire.SizeBytes(frameLen) {
		return c.fallback.Marshal(v)
	}
	head := make([]byte, 0, 3*protowire.SizeVarint(uint64(frameLen))+len(sh)+8)
	head = protowire.AppendTag(head, 1, protowire.BytesType)
	head = protowire.AppendVarint(head, uint64(frameLen))
	if f.GetSignedHeader() != nil {
		head = protowire.AppendTag(head, 1, protowire.BytesType)
		head = protowire.AppendBytes(head, sh)
	}
	head = protowire.AppendTag(head, 2, protowire.BytesType)
	head = protowire.AppendVarint(head, uint64(len(payload)))
	return mem.BufferSlice{mem.SliceBuffer(head), mem.SliceBuffer(payload)}, nil
}

// Unmarshal decodes data into v.
func (c *Codec) Unmarshal(data mem.BufferSlice, v any) error {
	var frame **exchangev1.Frame
	switch m := v.(type) {
	case *exchangev1.ExchangeRequest:
		frame = &m.Frame
	case *exchangev1.ExchangeResponse:
		frame = &m.Frame
	default:
		return c.fallback.Unmarshal(data, v)
	}
	if data.Len() < zeroCopyMin {
		return c.fallback.Unmarshal(data, v)
	}
	// The payload keeps the bytes it aliases alive; they are left to the
	// garbage collector, not returned to the pool. A pool buffer much
	// larger than the message (its size rounded up to a power of two) is
	// not kept for that: the message is copied out and the buffer reused.
	var (
		b    []byte
		held mem.Buffer
	)
	if len(data) == 1 && cap(data[0].ReadOnlyData()) <= data.Len()+data.Len()/4 {
		held = data[0]
		held.Ref()
		b = held.ReadOnlyData()
	} else {
		b = data.Materialize()
	}
	f, err := parseFrameMessage(b)
	if err != nil && held != nil {
		held.Free()
	}
	if errors.Is(err, errUnknownLayout) {
		return c.fallback.Unmarshal(data, v)
	}
	if err != nil {
		return err
	}
	proto.Reset(v.(proto.Message))
	*frame = f
	return nil
}

// errUnknownLayout marks a message with fields parseFrameMessage leaves
// to the standard codec.
var errUnknownLayout = errors.New("exchange: frame layout not handled")

// parseFrameMessage parses an ExchangeRequest or ExchangeResponse (both
// hold only field 1, the frame); the payload aliases b.
func parseFrameMessage(b []byte) (*exchangev1.Frame, error) {
	fb, err := onlyBytesField(b, 1)
	if err != nil {
		return nil, err
	}
	f := &exchangev1.Frame{}
	for len(fb) > 0 {
		num, typ, n := protowire.ConsumeTag(fb)
		if n < 0 || typ != protowire.BytesType || (num != 1 && num != 2) {
			return nil, errUnknownLayout
		}
		fb = fb[n:]
		val, n := protowire.ConsumeBytes(fb)
		if n < 0 {
			return nil, errUnknownLayout
		}
		fb = fb[n:]
		if num == 1 {
			if f.SignedHeader != nil {
				return nil, errUnknownLayout // repeated: merged by the standard codec
			}
			f.SignedHeader = &exchangev1.SignedHeader{}
			if err := proto.Unmarshal(val, f.SignedHeader); err != nil {
				return nil, err
			}
			continue
		}
		f.Payload = val
	}
	return f, nil
}

// onlyBytesField returns the value of field num of b when it is the only
// field, once.
func onlyBytesField(b []byte, num protowire.Number) ([]byte, error) {
	got, typ, n := protowire.ConsumeTag(b)
	if n < 0 || got != num || typ != protowire.BytesType {
		return nil, errUnknownLayout
	}
	val, m := protowire.ConsumeBytes(b[n:])
	if m < 0 || n+m != len(b) {
		return nil, errUnknownLayout
	}
	return val, nil
}
