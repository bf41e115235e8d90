package main

import (
	"context"
	"crypto/sha256"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"time"

	spb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/ketnoi/ketnoi/internal/evidence"
	"github.com/ketnoi/ketnoi/internal/exchange"
	"github.com/ketnoi/ketnoi/internal/sign"
	evidencev1 "github.com/ketnoi/ketnoi/proto/ketnoi/evidence/v1"
	exchangev1 "github.com/ketnoi/ketnoi/proto/ketnoi/exchange/v1"
)

const evidenceUsage = `usage:
  ketnoi evidence trace (--log FILE | --node ADDR) MESSAGE_ID
  ketnoi evidence verify (--log FILE [--bundle CA.pem] | --node ADDR)
  ketnoi evidence search (--log FILE | --node ADDR) [--peer ID] [--service ID]
      [--payload-sha256 HEX] [--message-id ID] [--since TIME] [--until TIME]
      [--kind KIND] [--outcome CODE] [--from INDEX] [--limit N]

trace   prints every record of one exchange
verify  checks the whole log: tree, records, signatures and, with --bundle,
        that signer certificates chain to the given CA certificates
search  prints the records that match every filter given, one line each,
        oldest first, at most --limit (100) of them; it reads every record
        from --from on unless --message-id is given

--log FILE reads a log that no running node holds. --node ADDR asks a
running node through its admin endpoint (admin.listen in its
configuration: a loopback host:port, plain text); the node verifies with
its own trust bundle.
`

// evidenceNodeTimeout bounds each call to a node, connection included.
const evidenceNodeTimeout = 30 * time.Second

// evidenceMaxRecv is the largest response the CLI accepts from a node's
// evidence service. A node answers with records worth at most 2 MiB
// beyond the first, which is sent whatever its size, and one record can
// be far larger than gRPC's default limit of 4 MiB: a signed header holds
// metadata and a status message of up to the node's max_message_bytes (at
// most 64 MiB) plus 64 KiB, and the record of a call refused before
// sending holds what the caller's metadata (at most gRPC's 16 MiB header
// list) asked for. 128 MiB takes the largest record with room to spare.
const evidenceMaxRecv = 128 << 20

// runEvidence runs "ketnoi evidence trace|verify|search" on a log file
// that no running node holds, or through a running node's admin endpoint.
//
// Its error is one line with every unprintable character escaped: it can
// quote what peers, callers and backends wrote into records, such as a
// verification failure naming a certificate's subject.
func runEvidence(ctx context.Context, args []string, stdout io.Writer) error {
	if err := evidenceCommand(ctx, args, stdout); err != nil {
		return escapedError{err}
	}
	return nil
}

// escapedError is an error whose text is escaped for a terminal as
// escaped does; errors.Is and errors.As see the error it holds.
type escapedError struct{ err error }

func (e escapedError) Error() string { return escaped(e.err.Error()) }
func (e escapedError) Unwrap() error { return e.err }

// evidenceCommand runs one evidence subcommand.
func evidenceCommand(ctx context.Context, args []string, stdout io.Writer) error {
	if len(args) == 0 {
		return usagef("want a subcommand: trace, verify or search")
	}
	switch args[0] {
	case "trace":
		return evidenceTrace(ctx, args[1:], stdout)
	case "verify":
		return evidenceVerify(ctx, args[1:], stdout)
	case "search":
		return evidenceSearch(ctx, args[1:], stdout)
	case "help", "-h", "--help":
		fmt.Fprint(stdout, evidenceUsage)
		return nil
	default:
		return usagef("unknown subcommand %q: want trace, verify or search", args[0])
	}
}

// evidenceTarget holds the --log and --node flags; exactly one is set.
type evidenceTarget struct{ log, node string }

// addEvidenceTargetFlags defines --log and --node on fs.
func addEvidenceTargetFlags(fs *flag.FlagSet) *evidenceTarget {
	t := &evidenceTarget{}
	fs.StringVar(&t.log, "log", "", "evidence log `FILE` that no running node holds")
	fs.StringVar(&t.node, "node", "", "admin endpoint `ADDR` (loopback host:port) of a running node")
	return t
}

