package sign_test

import (
	"bytes"
	"testing"

	"github.com/ketnoi/ketnoi/internal/pki/pkitest"
	"github.com/ketnoi/ketnoi/internal/sign"
)

// A signed exchange header is a few hundred bytes; one signature covers a
// commit's batch of headers, one verification each batch a peer receives.
func BenchmarkSignature(b *testing.B) {
	ca := pkitest.NewCA(b, "vn.ketnoi")
	s := ca.Signer(b, member)
	body := bytes.Repeat([]byte{0x5a}, 300)
	sig, err := s.Sign(sign.TypeConfiguration, body)
	if err != nil {
		b.Fatal(err)
	}
	b.Run("sign", func(b *testing.B) {
		for b.Loop() {
			if _, err := s.Sign(sign.TypeConfiguration, body); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("verify", func(b *testing.B) {
		for b.Loop() {
			if err := sign.Verify(s.Certificate(), sign.TypeConfiguration, body, sig); err != nil {
				b.Fatal(err)
			}
		}
	})
}
