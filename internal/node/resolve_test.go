package node

import (
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/ketnoi/ketnoi/internal/exchange"
	"github.com/ketnoi/ketnoi/internal/gconf"
	"github.com/ketnoi/ketnoi/internal/id"
	exchangev1 "github.com/ketnoi/ketnoi/proto/ketnoi/exchange/v1"
	registryv1 "github.com/ketnoi/ketnoi/proto/ketnoi/registry/v1"
)

// TestResolveSeveralProviders: when several members offer one gRPC
// service and the call names none, the one whose grants allow the
// calling client is chosen; with none or several such, the call is
// refused as ambiguous, naming the candidates.
func TestResolveSeveralProviders(t *testing.T) {
	const (
		grpcName = "vn.gov.dvhc.v1.AdminUnitService"
		g09      = "VN/NN/000.00.00.G09/dvhc/" + grpcName
		g22      = "VN/NN/000.00.00.G22/vanban/" + grpcName
		other    = "VN/NN/000.00.00.H01/khac/" + grpcName
	)
	now := time.Date(2026, 12, 4, 9, 0, 0, 0, time.UTC)
	svc := func(sid string) *registryv1.Service {
		return &registryv1.Service{Id: sid, GrpcService: grpcName,
			Methods: []*registryv1.Method{{Name: "GetUnit"}, {Name: "ListUnits"}}}
	}
	v := gconf.NewView(&registryv1.GlobalConfiguration{
		Services: []*registryv1.Service{svc(g09), svc(g22), svc(other)},
		Grants: []*registryv1.Grant{
			{Client: "VN/NN/000.00.00.A01/app", Service: g09},
			// Member-wide, for one method.
			{Client: "VN/NN/000.00.00.A02", Service: g09, Methods: []string{"GetUnit"}},
			{Client: "VN/NN/000.00.00.A02", Service: g22, Methods: []string{"ListUnits"}},
			// For one purpose.
			{Client: "VN/NN/000.00.00.A03/app", Service: g22, Purposes: []string{"QLHC"}},
			// Expired, to G22; current, to G09 and H01.
			{Client: "VN/NN/000.00.00.A04/app", Service: g22, ExpiresAt: timestamppb.New(now)},
			{Client: "VN/NN/000.00.00.A04/app", Service: g09},
			{Client: "VN/NN/000.00.00.A05/app", Service: g09},
			{Client: "VN/NN/000.00.00.A05/app", Service: other},
		},
	})
	all := "several providers offer " + grpcName + " (" + g09 + ", " + g22 + ", " + other + ")"
	tests := []struct {
		name, client, method, purpose string
		want                          string // service chosen, or the refusal's message prefix
		code                          codes.Code
	}{
		{"grant to the subsystem", "VN/NN/000.00.00.A01/app", "GetUnit", "", g09, codes.OK},
		{"member-wide grant for the method", "VN/NN/000.00.00.A02/app", "GetUnit", "", g09, codes.OK},
		{"the other member's method", "VN/NN/000.00.00.A02/app", "ListUnits", "", g22, codes.OK},
		{"grant for the purpose", "VN/NN/000.00.00.A03/app", "GetUnit", "QLHC", g22, codes.OK},
		{"expired grant ignored", "VN/NN/000.00.00.A04/app", "GetUnit", "", g09, codes.OK},
		{"no grant", "VN/NN/000.00.00.A09/app", "GetUnit", "", all, codes.FailedPrecondition},
		{"purpose not granted", "VN/NN/000.00.00.A03/app", "GetUnit", "KHAC", all, codes.FailedPrecondition},
		{"two grants", "VN/NN/000.00.00.A05/app", "GetUnit", "",
			"several providers offer " + grpcName + " (" + g09 + ", " + other + ")", codes.FailedPrecondition},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			client, err := id.ParseClient(tt.client)
			if err != nil {
				t.Fatalf("ParseClient: %v", err)
			}
			call := &exchangev1.Header{Method: tt.method, Purpose: tt.purpose}
			s, perr := resolve(v, client, grpcName, call, now)
			var got string
			code := codes.OK
			switch {
			case perr != nil:
				got, code = perr.Msg, perr.Code
				if perr.Reason != exchange.ReasonServiceAmbiguous || !strings.HasPrefix(got, tt.want+";") {
					t.Errorf("refusal %s: %s, want %s: %s; ...", perr.Reason, got, exchange.ReasonServiceAmbiguous, tt.want)
				}
				got = tt.want
			default:
				got = s.GetId()
			}
			if diff := cmp.Diff([]any{tt.code, tt.want}, []any{code, got}); diff != "" {
				t.Errorf("resolve mismatch (-want +got):\n%s", diff)
			}
		})
	}
}
