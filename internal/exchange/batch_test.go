package exchange_test

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/ketnoi/ketnoi/internal/exchange"
	"github.com/ketnoi/ketnoi/internal/gather"
	"github.com/ketnoi/ketnoi/internal/pki/pkitest"
	"github.com/ketnoi/ketnoi/internal/sign"
	exchangev1 "github.com/ketnoi/ketnoi/proto/ketnoi/exchange/v1"
)

// sealWith seals through a batch signer of its own, as a node does.
func sealWith(s *sign.Signer, h *exchangev1.Header, payload []byte, hasMsg bool, now time.Time) (*exchange.Sealed, error) {
	bs := exchange.NewBatchSigner(s, nil)
	defer bs.Close()
	return exchange.Seal(context.Background(), bs, h, payload, hasMsg, now)
}

// openWith opens with a fresh verifier cache.
func openWith(f *exchangev1.Frame, lookup exchange.CertLookup) (*exchange.Opened, *exchange.Error) {
	return exchange.Open(f, lookup, exchange.NewVerifier(16))
}

func TestBatchSignatures(t *testing.T) {
	ca := pkitest.NewCA(t, "vn.ketnoi")
	s := ca.Signer(t, consumer)
	bs := exchange.NewBatchSigner(s, nil)
	defer bs.Close()

	const n = 64
	signed := make([]*exchangev1.SignedHeader, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			raw, _ := proto.Marshal(&exchangev1.Header{MessageId: "m", Sequence: uint64(i)})
			sh, err := bs.Sign(context.Background(), raw)
			if err != nil {
				t.Errorf("sign %d: %v", i, err)
				return
			}
			signed[i] = sh
		})
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	batches := map[string]bool{}
	for i, sh := range signed {
		if err := exchange.VerifySignedHeader(s.Certificate(), sh); err != nil {
			t.Errorf("header %d (batch of %d): %v", i, sh.GetBatch().GetSize(), err)
		}
		batches[string(sh.GetBatch().GetRoot())] = true
	}
	t.Logf("%d headers signed in %d batches", n, len(batches))

	// A header moved under another header's proof fails.
	forged := proto.Clone(signed[0]).(*exchangev1.SignedHeader)
	forged.Header = signed[1].GetHeader()
	if signed[0].GetBatch().GetSize() > 1 {
		if err := exchange.VerifySignedHeader(s.Certificate(), forged); err == nil {
			t.Error("header with another header's proof verified")
		}
	}
	// A proof with a changed size fails.
	bad := proto.Clone(signed[0]).(*exchangev1.SignedHeader)
	bad.Batch.Size++
	if err := exchange.VerifySignedHeader(s.Certificate(), bad); err == nil {
		t.Error("proof with a changed batch size verified")
	}
	// Another member's certificate does not verify the batch.
	if err := exchange.VerifySignedHeader(ca.Signer(t, "VN/NN/000.00.00.G09").Certificate(), signed[0]); err == nil {
		t.Error("batch verified with another member's certificate")
	}
}

func TestVerifierCachesRootsPerCertificate(t *testing.T) {
	ca := pkitest.NewCA(t, "vn.ketnoi")
	s := ca.Signer(t, consumer)
	other := ca.Signer(t, "VN/NN/000.00.00.G09")
	bs := exchange.NewBatchSigner(s, nil)
	defer bs.Close()
	sh, err := bs.Sign(context.Background(), []byte("header"))
	if err != nil {
		t.Fatal(err)
	}
	v := exchange.NewVerifier(8)
	for i := range 2 {
		if err := v.Verify(s.Certificate(), sh); err != nil {
			t.Fatalf("verify %d: %v", i, err)
		}
	}
	if err := v.Verify(other.Certificate(), sh); err == nil {
		t.Error("a root cached for one certificate verified with another")
	}
	tampered := proto.Clone(sh).(*exchangev1.SignedHeader)
	tampered.Signature[len(tampered.Signature)-1] ^= 1
	fresh := exchange.NewVerifier(8)
	if err := fresh.Verify(s.Certificate(), tampered); err == nil {
		t.Error("tampered batch signature verified")
	}
}

// A message dated outside its signing certificate's validity is refused,
// even with a good signature.
func TestOpenRefusesMessagesOutsideCertificateValidity(t *testing.T) {
	ca := pkitest.NewCA(t, "vn.ketnoi")
	s := ca.Signer(t, consumer)
	lookup := lookupOf(map[string]*sign.Signer{consumer: s})
	for _, at := range []time.Time{s.Certificate().NotBefore.Add(-time.Hour), s.Certificate().NotAfter.Add(time.Hour)} {
		sealed, err := sealWith(s, requestHeader(), []byte("x"), true, at)
		if err != nil {
			t.Fatal(err)
		}
		if _, xerr := openWith(sealed.Frame, lookup); xerr == nil || xerr.Reason != exchange.ReasonSignerUnknown {
			t.Errorf("message dated %s: %v, want %s", at, xerr, exchange.ReasonSignerUnknown)
		}
	}
}

