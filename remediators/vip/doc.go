// Package vip floats a keepalived-style virtual IP (the address that fronts
// the API servers on the masters) from a failed holder to a healthy
// candidate, fencing first.
//
// Who may carry a VIP is decided by a lease in the JetStream key-value
// bucket healer_vip_leases (see Lease): one key per VIP, written only with
// compare-and-set on the key's revision, so of two nodes racing for an
// expired lease exactly one wins. The lease's expiry is the holder's own
// clock plus the lease TTL.
//
// On each master, `healer agent` runs a Keeper. For every VIP the node
// holds it renews the lease every TTL/3; when it has not renewed
// successfully by (expiry − FenceMargin) it removes the address from the
// interface itself, before the lease can expire and anyone else may take
// it. That self-fencing is what makes a takeover after expiry safe. The
// Keeper also removes any configured VIP address it finds on the node
// without holding its lease. It answers three node verbs: vip.acquire
// (take the lease, only then add the address and announce it with
// gratuitous ARP), vip.release (drop the address, then release the lease)
// and vip.status.
//
// On the serve side, a Watcher reports a lease that expired without being
// released (its holder stopped renewing) as a VIPHolderLost event, and the
// vip.float remediator answers it: it re-reads the lease, waits until a
// still-valid lease has expired (never taking over before), and asks the
// first healthy candidate other than the failed holder to acquire the VIP.
package vip
