package logpipeline

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/selfheal/healer/bus"
)

// recordingPublisher keeps the events the detector published; the first
// fail calls fail.
type recordingPublisher struct {
	mu     sync.Mutex
	fail   int
	calls  int
	events []*bus.Event
}

func (p *recordingPublisher) Publish(_ context.Context, events ...*bus.Event) (bus.PublishResult, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.calls++
	if p.calls <= p.fail {
		return bus.PublishResult{}, fmt.Errorf("%w: no ack", bus.ErrUnavailable)
	}
	p.events = append(p.events, events...)
	return bus.PublishResult{Stored: len(events)}, nil
}

func (p *recordingPublisher) snapshot() []*bus.Event {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]*bus.Event(nil), p.events...)
}

// syncBuffer is a bytes.Buffer safe for the detector's goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// count returns how many log records have the message msg.
func (s *syncBuffer) count(msg string) int {
	n := 0
	for line := range strings.SplitSeq(s.String(), "\n") {
		var rec struct {
			Msg string `json:"msg"`
		}
		if json.Unmarshal([]byte(line), &rec) == nil && rec.Msg == msg {
			n++
		}
	}
	return n
}

// harness runs a detector whose measurements happen when the test says,
// at the times it gives.
type harness struct {
	t      *testing.T
	pub    *recordingPublisher
	logs   *syncBuffer
	ticks  chan time.Time
	polled chan struct{}
	cancel context.CancelFunc
	done   chan error
}

// start runs a detector on cfg; its first measurement is at first.
func start(t *testing.T, cfg Config, pub *recordingPublisher, first time.Time) *harness {
	t.Helper()
	h := &harness{t: t, pub: pub, logs: &syncBuffer{}, ticks: make(chan time.Time), polled: make(chan struct{}), done: make(chan error, 1)}
	d, err := New(cfg, pub, slog.New(slog.NewJSONHandler(h.logs, &slog.HandlerOptions{Level: slog.LevelDebug})))
	if err != nil {
		t.Fatal(err)
	}
	d.now = func() time.Time { return first }
	d.ticker = func(time.Duration) (<-chan time.Time, func()) { return h.ticks, func() {} }
	d.afterPoll = func() { h.polled <- struct{}{} }
	ctx, cancel := context.WithCancel(t.Context())
	h.cancel = cancel
	go func() { h.done <- d.Run(ctx) }()
	t.Cleanup(h.stop)
	h.wait()
	return h
}

func (h *harness) wait() {
	h.t.Helper()
	select {
	case <-h.polled:
	case <-time.After(30 * time.Second):
		h.t.Fatal("measurement did not finish")
	}
}

// at measures at time now and waits until the measurement is done.
func (h *harness) at(now time.Time) {
	h.t.Helper()
	h.ticks <- now
	h.wait()
}

func (h *harness) stop() {
	h.cancel()
	for {
		select {
		case err := <-h.done:
			if err != nil {
				h.t.Errorf("Run() = %v", err)
			}
			h.done <- nil
			return
		case <-h.polled:
		}
	}
}

