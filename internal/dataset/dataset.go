// Package dataset embeds the third-party shared-catalogue data that ketnoi
// ships for development, tests and the administrative-units backend: the
// Vietnamese administrative units before and after the July 2025
// reorganisation, the mapping from former to new communes, and the ISO 3166
// country list.
//
// The files are UTF-8 CSV with a header row; codes are text and keep their
// leading zeros. Their sources, copyright notices and the MIT licence they
// are redistributed under are in data/NOTICE.md, which must travel with them.
package dataset

import (
	"embed"
	"fmt"
	"io"
	"io/fs"
	"path"
)

// File names of the embedded CSV files, for [Open] and paths under "data/"
// in [FS].
const (
	// AdminUnits2026 is the two-level list (34 provinces and their communes)
	// as of July 2026.
	AdminUnits2026 = "vn_admin_units_34_provinces_2026-07.csv"
	// AdminUnits2025 is the three-level list (63 provinces, districts,
	// communes) in force from March to June 2025.
	AdminUnits2025 = "vn_admin_units_63_provinces_2025-03.csv"
	// WardMapping2025 links each former commune to the new commune or
	// communes it became part of on 2025-07-01.
	WardMapping2025 = "vn_ward_mapping_old_to_new_2025-07-01.csv"
	// Countries is the ISO 3166-1 country list with Vietnamese and English
	// names.
	Countries = "iso3166_countries_vi_en.csv"
)

// FS holds the embedded files under the directory "data".
//
//go:embed data/*.csv
var FS embed.FS

// Open opens the embedded file name, one of the file name constants. It
// fails with an error wrapping [fs.ErrNotExist] for any other name.
func Open(name string) (io.ReadCloser, error) {
	if !fs.ValidPath(name) || path.Base(name) != name {
		return nil, fmt.Errorf("open dataset %q: %w", name, fs.ErrNotExist)
	}
	f, err := FS.Open(path.Join("data", name))
	if err != nil {
		return nil, fmt.Errorf("open dataset %q: %w", name, err)
	}
	return f, nil
}
