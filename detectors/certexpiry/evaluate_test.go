package certexpiry

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/selfheal/healer/bus"
)

// t0 is a Tuesday.
var t0 = time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)

const day = 24 * time.Hour

func defaultThresholds() []time.Duration { return []time.Duration{30 * day, 7 * day, day} }

func TestBandsOf(t *testing.T) {
	plus10 := time.FixedZone("UTC+10", 10*3600)
	tests := []struct {
		name     string
		bands    Bands
		notAfter time.Time
		now      time.Time
		want     string
		since    time.Time
	}{
		{"far from expiry", Bands{Thresholds: defaultThresholds()}, t0.Add(40 * day), t0, "", time.Time{}},
		{"just outside the largest band", Bands{Thresholds: defaultThresholds()}, t0.Add(30*day + time.Second), t0, "", time.Time{}},
		{"at the largest threshold", Bands{Thresholds: defaultThresholds()}, t0.Add(30 * day), t0, "30d", t0},
		{"inside 30d", Bands{Thresholds: defaultThresholds()}, t0.Add(29 * day), t0, "30d", t0.Add(-day)},
		{"at 7d", Bands{Thresholds: defaultThresholds()}, t0.Add(7 * day), t0, "7d", t0},
		{"an hour left", Bands{Thresholds: defaultThresholds()}, t0.Add(time.Hour), t0, "1d", t0.Add(-23 * time.Hour)},
		{"at NotAfter", Bands{Thresholds: defaultThresholds()}, t0, t0, BandExpired, t0},
		{"long expired", Bands{Thresholds: defaultThresholds()}, t0.Add(-400 * day), t0, BandExpired, t0.Add(-400 * day)},
		{"thresholds in any order", Bands{Thresholds: []time.Duration{day, 30 * day, 7 * day}}, t0.Add(5 * day), t0, "7d", t0.Add(-2 * day)},
		{"a threshold that is not whole days", Bands{Thresholds: []time.Duration{36 * time.Hour}}, t0.Add(30 * time.Hour), t0, "36h0m0s", t0.Add(-6 * time.Hour)},

		// 7d crossing on Saturday 2026-12-05 10:00 UTC.
		{"saturday crossing kept", Bands{Thresholds: defaultThresholds(), Weekend: WeekendKeep},
			time.Date(2026, 12, 12, 10, 0, 0, 0, time.UTC), time.Date(2026, 12, 4, 12, 0, 0, 0, time.UTC), "30d", time.Date(2026, 11, 12, 10, 0, 0, 0, time.UTC)},
		{"saturday crossing moved to friday 00:00", Bands{Thresholds: defaultThresholds(), Weekend: WeekendFriday},
			time.Date(2026, 12, 12, 10, 0, 0, 0, time.UTC), time.Date(2026, 12, 4, 0, 0, 0, 0, time.UTC), "7d", time.Date(2026, 12, 4, 0, 0, 0, 0, time.UTC)},
		{"not before that friday", Bands{Thresholds: defaultThresholds(), Weekend: WeekendFriday},
			time.Date(2026, 12, 12, 10, 0, 0, 0, time.UTC), time.Date(2026, 12, 3, 23, 59, 0, 0, time.UTC), "30d", time.Date(2026, 11, 12, 10, 0, 0, 0, time.UTC)},
		// 1d crossing on Sunday 2026-12-06 09:00 UTC.
		{"sunday crossing moved to friday", Bands{Thresholds: defaultThresholds(), Weekend: WeekendFriday},
			time.Date(2026, 12, 7, 9, 0, 0, 0, time.UTC), time.Date(2026, 12, 4, 8, 0, 0, 0, time.UTC), "1d", time.Date(2026, 12, 4, 0, 0, 0, 0, time.UTC)},
		{"sunday crossing kept", Bands{Thresholds: defaultThresholds(), Weekend: WeekendKeep},
			time.Date(2026, 12, 7, 9, 0, 0, 0, time.UTC), time.Date(2026, 12, 4, 8, 0, 0, 0, time.UTC), "7d", time.Date(2026, 11, 30, 9, 0, 0, 0, time.UTC)},
		// 1d crossing Friday 2026-12-04 20:00 UTC: a Saturday in UTC+10.
		{"friday evening in UTC is no weekend", Bands{Thresholds: defaultThresholds(), Weekend: WeekendFriday},
			time.Date(2026, 12, 5, 20, 0, 0, 0, time.UTC), time.Date(2026, 12, 4, 14, 0, 0, 0, time.UTC), "7d", time.Date(2026, 11, 27, 0, 0, 0, 0, time.UTC)},
		{"but saturday morning in UTC+10", Bands{Thresholds: defaultThresholds(), Weekend: WeekendFriday, Location: plus10},
			time.Date(2026, 12, 5, 20, 0, 0, 0, time.UTC), time.Date(2026, 12, 4, 14, 0, 0, 0, time.UTC), "1d", time.Date(2026, 12, 4, 0, 0, 0, 0, plus10)},
		{"expired only at NotAfter, even on a weekend", Bands{Thresholds: defaultThresholds(), Weekend: WeekendFriday},
			time.Date(2026, 12, 5, 10, 0, 0, 0, time.UTC), time.Date(2026, 12, 5, 9, 0, 0, 0, time.UTC), "1d", time.Date(2026, 12, 4, 10, 0, 0, 0, time.UTC)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := tt.bands.Of(tt.notAfter, tt.now)
			if got.Name != tt.want || !got.Since.Equal(tt.since) {
				t.Errorf("Of(%s, %s) = %q since %s, want %q since %s", tt.notAfter, tt.now, got.Name, got.Since, tt.want, tt.since)
			}
			if (got.Name == "") != (got.Level == 0) {
				t.Errorf("band %q has level %d", got.Name, got.Level)
			}
		})
	}
}

