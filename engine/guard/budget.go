package guard

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
)

// BudgetConfig sets how many nodes may be out of service at once: in the
// cluster max(MinNodes, Percent% of all nodes), and in each failure domain
// (topology.kubernetes.io/zone) max(ZoneMinNodes, ZonePercent% of its
// nodes), rounded down. Nodes without a zone label form one domain.
type BudgetConfig struct {
	MinNodes     int `json:"minNodes"`
	Percent      int `json:"percent"`
	ZoneMinNodes int `json:"zoneMinNodes"`
	ZonePercent  int `json:"zonePercent"`
	// Linger keeps counting a node healer just took out of service until
	// the watch shows it, or this long at most.
	Linger time.Duration `json:"linger"`
	// HoldTTL is how long a replica's hold on a node stays in the shared
	// ledger without renewal (renewals come every quarter of it): a
	// replica that dies gives its places back after this long. It must
	// outlast the engine's ackWait, after which a silent replica's target
	// leases, and so its actions, are fenced off.
	HoldTTL time.Duration `json:"holdTTL"`
}

// ApplyDefaults fills zero fields: 1 node or 10%, whichever is more.
func (c *BudgetConfig) ApplyDefaults() {
	if c.MinNodes == 0 {
		c.MinNodes = 1
	}
	if c.Percent == 0 {
		c.Percent = 10
	}
	if c.ZoneMinNodes == 0 {
		c.ZoneMinNodes = c.MinNodes
	}
	if c.ZonePercent == 0 {
		c.ZonePercent = c.Percent
	}
	if c.Linger == 0 {
		c.Linger = 30 * time.Second
	}
	if c.HoldTTL == 0 {
		c.HoldTTL = 2 * time.Minute
	}
}

// Validate reports an unusable budget.
func (c *BudgetConfig) Validate() error {
	var errs []error
	if c.MinNodes < 0 {
		errs = append(errs, fmt.Errorf("budget: minNodes %d: must not be negative", c.MinNodes))
	}
	if c.Percent < 0 || c.Percent > 100 {
		errs = append(errs, fmt.Errorf("budget: percent %d: must be 0 to 100", c.Percent))
	}
	if c.ZoneMinNodes < 0 {
		errs = append(errs, fmt.Errorf("budget: zoneMinNodes %d: must not be negative", c.ZoneMinNodes))
	}
	if c.ZonePercent < 0 || c.ZonePercent > 100 {
		errs = append(errs, fmt.Errorf("budget: zonePercent %d: must be 0 to 100", c.ZonePercent))
	}
	if c.HoldTTL < 4*time.Second {
		errs = append(errs, fmt.Errorf("budget: holdTTL %s: must be at least 4s", c.HoldTTL))
	}
	return errors.Join(errs...)
}

// BudgetState is a snapshot of the budget, also given to policies.
type BudgetState struct {
	TotalNodes   int `json:"total_nodes"`
	OutOfService int `json:"out_of_service"`
	InFlight     int `json:"in_flight"`
	Allowed      int `json:"allowed"`
	Available    int `json:"available"`
	// The failure domain of the node asked about, when one was.
	Zone             string `json:"zone,omitempty"`
	ZoneNodes        int    `json:"zone_nodes,omitempty"`
	ZoneOutOfService int    `json:"zone_out_of_service,omitempty"`
	ZoneAllowed      int    `json:"zone_allowed,omitempty"`
}

// ZoneLabel names a node's failure domain.
const ZoneLabel = "topology.kubernetes.io/zone"

// ErrBudgetUnknown means the budget cannot be computed; disruptive actions
// are then refused.
var ErrBudgetUnknown = errors.New("blast-radius budget unknown")

// ErrBudgetExhausted means one more node out of service would exceed the budget.
var ErrBudgetExhausted = errors.New("blast-radius budget exhausted")

