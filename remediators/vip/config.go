package vip

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"time"
)

// Defaults of Config.
const (
	DefaultLeaseTTL     = 2 * time.Second
	DefaultFenceMargin  = 500 * time.Millisecond
	DefaultGARPCount    = 3
	DefaultGARPInterval = 100 * time.Millisecond
)

// Config configures the Keeper on one master.
type Config struct {
	// Node is this node's name. It is the holder name written in leases,
	// and requests addressed to another node are refused.
	Node string `json:"node"`
	// VIPs are the virtual IPs this node may carry.
	VIPs []VIPConfig `json:"vips"`
	// LeaseTTL is how long a lease is valid after each renewal (default 2s).
	LeaseTTL time.Duration `json:"leaseTTL"`
	// FenceMargin is how long before its lease expires a holder that could
	// not renew removes the address (default 500ms). It must exceed the
	// clock skew between masters plus the time to remove an address, and
	// be less than LeaseTTL/2.
	FenceMargin time.Duration `json:"fenceMargin"`
	// RenewInterval is how often a held lease is renewed (default
	// LeaseTTL/3). After a failed renewal the next try comes sooner.
	RenewInterval time.Duration `json:"renewInterval"`
	// GARPCount is how many gratuitous ARPs announce a newly added address
	// (default 3; the first is sent at once).
	GARPCount int `json:"garpCount"`
	// GARPInterval is the time between gratuitous ARPs (default 100ms).
	GARPInterval time.Duration `json:"garpInterval"`
}

// VIPConfig is one virtual IP a node may carry.
type VIPConfig struct {
	// Address is the IPv4 address with its prefix length, for example
	// "10.10.0.100/24" or "10.10.0.100/32".
	Address string `json:"address"`
	// Interface is the network interface the address goes on.
	Interface string `json:"interface"`
}

// VIP is a parsed VIPConfig: the address and the interface it goes on.
type VIP struct {
	Prefix    netip.Prefix
	Interface string
}

// Addr returns the VIP's address without its prefix length.
func (v VIP) Addr() netip.Addr { return v.Prefix.Addr() }

// String returns the address with its prefix length and the interface.
func (v VIP) String() string { return v.Prefix.String() + " on " + v.Interface }

// ApplyDefaults fills zero fields with defaults.
func (c *Config) ApplyDefaults() {
	if c.LeaseTTL == 0 {
		c.LeaseTTL = DefaultLeaseTTL
	}
	if c.FenceMargin == 0 {
		c.FenceMargin = DefaultFenceMargin
	}
	if c.RenewInterval == 0 {
		c.RenewInterval = c.LeaseTTL / 3
	}
	if c.GARPCount == 0 {
		c.GARPCount = DefaultGARPCount
	}
	if c.GARPInterval == 0 {
		c.GARPInterval = DefaultGARPInterval
	}
}

// Validate reports a configuration the Keeper could not run safely with.
func (c *Config) Validate() error {
	var errs []error
	if err := validNodeName(c.Node); err != nil {
		errs = append(errs, fmt.Errorf("node: %w", err))
	}
	if _, err := c.parseVIPs(); err != nil {
		errs = append(errs, err)
	}
	if c.LeaseTTL <= 0 {
		errs = append(errs, fmt.Errorf("leaseTTL %s: must be positive", c.LeaseTTL))
	}
	if c.FenceMargin <= 0 || c.FenceMargin >= c.LeaseTTL/2 {
		errs = append(errs, fmt.Errorf("fenceMargin %s: must be positive and less than half of leaseTTL %s", c.FenceMargin, c.LeaseTTL))
	}
	if c.RenewInterval <= 0 || c.RenewInterval > (c.LeaseTTL-c.FenceMargin)/2 {
		errs = append(errs, fmt.Errorf("renewInterval %s: must be positive and at most half of leaseTTL - fenceMargin (%s), so a failed renewal is retried before the fence", c.RenewInterval, (c.LeaseTTL-c.FenceMargin)/2))
	}
	if c.GARPCount < 1 || c.GARPCount > 10 {
		errs = append(errs, fmt.Errorf("garpCount %d: must be 1 to 10", c.GARPCount))
	}
	if c.GARPInterval <= 0 || c.GARPInterval > 5*time.Second {
		errs = append(errs, fmt.Errorf("garpInterval %s: must be positive and at most 5s", c.GARPInterval))
	}
	return errors.Join(errs...)
}

