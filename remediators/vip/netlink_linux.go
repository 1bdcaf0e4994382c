//go:build linux

package vip

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"runtime"
	"syscall"

	"github.com/gopacket/gopacket/layers"
	"github.com/mdlayher/packet"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// NetlinkAddresses manages addresses with netlink, in one network
// namespace, and announces them with gratuitous ARP sent on an AF_PACKET
// socket opened in that namespace.
type NetlinkAddresses struct {
	h  *netlink.Handle
	ns netns.NsHandle
}

var _ Addresses = (*NetlinkAddresses)(nil)

// NewNetlinkAddresses returns an address manager for the network namespace
// ns; netns.None() means the namespace the process runs in (what the agent
// uses; note that the zero NsHandle is file descriptor 0, not "none"). The caller keeps ownership of ns, which must stay open until
// Close. Tests pass the namespace of a simulated host.
func NewNetlinkAddresses(ns netns.NsHandle) (*NetlinkAddresses, error) {
	var (
		h   *netlink.Handle
		err error
	)
	if ns.IsOpen() {
		h, err = netlink.NewHandleAt(ns, syscall.NETLINK_ROUTE)
	} else {
		h, err = netlink.NewHandle(syscall.NETLINK_ROUTE)
	}
	if err != nil {
		return nil, fmt.Errorf("open netlink handle in network namespace %s: %w", ns, err)
	}
	return &NetlinkAddresses{h: h, ns: ns}, nil
}

// Close releases the netlink handle.
func (n *NetlinkAddresses) Close() error {
	n.h.Close()
	return nil
}

func (n *NetlinkAddresses) link(v VIP) (netlink.Link, error) {
	l, err := n.h.LinkByName(v.Interface)
	if err != nil {
		return nil, fmt.Errorf("find interface %s for vip %s: %w", v.Interface, v.Addr(), err)
	}
	return l, nil
}

// matching returns the addresses on the VIP's interface that are the VIP's
// address, with any prefix length.
func (n *NetlinkAddresses) matching(v VIP) (netlink.Link, []netlink.Addr, error) {
	l, err := n.link(v)
	if err != nil {
		return nil, nil, err
	}
	addrs, err := n.h.AddrList(l, netlink.FAMILY_V4)
	for try := 0; errors.Is(err, netlink.ErrDumpInterrupted) && try < 5; try++ {
		// The addresses changed during the dump: read them again.
		addrs, err = n.h.AddrList(l, netlink.FAMILY_V4)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("list addresses of interface %s: %w", v.Interface, err)
	}
	var out []netlink.Addr
	for _, a := range addrs {
		if ip, ok := netip.AddrFromSlice(a.IP); ok && ip.Unmap() == v.Addr() {
			out = append(out, a)
		}
	}
	return l, out, nil
}

// Present reports whether the VIP's address is on its interface.
func (n *NetlinkAddresses) Present(_ context.Context, v VIP) (bool, error) {
	_, m, err := n.matching(v)
	if err != nil {
		return false, err
	}
	return len(m) > 0, nil
}

// Add puts the VIP's address on its interface.
func (n *NetlinkAddresses) Add(_ context.Context, v VIP) error {
	l, err := n.link(v)
	if err != nil {
		return err
	}
	a := &netlink.Addr{IPNet: &net.IPNet{
		IP:   net.IP(v.Addr().AsSlice()),
		Mask: net.CIDRMask(v.Prefix.Bits(), 32),
	}}
	if err := n.h.AddrAdd(l, a); err != nil && !errors.Is(err, syscall.EEXIST) {
		return fmt.Errorf("add address %s to interface %s: %w", v.Prefix, v.Interface, err)
	}
	return nil
}

// Remove takes the VIP's address off its interface.
func (n *NetlinkAddresses) Remove(_ context.Context, v VIP) error {
	l, m, err := n.matching(v)
	if err != nil {
		return err
	}
	var errs []error
	for _, a := range m {
		if err := n.h.AddrDel(l, &a); err != nil && !errors.Is(err, syscall.EADDRNOTAVAIL) {
			errs = append(errs, fmt.Errorf("remove address %s from interface %s: %w", a.IPNet, v.Interface, err))
		}
	}
	return errors.Join(errs...)
}

// Announce sends one gratuitous ARP request (RFC 5227 announcement: sender
// and target protocol address both the VIP, to the broadcast address).
func (n *NetlinkAddresses) Announce(_ context.Context, v VIP) error {
	l, err := n.link(v)
	if err != nil {
		return err
	}
	attrs := l.Attrs()
	if len(attrs.HardwareAddr) != 6 {
		return fmt.Errorf("announce vip %s on interface %s: no Ethernet address (%q)", v.Addr(), v.Interface, attrs.HardwareAddr)
	}
	frame, err := garpFrame(attrs.HardwareAddr, v.Addr())
	if err != nil {
		return fmt.Errorf("announce vip %s on interface %s: %w", v.Addr(), v.Interface, err)
	}
	ifi := &net.Interface{Index: attrs.Index, Name: attrs.Name, HardwareAddr: attrs.HardwareAddr, MTU: attrs.MTU}
	var conn *packet.Conn
	err = n.inNetns(func() error {
		var lerr error
		// The socket belongs to the namespace it is created in; it keeps
		// working after the thread leaves it.
		conn, lerr = packet.Listen(ifi, packet.Raw, int(layers.EthernetTypeARP), nil)
		return lerr
	})
	if err != nil {
		return fmt.Errorf("announce vip %s: open packet socket on interface %s: %w", v.Addr(), v.Interface, err)
	}
	defer func() { _ = conn.Close() }()
	if _, err := conn.WriteTo(frame, &packet.Addr{HardwareAddr: layers.EthernetBroadcast}); err != nil {
		return fmt.Errorf("announce vip %s: send gratuitous ARP on interface %s: %w", v.Addr(), v.Interface, err)
	}
	return nil
}

// inNetns runs fn in the manager's namespace, see runInNetns.
func (n *NetlinkAddresses) inNetns(fn func() error) error {
	if !n.ns.IsOpen() {
		return fn()
	}
	return runInNetns(n.ns, fn)
}

// runInNetns runs fn on an OS thread switched into ns and waits for it.
// The thread runs nothing else meanwhile; if it cannot be switched back it
// is thrown away (a goroutine that exits locked to its thread takes the
// thread with it).
func runInNetns(ns netns.NsHandle, fn func() error) error {
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
		if err := netns.Set(ns); err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("enter network namespace %s: %w", ns, err)
			return
		}
		ferr := fn()
		if err := netns.Set(orig); err != nil {
			// Leave the thread locked: it dies with this goroutine.
			errc <- errors.Join(ferr, fmt.Errorf("return to network namespace %s: %w", orig, err))
			return
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}