func TestBandLevelsOrderUrgency(t *testing.T) {
	b := Bands{Thresholds: defaultThresholds(), Weekend: WeekendKeep}
	var levels []int
	for _, left := range []time.Duration{40 * day, 20 * day, 5 * day, 5 * time.Hour, -time.Hour} {
		levels = append(levels, b.Of(t0.Add(left), t0).Level)
	}
	if want := []int{0, 1, 2, 3, 4}; !slices.Equal(levels, want) {
		t.Errorf("levels %v, want %v", levels, want)
	}
}

// obs is an observation of a file certificate expiring at notAfter; the
// serial tells certificates apart.
func obs(path, serial string, notAfter time.Time) Observation {
	return Observation{
		Location: Location{Kind: KindFile, Node: "cp-1", Path: path},
		Cert:     Cert{Serial: serial, SHA256: "sha-" + serial, NotAfter: notAfter, SubjectCN: path},
	}
}

// step is one round of an evaluator timeline and the transitions it must
// make, each written "<status> <band> [<resolution>] <key>".
type step struct {
	at      time.Time
	certs   []Observation
	unknown []string
	want    []string
}

func describe(trs []Transition) []string {
	out := []string{}
	for _, tr := range trs {
		s := tr.Status + " " + tr.Band.Name
		if tr.Resolution != "" {
			s += " " + tr.Resolution
		}
		if tr.Previous != nil {
			s += " (was " + tr.Previous.Serial + ")"
		}
		out = append(out, s+" "+tr.Key)
	}
	return out
}

