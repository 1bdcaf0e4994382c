package logpipeline

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/selfheal/healer/bus"
)

// Publisher stores events durably; bus.Publisher is the real one.
type Publisher interface {
	Publish(ctx context.Context, events ...*bus.Event) (bus.PublishResult, error)
}

var _ Publisher = (*bus.Publisher)(nil)

// Option changes how a Detector is built.
type Option func(*Detector)

// WithKafkaOpts adds options to the Kafka client, after those made from
// the configuration: a dialer, a logger, hooks for metrics.
func WithKafkaOpts(opts ...kgo.Opt) Option {
	return func(d *Detector) { d.kafkaOpts = append(d.kafkaOpts, opts...) }
}

// Detector measures the lag of the configured shippers and consumer
// groups every Interval and publishes an event when a lag has stayed over
// its threshold for its For duration, and a resolved event when it drops
// back under.
type Detector struct {
	cfg       Config
	pub       Publisher
	log       *slog.Logger
	kafkaOpts []kgo.Opt

	// now gives the time of the first measurement; the ticks give the
	// time of the others. Tests replace both.
	now    func() time.Time
	ticker func(time.Duration) (<-chan time.Time, func())
	// afterPoll, when set, is called after each measurement.
	afterPoll func()
}

// New returns the detector; cfg gets its defaults applied and is
// validated, and the Kafka TLS and SASL files are read.
func New(cfg Config, pub Publisher, log *slog.Logger, opts ...Option) (*Detector, error) {
	cfg.ApplyDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if pub == nil || log == nil {
		return nil, errors.New("logpipeline: a publisher and a logger are required")
	}
	d := &Detector{
		cfg: cfg,
		pub: pub,
		log: log.With("detector", EventSource),
		now: time.Now,
		ticker: func(every time.Duration) (<-chan time.Time, func()) {
			t := time.NewTicker(every)
			return t.C, t.Stop
		},
	}
	if cfg.Node != "" {
		d.log = d.log.With("node", cfg.Node)
	}
	if cfg.Kafka != nil {
		kopts, err := kafkaOpts(cfg.Kafka)
		if err != nil {
			return nil, err
		}
		d.kafkaOpts = kopts
	}
	for _, o := range opts {
		o(d)
	}
	return d, nil
}

// Run measures until ctx ends, then returns nil. A registry, file or
// Kafka cluster that cannot be read is logged and read again at the next
// measurement, not fatal; it returns an error only when the Kafka client
// cannot be created.
func (d *Detector) Run(ctx context.Context) error {
	var kcl *kgo.Client
	if d.cfg.Kafka != nil {
		var err error
		if kcl, err = kgo.NewClient(d.kafkaOpts...); err != nil {
			return fmt.Errorf("logpipeline: kafka client for %v: %w", d.cfg.Kafka.Brokers, err)
		}
	}
	var wg sync.WaitGroup
	for _, s := range d.cfg.Shippers {
		run := newShipperRun(d.cfg.Node, s, d.log)
		wg.Go(func() { d.loop(ctx, func(now time.Time) { d.pollShipper(ctx, run, now) }) })
	}
	if kcl != nil {
		run := newKafkaRun(*d.cfg.Kafka, kadm.NewClient(kcl), d.log)
		wg.Go(func() {
			defer kcl.Close()
			d.loop(ctx, func(now time.Time) { d.pollKafka(ctx, run, now) })
		})
	}
	wg.Wait()
	return nil
}

// loop measures now and at every tick until ctx ends.
func (d *Detector) loop(ctx context.Context, poll func(now time.Time)) {
	ticks, stop := d.ticker(d.cfg.Interval)
	defer stop()
	measure := func(now time.Time) {
		poll(now)
		if d.afterPoll != nil {
			d.afterPoll()
		}
	}
	if ctx.Err() != nil {
		return
	}
	measure(d.now())
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-ticks:
			if ctx.Err() != nil {
				return
			}
			measure(now)
		}
	}
}

// problems logs a failing read once when it starts failing or its error
// changes, and once when it recovers, rather than at every measurement.
type problems map[string]string