// Budget counts nodes out of service (cordoned by anyone, or not Ready)
// from a watch of all Nodes, plus the nodes healer is taking out right now,
// and refuses reservations past the limit. Counts are kept incrementally,
// so a check costs the same for ten nodes as for a hundred thousand. With
// several replicas, Share makes the nodes being taken out those of every
// replica, from a ledger they update by compare-and-set.
type Budget struct {
	cfg      BudgetConfig
	log      *slog.Logger
	informer cache.SharedIndexInformer
	synced   func() bool
	now      func() time.Time

	mu       sync.Mutex
	out      map[string]bool       // node -> out of service, per the watch
	outCount int                   // number of true values in out
	zoneOf   map[string]string     // node -> failure domain
	zones    map[string]*zoneCount // failure domain -> counts
	reserved map[string]*hold      // node -> this replica's hold on it
	others   map[string]time.Time  // node -> until when other replicas hold it, per the ledger

	// shared is the ledger of every replica's holds, nil for one replica
	// alone; resMu orders this replica's reads and writes of it.
	shared *ledger
	resMu  sync.Mutex
}

// zoneCount counts one failure domain's nodes, per the watch.
type zoneCount struct{ total, out int }

// hold is healer's claim on a node's place in the budget: running actions
// on it, and after the last one took it out, until when to keep counting
// it while the watch catches up.
type hold struct {
	running int
	until   time.Time
}

// NewBudget returns a budget watching the cluster's Nodes through client.
// Call Start before use.
func NewBudget(cfg BudgetConfig, client kubernetes.Interface, log *slog.Logger) *Budget {
	cfg.ApplyDefaults()
	factory := informers.NewSharedInformerFactory(client, 0)
	b := &Budget{
		cfg:      cfg,
		log:      log,
		informer: factory.Core().V1().Nodes().Informer(),
		now:      time.Now,
		out:      map[string]bool{},
		reserved: map[string]*hold{},
		others:   map[string]time.Time{},
		zoneOf:   map[string]string{},
		zones:    map[string]*zoneCount{},
	}
	// Keep only what the budget reads: with 100,000 nodes the full objects
	// (images, addresses, managed fields) would cost gigabytes.
	_ = b.informer.SetTransform(slimNode)
	reg, err := b.informer.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { b.observe(obj) },
		UpdateFunc: func(_, obj any) { b.observe(obj) },
		DeleteFunc: func(obj any) { b.forget(obj) },
	})
	// Synced is when the handler has counted the first list, not when the
	// informer's cache holds it: at 100,000 nodes the counts lag the
	// cache by seconds, and until they catch up nodes out of service are
	// missing from them.
	b.synced = func() bool { return false }
	if err == nil {
		b.synced = reg.HasSynced
	}
	return b
}

// Start runs the watch until ctx ends and waits up to syncTimeout for the
// first full list.
func (b *Budget) Start(ctx context.Context, syncTimeout time.Duration) error {
	go b.informer.RunWithContext(ctx)
	syncCtx, cancel := context.WithTimeout(ctx, syncTimeout)
	defer cancel()
	if !cache.WaitForCacheSync(syncCtx.Done(), b.synced) {
		return fmt.Errorf("%w: node watch did not sync within %s", ErrBudgetUnknown, syncTimeout)
	}
	return nil
}

func slimNode(obj any) (any, error) {
	n, ok := obj.(*corev1.Node)
	if !ok {
		return obj, nil
	}
	slim := &corev1.Node{}
	slim.Name = n.Name
	slim.ResourceVersion = n.ResourceVersion
	if z, ok := n.Labels[ZoneLabel]; ok {
		slim.Labels = map[string]string{ZoneLabel: z}
	}
	slim.Spec.Unschedulable = n.Spec.Unschedulable
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady {
			slim.Status.Conditions = []corev1.NodeCondition{{Type: c.Type, Status: c.Status}}
		}
	}
	return slim, nil
}

