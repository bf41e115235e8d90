package main

import (
	"context"
	"encoding/hex"
	"flag"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/ketnoi/ketnoi/internal/evidence"
	evidencev1 "github.com/ketnoi/ketnoi/proto/ketnoi/evidence/v1"
)

const evidenceSearchUsage = "ketnoi evidence search (--log FILE | --node ADDR) [--peer ID] [--service ID] " +
	"[--payload-sha256 HEX] [--message-id ID] [--since TIME] [--until TIME] [--kind KIND] " +
	"[--outcome CODE] [--from INDEX] [--limit N]"

// searchPageLimit is the most records a node returns per SearchRecords
// call; the CLI asks for more pages up to its own --limit.
const searchPageLimit = 1000

// evidenceSearch prints the records that match every filter given, one
// line each, oldest first, and a last line starting with "#" that says
// how many matched or that the limit was reached.
func evidenceSearch(ctx context.Context, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("ketnoi evidence search", flag.ContinueOnError)
	target := addEvidenceTargetFlags(fs)
	q, limit, parse := addSearchFlags(fs)
	pos, help, err := parseEvidenceFlags(fs, target, args, evidenceSearchUsage, stdout)
	if err != nil || help {
		return err
	}
	if len(pos) != 0 {
		return usagef("unexpected argument %q", pos[0])
	}
	if err := parse(); err != nil {
		return err
	}
	if target.node != "" {
		return searchOnNode(ctx, target.node, *q, *limit, stdout)
	}

	l, partial, err := openEvidence(target.log)
	if err != nil {
		return err
	}
	defer l.Close()
	q.Limit = *limit
	res, err := l.Search(ctx, *q)
	if err != nil {
		return err
	}
	for _, e := range res.Entries {
		printSearchLine(stdout, e)
	}
	printSearchSummary(stdout, len(res.Entries), *limit, res.More, res.Next, res.Size)
	return partial
}

// addSearchFlags defines the filters of "evidence search" on fs. parse,
// called once fs is parsed, fills the query and checks it, returning a
// usage error for a bad filter.
func addSearchFlags(fs *flag.FlagSet) (q *evidence.Query, limit *int, parse func() error) {
	q = &evidence.Query{}
	var digest, since, until, kind, outcome string
	fs.StringVar(&q.Peer, "peer", "", "member or subsystem `ID` on the other side of the exchange")
	fs.StringVar(&q.Service, "service", "", "service `ID` (subsystem/package.Service)")
	fs.StringVar(&digest, "payload-sha256", "", "SHA-256 of a payload, 64 `HEX` digits")
	fs.StringVar(&q.MessageID, "message-id", "", "exchange `ID`")
	fs.StringVar(&since, "since", "", "records made at or after `TIME` (RFC 3339)")
	fs.StringVar(&until, "until", "", "records made before `TIME` (RFC 3339)")
	fs.StringVar(&kind, "kind", "", "record `KIND`: request_sent, request_received, "+
		"response_sent, response_received, refused or failed")
	fs.StringVar(&outcome, "outcome", "", "gRPC `CODE` of the record, such as OK or PermissionDenied")
	fs.Uint64Var(&q.From, "from", 0, "first record `INDEX` to examine")
	limit = fs.Int("limit", evidence.DefaultSearchLimit, "print at most `N` records")

	parse = func() error {
		var err error
		if digest != "" {
			if q.PayloadSHA256, err = hex.DecodeString(digest); err != nil || len(q.PayloadSHA256) != 32 {
				return usagef("--payload-sha256 %q: want 64 hex digits", digest)
			}
		}
		if q.Since, err = searchTime("since", since); err != nil {
			return err
		}
		if q.Until, err = searchTime("until", until); err != nil {
			return err
		}
		if q.Kind, err = searchKind(kind); err != nil {
			return err
		}
		if outcome != "" {
			c, err := searchCode(outcome)
			if err != nil {
				return err
			}
			q.Code = &c
		}
		if *limit < 1 {
			return usagef("--limit %d: want at least 1", *limit)
		}
		if err := q.Check(); err != nil {
			return usagef("%v", err)
		}
		return nil
	}
	return q, limit, parse
}

// searchTime parses the RFC 3339 time of flag name; "" is no time.
func searchTime(name, s string) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		return time.Time{}, usagef("--%s %q: want an RFC 3339 time such as 2026-12-04T09:30:00+07:00", name, s)
	}
	return t, nil
}

// searchKind parses a record kind as printed ("REFUSED"), in any case,
// with - or _; "" is every kind.
func searchKind(s string) (evidencev1.RecordKind, error) {
	if s == "" {
		return evidencev1.RecordKind_RECORD_KIND_UNSPECIFIED, nil
	}
	name := "RECORD_KIND_" + strings.ToUpper(strings.ReplaceAll(s, "-", "_"))
	v, ok := evidencev1.RecordKind_value[name]
	if !ok || v == 0 {
		return 0, usagef("--kind %q: want request_sent, request_received, response_sent, "+
			"response_received, refused or failed", s)
	}
	return evidencev1.RecordKind(v), nil
}