func (p problems) note(ctx context.Context, log *slog.Logger, what, msg string, err error, attrs ...any) {
	last, had := p[what]
	switch {
	case err == nil && had:
		delete(p, what)
		log.InfoContext(ctx, "read again", append(attrs, "read", what, "previous_err", last)...)
	case err != nil && err.Error() != last:
		p[what] = err.Error()
		log.WarnContext(ctx, msg, append(attrs, "read", what, "err", err)...)
	}
}

// forget drops the problems of the subjects not in keep.
func (p problems) forget(keep func(string) bool) {
	maps.DeleteFunc(p, func(k, _ string) bool { return !keep(k) })
}

// shipperRun is the state of one shipper's measurements.
type shipperRun struct {
	node     string
	cfg      Shipper
	log      *slog.Logger
	meter    *LagMeter
	files    *Evaluator[fileSample]
	registry *Evaluator[registryProblem]
	problems problems
}

func newShipperRun(node string, s Shipper, log *slog.Logger) *shipperRun {
	return &shipperRun{
		node: node, cfg: s,
		log:      log.With("shipper", s.Name, "registry", s.Registry),
		meter:    NewLagMeter(),
		files:    NewEvaluator[fileSample](),
		registry: NewEvaluator[registryProblem](),
		problems: problems{},
	}
}

// pollShipper measures one shipper at now. A registry that cannot be read
// measures nothing (the files keep their state) and, once it has stayed
// unreadable for UnreadableFor, fires LogShipperRegistryUnreadable.
func (d *Detector) pollShipper(ctx context.Context, s *shipperRun, now time.Time) {
	reg, err := ReadRegistry(s.cfg.Registry)
	var prob registryProblem
	if err != nil {
		prob.err = err.Error()
	}
	for _, tr := range s.registry.Observe(now, []Reading[registryProblem]{{
		Key: registryKey(s.node, s.cfg.Name), Over: err != nil, For: forOf(s.cfg.UnreadableFor), Value: prob,
	}}) {
		ev, eerr := registryEvent(s.node, s.cfg, tr)
		d.publish(ctx, s.log, ev, eerr)
	}
	s.problems.note(ctx, s.log, "registry", "shipper registry unreadable; lag not measured", err)
	if err != nil {
		return
	}
	s.problems.note(ctx, s.log, "registry log", "shipper registry log holds an unusable operation; using the state before it", reg.LogErr)

	matched, failed := statFiles(now, s.cfg.Files)
	stats := make([]FileStat, len(matched))
	for i, m := range matched {
		stats[i] = m.FileStat
	}
	lags := s.meter.Measure(now, reg, stats)
	readings := make([]Reading[fileSample], 0, len(lags)+len(failed))
	for i, l := range lags {
		r := s.cfg.Files[matched[i].rule]
		readings = append(readings, Reading[fileSample]{
			Key: fileKey(s.node, s.cfg.Name, l.File), Over: r.over(l), For: forOf(r.For),
			Value: fileSample{FileLag: l, rule: r},
		})
	}
	for _, p := range slices.Sorted(maps.Keys(failed)) {
		readings = append(readings, Reading[fileSample]{Key: fileKey(s.node, s.cfg.Name, p), Unknown: true})
	}
	for p, ferr := range failed {
		s.problems.note(ctx, s.log, "file "+p, "shipped file cannot be stat'ed; its lag is not measured", ferr, "file", p)
	}
	s.problems.forget(func(what string) bool {
		p, isFile := strings.CutPrefix(what, "file ")
		_, failing := failed[p]
		return !isFile || failing
	})
	for _, tr := range s.files.Observe(now, readings) {
		l := tr.Value.FileLag
		if tr.Status == bus.StatusFiring {
			s.log.WarnContext(ctx, "log shipper lag", "file", l.File, "state", l.State, "offset", l.Offset, "size", l.Size,
				"lag_bytes", l.LagBytes, "lag_age", l.LagAge.Round(time.Second), "since", tr.Since)
		} else {
			s.log.InfoContext(ctx, "log shipper lag resolved", "file", l.File, "lag_bytes", l.LagBytes, "gone", tr.Gone)
		}
		ev, eerr := shipperLagEvent(s.node, s.cfg, tr)
		d.publish(ctx, s.log, ev, eerr)
	}
}

