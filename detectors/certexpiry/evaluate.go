package certexpiry

import (
	"cmp"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/selfheal/healer/bus"
)

// BandExpired is the band of a certificate past its NotAfter.
const BandExpired = "expired"

// Resolutions: why a firing certificate resolved.
const (
	// ResolvedRenewed is a location that now holds another certificate,
	// outside every band.
	ResolvedRenewed = "renewed"
	// ResolvedGone is a location that no longer holds a certificate: the
	// file, kubeconfig user or secret was removed.
	ResolvedGone = "gone"
)

// Bands says which band a certificate is in at a given time.
type Bands struct {
	// Thresholds, in any order. A certificate within a threshold of its
	// NotAfter is in that threshold's band (the smallest such threshold).
	Thresholds []time.Duration
	// Weekend is WeekendFriday or WeekendKeep ("" keeps).
	Weekend string
	// Location is the zone in which weekends are told; nil is UTC.
	Location *time.Location
}

// Band is where a certificate stands.
type Band struct {
	// Name is the threshold in days ("30d", "7d", "1d"; a threshold that
	// is not whole days is written as a duration, "36h0m0s"), BandExpired,
	// or "" outside every band.
	Name string
	// Threshold is the band's threshold; 0 for BandExpired and for none.
	Threshold time.Duration
	// Level orders bands by urgency: 0 is outside every band, 1 the
	// largest threshold, len(Thresholds) the smallest, and
	// len(Thresholds)+1 BandExpired.
	Level int
	// Since is when the certificate entered the band: NotAfter minus the
	// threshold (moved back to a Friday by WeekendFriday), or NotAfter
	// for BandExpired.
	Since time.Time
}

// BandName is the name of the band of threshold d: whole days as "<n>d",
// anything else as d.String().
func BandName(d time.Duration) string {
	const day = 24 * time.Hour
	if d%day == 0 {
		return fmt.Sprintf("%dd", d/day)
	}
	return d.String()
}

// sorted returns the thresholds from largest to smallest.
func (b Bands) sorted() []time.Duration {
	ts := slices.Clone(b.Thresholds)
	slices.SortFunc(ts, func(x, y time.Duration) int { return cmp.Compare(y, x) })
	return slices.Compact(ts)
}

func (b Bands) location() *time.Location {
	if b.Location == nil {
		return time.UTC
	}
	return b.Location
}

// Of returns the band, at now, of a certificate that expires at notAfter.
func (b Bands) Of(notAfter, now time.Time) Band {
	ts := b.sorted()
	if !now.Before(notAfter) {
		return Band{Name: BandExpired, Level: len(ts) + 1, Since: notAfter}
	}
	for i := len(ts) - 1; i >= 0; i-- {
		since := b.crossing(notAfter.Add(-ts[i]))
		if !now.Before(since) {
			return Band{Name: BandName(ts[i]), Threshold: ts[i], Level: i + 1, Since: since}
		}
	}
	return Band{}
}

// crossing moves t, the time a certificate enters a band, back to the
// start of the Friday before when it is on a weekend and the bands say so.
func (b Bands) crossing(t time.Time) time.Time {
	if b.Weekend != WeekendFriday {
		return t
	}
	lt := t.In(b.location())
	back := 0
	switch lt.Weekday() {
	case time.Saturday:
		back = 1
	case time.Sunday:
		back = 2
	default:
		return t
	}
	return time.Date(lt.Year(), lt.Month(), lt.Day()-back, 0, 0, 0, 0, lt.Location())
}

// OnWeekend reports whether t is a Saturday or a Sunday in the bands'
// zone.
func (b Bands) OnWeekend(t time.Time) bool {
	wd := t.In(b.location()).Weekday()
	return wd == time.Saturday || wd == time.Sunday
}

// Observation is a certificate found at a location.
type Observation struct {
	Location Location
	Cert     Cert
}