func TestEvaluator(t *testing.T) {
	const key = "cp-1:file:/pki/apiserver.crt"
	old := obs("/pki/apiserver.crt", "01", t0.Add(45*day))
	renewed := obs("/pki/apiserver.crt", "02", t0.Add(45*day+365*day))
	shortRenewal := obs("/pki/apiserver.crt", "03", t0.Add(60*day))
	other := obs("/pki/front-proxy-client.crt", "09", t0.Add(3*day))
	const otherKey = "cp-1:file:/pki/front-proxy-client.crt"
	tests := []struct {
		name  string
		steps []step
	}{
		{"each band fires once, then renewal resolves", []step{
			{at: t0, certs: []Observation{old}, want: []string{}},
			{at: t0.Add(15*day + time.Hour), certs: []Observation{old}, want: []string{"firing 30d " + key}},
			{at: t0.Add(20 * day), certs: []Observation{old}, want: []string{}},
			{at: t0.Add(38*day + time.Hour), certs: []Observation{old}, want: []string{"firing 7d " + key}},
			{at: t0.Add(39 * day), certs: []Observation{old}, want: []string{}},
			{at: t0.Add(44*day + time.Hour), certs: []Observation{old}, want: []string{"firing 1d " + key}},
			{at: t0.Add(44*day + 2*time.Hour), certs: []Observation{old}, want: []string{}},
			{at: t0.Add(45 * day), certs: []Observation{old}, want: []string{"firing expired " + key}},
			{at: t0.Add(45*day + time.Hour), certs: []Observation{old}, want: []string{}},
			{at: t0.Add(46 * day), certs: []Observation{renewed}, want: []string{"resolved expired renewed (was 01) " + key}},
			{at: t0.Add(47 * day), certs: []Observation{renewed}, want: []string{}},
		}},
		{"a first look deep in a band fires that band only", []step{
			{at: t0, certs: []Observation{other}, want: []string{"firing 7d " + otherKey}},
			{at: t0.Add(2*day + time.Hour), certs: []Observation{other}, want: []string{"firing 1d " + otherKey}},
		}},
		{"a band skipped between two looks is not fired", []step{
			{at: t0.Add(15*day + time.Hour), certs: []Observation{old}, want: []string{"firing 30d " + key}},
			{at: t0.Add(45*day + time.Hour), certs: []Observation{old}, want: []string{"firing expired " + key}},
		}},
		{"a replacement still in a band fires for itself", []step{
			{at: t0.Add(39 * day), certs: []Observation{old}, want: []string{"firing 7d " + key}},
			{at: t0.Add(40 * day), certs: []Observation{shortRenewal}, want: []string{"firing 30d (was 01) " + key}},
			{at: t0.Add(41 * day), certs: []Observation{renewed}, want: []string{"resolved 30d renewed (was 03) " + key}},
		}},
		{"a firing location that is gone resolves", []step{
			{at: t0, certs: []Observation{old, other}, want: []string{"firing 7d " + otherKey}},
			{at: t0.Add(time.Hour), certs: []Observation{old}, want: []string{"resolved 7d gone " + otherKey}},
			{at: t0.Add(2 * time.Hour), certs: []Observation{old, other}, want: []string{"firing 7d " + otherKey}},
		}},
		{"an unreadable location keeps its state", []step{
			{at: t0, certs: []Observation{other}, want: []string{"firing 7d " + otherKey}},
			{at: t0.Add(time.Hour), unknown: []string{"cp-1:file:/pki/"}, want: []string{}},
			{at: t0.Add(2 * time.Hour), certs: []Observation{other}, want: []string{}},
			{at: t0.Add(3 * time.Hour), unknown: []string{"cp-1:kubeconfig:"}, want: []string{"resolved 7d gone " + otherKey}},
		}},
		{"a location that never fired goes quietly", []step{
			{at: t0, certs: []Observation{old}, want: []string{}},
			{at: t0.Add(time.Hour), want: []string{}},
		}},
		{"a location given twice counts once", []step{
			{at: t0, certs: []Observation{other, other}, want: []string{"firing 7d " + otherKey}},
		}},
		{"a clock going back fires nothing", []step{
			{at: t0.Add(2*day + time.Hour), certs: []Observation{other}, want: []string{"firing 1d " + otherKey}},
			{at: t0, certs: []Observation{other}, want: []string{}},
			{at: t0.Add(2*day + 2*time.Hour), certs: []Observation{other}, want: []string{}},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := NewEvaluator(Bands{Thresholds: defaultThresholds(), Weekend: WeekendKeep})
			for i, s := range tt.steps {
				trs := e.Observe(Round{At: s.at, Certs: s.certs, Unknown: s.unknown})
				if got := describe(trs); !slices.Equal(got, s.want) {
					t.Fatalf("step %d at %s: transitions\n  %s\nwant\n  %s", i, s.at, strings.Join(got, "\n  "), strings.Join(s.want, "\n  "))
				}
				for _, tr := range trs {
					if !tr.At.Equal(s.at) {
						t.Errorf("step %d: transition at %s, want %s", i, tr.At, s.at)
					}
				}
			}
		})
	}
}

