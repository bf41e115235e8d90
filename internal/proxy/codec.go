// Package proxy holds the pieces a node needs to carry gRPC messages it does
// not know the types of: a codec that keeps each message as its exact wire
// bytes, and the call-shape descriptors for raw streams.
package proxy

import (
	"google.golang.org/grpc/encoding"
	_ "google.golang.org/grpc/encoding/proto" // registers the fallback codec
	"google.golang.org/grpc/mem"
)

// Frame is one gRPC message kept as its exact wire bytes. The bytes are
// never parsed, so what is hashed and signed is exactly what was received.
type Frame struct {
	data mem.BufferSlice
}

// NewFrame wraps b; the frame does not copy it.
func NewFrame(b []byte) *Frame {
	return &Frame{data: mem.BufferSlice{mem.SliceBuffer(b)}}
}

// Bytes returns the message bytes as one slice.
func (f *Frame) Bytes() []byte { return f.data.Materialize() }

// Len returns the message length in bytes.
func (f *Frame) Len() int { return f.data.Len() }

// Free returns the frame's buffers to gRPC's pool.
func (f *Frame) Free() { f.data.Free(); f.data = nil }

// Codec is a gRPC CodecV2 that moves Frames without copying and falls back
// to the standard protobuf codec for every other type, so the node's own
// services (health, reflection) keep working on the same server.
//
// Its name is "proto": gRPC uses the codec name as the content subtype, and
// peers must see ordinary protobuf traffic.
type Codec struct {
	fallback encoding.CodecV2
}

// NewCodec returns the raw codec.
func NewCodec() *Codec { return &Codec{fallback: encoding.GetCodecV2("proto")} }

// Name returns "proto".
func (*Codec) Name() string { return "proto" }

// Marshal hands a Frame's buffers to gRPC, which frees them after writing.
func (c *Codec) Marshal(v any) (mem.BufferSlice, error) {
	if f, ok := v.(*Frame); ok {
		out := f.data
		f.data = nil
		return out, nil
	}
	return c.fallback.Marshal(v)
}

// Unmarshal keeps a reference to the received buffers in a Frame.
func (c *Codec) Unmarshal(data mem.BufferSlice, v any) error {
	if f, ok := v.(*Frame); ok {
		data.Ref()
		f.data = data
		return nil
	}
	return c.fallback.Unmarshal(data, v)
}
