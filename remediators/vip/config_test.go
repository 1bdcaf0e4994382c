package vip

import (
	"net/netip"
	"strings"
	"testing"
	"time"
)

func TestConfigDefaults(t *testing.T) {
	c := Config{Node: "m1", VIPs: []VIPConfig{testVIP()}}
	c.ApplyDefaults()
	if c.LeaseTTL != 2*time.Second || c.FenceMargin != 500*time.Millisecond || c.RenewInterval != 2*time.Second/3 ||
		c.GARPCount != 3 || c.GARPInterval != 100*time.Millisecond {
		t.Fatalf("defaults: %+v", c)
	}
	if err := c.Validate(); err != nil {
		t.Fatalf("defaults do not validate: %v", err)
	}
}

func TestConfigValidate(t *testing.T) {
	base := func() Config {
		c := Config{Node: "master-1.example", VIPs: []VIPConfig{{Address: "10.10.0.100/24", Interface: "eth0"}}}
		c.ApplyDefaults()
		return c
	}
	for _, tc := range []struct {
		name    string
		edit    func(*Config)
		wantErr string
	}{
		{"defaults", func(*Config) {}, ""},
		{"/32", func(c *Config) { c.VIPs[0].Address = "10.10.0.100/32" }, ""},
		{"two vips", func(c *Config) { c.VIPs = append(c.VIPs, VIPConfig{Address: "10.10.1.100/24", Interface: "bond0.12"}) }, ""},
		{"no node", func(c *Config) { c.Node = "" }, "node"},
		{"node upper case", func(c *Config) { c.Node = "Master1" }, "DNS-1123"},
		{"node with space", func(c *Config) { c.Node = "m 1" }, "DNS-1123"},
		{"no vips", func(c *Config) { c.VIPs = nil }, "at least one VIP"},
		{"no prefix", func(c *Config) { c.VIPs[0].Address = "10.10.0.100" }, "prefix length"},
		{"ipv6", func(c *Config) { c.VIPs[0].Address = "fd00::100/64" }, "only IPv4"},
		{"network address", func(c *Config) { c.VIPs[0].Address = "10.10.0.0/24" }, "network or broadcast"},
		{"broadcast address", func(c *Config) { c.VIPs[0].Address = "10.10.0.255/24" }, "network or broadcast"},
		{"loopback", func(c *Config) { c.VIPs[0].Address = "127.0.0.5/8" }, "unicast"},
		{"duplicate", func(c *Config) { c.VIPs = append(c.VIPs, VIPConfig{Address: "10.10.0.100/32", Interface: "eth1"}) }, "twice"},
		{"no interface", func(c *Config) { c.VIPs[0].Interface = "" }, "interface"},
		{"interface too long", func(c *Config) { c.VIPs[0].Interface = "averyverylongname0" }, "interface"},
		{"interface with slash", func(c *Config) { c.VIPs[0].Interface = "eth0/1" }, "interface"},
		{"ttl negative", func(c *Config) { c.LeaseTTL = -time.Second }, "leaseTTL"},
		{"margin half the ttl", func(c *Config) { c.FenceMargin = time.Second }, "fenceMargin"},
		{"margin negative", func(c *Config) { c.FenceMargin = -time.Millisecond }, "fenceMargin"},
		{"renew too slow", func(c *Config) { c.RenewInterval = time.Second }, "renewInterval"},
		{"garp count", func(c *Config) { c.GARPCount = 50 }, "garpCount"},
		{"garp interval", func(c *Config) { c.GARPInterval = -1 }, "garpInterval"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := base()
			tc.edit(&c)
			err := c.Validate()
			if tc.wantErr == "" {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("error %v, want one mentioning %q", err, tc.wantErr)
			}
		})
	}
}

func TestFloatConfigValidate(t *testing.T) {
	base := func() FloatConfig {
		c := FloatConfig{VIPs: []FloatVIP{{Address: "10.10.0.100", Candidates: []string{"m1", "m2", "m3"}}}}
		c.ApplyDefaults()
		return c
	}
	for _, tc := range []struct {
		name    string
		edit    func(*FloatConfig)
		wantErr string
	}{
		{"defaults", func(*FloatConfig) {}, ""},
		{"with prefix", func(c *FloatConfig) { c.VIPs[0].Address = "10.10.0.100/24" }, ""},
		{"no vips (vip.float then refuses every target)", func(c *FloatConfig) { c.VIPs = nil }, ""},
		{"bad address", func(c *FloatConfig) { c.VIPs[0].Address = "api" }, "IPv4"},
		{"one candidate", func(c *FloatConfig) { c.VIPs[0].Candidates = []string{"m1"} }, "two candidates"},
		{"duplicate candidate", func(c *FloatConfig) { c.VIPs[0].Candidates = []string{"m1", "m1"} }, "twice"},
		{"bad candidate", func(c *FloatConfig) { c.VIPs[0].Candidates = []string{"m1", "M_2"} }, "DNS-1123"},
		{"duplicate vip", func(c *FloatConfig) {
			c.VIPs = append(c.VIPs, FloatVIP{Address: "10.10.0.100/32", Candidates: []string{"a", "b"}})
		}, "twice"},
		{"status timeout", func(c *FloatConfig) { c.StatusTimeout = -1 }, "statusTimeout"},
		{"max wait", func(c *FloatConfig) { c.MaxWait = -1 }, "maxWait"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := base()
			tc.edit(&c)
			err := c.Validate()
			if tc.wantErr == "" {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("error %v, want one mentioning %q", err, tc.wantErr)
			}
		})
	}
}

func TestBroadcastOf(t *testing.T) {
	for _, tc := range []struct{ prefix, want string }{
		{"10.10.0.100/24", "10.10.0.255"},
		{"10.10.0.100/20", "10.10.15.255"},
		{"10.10.0.5/30", "10.10.0.7"},
		{"10.0.0.1/8", "10.255.255.255"},
		{"10.10.0.100/32", "10.10.0.100"},
	} {
		if got := broadcastOf(netip.MustParsePrefix(tc.prefix)); got.String() != tc.want {
			t.Errorf("broadcastOf(%s) = %s, want %s", tc.prefix, got, tc.want)
		}
	}
}
