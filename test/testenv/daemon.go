package testenv

import (
	"fmt"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"
)

// FakeDaemonEnv names the variable that turns a test binary into a fake
// node daemon (see RunFakeDaemonIfAsked).
const FakeDaemonEnv = "HEALER_FAKE_DAEMON_ADDR"

// FakeDaemonTLSEnv, set to "<cert file>:<key file>", makes the fake daemon
// serve HTTPS with that certificate, read when it starts (so a renewed
// certificate is served only after a restart, like kube-apiserver's).
const FakeDaemonTLSEnv = "HEALER_FAKE_DAEMON_TLS"

// RunFakeDaemonIfAsked turns the test binary into a small daemon when
// FakeDaemonEnv is set, and never returns then. Call it first thing in
// TestMain. The daemon serves HTTP on the address: GET /healthz answers
// "ok pid <pid>", and POST /panic makes it crash with a real Go panic on
// stderr (from a goroutine, so net/http cannot recover it), the way a
// kubelet or containerd crashes. Tests restart it as a real process.
func RunFakeDaemonIfAsked() {
	addr := os.Getenv(FakeDaemonEnv)
	if addr == "" {
		return
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintf(w, "ok pid %d\n", os.Getpid())
	})
	mux.HandleFunc("POST /panic", func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(http.StatusAccepted)
		go func() {
			time.Sleep(10 * time.Millisecond)
			var m map[string]int
			m["boom"]++ //nolint:staticcheck // the crash is the point: "panic: assignment to entry in nil map"
		}()
	})
	var ln net.Listener
	var err error
	for range 100 { // the previous instance may still hold the port for a moment
		if ln, err = net.Listen("tcp", addr); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "fake daemon:", err)
		os.Exit(1)
	}
	fmt.Fprintf(os.Stderr, "fake daemon pid %d listening on %s\n", os.Getpid(), addr)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	if certFile, keyFile, ok := strings.Cut(os.Getenv(FakeDaemonTLSEnv), ":"); ok {
		err = srv.ServeTLS(ln, certFile, keyFile) // read once, at start, as a real server does
	} else {
		err = srv.Serve(ln)
	}
	fmt.Fprintln(os.Stderr, "fake daemon:", err)
	os.Exit(1)
}

// FakeDaemonCommand is the command and environment that run the fake
// daemon on addr from the current test binary.
func FakeDaemonCommand(t testing.TB, addr string) (cmd, env []string) {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatalf("test binary: %v", err)
	}
	return []string{exe, "-test.run=^$"}, []string{FakeDaemonEnv + "=" + addr}
}

// FakeDaemonPID asks the fake daemon on addr for its pid.
func FakeDaemonPID(addr string) (int, error) {
	c := &http.Client{Timeout: time.Second}
	resp, err := c.Get("http://" + addr + "/healthz")
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	var pid int
	if _, err := fmt.Fscanf(resp.Body, "ok pid %d", &pid); err != nil {
		return 0, fmt.Errorf("fake daemon on %s: %w", addr, err)
	}
	return pid, nil
}

// WaitFakeDaemon waits up to 20s until the fake daemon on addr answers
// with a pid other than not (0: any pid) and returns that pid: the
// daemon is up, or has been restarted.
func WaitFakeDaemon(t testing.TB, addr string, not int) int {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		pid, err := FakeDaemonPID(addr)
		if err == nil && pid != not {
			return pid
		}
		if time.Now().After(deadline) {
			t.Fatalf("fake daemon on %s: no pid other than %d within 20s (last error: %v)", addr, not, err)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// FreeAddr is a free loopback address host:port.
func FreeAddr(t testing.TB) string {
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(FreePort(t)))
}
