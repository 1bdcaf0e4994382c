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

// BudgetConfig sets how many nodes may be out of service at once:
// max(MinNodes, Percent% of all nodes), rounded down.
type BudgetConfig struct {
	MinNodes int `json:"minNodes"`
	Percent  int `json:"percent"`
	// Linger keeps counting a node healer just took out of service until
	// the watch shows it, or this long at most.
	Linger time.Duration `json:"linger"`
}

// ApplyDefaults fills zero fields: 1 node or 10%, whichever is more.
func (c *BudgetConfig) ApplyDefaults() {
	if c.MinNodes == 0 {
		c.MinNodes = 1
	}
	if c.Percent == 0 {
		c.Percent = 10
	}
	if c.Linger == 0 {
		c.Linger = 30 * time.Second
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
	return errors.Join(errs...)
}

// BudgetState is a snapshot of the budget, also given to policies.
type BudgetState struct {
	TotalNodes   int `json:"total_nodes"`
	OutOfService int `json:"out_of_service"`
	InFlight     int `json:"in_flight"`
	Allowed      int `json:"allowed"`
	Available    int `json:"available"`
}

// ErrBudgetUnknown means the budget cannot be computed; disruptive actions
// are then refused.
var ErrBudgetUnknown = errors.New("blast-radius budget unknown")

// ErrBudgetExhausted means one more node out of service would exceed the budget.
var ErrBudgetExhausted = errors.New("blast-radius budget exhausted")

// Budget counts nodes out of service (cordoned by anyone, or not Ready)
// from a watch of all Nodes, plus the nodes healer is taking out right now,
// and refuses reservations past the limit. Counts are kept incrementally,
// so a check costs the same for ten nodes as for a hundred thousand.
type Budget struct {
	cfg      BudgetConfig
	log      *slog.Logger
	informer cache.SharedIndexInformer
	synced   func() bool
	now      func() time.Time

	mu       sync.Mutex
	out      map[string]bool  // node -> out of service, per the watch
	outCount int              // number of true values in out
	reserved map[string]*hold // node -> healer's hold on it
}

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
	}
	b.synced = b.informer.HasSynced
	// Keep only what the budget reads: with 100,000 nodes the full objects
	// (images, addresses, managed fields) would cost gigabytes.
	_ = b.informer.SetTransform(slimNode)
	_, _ = b.informer.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { b.observe(obj) },
		UpdateFunc: func(_, obj any) { b.observe(obj) },
		DeleteFunc: func(obj any) { b.forget(obj) },
	})
	return b
}

// Start runs the watch until ctx ends and waits up to syncTimeout for the
// first full list.
func (b *Budget) Start(ctx context.Context, syncTimeout time.Duration) error {
	go b.informer.RunWithContext(ctx)
	syncCtx, cancel := context.WithTimeout(ctx, syncTimeout)
	defer cancel()
	if !cache.WaitForCacheSync(syncCtx.Done(), b.informer.HasSynced) {
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
	slim.Labels = n.Labels
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
	prev, known := b.out[n.Name]
	if !known || prev != o {
		if prev {
			b.outCount--
		}
		if o {
			b.outCount++
		}
	}
	b.out[n.Name] = o
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
	if b.out[n.Name] {
		b.outCount--
	}
	delete(b.out, n.Name)
}

// State returns the current budget. It fails when the watch has not synced.
func (b *Budget) State() (BudgetState, error) {
	if !b.synced() {
		return BudgetState{}, fmt.Errorf("%w: node watch not synced", ErrBudgetUnknown)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.stateLocked(), nil
}

func (b *Budget) stateLocked() BudgetState {
	now := b.now()
	extra := 0
	for name, h := range b.reserved {
		if h.running == 0 && now.After(h.until) {
			delete(b.reserved, name)
			continue
		}
		if !b.out[name] {
			extra++
		}
	}
	total := len(b.out)
	allowed := max(b.cfg.MinNodes, total*b.cfg.Percent/100)
	s := BudgetState{
		TotalNodes:   total,
		OutOfService: b.outCount + extra,
		InFlight:     len(b.reserved),
		Allowed:      allowed,
	}
	s.Available = max(0, allowed-s.OutOfService)
	return s
}

// Reservation holds a node's place in the budget while an action runs.
type Reservation struct {
	b    *Budget
	node string
	once sync.Once
}

// Reserve takes node out of the budget for an action about to run. A node
// that is already out of service costs nothing more. It fails closed when
// the budget is unknown or exhausted.
func (b *Budget) Reserve(node string) (*Reservation, BudgetState, error) {
	if !b.synced() {
		return nil, BudgetState{}, fmt.Errorf("%w: node watch not synced", ErrBudgetUnknown)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	s := b.stateLocked()
	h, alreadyHeld := b.reserved[node]
	if !b.out[node] && !alreadyHeld && s.OutOfService+1 > s.Allowed {
		return nil, s, fmt.Errorf("%w: %d of %d nodes out of service, at most %d allowed", ErrBudgetExhausted, s.OutOfService, s.TotalNodes, s.Allowed)
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
// otherwise the node's place is freed at once.
func (r *Reservation) Release(tookOut bool) {
	r.once.Do(func() {
		b := r.b
		b.mu.Lock()
		defer b.mu.Unlock()
		h := b.reserved[r.node]
		if h == nil {
			return
		}
		h.running--
		if tookOut && !b.out[r.node] {
			h.until = b.now().Add(b.cfg.Linger)
		}
		if h.running == 0 && (b.out[r.node] || !b.now().Before(h.until)) {
			delete(b.reserved, r.node)
		}
	})
}
