package vip

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/selfheal/healer/action"
)

// Keeper holds a master's VIP leases and carries their addresses. For each
// VIP it holds, it renews the lease every RenewInterval, and when it has
// not renewed successfully by the lease's expiry minus FenceMargin (on its
// own monotonic clock) it removes the address itself — fencing — before
// the lease can expire and another node may take it. It removes a
// configured VIP's address that it finds without holding the lease, at
// start and every RenewInterval after. When its Run context ends it
// removes every address it carries and leaves the leases to expire, so
// their loss is reported and the VIPs float elsewhere.
//
// The Keeper is driven by its node verbs (Verbs): vip.acquire, vip.release
// and vip.status.
type Keeper struct {
	cfg    Config
	states map[netip.Addr]*vipState
	order  []*vipState
	leases *leases
	addrs  Addresses
	log    *slog.Logger

	mu      sync.Mutex
	running context.Context // Run's context while Run runs, else nil
	wg      sync.WaitGroup  // hold, renewal and announce goroutines
	started chan struct{}   // closed once Run has started every VIP
}

// vipState is the Keeper's state of one VIP.
type vipState struct {
	vip VIP
	// sem is a one-slot lock that serializes every change of this VIP:
	// acquire, release, renewal results, fencing and reconciling.
	sem chan struct{}
	// hold is the lease this node holds, nil when it holds none. Guarded
	// by sem.
	hold *hold
}

func (st *vipState) lock() { st.sem <- struct{}{} }

func (st *vipState) lockCtx(ctx context.Context) error {
	select {
	case st.sem <- struct{}{}:
		return nil
	case <-ctx.Done():
		return context.Cause(ctx)
	}
}

func (st *vipState) unlock() { <-st.sem }

// hold is one held lease.
type hold struct {
	entry leaseEntry
	// deadline is when the address must be gone unless the lease was
	// renewed: when its TTL started plus TTL minus FenceMargin, with the
	// monotonic clock reading of the start.
	deadline time.Time
	ctx      context.Context // ends when the hold ends
	stop     context.CancelFunc
}

// NewKeeper returns the Keeper of one master. It keeps the leases in the
// bucket Bucket on js, which serve creates (EnsureBucket); it binds to it
// when it first needs it and again after a failure, so it may be built
// while NATS is unreachable. addrs puts addresses on the node's interfaces
// (usually a NetlinkAddresses). cfg gets its defaults applied and is
// validated.
func NewKeeper(cfg Config, js jetstream.JetStream, addrs Addresses, log *slog.Logger) (*Keeper, error) {
	return newKeeper(cfg, &lazyBucket{js: js}, addrs, log)
}

func newKeeper(cfg Config, kv kvStore, addrs Addresses, log *slog.Logger) (*Keeper, error) {
	cfg.ApplyDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("vip keeper config: %w", err)
	}
	vips, err := cfg.parseVIPs()
	if err != nil {
		return nil, fmt.Errorf("vip keeper config: %w", err)
	}
	k := &Keeper{
		cfg:     cfg,
		states:  map[netip.Addr]*vipState{},
		leases:  &leases{kv: kv, ttl: cfg.LeaseTTL, now: time.Now},
		addrs:   addrs,
		log:     log.With("component", "vip.keeper", "node", cfg.Node),
		started: make(chan struct{}),
	}
	for _, v := range vips {
		st := &vipState{vip: v, sem: make(chan struct{}, 1)}
		k.states[v.Addr()] = st
		k.order = append(k.order, st)
	}
	return k, nil
}

// Run keeps the leases until ctx ends. At start it adopts a still-valid
// lease this node held before (an agent restart), making sure its address
// is on, and removes every configured VIP address it does not hold the
// lease of. When ctx ends it removes the addresses it carries and returns
// nil, once its goroutines have finished.
func (k *Keeper) Run(ctx context.Context) error {
	k.mu.Lock()
	if k.running != nil {
		k.mu.Unlock()
		return fmt.Errorf("vip keeper on node %s: already running", k.cfg.Node)
	}
	k.running = ctx
	k.mu.Unlock()

	for _, st := range k.order {
		k.start(ctx, st)
	}
	close(k.started)
	t := time.NewTicker(k.cfg.RenewInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			k.mu.Lock()
			k.running = nil
			k.mu.Unlock()
			for _, st := range k.order {
				k.drop(context.WithoutCancel(ctx), st, "keeper stopping")
			}
			k.wg.Wait()
			return nil
		case <-t.C:
			for _, st := range k.order {
				k.reconcile(ctx, st)
			}
		}
	}
}