// Under load a leader waits for more headers, so two callers that arrive
// one after the other share one signature; an idle node never waits.
func TestBatchSignerGathersUnderLoad(t *testing.T) {
	ca := pkitest.NewCA(t, "vn.ketnoi")
	s := ca.Signer(t, consumer)
	var active atomic.Int64
	// The wait ends when the second header arrives, long before an hour.
	bs := exchange.NewBatchSigner(s, &gather.Policy{Delay: time.Hour, MinActive: 4, Active: &active})
	defer bs.Close()

	active.Store(1)
	alone, err := bs.Sign(context.Background(), []byte("idle"))
	if err != nil {
		t.Fatal(err)
	}
	if got := alone.GetBatch().GetSize(); got != 1 {
		t.Fatalf("idle node: batch of %d, want 1", got)
	}

	active.Store(4) // target: two headers
	first := make(chan *exchangev1.SignedHeader, 1)
	go func() {
		sh, err := bs.Sign(context.Background(), []byte("first"))
		if err != nil {
			t.Errorf("first: %v", err)
		}
		first <- sh
	}()
	second, err := bs.Sign(context.Background(), []byte("second"))
	if err != nil {
		t.Fatal(err)
	}
	a := <-first
	if a == nil {
		return
	}
	if string(a.GetBatch().GetRoot()) != string(second.GetBatch().GetRoot()) || a.GetBatch().GetSize() != 2 {
		t.Errorf("busy node: batches of %d and %d with different roots, want one batch of 2",
			a.GetBatch().GetSize(), second.GetBatch().GetSize())
	}
	for _, sh := range []*exchangev1.SignedHeader{a, second} {
		if err := exchange.VerifySignedHeader(s.Certificate(), sh); err != nil {
			t.Errorf("verify %q: %v", sh.GetHeader(), err)
		}
	}
}

// Headers of one batch verified at once all pass, and a forged signature
// over a good root neither passes nor spoils the root for the real one.
func TestVerifierConcurrentAndForgedSignatures(t *testing.T) {
	ca := pkitest.NewCA(t, "vn.ketnoi")
	s := ca.Signer(t, consumer)
	bs := exchange.NewBatchSigner(s, nil)
	defer bs.Close()
	sh, err := bs.Sign(context.Background(), []byte("header"))
	if err != nil {
		t.Fatal(err)
	}
	forged := proto.Clone(sh).(*exchangev1.SignedHeader)
	forged.Signature[len(forged.Signature)-1] ^= 1

	v := exchange.NewVerifier(8)
	var wg sync.WaitGroup
	for i := range 16 {
		wg.Go(func() {
			if i%2 == 1 {
				if err := v.Verify(s.Certificate(), forged); err == nil {
					t.Errorf("verify %d: forged signature accepted", i)
				}
				return
			}
			if err := v.Verify(s.Certificate(), sh); err != nil {
				t.Errorf("verify %d: %v", i, err)
			}
		})
	}
	wg.Wait()
	fresh := exchange.NewVerifier(8)
	if err := fresh.Verify(s.Certificate(), forged); err == nil {
		t.Fatal("forged signature accepted")
	}
	if err := fresh.Verify(s.Certificate(), sh); err != nil {
		t.Errorf("real signature after a forged one over the same root: %v", err)
	}
}

// SealedSize is an upper bound of the signed frame, whatever the header's
// place in a full batch.
func TestSealedSizeBoundsSignedFrames(t *testing.T) {
	ca := pkitest.NewCA(t, "vn.ketnoi")
	s := ca.Signer(t, consumer)
	headers := make([][]byte, exchange.MaxBatch)
	for i := range headers {
		headers[i], _ = proto.Marshal(&exchangev1.Header{MessageId: "m", Sequence: uint64(i), Method: "Get"})
	}
	signed, err := exchange.SignBatch(s, headers)
	if err != nil {
		t.Fatal(err)
	}
	payload := make([]byte, 1000)
	for _, i := range []int{0, exchange.MaxBatch / 2, exchange.MaxBatch - 1} {
		f := &exchangev1.Frame{SignedHeader: signed[i], Payload: payload}
		if got, bound := proto.Size(f), exchange.SealedSize(headers[i], payload); got > bound {
			t.Errorf("header %d: signed frame is %d bytes, over the bound %d", i, got, bound)
		}
		if err := exchange.VerifySignedHeader(s.Certificate(), signed[i]); err != nil {
			t.Errorf("header %d: %v", i, err)
		}
	}
	if _, err := exchange.SignBatch(s, append(headers, headers[0])); err == nil {
		t.Error("a batch over MaxBatch was signed")
	}
}

// A leader waiting for more headers stops once none arrive for the quiet
// gap, however long the delay.
func TestBatchSignerStopsGatheringWhenQuiet(t *testing.T) {
	ca := pkitest.NewCA(t, "vn.ketnoi")
	s := ca.Signer(t, consumer)
	var active atomic.Int64
	active.Store(40)
	bs := exchange.NewBatchSigner(s, &gather.Policy{Delay: time.Hour, Quiet: time.Millisecond, MinActive: 8, Active: &active})
	defer bs.Close()
	sh, err := bs.Sign(context.Background(), []byte("lone"))
	if err != nil {
		t.Fatal(err)
	}
	if got := sh.GetBatch().GetSize(); got != 1 {
		t.Errorf("batch of %d, want 1", got)
	}
}
