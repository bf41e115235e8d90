package catalogue

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"math/rand/v2"
	"testing"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/proto"

	cataloguev1 "github.com/ketnoi/ketnoi/proto/ketnoi/catalogue/v1"
)

func sampleEntries() []*cataloguev1.CodeEntry {
	return []*cataloguev1.CodeEntry{
		{Code: "01", Fields: map[string]string{"name": "Hà Nội", "level": "province"}},
		{Code: "00004", Fields: map[string]string{"name": "Ba Đình", "parent_code": "01"}},
		{Code: "00008", Fields: map[string]string{"name": "Ngọc Hà", "parent_code": "01"}},
		{Code: "79", Fields: map[string]string{"name": "Hồ Chí Minh", "level": "province"}},
		{Code: "26734", Fields: map[string]string{"name": "Sài Gòn", "parent_code": "79"}},
	}
}

func TestDigestKnownAnswer(t *testing.T) {
	entries := []*cataloguev1.CodeEntry{
		{Code: "02", Fields: map[string]string{"b": "y", "a": "x"}},
		{Code: "01", Fields: map[string]string{"z": ""}},
	}
	// The encoding written out by hand from the contract on Digest.
	var want bytes.Buffer
	str := func(s string) {
		want.Write([]byte{0, 0, 0, 0, 0, 0, 0, byte(len(s))})
		want.WriteString(s)
	}
	u64 := func(n byte) { want.Write([]byte{0, 0, 0, 0, 0, 0, 0, n}) }
	str("ketnoi.catalogue.v1.CodeEntry list")
	u64(2)
	str("01")
	u64(0)
	str("02")
	u64(2)
	str("a")
	str("x")
	str("b")
	str("y")
	sum := sha256.Sum256(want.Bytes())

	got := Digest(entries)
	if diff := cmp.Diff(hex.EncodeToString(sum[:]), hex.EncodeToString(got)); diff != "" {
		t.Errorf("Digest (-want +got):\n%s", diff)
	}
}

func TestDigestIgnoresOrder(t *testing.T) {
	entries := sampleEntries()
	want := Digest(entries)
	if len(want) != sha256.Size {
		t.Fatalf("Digest has %d bytes, want %d", len(want), sha256.Size)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range 20 {
		shuffled := sampleEntries()
		rng.Shuffle(len(shuffled), func(a, b int) {
			shuffled[a], shuffled[b] = shuffled[b], shuffled[a]
		})
		if got := Digest(shuffled); !bytes.Equal(got, want) {
			t.Errorf("shuffle %d: Digest = %x, want %x", i, got, want)
		}
	}
}

func TestDigestDoesNotReorderInput(t *testing.T) {
	entries := sampleEntries()
	Digest(entries)
	var got []string
	for _, e := range entries {
		got = append(got, e.Code)
	}
	want := []string{"01", "00004", "00008", "79", "26734"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("codes after Digest (-want +got):\n%s", diff)
	}
}

type entryList = []*cataloguev1.CodeEntry

func TestDigestChanges(t *testing.T) {
	base := Digest(sampleEntries())
	tests := []struct {
		name   string
		change func(entryList) entryList
	}{
		{"field value", func(es entryList) entryList {
			es[1].Fields["name"] = "Ba Đinh"
			return es
		}},
		{"field name", func(es entryList) entryList {
			es[1].Fields["full_name"] = es[1].Fields["name"]
			delete(es[1].Fields, "name")
			return es
		}},
		{"added field", func(es entryList) entryList {
			es[0].Fields["name_en"] = "Hanoi"
			return es
		}},
		{"code", func(es entryList) entryList {
			es[1].Code = "4"
			return es
		}},
		{"removed entry", func(es entryList) entryList {
			return es[1:]
		}},
		{"duplicated entry", func(es entryList) entryList {
			return append(es, proto.Clone(es[2]).(*cataloguev1.CodeEntry))
		}},
		{"value moved across a field boundary", func(es entryList) entryList {
			es[0].Fields = map[string]string{"name": "Hà Nộiprovince", "level": ""}
			return es
		}},
		{"code and field run together", func(es entryList) entryList {
			es[3] = &cataloguev1.CodeEntry{Code: "79name"}
			return es
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := Digest(tt.change(sampleEntries()))
			if bytes.Equal(got, base) {
				t.Errorf("Digest unchanged (%x) after changing the %s", got, tt.name)
			}
		})
	}
}

func TestDigestEmptyValueEqualsMissingField(t *testing.T) {
	a := []*cataloguev1.CodeEntry{
		{Code: "01", Fields: map[string]string{"name": "Hà Nội"}},
	}
	b := []*cataloguev1.CodeEntry{
		{Code: "01", Fields: map[string]string{"name": "Hà Nội", "parent_code": ""}},
	}
	if da, db := Digest(a), Digest(b); !bytes.Equal(da, db) {
		t.Errorf("Digest with empty field = %x, without = %x; want equal", db, da)
	}
}

func TestDigestDuplicateCodesIgnoreOrder(t *testing.T) {
	x := &cataloguev1.CodeEntry{Code: "01", Fields: map[string]string{"name": "x"}}
	y := &cataloguev1.CodeEntry{Code: "01", Fields: map[string]string{"name": "y"}}
	dxy := Digest([]*cataloguev1.CodeEntry{x, y})
	dyx := Digest([]*cataloguev1.CodeEntry{y, x})
	if !bytes.Equal(dxy, dyx) {
		t.Errorf("Digest depends on the order of entries sharing a code: %x != %x", dxy, dyx)
	}
}

func TestSort(t *testing.T) {
	entries := sampleEntries()
	entries = append(entries,
		&cataloguev1.CodeEntry{Code: "01", Fields: map[string]string{"n": "2"}})
	Sort(entries)
	var got []string
	for _, e := range entries {
		got = append(got, e.Code+":"+e.Fields["n"])
	}
	want := []string{"00004:", "00008:", "01:", "01:2", "26734:", "79:"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Sort (-want +got):\n%s", diff)
	}
}
