package registry

import (
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Free text is stored and published only as valid UTF-8 without control,
// separator, bidirectional or other (Cf) formatting characters, within its
// bound; the refusal names the field and never quotes the value. Accepted text loses
// its surrounding space.
func TestText(t *testing.T) {
	for in, want := range map[string]string{
		"Bộ Nội vụ":                 "Bộ Nội vụ",
		"  Văn phòng Chính phủ ":    "Văn phòng Chính phủ",
		"Vụ \"A\" & 'B' <c> 100%":   "Vụ \"A\" & 'B' <c> 100%",
		strings.Repeat("ễ", 256):    strings.Repeat("ễ", 256),
		"emoji 🇻🇳 and NBSP\u00a0ok": "emoji 🇻🇳 and NBSP\u00a0ok",
	} {
		if got, err := text("name", in, maxNameRunes); err != nil || got != want {
			t.Errorf("text(%q) = %q, %v; want %q", in, got, err, want)
		}
	}

	for _, tc := range []struct{ in, want string }{
		{"", "name: must not be empty"},
		{" \u3000 ", "name: must not be empty"},
		{"Bộ\xffNội", "name: is not valid UTF-8"},
		{"\xc3", "name: is not valid UTF-8"},
		{"a\nb", "name: contains control character U+000A"},
		{"a\rb", "name: contains control character U+000D"},
		{"trailing newline\n", "name: contains control character U+000A"},
		{"a\x00b", "name: contains control character U+0000"},
		{"a\x1b[31mb", "name: contains control character U+001B"},
		{"a\x7fb", "name: contains control character U+007F"},
		{"a\u0085b", "name: contains control character U+0085"},
		{"a\u009fb", "name: contains control character U+009F"},
		{"a\u2029b", "name: contains line or paragraph separator U+2029"},
		{"a\u200fb", "name: contains bidirectional formatting character U+200F"},
		{"a\u2066b", "name: contains bidirectional formatting character U+2066"},
		{"a\u061cb", "name: contains bidirectional formatting character U+061C"},
		// Invisible: names that print alike but differ.
		{"Bộ\u200bNội vụ", "name: contains invisible formatting character U+200B"},
		{"\ufeffBộ Nội vụ", "name: contains invisible formatting character U+FEFF"},
		{"Nội\u00advụ", "name: contains invisible formatting character U+00AD"},
		{"Bộ\U000E0041", "name: contains invisible formatting character U+E0041"},
		{"a\u2060b", "name: contains invisible formatting character U+2060"},
		{strings.Repeat("ễ", 257), "name: has 257 characters, more than 256"},
	} {
		_, err := text("name", tc.in, maxNameRunes)
		if st := status.Convert(err); st.Code() != codes.InvalidArgument || st.Message() != tc.want {
			t.Errorf("text(%q) = %v %q, want InvalidArgument %q", tc.in, st.Code(), st.Message(), tc.want)
		}
	}
}

func TestPurposeAndMethodFaults(t *testing.T) {
	for _, ok := range []string{"HS-01", "a b", "~!@#$%^&*()", strings.Repeat("p", maxPurposeLen)} {
		if reason := purposeFault(ok); reason != "" {
			t.Errorf("purposeFault(%q) = %q, want none", ok, reason)
		}
	}
	for in, want := range map[string]string{
		"":                                   "must not be empty",
		" HS":                                "starts or ends with a space",
		"a\tb":                               "must be printable ASCII, as gRPC metadata carries it",
		"hồ sơ":                              "must be printable ASCII, as gRPC metadata carries it",
		strings.Repeat("p", maxPurposeLen+1): "has 129 bytes, more than 128",
	} {
		if got := purposeFault(in); got != want {
			t.Errorf("purposeFault(%q) = %q, want %q", in, got, want)
		}
	}

	for _, ok := range []string{"GetUnit", "_x", "List2"} {
		if reason := methodFault(ok); reason != "" {
			t.Errorf("methodFault(%q) = %q, want none", ok, reason)
		}
	}
	for in, want := range map[string]string{
		"":         "must not be empty",
		"2Get":     "is not a method name: it starts with a digit",
		"Get.Unit": "is not a method name: want letters, digits and '_'",
		"Lấy":      "is not a method name: want letters, digits and '_'",
	} {
		if got := methodFault(in); got != want {
			t.Errorf("methodFault(%q) = %q, want %q", in, got, want)
		}
	}
}
