package catalogue

import (
	"testing"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/testing/protocmp"

	"github.com/ketnoi/ketnoi/internal/dataset"
	cataloguev1 "github.com/ketnoi/ketnoi/proto/ketnoi/catalogue/v1"
)

func readDataset(t testing.TB, name, key string) ([]string, []*cataloguev1.CodeEntry) {
	t.Helper()
	rc, err := dataset.Open(name)
	if err != nil {
		t.Fatalf("open %s: %v", name, err)
	}
	defer rc.Close()
	fields, entries, err := ReadCSV(rc, key)
	if err != nil {
		t.Fatalf("ReadCSV(%s): %v", name, err)
	}
	return fields, entries
}

func findEntry(entries []*cataloguev1.CodeEntry, code string) *cataloguev1.CodeEntry {
	for _, e := range entries {
		if e.Code == code {
			return e
		}
	}
	return nil
}

func TestReadEmbeddedDatasets(t *testing.T) {
	tests := []struct {
		file       string
		key        string
		count      int
		wantFields []string
		sample     *cataloguev1.CodeEntry
	}{
		{
			file:  dataset.AdminUnits2026,
			key:   "code",
			count: 3355,
			wantFields: []string{
				"level", "name", "name_en", "full_name", "full_name_en", "code_name",
				"parent_code", "unit_type", "unit_type_full", "unit_type_en",
			},
			sample: &cataloguev1.CodeEntry{Code: "00004", Fields: map[string]string{
				"level": "ward", "name": "Ba Đình", "name_en": "Ba Dinh",
				"full_name": "Phường Ba Đình", "full_name_en": "Ba Dinh Ward",
				"code_name": "ba_dinh", "parent_code": "01", "unit_type": "Phường",
				"unit_type_full": "Phường", "unit_type_en": "Ward",
			}},
		},
		{
			file:  dataset.AdminUnits2025,
			key:   "code",
			count: 10794,
			wantFields: []string{
				"level", "name", "name_en", "full_name", "full_name_en", "code_name",
				"parent_code",
			},
			sample: &cataloguev1.CodeEntry{Code: "001", Fields: map[string]string{
				"level": "district", "name": "Ba Đình", "name_en": "Ba Dinh",
				"full_name": "Quận Ba Đình", "full_name_en": "Ba Dinh District",
				"code_name": "ba_dinh", "parent_code": "01",
			}},
		},
		{
			file:  dataset.Countries,
			key:   "alpha2",
			count: 250,
			wantFields: []string{
				"alpha3", "numeric", "name_vi", "name_en", "other_names_vi", "other_names_en",
			},
			sample: &cataloguev1.CodeEntry{Code: "VN", Fields: map[string]string{
				"alpha3": "VNM", "numeric": "704", "name_vi": "Việt Nam",
				"name_en": "Vietnam",
			}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			fields, entries := readDataset(t, tt.file, tt.key)
			if got := len(entries); got != tt.count {
				t.Errorf("%d entries, want %d", got, tt.count)
			}
			if diff := cmp.Diff(tt.wantFields, fields); diff != "" {
				t.Errorf("fields (-want +got):\n%s", diff)
			}
			got := findEntry(entries, tt.sample.Code)
			if diff := cmp.Diff(tt.sample, got, protocmp.Transform()); diff != "" {
				t.Errorf("entry %q (-want +got):\n%s", tt.sample.Code, diff)
			}
		})
	}
}

func TestReadEmbeddedProvinceHasNoParent(t *testing.T) {
	_, entries := readDataset(t, dataset.AdminUnits2026, "code")
	hanoi := findEntry(entries, "01")
	if hanoi == nil {
		t.Fatalf("province 01 not found")
	}
	if v, ok := hanoi.Fields["parent_code"]; ok {
		t.Errorf("province 01 has parent_code %q, want no such field", v)
	}
	if got, want := hanoi.Fields["full_name"], "Thành phố Hà Nội"; got != want {
		t.Errorf("province 01 full_name = %q, want %q", got, want)
	}
}

func BenchmarkReadCSV2025(b *testing.B) {
	for b.Loop() {
		readDataset(b, dataset.AdminUnits2025, "code")
	}
}

func BenchmarkDigest2025(b *testing.B) {
	_, entries := readDataset(b, dataset.AdminUnits2025, "code")
	b.ResetTimer()
	for b.Loop() {
		Digest(entries)
	}
}
