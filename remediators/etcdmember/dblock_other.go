//go:build !unix

package etcdmember

import "errors"

// dbInUse cannot tell here, so the verb refuses (fail closed).
func dbInUse(string) (bool, error) {
	return false, errors.New("cannot tell whether etcd still has its database open on this platform")
}
