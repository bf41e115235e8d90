package main

import (
	"context"
	"encoding/hex"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"
	"unicode/utf8"

	"google.golang.org/grpc"

	"github.com/ketnoi/ketnoi/internal/catalogue"
	"github.com/ketnoi/ketnoi/internal/dataset"
	cataloguev1 "github.com/ketnoi/ketnoi/proto/ketnoi/catalogue/v1"
	registryv1 "github.com/ketnoi/ketnoi/proto/ketnoi/registry/v1"
)

const catalogueUsage = `usage:
  ketnoi catalogue import --list LIST --version VERSION --title TITLE --provenance TEXT
                          (--csv FILE | --embedded NAME) [--key-column code]
  ketnoi catalogue list
  ketnoi catalogue lookup --list LIST --version VERSION CODE

import reads a CSV file with a header row; the column named by --key-column
gives each entry's code and every other column becomes a field. The data sets built
into ketnoi, with the key column --embedded uses unless --key-column is given:
  ` + dataset.AdminUnits2026 + `  (code)
  ` + dataset.AdminUnits2025 + `  (code)
  ` + dataset.Countries + `  (alpha2)
(` + dataset.WardMapping2025 + ` links old to new codes and has no
unique key; it is not a code list.)
` + connectionUsage

// embeddedKeys names the key column of each built-in code list.
var embeddedKeys = map[string]string{
	dataset.AdminUnits2026: "code",
	dataset.AdminUnits2025: "code",
	dataset.Countries:      "alpha2",
}

func runCatalogue(ctx context.Context, args []string, stdout io.Writer) error {
	return subcommand(ctx, args, stdout, catalogueUsage, map[string]verb{
		"import": catalogueImport,
		"list":   catalogueList,
		"lookup": catalogueLookup,
	})
}

// catalogueImport stores a new version of a code list read from CSV.
func catalogueImport(ctx context.Context, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("catalogue import", flag.ContinueOnError)
	list := fs.String("list", "", "list identifier, e.g. vn-admin-units (required)")
	version := fs.String("version", "", "version label, e.g. 2026-07 (required)")
	title := fs.String("title", "", "title of the list (required)")
	provenance := fs.String("provenance", "", "source and licence of the data (required)")
	csvFile := fs.String("csv", "", "CSV `file` to import")
	embedded := fs.String("embedded", "", "built-in data set `name` to import")
	// Not --key: that flag names the operator's private key.
	key := fs.String("key-column", "code", "CSV `column` holding the codes")
	conn := addRegistryFlags(fs)
	if err := parseFlags(fs, args, stdout); err != nil {
		return helpOrError(err)
	}
	if err := requireFlags(fs, "list", "version", "title", "provenance", "key-column"); err != nil {
		return err
	}
	if (*csvFile == "") == (*embedded == "") {
		return usagef("exactly one of --csv and --embedded is required")
	}
	if err := requireUTF8(fs, "list", "version", "title", "provenance", "key-column"); err != nil {
		return err
	}
	if k, ok := embeddedKeys[*embedded]; ok && !flagSet(fs, "key-column") {
		*key = k
	}
	fields, entries, err := readCodeList(*csvFile, *embedded, *key)
	if err != nil {
		return err
	}

	req := &registryv1.ImportCodeListRequest{
		List:       *list,
		Version:    *version,
		Title:      *title,
		Provenance: *provenance,
		Fields:     fields,
		Entries:    entries,
	}
	return callRegistry(ctx, conn, func(ctx context.Context, cc *grpc.ClientConn) error {
		resp, err := registryv1.NewAdminServiceClient(cc).ImportCodeList(ctx, req)
		if err != nil {
			return err
		}
		cl := resp.GetCodeList()
		fmt.Fprintf(stdout, "imported %s version %s: %d entries, sha256 %s; configuration version %d\n",
			shown(cl.GetList()), shown(cl.GetVersion()), cl.GetEntryCount(), hex.EncodeToString(cl.GetSha256()),
			resp.GetVersion())
		return nil
	})
}

// readCodeList reads the CSV file, or the built-in data set, to import. A
// file that cannot be read, or is not a code list, is a wrong command
// line (exit code 2), as are values that are not UTF-8, which no request
// can carry.
func readCodeList(file, embedded, key string) ([]string, []*cataloguev1.CodeEntry, error) {
	name := file
	var (
		r   io.ReadCloser
		err error
	)
	if embedded != "" {
		if _, ok := embeddedKeys[embedded]; !ok {
			return nil, nil, usagef("--embedded %q is not a built-in code list; want %s, %s or %s",
				embedded, dataset.AdminUnits2026, dataset.AdminUnits2025, dataset.Countries)
		}
		name = embedded
		if r, err = dataset.Open(embedded); err != nil {
			return nil, nil, err
		}
	} else {
		if r, err = os.Open(file); err != nil {
			return nil, nil, usagef("--csv: %v", err)
		}
	}
	defer r.Close()
	fields, entries, err := catalogue.ReadCSV(r, key)
	if err != nil {
		return nil, nil, usagef("%s: %v", name, err)
	}
	if err := checkCodeListUTF8(fields, entries); err != nil {
		return nil, nil, usagef("%s: %v", name, err)
	}
	return fields, entries, nil
}

