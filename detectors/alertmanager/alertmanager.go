package alertmanager

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"time"

	gojson "github.com/goccy/go-json"
	"github.com/prometheus/alertmanager/notify/webhook"
	"github.com/prometheus/alertmanager/template"
	"github.com/prometheus/common/model"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/selfheal/healer/bus"
)

// Source is the CloudEvents source of events from this detector.
const Source = "alertmanager"

// Path is where the webhook is served.
const Path = "/webhook/alertmanager"

// Publisher stores events durably; bus.Publisher is the real one.
type Publisher interface {
	Publish(ctx context.Context, events ...*bus.Event) (bus.PublishResult, error)
}

// Detector converts Alertmanager webhooks into events.
type Detector struct {
	cfg    Config
	pub    Publisher
	log    *slog.Logger
	now    func() time.Time
	tracer trace.Tracer
}

// Option changes how the detector is built.
type Option func(*Detector)

// WithTracer makes the detector start a span for each webhook; the trace
// context goes with the events into JetStream.
func WithTracer(t trace.Tracer) Option { return func(d *Detector) { d.tracer = t } }

// New returns the detector; cfg gets its defaults applied and is validated.
func New(cfg Config, pub Publisher, log *slog.Logger, opts ...Option) (*Detector, error) {
	cfg.ApplyDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	d := &Detector{cfg: cfg, pub: pub, log: log.With("detector", "alertmanager"), now: time.Now, tracer: noop.NewTracerProvider().Tracer("")}
	for _, o := range opts {
		o(d)
	}
	return d, nil
}

// Response is the JSON body of a 200 answer.
type Response struct {
	Received   int `json:"received"`
	Stored     int `json:"stored"`
	Duplicates int `json:"duplicates"`
}

// ServeHTTP handles one webhook. Authentication is the caller's job (see
// httpauth.Bearer). It answers 200 only after every alert is in JetStream,
// 400 for a malformed body (and stores nothing), 413 for an oversize body
// and 503 when JetStream does not acknowledge, so Alertmanager retries.
func (d *Detector) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		http.Error(w, "use POST", http.StatusMethodNotAllowed)
		return
	}
	// A caller that traces (a proxy) is the parent; otherwise the trace
	// begins here.
	ctx := propagation.TraceContext{}.Extract(r.Context(), propagation.HeaderCarrier(r.Header))
	ctx, span := d.tracer.Start(ctx, "alertmanager.webhook", trace.WithSpanKind(trace.SpanKindServer))
	defer span.End()
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, d.cfg.MaxBodyBytes))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			http.Error(w, fmt.Sprintf("body larger than %d bytes", d.cfg.MaxBodyBytes), http.StatusRequestEntityTooLarge)
			return
		}
		http.Error(w, "read body: "+err.Error(), http.StatusBadRequest)
		return
	}
	// Alertmanager's own types, decoded with a faster drop-in decoder than
	// encoding/json: on this hot path decoding was a fifth of the CPU.
	var msg webhook.Message
	if err := gojson.Unmarshal(body, &msg); err != nil {
		http.Error(w, "malformed Alertmanager webhook body: "+err.Error(), http.StatusBadRequest)
		return
	}
	events, err := d.Events(&msg)
	if err != nil {
		status := http.StatusBadRequest
		if errors.Is(err, errTooManyAlerts) {
			status = http.StatusRequestEntityTooLarge
		}
		http.Error(w, err.Error(), status)
		return
	}
	span.SetAttributes(attribute.Int("healer.alerts", len(events)), attribute.String("healer.group_key", msg.GroupKey))
	res, err := d.pub.Publish(ctx, events...)
	if err != nil {
		span.SetStatus(codes.Error, err.Error())
		d.log.WarnContext(ctx, "webhook not stored; asking Alertmanager to retry", "alerts", len(events), "err", err)
		w.Header().Set("Retry-After", "5")
		http.Error(w, "event bus unavailable, retry later", http.StatusServiceUnavailable)
		return
	}
	d.log.DebugContext(ctx, "webhook stored", "group_key", msg.GroupKey, "alerts", len(events), "stored", res.Stored, "duplicates", res.Duplicates)
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(Response{Received: len(events), Stored: res.Stored, Duplicates: res.Duplicates})
}

var errTooManyAlerts = errors.New("too many alerts")

// Events validates a webhook message and maps every alert to an event. It
// fails on the first invalid alert, so a bad body stores nothing.
func (d *Detector) Events(msg *webhook.Message) ([]*bus.Event, error) {
	if msg.Version != "4" {
		return nil, fmt.Errorf("unsupported Alertmanager webhook version %q (want \"4\")", msg.Version)
	}
	if msg.Data == nil || len(msg.Alerts) == 0 {
		return nil, errors.New("webhook body has no alerts")
	}
	if len(msg.Alerts) > d.cfg.MaxAlerts {
		return nil, fmt.Errorf("%w: %d alerts in one body, at most %d", errTooManyAlerts, len(msg.Alerts), d.cfg.MaxAlerts)
	}
	events := make([]*bus.Event, 0, len(msg.Alerts))
	for i := range msg.Alerts {
		e, err := d.event(msg, &msg.Alerts[i])
		if err != nil {
			return nil, fmt.Errorf("alert %d: %w", i, err)
		}
		events = append(events, e)
	}
	return events, nil
}

