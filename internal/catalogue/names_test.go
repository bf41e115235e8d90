package catalogue

import (
	"strings"
	"testing"
)

func TestValidListName(t *testing.T) {
	tests := []struct {
		in   string
		want bool
	}{
		{"vn-admin-units", true},
		{"iso3166", true},
		{"a", true},
		{"-", true},
		{strings.Repeat("a", 64), true},
		{"", false},
		{strings.Repeat("a", 65), false},
		{"VN-admin-units", false},
		{"vn_admin_units", false},
		{"vn.admin", false},
		{"vn admin", false},
		{"đơn-vị", false},
	}
	for _, tt := range tests {
		if got := ValidListName(tt.in); got != tt.want {
			t.Errorf("ValidListName(%q) = %v, want %v", tt.in, got, tt.want)
		}
	}
}

func TestValidVersion(t *testing.T) {
	tests := []struct {
		in   string
		want bool
	}{
		{"2026-07", true},
		{"v4.2.0", true},
		{"2025_03.RC-1", true},
		{strings.Repeat("9", 32), true},
		{"", false},
		{strings.Repeat("9", 33), false},
		{"2026/07", false},
		{"2026 07", false},
		{"2026-07\n", false},
		{"bản-1", false},
	}
	for _, tt := range tests {
		if got := ValidVersion(tt.in); got != tt.want {
			t.Errorf("ValidVersion(%q) = %v, want %v", tt.in, got, tt.want)
		}
	}
}
