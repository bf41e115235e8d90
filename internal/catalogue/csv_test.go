package catalogue

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/testing/protocmp"

	cataloguev1 "github.com/ketnoi/ketnoi/proto/ketnoi/catalogue/v1"
)

func TestReadCSV(t *testing.T) {
	tests := []struct {
		name       string
		in         string
		key        string
		wantFields []string
		want       []*cataloguev1.CodeEntry
	}{
		{
			name:       "leading zeros and empty columns",
			in:         "code,name,parent_code\n01,Hà Nội,\n00004,Ba Đình,01\n",
			key:        "code",
			wantFields: []string{"name", "parent_code"},
			want: []*cataloguev1.CodeEntry{
				{Code: "01", Fields: map[string]string{"name": "Hà Nội"}},
				{Code: "00004", Fields: map[string]string{"name": "Ba Đình", "parent_code": "01"}},
			},
		},
		{
			name:       "key column not first",
			in:         "name,alpha2,numeric\nViệt Nam,VN,704\n\"Virgin Islands, U.S.\",VI,850\n",
			key:        "alpha2",
			wantFields: []string{"name", "numeric"},
			want: []*cataloguev1.CodeEntry{
				{Code: "VN", Fields: map[string]string{"name": "Việt Nam", "numeric": "704"}},
				{Code: "VI", Fields: map[string]string{
					"name": "Virgin Islands, U.S.", "numeric": "850",
				}},
			},
		},
		{
			name:       "byte order mark and CRLF",
			in:         "\ufeffcode,name\r\n004,Afghanistan\r\n",
			key:        "code",
			wantFields: []string{"name"},
			want: []*cataloguev1.CodeEntry{
				{Code: "004", Fields: map[string]string{"name": "Afghanistan"}},
			},
		},
		{
			name:       "only a key column",
			in:         "code\n1\n2\n",
			key:        "code",
			wantFields: nil,
			want: []*cataloguev1.CodeEntry{
				{Code: "1", Fields: map[string]string{}},
				{Code: "2", Fields: map[string]string{}},
			},
		},
		{
			name:       "header only",
			in:         "code,name\n",
			key:        "code",
			wantFields: []string{"name"},
			want:       nil,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fields, entries, err := ReadCSV(strings.NewReader(tt.in), tt.key)
			if err != nil {
				t.Fatalf("ReadCSV: %v", err)
			}
			if diff := cmp.Diff(tt.wantFields, fields); diff != "" {
				t.Errorf("fields (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tt.want, entries, protocmp.Transform()); diff != "" {
				t.Errorf("entries (-want +got):\n%s", diff)
			}
		})
	}
}

func TestReadCSVErrors(t *testing.T) {
	tests := []struct {
		name string
		in   string
		key  string
		want string
	}{
		{
			name: "empty file",
			in:   "",
			key:  "code",
			want: "empty file: no header row",
		},
		{
			name: "missing key column",
			in:   "id,name\n1,a\n",
			key:  "code",
			want: `line 1: no key column "code" in header`,
		},
		{
			name: "empty column name",
			in:   "code,,name\n1,a,b\n",
			key:  "code",
			want: "line 1: column 2 has no name",
		},
		{
			name: "duplicate column name",
			in:   "code,name,name\n1,a,b\n",
			key:  "code",
			want: `line 1: duplicate column "name"`,
		},
		{
			name: "short row",
			in:   "code,name,parent_code\n01,Hà Nội,\n00004,Ba Đình\n",
			key:  "code",
			want: "line 3: 2 columns, header has 3",
		},
		{
			name: "long row",
			in:   "code,name\n01,Hà Nội,extra\n",
			key:  "code",
			want: "line 2: 3 columns, header has 2",
		},
		{
			name: "empty code",
			in:   "name,code\nBa Đình,00004\nNgọc Hà,\n",
			key:  "code",
			want: `line 3: empty code in column "code"`,
		},
		{
			name: "duplicate code",
			in: "code,name\n01,Hà Nội\n00004,Ba Đình\n00008,Ngọc Hà\n" +
				"00004,Ba Đình\n",
			key:  "code",
			want: `line 5: duplicate code "00004" (first on line 3)`,
		},
		{
			name: "duplicate code after a quoted line break",
			in:   "code,note\n1,\"two\nlines\"\n1,x\n",
			key:  "code",
			want: `line 4: duplicate code "1" (first on line 2)`,
		},
		{
			name: "malformed quoting",
			in:   "code,name\n1,a\"b\n",
			key:  "code",
			want: `parse error on line 2, column 4: bare " in non-quoted-field`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fields, entries, err := ReadCSV(strings.NewReader(tt.in), tt.key)
			if err == nil {
				t.Fatalf("ReadCSV = %q, %v; want error %q", fields, entries, tt.want)
			}
			if diff := cmp.Diff(tt.want, err.Error()); diff != "" {
				t.Errorf("error (-want +got):\n%s", diff)
			}
			if fields != nil || entries != nil {
				t.Errorf("ReadCSV returned %q and %d entries with an error", fields, len(entries))
			}
		})
	}
}
