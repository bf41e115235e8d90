// Package logging builds the process-wide slog handler from command-line
// settings and holds the attribute keys every ketnoi component logs with, so
// that logs of registry and nodes can be searched with one vocabulary.
package logging

import (
	"fmt"
	"io"
	"log/slog"
	"strings"
	"unicode/utf8"
)

// Attribute keys. Errors always go under KeyError.
const (
	KeyError     = "error"
	KeyAddress   = "address"
	KeyPeer      = "peer"
	KeyMethod    = "method"
	KeyMessageID = "message_id"
	KeyClient    = "client"
	KeyService   = "service"
	KeyVersion   = "version"
	KeyExpiresAt = "expires_at"
	KeyIndex     = "index"
	KeyPath      = "path"
	KeyReason    = "reason"
	KeyCode      = "code"
	KeyNode      = "node"
	KeyDetail    = "detail"
	KeyPanic     = "panic"
	KeyMissing   = "missing"
	KeyEndpoints = "local_endpoints"
	KeyAdmin     = "admin_address"
	KeyCount     = "count"
	KeyPeriod    = "period"
	// KeyKnownVersion is the configuration version a node says it holds;
	// KeyResumeAbove the version a restored registry was told to resume
	// above.
	KeyKnownVersion = "known_version"
	KeyResumeAbove  = "resume_above"
	// KeyRemedy says what an operator should do about a warning.
	KeyRemedy = "remedy"
	// KeyRemoteAddress is the address a connection came from; KeyAddress
	// is the one a server listens on.
	KeyRemoteAddress = "remote_address"
	KeySubject       = "subject"
	KeyIssuer        = "issuer"
	// KeyMembers lists member identifiers; KeyClasses member classes.
	KeyMembers = "members"
	KeyClasses = "classes"
)

// New returns a logger writing to w at level ("debug", "info", "warn",
// "error") in format ("text" or "json").
func New(w io.Writer, level, format string) (*slog.Logger, error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("log level %q: want debug, info, warn or error", level)
	}
	opts := &slog.HandlerOptions{Level: lv}
	switch strings.ToLower(format) {
	case "text", "":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	default:
		return nil, fmt.Errorf("log format %q: want text or json", format)
	}
}

// MaxValueBytes bounds a string value that a log line takes from outside
// the process: a status message a peer's backend wrote, a method name or
// message id a caller sent. 1 KiB keeps every such line readable and
// keeps a peer from deciding how large this process's log grows, while
// leaving room for any message meant for a person.
const MaxValueBytes = 1 << 10

// Bounded returns s when it fits in MaxValueBytes, and otherwise its first
// MaxValueBytes bytes, cut at a UTF-8 boundary, followed by how many bytes
// were left out.
func Bounded(s string) string {
	if len(s) <= MaxValueBytes {
		return s
	}
	n := MaxValueBytes
	// Back up to the start of a rune: a cut inside one would leave
	// invalid UTF-8 that handlers escape.
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return fmt.Sprintf("%s... [%d more bytes cut]", s[:n], len(s)-n)
}

// BoundedString is slog.String(key, Bounded(value)).
func BoundedString(key, value string) slog.Attr {
	return slog.String(key, Bounded(value))
}
