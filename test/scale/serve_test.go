//go:build linux

package scale

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// buildHealer builds the healer binary into a temporary directory of tb.
func buildHealer(ctx context.Context, tb testing.TB) string {
	tb.Helper()
	bin := filepath.Join(tb.TempDir(), "healer")
	begin := time.Now()
	cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, "github.com/selfheal/healer/cmd/healer")
	if out, err := cmd.CombinedOutput(); err != nil {
		tb.Fatalf("build healer: %v\n%s", err, out)
	}
	tb.Logf("built healer in %s", time.Since(begin).Round(100*time.Millisecond))
	return bin
}

// serveProc is a running `healer serve` process whose stderr (the log and
// the runtime's gctrace lines) is read as it comes.
type serveProc struct {
	cmd   *exec.Cmd
	start time.Time
	done  chan struct{} // closed once the process has exited
	err   error         // why it exited, set before done is closed

	mu      sync.Mutex
	lines   []string // the log, without gctrace lines
	gcs     []gcCycle
	addr    string
	serving time.Time // when "healer serving" was logged
	// servingNodes is the budget's count of nodes in that line.
	servingNodes int
	synced       time.Time // when the node-problem detector logged its initial sync
	npNodes      int       // nodes in that line
	changed      chan struct{}
}

// gcCycle is one garbage collection as gctrace reports it.
type gcCycle struct {
	at   time.Time
	live int64 // MiB marked live
	goal int64 // MiB heap goal
}

var (
	servingRE = regexp.MustCompile(`msg="healer serving" listen=(\S+) .*kubernetes="[^"]* \((\d+) nodes\)"`)
	syncedRE  = regexp.MustCompile(`msg="initial sync done" detector=nodeproblem nodes=(\d+)`)
	// gc 12 @3.1s 2%: ... ms cpu, 45->46->20 MB, 50 MB goal, ...
	gctraceRE = regexp.MustCompile(`^gc \d+ @\S+ \S+: .* (\d+)->(\d+)->(\d+) MB, (\d+) MB goal`)
)

// startServe starts `bin serve` with the configuration file cfg and the data
// directory dir, listening on a free port, with gctrace on. It returns once
// the process runs; waitServing waits for it to serve. The process is
// killed when tb ends and its log tail is logged if tb failed.
func startServe(tb testing.TB, bin, cfg, dir string) *serveProc {
	tb.Helper()
	godebug := "gctrace=1"
	if v := os.Getenv("GODEBUG"); v != "" {
		godebug = v + ",gctrace=1"
	}
	cmd := exec.Command(bin, "serve", "--config", cfg, "--data-dir", dir, "--listen", "127.0.0.1:0") //nolint:gosec // the binary this test built
	cmd.Env = append(os.Environ(), "GODEBUG="+godebug, "KUBECONFIG=", "KUBERNETES_SERVICE_HOST=")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		tb.Fatalf("start healer serve: %v", err)
	}
	p := &serveProc{cmd: cmd, done: make(chan struct{}), changed: make(chan struct{}, 1)}
	p.start = time.Now()
	if err := cmd.Start(); err != nil {
		tb.Fatalf("start healer serve: %v", err)
	}
	go func() {
		p.read(stderr)
		p.err = cmd.Wait()
		close(p.done)
	}()
	tb.Cleanup(func() {
		p.stop(tb)
		if tb.Failed() {
			tb.Logf("healer serve log (tail):\n%s", p.logTail(80))
		}
	})
	return p
}

func (p *serveProc) read(r io.Reader) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		now := time.Now()
		p.mu.Lock()
		if m := gctraceRE.FindStringSubmatch(line); m != nil {
			live, _ := strconv.ParseInt(m[3], 10, 64)
			goal, _ := strconv.ParseInt(m[4], 10, 64)
			p.gcs = append(p.gcs, gcCycle{at: now, live: live, goal: goal})
			p.mu.Unlock()
			continue
		}
		p.lines = append(p.lines, line)
		if m := servingRE.FindStringSubmatch(line); m != nil && p.serving.IsZero() {
			p.addr, p.serving = m[1], now
			p.servingNodes, _ = strconv.Atoi(m[2])
		}
		if m := syncedRE.FindStringSubmatch(line); m != nil && p.synced.IsZero() {
			p.npNodes, _ = strconv.Atoi(m[1])
			p.synced = now
		}
		p.mu.Unlock()
		select {
		case p.changed <- struct{}{}:
		default:
		}
	}
}

// waitFor waits until cond, called with p.mu held, holds; it fails tb when
// the process exits or timeout passes first.
func (p *serveProc) waitFor(tb testing.TB, timeout time.Duration, what string, cond func() bool) {
	tb.Helper()
	deadline := time.After(timeout)
	for {
		p.mu.Lock()
		ok := cond()
		p.mu.Unlock()
		if ok {
			return
		}
		select {
		case <-p.changed:
		case <-time.After(time.Second):
		case <-p.done:
			tb.Fatalf("healer serve exited while waiting for %s: %v", what, p.err)
		case <-deadline:
			tb.Fatalf("healer serve: no %s within %s", what, timeout)
		}
	}
}

