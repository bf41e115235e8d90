package gconf_test

import (
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/ketnoi/ketnoi/internal/sign"
	registryv1 "github.com/ketnoi/ketnoi/proto/ketnoi/registry/v1"
)

// signed signs cfg the way the registry publishes it.
func signed(t *testing.T, s *sign.Signer, cfg *registryv1.GlobalConfiguration) *registryv1.SignedConfiguration {
	t.Helper()
	raw, err := proto.Marshal(cfg)
	if err != nil {
		t.Fatalf("marshal configuration: %v", err)
	}
	sig, err := s.Sign(sign.TypeConfiguration, raw)
	if err != nil {
		t.Fatalf("sign configuration: %v", err)
	}
	return &registryv1.SignedConfiguration{
		Configuration:    raw,
		Signature:        sig,
		CertificateChain: [][]byte{s.Certificate().Raw},
	}
}

// config returns a small configuration of the given version.
func config(version uint64) *registryv1.GlobalConfiguration {
	now := time.Now()
	return &registryv1.GlobalConfiguration{
		Version:     version,
		IssuedAt:    timestamppb.New(now),
		ExpiresAt:   timestamppb.New(now.Add(time.Hour)),
		Instance:    "VN",
		TrustDomain: "vn.ketnoi",
		Members: []*registryv1.Member{
			{Id: "VN/NN/000.00.00.G22", Name: "Văn phòng Chính phủ", Subsystems: []string{"vanban"}},
		},
	}
}