func TestEvaluatorFiring(t *testing.T) {
	e := NewEvaluator(Bands{Thresholds: defaultThresholds()})
	e.Observe(Round{At: t0, Certs: []Observation{
		obs("/b.crt", "1", t0.Add(2*day)), obs("/a.crt", "2", t0.Add(-day)), obs("/c.crt", "3", t0.Add(90*day)),
	}})
	if got, want := e.Firing(), []string{"cp-1:file:/a.crt", "cp-1:file:/b.crt"}; !slices.Equal(got, want) {
		t.Errorf("Firing() = %v, want %v", got, want)
	}
}

func TestEventIDs(t *testing.T) {
	o := obs("/pki/apiserver.crt", "01", t0.Add(3*day))
	bands := Bands{Thresholds: defaultThresholds()}
	fire7 := Transition{Key: o.Location.Key(), Status: bus.StatusFiring, Band: bands.Of(o.Cert.NotAfter, t0), At: t0, Observation: o}
	fire7later := fire7
	fire7later.At = t0.Add(time.Hour) // the same finding, seen again later
	fire1 := fire7
	fire1.Band = bands.Of(o.Cert.NotAfter, t0.Add(2*day+time.Hour))
	renewedObs := obs("/pki/apiserver.crt", "02", t0.Add(400*day))
	resolved := Transition{Key: fire7.Key, Status: bus.StatusResolved, Band: fire1.Band, At: t0, Observation: renewedObs, Previous: &o.Cert, Resolution: ResolvedRenewed}
	gone := Transition{Key: fire7.Key, Status: bus.StatusResolved, Band: fire1.Band, At: t0, Observation: o, Resolution: ResolvedGone}

	id := func(tr Transition) string {
		t.Helper()
		ev, err := Event(tr, Component{}, bands)
		if err != nil {
			t.Fatal(err)
		}
		if err := ev.Validate(); err != nil {
			t.Fatal(err)
		}
		return ev.ID
	}
	if id(fire7) != id(fire7later) {
		t.Error("the same certificate in the same band got two ids")
	}
	ids := map[string]string{}
	for name, tr := range map[string]Transition{"7d": fire7, "1d": fire1, "renewed": resolved, "gone": gone} {
		i := id(tr)
		if prev, dup := ids[i]; dup {
			t.Errorf("%s and %s share the id %s", name, prev, i)
		}
		ids[i] = name
	}
	other := o
	other.Cert.SHA256 = "sha-other"
	fireOther := fire7
	fireOther.Observation = other
	if id(fireOther) == id(fire7) {
		t.Error("two certificates in the same band at one location share an id")
	}
}

func TestBandName(t *testing.T) {
	for d, want := range map[time.Duration]string{30 * day: "30d", 7 * day: "7d", day: "1d", 90 * day: "90d", 12 * time.Hour: "12h0m0s"} {
		if got := BandName(d); got != want {
			t.Errorf("BandName(%s) = %q, want %q", d, got, want)
		}
	}
}

func TestDaysLeft(t *testing.T) {
	for _, tt := range []struct {
		left time.Duration
		want float64
	}{{29*day + 23*time.Hour, 30}, {6*day + 12*time.Hour, 6.5}, {2 * time.Hour, 0.1}, {-36 * time.Hour, -1.5}} {
		if got := DaysLeft(t0.Add(tt.left), t0); got != tt.want {
			t.Errorf("DaysLeft(%s) = %v, want %v", tt.left, got, tt.want)
		}
	}
}