// parseVIPs parses and checks the VIPs: IPv4, a valid interface name, no
// address twice.
func (c *Config) parseVIPs() ([]VIP, error) {
	if len(c.VIPs) == 0 {
		return nil, errors.New("vips: at least one VIP is required")
	}
	var errs []error
	out := make([]VIP, 0, len(c.VIPs))
	seen := map[netip.Addr]bool{}
	for i, vc := range c.VIPs {
		p, err := parseVIPAddress(vc.Address)
		if err != nil {
			errs = append(errs, fmt.Errorf("vips[%d]: %w", i, err))
			continue
		}
		if err := validInterfaceName(vc.Interface); err != nil {
			errs = append(errs, fmt.Errorf("vips[%d] %s: interface: %w", i, vc.Address, err))
			continue
		}
		if seen[p.Addr()] {
			errs = append(errs, fmt.Errorf("vips[%d]: address %s listed twice", i, p.Addr()))
			continue
		}
		seen[p.Addr()] = true
		out = append(out, VIP{Prefix: p, Interface: vc.Interface})
	}
	return out, errors.Join(errs...)
}

// parseVIPAddress parses "a.b.c.d/n" (an IPv4 address, not a network).
func parseVIPAddress(s string) (netip.Prefix, error) {
	p, err := netip.ParsePrefix(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("address %q: want an IPv4 address with its prefix length, like 10.10.0.100/24: %w", s, err)
	}
	if !p.Addr().Is4() {
		return netip.Prefix{}, fmt.Errorf("address %q: only IPv4 VIPs are supported (announced with gratuitous ARP)", s)
	}
	if p.Bits() < 8 {
		return netip.Prefix{}, fmt.Errorf("address %q: prefix length must be 8 to 32", s)
	}
	if p.Bits() < 31 && (p.Addr() == p.Masked().Addr() || p.Addr() == broadcastOf(p)) {
		return netip.Prefix{}, fmt.Errorf("address %q: is the network or broadcast address of its prefix", s)
	}
	if a := p.Addr(); a.IsLoopback() || a.IsMulticast() || a.IsUnspecified() || a.IsLinkLocalUnicast() {
		return netip.Prefix{}, fmt.Errorf("address %q: must be a unicast address outside loopback and link-local", s)
	}
	return p, nil
}

// broadcastOf returns the last address of p.
func broadcastOf(p netip.Prefix) netip.Addr {
	b := p.Masked().Addr().As4()
	for i := range b {
		switch host := p.Bits() - 8*i; {
		case host >= 8:
		case host <= 0:
			b[i] = 0xff
		default:
			b[i] |= 0xff >> host
		}
	}
	return netip.AddrFrom4(b)
}

// validInterfaceName accepts what Linux accepts as a link name.
func validInterfaceName(s string) error {
	if s == "" || len(s) > 15 || s == "." || s == ".." {
		return fmt.Errorf("%q: must be 1 to 15 characters", s)
	}
	if strings.ContainsAny(s, "/: \t\n") {
		return fmt.Errorf("%q: must not contain '/', ':' or white space", s)
	}
	return nil
}

// validNodeName accepts a Kubernetes node name: a DNS-1123 subdomain.
func validNodeName(s string) error {
	if s == "" || len(s) > 253 {
		return fmt.Errorf("%q: must be 1 to 253 characters", s)
	}
	for _, label := range strings.Split(s, ".") {
		if label == "" || len(label) > 63 {
			return fmt.Errorf("%q: must be a DNS-1123 subdomain (labels of 1 to 63 characters)", s)
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			alnum := c >= 'a' && c <= 'z' || c >= '0' && c <= '9'
			if !alnum && (c != '-' || i == 0 || i == len(label)-1) {
				return fmt.Errorf("%q: must be a DNS-1123 subdomain (lower case letters, digits, '-' and '.')", s)
			}
		}
	}
	return nil
}

// Defaults of FloatConfig.
const (
	DefaultStatusTimeout  = time.Second
	DefaultAcquireTimeout = 10 * time.Second
	DefaultMaxWait        = 30 * time.Second
)