// Started is closed once Run has adopted or cleaned up every VIP and takes
// requests: an agent answers vip verbs only after that.
func (k *Keeper) Started() <-chan struct{} { return k.started }

// runContext returns Run's context, nil when Run is not running.
func (k *Keeper) runContext() context.Context {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.running
}

// start adopts this node's valid lease of the VIP, or removes its address.
func (k *Keeper) start(ctx context.Context, st *vipState) {
	st.lock()
	defer st.unlock()
	addr := st.vip.Addr()
	log := k.log.With("vip", addr.String(), "interface", st.vip.Interface)
	// Bounded: a bucket that does not answer must not keep a stray
	// address on the node.
	kctx, cancel := context.WithTimeout(ctx, k.cfg.LeaseTTL)
	defer cancel()
	cur, err := k.leases.get(kctx, addr)
	switch {
	case err == nil && cur.Holder == k.cfg.Node && cur.Valid(k.leases.now()):
		e, started, rerr := k.leases.renew(kctx, addr, cur)
		if rerr == nil {
			h := k.startHold(ctx, st, e, started)
			log.InfoContext(ctx, "adopted the lease this node held before the keeper started", "term", e.Term)
			k.ensureAddress(ctx, st, h, log)
			return
		}
		log.WarnContext(ctx, "could not adopt this node's lease; removing the address", "term", cur.Term, "err", rerr)
	case err != nil && !errors.Is(err, errNoLease):
		log.WarnContext(ctx, "cannot read the lease at start; removing the address (fail closed)", "err", err)
	}
	present, perr := k.addrs.Present(ctx, st.vip)
	if perr != nil {
		log.ErrorContext(ctx, "cannot tell whether the vip address is on the node; removing it", "err", perr)
	}
	if present || perr != nil {
		if err := k.removeAddress(ctx, st); err != nil {
			log.ErrorContext(ctx, "vip address present without a held lease could not be removed; retrying every renew interval", "err", err)
			return
		}
		if present {
			log.WarnContext(ctx, "vip address was present without a held lease; removed")
		}
	}
}

// startHold records a held lease and starts renewing it. The caller holds
// st's lock.
func (k *Keeper) startHold(runCtx context.Context, st *vipState, e leaseEntry, started time.Time) *hold {
	hctx, stop := context.WithCancel(runCtx)
	h := &hold{entry: e, deadline: k.fenceDeadline(started), ctx: hctx, stop: stop}
	st.hold = h
	k.wg.Go(func() { k.keep(hctx, st, h) })
	return h
}

// fenceDeadline is when a lease whose TTL started at started must be
// renewed by, or its address removed.
func (k *Keeper) fenceDeadline(started time.Time) time.Time {
	return started.Add(k.cfg.LeaseTTL - k.cfg.FenceMargin)
}

// renewal is the outcome of one renewal.
type renewal struct {
	entry   leaseEntry
	started time.Time
	err     error
}

// keep renews h until the hold ends (ctx, the hold's context, ends), and
// fences when the lease is lost or was not renewed in time. The fence timer
// runs apart from the renewals, so a renewal stuck in the network cannot
// delay the fence.
func (k *Keeper) keep(ctx context.Context, st *vipState, h *hold) {
	addr := st.vip.Addr()
	log := k.log.With("vip", addr.String(), "interface", st.vip.Interface)
	st.lock()
	deadline := h.deadline
	st.unlock()
	fence := time.NewTimer(time.Until(deadline))
	defer fence.Stop()
	next := time.NewTimer(k.cfg.RenewInterval)
	defer next.Stop()
	results := make(chan renewal, 1)
	for {
		select {
		case <-ctx.Done():
			return
		case <-fence.C:
			k.fence(ctx, st, h, log, "the lease was not renewed before its fence deadline")
			return
		case <-next.C:
			st.lock()
			entry, dl := h.entry, h.deadline
			st.unlock()
			k.wg.Go(func() {
				rctx, cancel := context.WithDeadline(ctx, dl)
				defer cancel()
				e, started, err := k.leases.renew(rctx, addr, entry)
				results <- renewal{entry: e, started: started, err: err}
			})
		case r := <-results:
			if errors.Is(r.err, errLeaseLost) {
				k.fence(ctx, st, h, log, r.err.Error())
				return
			}
			if r.err != nil {
				if ctx.Err() == nil {
					log.WarnContext(ctx, "renew vip lease failed; retrying until the fence deadline", "deadline_in", time.Until(deadline).Round(time.Millisecond).String(), "err", r.err)
				}
				next.Reset(min(k.cfg.RenewInterval, 100*time.Millisecond))
				continue
			}
			deadline = k.fenceDeadline(r.started)
			st.lock()
			current := st.hold == h
			if current {
				h.entry, h.deadline = r.entry, deadline
			}
			st.unlock()
			if !current {
				return
			}
			// The renewal was a compare-and-set on the revision this node
			// wrote last, so nobody took the lease in between, even if the
			// old deadline has passed meanwhile.
			fence.Reset(time.Until(deadline))
			next.Reset(k.cfg.RenewInterval)
		}
	}
}

