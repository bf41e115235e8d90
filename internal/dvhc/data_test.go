package dvhc

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestLoadCounts(t *testing.T) {
	d := loaded(t)
	got := map[string]int{
		"units " + EditionCurrent: len(d.editions[EditionCurrent].units),
		"units " + Edition2025:    len(d.editions[Edition2025].units),
		"former units in mapping": len(d.links),
	}
	want := map[string]int{
		"units " + EditionCurrent: 3355,
		"units " + Edition2025:    10794,
		"former units in mapping": 10052,
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("loaded counts (-want +got):\n%s", diff)
	}
}

func TestLoadFromErrors(t *testing.T) {
	tests := []struct {
		name                       string
		current, previous, mapping string
		want                       string
	}{
		{
			name:     "unknown level",
			current:  "level,code\nprovince,01\nhamlet,00001\n",
			previous: synthPrevious,
			mapping:  synthMapping,
			want:     `load edition 2026-07: unit "00001": unknown level "hamlet"`,
		},
		{
			name:     "duplicate code",
			current:  synthCurrent,
			previous: synthPrevious + "ward,00009,F,Xã F,001\n",
			mapping:  synthMapping,
			want: `load edition 2025-03: line 5: duplicate code "00009" ` +
				`(first on line 4)`,
		},
		{
			name:     "empty edition",
			current:  "level,code\n",
			previous: synthPrevious,
			mapping:  synthMapping,
			want:     "load edition 2026-07: no units",
		},
		{
			name:     "unknown merge type",
			current:  synthCurrent,
			previous: synthPrevious,
			mapping:  synthMapping + "01,00001,Xã B,00008,some\n",
			want:     `load mapping: line 6: unknown merge_type "some"`,
		},
		{
			name:     "missing mapping column",
			current:  synthCurrent,
			previous: synthPrevious,
			mapping:  "new_ward_code,old_ward_code,merge_type\n00001,00009,full\n",
			want:     `load mapping: line 1: no column "new_province_code" in header`,
		},
		{
			name:     "empty mapping",
			current:  synthCurrent,
			previous: synthPrevious,
			mapping:  "",
			want:     "load mapping: empty file: no header row",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := loadFrom(strings.NewReader(tt.current), strings.NewReader(tt.previous),
				strings.NewReader(tt.mapping))
			if err == nil {
				t.Fatalf("loadFrom succeeded, want error %q", tt.want)
			}
			if diff := cmp.Diff(tt.want, err.Error()); diff != "" {
				t.Errorf("error (-want +got):\n%s", diff)
			}
		})
	}
}

func BenchmarkLoad(b *testing.B) {
	for b.Loop() {
		if _, err := Load(); err != nil {
			b.Fatal(err)
		}
	}
}
