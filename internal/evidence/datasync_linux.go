package evidence

import (
	"os"
	"syscall"
)

// datasync makes f's data durable, with the metadata needed to read it
// back, as bbolt does for its own file.
func datasync(f *os.File) error {
	return syscall.Fdatasync(int(f.Fd()))
}
