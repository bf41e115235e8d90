package main

import (
	"context"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/ketnoi/ketnoi/internal/evidence"
	"github.com/ketnoi/ketnoi/internal/sign"
	exchangev1 "github.com/ketnoi/ketnoi/proto/ketnoi/exchange/v1"
)

const evidenceUsage = `usage:
  ketnoi evidence trace --log FILE MESSAGE_ID
  ketnoi evidence verify --log FILE [--bundle CA.pem]

trace   prints every record of one exchange
verify  checks the whole log: tree, records, signatures and, with --bundle,
        that signer certificates chain to the given CA certificates
`

// runEvidence runs "ketnoi evidence trace|verify" on a log that no running
// node holds.
func runEvidence(ctx context.Context, args []string, stdout io.Writer) error {
	if len(args) == 0 {
		return usagef("want a subcommand: trace or verify")
	}
	switch args[0] {
	case "trace":
		return evidenceTrace(args[1:], stdout)
	case "verify":
		return evidenceVerify(ctx, args[1:], stdout)
	case "help", "-h", "--help":
		fmt.Fprint(stdout, evidenceUsage)
		return nil
	default:
		return usagef("unknown subcommand %q: want trace or verify", args[0])
	}
}

// evidenceTrace prints the records of one exchange.
func evidenceTrace(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("ketnoi evidence trace", flag.ContinueOnError)
	logFile := fs.String("log", "", "evidence log `FILE` of the node")
	const usage = "ketnoi evidence trace --log FILE MESSAGE_ID"
	pos, help, err := parseEvidenceFlags(fs, args, usage, stdout)
	if err != nil || help {
		return err
	}
	if *logFile == "" {
		return usagef("--log is required")
	}
	if len(pos) != 1 {
		return usagef("want one MESSAGE_ID, got %d arguments", len(pos))
	}

	l, err := openEvidence(*logFile)
	if err != nil {
		return err
	}
	defer l.Close()
	entries, err := l.ByMessageID(pos[0])
	if err != nil {
		return err
	}
	if len(entries) == 0 {
		return fmt.Errorf("no records for message %s", pos[0])
	}
	for i, e := range entries {
		if i > 0 {
			fmt.Fprintln(stdout)
		}
		printEvidenceEntry(stdout, l, e)
	}
	return nil
}

// evidenceVerify checks a whole log and prints its size and root.
func evidenceVerify(ctx context.Context, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("ketnoi evidence verify", flag.ContinueOnError)
	logFile := fs.String("log", "", "evidence log `FILE` of the node")
	bundle := fs.String("bundle", "",
		"PEM `FILE` of the CA certificates signer certificates must chain to")
	const usage = "ketnoi evidence verify --log FILE [--bundle CA.pem]"
	pos, help, err := parseEvidenceFlags(fs, args, usage, stdout)
	if err != nil || help {
		return err
	}
	if *logFile == "" {
		return usagef("--log is required")
	}
	if len(pos) != 0 {
		return usagef("unexpected argument %q", pos[0])
	}
	var roots *x509.CertPool
	if *bundle != "" {
		if roots, err = loadEvidenceRoots(*bundle); err != nil {
			return err
		}
	}

	l, err := openEvidence(*logFile)
	if err != nil {
		return err
	}
	defer l.Close()
	rep, err := l.Verify(ctx, roots)
	var verr *evidence.VerifyError
	if errors.As(err, &verr) {
		if e, err := l.Entry(verr.Index); err == nil {
			fmt.Fprintln(stdout, "first bad record:")
			printEvidenceEntry(stdout, l, e)
		}
		return verr
	}
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "ok: %d records, root %x, %d signatures checked\n",
		rep.Size, rep.Root[:], rep.SignaturesChecked)
	if roots == nil {
		fmt.Fprintln(stdout, "certificate chains not checked (no --bundle)")
	}
	return nil
}

// parseEvidenceFlags parses args with fs, accepting flags before and after
// the positional arguments, which it returns. On -h it prints usage to
// stdout and reports help.
func parseEvidenceFlags(
	fs *flag.FlagSet,
	args []string,
	usage string,
	stdout io.Writer,
) ([]string, bool, error) {
	fs.SetOutput(io.Discard)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: %s\n", usage)
		fs.PrintDefaults()
	}
	var pos []string
	for {
		err := fs.Parse(args)
		if errors.Is(err, flag.ErrHelp) {
			fs.SetOutput(stdout)
			fs.Usage()
			return nil, true, nil
		}
		if err != nil {
			return nil, false, usagef("%v", err)
		}
		rest := fs.Args()
		if used := len(args) - len(rest); used > 0 && args[used-1] == "--" {
			return append(pos, rest...), false, nil
		}
		if len(rest) == 0 {
			return pos, false, nil
		}
		pos, args = append(pos, rest[0]), rest[1:]
	}
}

// openEvidence opens a log read-only, explaining a log held by a node.
func openEvidence(path string) (*evidence.Log, error) {
	l, err := evidence.OpenReadOnly(path)
	if errors.Is(err, evidence.ErrLocked) {
		return nil, fmt.Errorf("%w; stop the node first", err)
	}
	return l, err
}

