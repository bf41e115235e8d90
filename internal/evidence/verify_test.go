package evidence

import (
	"bytes"
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	bolt "go.etcd.io/bbolt"
	"golang.org/x/mod/sumdb/tlog"
	"google.golang.org/grpc/codes"

	evidencev1 "github.com/ketnoi/ketnoi/proto/ketnoi/evidence/v1"
)

func TestVerifySignatures(t *testing.T) {
	ca, otherCA := newCA(t, "ca"), newCA(t, "other ca")
	s := ca.signer(t, testMember)
	unknown := ca.signer(t, testMember)
	foreign := otherCA.signer(t, testMember)

	good := func(id string) *evidencev1.Record { return signedRecord(t, s, header(s, id, 0)) }
	tamperedSig := good("bad")
	tamperedSig.Signature = good("other").Signature
	refusal := good("refused")
	refusal.Kind = evidencev1.RecordKind_RECORD_KIND_REFUSED
	refusal.Signature = []byte("not a signature")
	refusal.SignatureVerified = false
	refusal.Code = int32(codes.Unauthenticated)
	refusal.Reason = "signature does not verify"
	garbled := &evidencev1.Record{
		Kind:      evidencev1.RecordKind_RECORD_KIND_REFUSED,
		MessageId: "garbled",
		Header:    []byte{0xff, 0xff},
		Code:      int32(codes.InvalidArgument),
		Reason:    "header does not parse",
	}
	unsignedRequest := good("unsigned")
	unsignedRequest.SignatureVerified, unsignedRequest.Signature = false, nil
	otherID := good("m")
	otherID.MessageId = "other"
	garbledClaimed := &evidencev1.Record{
		Kind:              evidencev1.RecordKind_RECORD_KIND_REQUEST_RECEIVED,
		Header:            []byte{0xff, 0xff},
		SignatureVerified: true,
	}

	tests := []struct {
		name  string
		rec   *evidencev1.Record // appended at index 3
		cert  []byte
		roots *x509.CertPool
		want  string // reason for record 3; "" means the log verifies
		sigs  int    // signatures checked when the log verifies
		// unsigned and refusals count the records without a verified
		// signature, and the refusals among them, when the log verifies.
		unsigned, refusals int
	}{
		{name: "clean", rec: good("m"), roots: ca.pool, sigs: 6},
		{name: "clean without roots", rec: good("m"), sigs: 6},
		{name: "tampered signature", rec: tamperedSig, roots: ca.pool,
			want: "signature does not verify"},
		{name: "missing certificate", rec: signedRecord(t, unknown, header(unknown, "m", 0)),
			want: fmt.Sprintf("signer certificate %x missing", unknown.CertificateSHA256()[:8])},
		{name: "certificate from another CA", rec: signedRecord(t, foreign, header(foreign, "m", 0)),
			cert: foreign.Certificate().Raw, roots: ca.pool,
			want: fmt.Sprintf("signer certificate %x not trusted at", foreign.CertificateSHA256()[:8])},
		{name: "certificate from another CA without roots",
			rec:  signedRecord(t, foreign, header(foreign, "m", 0)),
			cert: foreign.Certificate().Raw, sigs: 6},
		{name: "refusal of a bad signature", rec: refusal, roots: ca.pool, sigs: 5, unsigned: 1, refusals: 1},
		{name: "refusal of a garbled header", rec: garbled, roots: ca.pool, sigs: 5, unsigned: 1, refusals: 1},
		// No node writes such a record; it is counted, not a refusal.
		{name: "unsigned request", rec: unsignedRequest, roots: ca.pool, sigs: 5, unsigned: 1},
		{name: "message id not the header's", rec: otherID,
			want: `message id "other" differs from the header's "m"`},
		{name: "garbled header claimed verified", rec: garbledClaimed, want: "header does not parse"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.Background()
			l, _ := openLog(t)
			for i := range 5 {
				rec, cert := good(fmt.Sprint("m-", i)), []byte(nil)
				if i == 0 {
					cert = s.Certificate().Raw
				}
				if i == 3 {
					rec, cert = tt.rec, tt.cert
				}
				if _, err := l.Append(ctx, rec, cert); err != nil {
					t.Fatalf("Append %d: %v", i, err)
				}
			}
			if _, err := l.Append(ctx, good("last"), nil); err != nil {
				t.Fatalf("Append: %v", err)
			}

			rep, err := l.Verify(ctx, tt.roots)
			if tt.want == "" {
				size, root := l.TreeHead()
				want := Report{Size: size, Root: root, SignaturesChecked: tt.sigs,
					Unsigned: tt.unsigned, UnsignedRefusals: tt.refusals}
				if err != nil {
					t.Fatalf("Verify: %v", err)
				}
				if diff := cmp.Diff(want, rep); diff != "" {
					t.Errorf("Verify report mismatch (-want +got):\n%s", diff)
				}
				return
			}
			var verr *VerifyError
			if !errors.As(err, &verr) {
				t.Fatalf("Verify error = %v, want a *VerifyError", err)
			}
			if verr.Index != 3 || !strings.HasPrefix(verr.Reason, tt.want) {
				t.Errorf("Verify error = %v, want record 3: %s...", verr, tt.want)
			}
		})
	}
}

