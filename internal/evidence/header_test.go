package evidence

import (
	"bytes"
	"testing"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	exchangev1 "github.com/ketnoi/ketnoi/proto/ketnoi/exchange/v1"
)

// TestHeaderSignerSumReadsLikeUnmarshal pins the field headerSignerSum
// scans for to the proto, and its answers to proto.Unmarshal's.
func TestHeaderSignerSumReadsLikeUnmarshal(t *testing.T) {
	fd := (&exchangev1.Header{}).ProtoReflect().Descriptor().Fields().ByName("signer_certificate_sha256")
	if fd == nil || fd.Number() != 23 {
		t.Fatalf("signer_certificate_sha256 is field %v of Header; headerSignerSum reads 23", fd.Number())
	}
	full, err := proto.Marshal(&exchangev1.Header{
		MessageId: "m-1", Method: "Get", Sequence: 7, Final: true,
		PayloadSha256: bytes.Repeat([]byte{1}, 32), SignerCertificateSha256: bytes.Repeat([]byte{2}, 32),
	})
	if err != nil {
		t.Fatal(err)
	}
	// A repeated occurrence: the last one wins, as in Unmarshal.
	twice := protowire.AppendBytes(protowire.AppendTag(append([]byte(nil), full...), 23, protowire.BytesType),
		bytes.Repeat([]byte{3}, 32))
	none, err := proto.Marshal(&exchangev1.Header{MessageId: "m-2"})
	if err != nil {
		t.Fatal(err)
	}
	for name, b := range map[string][]byte{"full": full, "twice": twice, "absent": none, "empty": nil} {
		var h exchangev1.Header
		if err := proto.Unmarshal(b, &h); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		got, err := headerSignerSum(b)
		if err != nil || !bytes.Equal(got, h.GetSignerCertificateSha256()) {
			t.Errorf("%s: headerSignerSum = %x, %v; Unmarshal read %x", name, got, err, h.GetSignerCertificateSha256())
		}
	}
	for name, b := range map[string][]byte{
		"truncated":  full[:len(full)-5],
		"bad tag":    {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff},
		"group type": protowire.AppendTag(nil, 23, protowire.StartGroupType),
	} {
		if _, err := headerSignerSum(b); err == nil {
			t.Errorf("%s: headerSignerSum accepted malformed bytes", name)
		}
	}
}
