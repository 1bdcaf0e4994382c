//go:build linux

package testenv

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// IPBin is iproute2's ip, which NewBridgeNet builds the network with.
const IPBin = "/usr/sbin/ip" // Debian's iproute2; .ci/run installs it

// BridgeNet addresses: the hosts of a BridgeNet are on BridgeNetPrefix,
// host i (from 0, in the order given) at 10.10.0.(11+i). Addresses from
// 10.10.0.100 up are never given to a host: they are free for the test's
// virtual IPs.
const (
	BridgeNetPrefix = "10.10.0.0/24"
	// BridgeNetMaxHosts is how many hosts a BridgeNet can have.
	BridgeNetMaxHosts = 89
	// HostLink is the name of every host's interface into the bridge.
	HostLink = "eth0"
)

// BridgeNet is an Ethernet segment of simulated hosts: a bridge in a
// network namespace of its own (so the host's bridge netfilter and
// firewall never see the traffic) and one namespace per host, each with
// one veth (HostLink) into the bridge. Its addresses exist only inside
// these namespaces.
type BridgeNet struct {
	hosts map[string]*NetHost
	order []*NetHost
}

// NetHost is one host of a BridgeNet.
type NetHost struct {
	// Name is the name the test gave the host.
	Name string
	// NSName is the name of its network namespace (ip netns).
	NSName string
	// NS is its network namespace, open until the test ends.
	NS netns.NsHandle
	// IP is its own address on HostLink.
	IP netip.Addr
	// MAC is HostLink's Ethernet address.
	MAC net.HardwareAddr

	nl   *netlink.Handle
	link netlink.Link
}

// NewBridgeNet builds a BridgeNet with the named hosts and waits until
// every host reaches every other over TCP. It must run as root (CI does)
// with iproute2 installed; it fails the test otherwise. t.Cleanup takes
// the network down.
func NewBridgeNet(t testing.TB, hosts ...string) *BridgeNet {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatalf("testenv: a BridgeNet is built of network namespaces, a bridge and veth pairs, so the test must run as root (CI does); euid is %d", os.Geteuid())
	}
	if _, err := os.Stat(IPBin); err != nil {
		t.Fatalf("testenv: iproute2's ip is needed at %s: %v", IPBin, err)
	}
	if len(hosts) == 0 || len(hosts) > BridgeNetMaxHosts {
		t.Fatalf("testenv: a BridgeNet has 1 to %d hosts, not %d", BridgeNetMaxHosts, len(hosts))
	}
	b := make([]byte, 3)
	if _, err := rand.Read(b); err != nil {
		t.Fatalf("testenv: %v", err)
	}
	sfx := hex.EncodeToString(b)
	addNS := func(name string) {
		ipCmd(t, "netns", "add", name)
		t.Cleanup(func() {
			if out, err := exec.Command(IPBin, "netns", "del", name).CombinedOutput(); err != nil {
				t.Errorf("testenv: clean up network namespace %s: %v: %s", name, err, out)
			}
		})
	}
	sw := "tesw-" + sfx
	addNS(sw)
	ipCmd(t, "-n", sw, "link", "add", "br0", "type", "bridge")
	ipCmd(t, "-n", sw, "link", "set", "br0", "up")
	n := &BridgeNet{hosts: map[string]*NetHost{}}
	for i, name := range hosts {
		if _, dup := n.hosts[name]; dup || name == "" || strings.ContainsAny(name, "/ \t\n") {
			t.Fatalf("testenv: bad or repeated BridgeNet host name %q", name)
		}
		ip := netip.AddrFrom4([4]byte{10, 10, 0, byte(11 + i)})
		nsName := "te" + sfx + "-" + name
		addNS(nsName)
		port := "p" + strconv.Itoa(i)
		ipCmd(t, "-n", sw, "link", "add", port, "type", "veth", "peer", "name", HostLink, "netns", nsName)
		ipCmd(t, "-n", sw, "link", "set", port, "master", "br0", "up")
		ipCmd(t, "-n", nsName, "link", "set", "lo", "up")
		ipCmd(t, "-n", nsName, "addr", "add", ip.String()+"/24", "dev", HostLink)
		ipCmd(t, "-n", nsName, "link", "set", HostLink, "up")
		ns, err := netns.GetFromName(nsName)
		if err != nil {
			t.Fatalf("testenv: open network namespace %s: %v", nsName, err)
		}
		t.Cleanup(func() { _ = ns.Close() })
		nl, err := netlink.NewHandleAt(ns)
		if err != nil {
			t.Fatalf("testenv: netlink in network namespace %s: %v", nsName, err)
		}
		t.Cleanup(nl.Close)
		link, err := nl.LinkByName(HostLink)
		if err != nil {
			t.Fatalf("testenv: %s in network namespace %s: %v", HostLink, nsName, err)
		}
		h := &NetHost{Name: name, NSName: nsName, NS: ns, IP: ip, MAC: link.Attrs().HardwareAddr, nl: nl, link: link}
		n.hosts[name] = h
		n.order = append(n.order, h)
	}
	n.waitUp(t)
	return n
}

