package testenv

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
)

const (
	// natsClusterName is the name the servers of a NATSCluster share.
	natsClusterName = "healer-testenv"
	// natsReadyTimeout bounds how long a server may take to accept
	// connections, and the cluster to elect its JetStream meta leader and
	// bring every stream and consumer current.
	natsReadyTimeout = 60 * time.Second
)

// NATSCluster is a JetStream cluster of nats-server instances running in the
// test process: each listens for clients and routes on its own loopback
// ports, keeps its file store in its own directory, and routes to all the
// others. A server stopped with Stop comes back with Start on the same
// ports and store, as a restarted pod of a StatefulSet does.
type NATSCluster struct {
	t     testing.TB
	nodes []*natsNode
}

// natsNode is one server of a cluster: what it is started with, and the
// running server, if any.
type natsNode struct {
	name       string
	clientPort int
	routePort  int
	storeDir   string
	routes     string

	mu  sync.Mutex
	srv *server.Server // nil while stopped
}

// StartNATSCluster starts size JetStream servers named nats-1 … nats-size,
// clustered over routes on 127.0.0.1, and waits until they have elected a
// meta leader and each of them is current. They are shut down when t ends.
func StartNATSCluster(t testing.TB, size int) *NATSCluster {
	t.Helper()
	if size < 1 {
		t.Fatalf("testenv: StartNATSCluster: size %d", size)
	}
	ports, err := freePorts(2 * size)
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	dir := t.TempDir()
	routes := make([]string, size)
	for i := range size {
		routes[i] = "nats-route://127.0.0.1:" + strconv.Itoa(ports[size+i])
	}
	c := &NATSCluster{t: t}
	for i := range size {
		name := "nats-" + strconv.Itoa(i+1)
		c.nodes = append(c.nodes, &natsNode{
			name:       name,
			clientPort: ports[i],
			routePort:  ports[size+i],
			storeDir:   filepath.Join(dir, name),
			routes:     strings.Join(routes, ","),
		})
	}
	t.Cleanup(func() {
		for _, n := range c.nodes {
			n.shutdown()
		}
	})
	begin := time.Now()
	// All at once: a server alone cannot elect a meta leader, and the
	// routes are retried until the others listen.
	errs := make([]error, size)
	var wg sync.WaitGroup
	for i, n := range c.nodes {
		wg.Go(func() { errs[i] = n.start() })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatalf("testenv: %v", err)
	}
	if err := c.waitHealthy(t.Context(), c.nodes...); err != nil {
		t.Fatalf("testenv: %v", err)
	}
	t.Logf("testenv: %d-server NATS JetStream cluster ready at %s after %s", size, c.URL(), time.Since(begin).Round(time.Millisecond))
	return c
}

// URL is every server's client URL, comma-separated, as nats.Connect and
// healer's natsURL take them.
func (c *NATSCluster) URL() string {
	urls := make([]string, len(c.nodes))
	for i, n := range c.nodes {
		urls[i] = n.clientURL()
	}
	return strings.Join(urls, ",")
}

// Names returns the servers' names, in the order of URL.
func (c *NATSCluster) Names() []string {
	names := make([]string, len(c.nodes))
	for i, n := range c.nodes {
		names[i] = n.name
	}
	return names
}

// NameOf returns the name of the server whose client URL is url (as
// nats.Conn.ConnectedUrl reports it), or "" when there is none.
func (c *NATSCluster) NameOf(url string) string {
	for _, n := range c.nodes {
		if strings.TrimSuffix(url, "/") == n.clientURL() {
			return n.name
		}
	}
	return ""
}

// Server returns the named server while it runs, else nil.
func (c *NATSCluster) Server(name string) *server.Server {
	n := c.node(name)
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.srv
}

// Stop shuts the named server down and waits until it has. A server that
// shuts down hands the leadership of its raft groups (the JetStream meta
// group, streams, consumers) to another server first, as one stopped with
// SIGTERM does.
func (c *NATSCluster) Stop(name string) {
	c.t.Helper()
	begin := time.Now()
	c.node(name).shutdown()
	c.t.Logf("testenv: NATS server %s stopped after %s", name, time.Since(begin).Round(time.Millisecond))
}

// Start starts the named server again after Stop, on the same ports and
// store, and waits until every running server, this one included, reports
// its JetStream assets current. It fails the test passed to
// StartNATSCluster, so call it from that test's goroutine.
func (c *NATSCluster) Start(name string) {
	c.t.Helper()
	begin := time.Now()
	n := c.node(name)
	if err := n.start(); err != nil {
		c.t.Fatalf("testenv: %v", err)
	}
	if err := c.waitHealthy(c.t.Context(), c.running()...); err != nil {
		c.t.Fatalf("testenv: %v", err)
	}
	c.t.Logf("testenv: NATS server %s back and current after %s", name, time.Since(begin).Round(time.Millisecond))
}

// StreamLeader returns the name of the running server leading the stream
// (of the global account), or "" while none does.
func (c *NATSCluster) StreamLeader(stream string) string {
	for _, n := range c.running() {
		if srv := c.Server(n.name); srv != nil && srv.JetStreamIsStreamLeader(server.DEFAULT_GLOBAL_ACCOUNT, stream) {
			return n.name
		}
	}
	return ""
}

