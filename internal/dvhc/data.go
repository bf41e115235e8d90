package dvhc

import (
	"cmp"
	"errors"
	"fmt"
	"io"
	"slices"

	"github.com/ketnoi/ketnoi/internal/catalogue"
	"github.com/ketnoi/ketnoi/internal/dataset"
	dvhcv1 "github.com/ketnoi/ketnoi/proto/vn/gov/dvhc/v1"
)

// Edition labels, as carried in AdminUnit.edition.
const (
	// EditionCurrent is the two-level structure of July 2026, the default.
	EditionCurrent = "2026-07"
	// Edition2025 is the three-level structure in force from 2025-03-01 to
	// 2025-06-30.
	Edition2025 = "2025-03"
	// EditionMapping marks a new commune built from the 2025-07-01 mapping
	// because its code is missing from [EditionCurrent].
	EditionMapping = "2025-07 mapping"
)

// Data holds both editions and the old-to-new mapping, parsed once by
// [Load]. It is read-only after loading and safe for concurrent use.
type Data struct {
	editions map[string]*edition
	// links maps a former commune code to the new communes it went into,
	// full merges first, then by new code.
	links map[string][]link
}

// edition is one published list of units.
type edition struct {
	units map[string]*dvhcv1.AdminUnit
	// children maps a unit code to the units directly under it, in code
	// order.
	children map[string][]*dvhcv1.AdminUnit
}

// link is one row of the old-to-new mapping.
type link struct {
	newCode      string
	newName      string
	provinceCode string
	mergeType    dvhcv1.MergeType
}

// Load parses the embedded 2026-07 and 2025-03 unit lists and the 2025-07-01
// mapping. It fails only if the embedded data is malformed.
func Load() (*Data, error) {
	files := []string{dataset.AdminUnits2026, dataset.AdminUnits2025, dataset.WardMapping2025}
	var readers []io.Reader
	for _, name := range files {
		rc, err := dataset.Open(name)
		if err != nil {
			return nil, fmt.Errorf("load administrative units: %w", err)
		}
		defer rc.Close()
		readers = append(readers, rc)
	}
	return loadFrom(readers[0], readers[1], readers[2])
}

// loadFrom builds Data from the CSV text of the current edition, the 2025-03
// edition and the mapping.
func loadFrom(current, previous, mapping io.Reader) (*Data, error) {
	cur, err := readEdition(current, EditionCurrent)
	if err != nil {
		return nil, fmt.Errorf("load edition %s: %w", EditionCurrent, err)
	}
	prev, err := readEdition(previous, Edition2025)
	if err != nil {
		return nil, fmt.Errorf("load edition %s: %w", Edition2025, err)
	}
	links, err := readMapping(mapping)
	if err != nil {
		return nil, fmt.Errorf("load mapping: %w", err)
	}
	return &Data{
		editions: map[string]*edition{EditionCurrent: cur, Edition2025: prev},
		links:    links,
	}, nil
}

// editionNames lists the editions served, current first.
var editionNames = []string{EditionCurrent, Edition2025}

var levels = map[string]dvhcv1.Level{
	"province": dvhcv1.Level_LEVEL_PROVINCE,
	"district": dvhcv1.Level_LEVEL_DISTRICT,
	"ward":     dvhcv1.Level_LEVEL_COMMUNE,
}

// readEdition parses one unit list.
func readEdition(r io.Reader, name string) (*edition, error) {
	_, entries, err := catalogue.ReadCSV(r, "code")
	if err != nil {
		return nil, err
	}
	if len(entries) == 0 {
		return nil, errors.New("no units")
	}

	ed := &edition{
		units:    make(map[string]*dvhcv1.AdminUnit, len(entries)),
		children: make(map[string][]*dvhcv1.AdminUnit),
	}
	for _, e := range entries {
		f := e.GetFields()
		level, ok := levels[f["level"]]
		if !ok {
			return nil, fmt.Errorf("unit %q: unknown level %q", e.GetCode(), f["level"])
		}
		u := &dvhcv1.AdminUnit{
			Code:       e.GetCode(),
			Name:       f["name"],
			FullName:   f["full_name"],
			FullNameEn: f["full_name_en"],
			Level:      level,
			ParentCode: f["parent_code"],
			Edition:    name,
		}
		ed.units[u.Code] = u
		if u.ParentCode != "" {
			ed.children[u.ParentCode] = append(ed.children[u.ParentCode], u)
		}
	}
	for _, kids := range ed.children {
		slices.SortFunc(kids, func(a, b *dvhcv1.AdminUnit) int {
			return cmp.Compare(a.Code, b.Code)
		})
	}
	return ed, nil
}