func ipCmd(t testing.TB, args ...string) {
	t.Helper()
	out, err := exec.Command(IPBin, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("testenv: ip %s: %v: %s", strings.Join(args, " "), err, out)
	}
}

// probePort is a port nothing listens on in a fresh namespace: a host that
// is reached refuses it.
const probePort = "9"

// waitUp waits until every host's TCP connection to every other host's
// address is refused, which shows the segment passes traffic (a fresh link
// may need a moment).
func (n *BridgeNet) waitUp(t testing.TB) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for _, from := range n.order {
		for _, to := range n.order {
			if from == to {
				continue
			}
			addr := net.JoinHostPort(to.IP.String(), probePort)
			var err error
			for {
				_, err = from.Ask(addr, 200*time.Millisecond)
				if errors.Is(err, syscall.ECONNREFUSED) || time.Now().After(deadline) {
					break
				}
			}
			if !errors.Is(err, syscall.ECONNREFUSED) {
				t.Fatalf("testenv: BridgeNet not passing traffic: %s to %s's %s: %v, want connection refused", from.Name, to.Name, addr, err)
			}
		}
	}
}

// Host returns the named host; it panics if there is none (a bug in the
// test).
func (n *BridgeNet) Host(name string) *NetHost {
	h, ok := n.hosts[name]
	if !ok {
		panic(fmt.Sprintf("testenv: BridgeNet has no host %q", name))
	}
	return h
}

// InNS runs fn inside the named host's network namespace; see
// NetHost.InNS.
func (n *BridgeNet) InNS(host string, fn func() error) error { return n.Host(host).InNS(fn) }

// InNS runs fn on an OS thread switched into the host's network namespace
// and waits for it. Sockets fn opens belong to that namespace for good.
// fn must not start goroutines that expect to be in the namespace: they
// run on other threads. The thread runs nothing else meanwhile; if it
// cannot be switched back it is thrown away.
func (h *NetHost) InNS(fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("read current network namespace: %w", err)
			return
		}
		defer func() { _ = orig.Close() }()
		if err := netns.Set(h.NS); err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("enter network namespace %s: %w", h.NSName, err)
			return
		}
		ferr := fn()
		if err := netns.Set(orig); err != nil {
			// Leave the thread locked: it dies with this goroutine.
			errc <- errors.Join(ferr, fmt.Errorf("return from network namespace %s: %w", h.NSName, err))
			return
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}

// HasAddr reports whether addr is on the host's HostLink.
func (h *NetHost) HasAddr(addr netip.Addr) (bool, error) {
	list, err := h.nl.AddrList(h.link, netlink.FAMILY_V4)
	for try := 0; errors.Is(err, netlink.ErrDumpInterrupted) && try < 5; try++ {
		// The addresses changed during the dump: read them again.
		list, err = h.nl.AddrList(h.link, netlink.FAMILY_V4)
	}
	if err != nil {
		return false, fmt.Errorf("list addresses of %s on %s: %w", HostLink, h.Name, err)
	}
	for _, a := range list {
		if ip, ok := netip.AddrFromSlice(a.IP); ok && ip.Unmap() == addr {
			return true, nil
		}
	}
	return false, nil
}

// Neighbour returns the Ethernet address the host's ARP table has for
// addr on HostLink, nil when it has none.
func (h *NetHost) Neighbour(addr netip.Addr) (net.HardwareAddr, error) {
	list, err := h.nl.NeighList(h.link.Attrs().Index, netlink.FAMILY_V4)
	if err != nil {
		return nil, fmt.Errorf("list neighbours of %s on %s: %w", HostLink, h.Name, err)
	}
	for _, n := range list {
		if ip, ok := netip.AddrFromSlice(n.IP); ok && ip.Unmap() == addr && len(n.HardwareAddr) > 0 {
			return n.HardwareAddr, nil
		}
	}
	return nil, nil
}