// FloatConfig configures the vip.float remediator.
type FloatConfig struct {
	// VIPs lists each VIP healer may float and the nodes that may carry it.
	VIPs []FloatVIP `json:"vips"`
	// StatusTimeout bounds each vip.status call (default 1s); a node that
	// does not answer in time is not healthy.
	StatusTimeout time.Duration `json:"statusTimeout"`
	// AcquireTimeout bounds each vip.acquire call (default 10s).
	AcquireTimeout time.Duration `json:"acquireTimeout"`
	// MaxWait is the longest Check waits for a still-valid lease of an
	// unresponsive holder to expire (default 30s). A lease valid for
	// longer than that is refused as unsafe.
	MaxWait time.Duration `json:"maxWait"`
}

// FloatVIP is one VIP and its candidate nodes.
type FloatVIP struct {
	// Address is the VIP's IPv4 address, for example "10.10.0.100"; a
	// prefix length ("10.10.0.100/24") is accepted and ignored.
	Address string `json:"address"`
	// Candidates are the nodes that may carry the VIP, in order of
	// preference.
	Candidates []string `json:"candidates"`
}

// ApplyDefaults fills zero fields with defaults.
func (c *FloatConfig) ApplyDefaults() {
	if c.StatusTimeout == 0 {
		c.StatusTimeout = DefaultStatusTimeout
	}
	if c.AcquireTimeout == 0 {
		c.AcquireTimeout = DefaultAcquireTimeout
	}
	if c.MaxWait == 0 {
		c.MaxWait = DefaultMaxWait
	}
}

// Validate reports a configuration vip.float could not act safely with.
func (c *FloatConfig) Validate() error {
	_, err := c.parse()
	var errs []error
	if err != nil {
		errs = append(errs, err)
	}
	if c.StatusTimeout <= 0 {
		errs = append(errs, fmt.Errorf("statusTimeout %s: must be positive", c.StatusTimeout))
	}
	if c.AcquireTimeout <= 0 {
		errs = append(errs, fmt.Errorf("acquireTimeout %s: must be positive", c.AcquireTimeout))
	}
	if c.MaxWait <= 0 {
		errs = append(errs, fmt.Errorf("maxWait %s: must be positive", c.MaxWait))
	}
	return errors.Join(errs...)
}

// parse returns the candidates of each VIP by address.
func (c *FloatConfig) parse() (map[netip.Addr][]string, error) {
	// No VIPs is allowed: vip.float then refuses every target as unsafe.
	var errs []error
	out := map[netip.Addr][]string{}
	for i, v := range c.VIPs {
		addr, err := parseFloatAddress(v.Address)
		if err != nil {
			errs = append(errs, fmt.Errorf("vips[%d]: %w", i, err))
			continue
		}
		if _, dup := out[addr]; dup {
			errs = append(errs, fmt.Errorf("vips[%d]: address %s listed twice", i, addr))
			continue
		}
		if len(v.Candidates) < 2 {
			errs = append(errs, fmt.Errorf("vips[%d] %s: at least two candidates are needed to float a VIP", i, addr))
			continue
		}
		seen := map[string]bool{}
		ok := true
		for _, n := range v.Candidates {
			if err := validNodeName(n); err != nil {
				errs = append(errs, fmt.Errorf("vips[%d] %s: candidate: %w", i, addr, err))
				ok = false
			} else if seen[n] {
				errs = append(errs, fmt.Errorf("vips[%d] %s: candidate %s listed twice", i, addr, n))
				ok = false
			}
			seen[n] = true
		}
		if ok {
			out[addr] = append([]string(nil), v.Candidates...)
		}
	}
	return out, errors.Join(errs...)
}

// parseFloatAddress parses "a.b.c.d" or "a.b.c.d/n".
func parseFloatAddress(s string) (netip.Addr, error) {
	if strings.Contains(s, "/") {
		p, err := parseVIPAddress(s)
		if err != nil {
			return netip.Addr{}, err
		}
		return p.Addr(), nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil || !a.Is4() {
		return netip.Addr{}, fmt.Errorf("address %q: want an IPv4 address like 10.10.0.100", s)
	}
	return a, nil
}