// alertData is the data of an event made from an alert.
type alertData struct {
	Alertname     string            `json:"alertname,omitempty"`
	Labels        map[string]string `json:"labels"`
	Annotations   map[string]string `json:"annotations,omitempty"`
	StartsAt      time.Time         `json:"startsAt"`
	EndsAt        time.Time         `json:"endsAt,omitzero"`
	GeneratorURL  string            `json:"generatorURL,omitempty"`
	Fingerprint   string            `json:"fingerprint"`
	Receiver      string            `json:"receiver,omitempty"`
	GroupKey      string            `json:"groupKey,omitempty"`
	ExternalURL   string            `json:"externalURL,omitempty"`
	TargetMissing bool              `json:"targetMissing,omitempty"`
}

func (d *Detector) event(msg *webhook.Message, a *template.Alert) (*bus.Event, error) {
	if a.Status != bus.StatusFiring && a.Status != bus.StatusResolved {
		return nil, fmt.Errorf("status %q (want %q or %q)", a.Status, bus.StatusFiring, bus.StatusResolved)
	}
	if len(a.Labels) == 0 {
		return nil, errors.New("alert has no labels")
	}
	if a.StartsAt.IsZero() {
		return nil, errors.New("alert has no startsAt")
	}
	typ := ""
	for _, l := range d.cfg.EventTypeLabels {
		if v := a.Labels[l]; v != "" {
			typ = v
			break
		}
	}
	if typ == "" {
		return nil, fmt.Errorf("alert has none of the labels %s that name the event type", strings.Join(d.cfg.EventTypeLabels, ", "))
	}
	fp := a.Fingerprint
	if fp == "" {
		ls := make(model.LabelSet, len(a.Labels))
		for k, v := range a.Labels {
			ls[model.LabelName(k)] = model.LabelValue(v)
		}
		fp = ls.Fingerprint().String()
	}
	subject, ok := d.subject(a.Labels)
	data := alertData{
		Alertname:     a.Labels["alertname"],
		Labels:        a.Labels,
		Annotations:   a.Annotations,
		StartsAt:      a.StartsAt.UTC(),
		EndsAt:        a.EndsAt.UTC(),
		GeneratorURL:  a.GeneratorURL,
		Fingerprint:   fp,
		Receiver:      msg.Receiver,
		GroupKey:      msg.GroupKey,
		ExternalURL:   msg.ExternalURL,
		TargetMissing: !ok,
	}
	if !ok {
		// Nothing is lost: the event is stored and audited, and policy
		// sees a subject it cannot act on.
		subject = "alert/" + fp
	}
	if data.EndsAt.Year() <= 1 {
		data.EndsAt = time.Time{}
	}
	raw, err := json.Marshal(data)
	if err != nil {
		return nil, fmt.Errorf("encode alert data: %w", err)
	}
	t := a.StartsAt
	if a.Status == bus.StatusResolved && !a.EndsAt.IsZero() {
		t = a.EndsAt
	}
	e := &bus.Event{
		SpecVersion:     bus.SpecVersion,
		ID:              EventID(fp, a.StartsAt, a.Status),
		Source:          Source,
		Type:            typ,
		Subject:         subject,
		Time:            t.UTC(),
		DataContentType: "application/json",
		Status:          a.Status,
		Key:             fp,
		Data:            raw,
	}
	// Whatever passed the checks above must also make a valid event (a
	// startsAt in year 0 parses but is no time): refuse it here, with
	// a 400, rather than store an event the engine would reject.
	if err := e.Validate(); err != nil {
		return nil, err
	}
	return e, nil
}

func (d *Detector) subject(labels template.KV) (string, bool) {
	for _, rule := range d.cfg.Targets {
		v := strings.TrimSpace(labels[rule.Label])
		if v == "" {
			continue
		}
		if rule.StripPort {
			if host, _, err := net.SplitHostPort(v); err == nil {
				v = host
			}
		}
		if rule.Kind == "" {
			if kind, name, ok := strings.Cut(v, "/"); ok && kind != "" && name != "" {
				return v, true
			}
			continue
		}
		return rule.Kind + "/" + v, true
	}
	return "", false
}

// EventID is the id of the event for one alert state: the same alert
// (fingerprint) starting at the same time with the same status always gets
// the same id, however often and by however many Alertmanagers it is sent.
func EventID(fingerprint string, startsAt time.Time, status string) string {
	h := sha256.New()
	h.Write([]byte(fingerprint))
	h.Write([]byte{0})
	h.Write([]byte(startsAt.UTC().Format(time.RFC3339Nano)))
	h.Write([]byte{0})
	h.Write([]byte(status))
	return "am-" + hex.EncodeToString(h.Sum(nil)[:16])
}
