package testenv

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

const (
	redisTimeout = 15 * time.Second
	redisGrace   = 5 * time.Second
)

// Redis is a running redis-server that keeps nothing on disk.
type Redis struct {
	// Addr is the server's host:port on 127.0.0.1.
	Addr string
	// URL is the server's address as a redis:// URL of database 0.
	URL string

	t    testing.TB
	proc *process
}

// StartRedis starts redis-server for t on a free loopback port, with
// snapshots and the append-only file off, and waits until it answers PING.
// It is stopped when t ends. It fails t if redis-server is not on PATH.
func StartRedis(t testing.TB) *Redis {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		t.Fatalf("testenv: redis-server not found on PATH (%v): install the Debian package redis-server", err)
	}
	dir := t.TempDir()
	port := FreePort(t)
	r := &Redis{
		Addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(port)),
		t:    t,
		proc: &process{
			name:    "redis-server",
			path:    bin,
			logPath: filepath.Join(dir, "redis.log"),
			args: []string{
				"--port", strconv.Itoa(port),
				"--bind", "127.0.0.1",
				"--save", "",
				"--appendonly", "no",
				"--dir", dir,
				"--daemonize", "no",
				"--logfile", "",
			},
		},
	}
	r.URL = "redis://" + r.Addr + "/0"
	t.Cleanup(func() {
		r.proc.stop(0)
		logOnFailure(t, r.proc)
	})
	r.Start()
	return r
}

// Stop shuts redis-server down and returns once it has exited, so that
// clients get connection errors. Everything it held is lost.
func (r *Redis) Stop() {
	r.t.Helper()
	r.proc.stop(redisGrace)
	r.t.Logf("testenv: redis-server at %s stopped", r.Addr)
}

// Start starts redis-server on the same port after Stop, empty, and waits
// until it answers PING. It fails the test passed to StartRedis, so call it
// from that test's goroutine.
func (r *Redis) Start() {
	r.t.Helper()
	begin := time.Now()
	if err := r.proc.start(); err != nil {
		r.t.Fatalf("testenv: %v", err)
	}
	if err := waitFor(r.t.Context(), redisTimeout, r.proc, "redis-server PING", func(ctx context.Context) error {
		return ping(ctx, r.Addr)
	}); err != nil {
		r.t.Fatalf("testenv: %v", err)
	}
	r.t.Logf("testenv: redis-server ready at %s after %s", r.Addr, time.Since(begin).Round(time.Millisecond))
}

// ping sends PING to the Redis server at addr and checks for PONG.
func ping(ctx context.Context, addr string) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return fmt.Errorf("ping redis at %s: %w", addr, err)
	}
	defer conn.Close()
	if deadline, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(deadline)
	}
	if _, err := conn.Write([]byte("*1\r\n$4\r\nPING\r\n")); err != nil {
		return fmt.Errorf("ping redis at %s: %w", addr, err)
	}
	line, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil {
		return fmt.Errorf("ping redis at %s: read reply: %w", addr, err)
	}
	if reply := strings.TrimRight(line, "\r\n"); reply != "+PONG" {
		return fmt.Errorf("ping redis at %s: reply %q", addr, reply)
	}
	return nil
}
