//go:build unix

package logpipeline

import (
	"io/fs"
	"syscall"
)

// fileIdentity returns the device and inode of a file, the identity
// filebeat's "native" file identifier records.
func fileIdentity(fi fs.FileInfo) (dev, ino uint64, ok bool) {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return 0, 0, false
	}
	return uint64(st.Dev), uint64(st.Ino), true //nolint:unconvert,gosec // the field types differ between platforms
}
