package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/vishvananda/netns"
	"go.opentelemetry.io/otel/attribute"

	"github.com/selfheal/healer/action"
	"github.com/selfheal/healer/bus"
	"github.com/selfheal/healer/detectors/certexpiry"
	"github.com/selfheal/healer/detectors/logpipeline"
	"github.com/selfheal/healer/detectors/runtimepanic"
	"github.com/selfheal/healer/internal/telemetry"
	"github.com/selfheal/healer/remediators/certrenew"
	etcdmember "github.com/selfheal/healer/remediators/etcdmember"
	"github.com/selfheal/healer/remediators/restart"
	"github.com/selfheal/healer/remediators/vip"
)

// Deps replace parts of the agent, for tests and for embedding.
type Deps struct {
	// Options are extra NATS options (an in-process server, say).
	Options []nats.Option
	// Verbs are extra node verbs.
	Verbs []action.NodeVerb
	// Restart are options for the restart verbs (a fake systemd, say).
	Restart []restart.Option
	// RuntimePanic are options for the runtime-panic detector.
	RuntimePanic []runtimepanic.Option
	// VIPAddresses replaces netlink in the current network namespace for
	// the VIP keeper (a test's own namespace, say).
	VIPAddresses vip.Addresses
	// Version is reported by the ping verb.
	Version string
}

// Agent is a running `healer agent`.
type Agent struct {
	cfg    Config
	log    *slog.Logger
	nc     *nats.Conn
	server *Server
	done   chan struct{}
	err    error
}

// Start connects to NATS, starts the verbs and detectors, and answers
// requests until ctx ends. It returns once the agent is subscribed; a NATS
// server that is not up yet is retried in the background.
func Start(ctx context.Context, cfg Config, log *slog.Logger, deps Deps) (*Agent, error) {
	cfg.ApplyDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("configuration: %w", err)
	}
	base := log // the detectors name the node themselves
	log = log.With("node", cfg.Node)
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("data dir %s: %w", cfg.DataDir, err)
	}
	opts, err := cfg.options()
	if err != nil {
		return nil, err
	}
	opts = append(opts,
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				log.Warn("nats disconnected; reconnecting", "err", err)
			}
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) { log.Info("nats reconnected", "url", nc.ConnectedUrlRedacted()) }),
		nats.ErrorHandler(func(_ *nats.Conn, sub *nats.Subscription, err error) {
			subj := ""
			if sub != nil {
				subj = sub.Subject
			}
			log.Error("nats error", "subject", subj, "err", err)
		}),
	)
	opts = append(opts, deps.Options...)
	nc, err := nats.Connect(cfg.NATS.URL, opts...)
	if err != nil {
		return nil, fmt.Errorf("connect to nats: %w", err)
	}
	a := &Agent{cfg: cfg, log: log, nc: nc, done: make(chan struct{})}
	ok := false
	defer func() {
		if !ok {
			nc.Close()
		}
	}()

	rv, err := restart.NewVerbs(cfg.Restart, log, deps.Restart...)
	if err != nil {
		return nil, err
	}
	if err := rv.Start(ctx); err != nil {
		return nil, err
	}
	verbs := append(rv.Verbs(), deps.Verbs...)
	if len(cfg.CertRenew.Certs) > 0 {
		cv, err := certrenew.NewVerbs(cfg.CertRenew, base.With("node", cfg.Node))
		if err != nil {
			return nil, err
		}
		verbs = append(verbs, cv.Verbs()...)
	}
	if cfg.EtcdMember != nil {
		verbs = append(verbs, etcdmember.NewVerbs(*cfg.EtcdMember, base.With("node", cfg.Node)).Verbs()...)
	}
	var keeper *vip.Keeper
	if cfg.VIP != nil {
		addrs := deps.VIPAddresses
		if addrs == nil {
			nl, err := vip.NewNetlinkAddresses(netns.None())
			if err != nil {
				return nil, fmt.Errorf("vip: %w", err)
			}
			addrs = nl
		}
		js, err := jetstream.New(nc)
		if err != nil {
			return nil, fmt.Errorf("vip: jetstream: %w", err)
		}
		if keeper, err = vip.NewKeeper(*cfg.VIP, js, addrs, base); err != nil {
			return nil, err
		}
		verbs = append(verbs, keeper.Verbs()...)
	}
	version := deps.Version
	if version == "" {
		version = "(unknown)"
	}
	a.server, err = NewServer(cfg.Node, nc, verbs, cfg.MaxConcurrent, cfg.ReplyTTL, version, log)
	if err != nil {
		return nil, err
	}
	tp, err := telemetry.New(ctx, cfg.Tracing, "healer-agent", version, attribute.String("healer.node", cfg.Node))
	if err != nil {
		return nil, err
	}
	a.server.SetTracer(tp.Tracer("github.com/selfheal/healer/internal/app/agent"))
	pub, err := NewPublisher(nc, cfg.Node)
	if err != nil {
		return nil, err
	}
	var detectors []func(context.Context) error
	names := []string{}
	var wg sync.WaitGroup
	if keeper != nil {
		// It renews the leases of the VIPs this node holds and drops an
		// address whose lease it cannot renew. The agent answers vip verbs
		// only once it runs, and stops only after it has returned.
		wg.Go(func() {
			if err := keeper.Run(ctx); err != nil {
				log.Error("vip keeper stopped", "err", err)
			}
		})
		select {
		case <-keeper.Started():
		case <-ctx.Done():
			return nil, fmt.Errorf("vip keeper: %w", context.Cause(ctx))
		}
		names = append(names, "vip keeper")
	}
	for _, nd := range nodeDetectors() {
		run, err := nd.build(cfg, pub, base, deps)
		if err != nil {
			return nil, fmt.Errorf("detector %s: %w", nd.source, err)
		}
		if run != nil {
			detectors = append(detectors, run)
			names = append(names, nd.source)
		}
	}

	serveErr := make(chan error, 1)
	subscribed := make(chan struct{})
	go func() {
		serveErr <- a.server.serve(ctx, subscribed)
	}()
	select {
	case <-subscribed:
	case err := <-serveErr:
		return nil, err
	}
	for _, run := range detectors {
		wg.Go(func() {
			if err := run(ctx); err != nil && ctx.Err() == nil {
				log.Error("detector stopped", "err", err)
			}
		})
	}
	log.Info("healer agent running",
		"nats", nc.ConnectedUrlRedacted(), "connected", nc.IsConnected(),
		"verbs", a.server.Verbs(), "components", rv.Components(), "detectors", names, "tracing", tp.Describe())
	ok = true
	go func() {
		defer close(a.done)
		a.err = <-serveErr
		wg.Wait()
		if err := nc.Drain(); err != nil && !errors.Is(err, nats.ErrConnectionClosed) {
			log.Warn("nats drain", "err", err)
		}
		deadline := time.Now().Add(5 * time.Second)
		for !nc.IsClosed() && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		if err := tp.Shutdown(ctx); err != nil {
			log.Warn("tracing: flush spans", "err", err)
		}
		log.Info("agent stopped")
	}()
	return a, nil
}

