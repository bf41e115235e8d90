package registry

import (
	"context"
	"net"
	"path/filepath"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/descriptorpb"

	"github.com/ketnoi/ketnoi/internal/id"
	"github.com/ketnoi/ketnoi/internal/mtls"
	"github.com/ketnoi/ketnoi/internal/pki/pkitest"
	cataloguev1 "github.com/ketnoi/ketnoi/proto/ketnoi/catalogue/v1"
	registryv1 "github.com/ketnoi/ketnoi/proto/ketnoi/registry/v1"
	dvhcv1 "github.com/ketnoi/ketnoi/proto/vn/gov/dvhc/v1"
)

const (
	testTD        = "vn.ketnoi"
	adminID       = "spiffe://vn.ketnoi/admin/alice"
	nodeID        = "spiffe://vn.ketnoi/node/NN/000.00.00.G22/node1"
	memberG22     = "VN/NN/000.00.00.G22"
	memberG09     = "VN/NN/000.00.00.G09"
	subsystemDVHC = "VN/NN/000.00.00.G09/dvhc"
	serviceDVHC   = "VN/NN/000.00.00.G09/dvhc/vn.gov.dvhc.v1.AdminUnitService"
)

var trustDomain = spiffeid.RequireTrustDomainFromString(testTD)

// fixture is a registry served over mutual TLS on loopback.
type fixture struct {
	ca   *pkitest.CA
	path string
	cfg  Config
	reg  *Registry
	addr string
	stop func()

	signingCerts map[string][]byte // DER signing certificate by member, set by populate
}

// newFixture opens a registry on a fresh state file and serves it.
func newFixture(t *testing.T) *fixture {
	t.Helper()
	ca := pkitest.NewCA(t, testTD)
	f := &fixture{
		ca:   ca,
		path: filepath.Join(t.TempDir(), "registry.db"),
		cfg: Config{
			Instance:     "VN",
			TrustDomain:  trustDomain,
			Signer:       ca.RegistrySigner(t),
			TrustAnchors: ca.Bundle().X509Authorities(),
		},
	}
	f.start(t)
	t.Cleanup(f.close)
	return f
}

// start opens the state file and serves the registry on 127.0.0.1:0.
func (f *fixture) start(t *testing.T) {
	t.Helper()
	reg, err := Open(f.path, f.cfg)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	identity := mtls.Identity{SVID: f.ca.SVID(t, id.Registry(trustDomain).String()), Bundle: f.ca.Bundle()}
	opts := append(reg.ServerOptions(),
		grpc.Creds(mtls.ServerCredentials(identity, tlsconfig.AuthorizeMemberOf(trustDomain))))
	srv := grpc.NewServer(opts...)
	reg.Register(srv)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		reg.Close()
		t.Fatalf("listen: %v", err)
	}
	served := make(chan struct{})
	go func() {
		defer close(served)
		srv.Serve(lis)
	}()
	f.reg, f.addr = reg, lis.Addr().String()
	f.stop = func() {
		reg.Shutdown()
		srv.Stop()
		<-served
		if err := reg.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	}
}

// close stops the server and closes the registry once.
func (f *fixture) close() {
	if f.stop != nil {
		f.stop()
		f.stop = nil
	}
}

// restart closes the registry and opens it again on the same file.
func (f *fixture) restart(t *testing.T) {
	t.Helper()
	f.close()
	f.start(t)
}