// searchCode parses a gRPC code by its name, as printed ("PermissionDenied")
// or as in the gRPC specification ("PERMISSION_DENIED"), in any case.
func searchCode(s string) (codes.Code, error) {
	norm := strings.ToLower(strings.ReplaceAll(s, "_", ""))
	if norm == "cancelled" {
		return codes.Canceled, nil
	}
	for c := codes.OK; c <= codes.Unauthenticated; c++ {
		if strings.ToLower(c.String()) == norm {
			return c, nil
		}
	}
	return 0, usagef("--outcome %q: not a gRPC code name such as OK, NotFound or PermissionDenied", s)
}

// searchOnNode runs a search through a running node, page by page, until
// limit records are printed or none is left.
func searchOnNode(ctx context.Context, addr string, q evidence.Query, limit int, stdout io.Writer) error {
	req := &evidencev1.SearchRecordsRequest{
		Peer:          q.Peer,
		Service:       q.Service,
		PayloadSha256: q.PayloadSHA256,
		MessageId:     q.MessageID,
		Kind:          q.Kind,
		FromIndex:     q.From,
	}
	if !q.Since.IsZero() {
		req.Since = timestamppb.New(q.Since)
	}
	if !q.Until.IsZero() {
		req.Until = timestamppb.New(q.Until)
	}
	if q.Code != nil {
		req.Code = proto.Int32(int32(*q.Code))
	}
	return callEvidenceNode(ctx, addr, func(ctx context.Context, c evidenceClient) error {
		printed := 0
		for {
			req.Limit = uint32(min(limit-printed, searchPageLimit))
			resp, err := c.SearchRecords(ctx, req)
			if err != nil {
				return err
			}
			for _, tr := range resp.GetRecords() {
				printSearchLine(stdout, tracedEntry(tr))
			}
			printed += len(resp.GetRecords())
			more, next := resp.NextIndex != nil, resp.GetNextIndex()
			if !more || printed >= limit {
				printSearchSummary(stdout, printed, limit, more, next, resp.GetTreeSize())
				return nil
			}
			// Each page moves forward, so this ends within the log's size.
			if next <= req.FromIndex {
				return fmt.Errorf("node %s returned next index %d, not past %d", addr, next, req.FromIndex)
			}
			req.FromIndex = next
		}
	})
}

// printSearchSummary prints the last line of a search.
func printSearchSummary(w io.Writer, printed, limit int, more bool, next, size uint64) {
	if more {
		fmt.Fprintf(w, "# limit of %d reached (tree size %d); more records match: continue with --from %d\n",
			limit, size, next)
		return
	}
	noun := "records"
	if printed == 1 {
		noun = "record"
	}
	fmt.Fprintf(w, "# %d matching %s (tree size %d)\n", printed, noun, size)
}

// printSearchLine prints one record as a line of key=value fields, always
// the same keys in the same order; see searchValue for the values.
func printSearchLine(w io.Writer, e evidence.Entry) {
	r, h := e.Record, e.Header
	var at, direction, digest string
	if r.GetRecordedAt() != nil {
		at = evidenceTime(r.GetRecordedAt())
	}
	if h != nil {
		direction = strings.TrimPrefix(h.GetDirection().String(), "DIRECTION_")
		digest = hex.EncodeToString(h.GetPayloadSha256())
	}
	fields := [...]struct{ key, value string }{
		{"index", strconv.FormatUint(e.Index, 10)},
		{"time", at},
		{"kind", strings.TrimPrefix(r.GetKind().String(), "RECORD_KIND_")},
		{"direction", direction},
		{"peer", e.Counterparty()},
		{"peer_node", r.GetPeer()},
		{"service", h.GetService()},
		{"method", h.GetMethod()},
		{"message_id", r.GetMessageId()},
		{"payload_sha256", digest},
		{"outcome", codes.Code(uint32(r.GetCode())).String()},
		{"reason", r.GetReason()},
	}
	var b strings.Builder
	for i, f := range fields {
		if i > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(f.key)
		b.WriteByte('=')
		b.WriteString(searchValue(f.value))
	}
	b.WriteByte('\n')
	io.WriteString(w, b.String())
}

// searchValue formats a field value so that every line splits the same
// way: "-" when empty, Go-quoted when it holds a space, quote, equals
// sign, backslash or anything unprintable (headers of refused messages
// hold whatever their sender wrote), and as is otherwise.
func searchValue(s string) string {
	if s == "" {
		return "-"
	}
	plain := s != "-" && utf8.ValidString(s) && !strings.ContainsFunc(s, func(r rune) bool {
		return r == ' ' || r == '"' || r == '=' || r == '\\' || !unicode.IsPrint(r)
	})
	if plain {
		return s
	}
	return strconv.Quote(s)
}