// nodeDetector is one of the detectors an agent runs on its node.
type nodeDetector struct {
	// source is the source of the detector's events.
	source string
	// build returns the detector's Run, or nil when cfg leaves it off.
	build func(cfg Config, pub bus.EventPublisher, log *slog.Logger, deps Deps) (func(context.Context) error, error)
}

// nodeDetectors is the one list of node-local detectors: the agent starts
// them from it, and serve relays an agent's events only from their
// sources (EventSources).
func nodeDetectors() []nodeDetector {
	return []nodeDetector{
		{certexpiry.EventSource, func(cfg Config, pub bus.EventPublisher, log *slog.Logger, _ Deps) (func(context.Context) error, error) {
			if cfg.CertExpiry == nil {
				return nil, nil
			}
			d, err := certexpiry.New(*cfg.CertExpiry, pub, log)
			return runOf(d, err)
		}},
		{logpipeline.EventSource, func(cfg Config, pub bus.EventPublisher, log *slog.Logger, _ Deps) (func(context.Context) error, error) {
			if len(cfg.LogPipeline.Shippers) == 0 {
				return nil, nil
			}
			d, err := logpipeline.New(cfg.LogPipeline, pub, log.With("node", cfg.Node))
			return runOf(d, err)
		}},
		{runtimepanic.EventSource, func(cfg Config, pub bus.EventPublisher, log *slog.Logger, deps Deps) (func(context.Context) error, error) {
			if cfg.RuntimePanic.Disabled {
				return nil, nil
			}
			d, err := runtimepanic.New(cfg.RuntimePanic.Config, pub, log, deps.RuntimePanic...)
			return runOf(d, err)
		}},
	}
}

// runOf is a built detector's Run.
func runOf[D interface{ Run(context.Context) error }](d D, err error) (func(context.Context) error, error) {
	if err != nil {
		return nil, err
	}
	return d.Run, nil
}

// EventSources are the sources of the node-local detectors' events: the
// only sources serve accepts from an agent (bus.RelayConfig).
func EventSources() []string {
	out := []string{}
	for _, d := range nodeDetectors() {
		out = append(out, d.source)
	}
	return out
}

// Wait blocks until the agent has stopped.
func (a *Agent) Wait() error {
	<-a.done
	return a.err
}

// Conn is the agent's NATS connection.
func (a *Agent) Conn() *nats.Conn { return a.nc }

// Run starts the agent and blocks until it has stopped.
func Run(ctx context.Context, cfg Config, log *slog.Logger, deps Deps) error {
	a, err := Start(ctx, cfg, log, deps)
	if err != nil {
		return err
	}
	return a.Wait()
}
