package exchange_test

import (
	"bytes"
	"testing"

	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/ketnoi/ketnoi/internal/exchange"
	exchangev1 "github.com/ketnoi/ketnoi/proto/ketnoi/exchange/v1"
)

func frameOf(payloadLen int) *exchangev1.Frame {
	p := make([]byte, payloadLen)
	for i := range p {
		p[i] = byte(i * 7)
	}
	return &exchangev1.Frame{
		SignedHeader: &exchangev1.SignedHeader{Header: []byte("header bytes"), Signature: []byte("sig"),
			Batch: &exchangev1.BatchProof{Root: bytes.Repeat([]byte{1}, 32), Size: 3, Index: 2, Hashes: [][]byte{bytes.Repeat([]byte{2}, 32)}}},
		Payload: p,
	}
}

// What the codec writes is what the standard codec reads, and the other
// way round, for small and large payloads and both message types.
func TestCodecIsPlainProtobuf(t *testing.T) {
	c := exchange.NewCodec()
	for _, n := range []int{0, 100, 16 << 10, 1 << 20} {
		for _, msg := range []proto.Message{
			&exchangev1.ExchangeRequest{Frame: frameOf(n)},
			&exchangev1.ExchangeResponse{Frame: frameOf(n)},
		} {
			out, err := c.Marshal(msg)
			if err != nil {
				t.Fatal(err)
			}
			wire := out.Materialize()
			want, _ := proto.Marshal(msg)
			if !bytes.Equal(wire, want) {
				t.Errorf("%T with %d B payload: codec wrote %d bytes, standard protobuf %d", msg, n, len(wire), len(want))
			}
			back := msg.ProtoReflect().New().Interface()
			if err := c.Unmarshal(mem.BufferSlice{mem.SliceBuffer(want)}, back); err != nil {
				t.Fatal(err)
			}
			if !proto.Equal(back, msg) {
				t.Errorf("%T with %d B payload: read back differs", msg, n)
			}
		}
	}
}

// A large payload is not copied on the way out.
func TestCodecHandsPayloadOver(t *testing.T) {
	c := exchange.NewCodec()
	f := frameOf(64 << 10)
	out, err := c.Marshal(&exchangev1.ExchangeResponse{Frame: f})
	if err != nil {
		t.Fatal(err)
	}
	if len(out) != 2 || &out[1].ReadOnlyData()[0] != &f.Payload[0] {
		t.Errorf("payload copied: %d buffers", len(out))
	}
}

// Fields the fast path does not know fall back to the standard codec, so
// nothing is dropped.
func TestCodecKeepsUnknownFields(t *testing.T) {
	c := exchange.NewCodec()
	msg := &exchangev1.ExchangeRequest{Frame: frameOf(32 << 10)}
	wire, _ := proto.Marshal(msg)
	wire = protowire.AppendTag(wire, 99, protowire.VarintType)
	wire = protowire.AppendVarint(wire, 42)
	var got exchangev1.ExchangeRequest
	if err := c.Unmarshal(mem.BufferSlice{mem.SliceBuffer(wire)}, &got); err != nil {
		t.Fatal(err)
	}
	if !proto.Equal(got.GetFrame(), msg.GetFrame()) || len(got.ProtoReflect().GetUnknown()) == 0 {
		t.Fatal("frame with an unknown field not read like the standard codec reads it")
	}
	out, err := c.Marshal(&got)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(out.Materialize(), wire) {
		t.Error("unknown field lost on the way out")
	}
	// A truncated message is an error, not a short payload.
	var bad exchangev1.ExchangeRequest
	full, _ := proto.Marshal(msg)
	if err := c.Unmarshal(mem.BufferSlice{mem.SliceBuffer(full[:len(full)-10])}, &bad); err == nil {
		t.Error("truncated frame accepted")
	}
}