// check reports a usage error unless exactly one of --log and --node is
// set, and --node is a loopback address: the evidence service is plain
// text and must not cross a network.
func (t *evidenceTarget) check() error {
	switch {
	case t.log == "" && t.node == "":
		return usagef("want --log FILE or --node ADDR")
	case t.log != "" && t.node != "":
		return usagef("--log and --node exclude each other")
	case t.node == "":
		return nil
	}
	host, _, err := net.SplitHostPort(t.node)
	if err != nil {
		return usagef("--node %q: want a loopback host:port: %v", t.node, err)
	}
	if ip := net.ParseIP(host); host != "localhost" && (ip == nil || !ip.IsLoopback()) {
		return usagef("--node %q: not a loopback address; "+
			"a node serves evidence only on its loopback admin endpoint", t.node)
	}
	return nil
}

// evidenceTrace prints the records of one exchange.
func evidenceTrace(ctx context.Context, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("ketnoi evidence trace", flag.ContinueOnError)
	target := addEvidenceTargetFlags(fs)
	const usage = "ketnoi evidence trace (--log FILE | --node ADDR) MESSAGE_ID"
	pos, help, err := parseEvidenceFlags(fs, target, args, usage, stdout)
	if err != nil || help {
		return err
	}
	if len(pos) != 1 {
		return usagef("want one MESSAGE_ID, got %d arguments", len(pos))
	}
	if target.node != "" {
		return traceOnNode(ctx, target.node, pos[0], stdout)
	}

	l, partial, err := openEvidence(target.log)
	if err != nil {
		return err
	}
	defer l.Close()
	entries, err := l.ByMessageID(pos[0])
	if err != nil {
		return err
	}
	if len(entries) == 0 {
		if partial != nil {
			return fmt.Errorf("no records for message %s in the tree; %w", pos[0], partial)
		}
		return fmt.Errorf("no records for message %s", pos[0])
	}
	printEvidenceEntries(stdout, l.Certificate, entries)
	return partial
}

// traceOnNode prints the records of one exchange as a running node
// returns them, asking for the next ones until it has them all: a node
// returns an exchange with large records over several responses.
func traceOnNode(ctx context.Context, addr, messageID string, stdout io.Writer) error {
	return callEvidenceNode(ctx, addr, func(ctx context.Context, c evidenceClient) error {
		req := &evidencev1.TraceMessageRequest{MessageId: messageID}
		var recs []*evidencev1.TracedRecord
		for {
			resp, err := c.TraceMessage(ctx, req)
			if err != nil {
				return err
			}
			recs = append(recs, resp.GetRecords()...)
			if resp.NextIndex == nil {
				break
			}
			// Each response moves forward, so this ends within the log's
			// size.
			if resp.GetNextIndex() <= req.GetFromIndex() {
				return fmt.Errorf("node %s returned next index %d, not past %d",
					addr, resp.GetNextIndex(), req.GetFromIndex())
			}
			req.FromIndex = resp.GetNextIndex()
		}
		entries := make([]evidence.Entry, 0, len(recs))
		for _, tr := range recs {
			entries = append(entries, tracedEntry(tr))
		}
		printEvidenceEntries(stdout, tracedCertificates(recs...), entries)
		return nil
	})
}

// evidenceVerify checks a whole log and prints its size and root.
func evidenceVerify(ctx context.Context, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("ketnoi evidence verify", flag.ContinueOnError)
	target := addEvidenceTargetFlags(fs)
	bundle := fs.String("bundle", "",
		"PEM `FILE` of the CA certificates signer certificates must chain to (with --log)")
	const usage = "ketnoi evidence verify (--log FILE [--bundle CA.pem] | --node ADDR)"
	pos, help, err := parseEvidenceFlags(fs, target, args, usage, stdout)
	if err != nil || help {
		return err
	}
	if len(pos) != 0 {
		return usagef("unexpected argument %q", pos[0])
	}
	if target.node != "" {
		if *bundle != "" {
			return usagef("--bundle goes with --log; a node verifies with its own trust bundle")
		}
		return verifyOnNode(ctx, target.node, stdout)
	}
	var roots *x509.CertPool
	if *bundle != "" {
		if roots, err = loadEvidenceRoots(*bundle); err != nil {
			return err
		}
	}

	l, partial, err := openEvidence(target.log)
	if err != nil {
		return err
	}
	defer l.Close()
	rep, err := l.Verify(ctx, roots)
	var verr *evidence.VerifyError
	if errors.As(err, &verr) {
		if e, err := l.Entry(verr.Index); err == nil {
			fmt.Fprintln(stdout, "first bad record:")
			printEvidenceEntry(stdout, l.Certificate, e)
		}
		return verr
	}
	if err != nil {
		return err
	}
	summary := verifySummary(rep.Size, rep.Root[:], rep.SignaturesChecked, rep.Unsigned, rep.UnsignedRefusals)
	if partial != nil {
		fmt.Fprintf(stdout, "tree %s\n", summary)
		return partial
	}
	fmt.Fprintln(stdout, summary)
	if roots == nil {
		fmt.Fprintln(stdout, "certificate chains not checked (no --bundle)")
	}
	return nil
}

