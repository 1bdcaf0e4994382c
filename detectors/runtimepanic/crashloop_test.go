package runtimepanic

import (
	"slices"
	"testing"
	"time"
)

func TestRestartTracker(t *testing.T) {
	t0 := time.Date(2026, 11, 22, 0, 0, 0, 0, time.UTC)
	sched := func(n string) string {
		return "docker.service: Scheduled restart job, restart counter is at " + n + "."
	}
	const exited = "docker.service: Main process exited, code=exited, status=2/INVALIDARGUMENT"
	const started = "Started docker.service - Docker Application Container Engine."
	type msg struct {
		unit string // the journal's UNIT field
		at   time.Duration
		text string
	}
	tests := []struct {
		name string
		msgs []msg
		want []int // indexes of the messages that complete a crash loop
	}{
		{"three scheduled restarts in the window", []msg{
			{"docker.service", 0, sched("1")}, {"docker.service", time.Minute, sched("2")}, {"docker.service", 2 * time.Minute, sched("3")},
		}, []int{2}},
		{"restarts spread wider than the window", []msg{
			{"", 0, sched("1")}, {"", 6 * time.Minute, sched("2")}, {"", 12 * time.Minute, sched("3")},
		}, nil},
		{"exit then start counts once, with or without a scheduled restart", []msg{
			{"docker.service", 0, exited}, {"docker.service", time.Second, sched("1")}, {"docker.service", 2 * time.Second, started},
			{"docker.service", 10 * time.Second, exited}, {"docker.service", 11 * time.Second, started},
			{"docker.service", 20 * time.Second, exited}, {"docker.service", 21 * time.Second, started},
		}, []int{6}},
		{"start without a preceding exit is not a restart", []msg{
			{"docker.service", 0, started}, {"docker.service", time.Second, started}, {"docker.service", 2 * time.Second, started},
		}, nil},
		{"another unit's restarts do not count", []msg{
			{"containerd.service", 0, "containerd.service: Scheduled restart job, restart counter is at 1."},
			{"", time.Second, "containerd.service: Scheduled restart job, restart counter is at 2."},
			{"containerd.service", 2 * time.Second, "containerd.service: Scheduled restart job, restart counter is at 3."},
		}, nil},
		{"counting starts again after a crash loop", []msg{
			{"", 0, sched("1")}, {"", time.Second, sched("2")}, {"", 2 * time.Second, sched("3")},
			{"", 3 * time.Second, sched("4")}, {"", 4 * time.Second, sched("5")}, {"", 5 * time.Second, sched("6")},
		}, []int{2, 5}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rt := NewRestartTracker("docker.service", 3, 10*time.Minute)
			var got []int
			for i, m := range tt.msgs {
				l := Line{Time: t0.Add(m.at), Text: m.text}
				if f := rt.Observe(m.unit, l); f != nil {
					got = append(got, i)
					if f.Kind != KindCrashLoop || f.Restarts != 3 || f.Window != 10*time.Minute || f.Unit != "docker.service" ||
						f.FirstLine != m.text || !f.Time.Equal(l.Time) {
						t.Errorf("finding %+v does not describe message %d", f, i)
					}
				}
			}
			if !slices.Equal(got, tt.want) {
				t.Fatalf("crash loops at messages %v, want %v", got, tt.want)
			}
		})
	}
}