// logLine returns the first log line matching re, or "".
func (p *serveProc) logLine(re *regexp.Regexp) string {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, l := range p.lines {
		if re.MatchString(l) {
			return l
		}
	}
	return ""
}

func (p *serveProc) logTail(n int) string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return strings.Join(p.lines[max(0, len(p.lines)-n):], "\n")
}

// gcStats returns the largest live heap any collection marked, the live
// heap of the last collection and when it ran, and how many ran.
func (p *serveProc) gcStats() (peakMiB, lastMiB int64, last time.Time, n int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.gcs {
		peakMiB = max(peakMiB, c.live)
	}
	if len(p.gcs) > 0 {
		c := p.gcs[len(p.gcs)-1]
		lastMiB, last = c.live, c.at
	}
	return peakMiB, lastMiB, last, len(p.gcs)
}

// stop asks the process to shut down and kills it if it has not within
// 30 seconds.
func (p *serveProc) stop(tb testing.TB) {
	select {
	case <-p.done:
		return
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(30 * time.Second):
		tb.Logf("healer serve did not stop within 30s of SIGTERM; killing it")
		_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
		<-p.done
	}
}

// procMem is what /proc/<pid>/status says about a process's memory, in
// bytes.
type procMem struct {
	HWM, RSS, Anon, File int64
}

func readProcMem(pid int) (procMem, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return procMem{}, fmt.Errorf("read memory of pid %d: %w", pid, err)
	}
	defer f.Close()
	var m procMem
	fields := map[string]*int64{"VmHWM:": &m.HWM, "VmRSS:": &m.RSS, "RssAnon:": &m.Anon, "RssFile:": &m.File}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) != 3 || f[2] != "kB" {
			continue
		}
		if dst := fields[f[0]]; dst != nil {
			kb, err := strconv.ParseInt(f[1], 10, 64)
			if err != nil {
				return procMem{}, fmt.Errorf("read memory of pid %d: %s: %w", pid, f[0], err)
			}
			*dst = kb << 10
		}
	}
	if err := sc.Err(); err != nil {
		return procMem{}, fmt.Errorf("read memory of pid %d: %w", pid, err)
	}
	if m.RSS == 0 {
		return procMem{}, fmt.Errorf("read memory of pid %d: no VmRSS in /proc/%d/status", pid, pid)
	}
	return m, nil
}

// rssSampler records the largest resident set it sees, sampling every
// interval, as a cross-check of VmHWM and to time the peak.
type rssSampler struct {
	mu     sync.Mutex
	max    int64
	maxAt  time.Time
	stopCh chan struct{}
	done   chan struct{}
	once   sync.Once
}

func sampleRSS(pid int, interval time.Duration) *rssSampler {
	s := &rssSampler{stopCh: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(s.done)
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			if m, err := readProcMem(pid); err == nil {
				s.mu.Lock()
				if m.RSS > s.max {
					s.max, s.maxAt = m.RSS, time.Now()
				}
				s.mu.Unlock()
			}
			select {
			case <-s.stopCh:
				return
			case <-t.C:
			}
		}
	}()
	return s
}

func (s *rssSampler) peak() (int64, time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.max, s.maxAt
}

// stop ends the sampling; calling it again does nothing.
func (s *rssSampler) stop() {
	s.once.Do(func() { close(s.stopCh) })
	<-s.done
}

// budgetMetrics scrapes serve's /metrics and returns healer_budget_known
// and healer_budget_nodes{state="total"}.
func budgetMetrics(ctx context.Context, addr string) (known, total int64, err error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/metrics", nil)
	if err != nil {
		return 0, 0, fmt.Errorf("scrape metrics: %w", err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, 0, fmt.Errorf("scrape metrics: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return 0, 0, fmt.Errorf("scrape metrics: %s", resp.Status)
	}
	known, total = -1, -1
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		var dst *int64
		switch {
		case strings.HasPrefix(line, "healer_budget_known{"), strings.HasPrefix(line, "healer_budget_known "):
			dst = &known
		case strings.HasPrefix(line, "healer_budget_nodes{") && strings.Contains(line, `state="total"`):
			dst = &total
		default:
			continue
		}
		f := strings.Fields(line)
		v, err := strconv.ParseFloat(f[len(f)-1], 64)
		if err != nil {
			return 0, 0, fmt.Errorf("scrape metrics: %q: %w", line, err)
		}
		*dst = int64(v)
	}
	if err := sc.Err(); err != nil {
		return 0, 0, fmt.Errorf("scrape metrics: %w", err)
	}
	if known < 0 {
		return 0, 0, errors.New("scrape metrics: no healer_budget_known")
	}
	return known, total, nil
}

func mib(b int64) float64 { return float64(b) / (1 << 20) }
