package nodeproblem

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"

	"github.com/selfheal/healer/bus"
)

// Source is the CloudEvents source of events from this detector.
const Source = "nodeproblem"

// AnnotationProblems is the Node annotation in which healer's node.cordon
// remediator lists the problems that hold a node cordoned. On a node that
// carries it, a condition that is found cleared gets a resolved event even
// when this detector never saw it hold, so a problem that cleared while
// healer was down still gets its undo.
const AnnotationProblems = "healer.io/problems"

// nodeEventSelector restricts the Event informer to Events about Nodes.
const nodeEventSelector = "involvedObject.kind=Node"

// Publisher stores events durably; bus.Publisher is the real one.
type Publisher interface {
	Publish(ctx context.Context, events ...*bus.Event) (bus.PublishResult, error)
}

var _ Publisher = (*bus.Publisher)(nil)

// Detector turns the Node conditions and Node Events that
// node-problem-detector (or the kubelet, for Ready) reports into events.
type Detector struct {
	cfg    Config
	client kubernetes.Interface
	pub    Publisher
	log    *slog.Logger
	now    func() time.Time

	conditions map[corev1.NodeConditionType]*ConditionRule
	events     map[string][]*EventRule // by reason
	strings    interner

	// mu guards problems and stopped. problems holds, per node and
	// condition type, only the conditions that currently hold, so its size
	// follows the number of sick nodes, not the size of the cluster.
	mu       sync.Mutex
	problems map[string]map[corev1.NodeConditionType]*problem
	stopped  bool

	out     outbox
	started atomic.Bool
	synced  chan struct{}
	nodes   atomic.Int64

	nodeUpdates   atomic.Int64
	published     atomic.Int64
	duplicates    atomic.Int64
	publishErrors atomic.Int64

	ignoredNotANode, ignoredNamespace, ignoredSource atomic.Int64
}

// New returns the detector; cfg gets its defaults applied and is validated.
func New(cfg Config, client kubernetes.Interface, pub Publisher, log *slog.Logger) (*Detector, error) {
	cfg.ApplyDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if client == nil || pub == nil || log == nil {
		return nil, errors.New("nodeproblem: a Kubernetes client, a publisher and a logger are required")
	}
	d := &Detector{
		cfg:        cfg,
		client:     client,
		pub:        pub,
		log:        log.With("detector", Source),
		now:        time.Now,
		conditions: make(map[corev1.NodeConditionType]*ConditionRule, len(cfg.Conditions)),
		events:     make(map[string][]*EventRule, len(cfg.Events)),
		problems:   map[string]map[corev1.NodeConditionType]*problem{},
		synced:     make(chan struct{}),
	}
	d.out.wake = make(chan struct{}, 1)
	for i := range d.cfg.Conditions {
		r := &d.cfg.Conditions[i]
		d.conditions[corev1.NodeConditionType(r.Type)] = r
	}
	for i := range d.cfg.Events {
		r := &d.cfg.Events[i]
		d.events[r.Reason] = append(d.events[r.Reason], r)
	}
	return d, nil
}

// Stats counts what the detector has seen and done.
type Stats struct {
	// Nodes is the number of Nodes in the detector's cache.
	Nodes int
	// Holding is the number of watched conditions that hold now, counting
	// or still within their For; Counting is how many of them count.
	Holding, Counting int
	// NodeUpdates is the number of Node adds, updates and deletes handled.
	NodeUpdates int64
	// Queued is the number of events waiting to be published.
	Queued int
	// Published is the number of events JetStream acknowledged, of which
	// Duplicates it already held (same id within its duplicate window).
	Published, Duplicates int64
	// PublishErrors is the number of failed publish attempts (each retried).
	PublishErrors int64
	// Ignored counts, by why (IgnoredNotANode, IgnoredNamespace,
	// IgnoredSource), the occurrences of Events whose reason a rule names
	// that were ignored because node-problem-detector did not post them
	// about a Node.
	Ignored map[string]int64
}

// Stats returns the current counters.
func (d *Detector) Stats() Stats {
	s := Stats{
		Nodes:         int(d.nodes.Load()),
		NodeUpdates:   d.nodeUpdates.Load(),
		Queued:        d.out.len(),
		Published:     d.published.Load(),
		Duplicates:    d.duplicates.Load(),
		PublishErrors: d.publishErrors.Load(),
		Ignored:       d.ignoredCounts(),
	}
	d.mu.Lock()
	for _, byType := range d.problems {
		for _, p := range byType {
			s.Holding++
			if p.fired {
				s.Counting++
			}
		}
	}
	d.mu.Unlock()
	return s
}

// Synced is closed once the initial list of Nodes and Events has been
// handled: every event it calls for is queued for publishing.
func (d *Detector) Synced() <-chan struct{} { return d.synced }

