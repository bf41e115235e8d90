package catalogue

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"slices"
	"strings"

	cataloguev1 "github.com/ketnoi/ketnoi/proto/ketnoi/catalogue/v1"
)

// digestContext opens every digest encoding so that the bytes hashed cannot
// be mistaken for those of another ketnoi structure.
const digestContext = "ketnoi.catalogue.v1.CodeEntry list"

// Digest returns the SHA-256 fingerprint of a code list version. The order
// of entries and of map iteration does not matter; every code, field name
// and field value does. Nodes and applications compare this value with the
// one the registry publishes, so the encoding below is a contract: it must
// never change. A different encoding needs a new context string and a new
// field in the protocol.
//
// The hash input is built from two primitives: u64(n) is n as 8 bytes
// big-endian, and str(s) is u64(len(s)) followed by the bytes of s. It is
//
//	str("ketnoi.catalogue.v1.CodeEntry list")
//	u64(number of entries)
//	entry encoding of each entry, in order
//
// where the entry encoding is
//
//	str(code)
//	u64(number of fields with a non-empty value)
//	str(name) str(value) for each such field, names in byte-wise order
//
// Entries are ordered by code, compared byte-wise; entries that share a code
// (a valid version has none) are ordered by their entry encodings. Fields
// with an empty value are left out, as [ReadCSV] leaves out empty columns,
// so an empty value and a missing field give the same digest. A nil entry
// counts as an entry with an empty code and no fields.
func Digest(entries []*cataloguev1.CodeEntry) []byte {
	type encoded struct {
		code string
		enc  []byte
	}
	encs := make([]encoded, len(entries))
	for i, e := range entries {
		encs[i] = encoded{code: e.GetCode(), enc: encodeEntry(e)}
	}
	slices.SortFunc(encs, func(a, b encoded) int {
		if c := strings.Compare(a.code, b.code); c != 0 {
			return c
		}
		return bytes.Compare(a.enc, b.enc)
	})

	h := sha256.New()
	var buf []byte
	buf = appendString(buf, digestContext)
	buf = binary.BigEndian.AppendUint64(buf, uint64(len(encs)))
	h.Write(buf)
	for _, e := range encs {
		h.Write(e.enc)
	}
	return h.Sum(nil)
}

// encodeEntry returns the entry encoding documented on [Digest].
func encodeEntry(e *cataloguev1.CodeEntry) []byte {
	names := make([]string, 0, len(e.GetFields()))
	for name, v := range e.GetFields() {
		if v != "" {
			names = append(names, name)
		}
	}
	slices.Sort(names)

	b := appendString(nil, e.GetCode())
	b = binary.BigEndian.AppendUint64(b, uint64(len(names)))
	for _, name := range names {
		b = appendString(b, name)
		b = appendString(b, e.GetFields()[name])
	}
	return b
}

// appendString appends str(s): its length as 8 bytes big-endian, then s.
func appendString(b []byte, s string) []byte {
	b = binary.BigEndian.AppendUint64(b, uint64(len(s)))
	return append(b, s...)
}

// Sort sorts entries in place by code, compared byte-wise, keeping the input
// order of entries that share a code. This is the order in which a version
// is served and hashed.
func Sort(entries []*cataloguev1.CodeEntry) {
	slices.SortStableFunc(entries, func(a, b *cataloguev1.CodeEntry) int {
		return strings.Compare(a.GetCode(), b.GetCode())
	})
}
