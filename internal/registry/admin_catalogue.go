package registry

import (
	"context"
	"fmt"
	"slices"
	"time"

	bolt "go.etcd.io/bbolt"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/ketnoi/ketnoi/internal/catalogue"
	cataloguev1 "github.com/ketnoi/ketnoi/proto/ketnoi/catalogue/v1"
	registryv1 "github.com/ketnoi/ketnoi/proto/ketnoi/registry/v1"
)

// entriesFillPercent packs entry pages tightly: entries are written once, in
// key order, and never change.
const entriesFillPercent = 0.95

// maxCodeLen bounds the length of a code, which is a storage key.
const maxCodeLen = 256

// ImportCodeList stores a new, immutable version of a shared code list.
func (s *adminServer) ImportCodeList(
	ctx context.Context,
	req *registryv1.ImportCodeListRequest,
) (*registryv1.ImportCodeListResponse, error) {
	meta, err := codeListMeta(req)
	if err != nil {
		return nil, err
	}
	entries, err := checkEntries(req.GetEntries(), req.GetFields())
	if err != nil {
		return nil, err
	}
	meta.EntryCount = uint64(len(entries))
	meta.Sha256 = catalogue.Digest(entries)

	version, err := s.r.change(func(tx *bolt.Tx, _ time.Time) error {
		return storeCodeList(tx, meta, entries)
	})
	if err != nil {
		return nil, s.r.toStatus(ctx, "import code list", err)
	}
	s.r.logChange(ctx, fmt.Sprintf("import code list %s version %s (%d entries)",
		meta.List, meta.Version, meta.EntryCount), version)
	return &registryv1.ImportCodeListResponse{CodeList: meta, Version: version}, nil
}

// codeListMeta checks the description of an imported version.
func codeListMeta(req *registryv1.ImportCodeListRequest) (*cataloguev1.CodeListVersion, error) {
	if !catalogue.ValidListName(req.GetList()) {
		return nil, invalidf("list", "%q is not a list name (1-64 of a-z 0-9 -)", req.GetList())
	}
	if !catalogue.ValidVersion(req.GetVersion()) {
		return nil, invalidf("version", "%q is not a version label (1-32 of A-Z a-z 0-9 . _ -)", req.GetVersion())
	}
	title, err := text("title", req.GetTitle(), maxNameRunes)
	if err != nil {
		return nil, err
	}
	provenance, err := text("provenance", req.GetProvenance(), maxDescriptionRunes)
	if err != nil {
		return nil, err
	}
	fields := req.GetFields()
	if len(fields) == 0 {
		return nil, invalidf("fields", "must not be empty")
	}
	for i, f := range fields {
		if f == "" {
			return nil, invalidf("fields", "field %d has no name", i+1)
		}
		if reason := textFault(f, maxFieldNameRunes); reason != "" {
			return nil, invalidf(fmt.Sprintf("fields[%d]", i), "%s", reason)
		}
		if slices.Contains(fields[:i], f) {
			return nil, invalidf("fields", "field %q appears more than once", f)
		}
	}
	return &cataloguev1.CodeListVersion{
		List:       req.GetList(),
		Version:    req.GetVersion(),
		Title:      title,
		Provenance: provenance,
		Fields:     slices.Clone(fields),
	}, nil
}

// checkEntries checks the entries of an imported version against its field
// list and returns them in code order.
func checkEntries(entries []*cataloguev1.CodeEntry, fields []string) ([]*cataloguev1.CodeEntry, error) {
	if len(entries) == 0 {
		return nil, invalidf("entries", "must not be empty")
	}
	first := make(map[string]int, len(entries))
	for i, e := range entries {
		if e.GetCode() == "" {
			return nil, invalidf(fmt.Sprintf("entries[%d].code", i), "must not be empty")
		}
		if len(e.GetCode()) > maxCodeLen {
			return nil, invalidf(fmt.Sprintf("entries[%d].code", i), "longer than %d bytes", maxCodeLen)
		}
		if reason := textFault(e.GetCode(), maxCodeLen); reason != "" {
			return nil, invalidf(fmt.Sprintf("entries[%d].code", i), "%s", reason)
		}
		if j, ok := first[e.GetCode()]; ok {
			return nil, status.Errorf(codes.AlreadyExists,
				"entries[%d].code: code %q already appears at entries[%d]", i, e.GetCode(), j)
		}
		first[e.GetCode()] = i
		for name, value := range e.GetFields() {
			if !slices.Contains(fields, name) {
				return nil, invalidf(fmt.Sprintf("entries[%d].fields", i), "field %q is not among fields", name)
			}
			if reason := textFault(value, maxValueRunes); reason != "" {
				return nil, invalidf(fmt.Sprintf("entries[%d].fields[%q]", i, name), "%s", reason)
			}
		}
	}
	sorted := slices.Clone(entries)
	catalogue.Sort(sorted)
	return sorted, nil
}

// storeCodeList writes a new list version and its entries.
func storeCodeList(tx *bolt.Tx, meta *cataloguev1.CodeListVersion, entries []*cataloguev1.CodeEntry) error {
	lists := tx.Bucket(bucketCodeLists)
	key := listKey(meta.List, meta.Version)
	if lists.Bucket(key) != nil {
		return status.Errorf(codes.AlreadyExists, "code list %s version %s already exists", meta.List, meta.Version)
	}
	b, err := lists.CreateBucket(key)
	if err != nil {
		return fmt.Errorf("create code list bucket: %w", err)
	}
	if err := putProto(b, keyListMeta, meta); err != nil {
		return err
	}
	eb, err := b.CreateBucket(bucketEntries)
	if err != nil {
		return fmt.Errorf("create entries bucket: %w", err)
	}
	eb.FillPercent = entriesFillPercent
	for _, e := range entries {
		if err := putProto(eb, []byte(e.GetCode()), e); err != nil {
			return err
		}
	}
	return nil
}
