package vip

import (
	"encoding/hex"
	"net"
	"net/netip"
	"strings"
	"testing"
)

func TestGARPFrame(t *testing.T) {
	mac, _ := net.ParseMAC("02:00:00:00:00:01")
	f, err := garpFrame(mac, netip.MustParseAddr("10.10.0.100"))
	if err != nil {
		t.Fatal(err)
	}
	want := "ffffffffffff" + "020000000001" + "0806" + // Ethernet: broadcast, from mac, ARP
		"0001" + "0800" + "06" + "04" + "0001" + // Ethernet/IPv4, request
		"020000000001" + "0a0a0064" + "000000000000" + "0a0a0064" // sender = target = the VIP
	if got := hex.EncodeToString(f); !strings.HasPrefix(got, want) {
		t.Fatalf("frame\n%s\nwant prefix\n%s", got, want)
	}
	if len(f) < 42 {
		t.Fatalf("frame of %d bytes", len(f))
	}
}
