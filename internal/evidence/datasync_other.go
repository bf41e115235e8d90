//go:build !linux

package evidence

import "os"

// datasync makes f durable; only Linux has fdatasync.
func datasync(f *os.File) error {
	return f.Sync()
}
