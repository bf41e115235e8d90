package dvhc

import (
	"cmp"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"slices"

	dvhcv1 "github.com/ketnoi/ketnoi/proto/vn/gov/dvhc/v1"
)

// mappingColumns are the mapping file's columns used here.
var mappingColumns = []string{
	"new_province_code", "new_ward_code", "new_ward_name", "old_ward_code", "merge_type",
}

var mergeTypes = map[string]dvhcv1.MergeType{
	"full":    dvhcv1.MergeType_MERGE_TYPE_FULL,
	"partial": dvhcv1.MergeType_MERGE_TYPE_PARTIAL,
}

// readMapping parses the old-to-new mapping into links by former code, each
// list ordered full merges first, then by new code.
func readMapping(r io.Reader) (map[string][]link, error) {
	cr := csv.NewReader(r)
	header, err := cr.Read()
	if errors.Is(err, io.EOF) {
		return nil, errors.New("empty file: no header row")
	}
	if err != nil {
		return nil, err
	}
	col, err := columnIndex(header, mappingColumns)
	if err != nil {
		return nil, err
	}

	links := make(map[string][]link)
	for {
		rec, err := cr.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, err
		}
		line, _ := cr.FieldPos(0)
		old := rec[col["old_ward_code"]]
		mt, ok := mergeTypes[rec[col["merge_type"]]]
		if !ok {
			return nil, fmt.Errorf("line %d: unknown merge_type %q", line, rec[col["merge_type"]])
		}
		if old == "" || rec[col["new_ward_code"]] == "" {
			return nil, fmt.Errorf("line %d: empty ward code", line)
		}
		links[old] = append(links[old], link{
			newCode:      rec[col["new_ward_code"]],
			newName:      rec[col["new_ward_name"]],
			provinceCode: rec[col["new_province_code"]],
			mergeType:    mt,
		})
	}

	for _, ls := range links {
		slices.SortFunc(ls, func(a, b link) int {
			if a.mergeType != b.mergeType {
				if a.mergeType == dvhcv1.MergeType_MERGE_TYPE_FULL {
					return -1
				}
				return 1
			}
			return cmp.Compare(a.newCode, b.newCode)
		})
	}
	return links, nil
}

// columnIndex returns the index of each wanted column in header.
func columnIndex(header, want []string) (map[string]int, error) {
	col := make(map[string]int, len(want))
	for i, name := range header {
		col[name] = i
	}
	for _, name := range want {
		if _, ok := col[name]; !ok {
			return nil, fmt.Errorf("line 1: no column %q in header", name)
		}
	}
	return col, nil
}
