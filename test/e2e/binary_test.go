package e2e

import (
	"bufio"
	"bytes"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/selfheal/healer/audit"
)

// buildHealer builds the healer binary once per test binary.
var buildOnce = sync.OnceValues(func() (string, error) {
	dir, err := os.MkdirTemp("", "healer-bin-")
	if err != nil {
		return "", err
	}
	bin := filepath.Join(dir, "healer")
	out, err := exec.Command("go", "build", "-o", bin, "../../cmd/healer").CombinedOutput()
	if err != nil {
		return "", &buildError{out: string(out), err: err}
	}
	return bin, nil
})

type buildError struct {
	out string
	err error
}

func (e *buildError) Error() string { return e.err.Error() + ": " + e.out }

// proc is a `healer serve` process.
type proc struct {
	cmd  *exec.Cmd
	mu   sync.Mutex
	log  bytes.Buffer
	addr string
	// instance is the engine's name in action and target leases.
	instance string
	done     chan error
}

var listenRE = regexp.MustCompile(`msg="healer serving" listen=(\S+) engine_instance=(\S+)`)

func startBinary(t *testing.T, dataDir string) *proc {
	t.Helper()
	return startBinaryWith(t, dataDir, []string{"--nats-listen", "127.0.0.1:-1"}, []string{"KUBECONFIG=", "KUBERNETES_SERVICE_HOST="})
}

// startBinaryWith starts `healer serve` on dataDir and a free port, with
// more flags and environment variables.
func startBinaryWith(t *testing.T, dataDir string, args, env []string) *proc {
	t.Helper()
	bin, err := buildOnce()
	if err != nil {
		t.Fatalf("build healer: %v", err)
	}
	cmd := exec.Command(bin, append([]string{"serve", "--data-dir", dataDir, "--listen", "127.0.0.1:0"}, args...)...) //nolint:gosec // the binary this test built
	cmd.Env = append(os.Environ(), env...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &proc{cmd: cmd, done: make(chan error, 1)}
	found := make(chan []string, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			line := sc.Text()
			p.mu.Lock()
			p.log.WriteString(line + "\n")
			p.mu.Unlock()
			if m := listenRE.FindStringSubmatch(line); m != nil {
				found <- m[1:]
			}
		}
		p.done <- cmd.Wait()
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		if t.Failed() {
			t.Logf("healer log:\n%s", p.logText())
		}
	})
	select {
	case m := <-found:
		p.addr, p.instance = m[0], m[1]
	case <-time.After(60 * time.Second):
		t.Fatalf("healer did not start:\n%s", p.logText())
	}
	return p
}

func (p *proc) logText() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.log.String()
}

// TestSIGTERMShutsDownCleanly runs the real binary: tokens are generated
// into the data dir with mode 0600, an alert is accepted, SIGTERM stops the
// service with exit 0, and after a restart on the same data dir the event
// and its outcome are in the audit trail and the chain verifies.
func TestSIGTERMShutsDownCleanly(t *testing.T) {
	data := t.TempDir()
	p := startBinary(t, data)
	for _, f := range []string{"webhook-token", "api-token"} {
		fi, err := os.Stat(filepath.Join(data, f))
		if err != nil {
			t.Fatalf("generated token: %v", err)
		}
		if fi.Mode().Perm() != 0o600 {
			t.Errorf("%s mode %v, want 0600", f, fi.Mode().Perm())
		}
	}
	whTok := readToken(t, filepath.Join(data, "webhook-token"))
	apiTok := readToken(t, filepath.Join(data, "api-token"))
	if strings.Contains(p.logText(), whTok) || strings.Contains(p.logText(), apiTok) {
		t.Fatal("a token appears in the log")
	}
	if !strings.Contains(p.logText(), "NO REDIS CONFIGURED") || !strings.Contains(p.logText(), "kubernetes=none") {
		t.Errorf("start-up log does not say what healer runs on:\n%s", p.logText())
	}

	req, _ := http.NewRequest(http.MethodPost, "http://"+p.addr+"/webhook/alertmanager", bytes.NewReader(readTestdata(t, "kernel-deadlock-firing.json")))
	req.Header.Set("Authorization", "Bearer "+whTok)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("webhook: %s", resp.Status)
	}
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-p.done:
		if err != nil {
			t.Fatalf("exit after SIGTERM: %v\n%s", err, p.logText())
		}
	case <-time.After(40 * time.Second):
		t.Fatalf("no exit 40s after SIGTERM:\n%s", p.logText())
	}
	if !strings.Contains(p.logText(), "shutdown complete") {
		t.Errorf("no clean shutdown in the log:\n%s", p.logText())
	}

	p2 := startBinary(t, data)
	var recs []audit.Record
	// Usually at once. But when SIGTERM lands while JetStream is handing
	// the event to the engine's pull (in flight, not yet in the client's
	// buffer, so the drain cannot hand it back), the server redelivers it
	// only after the ack wait (30s): the event is late, never lost.
	waitFor(t, 40*time.Second, "the event's outcome after restart", func() (bool, string) {
		recs = getRecords(t, p2.addr, apiTok, "target=node/worker-1")
		ks := strings.Join(kinds(recs), ",")
		return ks == "event,decision", ks
	})
	// Without a cluster the budget is unknown and the policy does nothing.
	if !strings.Contains(string(recs[1].Details), "budget") {
		t.Errorf("decision without a cluster: %s", recs[1].Details)
	}
	all := getRecords(t, p2.addr, apiTok, "after=0&limit=10000")
	if res := audit.VerifyRecords(all); !res.OK {
		t.Fatalf("chain broken after restart: %+v", res)
	}
}

func readToken(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

func getRecords(t *testing.T, addr, token, query string) []audit.Record {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, "http://"+addr+"/api/v1/audit?"+query, nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("audit: %s %s", resp.Status, b)
	}
	var recs []audit.Record
	if err := jsonUnmarshal(b, &recs); err != nil {
		t.Fatal(err)
	}
	return recs
}