// kafkaRun is the state of the consumer-group measurements.
type kafkaRun struct {
	cfg      Kafka
	adm      *kadm.Client
	log      *slog.Logger
	groups   []string
	eval     *Evaluator[groupSample]
	problems problems
}

func newKafkaRun(k Kafka, adm *kadm.Client, log *slog.Logger) *kafkaRun {
	run := &kafkaRun{cfg: k, adm: adm, log: log.With("brokers", k.Brokers), eval: NewEvaluator[groupSample](), problems: problems{}}
	for _, g := range k.Groups {
		run.groups = append(run.groups, g.Group)
	}
	return run
}

// pollKafka measures every group at now. When the cluster cannot be
// asked, nothing is measured and every group keeps its state; a group
// that cannot be measured keeps its own.
func (d *Detector) pollKafka(ctx context.Context, k *kafkaRun, now time.Time) {
	rctx, cancel := context.WithTimeoutCause(ctx, k.cfg.RequestTimeout,
		fmt.Errorf("no answer from kafka within %s", k.cfg.RequestTimeout))
	lags, err := k.adm.Lag(rctx, slices.Clone(k.groups)...) // Lag reorders the slice it is given
	if err != nil && rctx.Err() != nil {
		err = fmt.Errorf("%w: %w", context.Cause(rctx), err)
	}
	cancel()
	if ctx.Err() != nil {
		return
	}
	if err != nil {
		err = fmt.Errorf("consumer group lag of %v: %w", k.groups, err)
	}
	k.problems.note(ctx, k.log, "cluster", "kafka consumer lag not measured", err)
	if err != nil {
		return
	}
	readings := make([]Reading[groupSample], 0, len(k.cfg.Groups))
	for _, r := range k.cfg.Groups {
		key := groupSubject(r.Group)
		dl, ok := lags[r.Group]
		var (
			gl   GroupLag
			gerr error
		)
		if ok {
			gl, gerr = SummarizeGroupLag(dl, r.Topics)
		} else {
			gerr = fmt.Errorf("consumer group %s: missing from the cluster's answer", r.Group)
		}
		k.problems.note(ctx, k.log, "group "+r.Group, "consumer group lag not measured", gerr, "group", r.Group)
		if gerr != nil {
			readings = append(readings, Reading[groupSample]{Key: key, Unknown: true})
			continue
		}
		readings = append(readings, Reading[groupSample]{
			Key: key, Over: gl.Total > r.MaxLag, For: forOf(r.For), Value: groupSample{GroupLag: gl, rule: r},
		})
	}
	for _, tr := range k.eval.Observe(now, readings) {
		l := tr.Value.GroupLag
		if tr.Status == bus.StatusFiring {
			k.log.WarnContext(ctx, "kafka consumer lag", "group", l.Group, "state", l.State, "total_lag", l.Total,
				"max_lag", tr.Value.rule.MaxLag, "since", tr.Since)
		} else {
			k.log.InfoContext(ctx, "kafka consumer lag resolved", "group", l.Group, "total_lag", l.Total)
		}
		ev, eerr := kafkaLagEvent(tr)
		d.publish(ctx, k.log, ev, eerr)
	}
}

// publish publishes ev, retrying with backoff until it is acknowledged or
// ctx ends. eerr is the error of building ev.
func (d *Detector) publish(ctx context.Context, log *slog.Logger, ev *bus.Event, eerr error) {
	if eerr != nil {
		log.ErrorContext(ctx, "event not reported", "err", eerr)
		return
	}
	log = log.With("event_type", ev.Type, "event_key", ev.Key, "status", ev.Status)
	if bus.PublishUntilStored(ctx, d.pub, ev, d.cfg.PublishTimeout, log) {
		log.DebugContext(ctx, "event published")
	}
}