// loadEvidenceRoots reads a PEM bundle of CA certificates.
func loadEvidenceRoots(path string) (*x509.CertPool, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read bundle: %w", err)
	}
	certs, err := sign.ParseCertificates(data)
	if err != nil {
		return nil, fmt.Errorf("bundle %s: %w", path, err)
	}
	pool := x509.NewCertPool()
	for _, c := range certs {
		pool.AddCert(c)
	}
	return pool, nil
}

// printEvidenceEntry prints one record as a block of labelled lines.
func printEvidenceEntry(w io.Writer, l *evidence.Log, e evidence.Entry) {
	line := func(label, format string, args ...any) {
		fmt.Fprintf(w, "  %-19s %s\n", label, fmt.Sprintf(format, args...))
	}
	r, h := e.Record, e.Header
	fmt.Fprintf(w, "record %d\n", e.Index)
	line("kind", "%s", strings.TrimPrefix(r.GetKind().String(), "RECORD_KIND_"))
	line("recorded at", "%s", evidenceTime(r.GetRecordedAt()))
	line("message id", "%s", r.GetMessageId())
	line("node", "%s", evidenceOrNone(r.GetNode()))
	line("peer", "%s", evidenceOrNone(r.GetPeer()))
	if h == nil {
		line("header", "does not parse (%d bytes)", len(r.GetHeader()))
	} else {
		printEvidenceHeader(line, l, h)
	}
	line("signature verified", "%s", evidenceYesNo(r.GetSignatureVerified()))
	outcome := codes.Code(uint32(r.GetCode())).String()
	if r.GetReason() != "" {
		outcome += ": " + r.GetReason()
	}
	line("outcome", "%s", outcome)
}

// printEvidenceHeader prints the fields of a signed header.
func printEvidenceHeader(
	line func(label, format string, args ...any),
	l *evidence.Log,
	h *exchangev1.Header,
) {
	line("direction", "%s", strings.TrimPrefix(h.GetDirection().String(), "DIRECTION_"))
	line("call kind", "%s", strings.TrimPrefix(h.GetCallKind().String(), "CALL_KIND_"))
	line("sequence", "%d", h.GetSequence())
	line("client", "%s", evidenceOrNone(h.GetClient()))
	line("service", "%s", evidenceOrNone(h.GetService()))
	line("method", "%s", evidenceOrNone(h.GetMethod()))
	line("purpose", "%s", evidenceOrNone(h.GetPurpose()))
	line("user", "%s", evidenceOrNone(h.GetUser()))
	line("issue", "%s", evidenceOrNone(h.GetIssue()))
	line("classification", "%s", strings.TrimPrefix(h.GetClassification().String(), "CLASSIFICATION_"))
	line("created at", "%s", evidenceTime(h.GetCreatedAt()))
	line("payload sha256", "%s", evidenceHex(h.GetPayloadSha256()))
	line("payload length", "%d bytes", h.GetPayloadLength())
	if h.GetDirection() == exchangev1.Direction_DIRECTION_RESPONSE || len(h.GetRequestDigest()) > 0 {
		line("request digest", "%s", evidenceHex(h.GetRequestDigest()))
	}
	line("previous digest", "%s", evidenceHex(h.GetPreviousDigest()))
	if st := h.GetStatus(); st != nil {
		status := codes.Code(uint32(st.GetCode())).String()
		if st.GetMessage() != "" {
			status += ": " + st.GetMessage()
		}
		if n := len(st.GetDetails()); n > 0 {
			status += fmt.Sprintf(" (%d details)", n)
		}
		line("final status", "%s", status)
	}
	line("signer certificate", "%s", evidenceSigner(l, h.GetSignerCertificateSha256()))
}

// evidenceSigner describes the signer certificate with SHA-256 sum by its URI SANs.
func evidenceSigner(l *evidence.Log, sum []byte) string {
	if len(sum) == 0 {
		return "(none)"
	}
	der, err := l.Certificate(sum)
	if err != nil {
		return fmt.Sprintf("%x (not in the log)", sum)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return fmt.Sprintf("%x (does not parse)", sum)
	}
	uris := make([]string, 0, len(cert.URIs))
	for _, u := range cert.URIs {
		uris = append(uris, u.String())
	}
	if len(uris) == 0 {
		return fmt.Sprintf("%x (no URI SAN)", sum)
	}
	return fmt.Sprintf("%x (%s)", sum, strings.Join(uris, ", "))
}

// evidenceTime formats t as RFC 3339 UTC with milliseconds.
func evidenceTime(t *timestamppb.Timestamp) string {
	if t == nil {
		return "(none)"
	}
	return t.AsTime().UTC().Format("2006-01-02T15:04:05.000Z07:00")
}

// evidenceOrNone returns s, or "(none)" when it is empty.
func evidenceOrNone(s string) string {
	if s == "" {
		return "(none)"
	}
	return s
}

// evidenceHex formats b in hex, or "(none)".
func evidenceHex(b []byte) string {
	if len(b) == 0 {
		return "(none)"
	}
	return fmt.Sprintf("%x", b)
}

// evidenceYesNo formats b as yes or no.
func evidenceYesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}