// OutOfService reports whether a node counts against the budget: cordoned
// by anyone, or not Ready.
func OutOfService(n *corev1.Node) bool {
	if n.Spec.Unschedulable {
		return true
	}
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady {
			return c.Status != corev1.ConditionTrue
		}
	}
	return true // a node that reports no Ready condition is not serving
}

func (b *Budget) observe(obj any) {
	n, ok := obj.(*corev1.Node)
	if !ok {
		return
	}
	o := OutOfService(n)
	b.mu.Lock()
	defer b.mu.Unlock()
	b.untrack(n.Name)
	b.track(n.Name, n.Labels[ZoneLabel], o)
	if n.Spec.Unschedulable {
		if h, ok := b.reserved[n.Name]; ok && h.running == 0 {
			delete(b.reserved, n.Name) // the watch has caught up
		}
	}
}

func (b *Budget) forget(obj any) {
	if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = d.Obj
	}
	n, ok := obj.(*corev1.Node)
	if !ok {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.untrack(n.Name)
}

// track and untrack keep the counts of the cluster and of each zone.
func (b *Budget) track(name, zone string, out bool) {
	b.out[name] = out
	b.zoneOf[name] = zone
	z := b.zones[zone]
	if z == nil {
		z = &zoneCount{}
		b.zones[zone] = z
	}
	z.total++
	if out {
		b.outCount++
		z.out++
	}
}

func (b *Budget) untrack(name string) {
	out, known := b.out[name]
	if !known {
		return
	}
	z := b.zones[b.zoneOf[name]]
	z.total--
	if out {
		b.outCount--
		z.out--
	}
	if z.total == 0 {
		delete(b.zones, b.zoneOf[name])
	}
	delete(b.out, name)
	delete(b.zoneOf, name)
}

// State returns the current budget of the cluster. It fails when the watch
// has not synced.
func (b *Budget) State() (BudgetState, error) { return b.StateFor("") }

