package ready_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/ketnoi/ketnoi/internal/ready"
)

func TestWriteWait(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ready.json")
	want := map[string]string{"grpc": "127.0.0.1:40123", "admin": "[::1]:40124"}
	if err := ready.Write(path, want); err != nil {
		t.Fatalf("Write: %v", err)
	}
	got, err := ready.Wait(context.Background(), path)
	if err != nil {
		t.Fatalf("Wait: %v", err)
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Wait mismatch (-want +got):\n%s", diff)
	}

	// A second write replaces the file, and leaves no temporary files.
	want = map[string]string{"grpc": "127.0.0.1:40125"}
	if err := ready.Write(path, want); err != nil {
		t.Fatalf("second Write: %v", err)
	}
	got, err = ready.Wait(context.Background(), path)
	if err != nil {
		t.Fatalf("Wait: %v", err)
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Wait after rewrite mismatch (-want +got):\n%s", diff)
	}
	entries, err := os.ReadDir(filepath.Dir(path))
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 1 {
		var names []string
		for _, e := range entries {
			names = append(names, e.Name())
		}
		t.Errorf("directory holds %v, want only ready.json", names)
	}
}

func TestWaitForLateWrite(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ready.json")
	want := map[string]string{"grpc": "127.0.0.1:1"}
	errc := make(chan error, 1)
	go func() { errc <- ready.Write(path, want) }()
	got, err := ready.Wait(context.Background(), path)
	if err != nil {
		t.Fatalf("Wait: %v", err)
	}
	if werr := <-errc; werr != nil {
		t.Fatalf("Write: %v", werr)
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Wait mismatch (-want +got):\n%s", diff)
	}
}

func TestWaitCancelled(t *testing.T) {
	path := filepath.Join(t.TempDir(), "never.json")
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	got, err := ready.Wait(ctx, path)
	if !errors.Is(err, context.Canceled) {
		t.Errorf("Wait = %v, %v; want context.Canceled", got, err)
	}
}

func TestWaitMalformed(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ready.json")
	if err := os.WriteFile(path, []byte("{not json"), 0o600); err != nil {
		t.Fatal(err)
	}
	if got, err := ready.Wait(context.Background(), path); err == nil {
		t.Errorf("Wait on malformed JSON = %v, want an error", got)
	}
}

func TestWriteEmptyPath(t *testing.T) {
	dir := t.TempDir()
	t.Chdir(dir)
	if err := ready.Write("", map[string]string{"grpc": "127.0.0.1:1"}); err != nil {
		t.Fatalf("Write with an empty path: %v", err)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 0 {
		t.Errorf("Write with an empty path created %d files", len(entries))
	}
}

func TestWriteMissingDir(t *testing.T) {
	path := filepath.Join(t.TempDir(), "missing", "ready.json")
	if err := ready.Write(path, map[string]string{"grpc": "127.0.0.1:1"}); err == nil {
		t.Errorf("Write into a missing directory succeeded")
	}
}
