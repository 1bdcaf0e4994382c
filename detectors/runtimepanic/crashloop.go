package runtimepanic

import (
	"fmt"
	"regexp"
	"time"
)

// RestartTracker counts a systemd unit's restarts from the messages
// systemd logs about it in the journal, and reports a crash loop when the
// unit restarts Restarts times within Window. It is not safe for
// concurrent use.
//
// A "Scheduled restart job, restart counter is at N." message is one
// restart. A "Started ..." message after "Main process exited, ..." with
// no scheduled restart between them (a restart by hand or by another
// service) is one restart too, so no restart is counted twice.
type RestartTracker struct {
	unit     string
	restarts int
	window   time.Duration

	scheduled *regexp.Regexp
	exited    *regexp.Regexp
	started   *regexp.Regexp

	times        []time.Time
	exitPending  bool
	sawScheduled bool
}

// NewRestartTracker returns a tracker for unit (for example
// "docker.service").
func NewRestartTracker(unit string, restarts int, window time.Duration) *RestartTracker {
	return &RestartTracker{
		unit:      unit,
		restarts:  restarts,
		window:    window,
		scheduled: regexp.MustCompile(`^(\S+): Scheduled restart job, restart counter is at (\d+)\.?$`),
		exited:    regexp.MustCompile(`^(\S+): Main process exited, code=\w+, status=\S+$`),
		started:   regexp.MustCompile(`^Started (.+?)\.?$`),
	}
}

// Observe takes a journal message. objectUnit is the journal's UNIT field,
// which systemd sets on the messages it logs about a unit; it may be
// empty. Observe returns a crash-loop finding when the message completes
// one, after which counting starts again.
func (t *RestartTracker) Observe(objectUnit string, l Line) *Finding {
	if objectUnit != "" && objectUnit != t.unit {
		return nil
	}
	switch {
	case t.match(t.scheduled, l.Text):
		t.exitPending, t.sawScheduled = false, true
		return t.restart(l)
	case t.match(t.exited, l.Text):
		t.exitPending, t.sawScheduled = true, false
	case t.started.MatchString(l.Text):
		if t.exitPending && !t.sawScheduled {
			t.exitPending = false
			return t.restart(l)
		}
		t.exitPending, t.sawScheduled = false, false
	}
	return nil
}

// match reports whether re matches text and names this tracker's unit.
func (t *RestartTracker) match(re *regexp.Regexp, text string) bool {
	m := re.FindStringSubmatch(text)
	return m != nil && m[1] == t.unit
}

func (t *RestartTracker) restart(l Line) *Finding {
	keep := t.times[:0]
	for _, at := range t.times {
		if l.Time.Sub(at) < t.window {
			keep = append(keep, at)
		}
	}
	t.times = append(keep, l.Time)
	if len(t.times) < t.restarts {
		return nil
	}
	t.times = nil
	return &Finding{
		Kind:      KindCrashLoop,
		Message:   fmt.Sprintf("%s restarted %d times within %s", t.unit, t.restarts, t.window),
		FirstLine: l.Text,
		Time:      l.Time,
		Lines:     1,
		Unit:      t.unit,
		Restarts:  t.restarts,
		Window:    t.window,
	}
}
