package engine

import (
	"context"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/metric/noop"
)

// Metrics are the engine's OpenTelemetry instruments.
type Metrics struct {
	events     metric.Int64Counter
	decisions  metric.Int64Counter
	latency    metric.Float64Histogram
	suppressed metric.Int64Counter
	actions    metric.Int64Counter
	handled    metric.Float64Histogram
	slotWait   metric.Int64UpDownCounter
	panics     metric.Int64Counter
	redrives   metric.Int64Counter
}

// NewMetrics creates the instruments on meter.
func NewMetrics(meter metric.Meter) (*Metrics, error) {
	var m Metrics
	var err error
	if m.events, err = meter.Int64Counter("healer_events", metric.WithDescription("Events received by the engine, by source and type.")); err != nil {
		return nil, err
	}
	if m.decisions, err = meter.Int64Counter("healer_decisions", metric.WithDescription("Policy decisions, by remediator (none when nothing is to be done).")); err != nil {
		return nil, err
	}
	if m.latency, err = meter.Float64Histogram("healer_decision_duration_seconds", metric.WithDescription("Policy evaluation latency."), metric.WithUnit("s"),
		metric.WithExplicitBucketBoundaries(0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.005, 0.01)); err != nil {
		return nil, err
	}
	if m.suppressed, err = meter.Int64Counter("healer_suppressed", metric.WithDescription("Events for which nothing was done, by remediator.")); err != nil {
		return nil, err
	}
	if m.actions, err = meter.Int64Counter("healer_actions", metric.WithDescription("Remediator steps, by remediator, step and result.")); err != nil {
		return nil, err
	}
	if m.handled, err = meter.Float64Histogram("healer_event_duration_seconds", metric.WithDescription("Time to handle one event, by outcome."), metric.WithUnit("s")); err != nil {
		return nil, err
	}
	if m.slotWait, err = meter.Int64UpDownCounter("healer_action_slot_waiting", metric.WithDescription("Events waiting for one of the engine's maxActions slots.")); err != nil {
		return nil, err
	}
	if m.panics, err = meter.Int64Counter("healer_stage_panics", metric.WithDescription("Panics recovered in a pipeline stage, by stage; the event is handed back.")); err != nil {
		return nil, err
	}
	if m.redrives, err = meter.Int64Counter("healer_redrives", metric.WithDescription("Held-back problems published again because their hold cleared, by hold.")); err != nil {
		return nil, err
	}
	return &m, nil
}

// NopMetrics returns instruments that record nothing.
func NopMetrics() *Metrics {
	m, _ := NewMetrics(noop.NewMeterProvider().Meter("healer"))
	return m
}

func orNone(s string) string {
	if s == "" {
		return "none"
	}
	return s
}

// Event counts a received event.
func (m *Metrics) Event(ctx context.Context, source, typ string) {
	m.events.Add(ctx, 1, metric.WithAttributes(attribute.String("source", source), attribute.String("type", typ)))
}

// Decision counts a decision and its latency.
func (m *Metrics) Decision(ctx context.Context, remediator string, took time.Duration) {
	m.decisions.Add(ctx, 1, metric.WithAttributes(attribute.String("remediator", orNone(remediator))))
	m.latency.Record(ctx, took.Seconds())
}

// Suppressed counts an event for which nothing was done.
func (m *Metrics) Suppressed(ctx context.Context, remediator string) {
	m.suppressed.Add(ctx, 1, metric.WithAttributes(attribute.String("remediator", orNone(remediator))))
}

// Action counts a remediator step's result.
func (m *Metrics) Action(ctx context.Context, remediator, step, result string) {
	m.actions.Add(ctx, 1, metric.WithAttributes(attribute.String("remediator", remediator), attribute.String("step", step), attribute.String("result", result)))
}

// Handled records the time to handle one event.
func (m *Metrics) Handled(ctx context.Context, outcome string, took time.Duration) {
	m.handled.Record(ctx, took.Seconds(), metric.WithAttributes(attribute.String("outcome", outcome)))
}

// ActionSlotWait counts events starting (+1) or ending (-1) a wait for an
// action slot.
func (m *Metrics) ActionSlotWait(ctx context.Context, delta int64) {
	m.slotWait.Add(ctx, delta)
}

// StagePanic counts a panic recovered in a stage.
func (m *Metrics) StagePanic(ctx context.Context, stage string) {
	m.panics.Add(ctx, 1, metric.WithAttributes(attribute.String("stage", stage)))
}

// Redriven counts a held-back problem published again.
func (m *Metrics) Redriven(ctx context.Context, hold string) {
	m.redrives.Add(ctx, 1, metric.WithAttributes(attribute.String("hold", hold)))
}
