package etcdlocal

import (
	"context"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// ClusterConfig says what cluster StartCluster starts.
type ClusterConfig struct {
	// Members is the number of members, at least 1. Default 3.
	Members int
	// Dir holds each member's data directory (<Dir>/<name>/data), log and
	// pid file. Required.
	Dir string
	// Command runs one member as a process (see StartProcess).
	Command []string
	// NamePrefix names the members <prefix>0, <prefix>1, ... Default
	// "etcd-".
	NamePrefix string
	// NoFsync turns off fsync in every member (tests and demos only).
	NoFsync bool
	// ReadyTimeout bounds the wait for every member to be ready. Default
	// 30s.
	ReadyTimeout time.Duration
}

// Cluster is a local cluster of member processes on loopback ports.
type Cluster struct {
	cfg     ClusterConfig
	mu      sync.Mutex
	members []*Member
}

// Member is one member of a Cluster; Proc is nil while it is not running.
type Member struct {
	Spec Spec
	Proc *Process
}

// StartCluster starts the members and waits until every one serves a
// linearizable read. On error, what was started is stopped.
func StartCluster(ctx context.Context, cfg ClusterConfig) (_ *Cluster, err error) {
	if cfg.Members == 0 {
		cfg.Members = 3
	}
	if cfg.NamePrefix == "" {
		cfg.NamePrefix = "etcd-"
	}
	if cfg.ReadyTimeout == 0 {
		cfg.ReadyTimeout = 30 * time.Second
	}
	if cfg.Members < 1 || cfg.Dir == "" || len(cfg.Command) == 0 {
		return nil, errors.New("etcd cluster: want at least one member, a directory and a command")
	}
	ports, err := FreePorts(2 * cfg.Members)
	if err != nil {
		return nil, err
	}
	c := &Cluster{cfg: cfg}
	var initial []string
	for i := range cfg.Members {
		name := cfg.NamePrefix + strconv.Itoa(i)
		dir := filepath.Join(cfg.Dir, name)
		s := Spec{
			Name: name, DataDir: filepath.Join(dir, "data"), LogFile: filepath.Join(dir, "etcd.log"),
			PeerURL:      "http://127.0.0.1:" + strconv.Itoa(ports[2*i]),
			ClientURL:    "http://127.0.0.1:" + strconv.Itoa(ports[2*i+1]),
			ClusterState: StateNew, Token: fmt.Sprintf("healer-local-%d", time.Now().UnixNano()), NoFsync: cfg.NoFsync,
		}
		initial = append(initial, name+"="+s.PeerURL)
		c.members = append(c.members, &Member{Spec: s})
	}
	for _, m := range c.members {
		m.Spec.InitialCluster = strings.Join(initial, ",")
		m.Spec.Token = c.members[0].Spec.Token
	}
	defer func() {
		if err != nil {
			c.Close()
		}
	}()
	for _, m := range c.members {
		if m.Proc, err = StartProcess(cfg.Command, m.Spec); err != nil {
			return nil, err
		}
	}
	rctx, cancel := context.WithTimeoutCause(ctx, cfg.ReadyTimeout, fmt.Errorf("etcd cluster not ready within %s", cfg.ReadyTimeout))
	defer cancel()
	errs := make([]error, len(c.members))
	var wg sync.WaitGroup
	for i, m := range c.members {
		wg.Go(func() { errs[i] = WaitReady(rctx, m.Spec, m.Proc.Exited()) })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return c, nil
}

// Members returns the members.
func (c *Cluster) Members() []*Member {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]*Member(nil), c.members...)
}

// Member returns member i.
func (c *Cluster) Member(i int) *Member {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.members[i]
}

// Running reports whether member i was started and not killed or stopped.
func (c *Cluster) Running(i int) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.members[i].Proc != nil
}

// Endpoints returns every member's client URL.
func (c *Cluster) Endpoints() []string {
	var eps []string
	for _, m := range c.Members() {
		eps = append(eps, m.Spec.ClientURL)
	}
	return eps
}

// Kill kills member i with SIGKILL, as a crash would.
func (c *Cluster) Kill(i int) error {
	m := c.Member(i)
	c.mu.Lock()
	p := m.Proc
	m.Proc = nil
	c.mu.Unlock()
	if p == nil {
		return nil
	}
	return p.Kill()
}

// Restart starts member i again from its data directory (it must have been
// killed) and waits until it is ready.
func (c *Cluster) Restart(ctx context.Context, i int) error {
	m := c.Member(i)
	p, err := StartProcess(c.cfg.Command, m.Spec)
	if err != nil {
		return err
	}
	c.mu.Lock()
	m.Proc = p
	c.mu.Unlock()
	return WaitReady(ctx, m.Spec, p.Exited())
}

// Leader returns the index of the member that leads, as the running
// members report it, waiting up to timeout for one to be elected.
func (c *Cluster) Leader(ctx context.Context, timeout time.Duration) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for {
		for i, m := range c.Members() {
			if !c.Running(i) {
				continue
			}
			if lead, err := leaderOf(ctx, m.Spec.ClientURL); err == nil && lead {
				return i, nil
			}
		}
		select {
		case <-ctx.Done():
			return -1, fmt.Errorf("no etcd leader within %s", timeout)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// leaderOf reports whether the member at url leads.
func leaderOf(ctx context.Context, url string) (bool, error) {
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{url}, DialTimeout: 500 * time.Millisecond, Logger: zap.NewNop()})
	if err != nil {
		return false, err
	}
	defer func() { _ = cli.Close() }()
	sctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
	defer cancel()
	st, err := cli.Status(sctx, url)
	if err != nil {
		return false, err
	}
	return st.Leader != 0 && st.Leader == st.Header.MemberId, nil
}

// Close kills every member the cluster started, at once: a cluster torn
// down whole has no one to hand leadership to, and a graceful stop would
// wait for that. Members started by others in its directory (a
// replacement) are stopped by whoever started them.
func (c *Cluster) Close() {
	var wg sync.WaitGroup
	for _, m := range c.Members() {
		c.mu.Lock()
		p := m.Proc
		m.Proc = nil
		c.mu.Unlock()
		if p != nil {
			wg.Go(func() { _ = p.Kill() })
		}
	}
	wg.Wait()
}

// Destroy kills every member process of the cluster's members, those it
// started and any other written to a member's pid file (a replacement
// started by a provisioner), for tearing down a test or demo whole.
func (c *Cluster) Destroy() {
	c.Close()
	for _, m := range c.Members() {
		if pid, ok := Running(m.Spec); ok {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
}

// FreePorts returns n distinct free loopback TCP ports. Another process
// may take one before it is used; callers start at once.
func FreePorts(n int) ([]int, error) {
	var lns []net.Listener
	defer func() {
		for _, ln := range lns {
			_ = ln.Close()
		}
	}()
	ports := make([]int, 0, n)
	for range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("free port: %w", err)
		}
		lns = append(lns, ln)
		ports = append(ports, ln.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}
