package registry

import (
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/ketnoi/ketnoi/internal/pki/pkitest"
)

func TestOpenRejectsBadConfig(t *testing.T) {
	ca := pkitest.NewCA(t, testTD)
	other := pkitest.NewCA(t, testTD)
	good := Config{
		Instance:     "VN",
		TrustDomain:  trustDomain,
		Signer:       ca.RegistrySigner(t),
		TrustAnchors: ca.Bundle().X509Authorities(),
	}
	tests := []struct {
		name    string
		edit    func(*Config)
		wantErr string
	}{
		{"bad instance", func(c *Config) { c.Instance = "vn" }, `instance "vn"`},
		{"no trust domain", func(c *Config) { c.TrustDomain = spiffeid.TrustDomain{} }, "trust domain is not set"},
		{"bad class", func(c *Config) { c.Classes = []string{"NN", "x y"} }, `member class "x y"`},
		{"negative TTL", func(c *Config) { c.ConfigTTL = -1 }, "configuration TTL"},
		{"TTL over a month", func(c *Config) { c.ConfigTTL = MaxConfigTTL + time.Second },
			"configuration TTL 720h0m1s is longer than 720h0m0s"},
		{"no anchors", func(c *Config) { c.TrustAnchors = nil }, "no trust anchors"},
		{"no signer", func(c *Config) { c.Signer = nil }, "configuration signer is not set"},
		{"member signer", func(c *Config) { c.Signer = ca.Signer(t, memberG22) }, "signing certificate: want the single URI SAN urn:ketnoi:registry"},
		{"signer of another CA", func(c *Config) { c.Signer = other.RegistrySigner(t) }, "signing certificate: signing certificate is not trusted"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := good
			tt.edit(&cfg)
			path := filepath.Join(t.TempDir(), "registry.db")
			r, err := Open(path, cfg)
			if err == nil {
				r.Close()
				t.Fatalf("Open succeeded, want error containing %q", tt.wantErr)
			}
			if !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("Open error = %q, want it to contain %q", err, tt.wantErr)
			}
		})
	}
}
