package id

import (
	"math/rand/v2"
	"regexp"
	"testing"
)

// The byte-by-byte checks accept exactly what these expressions accept.
func TestGrammarMatchesExpressions(t *testing.T) {
	checks := []struct {
		name  string
		re    *regexp.Regexp
		valid func(string) bool
	}{
		{"instance", regexp.MustCompile(`^[A-Z][A-Z0-9-]{0,15}$`), validInstance},
		{"class", regexp.MustCompile(`^[A-Z][A-Z0-9]{0,15}$`), validClass},
		{"code", regexp.MustCompile(`^[0-9A-Z.]{1,35}$`), validCode},
		{"subsystem or node name", regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,63}$`), validLowerName},
		{"gRPC name", regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)+$`), ValidGRPCName},
	}
	const alphabet = "AZaz09._-/ \nGé"
	r := rand.New(rand.NewPCG(1, 2))
	inputs := []string{"", "VN", "NN", "000.00.00.G22", "vanban", "vn.gov.dvhc.v1.AdminUnitService", "a.b", ".a", "a.", "a..b",
		"VN-1", "-VN", "A234567890123456", "A2345678901234567", "x\n"}
	for range 20000 {
		n := r.IntN(70)
		b := make([]byte, n)
		for i := range b {
			b[i] = alphabet[r.IntN(len(alphabet))]
		}
		inputs = append(inputs, string(b))
	}
	for _, c := range checks {
		for _, in := range inputs {
			if got, want := c.valid(in), c.re.MatchString(in); got != want {
				t.Errorf("%s %q: %v, the expression says %v", c.name, in, got, want)
			}
		}
	}
}
