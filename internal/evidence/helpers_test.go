package evidence

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"net/url"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/ketnoi/ketnoi/internal/sign"
	evidencev1 "github.com/ketnoi/ketnoi/proto/ketnoi/evidence/v1"
	exchangev1 "github.com/ketnoi/ketnoi/proto/ketnoi/exchange/v1"
	registryv1 "github.com/ketnoi/ketnoi/proto/ketnoi/registry/v1"
)

const (
	testNode   = "spiffe://vn.ketnoi/node/NN/000.00.00.G22/node1"
	testPeer   = "spiffe://vn.ketnoi/node/NN/000.00.00.G09/node1"
	testMember = "spiffe://vn.ketnoi/member/NN/000.00.00.G22"
)

// testCA is an in-memory certificate authority.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pool *x509.CertPool
}

// serial numbers certificates uniquely within a test binary.
var serial atomic.Int64

func newCA(t testing.TB, name string) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatalf("generate CA key: %v", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(serial.Add(1)),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatalf("create CA certificate: %v", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatalf("parse CA certificate: %v", err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &testCA{cert: cert, key: key, pool: pool}
}

// signer issues a signing certificate for uri and returns its signer.
func (ca *testCA) signer(t testing.TB, uri string) *sign.Signer {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatalf("generate key: %v", err)
	}
	u, err := url.Parse(uri)
	if err != nil {
		t.Fatalf("parse URI: %v", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial.Add(1)),
		Subject:      pkix.Name{CommonName: "signing"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		URIs:         []*url.URL{u},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, key.Public(), ca.key)
	if err != nil {
		t.Fatalf("create certificate: %v", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatalf("parse certificate: %v", err)
	}
	s, err := sign.NewSigner(key, cert)
	if err != nil {
		t.Fatalf("new signer: %v", err)
	}
	return s
}

// header builds request header seq of exchange id, naming s as signer.
func header(s *sign.Signer, id string, seq uint64) *exchangev1.Header {
	payload := []byte("payload of " + id)
	sum := sha256.Sum256(payload)
	return &exchangev1.Header{
		ProtocolVersion:         1,
		MessageId:               id,
		Direction:               exchangev1.Direction_DIRECTION_REQUEST,
		CallKind:                exchangev1.CallKind_CALL_KIND_UNARY,
		Sequence:                seq,
		Client:                  "VN/NN/000.00.00.G22/vanban",
		Service:                 "VN/NN/000.00.00.G09/dvhc/vn.gov.dvhc.v1.AdminUnitService",
		Method:                  "GetUnit",
		Purpose:                 "QLHC",
		User:                    "nguyen.van.a",
		Issue:                   "HS-2026-001",
		Classification:          registryv1.Classification_CLASSIFICATION_NORMAL,
		CreatedAt:               timestamppb.New(time.Now()),
		PayloadSha256:           sum[:],
		PayloadLength:           uint64(len(payload)),
		SenderNode:              testNode,
		AudienceNode:            testPeer,
		SignerCertificateSha256: s.CertificateSHA256(),
	}
}

// signedRecord returns a REQUEST_SENT record of h, signed by s.
func signedRecord(t testing.TB, s *sign.Signer, h *exchangev1.Header) *evidencev1.Record {
	t.Helper()
	hb, err := proto.MarshalOptions{Deterministic: true}.Marshal(h)
	if err != nil {
		t.Fatalf("marshal header: %v", err)
	}
	sig, err := s.Sign(sign.TypeHeader, hb)
	if err != nil {
		t.Fatalf("sign header: %v", err)
	}
	return &evidencev1.Record{
		Kind:              evidencev1.RecordKind_RECORD_KIND_REQUEST_SENT,
		RecordedAt:        timestamppb.Now(),
		MessageId:         h.GetMessageId(),
		Node:              testNode,
		Peer:              testPeer,
		Header:            hb,
		Signature:         sig,
		SignatureVerified: true,
	}
}

// openLog opens a new log in a temporary directory, closed at cleanup.
func openLog(t testing.TB) (*Log, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "evidence.db")
	l, err := Open(path, Options{Node: testNode})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { l.Close() })
	return l, path
}
