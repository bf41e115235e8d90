package dvhc

import (
	"context"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/testing/protocmp"

	dvhcv1 "github.com/ketnoi/ketnoi/proto/vn/gov/dvhc/v1"
)

var loadOnce = sync.OnceValues(Load)

// loaded returns the embedded data, parsed once for all tests.
func loaded(t testing.TB) *Data {
	t.Helper()
	d, err := loadOnce()
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	return d
}

// startServer serves d on a loopback port and returns a client for it.
func startServer(t *testing.T, d *Data) dvhcv1.AdminUnitServiceClient {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	srv := grpc.NewServer()
	dvhcv1.RegisterAdminUnitServiceServer(srv, NewServer(d))
	done := make(chan struct{})
	go func() {
		defer close(done)
		srv.Serve(lis)
	}()
	t.Cleanup(func() {
		srv.Stop()
		<-done
	})

	conn, err := grpc.NewClient(lis.Addr().String(),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatalf("dial %s: %v", lis.Addr(), err)
	}
	t.Cleanup(func() { conn.Close() })
	return dvhcv1.NewAdminUnitServiceClient(conn)
}

func testContext(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// wantStatus checks that err is a gRPC status with code and message.
func wantStatus(t *testing.T, err error, code codes.Code, msg string) {
	t.Helper()
	st, ok := status.FromError(err)
	if !ok {
		t.Fatalf("error %v is not a gRPC status", err)
	}
	if st.Code() != code || st.Message() != msg {
		t.Errorf("status = %v %q, want %v %q", st.Code(), st.Message(), code, msg)
	}
}

var (
	hanoi2026 = &dvhcv1.AdminUnit{
		Code: "01", Name: "Hà Nội", FullName: "Thành phố Hà Nội",
		FullNameEn: "Hanoi City", Level: dvhcv1.Level_LEVEL_PROVINCE,
		Edition: EditionCurrent,
	}
	baDinh2026 = &dvhcv1.AdminUnit{
		Code: "00004", Name: "Ba Đình", FullName: "Phường Ba Đình",
		FullNameEn: "Ba Dinh Ward", Level: dvhcv1.Level_LEVEL_COMMUNE,
		ParentCode: "01", Edition: EditionCurrent,
	}
	quanThanh2025 = &dvhcv1.AdminUnit{
		Code: "00013", Name: "Quán Thánh", FullName: "Phường Quán Thánh",
		FullNameEn: "Quan Thanh Ward", Level: dvhcv1.Level_LEVEL_COMMUNE,
		ParentCode: "001", Edition: Edition2025,
	}
)

func TestGetUnit(t *testing.T) {
	client := startServer(t, loaded(t))
	tests := []struct {
		name string
		req  *dvhcv1.GetUnitRequest
		want *dvhcv1.AdminUnit
	}{
		{"province, default edition", &dvhcv1.GetUnitRequest{Code: "01"}, hanoi2026},
		{
			"commune, current edition",
			&dvhcv1.GetUnitRequest{Code: "00004", Edition: "2026-07"},
			baDinh2026,
		},
		{
			"province of 2025",
			&dvhcv1.GetUnitRequest{Code: "01", Edition: "2025-03"},
			&dvhcv1.AdminUnit{
				Code: "01", Name: "Hà Nội", FullName: "Thành phố Hà Nội",
				FullNameEn: "Ha Noi City", Level: dvhcv1.Level_LEVEL_PROVINCE,
				Edition: Edition2025,
			},
		},
		{
			"district of 2025",
			&dvhcv1.GetUnitRequest{Code: "001", Edition: "2025-03"},
			&dvhcv1.AdminUnit{
				Code: "001", Name: "Ba Đình", FullName: "Quận Ba Đình",
				FullNameEn: "Ba Dinh District", Level: dvhcv1.Level_LEVEL_DISTRICT,
				ParentCode: "01", Edition: Edition2025,
			},
		},
		{
			"commune of 2025",
			&dvhcv1.GetUnitRequest{Code: "00013", Edition: "2025-03"},
			quanThanh2025,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, err := client.GetUnit(testContext(t), tt.req)
			if err != nil {
				t.Fatalf("GetUnit(%v): %v", tt.req, err)
			}
			if diff := cmp.Diff(tt.want, resp.GetUnit(), protocmp.Transform()); diff != "" {
				t.Errorf("GetUnit(%v) (-want +got):\n%s", tt.req, diff)
			}
		})
	}
}

func TestGetUnitErrors(t *testing.T) {
	client := startServer(t, loaded(t))
	tests := []struct {
		code    string
		edition string
		want    codes.Code
		msg     string
	}{
		{"abc", "", codes.InvalidArgument, `code: want 2, 3 or 5 digits, got "abc"`},
		{"", "", codes.InvalidArgument, `code: want 2, 3 or 5 digits, got ""`},
		{"1", "", codes.InvalidArgument, `code: want 2, 3 or 5 digits, got "1"`},
		{"0004", "", codes.InvalidArgument, `code: want 2, 3 or 5 digits, got "0004"`},
		{"000004", "", codes.InvalidArgument, `code: want 2, 3 or 5 digits, got "000004"`},
		{"0a", "", codes.InvalidArgument, `code: want 2, 3 or 5 digits, got "0a"`},
		{" 01", "", codes.InvalidArgument, `code: want 2, 3 or 5 digits, got " 01"`},
		{
			"01", "2024-01", codes.InvalidArgument,
			`edition: want one of 2026-07, 2025-03, got "2024-01"`,
		},
		{"99999", "", codes.NotFound, `code "99999" not found in edition 2026-07`},
		{"001", "", codes.NotFound, `code "001" not found in edition 2026-07`},
		{"02", "2026-07", codes.NotFound, `code "02" not found in edition 2026-07`},
		{"99", "2025-03", codes.NotFound, `code "99" not found in edition 2025-03`},
	}
	for _, tt := range tests {
		t.Run(tt.code+"@"+tt.edition, func(t *testing.T) {
			req := &dvhcv1.GetUnitRequest{Code: tt.code, Edition: tt.edition}
			resp, err := client.GetUnit(testContext(t), req)
			if err == nil {
				t.Fatalf("GetUnit(%v) = %v, want an error", req, resp)
			}
			wantStatus(t, err, tt.want, tt.msg)
		})
	}
}