// verifyOnNode has a running node verify its log and prints the result
// as evidenceVerify does, with the bad record the node names.
func verifyOnNode(ctx context.Context, addr string, stdout io.Writer) error {
	return callEvidenceNode(ctx, addr, func(ctx context.Context, c evidenceClient) error {
		resp, err := c.VerifyLog(ctx, &evidencev1.VerifyLogRequest{})
		if st := status.Convert(err); st.Code() == codes.DataLoss {
			for _, d := range st.Details() {
				if tr, ok := d.(*evidencev1.TracedRecord); ok {
					fmt.Fprintln(stdout, "first bad record:")
					printEvidenceEntry(stdout, tracedCertificates(tr), tracedEntry(tr))
				}
			}
		}
		if err != nil {
			return err
		}
		fmt.Fprintln(stdout, verifySummary(resp.GetTreeSize(), resp.GetTreeRoot(), int(resp.GetSignaturesChecked()),
			int(resp.GetUnsignedRecords()), int(resp.GetUnsignedRefusals())))
		if !resp.GetCertificateChainsChecked() {
			fmt.Fprintln(stdout, "certificate chains not checked (the node has no trust bundle)")
		}
		return nil
	})
}

// verifySummary is the line that says a log verified: its size and root,
// how many signatures were checked, and how many records had none to
// check, which are refusals (of calls the node refused before signing
// them, and of messages whose signature or header failed its checks).
func verifySummary(size uint64, root []byte, signatures, unsigned, unsignedRefusals int) string {
	text := fmt.Sprintf("ok: %d records, root %x, %d signatures checked", size, root, signatures)
	if unsignedRefusals > 0 {
		text += fmt.Sprintf(", %d unsigned %s", unsignedRefusals, plural(unsignedRefusals, "refusal", "refusals"))
	}
	if other := unsigned - unsignedRefusals; other > 0 {
		text += fmt.Sprintf(", %d other unsigned %s", other, plural(other, "record", "records"))
	}
	return text
}

// plural returns one for n == 1 and many otherwise.
func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}

// evidenceClient is the client of a node's evidence service.
type evidenceClient = evidencev1.EvidenceServiceClient

// callEvidenceNode connects in plain text to a node's admin endpoint and
// runs call within evidenceNodeTimeout. A gRPC error becomes its status
// message and code.
func callEvidenceNode(
	ctx context.Context,
	addr string,
	call func(context.Context, evidenceClient) error,
) error {
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(evidenceMaxRecv)))
	if err != nil {
		return fmt.Errorf("node %s: %w", addr, err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(ctx, evidenceNodeTimeout)
	defer cancel()
	err = call(ctx, evidencev1.NewEvidenceServiceClient(conn))
	if st, ok := status.FromError(err); ok && err != nil {
		return fmt.Errorf("%s (%s)", st.Message(), st.Code())
	}
	return err
}

// tracedEntry returns a record received from a node as a log entry.
func tracedEntry(tr *evidencev1.TracedRecord) evidence.Entry {
	e := evidence.Entry{Index: tr.GetIndex(), Record: tr.GetRecord()}
	h := new(exchangev1.Header)
	if proto.Unmarshal(e.Record.GetHeader(), h) == nil {
		e.Header = h
	}
	return e
}

// tracedCertificates returns a lookup, by SHA-256, of the signer
// certificates received with recs.
func tracedCertificates(recs ...*evidencev1.TracedRecord) func(sum []byte) ([]byte, error) {
	certs := make(map[[sha256.Size]byte][]byte)
	for _, tr := range recs {
		if der := tr.GetSignerCertificate(); len(der) > 0 {
			certs[sha256.Sum256(der)] = der
		}
	}
	return func(sum []byte) ([]byte, error) {
		if len(sum) != sha256.Size {
			return nil, evidence.ErrNotFound
		}
		if der, ok := certs[[sha256.Size]byte(sum)]; ok {
			return der, nil
		}
		return nil, evidence.ErrNotFound
	}
}

// parseEvidenceFlags parses args with fs, accepting flags before and after
// the positional arguments, which it returns, and checks the target the
// flags name. On -h it prints usage to stdout and reports help.
func parseEvidenceFlags(
	fs *flag.FlagSet,
	target *evidenceTarget,
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
			return append(pos, rest...), false, target.check()
		}
		if len(rest) == 0 {
			return pos, false, target.check()
		}
		pos, args = append(pos, rest[0]), rest[1:]
	}
}