// StateFor returns the current budget of the cluster and of node's failure
// domain. It fails when the watch has not synced.
func (b *Budget) StateFor(node string) (BudgetState, error) {
	if !b.synced() {
		return BudgetState{}, fmt.Errorf("%w: node watch not synced", ErrBudgetUnknown)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.stateLocked(node), nil
}

func (b *Budget) stateLocked(node string) BudgetState {
	now := b.now()
	extra, zoneExtra, inFlight := 0, 0, 0
	zone, inZone := b.zoneOf[node]
	count := func(name string) {
		inFlight++
		if !b.out[name] {
			extra++
			if inZone && b.zoneOf[name] == zone {
				zoneExtra++
			}
		}
	}
	for name, h := range b.reserved {
		if h.running == 0 && now.After(h.until) {
			delete(b.reserved, name)
			continue
		}
		count(name)
	}
	for name, until := range b.others {
		if !now.Before(until) {
			delete(b.others, name)
			continue
		}
		if _, mine := b.reserved[name]; !mine {
			count(name)
		}
	}
	total := len(b.out)
	allowed := max(b.cfg.MinNodes, total*b.cfg.Percent/100)
	s := BudgetState{
		TotalNodes:   total,
		OutOfService: b.outCount + extra,
		InFlight:     inFlight,
		Allowed:      allowed,
	}
	s.Available = max(0, allowed-s.OutOfService)
	if z := b.zones[zone]; inZone && z != nil {
		s.Zone = zone
		s.ZoneNodes = z.total
		s.ZoneOutOfService = z.out + zoneExtra
		s.ZoneAllowed = max(b.cfg.ZoneMinNodes, z.total*b.cfg.ZonePercent/100)
	}
	return s
}

// Reservation holds a node's place in the budget while an action runs.
type Reservation struct {
	b    *Budget
	node string
	once sync.Once
}

// Reserve takes node out of the budget for an action about to run. A node
// that is already out of service, or held by another action, costs nothing
// more. It fails closed when the budget is unknown or exhausted, and, with
// a shared ledger, when the ledger cannot be read or written.
func (b *Budget) Reserve(ctx context.Context, node string) (*Reservation, BudgetState, error) {
	if !b.synced() {
		return nil, BudgetState{}, fmt.Errorf("%w: node watch not synced", ErrBudgetUnknown)
	}
	if b.shared == nil {
		b.mu.Lock()
		defer b.mu.Unlock()
		return b.reserveLocked(node)
	}
	b.resMu.Lock()
	defer b.resMu.Unlock()
	var st BudgetState
	for range maxLedgerConflicts {
		doc, rev, err := b.shared.load(ctx)
		if err != nil {
			st, _ = b.StateFor(node)
			return nil, st, fmt.Errorf("%w: %w", ErrBudgetUnknown, err)
		}
		b.mu.Lock()
		b.adoptLocked(doc)
		res, s, err := b.reserveLocked(node)
		if err != nil {
			b.mu.Unlock()
			return nil, s, err
		}
		next, _ := b.ledgerLocked(doc)
		b.mu.Unlock()
		st = s
		err = b.shared.store(ctx, next, rev)
		if err == nil {
			return res, st, nil
		}
		b.mu.Lock()
		b.releaseLocked(node, false)
		b.mu.Unlock()
		if !errors.Is(err, errLedgerConflict) {
			return nil, st, fmt.Errorf("%w: %w", ErrBudgetUnknown, err)
		}
	}
	return nil, st, fmt.Errorf("%w: the shared ledger changed under each of %d attempts", ErrBudgetUnknown, maxLedgerConflicts)
}

func (b *Budget) reserveLocked(node string) (*Reservation, BudgetState, error) {
	s := b.stateLocked(node)
	if _, known := b.out[node]; !known {
		return nil, s, fmt.Errorf("%w: node %s is not in the watch of the cluster's nodes", ErrBudgetUnknown, node)
	}
	h, alreadyHeld := b.reserved[node]
	_, heldByOther := b.others[node]
	if !b.out[node] && !alreadyHeld && !heldByOther {
		if s.OutOfService+1 > s.Allowed {
			return nil, s, fmt.Errorf("%w: %d of %d nodes out of service, at most %d allowed", ErrBudgetExhausted, s.OutOfService, s.TotalNodes, s.Allowed)
		}
		if s.ZoneOutOfService+1 > s.ZoneAllowed {
			return nil, s, fmt.Errorf("%w: %d of %d nodes out of service in zone %q, at most %d allowed", ErrBudgetExhausted, s.ZoneOutOfService, s.ZoneNodes, s.Zone, s.ZoneAllowed)
		}
	}
	if !alreadyHeld {
		h = &hold{}
		b.reserved[node] = h
	}
	h.running++
	return &Reservation{b: b, node: node}, s, nil
}

// Release ends the reservation. When the action took the node out of
// service it keeps counting until the watch shows it (at most Linger);
// otherwise the node's place is freed at once. With a shared ledger the
// change is written there too (bounded by a few seconds, even when ctx has
// ended); if that fails the hold lapses after HoldTTL.
func (r *Reservation) Release(ctx context.Context, tookOut bool) {
	r.once.Do(func() {
		b := r.b
		b.mu.Lock()
		b.releaseLocked(r.node, tookOut)
		b.mu.Unlock()
		if b.shared == nil {
			return
		}
		wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		if err := b.syncLedger(wctx); err != nil {
			b.log.Warn("releasing a hold on the blast-radius budget failed; it lapses by itself",
				"node", r.node, "hold_ttl", b.cfg.HoldTTL, "err", err)
		}
	})
}

func (b *Budget) releaseLocked(node string, tookOut bool) {
	h := b.reserved[node]
	if h == nil {
		return
	}
	h.running--
	if tookOut && !b.out[node] {
		h.until = b.now().Add(b.cfg.Linger)
	}
	if h.running == 0 && (b.out[node] || !b.now().Before(h.until)) {
		delete(b.reserved, node)
	}
}