// fence ends h and removes the VIP's address, unless h already ended. The
// removal does not stop when ctx ends.
func (k *Keeper) fence(ctx context.Context, st *vipState, h *hold, log *slog.Logger, reason string) {
	st.lock()
	defer st.unlock()
	if st.hold != h {
		return
	}
	st.hold = nil
	h.stop()
	ctx = context.WithoutCancel(ctx)
	if err := k.removeAddress(ctx, st); err != nil {
		log.ErrorContext(ctx, "FENCING FAILED: vip address could not be removed; retrying every renew interval", "reason", reason, "err", err)
		return
	}
	log.WarnContext(ctx, "fenced: removed the vip address", "reason", reason, "term", h.entry.Term)
}

// drop ends the hold of st, if any, and removes its address.
func (k *Keeper) drop(ctx context.Context, st *vipState, reason string) {
	st.lock()
	defer st.unlock()
	h := st.hold
	if h == nil {
		return
	}
	st.hold = nil
	h.stop()
	log := k.log.With("vip", st.vip.Addr().String(), "interface", st.vip.Interface)
	if err := k.removeAddress(ctx, st); err != nil {
		log.ErrorContext(ctx, "vip address could not be removed", "reason", reason, "err", err)
		return
	}
	log.InfoContext(ctx, "removed the vip address; the lease is left to expire", "reason", reason, "term", h.entry.Term)
}

// removeAddress removes the VIP's address, trying a few times. The caller
// holds st's lock.
func (k *Keeper) removeAddress(ctx context.Context, st *vipState) error {
	var err error
	for attempt := 0; attempt < 3; attempt++ {
		if attempt > 0 {
			time.Sleep(20 * time.Millisecond)
		}
		if err = k.addrs.Remove(ctx, st.vip); err == nil {
			return nil
		}
	}
	return err
}

// reconcile removes an address this node carries without a held lease,
// and puts back the address of a held lease that someone removed.
func (k *Keeper) reconcile(ctx context.Context, st *vipState) {
	st.lock()
	defer st.unlock()
	log := k.log.With("vip", st.vip.Addr().String(), "interface", st.vip.Interface)
	if h := st.hold; h != nil {
		if time.Now().Before(h.deadline) {
			k.ensureAddress(ctx, st, h, log)
		}
		return
	}
	present, err := k.addrs.Present(ctx, st.vip)
	if err != nil {
		log.WarnContext(ctx, "cannot list the interface's addresses", "err", err)
		return
	}
	if !present {
		return
	}
	if err := k.removeAddress(ctx, st); err != nil {
		log.ErrorContext(ctx, "vip address present without a held lease could not be removed", "err", err)
		return
	}
	log.WarnContext(ctx, "vip address was present without a held lease; removed")
}

// ensureAddress puts a held VIP's address back when it is missing and
// announces it. The caller holds st's lock.
func (k *Keeper) ensureAddress(ctx context.Context, st *vipState, h *hold, log *slog.Logger) {
	present, err := k.addrs.Present(ctx, st.vip)
	if err != nil {
		log.WarnContext(ctx, "cannot list the interface's addresses", "err", err)
		return
	}
	if present {
		return
	}
	if err := k.addrs.Add(ctx, st.vip); err != nil {
		log.ErrorContext(ctx, "cannot add the address of a held vip", "err", err)
		return
	}
	log.WarnContext(ctx, "address of a held vip was missing; added it back", "term", h.entry.Term)
	k.announce(ctx, st, h, log)
}

