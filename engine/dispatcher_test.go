package engine

import (
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// fakeMsg is a message the dispatcher can queue: it only reads the subject.
type fakeMsg struct {
	jetstream.Msg
	subject string
	n       int
}

func (m *fakeMsg) Subject() string { return m.subject }

func TestDispatcherOrderConcurrencyAndGoroutines(t *testing.T) {
	const workers, subjects, perSubject = 3, 20, 5
	d := newDispatcher(workers)
	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		started int
		running int
		most    int
		order   = map[string][]int{}
		gate    = make(chan struct{})
	)
	handle := func(m jetstream.Msg) {
		<-gate // everything is queued before anything finishes
		fm := m.(*fakeMsg)
		mu.Lock()
		running++
		most = max(most, running)
		order[fm.subject] = append(order[fm.subject], fm.n)
		mu.Unlock()
		time.Sleep(time.Millisecond)
		mu.Lock()
		running--
		mu.Unlock()
	}
	d.start = func(subject string) {
		started++ // under d.mu
		wg.Go(func() { d.work(subject, handle) })
	}
	for n := range perSubject {
		for s := range subjects {
			d.enqueue(&fakeMsg{subject: fmt.Sprintf("healer.events.s%d", s), n: n})
		}
	}
	close(gate)
	wg.Wait()

	if most != workers {
		t.Errorf("at most %d events ran at once, want %d", most, workers)
	}
	if started != workers {
		t.Errorf("%d goroutines started for %d subjects, want one per worker (%d)", started, subjects, workers)
	}
	for s := range subjects {
		if got := order[fmt.Sprintf("healer.events.s%d", s)]; !slices.Equal(got, []int{0, 1, 2, 3, 4}) {
			t.Errorf("subject s%d handled in order %v", s, got)
		}
	}
	if len(d.inHand) != 0 || len(d.queues) != 0 || d.busy != 0 {
		t.Errorf("left %d in hand, %d queues, %d slots taken", len(d.inHand), len(d.queues), d.busy)
	}
}

func TestDispatcherYieldLetsOthersRun(t *testing.T) {
	d := newDispatcher(1)
	var wg sync.WaitGroup
	ran := make(chan string, 10)
	release := make(chan struct{})
	handle := func(m jetstream.Msg) {
		if m.Subject() == "waits" {
			r := &run{delivery: delivery{worker: d}}
			reacquire := r.yieldSlot() // waiting for people, like an approval
			<-release
			reacquire()
		}
		ran <- m.Subject()
	}
	d.start = func(subject string) { wg.Go(func() { d.work(subject, handle) }) }
	d.enqueue(&fakeMsg{subject: "waits"})
	d.enqueue(&fakeMsg{subject: "other-1"})
	d.enqueue(&fakeMsg{subject: "other-2"})
	for _, want := range []string{"other-1", "other-2"} {
		select {
		case got := <-ran:
			if got != want {
				t.Fatalf("ran %s, want %s", got, want)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("%s did not run while the only worker's event waited for people", want)
		}
	}
	close(release)
	if got := <-ran; got != "waits" {
		t.Fatalf("ran %s, want the waiting event to finish", got)
	}
	wg.Wait()
	if d.busy != 0 || d.reacquiring != 0 {
		t.Errorf("left %d slots taken, %d reacquiring", d.busy, d.reacquiring)
	}
}