// Run watches Nodes and Node Events with shared informers and publishes
// events until ctx ends. It returns an error at once when the client may
// not list Nodes or Events, and nil when ctx ends. Events still queued
// then get one last publish attempt. Run may be called once.
func (d *Detector) Run(ctx context.Context) error {
	if !d.started.CompareAndSwap(false, true) {
		return errors.New("nodeproblem: Run called twice")
	}
	// The informers retry forever; a missing permission is better
	// reported now than logged every few seconds.
	if _, err := d.client.CoreV1().Nodes().List(ctx, metav1.ListOptions{Limit: 1}); err != nil {
		return fmt.Errorf("nodeproblem: list nodes: %w", err)
	}
	if len(d.cfg.Events) > 0 {
		for _, ns := range d.cfg.Namespaces {
			if _, err := d.client.CoreV1().Events(ns).List(ctx, metav1.ListOptions{Limit: 1, FieldSelector: nodeEventSelector}); err != nil {
				return fmt.Errorf("nodeproblem: list node events in namespace %s: %w", ns, err)
			}
		}
	}
	begin := time.Now()
	nodeFactory := informers.NewSharedInformerFactoryWithOptions(d.client, 0)
	nodesSynced, err := d.watchNodes(nodeFactory)
	if err != nil {
		return err
	}
	synced := []cache.DoneChecker{nodesSynced}
	// One Event informer per namespace of Config.Namespaces: Events about
	// Nodes anywhere else are not even listed.
	var eventFactories []informers.SharedInformerFactory
	if len(d.cfg.Events) > 0 {
		for _, ns := range d.cfg.Namespaces {
			f := informers.NewSharedInformerFactoryWithOptions(d.client, 0, informers.WithNamespace(ns),
				informers.WithTweakListOptions(func(o *metav1.ListOptions) { o.FieldSelector = nodeEventSelector }))
			eventsSynced, err := d.watchEvents(f)
			if err != nil {
				return err
			}
			eventFactories = append(eventFactories, f)
			synced = append(synced, eventsSynced)
		}
	}

	published := make(chan struct{})
	go func() {
		defer close(published)
		d.publishLoop(ctx)
	}()
	nodeFactory.StartWithContext(ctx)
	for _, f := range eventFactories {
		f.StartWithContext(ctx)
	}
	if cache.WaitFor(ctx, "", synced...) {
		close(d.synced)
		st := d.Stats()
		d.log.InfoContext(ctx, "initial sync done", "nodes", st.Nodes, "holding", st.Holding,
			"counting", st.Counting, "queued", st.Queued, "took", time.Since(begin).Round(time.Millisecond))
	}
	<-ctx.Done()
	nodeFactory.Shutdown()
	for _, f := range eventFactories {
		f.Shutdown()
	}
	d.stopTimers()
	<-published
	return nil
}

// watchNodes sets up the Node informer of factory: the transform to
// *nodeInfo and the handlers. The returned checker is done once the initial
// list has been handled.
func (d *Detector) watchNodes(factory informers.SharedInformerFactory) (cache.DoneChecker, error) {
	// The untyped informer: its cache holds *nodeInfo, not *corev1.Node.
	inf := factory.Core().V1().Nodes().Informer()
	if err := inf.SetTransform(d.slimNode); err != nil {
		return nil, fmt.Errorf("nodeproblem: node informer: %w", err)
	}
	if err := inf.SetWatchErrorHandlerWithContext(d.watchError("nodes")); err != nil {
		return nil, fmt.Errorf("nodeproblem: node informer: %w", err)
	}
	reg, err := inf.AddEventHandler(cache.ResourceEventHandlerDetailedFuncs{
		AddFunc: func(obj any, _ bool) {
			if n, ok := d.asNodeInfo(obj); ok {
				d.onNode(nil, n)
			}
		},
		UpdateFunc: func(oldObj, newObj any) {
			old, ok1 := d.asNodeInfo(oldObj)
			n, ok2 := d.asNodeInfo(newObj)
			if ok1 && ok2 {
				d.onNode(old, n)
			}
		},
		DeleteFunc: d.onNodeDeleted,
	})
	if err != nil {
		return nil, fmt.Errorf("nodeproblem: node informer: %w", err)
	}
	return reg.HasSyncedChecker(), nil
}

// watchEvents sets up the Event informer of factory, which lists only
// Events about Nodes in one namespace.
func (d *Detector) watchEvents(factory informers.SharedInformerFactory) (cache.DoneChecker, error) {
	inf := factory.Core().V1().Events().TypedInformer()
	if err := inf.SetTransform(d.slimEvent); err != nil {
		return nil, fmt.Errorf("nodeproblem: event informer: %w", err)
	}
	if err := inf.SetWatchErrorHandlerWithContext(d.watchError("events")); err != nil {
		return nil, fmt.Errorf("nodeproblem: event informer: %w", err)
	}
	reg, err := inf.AddTypedEventHandler(cache.TypedResourceEventHandlerDetailedFuncs[*corev1.Event]{
		AddFunc:    func(e *corev1.Event, _ bool) { d.onEvent(nil, e) },
		UpdateFunc: d.onEvent,
	})
	if err != nil {
		return nil, fmt.Errorf("nodeproblem: event informer: %w", err)
	}
	return reg.HasSyncedChecker(), nil
}

// asNodeInfo returns the cached form of a Node. Anything else would be a
// bug in the transform; it is logged, not panicked on.
func (d *Detector) asNodeInfo(obj any) (*nodeInfo, bool) {
	n, ok := obj.(*nodeInfo)
	if !ok {
		d.log.Error("node informer delivered an unexpected object", "type", fmt.Sprintf("%T", obj))
	}
	return n, ok
}

func (d *Detector) watchError(resource string) cache.WatchErrorHandlerWithContext {
	return func(ctx context.Context, _ *cache.Reflector, err error) {
		if ctx.Err() != nil {
			return
		}
		d.log.WarnContext(ctx, "watch failed; the informer retries", "resource", resource, "err", err)
	}
}

// stopTimers cancels every pending For timer; Run calls it on its way out.
func (d *Detector) stopTimers() {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.stopped = true
	for _, byType := range d.problems {
		for _, p := range byType {
			if p.timer != nil {
				p.timer.Stop()
			}
		}
	}
}

// keepLabel reports whether the Node label key is one Config.Labels keeps.
func (d *Detector) keepLabel(key string) bool {
	for _, l := range d.cfg.Labels {
		if key == l || strings.HasSuffix(l, "/") && strings.HasPrefix(key, l) {
			return true
		}
	}
	return false
}