// announce sends the first gratuitous ARP now and the others in the
// background, GARPInterval apart, while h lasts.
func (k *Keeper) announce(ctx context.Context, st *vipState, h *hold, log *slog.Logger) {
	if err := k.addrs.Announce(ctx, st.vip); err != nil {
		log.WarnContext(ctx, "gratuitous ARP failed", "err", err)
	}
	if k.cfg.GARPCount < 2 {
		return
	}
	k.wg.Go(func() {
		t := time.NewTicker(k.cfg.GARPInterval)
		defer t.Stop()
		for i := 1; i < k.cfg.GARPCount; i++ {
			select {
			case <-h.ctx.Done():
				return
			case <-t.C:
			}
			if err := k.addrs.Announce(h.ctx, st.vip); err != nil {
				log.WarnContext(h.ctx, "gratuitous ARP failed", "err", err)
			}
		}
	})
}

// held reports whether this node holds the VIP's lease now, with the lease.
// The caller holds st's lock.
func (st *vipState) held(now time.Time) (leaseEntry, bool) {
	if st.hold == nil || !now.Before(st.hold.deadline) {
		return leaseEntry{}, false
	}
	return st.hold.entry, true
}

// acquireVIP takes the VIP's lease and only then adds the address and
// announces it.
func (k *Keeper) acquireVIP(ctx context.Context, st *vipState, req action.NodeRequest, progress action.Progress) (action.Result, error) {
	addr := st.vip.Addr()
	runCtx := k.runContext()
	if runCtx == nil {
		return action.Result{}, fmt.Errorf("%w: acquire vip %s on node %s: the keeper is not running, so it could not renew a lease", action.ErrUnsafe, addr, k.cfg.Node)
	}
	if err := st.lockCtx(ctx); err != nil {
		return action.Result{}, fmt.Errorf("acquire vip %s on node %s: %w", addr, k.cfg.Node, err)
	}
	defer st.unlock()
	if runCtx.Err() != nil {
		return action.Result{}, fmt.Errorf("%w: acquire vip %s on node %s: the keeper is stopping", action.ErrUnsafe, addr, k.cfg.Node)
	}
	log := k.log.With("vip", addr.String(), "interface", st.vip.Interface, "action_id", req.ID, "event_id", req.EventID)
	if e, ok := st.held(time.Now()); ok {
		k.ensureAddress(ctx, st, st.hold, log)
		return action.Result{
			Message: fmt.Sprintf("node %s already holds vip %s (term %d)", k.cfg.Node, addr, e.Term),
			Details: k.details(st, e, true),
		}, nil
	}
	if old := st.hold; old != nil {
		// Past its fence deadline, with the fence about to run: fence now.
		st.hold = nil
		old.stop()
		if err := k.removeAddress(ctx, st); err != nil {
			return action.Result{}, fmt.Errorf("acquire vip %s on node %s: remove the address of the lapsed hold: %w", addr, k.cfg.Node, err)
		}
	}
	e, started, err := k.leases.acquire(ctx, addr, k.cfg.Node, req.ID)
	switch {
	case errors.Is(err, errLeaseHeld):
		return action.Result{}, fmt.Errorf("%w: %w", action.ErrUnsafe, err)
	case errors.Is(err, jetstream.ErrKeyExists), errors.Is(err, jetstream.ErrKeyRevisionMismatch):
		return action.Result{}, fmt.Errorf("%w: %w (another node took the lease first)", action.ErrConflict, err)
	case err != nil:
		return action.Result{}, err
	}
	// The hold outlives this request: it lasts as long as Run.
	h := k.startHold(runCtx, st, e, started) //nolint:contextcheck // see above
	log.InfoContext(ctx, "acquired vip lease", "term", e.Term)
	if progress != nil {
		progress(ctx, "lease acquired", map[string]any{"vip": addr.String(), "node": k.cfg.Node, "term": e.Term})
	}
	if err := k.addrs.Add(ctx, st.vip); err != nil {
		st.hold = nil
		h.stop()
		cleanup, cancel := context.WithTimeout(context.WithoutCancel(ctx), k.cfg.LeaseTTL)
		defer cancel()
		if rerr := k.removeAddress(cleanup, st); rerr != nil {
			err = errors.Join(err, rerr)
		}
		if _, rerr := k.leases.release(cleanup, addr, k.cfg.Node); rerr != nil {
			err = errors.Join(err, rerr)
		}
		return action.Result{}, fmt.Errorf("acquire vip %s on node %s: %w", addr, k.cfg.Node, err)
	}
	k.announce(ctx, st, h, log)
	present, err := k.addrs.Present(ctx, st.vip)
	if err != nil {
		return action.Result{}, fmt.Errorf("verify vip %s on node %s: %w", addr, k.cfg.Node, err)
	}
	if !present {
		return action.Result{}, fmt.Errorf("verify vip %s on node %s: address not on interface %s after adding it", addr, k.cfg.Node, st.vip.Interface)
	}
	log.InfoContext(ctx, "vip address added and announced", "term", e.Term)
	return action.Result{
		Changed: true,
		Message: fmt.Sprintf("node %s took vip %s (term %d) and announced it on %s", k.cfg.Node, addr, e.Term, st.vip.Interface),
		Details: k.details(st, e, true),
	}, nil
}