// Listen listens on the TCP address addr inside the host's namespace, with
// IP_FREEBIND so that addr may be an address the host does not carry yet
// (a virtual IP). The listener is closed when the test ends.
func (h *NetHost) Listen(t testing.TB, addr string) net.Listener {
	t.Helper()
	var ln net.Listener
	err := h.InNS(func() error {
		lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
			var serr error
			if err := c.Control(func(fd uintptr) {
				serr = syscall.SetsockoptInt(int(fd), syscall.IPPROTO_IP, syscall.IP_FREEBIND, 1)
			}); err != nil {
				return err
			}
			return serr
		}}
		var err error
		ln, err = lc.Listen(t.Context(), "tcp4", addr)
		return err
	})
	if err != nil {
		t.Fatalf("testenv: listen on %s in %s: %v", addr, h.Name, err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	return ln
}

// ServeName answers every TCP connection to addr (see Listen) with the
// host's name and a newline, until the test ends.
func (h *NetHost) ServeName(t testing.TB, addr string) {
	t.Helper()
	ln := h.Listen(t, addr)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			_, _ = c.Write([]byte(h.Name + "\n"))
			_ = c.Close()
		}
	}()
}

// AnsweredBy keeps asking the server on addr from this host until it
// answers with want, or ctx ends, and sends the time it first did. Each
// attempt has a short timeout, so a connection that still goes to the
// previous answerer's MAC does not hide when the new one starts answering.
func (h *NetHost) AnsweredBy(ctx context.Context, addr, want string) <-chan time.Time {
	answered := make(chan time.Time, 1)
	go func() {
		for ctx.Err() == nil {
			if got, err := h.Ask(addr, 20*time.Millisecond); err == nil && got == want {
				answered <- time.Now()
				return
			}
			time.Sleep(time.Millisecond)
		}
	}()
	return answered
}

// Ask connects from the host to the TCP address addr and returns the first
// line it answers, without the newline; timeout bounds the connect and the
// read each.
func (h *NetHost) Ask(addr string, timeout time.Duration) (string, error) {
	var answer string
	err := h.InNS(func() error {
		c, err := net.DialTimeout("tcp4", addr, timeout)
		if err != nil {
			return err
		}
		defer c.Close()
		if err := c.SetDeadline(time.Now().Add(timeout)); err != nil {
			return err
		}
		line, err := bufio.NewReader(c).ReadString('\n')
		answer = strings.TrimSpace(line)
		return err
	})
	return answer, err
}

// AddrSampler watches whether two hosts carry an address, every few
// milliseconds, to catch both carrying it at once (split brain).
type AddrSampler struct {
	addr       netip.Addr
	a, b       *NetHost
	stop, done chan struct{}
	once       sync.Once

	mu  sync.Mutex
	res AddrSamples
}

// AddrSamples is what an AddrSampler saw.
type AddrSamples struct {
	// Samples is how many samples were taken.
	Samples int
	// Errs are the errors reading the hosts' addresses.
	Errs []error
	// Both are the instants at which both hosts carried the address.
	Both []time.Time
	// First is, by host name, the first sample in which the host carried
	// the address.
	First map[string]time.Time
	// Gone is, by host name, the first sample without the address after
	// the host had carried it.
	Gone map[string]time.Time
}

// SampleAddr starts sampling whether a and b carry addr, until Stop or the
// end of the test. One sample reads a, then b, then a again, and counts as
// both carrying it only when a had it before and after b had it, which
// rules out a move that happened between the reads.
func SampleAddr(t testing.TB, addr netip.Addr, a, b *NetHost) *AddrSampler {
	t.Helper()
	s := &AddrSampler{
		addr: addr, a: a, b: b, stop: make(chan struct{}), done: make(chan struct{}),
		res: AddrSamples{First: map[string]time.Time{}, Gone: map[string]time.Time{}},
	}
	go s.run()
	t.Cleanup(func() { s.Stop() })
	return s
}

func (s *AddrSampler) run() {
	defer close(s.done)
	for {
		select {
		case <-s.stop:
			return
		default:
		}
		now := time.Now()
		a1, err1 := s.a.HasAddr(s.addr)
		b, err2 := s.b.HasAddr(s.addr)
		a2, err3 := s.a.HasAddr(s.addr)
		s.mu.Lock()
		s.res.Samples++
		if err := errors.Join(err1, err2, err3); err != nil {
			s.res.Errs = append(s.res.Errs, err)
		} else {
			if a1 && b && a2 {
				s.res.Both = append(s.res.Both, now)
			}
			s.note(s.a.Name, a1 || a2, now)
			s.note(s.b.Name, b, now)
		}
		s.mu.Unlock()
		time.Sleep(2 * time.Millisecond)
	}
}

// note records one host's sample. The caller holds s.mu.
func (s *AddrSampler) note(host string, has bool, at time.Time) {
	_, seen := s.res.First[host]
	_, gone := s.res.Gone[host]
	switch {
	case has && !seen:
		s.res.First[host] = at
	case !has && seen && !gone:
		s.res.Gone[host] = at
	}
}

// Stop stops sampling and returns what was seen; later calls return the
// same.
func (s *AddrSampler) Stop() AddrSamples {
	s.once.Do(func() { close(s.stop) })
	<-s.done
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.res
}
