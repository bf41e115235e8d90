// Package logtest holds what tests need to read the log a component writes
// from its own goroutines while it runs.
package logtest

import (
	"bytes"
	"sync"
)

// Buffer is a log sink that writers and a test's reads may share at once.
// Its zero value is ready.
type Buffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

// Write implements io.Writer.
func (b *Buffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// String returns everything written so far.
func (b *Buffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
