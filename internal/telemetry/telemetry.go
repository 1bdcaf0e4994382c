// Package telemetry sets up OpenTelemetry tracing for serve and the agent:
// a tracer provider that always makes trace ids (they are written into
// audit records), exporting spans over OTLP/gRPC when an endpoint is
// configured.
package telemetry

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
)

// Config is where spans go. With no endpoint (here or in
// OTEL_EXPORTER_OTLP_ENDPOINT / OTEL_EXPORTER_OTLP_TRACES_ENDPOINT) spans
// are not exported, but trace ids are still made and audited.
type Config struct {
	// Endpoint is the OTLP/gRPC collector, host:port.
	Endpoint string `json:"endpoint"`
	// Insecure sends without TLS (a collector on the node or in the pod).
	Insecure bool `json:"insecure"`
	// HeadersFile holds extra request headers, one "name=value" per line
	// (for example a collector's API key); never logged.
	HeadersFile string `json:"headersFile"`
	// SampleRatio is the share of new traces sampled, 0 to 1; default 1.
	// A trace begun elsewhere follows its parent's decision.
	SampleRatio *float64 `json:"sampleRatio"`
}

// Validate reports a configuration that cannot work.
func (c *Config) Validate() error {
	if c.SampleRatio != nil && (*c.SampleRatio < 0 || *c.SampleRatio > 1) {
		return fmt.Errorf("tracing.sampleRatio %v: want between 0 and 1", *c.SampleRatio)
	}
	if c.Endpoint != "" && strings.Contains(c.Endpoint, "://") {
		return fmt.Errorf("tracing.endpoint %q: want host:port (OTLP/gRPC), without a scheme", c.Endpoint)
	}
	return nil
}

// exporting reports whether spans are exported, and where.
func (c *Config) exporting() (string, bool) {
	if c.Endpoint != "" {
		return c.Endpoint, true
	}
	for _, env := range []string{"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT"} {
		if v := os.Getenv(env); v != "" {
			return v + " (" + env + ")", true
		}
	}
	return "", false
}

// Provider is a tracer provider with what Describe says about it.
type Provider struct {
	*sdktrace.TracerProvider
	desc string
}

// Describe says where spans go, for the start-up log line.
func (p *Provider) Describe() string { return p.desc }

// Shutdown flushes and stops the exporter, waiting at most 5 s.
func (p *Provider) Shutdown(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	return p.TracerProvider.Shutdown(ctx)
}

// New returns the tracer provider of service ("healer-serve",
// "healer-agent"); attrs describe the process (the node of an agent).
func New(ctx context.Context, cfg Config, service, version string, attrs ...attribute.KeyValue) (*Provider, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	res, err := resource.Merge(resource.Default(), resource.NewSchemaless(append([]attribute.KeyValue{
		attribute.String("service.name", service), attribute.String("service.version", version),
	}, attrs...)...))
	if err != nil && !errors.Is(err, resource.ErrSchemaURLConflict) {
		return nil, fmt.Errorf("tracing resource: %w", err)
	}
	ratio := 1.0
	if cfg.SampleRatio != nil {
		ratio = *cfg.SampleRatio
	}
	opts := []sdktrace.TracerProviderOption{
		sdktrace.WithResource(res),
		sdktrace.WithSampler(sdktrace.ParentBased(sdktrace.TraceIDRatioBased(ratio))),
	}
	where, export := cfg.exporting()
	desc := "trace ids in audit records; spans not exported (no OTLP endpoint)"
	if export {
		eopts := []otlptracegrpc.Option{}
		if cfg.Endpoint != "" {
			eopts = append(eopts, otlptracegrpc.WithEndpoint(cfg.Endpoint))
		}
		if cfg.Insecure {
			eopts = append(eopts, otlptracegrpc.WithInsecure())
		}
		if cfg.HeadersFile != "" {
			h, err := readHeaders(cfg.HeadersFile)
			if err != nil {
				return nil, err
			}
			eopts = append(eopts, otlptracegrpc.WithHeaders(h))
		}
		exp, err := otlptracegrpc.New(ctx, eopts...)
		if err != nil {
			return nil, fmt.Errorf("OTLP trace exporter: %w", err)
		}
		opts = append(opts, sdktrace.WithBatcher(exp, sdktrace.WithBatchTimeout(2*time.Second)))
		desc = fmt.Sprintf("OTLP/gRPC to %s, sampling %.0f%% of new traces", where, ratio*100)
	}
	return &Provider{TracerProvider: sdktrace.NewTracerProvider(opts...), desc: desc}, nil
}

func readHeaders(path string) (map[string]string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("tracing.headersFile: %w", err)
	}
	h := map[string]string{}
	for i, line := range strings.Split(string(b), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok || strings.TrimSpace(k) == "" {
			return nil, fmt.Errorf("tracing.headersFile %s line %d: want name=value", path, i+1)
		}
		h[strings.TrimSpace(k)] = strings.TrimSpace(v)
	}
	return h, nil
}