// Round is one complete look at every source.
type Round struct {
	// At is when the look was taken.
	At time.Time
	// Certs are the certificates found. A location given twice counts
	// once, the first time.
	Certs []Observation
	// Unknown are prefixes of the keys of locations that could not be read
	// this time (a directory, a kubeconfig, a namespace's secrets, an
	// endpoint): a firing location whose key has one of them keeps its
	// state instead of resolving as gone.
	Unknown []string
}

// Transition is a change of a location's state that is reported.
type Transition struct {
	// Key is the location's key.
	Key string
	// Status is bus.StatusFiring or bus.StatusResolved.
	Status string
	// Band is the band entered (firing), or the band last fired
	// (resolved).
	Band Band
	// At is the time of the round that made the transition.
	At time.Time
	// Observation is the certificate now at the location; for a location
	// resolved as gone, the last one seen there.
	Observation Observation
	// Previous is the certificate that had fired at the location, when
	// another one has taken its place: on a ResolvedRenewed transition,
	// and on a firing one for a replacement that is itself in a band.
	Previous *Cert
	// Resolution is ResolvedRenewed or ResolvedGone on a resolved
	// transition.
	Resolution string
}

// Evaluator turns rounds into transitions: a certificate fires once for
// each band it enters (a first look at a certificate already deep in a
// band fires that band only), and its location resolves when it holds
// another certificate outside every band or no certificate at all. It is
// pure, with the time of each round given by the caller, and not safe for
// concurrent use.
type Evaluator struct {
	bands  Bands
	states map[string]*fired
}

// fired is a location whose certificate has fired.
type fired struct {
	band Band
	last Observation
}

// NewEvaluator returns an evaluator with nothing fired.
func NewEvaluator(b Bands) *Evaluator {
	return &Evaluator{bands: b, states: map[string]*fired{}}
}

// Observe takes one round and returns its transitions: those of the
// round's certificates in their order, then those of firing locations
// missing from it, by key.
func (e *Evaluator) Observe(r Round) []Transition {
	var out []Transition
	seen := make(map[string]bool, len(r.Certs))
	for _, o := range r.Certs {
		k := o.Location.Key()
		if seen[k] {
			continue
		}
		seen[k] = true
		band := e.bands.Of(o.Cert.NotAfter, r.At)
		st := e.states[k]
		switch {
		case st == nil:
			if band.Level > 0 {
				e.states[k] = &fired{band: band, last: o}
				out = append(out, Transition{Key: k, Status: bus.StatusFiring, Band: band, At: r.At, Observation: o})
			}
		case st.last.Cert.SHA256 == o.Cert.SHA256:
			st.last = o
			if band.Level > st.band.Level {
				st.band = band
				out = append(out, Transition{Key: k, Status: bus.StatusFiring, Band: band, At: r.At, Observation: o})
			}
		default:
			prev := st.last.Cert
			if band.Level == 0 {
				delete(e.states, k)
				out = append(out, Transition{
					Key: k, Status: bus.StatusResolved, Band: st.band, At: r.At, Observation: o,
					Previous: &prev, Resolution: ResolvedRenewed,
				})
				continue
			}
			e.states[k] = &fired{band: band, last: o}
			out = append(out, Transition{Key: k, Status: bus.StatusFiring, Band: band, At: r.At, Observation: o, Previous: &prev})
		}
	}
	var gone []string
	for k := range e.states {
		if !seen[k] && !slices.ContainsFunc(r.Unknown, func(p string) bool { return strings.HasPrefix(k, p) }) {
			gone = append(gone, k)
		}
	}
	slices.Sort(gone)
	for _, k := range gone {
		st := e.states[k]
		delete(e.states, k)
		out = append(out, Transition{Key: k, Status: bus.StatusResolved, Band: st.band, At: r.At, Observation: st.last, Resolution: ResolvedGone})
	}
	return out
}

// Firing returns the keys of the locations that have fired and not
// resolved, sorted.
func (e *Evaluator) Firing() []string {
	keys := make([]string, 0, len(e.states))
	for k := range e.states {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
