//go:build !unix

package logpipeline

import "io/fs"

// fileIdentity reports no identity: files are then matched to registry
// entries by path only.
func fileIdentity(fs.FileInfo) (dev, ino uint64, ok bool) { return 0, 0, false }
