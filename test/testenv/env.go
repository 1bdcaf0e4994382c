package testenv

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// BinEnv names the environment variable that, when set, is the directory
// holding the etcd and kube-apiserver binaries instead of bin/ at the module
// root.
const BinEnv = "HEALER_TESTENV_BIN"

// FreePort returns a TCP port on 127.0.0.1 that was free when it was chosen.
func FreePort(t testing.TB) int {
	t.Helper()
	ports, err := freePorts(1)
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	return ports[0]
}

// freePorts returns n distinct free loopback ports. All are held open until
// every one is chosen, so none is handed out twice.
func freePorts(n int) ([]int, error) {
	ports := make([]int, 0, n)
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("find a free port: %w", err)
		}
		defer l.Close()
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// binDir returns the directory holding the Kubernetes binaries: $BinEnv, or
// bin/ in the nearest directory above the working directory holding go.mod.
func binDir() (string, error) {
	if dir := os.Getenv(BinEnv); dir != "" {
		return dir, nil
	}
	wd, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("find module root: %w", err)
	}
	for dir := wd; ; {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return filepath.Join(dir, "bin"), nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("find module root: no go.mod in %s or above", wd)
		}
		dir = parent
	}
}

// findBinary returns the path of the named executable in the binary
// directory.
func findBinary(name string) (string, error) {
	dir, err := binDir()
	if err != nil {
		return "", fmt.Errorf("%s: %w: run `make testenv` first", name, err)
	}
	path := filepath.Join(dir, name)
	st, err := os.Stat(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return "", fmt.Errorf("%s not found in %s: run `make testenv` first", name, dir)
	case err != nil:
		return "", fmt.Errorf("%s: %w: run `make testenv` first", name, err)
	case st.IsDir() || st.Mode().Perm()&0o111 == 0:
		return "", fmt.Errorf("%s is not an executable file: run `make testenv` first", path)
	}
	return path, nil
}

// waitFor calls ready every interval until it returns nil, the process
// exits, or timeout passes, and returns the last error.
func waitFor(ctx context.Context, timeout time.Duration, p *process, what string, ready func(context.Context) error) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	const interval = 100 * time.Millisecond
	for {
		err := ready(ctx)
		if err == nil {
			return nil
		}
		if exit := p.exitErr(); exit != nil {
			return fmt.Errorf("wait for %s: %w (last check: %w)", what, exit, err)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("wait for %s: %w (last check: %w)", what, ctx.Err(), err)
		case <-time.After(interval):
		}
	}
}

// IsSubsequence reports whether want appears in got in order, with
// anything in between: for asserting the order of audit records or steps.
func IsSubsequence(want, got []string) bool {
	i := 0
	for _, g := range got {
		if i < len(want) && g == want[i] {
			i++
		}
	}
	return i == len(want)
}
