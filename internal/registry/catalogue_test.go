package registry

import (
	"bytes"
	"context"
	"errors"
	"io"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/testing/protocmp"

	"github.com/ketnoi/ketnoi/internal/catalogue"
	"github.com/ketnoi/ketnoi/internal/dataset"
	cataloguev1 "github.com/ketnoi/ketnoi/proto/ketnoi/catalogue/v1"
	registryv1 "github.com/ketnoi/ketnoi/proto/ketnoi/registry/v1"
)

// importAdminUnits2026 imports the real July 2026 administrative units as
// vn-admin-units version 2026-07 and returns the entries read.
func importAdminUnits2026(
	t *testing.T,
	ctx context.Context,
	admin registryv1.AdminServiceClient,
) (*registryv1.ImportCodeListResponse, []*cataloguev1.CodeEntry) {
	t.Helper()
	r, err := dataset.Open(dataset.AdminUnits2026)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	fields, entries, err := catalogue.ReadCSV(r, "code")
	if err != nil {
		t.Fatalf("ReadCSV: %v", err)
	}
	resp, err := admin.ImportCodeList(ctx, &registryv1.ImportCodeListRequest{
		List:       "vn-admin-units",
		Version:    "2026-07",
		Title:      "Administrative units (34 provinces)",
		Provenance: "thanglequoc/vietnamese-provinces-database v4.2.0, MIT",
		Fields:     fields,
		Entries:    entries,
	})
	if err != nil {
		t.Fatalf("ImportCodeList: %v", err)
	}
	return resp, entries
}

// listCodes collects a ListCodes stream and the size of each chunk.
func listCodes(
	t *testing.T,
	ctx context.Context,
	c cataloguev1.CatalogueServiceClient,
	req *cataloguev1.ListCodesRequest,
) ([]*cataloguev1.CodeEntry, []int) {
	t.Helper()
	stream, err := c.ListCodes(ctx, req)
	if err != nil {
		t.Fatalf("ListCodes: %v", err)
	}
	var (
		entries []*cataloguev1.CodeEntry
		chunks  []int
	)
	for {
		resp, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return entries, chunks
		}
		if err != nil {
			t.Fatalf("ListCodes: %v", err)
		}
		entries = append(entries, resp.GetEntries()...)
		chunks = append(chunks, len(resp.GetEntries()))
	}
}

func TestCatalogueRealAdminUnits(t *testing.T) {
	f := newFixture(t)
	ctx := testContext(t)
	resp, entries := importAdminUnits2026(t, ctx, f.admin(t))

	meta := resp.GetCodeList()
	if meta.GetEntryCount() != 3355 || !bytes.Equal(meta.GetSha256(), catalogue.Digest(entries)) {
		t.Errorf("imported %d entries with digest %x, want 3355 with %x",
			meta.GetEntryCount(), meta.GetSha256(), catalogue.Digest(entries))
	}
	published := decode(t, f.reg.Configuration())
	if diff := cmp.Diff([]*cataloguev1.CodeListVersion{meta}, published.GetCodeLists(), protocmp.Transform()); diff != "" {
		t.Errorf("published code lists (-want +got):\n%s", diff)
	}

	cat := f.catalogue(t)
	got, err := cat.LookupCode(ctx, &cataloguev1.LookupCodeRequest{List: "vn-admin-units", Version: "2026-07", Code: "00004"})
	if err != nil {
		t.Fatalf("LookupCode 00004: %v", err)
	}
	if name := got.GetEntry().GetFields()["full_name"]; name != "Phường Ba Đình" {
		t.Errorf("full_name of 00004 = %q, want Phường Ba Đình", name)
	}

	hanoi, chunks := listCodes(t, ctx, cat, &cataloguev1.ListCodesRequest{
		List: "vn-admin-units", Version: "2026-07", ParentCode: "01",
	})
	var want []*cataloguev1.CodeEntry
	for _, e := range entries {
		if e.GetFields()["parent_code"] == "01" {
			want = append(want, e)
		}
	}
	catalogue.Sort(want)
	if len(want) != 126 {
		t.Fatalf("the CSV has %d communes of Hà Nội, want 126", len(want))
	}
	if diff := cmp.Diff(want, hanoi, protocmp.Transform()); diff != "" {
		t.Errorf("ListCodes parent 01 (-want +got):\n%s", diff)
	}
	if !slices.Equal(chunks, []int{126}) {
		t.Errorf("ListCodes parent 01 chunks = %v, want [126]", chunks)
	}

	all, chunks := listCodes(t, ctx, cat, &cataloguev1.ListCodesRequest{List: "vn-admin-units", Version: "2026-07"})
	if len(all) != 3355 {
		t.Errorf("ListCodes returned %d entries, want 3355", len(all))
	}
	byCode := func(a, b *cataloguev1.CodeEntry) int { return strings.Compare(a.GetCode(), b.GetCode()) }
	if !slices.IsSortedFunc(all, byCode) {
		t.Errorf("ListCodes entries are not in code order")
	}
	if !slices.Equal(chunks, []int{500, 500, 500, 500, 500, 500, 355}) {
		t.Errorf("ListCodes chunks = %v, want six of 500 and one of 355", chunks)
	}
	if !bytes.Equal(catalogue.Digest(all), meta.GetSha256()) {
		t.Errorf("digest of the listed entries differs from the published digest")
	}
}

func TestCatalogueNotFound(t *testing.T) {
	f := newFixture(t)
	ctx := testContext(t)
	if _, err := f.admin(t).ImportCodeList(ctx, smallList()); err != nil {
		t.Fatalf("ImportCodeList: %v", err)
	}
	cat := f.catalogue(t)

	tests := []struct {
		name     string
		req      *cataloguev1.LookupCodeRequest
		wantCode codes.Code
		wantMsg  string
	}{
		{"unknown code", &cataloguev1.LookupCodeRequest{List: "test-list", Version: "1", Code: "99"},
			codes.NotFound, `code "99" is not in code list test-list version 1`},
		{"unknown version", &cataloguev1.LookupCodeRequest{List: "test-list", Version: "2", Code: "01"},
			codes.NotFound, "code list test-list version 2 does not exist"},
		{"unknown list", &cataloguev1.LookupCodeRequest{List: "other", Version: "1", Code: "01"},
			codes.NotFound, "code list other version 1 does not exist"},
		{"no code", &cataloguev1.LookupCodeRequest{List: "test-list", Version: "1"},
			codes.InvalidArgument, "code: must not be empty"},
		{"no list", &cataloguev1.LookupCodeRequest{Version: "1", Code: "01"},
			codes.InvalidArgument, `list: "" is not a list name`},
		{"bad version", &cataloguev1.LookupCodeRequest{List: "test-list", Version: "1/2", Code: "01"},
			codes.InvalidArgument, `version: "1/2" is not a version label`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := cat.LookupCode(ctx, tt.req)
			st := status.Convert(err)
			if st.Code() != tt.wantCode || st.Message() != tt.wantMsg {
				t.Errorf("status = %v %q, want %v %q", st.Code(), st.Message(), tt.wantCode, tt.wantMsg)
			}
		})
	}

	stream, err := cat.ListCodes(ctx, &cataloguev1.ListCodesRequest{List: "test-list", Version: "9"})
	if err == nil {
		_, err = stream.Recv()
	}
	if st := status.Convert(err); st.Code() != codes.NotFound {
		t.Errorf("ListCodes of a missing version: %v, want NotFound", err)
	}
}
