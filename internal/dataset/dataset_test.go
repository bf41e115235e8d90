package dataset

import (
	"bufio"
	"errors"
	"io"
	"io/fs"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/google/go-cmp/cmp"
)

func TestOpenReadsHeaderAndRowCount(t *testing.T) {
	tests := []struct {
		name   string
		header string
		rows   int
	}{
		{
			AdminUnits2026,
			"level,code,name,name_en,full_name,full_name_en,code_name," +
				"parent_code,unit_type,unit_type_full,unit_type_en",
			3355,
		},
		{
			AdminUnits2025,
			"level,code,name,name_en,full_name,full_name_en,code_name,parent_code",
			10794,
		},
		{
			WardMapping2025,
			"new_province_code,new_province_name,new_ward_code,new_ward_name," +
				"old_ward_code,old_ward_name,merge_type",
			10604,
		},
		{
			Countries,
			"alpha2,alpha3,numeric,name_vi,name_en,other_names_vi,other_names_en",
			250,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rc, err := Open(tt.name)
			if err != nil {
				t.Fatalf("Open(%q): %v", tt.name, err)
			}
			defer rc.Close()
			var lines []string
			sc := bufio.NewScanner(rc)
			for sc.Scan() {
				lines = append(lines, sc.Text())
			}
			if err := sc.Err(); err != nil {
				t.Fatalf("reading %s: %v", tt.name, err)
			}
			if len(lines) == 0 {
				t.Fatalf("%s is empty", tt.name)
			}
			if diff := cmp.Diff(tt.header, lines[0]); diff != "" {
				t.Errorf("%s header (-want +got):\n%s", tt.name, diff)
			}
			if got := len(lines) - 1; got != tt.rows {
				t.Errorf("%s has %d data lines, want %d", tt.name, got, tt.rows)
			}
		})
	}
}

func TestOpenRejectsOtherNames(t *testing.T) {
	names := []string{
		"", "missing.csv", "../dataset.go", "data/" + Countries, "NOTICE.md",
	}
	for _, name := range names {
		rc, err := Open(name)
		if err == nil {
			rc.Close()
			t.Errorf("Open(%q) succeeded, want an error", name)
			continue
		}
		if !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("Open(%q) = %v, want an error wrapping fs.ErrNotExist", name, err)
		}
	}
}

func TestFSHoldsOnlyTheCSVFiles(t *testing.T) {
	entries, err := fs.ReadDir(FS, "data")
	if err != nil {
		t.Fatalf("ReadDir: %v", err)
	}
	var got []string
	for _, e := range entries {
		got = append(got, e.Name())
	}
	want := []string{Countries, AdminUnits2026, AdminUnits2025, WardMapping2025}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("embedded files (-want +got):\n%s", diff)
	}
}

func TestFilesAreUTF8WithoutBOM(t *testing.T) {
	names := []string{AdminUnits2026, AdminUnits2025, WardMapping2025, Countries}
	for _, name := range names {
		rc, err := Open(name)
		if err != nil {
			t.Fatalf("Open(%q): %v", name, err)
		}
		b, err := io.ReadAll(rc)
		rc.Close()
		if err != nil {
			t.Fatalf("reading %s: %v", name, err)
		}
		if !utf8.Valid(b) {
			t.Errorf("%s is not valid UTF-8", name)
		}
		if strings.HasPrefix(string(b), "\ufeff") {
			t.Errorf("%s starts with a byte order mark", name)
		}
		if strings.Contains(string(b), "\r") {
			t.Errorf("%s contains carriage returns", name)
		}
		if !strings.HasSuffix(string(b), "\n") {
			t.Errorf("%s does not end with a newline", name)
		}
	}
}
