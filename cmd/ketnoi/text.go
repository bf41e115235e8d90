package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// shown returns s ready to print on a terminal: unchanged when it is valid
// UTF-8 of printable characters and spaces, and otherwise quoted and
// escaped as %q does. What the registry publishes comes from operators,
// and from state files older than the registry's checks on text, so a
// name may hold a newline or a terminal escape that would print a row or
// a heading of its own.
func shown(s string) string {
	if printable(s) {
		return s
	}
	return strconv.Quote(s)
}

// shownList joins the values of ss with ", ", each as shownItem prints
// it, so that the list reads back as the values it holds: ["a", "b"]
// prints as a, b and ["a, b"] as "a, b".
func shownList(ss []string) string {
	out := make([]string, len(ss))
	for i, s := range ss {
		out[i] = shownItem(s)
	}
	return strings.Join(out, ", ")
}

// shownItem returns a value of a list as shown prints it, but quoted also
// when it is empty or holds a comma, a space or a quote, any of which
// would blur where it ends in the joined list.
func shownItem(s string) string {
	if s == "" || strings.ContainsAny(s, ", \"") {
		return strconv.Quote(s)
	}
	return shown(s)
}

// printable reports whether s is valid UTF-8 of printable characters and
// ASCII spaces only.
func printable(s string) bool {
	if !utf8.ValidString(s) {
		return false
	}
	for _, r := range s {
		if !unicode.IsPrint(r) {
			return false
		}
	}
	return true
}

// escaped returns s with every character that is not printable, and every
// byte that is not UTF-8, replaced by its Go escape, without quotes: for
// the registry's messages, which quote the values they name themselves.
func escaped(s string) string {
	if printable(s) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			fmt.Fprintf(&b, `\x%02x`, s[i])
		case unicode.IsPrint(r):
			b.WriteRune(r)
		default:
			q := strconv.QuoteRune(r)
			b.WriteString(q[1 : len(q)-1])
		}
		i += size
	}
	return b.String()
}

// requireUTF8 fails with a usage error naming the first of the named
// flags of fs whose value is not valid UTF-8. Requests carry text as
// protobuf strings, which must be UTF-8: gRPC would refuse to send one
// with an internal error that does not say which flag was wrong.
func requireUTF8(fs *flag.FlagSet, names ...string) error {
	for _, name := range names {
		if f := fs.Lookup(name); f != nil && !utf8.ValidString(f.Value.String()) {
			return usagef("--%s is not valid UTF-8", name)
		}
	}
	return nil
}

// checkRequestUTF8 is the client interceptor behind requireUTF8: it
// refuses, as a usage error, a request with a string that is not valid
// UTF-8 anywhere, such as in a CSV file's values, naming the field.
func checkRequestUTF8(
	ctx context.Context,
	method string,
	req, reply any,
	cc *grpc.ClientConn,
	invoker grpc.UnaryInvoker,
	opts ...grpc.CallOption,
) error {
	if m, ok := req.(proto.Message); ok {
		if path := invalidUTF8(m.ProtoReflect()); path != "" {
			return usagef("%s of the request is not valid UTF-8", path)
		}
	}
	return invoker(ctx, method, req, reply, cc, opts...)
}

// invalidUTF8 returns the path of the first string of m that is not valid
// UTF-8, such as entries[3].fields["name"], or "".
func invalidUTF8(m protoreflect.Message) string {
	var path string
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		name := string(fd.Name())
		switch {
		case fd.IsList():
			l := v.List()
			for i := range l.Len() {
				if below, bad := invalidValue(fd, l.Get(i)); bad {
					path = fmt.Sprintf("%s[%d]%s", name, i, below)
					break
				}
			}
		case fd.IsMap():
			v.Map().Range(func(k protoreflect.MapKey, mv protoreflect.Value) bool {
				key := k.String()
				if !utf8.ValidString(key) {
					path = fmt.Sprintf("%s key %q", name, key)
				} else if below, bad := invalidValue(fd.MapValue(), mv); bad {
					path = fmt.Sprintf("%s[%q]%s", name, key, below)
				}
				return path == ""
			})
		default:
			if below, bad := invalidValue(fd, v); bad {
				path = name + below
			}
		}
		return path == ""
	})
	return path
}

// invalidValue reports whether a single value of fd is a string that is
// not valid UTF-8, or a message that holds one, and then the path below
// the value: "" for the string itself, ".field..." in a message.
func invalidValue(fd protoreflect.FieldDescriptor, v protoreflect.Value) (string, bool) {
	switch fd.Kind() {
	case protoreflect.StringKind:
		return "", !utf8.ValidString(v.String())
	case protoreflect.MessageKind, protoreflect.GroupKind:
		if p := invalidUTF8(v.Message()); p != "" {
			return "." + p, true
		}
	}
	return "", false
}

// readInput reads the local file a flag names. A file that cannot be read
// is a wrong command line, as an empty or malformed one is: exit code 2.
func readInput(flagName, path string) ([]byte, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, usagef("--%s: %v", flagName, err)
	}
	return data, nil
}
