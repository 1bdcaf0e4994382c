package runtimepanic

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os/exec"
	"sync"
	"time"

	"github.com/selfheal/healer/bus"
)

// EventSource is the CloudEvents source of events from this detector.
const EventSource = "runtimepanic"

// Event types.
const (
	TypePanic      = "RuntimePanic"
	TypeFatalError = "RuntimeFatalError"
	TypeCrashLoop  = "RuntimeCrashLoop"
)

// Publisher stores events durably; bus.Publisher is the real one.
type Publisher interface {
	Publish(ctx context.Context, events ...*bus.Event) (bus.PublishResult, error)
}

var _ Publisher = (*bus.Publisher)(nil)

// JournalFunc starts following the journal of unit and returns the output
// of `journalctl -o json -f -u <unit> --since now`, one JSON object a line.
// Closing the reader stops following.
type JournalFunc func(ctx context.Context, unit string) (io.ReadCloser, error)

// Option changes how a Detector is built.
type Option func(*Detector)

// WithJournal replaces running journalctl, for tests and for other ways
// to read the journal.
func WithJournal(fn JournalFunc) Option { return func(d *Detector) { d.journal = fn } }

// Detector follows the configured logs and publishes an event for each
// crash report and crash loop it finds.
type Detector struct {
	cfg     Config
	pub     Publisher
	log     *slog.Logger
	journal JournalFunc
	now     func() time.Time
	poll    time.Duration
}

// New returns the detector; cfg gets its defaults applied and is validated.
func New(cfg Config, pub Publisher, log *slog.Logger, opts ...Option) (*Detector, error) {
	cfg.ApplyDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if pub == nil || log == nil {
		return nil, errors.New("runtimepanic: a publisher and a logger are required")
	}
	d := &Detector{
		cfg:  cfg,
		pub:  pub,
		log:  log.With("detector", EventSource, "node", cfg.Node),
		now:  time.Now,
		poll: 250 * time.Millisecond,
	}
	d.journal = d.runJournalctl
	for _, o := range opts {
		o(d)
	}
	return d, nil
}

// Run follows every source until ctx ends. It returns nil then; a source
// that cannot be read is retried, not fatal.
func (d *Detector) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	for _, hc := range d.cfg.HealthChecks {
		log := d.log.With("health_check", hc.Name)
		wg.Go(func() { d.watchHealth(ctx, hc, log) })
	}
	for _, src := range d.cfg.Sources {
		log := d.log.With("source", src.Name)
		wg.Go(func() {
			if src.Unit != "" {
				d.followJournal(ctx, src, log)
			} else {
				d.followFile(ctx, src, log)
			}
		})
	}
	wg.Wait()
	return nil
}

// runJournalctl runs journalctl for unit; the process ends with ctx or
// when the returned reader is closed.
func (d *Detector) runJournalctl(ctx context.Context, unit string) (io.ReadCloser, error) {
	//nolint:gosec // the binary and unit come from the operator's configuration
	cmd := exec.CommandContext(ctx, d.cfg.JournalctlPath, "-o", "json", "-f", "-u", unit, "--since", "now")
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, fmt.Errorf("journalctl for unit %s: %w", unit, err)
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s for unit %s: %w", d.cfg.JournalctlPath, unit, err)
	}
	return &procReader{ReadCloser: out, cmd: cmd}, nil
}

type procReader struct {
	io.ReadCloser
	cmd *exec.Cmd
}

func (p *procReader) Close() error {
	_ = p.cmd.Process.Kill()
	err := p.ReadCloser.Close()
	_ = p.cmd.Wait() // killed on purpose: its exit status says nothing
	return err
}

// eventData is the data of every event of this detector.
type eventData struct {
	Source    string   `json:"source"`
	Unit      string   `json:"unit,omitempty"`
	File      string   `json:"file,omitempty"`
	Kind      Kind     `json:"kind"`
	Message   string   `json:"message"`
	Goroutine string   `json:"goroutine,omitempty"`
	Signal    string   `json:"signal,omitempty"`
	Stack     []string `json:"stack,omitempty"`
	Lines     int      `json:"lines,omitempty"`
	Restarts  int      `json:"restarts,omitempty"`
	Window    string   `json:"window,omitempty"`
}

// EventID is the id of the event for a finding: the same node, source,
// kind, first line and timestamp always give the same id.
func EventID(node, source string, kind Kind, firstLine string, t time.Time) string {
	h := sha256.New()
	for _, s := range []string{node, source, string(kind), firstLine, t.UTC().Format(time.RFC3339Nano)} {
		h.Write([]byte(s))
		h.Write([]byte{0})
	}
	return "rp-" + hex.EncodeToString(h.Sum(nil)[:16])
}

// Event returns the event reporting f, found in src on node.
func Event(node string, src Source, f Finding) (*bus.Event, error) {
	typ := TypePanic
	switch f.Kind {
	case KindFatal, KindSIGSEGV:
		typ = TypeFatalError
	case KindCrashLoop:
		typ = TypeCrashLoop
	}
	data := eventData{
		Source: src.Name, Unit: src.Unit, File: src.File, Kind: f.Kind, Message: f.Message,
		Goroutine: f.Goroutine, Signal: f.Signal, Stack: f.Stack, Lines: f.Lines, Restarts: f.Restarts,
	}
	if f.Window > 0 {
		data.Window = f.Window.String()
	}
	raw, err := json.Marshal(data)
	if err != nil {
		return nil, fmt.Errorf("encode %s event from source %s: %w", f.Kind, src.Name, err)
	}
	return &bus.Event{
		SpecVersion:     bus.SpecVersion,
		ID:              EventID(node, src.Name, f.Kind, f.FirstLine, f.Time),
		Source:          EventSource,
		Type:            typ,
		Subject:         "node/" + node,
		Time:            f.Time.UTC(),
		DataContentType: "application/json",
		Status:          bus.StatusFiring,
		Key:             node + "/" + src.Name,
		Data:            raw,
	}, nil
}

// report publishes the findings, retrying each with backoff until it is
// acknowledged or ctx ends.
func (d *Detector) report(ctx context.Context, src Source, log *slog.Logger, findings []Finding) {
	for _, f := range findings {
		ev, err := Event(d.cfg.Node, src, f)
		if err != nil {
			log.ErrorContext(ctx, "finding not reported", "kind", f.Kind, "err", err)
			continue
		}
		log.WarnContext(ctx, "runtime crash found", "kind", f.Kind, "message", f.Message,
			"event_type", ev.Type, "event_id", ev.ID, "lines", f.Lines)
		if !d.publish(ctx, log, ev) {
			return
		}
	}
}

// publish stores ev until it is acknowledged; false when ctx ended first.
func (d *Detector) publish(ctx context.Context, log *slog.Logger, ev *bus.Event) bool {
	return bus.PublishUntilStored(ctx, d.pub, ev, d.cfg.PublishTimeout, log)
}
