package registry

import (
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Bounds of the free text the registry stores. Everything it stores is
// published to every node and printed by operators' tools, so text is
// kept to what a person reads on one line: no control characters, no
// invalid UTF-8, and a length that fits a table row.
const (
	// maxNameRunes bounds member names, custodians and code list titles.
	maxNameRunes = 256
	// maxDescriptionRunes bounds service descriptions and code list
	// provenance, which may take a sentence or two.
	maxDescriptionRunes = 1024
	// maxFieldNameRunes bounds the field names of a code list.
	maxFieldNameRunes = 64
	// maxValueRunes bounds the value of a code list field.
	maxValueRunes = 1024
	// maxPurposeLen bounds a grant's purpose code, in bytes.
	maxPurposeLen = 128
	// maxMethodLen bounds a method name a grant names, in bytes.
	maxMethodLen = 128
)

// textFault returns why s may not be stored as text, or "" when it may:
// it must be valid UTF-8 of at most maxRunes characters, none of them a
// control character (C0, DEL, C1), a line or paragraph separator, a
// bidirectional formatting character or another format character
// (Unicode category Cf: zero-width space U+200B, byte order mark U+FEFF,
// soft hyphen U+00AD, tag characters). Each of those can make a printed
// row look like another row or another heading, reorder what a reader
// sees, or make two names that print alike differ. The reason never
// quotes s, which may be anything.
func textFault(s string, maxRunes int) string {
	if !utf8.ValidString(s) {
		return "is not valid UTF-8"
	}
	n := 0
	for _, r := range s {
		n++
		switch {
		case r < 0x20 || r >= 0x7f && r < 0xa0:
			return fmt.Sprintf("contains control character %U", r)
		case r == '\u2028' || r == '\u2029':
			return fmt.Sprintf("contains line or paragraph separator %U", r)
		case bidiControl(r):
			return fmt.Sprintf("contains bidirectional formatting character %U", r)
		case unicode.Is(unicode.Cf, r):
			return fmt.Sprintf("contains invisible formatting character %U", r)
		}
	}
	if n > maxRunes {
		return fmt.Sprintf("has %d characters, more than %d", n, maxRunes)
	}
	return ""
}

// bidiControl reports whether r is one of the Unicode characters that
// change the direction of the text around it.
func bidiControl(r rune) bool {
	return r == '\u061c' || r == '\u200e' || r == '\u200f' ||
		r >= '\u202a' && r <= '\u202e' || r >= '\u2066' && r <= '\u2069'
}

// text checks a required free-text field (see textFault) and returns it
// without surrounding space, failing when nothing is left.
func text(field, s string, maxRunes int) (string, error) {
	if reason := textFault(s, maxRunes); reason != "" {
		return "", invalidf(field, "%s", reason)
	}
	s = strings.TrimSpace(s)
	if s == "" {
		return "", invalidf(field, "must not be empty")
	}
	return s, nil
}

// purposeFault returns why s is not a purpose a grant may name, or "".
// Callers state their purpose in gRPC metadata, whose values are printable
// ASCII without surrounding space; a purpose outside that could never
// match a call.
func purposeFault(s string) string {
	switch {
	case s == "":
		return "must not be empty"
	case len(s) > maxPurposeLen:
		return fmt.Sprintf("has %d bytes, more than %d", len(s), maxPurposeLen)
	case s[0] == ' ' || s[len(s)-1] == ' ':
		return "starts or ends with a space"
	}
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] > 0x7e {
			return "must be printable ASCII, as gRPC metadata carries it"
		}
	}
	return ""
}

// methodFault returns why s is not a gRPC method name, or "": a protobuf
// identifier of letters, digits and '_' not starting with a digit.
func methodFault(s string) string {
	switch {
	case s == "":
		return "must not be empty"
	case len(s) > maxMethodLen:
		return fmt.Sprintf("has %d bytes, more than %d", len(s), maxMethodLen)
	case s[0] >= '0' && s[0] <= '9':
		return "is not a method name: it starts with a digit"
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_') {
			return "is not a method name: want letters, digits and '_'"
		}
	}
	return ""
}
