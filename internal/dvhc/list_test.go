package dvhc

import (
	"context"
	"encoding/csv"
	"errors"
	"io"
	"slices"
	"testing"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/testing/protocmp"

	"github.com/ketnoi/ketnoi/internal/dataset"
	dvhcv1 "github.com/ketnoi/ketnoi/proto/vn/gov/dvhc/v1"
)

// wardCodes reads the codes of the wards whose parent is province from the
// embedded 2026-07 file, independently of the package's own parsing.
func wardCodes(t *testing.T, province string) []string {
	t.Helper()
	rc, err := dataset.Open(dataset.AdminUnits2026)
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	defer rc.Close()
	rows, err := csv.NewReader(rc).ReadAll()
	if err != nil {
		t.Fatalf("read %s: %v", dataset.AdminUnits2026, err)
	}
	col := make(map[string]int)
	for i, name := range rows[0] {
		col[name] = i
	}
	var codes []string
	for _, r := range rows[1:] {
		if r[col["level"]] == "ward" && r[col["parent_code"]] == province {
			codes = append(codes, r[col["code"]])
		}
	}
	slices.Sort(codes)
	return codes
}

// receiveAll reads a ListCommunes stream to its end.
func receiveAll(
	t *testing.T,
	stream grpc.ServerStreamingClient[dvhcv1.ListCommunesResponse],
) ([]*dvhcv1.AdminUnit, error) {
	t.Helper()
	var units []*dvhcv1.AdminUnit
	for {
		resp, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return units, nil
		}
		if err != nil {
			return units, err
		}
		units = append(units, resp.GetUnit())
	}
}

func TestListCommunesHanoi(t *testing.T) {
	client := startServer(t, loaded(t))
	stream, err := client.ListCommunes(testContext(t),
		&dvhcv1.ListCommunesRequest{ProvinceCode: "01"})
	if err != nil {
		t.Fatalf("ListCommunes: %v", err)
	}
	units, err := receiveAll(t, stream)
	if err != nil {
		t.Fatalf("receiving communes: %v", err)
	}

	want := wardCodes(t, "01")
	if len(want) == 0 {
		t.Fatalf("no wards of province 01 in %s", dataset.AdminUnits2026)
	}
	if len(units) != len(want) {
		t.Errorf("streamed %d communes of province 01, the file has %d",
			len(units), len(want))
	}
	var got []string
	for _, u := range units {
		got = append(got, u.GetCode())
		if u.GetParentCode() != "01" || u.GetLevel() != dvhcv1.Level_LEVEL_COMMUNE ||
			u.GetEdition() != EditionCurrent {
			t.Errorf("commune %s: parent %q, level %v, edition %q; want 01, %v, %s",
				u.GetCode(), u.GetParentCode(), u.GetLevel(), u.GetEdition(),
				dvhcv1.Level_LEVEL_COMMUNE, EditionCurrent)
		}
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("commune codes in stream order (-file, sorted +got):\n%s", diff)
	}
	if len(units) > 0 {
		if diff := cmp.Diff(baDinh2026, units[0], protocmp.Transform()); diff != "" {
			t.Errorf("first commune (-want +got):\n%s", diff)
		}
	}
}

func TestListCommunesErrors(t *testing.T) {
	client := startServer(t, loaded(t))
	tests := []struct {
		province string
		want     codes.Code
		msg      string
	}{
		{"", codes.InvalidArgument, `province_code: want 2 digits, got ""`},
		{"1", codes.InvalidArgument, `province_code: want 2 digits, got "1"`},
		{"001", codes.InvalidArgument, `province_code: want 2 digits, got "001"`},
		{"00004", codes.InvalidArgument, `province_code: want 2 digits, got "00004"`},
		{"ab", codes.InvalidArgument, `province_code: want 2 digits, got "ab"`},
		{"02", codes.NotFound, `province "02" not found in edition 2026-07`},
		{"99", codes.NotFound, `province "99" not found in edition 2026-07`},
	}
	for _, tt := range tests {
		t.Run(tt.province, func(t *testing.T) {
			stream, err := client.ListCommunes(testContext(t),
				&dvhcv1.ListCommunesRequest{ProvinceCode: tt.province})
			if err != nil {
				t.Fatalf("ListCommunes: %v", err)
			}
			units, err := receiveAll(t, stream)
			if err == nil {
				t.Fatalf("stream ended without error after %d communes", len(units))
			}
			if len(units) != 0 {
				t.Errorf("received %d communes before the error, want 0", len(units))
			}
			wantStatus(t, err, tt.want, tt.msg)
		})
	}
}

func TestListCommunesCancelledCall(t *testing.T) {
	client := startServer(t, loaded(t))
	ctx, cancel := context.WithCancel(testContext(t))
	cancel()
	stream, err := client.ListCommunes(ctx,
		&dvhcv1.ListCommunesRequest{ProvinceCode: "01"})
	if err == nil {
		_, err = receiveAll(t, stream)
	}
	wantStatus(t, err, codes.Canceled, "context canceled")
}

// cancellingStream is a server stream whose context is cancelled after the
// first message is sent, standing in for a client that goes away mid-call.
type cancellingStream struct {
	grpc.ServerStream
	ctx    context.Context
	cancel context.CancelFunc
	sent   []*dvhcv1.ListCommunesResponse
}

func (s *cancellingStream) Context() context.Context { return s.ctx }

func (s *cancellingStream) Send(m *dvhcv1.ListCommunesResponse) error {
	s.sent = append(s.sent, m)
	s.cancel()
	return nil
}

func TestListCommunesStopsWhenContextEnds(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	stream := &cancellingStream{ctx: ctx, cancel: cancel}

	req := &dvhcv1.ListCommunesRequest{ProvinceCode: "01"}
	err := NewServer(loaded(t)).ListCommunes(req, stream)
	wantStatus(t, err, codes.Canceled, "context canceled")
	if len(stream.sent) != 1 {
		t.Errorf("sent %d communes, want 1 (the one before cancellation)", len(stream.sent))
	}
}
