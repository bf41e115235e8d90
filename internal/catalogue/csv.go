package catalogue

import (
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"strings"

	cataloguev1 "github.com/ketnoi/ketnoi/proto/ketnoi/catalogue/v1"
)

// ReadCSV reads a code list from CSV (comma separated, header row, UTF-8; a
// leading byte order mark is ignored). The column named keyColumn gives each
// entry's code, kept exactly as written; every other non-empty column of the
// row goes into the entry's fields under its header name. fields lists the
// header names other than keyColumn, in header order.
//
// Entries are returned in file order. ReadCSV fails, naming the line, on an
// empty file, a header without keyColumn or with an empty or repeated column
// name, a row whose number of columns differs from the header's, an empty
// code, a code seen on an earlier line, and malformed CSV.
func ReadCSV(
	r io.Reader,
	keyColumn string,
) (fields []string, entries []*cataloguev1.CodeEntry, err error) {
	cr := csv.NewReader(r)
	cr.FieldsPerRecord = -1

	header, err := cr.Read()
	if errors.Is(err, io.EOF) {
		return nil, nil, errors.New("empty file: no header row")
	}
	if err != nil {
		return nil, nil, err
	}
	key, err := checkHeader(header, keyColumn)
	if err != nil {
		return nil, nil, err
	}
	for i, name := range header {
		if i != key {
			fields = append(fields, name)
		}
	}

	firstLine := make(map[string]int)
	for {
		rec, err := cr.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, nil, err
		}
		line, _ := cr.FieldPos(0)
		e, err := entryFromRecord(header, key, rec)
		if err != nil {
			return nil, nil, fmt.Errorf("line %d: %w", line, err)
		}
		if first, ok := firstLine[e.Code]; ok {
			return nil, nil, fmt.Errorf("line %d: duplicate code %q (first on line %d)",
				line, e.Code, first)
		}
		firstLine[e.Code] = line
		entries = append(entries, e)
	}
	return fields, entries, nil
}

// checkHeader validates the header row and returns the index of keyColumn.
func checkHeader(header []string, keyColumn string) (int, error) {
	header[0] = strings.TrimPrefix(header[0], "\ufeff")
	key := -1
	seen := make(map[string]bool, len(header))
	for i, name := range header {
		if name == "" {
			return 0, fmt.Errorf("line 1: column %d has no name", i+1)
		}
		if seen[name] {
			return 0, fmt.Errorf("line 1: duplicate column %q", name)
		}
		seen[name] = true
		if name == keyColumn {
			key = i
		}
	}
	if key < 0 {
		return 0, fmt.Errorf("line 1: no key column %q in header", keyColumn)
	}
	return key, nil
}

// entryFromRecord builds the entry of one data row.
func entryFromRecord(header []string, key int, rec []string) (*cataloguev1.CodeEntry, error) {
	if len(rec) != len(header) {
		return nil, fmt.Errorf("%d columns, header has %d", len(rec), len(header))
	}
	if rec[key] == "" {
		return nil, fmt.Errorf("empty code in column %q", header[key])
	}
	e := &cataloguev1.CodeEntry{Code: rec[key], Fields: make(map[string]string, len(rec)-1)}
	for i, v := range rec {
		if i != key && v != "" {
			e.Fields[header[i]] = v
		}
	}
	return e, nil
}
