package dvhc

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/testing/protocmp"

	dvhcv1 "github.com/ketnoi/ketnoi/proto/vn/gov/dvhc/v1"
)

const (
	full    = dvhcv1.MergeType_MERGE_TYPE_FULL
	partial = dvhcv1.MergeType_MERGE_TYPE_PARTIAL
	commune = dvhcv1.Level_LEVEL_COMMUNE
)

func TestConvertOldUnit(t *testing.T) {
	client := startServer(t, loaded(t))
	tests := []struct {
		name string
		old  string
		want *dvhcv1.ConvertOldUnitResponse
	}{
		{
			name: "Quán Thánh into Ba Đình",
			old:  "00013",
			want: &dvhcv1.ConvertOldUnitResponse{
				OldUnit: quanThanh2025,
				Successors: []*dvhcv1.Successor{
					{Unit: baDinh2026, MergeType: full},
				},
			},
		},
		{
			name: "split three ways, one code known only to the mapping",
			old:  "06886",
			want: &dvhcv1.ConvertOldUnitResponse{
				OldUnit: &dvhcv1.AdminUnit{
					Code: "06886", Name: "Hải Lạng", FullName: "Xã Hải Lạng",
					FullNameEn: "Hai Lang Commune", Level: commune,
					ParentCode: "199", Edition: Edition2025,
				},
				Successors: []*dvhcv1.Successor{
					{Unit: &dvhcv1.AdminUnit{
						Code: "06799", Name: "Hải Hoà", FullName: "Xã Hải Hoà",
						FullNameEn: "Hai Hoa Commune", Level: commune,
						ParentCode: "22", Edition: EditionCurrent,
					}, MergeType: partial},
					{Unit: &dvhcv1.AdminUnit{
						Code: "06886", Name: "Hải Lạng", FullName: "Xã Hải Lạng",
						FullNameEn: "Hai Lang Commune", Level: commune,
						ParentCode: "22", Edition: EditionCurrent,
					}, MergeType: partial},
					{Unit: &dvhcv1.AdminUnit{
						Code: "06970", FullName: "Xã Ba Chẽ", Level: commune,
						ParentCode: "22", Edition: EditionMapping,
					}, MergeType: partial},
				},
			},
		},
		{
			name: "Ia Mơ, renumbered in the 2026 list",
			old:  "23938",
			want: &dvhcv1.ConvertOldUnitResponse{
				OldUnit: &dvhcv1.AdminUnit{
					Code: "23938", Name: "Ia Mơ", FullName: "Xã Ia Mơ",
					FullNameEn: "Ia Mo Commune", Level: commune,
					ParentCode: "632", Edition: Edition2025,
				},
				Successors: []*dvhcv1.Successor{
					{Unit: &dvhcv1.AdminUnit{
						Code: "23737", FullName: "Xã Ia Mơ", Level: commune,
						ParentCode: "52", Edition: EditionMapping,
					}, MergeType: full},
				},
			},
		},
		{
			name: "old code missing from the 2025-03 list",
			old:  "07693",
			want: &dvhcv1.ConvertOldUnitResponse{
				Successors: []*dvhcv1.Successor{
					{Unit: &dvhcv1.AdminUnit{
						Code: "07682", Name: "Tân An", FullName: "Phường Tân An",
						FullNameEn: "Tan An Ward", Level: commune,
						ParentCode: "24", Edition: EditionCurrent,
					}, MergeType: full},
				},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, err := client.ConvertOldUnit(testContext(t),
				&dvhcv1.ConvertOldUnitRequest{OldCode: tt.old})
			if err != nil {
				t.Fatalf("ConvertOldUnit(%q): %v", tt.old, err)
			}
			if diff := cmp.Diff(tt.want, resp, protocmp.Transform()); diff != "" {
				t.Errorf("ConvertOldUnit(%q) (-want +got):\n%s", tt.old, diff)
			}
		})
	}
}

func TestConvertOldUnitErrors(t *testing.T) {
	client := startServer(t, loaded(t))
	tests := []struct {
		old  string
		want codes.Code
		msg  string
	}{
		{"", codes.InvalidArgument, `old_code: want 5 digits, got ""`},
		{"13", codes.InvalidArgument, `old_code: want 5 digits, got "13"`},
		{"318", codes.InvalidArgument, `old_code: want 5 digits, got "318"`},
		{"000013", codes.InvalidArgument, `old_code: want 5 digits, got "000013"`},
		{"0001x", codes.InvalidArgument, `old_code: want 5 digits, got "0001x"`},
		{"99999", codes.NotFound, `old_code "99999" not found in the 2025-07-01 mapping`},
	}
	for _, tt := range tests {
		t.Run(tt.old, func(t *testing.T) {
			resp, err := client.ConvertOldUnit(testContext(t),
				&dvhcv1.ConvertOldUnitRequest{OldCode: tt.old})
			if err == nil {
				t.Fatalf("ConvertOldUnit(%q) = %v, want an error", tt.old, resp)
			}
			wantStatus(t, err, tt.want, tt.msg)
		})
	}
}

// Synthetic data: the embedded mapping has no former commune split into
// both full and partial merges, so the order of successors is checked here.
const (
	synthCurrent = "level,code,name,full_name,parent_code\n" +
		"province,01,A,Tỉnh A,\n" +
		"ward,00001,B,Xã B,01\n" +
		"ward,00002,C,Xã C,01\n" +
		"ward,00003,D,Xã D,01\n"
	synthPrevious = "level,code,name,full_name,parent_code\n" +
		"province,01,A,Tỉnh A,\n" +
		"district,001,E,Huyện E,01\n" +
		"ward,00009,F,Xã F,001\n"
	synthMapping = "new_province_code,new_ward_code,new_ward_name,old_ward_code,merge_type\n" +
		"01,00003,Xã D,00009,partial\n" +
		"01,00002,Xã C,00009,full\n" +
		"01,00001,Xã B,00009,partial\n" +
		"01,00004,Xã G,00009,full\n"
)

func TestConvertOldUnitOrdersFullMergesFirst(t *testing.T) {
	d, err := loadFrom(strings.NewReader(synthCurrent), strings.NewReader(synthPrevious),
		strings.NewReader(synthMapping))
	if err != nil {
		t.Fatalf("loadFrom: %v", err)
	}
	client := startServer(t, d)
	resp, err := client.ConvertOldUnit(testContext(t),
		&dvhcv1.ConvertOldUnitRequest{OldCode: "00009"})
	if err != nil {
		t.Fatalf("ConvertOldUnit: %v", err)
	}
	var got []string
	for _, s := range resp.GetSuccessors() {
		got = append(got, s.GetUnit().GetCode()+" "+s.GetMergeType().String()+" "+
			s.GetUnit().GetEdition())
	}
	want := []string{
		"00002 MERGE_TYPE_FULL 2026-07",
		"00004 MERGE_TYPE_FULL 2025-07 mapping",
		"00001 MERGE_TYPE_PARTIAL 2026-07",
		"00003 MERGE_TYPE_PARTIAL 2026-07",
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("successors (-want +got):\n%s", diff)
	}
}
