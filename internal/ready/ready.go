// Package ready publishes the addresses a server actually bound, so that
// scripts and tests can start servers on port 0 and find them without
// guessing free ports.
//
// A server writes a small JSON object (listener name to address) to the file
// named by its --ready-file flag once every listener is bound; the write is
// atomic, so a reader never sees half a file.
package ready

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"
)

// Write atomically writes addrs as JSON to path. An empty path is a no-op.
func Write(path string, addrs map[string]string) error {
	if path == "" {
		return nil
	}
	b, err := json.Marshal(addrs)
	if err != nil {
		return fmt.Errorf("ready: %w", err)
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".ready-*")
	if err != nil {
		return fmt.Errorf("ready: %w", err)
	}
	// Readers may run as another user; the file holds only addresses.
	if err := tmp.Chmod(0o644); err != nil {
		tmp.Close()
		os.Remove(tmp.Name())
		return fmt.Errorf("ready: %w", err)
	}
	if _, err := tmp.Write(b); err != nil {
		tmp.Close()
		os.Remove(tmp.Name())
		return fmt.Errorf("ready: %w", err)
	}
	if err := tmp.Close(); err != nil {
		os.Remove(tmp.Name())
		return fmt.Errorf("ready: %w", err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("ready: %w", err)
	}
	return nil
}

// Wait polls path until it holds the addresses or ctx ends.
func Wait(ctx context.Context, path string) (map[string]string, error) {
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for {
		b, err := os.ReadFile(path)
		if err == nil {
			var addrs map[string]string
			if err := json.Unmarshal(b, &addrs); err != nil {
				return nil, fmt.Errorf("ready: %s: %w", path, err)
			}
			return addrs, nil
		}
		if !errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("ready: %w", err)
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("ready: waiting for %s: %w", path, ctx.Err())
		case <-t.C:
		}
	}
}
