package logpipeline

import (
	"slices"
	"time"

	"github.com/selfheal/healer/bus"
)

// Reading is one measurement of one lag instance (a file, a consumer
// group, a registry).
type Reading[T any] struct {
	// Key names the instance; it becomes the events' key.
	Key string
	// Over is true when the value breaks the instance's threshold.
	Over bool
	// For is how long the instance must stay over before it fires.
	For time.Duration
	// Unknown is true when the instance could not be measured this time:
	// it keeps its state, whatever it was.
	Unknown bool
	// Value is the measurement.
	Value T
}

// Transition is a change of an instance's state that is reported.
type Transition[T any] struct {
	Key string
	// Status is bus.StatusFiring or bus.StatusResolved.
	Status string
	// Since is when this excursion began: the first measurement over the
	// threshold.
	Since time.Time
	// At is the time of the measurement that made the transition.
	At time.Time
	// Value is that measurement; for an instance resolved because it is
	// gone, the last value measured.
	Value T
	// Gone is true for an instance resolved because it is no longer
	// measured (the file was deleted or is no longer matched).
	Gone bool
}

// Evaluator turns rounds of readings into firing and resolved
// transitions: an instance fires once when it has stayed over its
// threshold for its For duration, and resolves at the first reading under
// it. It is pure, with the time of each round given by the caller, and not
// safe for concurrent use.
type Evaluator[T any] struct {
	states map[string]*excursion[T]
}

// excursion is an instance that is over its threshold.
type excursion[T any] struct {
	since  time.Time
	firing bool
	last   T
}

// NewEvaluator returns an evaluator with no instance over its threshold.
func NewEvaluator[T any]() *Evaluator[T] {
	return &Evaluator[T]{states: map[string]*excursion[T]{}}
}

// Observe takes one complete round of readings made at now and returns
// the transitions, in the order of the readings, then those of instances
// missing from the round (resolved as gone, by key). A measurement that
// failed as a whole must not be passed as an empty round: skip Observe,
// or pass the instances as Unknown.
func (e *Evaluator[T]) Observe(now time.Time, readings []Reading[T]) []Transition[T] {
	var out []Transition[T]
	seen := make(map[string]bool, len(readings))
	for _, r := range readings {
		seen[r.Key] = true
		st := e.states[r.Key]
		switch {
		case r.Unknown:
		case r.Over:
			if st == nil {
				st = &excursion[T]{since: now}
				e.states[r.Key] = st
			}
			st.last = r.Value
			if !st.firing && now.Sub(st.since) >= r.For {
				st.firing = true
				out = append(out, Transition[T]{Key: r.Key, Status: bus.StatusFiring, Since: st.since, At: now, Value: r.Value})
			}
		case st != nil:
			if st.firing {
				out = append(out, Transition[T]{Key: r.Key, Status: bus.StatusResolved, Since: st.since, At: now, Value: r.Value})
			}
			delete(e.states, r.Key)
		}
	}
	var gone []string
	for k := range e.states {
		if !seen[k] {
			gone = append(gone, k)
		}
	}
	slices.Sort(gone)
	for _, k := range gone {
		st := e.states[k]
		if st.firing {
			out = append(out, Transition[T]{Key: k, Status: bus.StatusResolved, Since: st.since, At: now, Value: st.last, Gone: true})
		}
		delete(e.states, k)
	}
	return out
}

// Firing returns the keys of the instances that have fired and not
// resolved, sorted.
func (e *Evaluator[T]) Firing() []string {
	var keys []string
	for k, st := range e.states {
		if st.firing {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	return keys
}