// openEvidence opens a log read-only, explaining a log held by a node. A
// log whose journal holds records not yet in the tree, or is damaged, is
// opened for its tree alone: partial is then the reason, which the command
// reports after its output, and fails with.
func openEvidence(path string) (l *evidence.Log, partial error, err error) {
	l, err = evidence.OpenReadOnly(path)
	switch {
	case errors.Is(err, evidence.ErrLocked):
		return nil, nil, fmt.Errorf("%w; stop the node first, or use --node", err)
	case errors.Is(err, evidence.ErrUnfolded), errors.Is(err, evidence.ErrJournalDamaged):
		tree, terr := evidence.OpenReadOnlyTree(path)
		if terr != nil {
			return nil, nil, err
		}
		return tree, fmt.Errorf("only the records in the tree were read: %w", err), nil
	}
	return l, nil, err
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

// printEvidenceEntries prints records separated by blank lines.
func printEvidenceEntries(
	w io.Writer,
	certificate func(sum []byte) ([]byte, error),
	entries []evidence.Entry,
) {
	for i, e := range entries {
		if i > 0 {
			fmt.Fprintln(w)
		}
		printEvidenceEntry(w, certificate, e)
	}
}

// printEvidenceEntry prints one record as a block of labelled lines;
// certificate returns the DER signer certificate with a given SHA-256.
//
// Every text a record holds came from a peer, a caller or a backend (a
// refused message's header holds whatever its sender wrote) and is printed
// as shown prints it: quoted and escaped when it holds anything that a
// terminal would not print as it is, so that no value can start a line
// or a record of its own, or send the terminal an escape sequence.
//
// A call the node refused before sending anything has no frame: its
// header says what the call asked for, nothing was signed, and no
// payload was read into it. Such a record leaves out the lines of a frame
// (sequence, payload, digests, signer) and says that it is not signed,
// rather than that a signature failed to verify.
func printEvidenceEntry(
	w io.Writer,
	certificate func(sum []byte) ([]byte, error),
	e evidence.Entry,
) {
	line := func(label, format string, args ...any) {
		fmt.Fprintf(w, "  %-19s %s\n", label, fmt.Sprintf(format, args...))
	}
	r, h := e.Record, e.Header
	own := e.RefusedBeforeSending()
	fmt.Fprintf(w, "record %d\n", e.Index)
	line("kind", "%s", strings.TrimPrefix(r.GetKind().String(), "RECORD_KIND_"))
	line("recorded at", "%s", evidenceTime(r.GetRecordedAt()))
	line("message id", "%s", evidenceOrNone(r.GetMessageId()))
	line("node", "%s", evidenceOrNone(r.GetNode()))
	line("peer", "%s", evidenceOrNone(r.GetPeer()))
	switch {
	case h == nil:
		line("header", "does not parse (%d bytes)", len(r.GetHeader()))
	case own:
		printRefusedCall(line, h)
	default:
		printEvidenceHeader(line, certificate, h)
	}
	switch {
	case own:
		line("signature", "none: refused by this node before sending")
	case !r.GetSignatureVerified() && len(r.GetSignature()) == 0 && r.GetBatch() == nil:
		line("signature verified", "no (the message carried no signature)")
	default:
		line("signature verified", "%s", evidenceYesNo(r.GetSignatureVerified()))
	}
	outcome := codes.Code(uint32(r.GetCode())).String()
	if r.GetReason() != "" {
		outcome += ": " + shown(r.GetReason())
	}
	line("outcome", "%s", outcome)
}

// printRefusedCall prints the header of a call the node refused before
// sending: what the call asked for. Its call kind is unknown when the
// node did not find the method, and is then left out.
func printRefusedCall(line func(label, format string, args ...any), h *exchangev1.Header) {
	line("direction", "%s", strings.TrimPrefix(h.GetDirection().String(), "DIRECTION_"))
	if h.GetCallKind() != exchangev1.CallKind_CALL_KIND_UNSPECIFIED {
		line("call kind", "%s", strings.TrimPrefix(h.GetCallKind().String(), "CALL_KIND_"))
	}
	printEvidenceCall(line, h)
}

// printEvidenceHeader prints the fields of a signed header. A frame
// without a message has no payload lines.
func printEvidenceHeader(
	line func(label, format string, args ...any),
	certificate func(sum []byte) ([]byte, error),
	h *exchangev1.Header,
) {
	line("direction", "%s", strings.TrimPrefix(h.GetDirection().String(), "DIRECTION_"))
	line("call kind", "%s", strings.TrimPrefix(h.GetCallKind().String(), "CALL_KIND_"))
	line("sequence", "%d", h.GetSequence())
	printEvidenceCall(line, h)
	if h.GetHasMessage() || len(h.GetPayloadSha256()) > 0 || h.GetPayloadLength() > 0 {
		line("payload sha256", "%s", evidenceHex(h.GetPayloadSha256()))
		line("payload length", "%d bytes", h.GetPayloadLength())
	}
	if h.GetDirection() == exchangev1.Direction_DIRECTION_RESPONSE || len(h.GetRequestDigest()) > 0 {
		line("request digest", "%s", evidenceHex(h.GetRequestDigest()))
	}
	line("previous digest", "%s", evidenceHex(h.GetPreviousDigest()))
	if st := h.GetStatus(); st != nil {
		text := codes.Code(uint32(st.GetCode())).String()
		if st.GetMessage() != "" {
			text += ": " + shown(st.GetMessage())
		}
		if n := len(st.GetDetails()); n > 0 {
			text += fmt.Sprintf(" (%d details)", n)
		}
		line("final status", "%s", text)
		full := spb.Status{Code: st.GetCode(), Message: st.GetMessage(), Details: st.GetDetails()}
		if reason, ok := exchange.PlatformReason(status.FromProto(&full)); ok {
			line("refused by node", "%s", shown(reason))
		}
	}
	line("signer certificate", "%s", evidenceSigner(certificate, h.GetSignerCertificateSha256()))
}

// printEvidenceCall prints who called what, for which purpose, and when.
func printEvidenceCall(line func(label, format string, args ...any), h *exchangev1.Header) {
	line("client", "%s", evidenceOrNone(h.GetClient()))
	line("service", "%s", evidenceOrNone(h.GetService()))
	line("method", "%s", evidenceOrNone(h.GetMethod()))
	line("purpose", "%s", evidenceOrNone(h.GetPurpose()))
	line("user", "%s", evidenceOrNone(h.GetUser()))
	line("issue", "%s", evidenceOrNone(h.GetIssue()))
	line("classification", "%s", strings.TrimPrefix(h.GetClassification().String(), "CLASSIFICATION_"))
	line("created at", "%s", evidenceTime(h.GetCreatedAt()))
}

// evidenceSigner describes the signer certificate with SHA-256 sum by its URI SANs.
func evidenceSigner(certificate func(sum []byte) ([]byte, error), sum []byte) string {
	if len(sum) == 0 {
		return "(none)"
	}
	der, err := certificate(sum)
	if err != nil {
		return fmt.Sprintf("%x (not in the log)", sum)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return fmt.Sprintf("%x (does not parse)", sum)
	}
	uris := make([]string, 0, len(cert.URIs))
	for _, u := range cert.URIs {
		uris = append(uris, shown(u.String()))
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

// evidenceOrNone returns s as shown prints it, or "(none)" when it is
// empty.
func evidenceOrNone(s string) string {
	if s == "" {
		return "(none)"
	}
	return shown(s)
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
