//go:build unix

package etcdmember

import (
	"errors"
	"fmt"
	"os"
	"syscall"
)

// dbInUse reports whether an etcd process still has its database open:
// bbolt holds an exclusive flock on member/snap/db for as long as etcd
// runs, whichever container or process namespace it runs in, so a shared
// lock that cannot be had means etcd is still there. A missing database
// is not in use.
func dbInUse(path string) (bool, error) {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("open %s: %w", path, err)
	}
	defer func() { _ = f.Close() }()
	err = syscall.Flock(int(f.Fd()), syscall.LOCK_SH|syscall.LOCK_NB) //nolint:gosec // a file descriptor fits an int
	switch {
	case errors.Is(err, syscall.EWOULDBLOCK):
		return true, nil
	case err != nil:
		return false, fmt.Errorf("lock %s: %w", path, err)
	}
	_ = syscall.Flock(int(f.Fd()), syscall.LOCK_UN) //nolint:gosec // as above
	return false, nil
}
