package proxy_test

import (
	"bytes"
	"testing"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/testing/protocmp"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/ketnoi/ketnoi/internal/proxy"
)

func TestCodecName(t *testing.T) {
	var c encoding.CodecV2 = proxy.NewCodec()
	if c.Name() != "proto" {
		t.Errorf("Name = %q, want proto", c.Name())
	}
}

func TestCodecFrameRoundTrip(t *testing.T) {
	c := proxy.NewCodec()
	tests := map[string][]byte{
		"empty": {},
		// Not a valid protobuf message: the codec must not care.
		"invalid protobuf": {0xff, 0xff, 0xff, 0x00, 0x01},
		"large":            bytes.Repeat([]byte{0x0a, 0x03, 'a', 'b', 'c'}, 10000),
	}
	for name, want := range tests {
		out, err := c.Marshal(proxy.NewFrame(bytes.Clone(want)))
		if err != nil {
			t.Fatalf("%s: Marshal: %v", name, err)
		}
		if got := out.Materialize(); !bytes.Equal(got, want) {
			t.Errorf("%s: marshalled %d bytes, want the %d input bytes", name, len(got), len(want))
		}

		// Receive the bytes in pooled, reference-counted buffers split in
		// two, as gRPC does, then release gRPC's reference.
		half := len(want) / 2
		in := mem.BufferSlice{
			mem.Copy(want[:half], mem.DefaultBufferPool()),
			mem.Copy(want[half:], mem.DefaultBufferPool()),
		}
		var f proxy.Frame
		if err := c.Unmarshal(in, &f); err != nil {
			t.Fatalf("%s: Unmarshal: %v", name, err)
		}
		in.Free()
		if f.Len() != len(want) {
			t.Errorf("%s: Len = %d, want %d", name, f.Len(), len(want))
		}
		if got := f.Bytes(); !bytes.Equal(got, want) {
			t.Errorf("%s: unmarshalled bytes differ from the received ones", name)
		}
		f.Free()
	}
}

func TestCodecMarshalTakesFrameBuffers(t *testing.T) {
	c := proxy.NewCodec()
	f := proxy.NewFrame([]byte("abc"))
	out, err := c.Marshal(f)
	if err != nil {
		t.Fatalf("Marshal: %v", err)
	}
	if f.Len() != 0 {
		t.Errorf("frame still holds %d bytes after Marshal handed them to gRPC", f.Len())
	}
	if got := string(out.Materialize()); got != "abc" {
		t.Errorf("Marshal = %q, want abc", got)
	}
	out.Free()
}

func TestCodecProtobufFallback(t *testing.T) {
	c := proxy.NewCodec()
	msg, err := structpb.NewStruct(map[string]any{"ma": "01", "ten": "Hà Nội", "cap": 1.0})
	if err != nil {
		t.Fatal(err)
	}
	want, err := proto.MarshalOptions{Deterministic: true}.Marshal(msg)
	if err != nil {
		t.Fatal(err)
	}

	out, err := c.Marshal(msg)
	if err != nil {
		t.Fatalf("Marshal(*structpb.Struct): %v", err)
	}
	got := &structpb.Struct{}
	if err := proto.Unmarshal(out.Materialize(), got); err != nil {
		t.Fatalf("marshalled bytes do not parse as protobuf: %v", err)
	}
	if diff := cmp.Diff(msg, got, protocmp.Transform()); diff != "" {
		t.Errorf("fallback Marshal mismatch (-want +got):\n%s", diff)
	}

	back := &structpb.Struct{}
	if err := c.Unmarshal(mem.BufferSlice{mem.SliceBuffer(want)}, back); err != nil {
		t.Fatalf("Unmarshal(*structpb.Struct): %v", err)
	}
	if diff := cmp.Diff(msg, back, protocmp.Transform()); diff != "" {
		t.Errorf("fallback Unmarshal mismatch (-want +got):\n%s", diff)
	}

	if _, err := c.Marshal("not a message"); err == nil {
		t.Errorf("Marshal of a string succeeded, want the fallback's error")
	}
	if err := c.Unmarshal(mem.BufferSlice{mem.SliceBuffer([]byte{0xff})}, &structpb.Struct{}); err == nil {
		t.Errorf("Unmarshal of invalid protobuf into a Struct succeeded")
	}
}