// logFile writes a shipped file of size bytes, last written at mtime.
func logFile(t *testing.T, path string, size int, mtime time.Time) {
	t.Helper()
	if err := os.WriteFile(path, bytes.Repeat([]byte("x"), size), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(path, mtime, mtime); err != nil {
		t.Fatal(err)
	}
}

// shipped appends a set operation to the registry log of dir, as filebeat
// does when the output acknowledged path up to offset.
func shipped(t *testing.T, dir string, id int, path string, offset int64, at time.Time) {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	st := fi.Sys().(*syscall.Stat_t)
	key := fmt.Sprintf("filebeat::logs::native::%d-%d", st.Ino, st.Dev)
	v := map[string]any{
		"source": path, "offset": offset, "ttl": -1, "type": "log", "identifier_name": "native",
		"timestamp":   []uint64{0xffff<<32 | uint64(at.Nanosecond()), uint64(at.Unix())},
		"FileStateOS": map[string]any{"inode": st.Ino, "device": st.Dev},
	}
	op, _ := json.Marshal(map[string]any{"op": "set", "id": id})
	body, _ := json.Marshal(map[string]any{"k": key, "v": v})
	f, err := os.OpenFile(filepath.Join(dir, "log.json"), os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := fmt.Fprintf(f, "%s\n%s\n", op, body); err != nil {
		t.Fatal(err)
	}
}

func decode[T any](t *testing.T, e *bus.Event) T {
	t.Helper()
	var v T
	if err := json.Unmarshal(e.Data, &v); err != nil {
		t.Fatal(err)
	}
	return v
}

func checkEvent(t *testing.T, e *bus.Event, typ, subject, key, status string, at time.Time) {
	t.Helper()
	if err := e.Validate(); err != nil {
		t.Error(err)
	}
	if e.Source != EventSource || e.Type != typ || e.Subject != subject || e.Key != key || e.Status != status || !e.Time.Equal(at) {
		t.Errorf("event %s %s %s key %s %s at %s, want %s %s %s key %s %s at %s",
			e.Source, e.Type, e.Subject, e.Key, e.Status, e.Time, EventSource, typ, subject, key, status, at)
	}
}

func TestDetectorShipperLag(t *testing.T) {
	dir := t.TempDir()
	reg := filepath.Join(dir, "registry", "filebeat")
	logs := filepath.Join(dir, "log")
	for _, d := range []string{reg, logs} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	api := filepath.Join(logs, "api.log")
	logFile(t, api, 100, t0)
	shipped(t, reg, 1, api, 100, t0)
	cfg := Config{Node: "worker-3", Shippers: []Shipper{{
		Name: "filebeat", Registry: reg,
		Files: []FileRule{{Glob: filepath.Join(logs, "*.log"), MaxBytes: 1000, MaxAge: time.Hour}},
	}}}
	pub := &recordingPublisher{fail: 2} // the bus is down at first: the firing event is retried
	h := start(t, cfg, pub, t0)

	// filebeat stops shipping; the application writes 5000 bytes.
	logFile(t, api, 5100, t0.Add(time.Minute))
	h.at(t0.Add(time.Minute))
	h.at(t0.Add(5 * time.Minute))
	if evs := pub.snapshot(); len(evs) != 0 {
		t.Fatalf("events before the lag lasted 5m: %v", evs)
	}
	h.at(t0.Add(6 * time.Minute))
	h.at(t0.Add(7 * time.Minute)) // still lagging: no second event
	evs := pub.snapshot()
	if len(evs) != 1 {
		t.Fatalf("got %d events after 6m of lag, want 1 firing", len(evs))
	}
	key := "worker-3/filebeat:" + api
	checkEvent(t, evs[0], TypeShipperLag, "node/worker-3", key, bus.StatusFiring, t0.Add(6*time.Minute))
	d := decode[shipperLagData](t, evs[0])
	want := shipperLagData{
		Shipper: "filebeat", Component: "filebeat", Registry: reg, File: api, State: FileTracked,
		Offset: 100, Size: 5100, LagBytes: 5000, LagAge: "5m0s", LagAgeSeconds: 300,
		Threshold: threshold{MaxBytes: 1000, MaxAge: "1h0m0s", For: "5m0s"}, Since: t0.Add(time.Minute),
	}
	if d.OffsetUpdated == nil || !d.OffsetUpdated.Equal(t0) {
		t.Errorf("offset_updated %v, want %s", d.OffsetUpdated, t0)
	}
	d.OffsetUpdated = nil
	if fmt.Sprint(d) != fmt.Sprint(want) {
		t.Errorf("data\n%+v\nwant\n%+v", d, want)
	}
	pub.mu.Lock()
	calls := pub.calls
	pub.mu.Unlock()
	if retries := h.logs.count("publish event failed; retrying"); calls != 3 || retries != 2 {
		t.Errorf("%d publish calls, %d retries logged; want 3 and 2", calls, retries)
	}

	// filebeat is restarted and catches up.
	shipped(t, reg, 2, api, 5100, t0.Add(8*time.Minute))
	h.at(t0.Add(8 * time.Minute))
	evs = pub.snapshot()
	if len(evs) != 2 {
		t.Fatalf("got %d events after catching up, want firing and resolved", len(evs))
	}
	checkEvent(t, evs[1], TypeShipperLag, "node/worker-3", key, bus.StatusResolved, t0.Add(8*time.Minute))
	if r := decode[shipperLagData](t, evs[1]); r.LagBytes != 0 || r.Offset != 5100 || !r.Since.Equal(t0.Add(time.Minute)) {
		t.Errorf("resolved data %+v", r)
	}
	if evs[0].ID == evs[1].ID || evs[0].ID != EventID(TypeShipperLag, key, bus.StatusFiring, t0.Add(time.Minute)) {
		t.Errorf("ids %s %s: want distinct ids derived from the excursion", evs[0].ID, evs[1].ID)
	}
}

func TestDetectorShipperRotation(t *testing.T) {
	dir := t.TempDir()
	reg := filepath.Join(dir, "registry")
	if err := os.MkdirAll(reg, 0o700); err != nil {
		t.Fatal(err)
	}
	app := filepath.Join(dir, "app.log")
	logFile(t, app, 2000, t0)
	shipped(t, reg, 1, app, 2000, t0)
	cfg := Config{Node: "worker-3", Shippers: []Shipper{{
		Name: "filebeat", Registry: reg, Component: "filebeat-oss",
		Files: []FileRule{{Glob: filepath.Join(dir, "*.log"), MaxBytes: 500, For: durationPtr(2 * time.Minute)}},
	}}}
	pub := &recordingPublisher{}
	h := start(t, cfg, pub, t0)
	// logrotate renames app.log out of the glob and creates a new one,
	// which filebeat (stuck) never opens.
	if err := os.Rename(app, app+".1"); err != nil {
		t.Fatal(err)
	}
	logFile(t, app, 800, t0.Add(time.Minute))
	h.at(t0.Add(time.Minute))
	h.at(t0.Add(3 * time.Minute))
	evs := pub.snapshot()
	if len(evs) != 1 {
		t.Fatalf("got %d events, want one for the new, unshipped file", len(evs))
	}
	d := decode[shipperLagData](t, evs[0])
	if d.State != FileRotated || d.LagBytes != 800 || d.Offset != 0 || d.Component != "filebeat-oss" {
		t.Errorf("data %+v, want a rotated file with all 800 bytes unshipped", d)
	}
	// The file is deleted: the problem is gone with it.
	if err := os.Remove(app); err != nil {
		t.Fatal(err)
	}
	h.at(t0.Add(4 * time.Minute))
	evs = pub.snapshot()
	if len(evs) != 2 || evs[1].Status != bus.StatusResolved || !decode[shipperLagData](t, evs[1]).Gone {
		t.Fatalf("events %v, want a resolved event for the deleted file", evs)
	}
}

func TestDetectorRegistryUnreadable(t *testing.T) {
	dir := t.TempDir()
	reg := filepath.Join(dir, "registry")
	logFile(t, filepath.Join(dir, "api.log"), 1<<20, t0.Add(-time.Hour))
	cfg := Config{Node: "worker-3", Shippers: []Shipper{{
		Name: "filebeat", Registry: reg, UnreadableFor: durationPtr(2 * time.Minute),
		Files: []FileRule{{Glob: filepath.Join(dir, "*.log"), MaxBytes: 10, For: durationPtr(0)}},
	}}}
	pub := &recordingPublisher{}
	h := start(t, cfg, pub, t0)
	h.at(t0.Add(time.Minute))
	if evs := pub.snapshot(); len(evs) != 0 {
		t.Fatalf("events %v: an unreadable registry is no lag", evs)
	}
	h.at(t0.Add(2 * time.Minute))
	h.at(t0.Add(3 * time.Minute))
	evs := pub.snapshot()
	if len(evs) != 1 {
		t.Fatalf("got %d events, want one LogShipperRegistryUnreadable", len(evs))
	}
	checkEvent(t, evs[0], TypeRegistryUnreadable, "node/worker-3", "worker-3/filebeat:registry", bus.StatusFiring, t0.Add(2*time.Minute))
	if d := decode[registryData](t, evs[0]); !strings.Contains(d.Error, "no such file or directory") || d.Registry != reg || d.For != "2m0s" {
		t.Errorf("data %+v", d)
	}
	if n := h.logs.count("shipper registry unreadable; lag not measured"); n != 1 {
		t.Errorf("the failing read was logged %d times over 4 measurements, want once", n)
	}

	// The registry appears and says the file is shipped.
	if err := os.MkdirAll(reg, 0o700); err != nil {
		t.Fatal(err)
	}
	shipped(t, reg, 1, filepath.Join(dir, "api.log"), 1<<20, t0)
	h.at(t0.Add(4 * time.Minute))
	evs = pub.snapshot()
	if len(evs) != 2 {
		t.Fatalf("got %d events, want the registry problem resolved and no lag", len(evs))
	}
	checkEvent(t, evs[1], TypeRegistryUnreadable, "node/worker-3", "worker-3/filebeat:registry", bus.StatusResolved, t0.Add(4*time.Minute))
	if h.logs.count("read again") != 1 {
		t.Errorf("recovery not logged")
	}
}

func TestDetectorKafkaLag(t *testing.T) {
	c := newCluster(t)
	adm := newAdmin(t, c)
	produce(t, c, "logs", 0, 40)
	produce(t, c, "logs", 1, 10)
	commit(t, adm, "logstash", "logs", map[int32]int64{0: 10, 1: 10})
	cfg := Config{Kafka: &Kafka{
		Brokers: c.ListenAddrs(),
		Groups: []GroupRule{
			{Group: "logstash", Topics: []string{"logs"}, MaxLag: 20, For: durationPtr(time.Minute), Node: "infra-1"},
			{Group: "logstash-archive", MaxLag: 1},
		},
	}}
	pub := &recordingPublisher{}
	h := start(t, cfg, pub, t0) // lag 30: over
	h.at(t0.Add(30 * time.Second))
	if evs := pub.snapshot(); len(evs) != 0 {
		t.Fatalf("events %v before the lag lasted 1m", evs)
	}
	h.at(t0.Add(time.Minute))
	evs := pub.snapshot()
	if len(evs) != 1 {
		t.Fatalf("got %d events, want one KafkaConsumerLag", len(evs))
	}
	checkEvent(t, evs[0], TypeKafkaLag, "node/infra-1", "logpipeline/logstash", bus.StatusFiring, t0.Add(time.Minute))
	d := decode[kafkaLagData](t, evs[0])
	if d.Group != "logstash" || d.Component != "logstash" || d.Node != "infra-1" || d.TotalLag != 30 || d.State != "Empty" ||
		d.Threshold != (threshold{MaxLag: 20, For: "1m0s"}) || !d.Since.Equal(t0) {
		t.Errorf("data %+v", d)
	}
	// partition 2 has no records and no commit: it is listed with lag 0
	if fmt.Sprint(d.Partitions) != "[{logs 0 10 40 30} {logs 1 10 10 0} {logs 2 -1 0 0}]" || fmt.Sprint(d.Topics) != "[{logs 30 3}]" {
		t.Errorf("partitions %v topics %v", d.Partitions, d.Topics)
	}
	if n := h.logs.count("consumer group lag not measured"); n != 1 || !strings.Contains(h.logs.String(), "logstash-archive") {
		t.Errorf("the unknown group was logged %d times, want once", n)
	}

	// logstash comes back and catches up.
	commit(t, adm, "logstash", "logs", map[int32]int64{0: 35})
	h.at(t0.Add(90 * time.Second))
	evs = pub.snapshot()
	if len(evs) != 2 {
		t.Fatalf("got %d events, want firing and resolved", len(evs))
	}
	checkEvent(t, evs[1], TypeKafkaLag, "node/infra-1", "logpipeline/logstash", bus.StatusResolved, t0.Add(90*time.Second))
	if d := decode[kafkaLagData](t, evs[1]); d.TotalLag != 5 {
		t.Errorf("resolved with lag %d, want 5", d.TotalLag)
	}
}

func TestDetectorKafkaUnreachable(t *testing.T) {
	c := newCluster(t, kfakeSASL("healer", "the-real-password")...)
	dir := t.TempDir()
	pw := filepath.Join(dir, "password")
	const wrong = "hunter2-wrong-password"
	if err := os.WriteFile(pw, []byte(wrong), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := Config{Kafka: &Kafka{
		Brokers: c.ListenAddrs(), RequestTimeout: 3 * time.Second,
		SASL:   &SASL{Mechanism: SASLPlain, Username: "healer", PasswordFile: pw},
		Groups: []GroupRule{{Group: "logstash", MaxLag: 1, For: durationPtr(0)}},
	}}
	pub := &recordingPublisher{}
	h := start(t, cfg, pub, t0)
	h.at(t0.Add(time.Minute))
	if evs := pub.snapshot(); len(evs) != 0 {
		t.Fatalf("events %v: an unreachable cluster is no lag", evs)
	}
	if n := h.logs.count("kafka consumer lag not measured"); n != 1 {
		t.Errorf("the failure was logged %d times, want once:\n%s", n, h.logs)
	}
	if strings.Contains(h.logs.String(), wrong) {
		t.Errorf("the SASL password is in the logs:\n%s", h.logs)
	}
}

func TestNew(t *testing.T) {
	log := slog.New(slog.DiscardHandler)
	if _, err := New(Config{}, &recordingPublisher{}, log); err == nil || !strings.Contains(err.Error(), "nothing to measure") {
		t.Errorf("New(empty config) = %v", err)
	}
	cfg := Config{Kafka: &Kafka{Brokers: []string{"k:9092"}, Groups: []GroupRule{{Group: "g", MaxLag: 1}}}}
	if _, err := New(cfg, nil, log); err == nil {
		t.Errorf("New without a publisher succeeded")
	}
	cfg.Kafka.SASL = &SASL{Mechanism: SASLPlain, Username: "u", PasswordFile: filepath.Join(t.TempDir(), "none")}
	if _, err := New(cfg, &recordingPublisher{}, log); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("New with a missing password file = %v", err)
	}
}
