package etcdmember

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/selfheal/healer/bus"
)

// Publisher stores events durably; bus.Publisher is the real one.
type Publisher interface {
	Publish(ctx context.Context, events ...*bus.Event) (bus.PublishResult, error)
}

var _ Publisher = (*bus.Publisher)(nil)

// Detector polls the etcd cluster every Interval and publishes the
// transitions its Evaluator finds.
type Detector struct {
	cfg Config
	pub Publisher
	log *slog.Logger

	// now gives the time of each poll; tests replace it.
	now func() time.Time
	// afterPoll, when set, is called after each poll with its snapshot
	// (zero when the poll failed) and transitions.
	afterPoll func(Snapshot, []Transition)
}

// New returns the detector; cfg gets its defaults applied and is
// validated, and the TLS files are read.
func New(cfg Config, pub Publisher, log *slog.Logger) (*Detector, error) {
	cfg.ApplyDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if pub == nil || log == nil {
		return nil, errors.New("etcdmember: a publisher and a logger are required")
	}
	if _, err := tlsConfig(&cfg); err != nil {
		return nil, err
	}
	return &Detector{
		cfg: cfg,
		pub: pub,
		log: log.With("detector", EventSource, "cluster", cfg.ClusterName),
		now: time.Now,
	}, nil
}

// Run polls until ctx ends, then returns nil. A cluster or member that
// cannot be reached is logged and polled again, not fatal; Run returns an
// error only when the etcd client cannot be made.
func (d *Detector) Run(ctx context.Context) error {
	p, err := NewProber(d.cfg)
	if err != nil {
		return err
	}
	defer func() {
		if err := p.Close(); err != nil {
			d.log.WarnContext(ctx, "close etcd clients", "err", err)
		}
	}()
	p.now = d.now
	ev := NewEvaluator(d.cfg.ClusterName, d.cfg.LostAfter)
	logs := &pollLog{members: map[MemberID]string{}}
	t := time.NewTicker(d.cfg.Interval)
	defer t.Stop()
	for {
		s, err := p.Probe(ctx)
		if ctx.Err() != nil {
			return nil
		}
		var trs []Transition
		if err != nil {
			logs.unreachable(ctx, d.log, err)
			s = Snapshot{}
		} else {
			logs.snapshot(ctx, d.log, &s)
			trs = ev.Observe(s)
			if !d.report(ctx, trs) {
				return nil
			}
		}
		if d.afterPoll != nil {
			d.afterPoll(s, trs)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// report publishes the transitions in order; it returns false when ctx
// ended first.
func (d *Detector) report(ctx context.Context, trs []Transition) bool {
	for i := range trs {
		tr := &trs[i]
		e, err := tr.Event()
		if err != nil {
			d.log.ErrorContext(ctx, "transition not reported", "event_type", tr.Type, "subject", tr.Subject, "err", err)
			continue
		}
		q := tr.Data.Quorum
		attrs := []any{"event_type", e.Type, "status", e.Status, "subject", e.Subject, "event_id", e.ID,
			"voters", q.Voters, "healthy_voters", q.HealthyVoters, "quorum", q.Quorum, "leader_id", q.LeaderID.String()}
		if m := tr.Data.Member; m != nil {
			attrs = append(attrs, "member_id", m.ID.String(), "member_name", m.Name)
		}
		if tr.Data.Alarm != "" {
			attrs = append(attrs, "alarm", tr.Data.Alarm)
		}
		if tr.Type == TypeLeaderChanged {
			attrs = append(attrs, "previous_leader_id", tr.Data.PreviousLeaderID.String())
		}
		if e.Status == bus.StatusFiring && tr.Type != TypeLeaderChanged {
			d.log.WarnContext(ctx, "etcd problem", attrs...)
		} else {
			d.log.InfoContext(ctx, "etcd change", attrs...)
		}
		if !d.publish(ctx, e) {
			return false
		}
	}
	return true
}

// publish stores e until it is acknowledged; false when ctx ended first.
func (d *Detector) publish(ctx context.Context, e *bus.Event) bool {
	return bus.PublishUntilStored(ctx, d.pub, e, d.cfg.PublishTimeout, d.log)
}

// pollLog logs a problem once when it starts or changes, and once when it
// ends, rather than at every poll.
type pollLog struct {
	cluster      string              // the cluster-wide failure, if any
	serializable bool                // the member list came from a local view
	alarms       string              // the alarm list failure, if any
	members      map[MemberID]string // per member: why it is unreachable or unhealthy
}

func (l *pollLog) unreachable(ctx context.Context, log *slog.Logger, err error) {
	if msg := err.Error(); msg != l.cluster {
		l.cluster = msg
		log.WarnContext(ctx, "etcd cluster unreachable; nothing concluded from this poll", "err", err)
	}
}

func (l *pollLog) snapshot(ctx context.Context, log *slog.Logger, s *Snapshot) {
	if l.cluster != "" {
		log.InfoContext(ctx, "etcd cluster reachable again", "previous_err", l.cluster)
		l.cluster = ""
	}
	if s.Serializable != l.serializable {
		l.serializable = s.Serializable
		if s.Serializable {
			log.WarnContext(ctx, "etcd member list only from a member's local view: quorum is probably lost")
		} else {
			log.InfoContext(ctx, "etcd member list linearizable again")
		}
	}
	seen := map[MemberID]bool{}
	for i := range s.Members {
		m := &s.Members[i]
		seen[m.ID] = true
		problem := m.StatusError
		if problem == "" {
			problem = m.HealthError
		}
		last, had := l.members[m.ID]
		switch {
		case problem == "" && had:
			delete(l.members, m.ID)
			log.InfoContext(ctx, "etcd member healthy again", "member_id", m.ID.String(), "member_name", m.Name, "previous_err", last)
		case problem != "" && problem != last:
			l.members[m.ID] = problem
			log.WarnContext(ctx, "etcd member unhealthy", "member_id", m.ID.String(), "member_name", m.Name,
				"reachable", m.Reachable, "err", problem)
		}
	}
	for id := range l.members {
		if !seen[id] {
			delete(l.members, id)
		}
	}
	switch {
	case !s.AlarmsKnown && s.AlarmsError != l.alarms:
		l.alarms = s.AlarmsError
		log.WarnContext(ctx, "etcd alarm list not read; alarms keep their state", "err", s.AlarmsError)
	case s.AlarmsKnown && l.alarms != "":
		log.InfoContext(ctx, "etcd alarm list read again", "previous_err", l.alarms)
		l.alarms = ""
	}
}