// releaseVIP removes the address and then releases the lease.
func (k *Keeper) releaseVIP(ctx context.Context, st *vipState, req action.NodeRequest) (action.Result, error) {
	addr := st.vip.Addr()
	if err := st.lockCtx(ctx); err != nil {
		return action.Result{}, fmt.Errorf("release vip %s on node %s: %w", addr, k.cfg.Node, err)
	}
	defer st.unlock()
	var e leaseEntry
	if h := st.hold; h != nil {
		e = h.entry
		st.hold = nil
		h.stop()
	}
	present, err := k.addrs.Present(ctx, st.vip)
	if err != nil {
		return action.Result{}, fmt.Errorf("release vip %s on node %s: %w", addr, k.cfg.Node, err)
	}
	if present {
		if err := k.removeAddress(ctx, st); err != nil {
			return action.Result{}, fmt.Errorf("release vip %s on node %s: %w", addr, k.cfg.Node, err)
		}
	}
	released, err := k.leases.release(ctx, addr, k.cfg.Node)
	if err != nil {
		return action.Result{}, fmt.Errorf("release vip %s on node %s: address removed, lease left to expire: %w", addr, k.cfg.Node, err)
	}
	k.log.InfoContext(ctx, "released vip", "vip", addr.String(), "action_id", req.ID, "address_removed", present, "lease_released", released)
	msg := fmt.Sprintf("node %s released vip %s", k.cfg.Node, addr)
	if !present && !released {
		msg = fmt.Sprintf("node %s did not hold vip %s", k.cfg.Node, addr)
	}
	d := k.details(st, e, false)
	d["address_removed"], d["lease_released"] = present, released
	return action.Result{Changed: present || released, Message: msg, Details: d}, nil
}

// statusVIP reports whether this node holds the lease and carries the
// address.
func (k *Keeper) statusVIP(ctx context.Context, st *vipState) (action.Result, error) {
	addr := st.vip.Addr()
	if err := st.lockCtx(ctx); err != nil {
		return action.Result{}, fmt.Errorf("status of vip %s on node %s: %w", addr, k.cfg.Node, err)
	}
	defer st.unlock()
	e, held := st.held(time.Now())
	present, err := k.addrs.Present(ctx, st.vip)
	if err != nil {
		return action.Result{}, fmt.Errorf("status of vip %s on node %s: %w", addr, k.cfg.Node, err)
	}
	d := k.details(st, e, held)
	d[detailAddressPresent] = present
	var msg string
	switch {
	case held && present:
		msg = fmt.Sprintf("node %s holds vip %s (term %d) and carries the address", k.cfg.Node, addr, e.Term)
	case held:
		msg = fmt.Sprintf("node %s holds vip %s (term %d) but the address is not on %s", k.cfg.Node, addr, e.Term, st.vip.Interface)
	case present:
		msg = fmt.Sprintf("node %s carries vip %s without holding its lease", k.cfg.Node, addr)
	default:
		msg = fmt.Sprintf("node %s does not hold vip %s", k.cfg.Node, addr)
	}
	return action.Result{Message: msg, Details: d}, nil
}

// Detail keys of the verbs' results.
const (
	detailLeaseHeld      = "lease_held"
	detailAddressPresent = "address_present"
)

func (k *Keeper) details(st *vipState, e leaseEntry, held bool) map[string]any {
	d := map[string]any{
		"vip":           st.vip.Addr().String(),
		"node":          k.cfg.Node,
		"interface":     st.vip.Interface,
		detailLeaseHeld: held,
	}
	if held {
		d["term"] = e.Term
		d["expires"] = e.Expires.Format(time.RFC3339Nano)
	}
	return d
}
