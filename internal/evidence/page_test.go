package evidence

import (
	"context"
	"slices"
	"testing"

	"google.golang.org/protobuf/proto"
)

// MessagePage reads one exchange's records a page at a time, from any
// index on, and skips the records of other exchanges, including one whose
// id starts with this id and a 0x00.
func TestMessagePage(t *testing.T) {
	l, _ := openLog(t)
	s := newCA(t, "ca").signer(t, testMember)
	cert := s.Certificate().Raw
	ctx := context.Background()
	var want []uint64
	for i := range 30 {
		id := "feed"
		switch i % 3 {
		case 1:
			id = "other"
		case 2:
			id = "feed\x00x"
		}
		n, err := l.Append(ctx, signedRecord(t, s, header(s, id, uint64(i))), cert)
		if err != nil {
			t.Fatal(err)
		}
		if id == "feed" {
			want = append(want, n)
		}
	}
	one, err := l.Entry(want[0])
	if err != nil {
		t.Fatal(err)
	}
	recordSize := proto.Size(one.Record)

	// Pages of about three records, then the rest from the last next index.
	var got []uint64
	from, pages := uint64(0), 0
	for {
		entries, next, more, err := l.MessagePage("feed", from, 3*recordSize)
		if err != nil {
			t.Fatal(err)
		}
		if len(entries) == 0 || len(entries) > 4 {
			t.Fatalf("page from %d holds %d records, want 1 to 4", from, len(entries))
		}
		for _, e := range entries {
			if e.Record.GetMessageId() != "feed" {
				t.Errorf("record %d of %q in the page of feed", e.Index, e.Record.GetMessageId())
			}
			got = append(got, e.Index)
		}
		pages++
		if !more {
			break
		}
		if next <= entries[len(entries)-1].Index {
			t.Fatalf("next index %d does not follow the page's last record %d", next, entries[len(entries)-1].Index)
		}
		from = next
	}
	if !slices.Equal(got, want) || pages < 3 {
		t.Errorf("paged records %v in %d pages, want %v in several", got, pages, want)
	}

	// A page starting between records starts at the next one; a page
	// past the last record is empty; a tiny limit still returns one.
	entries, _, _, err := l.MessagePage("feed", want[2]+1, 1)
	if err != nil || len(entries) != 1 || entries[0].Index != want[3] {
		t.Errorf("page from %d with a 1-byte limit: %v, %v; want record %d alone", want[2]+1, entries, err, want[3])
	}
	entries, _, more, err := l.MessagePage("feed", want[len(want)-1]+1, 1<<20)
	if err != nil || len(entries) != 0 || more {
		t.Errorf("page past the last record: %d records, more %v, %v; want none", len(entries), more, err)
	}
}
