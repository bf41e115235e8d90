package exchange_test

import (
	"testing"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/ketnoi/ketnoi/internal/exchange"
)

func TestErrorStatus(t *testing.T) {
	const node = "spiffe://vn.ketnoi/node/NN/000.00.00.G09/ss1"
	e := exchange.Errorf(codes.PermissionDenied, exchange.ReasonGrantMissing, "no grant for %s", "VN/NN/000.00.00.G22")
	if e.Error() != "no grant for VN/NN/000.00.00.G22" {
		t.Errorf("Error() = %q", e.Error())
	}

	st := e.Status(node)
	if st.Code() != codes.PermissionDenied || st.Message() != e.Msg {
		t.Errorf("Status = %v %q, want PermissionDenied %q", st.Code(), st.Message(), e.Msg)
	}
	var info *errdetails.ErrorInfo
	for _, d := range st.Details() {
		if i, ok := d.(*errdetails.ErrorInfo); ok {
			info = i
		}
	}
	if info == nil {
		t.Fatalf("status has no ErrorInfo detail: %v", st.Details())
	}
	if info.GetDomain() != "ketnoi" || info.GetReason() != exchange.ReasonGrantMissing ||
		info.GetMetadata()["node"] != node {
		t.Errorf("ErrorInfo = %v, want domain ketnoi, reason %s, node %s", info, exchange.ReasonGrantMissing, node)
	}

	// The reason survives the trip through the wire form of the status.
	back := status.FromProto(st.Proto())
	reason, ok := exchange.PlatformReason(back)
	if !ok || reason != exchange.ReasonGrantMissing {
		t.Errorf("PlatformReason = %q, %v; want %q, true", reason, ok, exchange.ReasonGrantMissing)
	}
}

func TestPlatformReasonOfBackendStatus(t *testing.T) {
	plain := status.New(codes.NotFound, "no such province")
	if r, ok := exchange.PlatformReason(plain); ok {
		t.Errorf("PlatformReason(plain status) = %q, true; want false", r)
	}
	foreign, err := status.New(codes.NotFound, "x").WithDetails(&errdetails.ErrorInfo{
		Reason: exchange.ReasonGrantMissing,
		Domain: "example.com",
	})
	if err != nil {
		t.Fatal(err)
	}
	if r, ok := exchange.PlatformReason(foreign); ok {
		t.Errorf("PlatformReason(other domain) = %q, true; want false", r)
	}
}
