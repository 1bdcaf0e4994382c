package vip

import (
	"context"
	"fmt"
	"net"
	"net/netip"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
)

// Addresses puts VIP addresses on the node's interfaces and takes them off.
// The Keeper is its only user; NetlinkAddresses is the real one.
type Addresses interface {
	// Present reports whether the VIP's address is on its interface, with
	// any prefix length.
	Present(ctx context.Context, v VIP) (bool, error)
	// Add puts the address on the interface; an address already there is
	// not an error.
	Add(ctx context.Context, v VIP) error
	// Remove takes the address off the interface, with any prefix length;
	// an address that is not there is not an error.
	Remove(ctx context.Context, v VIP) error
	// Announce sends one gratuitous ARP for the address from the
	// interface, so neighbours point their ARP entries at this node.
	Announce(ctx context.Context, v VIP) error
}

// garpFrame builds the Ethernet frame of a gratuitous ARP request from mac
// for ip.
func garpFrame(mac net.HardwareAddr, ip netip.Addr) ([]byte, error) {
	eth := &layers.Ethernet{
		SrcMAC:       mac,
		DstMAC:       layers.EthernetBroadcast,
		EthernetType: layers.EthernetTypeARP,
	}
	ip4 := ip.As4()
	arp := &layers.ARP{
		AddrType:          layers.LinkTypeEthernet,
		Protocol:          layers.EthernetTypeIPv4,
		HwAddressSize:     6,
		ProtAddressSize:   4,
		Operation:         layers.ARPRequest,
		SourceHwAddress:   mac,
		SourceProtAddress: ip4[:],
		DstHwAddress:      make([]byte, 6),
		DstProtAddress:    ip4[:],
	}
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true}, eth, arp); err != nil {
		return nil, fmt.Errorf("build gratuitous ARP frame: %w", err)
	}
	return buf.Bytes(), nil
}
