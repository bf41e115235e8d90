package exchange

import (
	"testing"

	"google.golang.org/protobuf/proto"

	exchangev1 "github.com/ketnoi/ketnoi/proto/ketnoi/exchange/v1"
)

// frameSize counts what proto.Size would, at the lengths where varints
// grow a byte and for empty fields.
func TestFrameSize(t *testing.T) {
	for _, h := range []int{0, 1, 125, 126, 127, 128, 16380, 16384, 70000} {
		for _, p := range []int{0, 1, 127, 128, 16383, 16384, 2097151, 2097152} {
			f := &exchangev1.Frame{SignedHeader: &exchangev1.SignedHeader{Header: make([]byte, h)}, Payload: make([]byte, p)}
			if got, want := frameSize(h, p), proto.Size(f); got != want {
				t.Errorf("frameSize(%d, %d) = %d, want %d", h, p, got, want)
			}
		}
	}
}