func TestVerifyTamperedStorage(t *testing.T) {
	tests := []struct {
		name   string
		tamper func(tx *bolt.Tx) error
		want   string // error text
	}{
		{
			name:   "flipped leaf byte",
			tamper: func(tx *bolt.Tx) error { return flip(tx.Bucket(bucketLeaves), key(6)) },
			want:   "record 6: leaf hash does not match the tree",
		},
		{
			name:   "missing leaf",
			tamper: func(tx *bolt.Tx) error { return tx.Bucket(bucketLeaves).Delete(key(4)) },
			want:   "record 4: leaf missing",
		},
		{
			// Record 5 completes the level-1 subtree over records 4 and 5.
			name: "flipped tree hash",
			tamper: func(tx *bolt.Tx) error {
				return flip(tx.Bucket(bucketHashes), key(uint64(tlog.StoredHashIndex(1, 2))))
			},
			want: "record 5: tree hash at level 1 does not match the leaves",
		},
		{
			name: "appended leaf",
			tamper: func(tx *bolt.Tx) error {
				return tx.Bucket(bucketLeaves).Put(key(10), []byte("forged"))
			},
			want: "record 10: leaf beyond the log's size",
		},
		{
			name:   "replaced root",
			tamper: func(tx *bolt.Tx) error { return flip(tx.Bucket(bucketMeta), metaRoot) },
			want:   "does not match the root of the leaves",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.Background()
			l, path := openLog(t)
			ca := newCA(t, "ca")
			s := ca.signer(t, testMember)
			for i := range 10 {
				rec := signedRecord(t, s, header(s, fmt.Sprint("m-", i), 0))
				if _, err := l.Append(ctx, rec, s.Certificate().Raw); err != nil {
					t.Fatalf("Append: %v", err)
				}
			}
			if _, err := l.Verify(ctx, ca.pool); err != nil {
				t.Fatalf("Verify before tampering: %v", err)
			}
			if err := l.Close(); err != nil {
				t.Fatalf("Close: %v", err)
			}

			db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second})
			if err != nil {
				t.Fatalf("open bbolt: %v", err)
			}
			if err := db.Update(tt.tamper); err != nil {
				t.Fatalf("tamper: %v", err)
			}
			db.Close()

			ro, err := OpenReadOnly(path)
			if err != nil {
				t.Fatalf("OpenReadOnly: %v", err)
			}
			defer ro.Close()
			_, err = ro.Verify(ctx, ca.pool)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Verify error = %v, want one containing %q", err, tt.want)
			}
		})
	}
}

// flip changes one byte in the middle of the value at k.
func flip(b *bolt.Bucket, k []byte) error {
	v := bytes.Clone(b.Get(k))
	if len(v) == 0 {
		return fmt.Errorf("no value at %x", k)
	}
	v[len(v)/2] ^= 0x01
	return b.Put(k, v)
}

// TestVerifyErrorText pins the text the CLI prints.
func TestVerifyErrorText(t *testing.T) {
	err := &VerifyError{Index: 17, Reason: "leaf hash does not match the tree"}
	if got, want := err.Error(), "record 17: leaf hash does not match the tree"; got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
}

// TestVerifyEmpty checks that a new log verifies with the empty-tree root.
func TestVerifyEmpty(t *testing.T) {
	l, _ := openLog(t)
	rep, err := l.Verify(context.Background(), nil)
	if err != nil {
		t.Fatalf("Verify: %v", err)
	}
	empty, _ := tlog.TreeHash(0, nil)
	if diff := cmp.Diff(Report{Root: empty}, rep); diff != "" {
		t.Errorf("Verify report mismatch (-want +got):\n%s", diff)
	}
}
