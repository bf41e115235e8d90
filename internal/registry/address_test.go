package registry

import (
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Node addresses are published to every node, which dials them: the host
// must be an IP address or a DNS name and the port a number, or the
// request is refused with the reason. Accepted addresses come out in one
// form, so that two spellings of one endpoint compare equal.
func TestNormAddress(t *testing.T) {
	long := strings.Repeat("a", 63)
	longName := long + "." + long + "." + long + "." + strings.Repeat("b", 61) + ":8443" // 253 characters
	for addr, want := range map[string]string{
		"127.0.0.1:8443":              "127.0.0.1:8443",
		"127.0.0.1:027845":            "127.0.0.1:27845",
		"[::1]:8443":                  "[::1]:8443",
		"[0:0:0:0:0:0:0:1]:08443":     "[::1]:8443",
		"[2001:DB8:0::7]:1":           "[2001:db8::7]:1",
		"[::ffff:127.0.0.1]:8443":     "127.0.0.1:8443",
		"node1.g22.example:65535":     "node1.g22.example:65535",
		"BNV.Example.VN:8443":         "bnv.example.vn:8443",
		"node-1.G22.example.:9443":    "node-1.g22.example.:9443",
		"localhost:8443":              "localhost:8443",
		"10-0-0-1.example:8443":       "10-0-0-1.example:8443",
		"xn--bcher-kva.vn:8443":       "xn--bcher-kva.vn:8443",
		longName:                      longName,
		"Node1.G22.Example:000000443": "node1.g22.example:443",
	} {
		got, err := normAddress("address", addr)
		if err != nil || got != want {
			t.Errorf("normAddress(%q) = %q, %v; want %q", addr, got, err, want)
		}
	}

	for _, tc := range []struct{ addr, want string }{
		{"a b:1", `address: "a b:1": host "a b" is neither an IP address nor a DNS name: character ' ' is not a letter, digit, '-' or '.'`},
		{"node_1.example:8443", `address: "node_1.example:8443": host "node_1.example" is neither an IP address nor a DNS name: character '_' is not`},
		{"a..b:8443", `address: "a..b:8443": host "a..b" is neither an IP address nor a DNS name: it has an empty label`},
		{".a:8443", `it has an empty label`},
		{"-a.example:8443", `label "-a" starts or ends with '-'`},
		{"a-.example:8443", `label "a-" starts or ends with '-'`},
		{long + "x.example:8443", `label "` + long + `x" has 64 characters, more than 63`},
		{strings.Repeat("a.", 127) + "ab:8443", `host "` + strings.Repeat("a.", 127) + `ab" is neither an IP address nor a DNS name: 256 characters, more than 253`},
		{"999.1.1.1:8443", `host "999.1.1.1" is neither an IP address nor a DNS name: it is made of numbers, like an IPv4 address, but is not one`},
		{"[fe80::1%eth0]:8443", `address: "[fe80::1%eth0]:8443": IPv6 zones (%eth0) are not allowed`},
		{"[::1%lo]:8443", `IPv6 zones (%lo) are not allowed: register an address other nodes can dial`},
		{"nút.example:8443", `host "nút.example" is not ASCII: register an internationalised domain name ` +
			`in its punycode (xn--) form`},
		{"bücher.vn:8443", `punycode (xn--) form`},
		{"bu%cher.vn:8443", `character '%' is not a letter, digit, '-' or '.'`},
		{"a b:0", `host "a b" is neither`},
		{"example:65536", `address: "example:65536": port must be a number from 1 to 65535`},
		{"example:-1", `port must be a number from 1 to 65535`},
		{"example: 1", `port must be a number from 1 to 65535`},
		{"example:", `port must be a number from 1 to 65535`},
	} {
		_, err := normAddress("address", tc.addr)
		if st := status.Convert(err); err == nil || st.Code() != codes.InvalidArgument || !strings.Contains(st.Message(), tc.want) {
			t.Errorf("normAddress(%q) = %v, want InvalidArgument with %q", tc.addr, err, tc.want)
		}
	}
}