// ConsumerLeader returns the name of the running server leading the
// stream's consumer, or "" while none does.
func (c *NATSCluster) ConsumerLeader(stream, consumer string) string {
	for _, n := range c.running() {
		if srv := c.Server(n.name); srv != nil && srv.JetStreamIsConsumerLeader(server.DEFAULT_GLOBAL_ACCOUNT, stream, consumer) {
			return n.name
		}
	}
	return ""
}

// MoveStreamLeader makes the named server the stream's leader, asking the
// current leader to step down in its favour, and waits until it leads.
func (c *NATSCluster) MoveStreamLeader(stream, to string) {
	c.t.Helper()
	c.moveLeader("stream "+stream, "$JS.API.STREAM.LEADER.STEPDOWN."+stream, to,
		func() string { return c.StreamLeader(stream) })
}

// MoveConsumerLeader makes the named server the leader of the stream's
// consumer and waits until it leads.
func (c *NATSCluster) MoveConsumerLeader(stream, consumer, to string) {
	c.t.Helper()
	c.moveLeader("consumer "+stream+" > "+consumer, "$JS.API.CONSUMER.LEADER.STEPDOWN."+stream+"."+consumer, to,
		func() string { return c.ConsumerLeader(stream, consumer) })
}

// moveLeader sends a leader stepdown request with to as the preferred
// server until leader reports it, which an election after a stepdown may
// take a few tries to reach.
func (c *NATSCluster) moveLeader(what, subject, to string, leader func() string) {
	c.t.Helper()
	nc, err := nats.Connect(c.URL())
	if err != nil {
		c.t.Fatalf("testenv: move leader of %s: connect: %v", what, err)
	}
	defer nc.Close()
	req, err := json.Marshal(map[string]any{"placement": map[string]any{"preferred": to}})
	if err != nil {
		c.t.Fatalf("testenv: move leader of %s: %v", what, err)
	}
	ctx, cancel := context.WithTimeout(c.t.Context(), natsReadyTimeout)
	defer cancel()
	var last string
	for leader() != to {
		if cur := leader(); cur != "" {
			resp, err := nc.RequestWithContext(ctx, subject, req)
			switch {
			case err != nil:
				last = err.Error()
			default:
				last = string(resp.Data)
			}
		}
		select {
		case <-ctx.Done():
			c.t.Fatalf("testenv: move leader of %s to %s: still %q; last answer: %s", what, to, leader(), last)
		case <-time.After(250 * time.Millisecond):
		}
	}
}

func (c *NATSCluster) node(name string) *natsNode {
	for _, n := range c.nodes {
		if n.name == name {
			return n
		}
	}
	c.t.Fatalf("testenv: no NATS server named %q (have %v)", name, c.Names())
	return nil
}

// running returns the nodes whose server runs.
func (c *NATSCluster) running() []*natsNode {
	var out []*natsNode
	for _, n := range c.nodes {
		n.mu.Lock()
		if n.srv != nil {
			out = append(out, n)
		}
		n.mu.Unlock()
	}
	return out
}

// waitHealthy waits until each of nodes reports its JetStream healthy: the
// meta group has a leader and this server's streams and consumers are
// current.
func (c *NATSCluster) waitHealthy(ctx context.Context, nodes ...*natsNode) error {
	ctx, cancel := context.WithTimeout(ctx, natsReadyTimeout)
	defer cancel()
	for _, n := range nodes {
		for {
			n.mu.Lock()
			srv := n.srv
			n.mu.Unlock()
			if srv == nil {
				return fmt.Errorf("nats server %s: not running", n.name)
			}
			st := srv.Healthz(nil)
			if st.Status == "ok" {
				break
			}
			select {
			case <-ctx.Done():
				return fmt.Errorf("nats server %s: JetStream not healthy within %s: %s %s", n.name, natsReadyTimeout, st.Status, st.Error)
			case <-time.After(100 * time.Millisecond):
			}
		}
	}
	return nil
}

func (n *natsNode) clientURL() string { return "nats://127.0.0.1:" + strconv.Itoa(n.clientPort) }

// start runs the server and waits until it accepts connections. It does
// not wait for the cluster: see waitHealthy.
func (n *natsNode) start() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.srv != nil {
		return fmt.Errorf("start nats server %s: already running", n.name)
	}
	srv, err := server.NewServer(&server.Options{
		ServerName: n.name,
		Host:       "127.0.0.1",
		Port:       n.clientPort,
		JetStream:  true,
		StoreDir:   n.storeDir,
		Cluster: server.ClusterOpts{
			Name: natsClusterName,
			Host: "127.0.0.1",
			Port: n.routePort,
		},
		Routes: server.RoutesFromStr(n.routes),
		NoSigs: true,
		NoLog:  true,
	})
	if err != nil {
		return fmt.Errorf("start nats server %s: %w", n.name, err)
	}
	go srv.Start()
	if !srv.ReadyForConnections(natsReadyTimeout) {
		srv.Shutdown()
		srv.WaitForShutdown()
		return fmt.Errorf("start nats server %s: not accepting connections after %s", n.name, natsReadyTimeout)
	}
	n.srv = srv
	return nil
}

// shutdown stops the server if it runs and waits until it has.
func (n *natsNode) shutdown() {
	n.mu.Lock()
	srv := n.srv
	n.srv = nil
	n.mu.Unlock()
	if srv != nil {
		srv.Shutdown()
		srv.WaitForShutdown()
	}
}
