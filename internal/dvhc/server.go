package dvhc

import (
	"context"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	dvhcv1 "github.com/ketnoi/ketnoi/proto/vn/gov/dvhc/v1"
)

// server serves [Data] as vn.gov.dvhc.v1.AdminUnitService.
type server struct {
	dvhcv1.UnimplementedAdminUnitServiceServer
	d *Data
}

// NewServer returns the AdminUnitService implementation over d. Invalid
// codes and editions fail with InvalidArgument naming the request field;
// codes absent from the data fail with NotFound.
func NewServer(d *Data) dvhcv1.AdminUnitServiceServer {
	return &server{d: d}
}

// GetUnit returns one unit of the requested edition, the current one when
// the request names none.
func (s *server) GetUnit(
	ctx context.Context,
	req *dvhcv1.GetUnitRequest,
) (*dvhcv1.GetUnitResponse, error) {
	code := req.GetCode()
	if !isDigits(code, 2, 3, 5) {
		return nil, status.Errorf(codes.InvalidArgument,
			"code: want 2, 3 or 5 digits, got %q", code)
	}
	name := req.GetEdition()
	if name == "" {
		name = EditionCurrent
	}
	ed, ok := s.d.editions[name]
	if !ok {
		return nil, status.Errorf(codes.InvalidArgument,
			"edition: want one of %s, got %q", strings.Join(editionNames, ", "), name)
	}
	u, ok := ed.units[code]
	if !ok {
		return nil, status.Errorf(codes.NotFound,
			"code %q not found in edition %s", code, name)
	}
	return &dvhcv1.GetUnitResponse{Unit: cloneUnit(u)}, nil
}

// ListCommunes streams the communes of one province of the current edition
// in code order, stopping when the call's context ends.
func (s *server) ListCommunes(
	req *dvhcv1.ListCommunesRequest,
	stream grpc.ServerStreamingServer[dvhcv1.ListCommunesResponse],
) error {
	code := req.GetProvinceCode()
	if !isDigits(code, 2) {
		return status.Errorf(codes.InvalidArgument,
			"province_code: want 2 digits, got %q", code)
	}
	ed := s.d.editions[EditionCurrent]
	if p, ok := ed.units[code]; !ok || p.Level != dvhcv1.Level_LEVEL_PROVINCE {
		return status.Errorf(codes.NotFound,
			"province %q not found in edition %s", code, EditionCurrent)
	}

	ctx := stream.Context()
	for _, u := range ed.children[code] {
		if u.Level != dvhcv1.Level_LEVEL_COMMUNE {
			continue
		}
		if err := ctx.Err(); err != nil {
			return status.FromContextError(err).Err()
		}
		if err := stream.Send(&dvhcv1.ListCommunesResponse{Unit: cloneUnit(u)}); err != nil {
			return err
		}
	}
	return nil
}

// ConvertOldUnit returns a former commune as it stood in the 2025-03 edition
// and the new communes it went into on 2025-07-01.
func (s *server) ConvertOldUnit(
	ctx context.Context,
	req *dvhcv1.ConvertOldUnitRequest,
) (*dvhcv1.ConvertOldUnitResponse, error) {
	code := req.GetOldCode()
	if !isDigits(code, 5) {
		return nil, status.Errorf(codes.InvalidArgument,
			"old_code: want 5 digits, got %q", code)
	}
	links, ok := s.d.links[code]
	if !ok {
		return nil, status.Errorf(codes.NotFound,
			"old_code %q not found in the 2025-07-01 mapping", code)
	}

	resp := &dvhcv1.ConvertOldUnitResponse{}
	if u, ok := s.d.editions[Edition2025].units[code]; ok {
		resp.OldUnit = cloneUnit(u)
	}
	cur := s.d.editions[EditionCurrent]
	for _, l := range links {
		resp.Successors = append(resp.Successors, &dvhcv1.Successor{
			Unit:      successorUnit(cur, l),
			MergeType: l.mergeType,
		})
	}
	return resp, nil
}

// successorUnit returns the new commune of a mapping link from the current
// edition, or, when the mapping's code is missing there, the unit as the
// mapping describes it.
func successorUnit(cur *edition, l link) *dvhcv1.AdminUnit {
	if u, ok := cur.units[l.newCode]; ok {
		return cloneUnit(u)
	}
	return &dvhcv1.AdminUnit{
		Code:       l.newCode,
		FullName:   l.newName,
		Level:      dvhcv1.Level_LEVEL_COMMUNE,
		ParentCode: l.provinceCode,
		Edition:    EditionMapping,
	}
}

// cloneUnit copies a unit of the shared data so that a response never
// aliases it.
func cloneUnit(u *dvhcv1.AdminUnit) *dvhcv1.AdminUnit {
	return proto.Clone(u).(*dvhcv1.AdminUnit)
}

// isDigits reports whether s consists of ASCII digits only and has one of
// the given lengths.
func isDigits(s string, lengths ...int) bool {
	ok := false
	for _, n := range lengths {
		ok = ok || len(s) == n
	}
	if !ok {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}