// checkCodeListUTF8 names the first column or value that is not UTF-8.
func checkCodeListUTF8(fields []string, entries []*cataloguev1.CodeEntry) error {
	for i, f := range fields {
		if !utf8.ValidString(f) {
			return fmt.Errorf("column %d: its name is not valid UTF-8", i+1)
		}
	}
	for _, e := range entries {
		if !utf8.ValidString(e.GetCode()) {
			return fmt.Errorf("code %s is not valid UTF-8", shown(e.GetCode()))
		}
		for _, f := range fields {
			if v, ok := e.GetFields()[f]; ok && !utf8.ValidString(v) {
				return fmt.Errorf("code %s, column %s: the value is not valid UTF-8", shown(e.GetCode()), f)
			}
		}
	}
	return nil
}

// catalogueList prints every version of every code list.
func catalogueList(ctx context.Context, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("catalogue list", flag.ContinueOnError)
	conn := addRegistryFlags(fs)
	if err := parseFlags(fs, args, stdout); err != nil {
		return helpOrError(err)
	}

	return callRegistry(ctx, conn, func(ctx context.Context, cc *grpc.ClientConn) error {
		resp, err := cataloguev1.NewCatalogueServiceClient(cc).ListCodeLists(ctx,
			&cataloguev1.ListCodeListsRequest{})
		if err != nil {
			return err
		}
		if len(resp.GetVersions()) == 0 {
			fmt.Fprintln(stdout, "no code lists")
		}
		for _, v := range resp.GetVersions() {
			fmt.Fprintf(stdout, "%s\t%s\t%d entries\tsha256 %s\t%s\n", shown(v.GetList()), shown(v.GetVersion()),
				v.GetEntryCount(), hex.EncodeToString(v.GetSha256()), shown(v.GetTitle()))
		}
		return nil
	})
}

// catalogueLookup prints one entry of a code list version.
func catalogueLookup(ctx context.Context, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("catalogue lookup", flag.ContinueOnError)
	list := fs.String("list", "", "list identifier (required)")
	version := fs.String("version", "", "version label (required)")
	conn := addRegistryFlags(fs)
	code, err := parseWithOperand(fs, args, stdout, "CODE")
	if err != nil {
		return helpOrError(err)
	}
	if err := requireFlags(fs, "list", "version"); err != nil {
		return err
	}
	if err := requireUTF8(fs, "list", "version"); err != nil {
		return err
	}
	if !utf8.ValidString(code) {
		return usagef("CODE is not valid UTF-8")
	}

	return callRegistry(ctx, conn, func(ctx context.Context, cc *grpc.ClientConn) error {
		resp, err := cataloguev1.NewCatalogueServiceClient(cc).LookupCode(ctx, &cataloguev1.LookupCodeRequest{
			List:    *list,
			Version: *version,
			Code:    code,
		})
		if err != nil {
			return err
		}
		printEntry(stdout, resp.GetEntry())
		return nil
	})
}

// parseWithOperand parses the flags of fs, which may come before and after
// the command's single operand, and returns the operand.
func parseWithOperand(fs *flag.FlagSet, args []string, stdout io.Writer, operand string) (string, error) {
	fs.SetOutput(io.Discard)
	if err := fs.Parse(args); err != nil {
		// The same arguments fail the same way in parseFlags, which prints
		// help or turns the error into a usage error.
		return "", parseFlags(fs, args, stdout)
	}
	if fs.NArg() == 0 {
		return "", usagef("missing %s", operand)
	}
	value := fs.Arg(0)
	if err := parseFlags(fs, fs.Args()[1:], stdout); err != nil {
		return "", err
	}
	return value, nil
}

// printEntry prints a code and its fields, one per line, in name order,
// each as shown prints it.
func printEntry(w io.Writer, e *cataloguev1.CodeEntry) {
	fmt.Fprintln(w, shown(e.GetCode()))
	names := make([]string, 0, len(e.GetFields()))
	for name := range e.GetFields() {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		fmt.Fprintf(w, "  %s: %s\n", shown(name), shown(e.GetFields()[name]))
	}
}

// flagSet reports whether the command line set the named flag.
func flagSet(fs *flag.FlagSet, name string) bool {
	set := false
	fs.Visit(func(f *flag.Flag) { set = set || f.Name == name })
	return set
}
