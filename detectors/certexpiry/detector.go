package certexpiry

import (
	"context"
	"errors"
	"log/slog"
	"maps"
	"math/rand/v2"
	"slices"
	"time"

	"k8s.io/client-go/kubernetes"

	"github.com/selfheal/healer/bus"
)

// Publisher stores events durably; bus.Publisher is the real one.
type Publisher interface {
	Publish(ctx context.Context, events ...*bus.Event) (bus.PublishResult, error)
}

var _ Publisher = (*bus.Publisher)(nil)

// Option changes how a Detector is built.
type Option func(*Detector)

// WithKubeClient gives the client that lists the TLS secrets; it is
// required when the configuration has Secrets. It needs list on secrets
// in the watched namespaces.
func WithKubeClient(c kubernetes.Interface) Option { return func(d *Detector) { d.kube = c } }

// Detector looks at the configured sources every Interval and publishes
// an event when a certificate enters a band, and a resolved event when
// its location holds a renewed certificate or none.
type Detector struct {
	cfg   Config
	pub   Publisher
	log   *slog.Logger
	kube  kubernetes.Interface
	bands Bands
	rules []Component
	eval  *Evaluator
	// problems are the reads failing, by what is read, with their error,
	// so that each is logged when it starts failing, changes or recovers.
	problems map[string]string

	// now gives the time of the first look; the values from after give
	// the time of the others. Tests replace both.
	now   func() time.Time
	after func(time.Duration) <-chan time.Time
	// afterPoll, when set, is called after each look.
	afterPoll func()
	// pageSize is the number of secrets asked for at once.
	pageSize int64
}

// New returns the detector; cfg gets its defaults applied and is
// validated.
func New(cfg Config, pub Publisher, log *slog.Logger, opts ...Option) (*Detector, error) {
	cfg.ApplyDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if pub == nil || log == nil {
		return nil, errors.New("certexpiry: a publisher and a logger are required")
	}
	d := &Detector{
		cfg:      cfg,
		pub:      pub,
		log:      log.With("detector", EventSource),
		bands:    cfg.bands(),
		rules:    append(slices.Clone(cfg.Components), KubeadmComponents()...),
		problems: map[string]string{},
		now:      time.Now,
		after:    time.After,
		pageSize: 500,
	}
	if cfg.Node != "" {
		d.log = d.log.With("node", cfg.Node)
	}
	d.eval = NewEvaluator(d.bands)
	for _, o := range opts {
		o(d)
	}
	if cfg.Secrets != nil && d.kube == nil {
		return nil, errors.New("certexpiry: secrets need a Kubernetes client (WithKubeClient)")
	}
	return d, nil
}

// Run looks at every source now and then every Interval (plus up to
// Jitter) until ctx ends, then returns nil. A source that cannot be read
// is logged and read again next time, and the certificates it held keep
// their state.
func (d *Detector) Run(ctx context.Context) error {
	now := d.now()
	for ctx.Err() == nil {
		d.poll(ctx, now)
		if d.afterPoll != nil {
			d.afterPoll()
		}
		wait := d.cfg.Interval
		if d.cfg.Jitter > 0 {
			wait += rand.N(d.cfg.Jitter + 1) //nolint:gosec // jitter needs no cryptographic randomness
		}
		select {
		case <-ctx.Done():
		case now = <-d.after(wait):
		}
	}
	return nil
}

// Scan looks at every source once and returns what it found, at the time
// it looked, with the reads that failed joined in the error. Missing
// optional files (of KubeadmDir) are not errors.
func (d *Detector) Scan(ctx context.Context) (Round, error) {
	at := d.now()
	s := d.scan(ctx)
	errs := make([]error, 0, len(s.failed))
	for _, what := range slices.Sorted(maps.Keys(s.failed)) {
		errs = append(errs, s.failed[what])
	}
	return Round{At: at, Certs: s.certs, Unknown: s.unknown}, errors.Join(errs...)
}

func (d *Detector) scan(ctx context.Context) *scan {
	s := newScan()
	d.scanFiles(s)
	d.scanKubeconfigs(s)
	if d.cfg.Secrets != nil {
		d.scanSecrets(ctx, s)
	}
	d.scanEndpoints(ctx, s)
	return s
}

// poll looks at every source at now and reports the transitions.
func (d *Detector) poll(ctx context.Context, now time.Time) {
	s := d.scan(ctx)
	if ctx.Err() != nil {
		return // cut short: what is missing was not looked at
	}
	d.noteProblems(ctx, s)
	d.log.DebugContext(ctx, "certificates looked at", "certificates", len(s.certs), "unreadable", len(s.failed))
	for _, tr := range d.eval.Observe(Round{At: now, Certs: s.certs, Unknown: s.unknown}) {
		l, c := tr.Observation.Location, tr.Observation.Cert
		who := componentFor(d.rules, l)
		ev, err := Event(tr, who, d.bands)
		if err != nil {
			d.log.ErrorContext(ctx, "event not reported", "key", tr.Key, "err", err)
			continue
		}
		log := d.log.With("key", tr.Key, "band", tr.Band.Name, "subject_cn", c.SubjectCN, "serial", c.Serial,
			"not_after", c.NotAfter, "event_type", ev.Type, "event_id", ev.ID, "status", ev.Status)
		if tr.Status == bus.StatusFiring {
			log.WarnContext(ctx, "certificate close to expiry", "days_left", DaysLeft(c.NotAfter, now), "used_by", who.UsedBy)
		} else {
			log.InfoContext(ctx, "certificate expiry resolved", "resolution", tr.Resolution)
		}
		if !d.publish(ctx, log, ev) {
			return
		}
	}
}

// noteProblems logs a failing read when it starts failing or its error
// changes, and once when it reads again, rather than at every look.
func (d *Detector) noteProblems(ctx context.Context, s *scan) {
	for _, what := range slices.Sorted(maps.Keys(s.failed)) {
		msg := s.failed[what].Error()
		if d.problems[what] != msg {
			d.problems[what] = msg
			d.log.WarnContext(ctx, "certificate source unreadable", "read", what, "err", s.failed[what])
		}
	}
	for _, what := range slices.Sorted(maps.Keys(d.problems)) {
		if _, failing := s.failed[what]; failing {
			continue
		}
		if s.read[what] {
			d.log.InfoContext(ctx, "certificate source read again", "read", what, "previous_err", d.problems[what])
		}
		delete(d.problems, what)
	}
}

// publish stores ev until it is acknowledged; false when ctx ended first.
func (d *Detector) publish(ctx context.Context, log *slog.Logger, ev *bus.Event) bool {
	return bus.PublishUntilStored(ctx, d.pub, ev, d.cfg.PublishTimeout, log)
}
