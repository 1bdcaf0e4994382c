package logpipeline

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestEvaluator(t *testing.T) {
	const forDur = 5 * time.Minute
	type round struct {
		at       time.Duration // since t0
		readings []Reading[int]
		want     []string // "key status since value [gone]"
	}
	over := func(key string, v int) Reading[int] { return Reading[int]{Key: key, Over: true, For: forDur, Value: v} }
	under := func(key string, v int) Reading[int] { return Reading[int]{Key: key, For: forDur, Value: v} }
	unknown := func(key string) Reading[int] { return Reading[int]{Key: key, Unknown: true, For: forDur} }
	rs := func(r ...Reading[int]) []Reading[int] { return r }
	tests := []struct {
		name   string
		rounds []round
	}{
		{"fires once after staying over for the duration, then resolves", []round{
			{0, rs(under("a", 1)), nil},
			{time.Minute, rs(over("a", 10)), nil},
			{5 * time.Minute, rs(over("a", 11)), nil}, // 4m over
			{6 * time.Minute, rs(over("a", 12)), []string{"a firing 1m0s 12"}},
			{7 * time.Minute, rs(over("a", 13)), nil},
			{8 * time.Minute, rs(under("a", 2)), []string{"a resolved 1m0s 2"}},
			{9 * time.Minute, rs(under("a", 2)), nil},
		}},
		{"a dip under the threshold starts the wait again", []round{
			{0, rs(over("a", 10)), nil},
			{4 * time.Minute, rs(under("a", 1)), nil},
			{5 * time.Minute, rs(over("a", 10)), nil},
			{9 * time.Minute, rs(over("a", 10)), nil},
			{10 * time.Minute, rs(over("a", 10)), []string{"a firing 5m0s 10"}},
		}},
		{"for zero fires at the first reading over", []round{
			{0, rs(Reading[int]{Key: "a", Over: true, Value: 7}), []string{"a firing 0s 7"}},
			{time.Minute, rs(Reading[int]{Key: "a", Over: true, Value: 8}), nil},
		}},
		{"an unknown reading keeps a pending instance pending", []round{
			{0, rs(over("a", 10)), nil},
			{3 * time.Minute, rs(unknown("a")), nil},
			{5 * time.Minute, rs(over("a", 10)), []string{"a firing 0s 10"}},
		}},
		{"an unknown reading keeps a firing instance firing", []round{
			{0, rs(over("a", 10)), nil},
			{5 * time.Minute, rs(over("a", 10)), []string{"a firing 0s 10"}},
			{6 * time.Minute, rs(unknown("a")), nil},
			{7 * time.Minute, rs(over("a", 10)), nil},
			{8 * time.Minute, rs(under("a", 0)), []string{"a resolved 0s 0"}},
		}},
		{"an instance that is gone resolves with its last value, or is forgotten", []round{
			{0, rs(over("a", 10), over("b", 20)), nil},
			{5 * time.Minute, rs(over("a", 11), over("b", 21)), []string{"a firing 0s 11", "b firing 0s 21"}},
			{6 * time.Minute, rs(over("c", 30)), []string{"a resolved 0s 11 gone", "b resolved 0s 21 gone"}},
			{7 * time.Minute, rs(), nil}, // c was pending: forgotten
			{8 * time.Minute, rs(over("c", 30)), nil},
			{12 * time.Minute, rs(over("c", 30)), nil}, // 4m since it came back
		}},
		{"instances are independent", []round{
			{0, rs(over("a", 1), under("b", 0)), nil},
			{2 * time.Minute, rs(over("a", 1), over("b", 1)), nil},
			{5 * time.Minute, rs(over("a", 1), over("b", 1)), []string{"a firing 0s 1"}},
			{7 * time.Minute, rs(under("a", 0), over("b", 1)), []string{"a resolved 0s 0", "b firing 2m0s 1"}},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := NewEvaluator[int]()
			for i, r := range tt.rounds {
				now := t0.Add(r.at)
				var got []string
				for _, tr := range e.Observe(now, r.readings) {
					if !tr.At.Equal(now) {
						t.Errorf("round %d: transition at %s, want %s", i, tr.At, now)
					}
					s := fmt.Sprintf("%s %s %s %d", tr.Key, tr.Status, tr.Since.Sub(t0), tr.Value)
					if tr.Gone {
						s += " gone"
					}
					got = append(got, s)
				}
				if !slices.Equal(got, r.want) {
					t.Fatalf("round %d at %s: transitions %q, want %q", i, r.at, got, r.want)
				}
			}
		})
	}
}

func TestEvaluatorFiring(t *testing.T) {
	e := NewEvaluator[string]()
	e.Observe(t0, []Reading[string]{{Key: "b", Over: true}, {Key: "a", Over: true}, {Key: "c", Over: true, For: time.Hour}})
	if got := strings.Join(e.Firing(), ","); got != "a,b" {
		t.Errorf("Firing() = %s, want a,b", got)
	}
}