// dial connects to the registry as the workload spiffeID.
func (f *fixture) dial(t *testing.T, spiffeID string) *grpc.ClientConn {
	t.Helper()
	identity := mtls.Identity{SVID: f.ca.SVID(t, spiffeID), Bundle: f.ca.Bundle()}
	creds := mtls.ClientCredentials(identity, tlsconfig.AuthorizeID(id.Registry(trustDomain)))
	conn, err := grpc.NewClient(f.addr, grpc.WithTransportCredentials(creds))
	if err != nil {
		t.Fatalf("dial %s: %v", f.addr, err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

func (f *fixture) admin(t *testing.T) registryv1.AdminServiceClient {
	return registryv1.NewAdminServiceClient(f.dial(t, adminID))
}

func (f *fixture) registryClient(t *testing.T, spiffeID string) registryv1.RegistryServiceClient {
	return registryv1.NewRegistryServiceClient(f.dial(t, spiffeID))
}

func (f *fixture) catalogue(t *testing.T) cataloguev1.CatalogueServiceClient {
	return cataloguev1.NewCatalogueServiceClient(f.dial(t, nodeID))
}

// testContext returns a context that ends with the test or after 20 s.
func testContext(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// descriptorSet returns a serialized FileDescriptorSet holding fd and every
// file it imports.
func descriptorSet(t *testing.T, fd protoreflect.FileDescriptor) []byte {
	t.Helper()
	var set descriptorpb.FileDescriptorSet
	seen := make(map[string]bool)
	var add func(protoreflect.FileDescriptor)
	add = func(f protoreflect.FileDescriptor) {
		if seen[f.Path()] {
			return
		}
		seen[f.Path()] = true
		imports := f.Imports()
		for i := range imports.Len() {
			add(imports.Get(i).FileDescriptor)
		}
		set.File = append(set.File, protodesc.ToFileDescriptorProto(f))
	}
	add(fd)
	b, err := proto.Marshal(&set)
	if err != nil {
		t.Fatalf("marshal descriptor set: %v", err)
	}
	return b
}

// dvhcDescriptors is the descriptor set of the administrative units service.
func dvhcDescriptors(t *testing.T) []byte {
	return descriptorSet(t, dvhcv1.File_vn_gov_dvhc_v1_admin_unit_proto)
}

// populate registers members G22 and G09, subsystems G22/vanban and
// G09/dvhc, node1 of G22 and the administrative units service of G09.
func (f *fixture) populate(t *testing.T, ctx context.Context, admin registryv1.AdminServiceClient) {
	t.Helper()
	f.signingCerts = make(map[string][]byte)
	for _, m := range []string{memberG22, memberG09} {
		f.signingCerts[m] = f.ca.Signer(t, m).Certificate().Raw
		_, err := admin.AddMember(ctx, &registryv1.AddMemberRequest{
			MemberId:           m,
			Name:               "member " + m,
			SigningCertificate: f.signingCerts[m],
		})
		if err != nil {
			t.Fatalf("AddMember %s: %v", m, err)
		}
	}
	for _, s := range []string{memberG22 + "/vanban", subsystemDVHC} {
		if _, err := admin.AddSubsystem(ctx, &registryv1.AddSubsystemRequest{SubsystemId: s}); err != nil {
			t.Fatalf("AddSubsystem %s: %v", s, err)
		}
	}
	_, err := admin.AddNode(ctx, &registryv1.AddNodeRequest{SpiffeId: nodeID, Address: "127.0.0.1:8443"})
	if err != nil {
		t.Fatalf("AddNode: %v", err)
	}
	_, err = admin.AddService(ctx, &registryv1.AddServiceRequest{
		ServiceId:         serviceDVHC,
		FileDescriptorSet: dvhcDescriptors(t),
		Description:       "Administrative units",
		Custodian:         "Department of local government",
		Classification:    registryv1.Classification_CLASSIFICATION_NORMAL,
	})
	if err != nil {
		t.Fatalf("AddService: %v", err)
	}
}

// decode returns the configuration carried by a signed configuration.
func decode(t *testing.T, sc *registryv1.SignedConfiguration) *registryv1.GlobalConfiguration {
	t.Helper()
	c := &registryv1.GlobalConfiguration{}
	if err := proto.Unmarshal(sc.GetConfiguration(), c); err != nil {
		t.Fatalf("decode configuration: %v", err)
	}
	return c
}
