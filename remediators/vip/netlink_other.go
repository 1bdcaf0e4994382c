//go:build !linux

package vip

import (
	"context"
	"errors"

	"github.com/vishvananda/netns"
)

// NetlinkAddresses manages addresses with netlink; it exists on Linux only.
type NetlinkAddresses struct{}

var _ Addresses = (*NetlinkAddresses)(nil)

var errNotLinux = errors.New("vip addresses: netlink is only available on Linux")

// NewNetlinkAddresses fails: VIPs are carried by Linux masters only.
func NewNetlinkAddresses(netns.NsHandle) (*NetlinkAddresses, error) { return nil, errNotLinux }

// Close does nothing.
func (*NetlinkAddresses) Close() error { return nil }

// Present fails.
func (*NetlinkAddresses) Present(context.Context, VIP) (bool, error) { return false, errNotLinux }

// Add fails.
func (*NetlinkAddresses) Add(context.Context, VIP) error { return errNotLinux }

// Remove fails.
func (*NetlinkAddresses) Remove(context.Context, VIP) error { return errNotLinux }

// Announce fails.
func (*NetlinkAddresses) Announce(context.Context, VIP) error { return errNotLinux }
