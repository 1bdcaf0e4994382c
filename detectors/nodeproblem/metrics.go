package nodeproblem

import (
	"context"
	"fmt"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
)

// RegisterMetrics registers the detector's instruments on meter:
// healer_nodeproblem_events_ignored, the Events whose reason a rule names
// that were ignored, by reason (not_a_node, namespace, source). A rise is
// someone other than node-problem-detector writing Node Events, or a
// monitor missing from Config.Sources.
func (d *Detector) RegisterMetrics(meter metric.Meter) (metric.Registration, error) {
	ignored, err := meter.Int64ObservableCounter("healer_nodeproblem_events_ignored",
		metric.WithDescription("Node Events of a watched reason ignored because node-problem-detector did not post them about a Node, by reason: not_a_node, namespace, source."))
	if err != nil {
		return nil, fmt.Errorf("nodeproblem: metric healer_nodeproblem_events_ignored: %w", err)
	}
	reg, err := meter.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		for why, n := range d.ignoredCounts() {
			o.ObserveInt64(ignored, n, metric.WithAttributes(attribute.String("reason", why)))
		}
		return nil
	}, ignored)
	if err != nil {
		return nil, fmt.Errorf("nodeproblem: metric healer_nodeproblem_events_ignored: %w", err)
	}
	return reg, nil
}
