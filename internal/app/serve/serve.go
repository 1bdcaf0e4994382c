package serve

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	neturl "net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	natsserver "github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/sony/gobreaker/v2"
	"go.opentelemetry.io/otel/attribute"
	otelprom "go.opentelemetry.io/otel/exporters/prometheus"
	"go.opentelemetry.io/otel/metric"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/selfheal/healer/audit"
	"github.com/selfheal/healer/bus"
	"github.com/selfheal/healer/chatops"
	"github.com/selfheal/healer/detectors/alertmanager"
	"github.com/selfheal/healer/detectors/certexpiry"
	"github.com/selfheal/healer/detectors/etcdmember"
	"github.com/selfheal/healer/detectors/logpipeline"
	"github.com/selfheal/healer/detectors/nodeproblem"
	"github.com/selfheal/healer/engine"
	"github.com/selfheal/healer/engine/approval"
	"github.com/selfheal/healer/engine/guard"
	"github.com/selfheal/healer/internal/app/agent"
	"github.com/selfheal/healer/internal/httpauth"
	"github.com/selfheal/healer/internal/telemetry"
	"github.com/selfheal/healer/policies"
	"github.com/selfheal/healer/remediators"
	etcdrem "github.com/selfheal/healer/remediators/etcdmember"
	"github.com/selfheal/healer/remediators/vip"
	"github.com/selfheal/healer/runbooks"
)

// Server is a running `healer serve`.
type Server struct {
	cfg  Config
	log  *slog.Logger
	addr net.Addr

	ns      *natsserver.Server // nil with an external NATS
	nsAuth  *bus.EmbeddedAuth  // who the embedded server lets in
	nc      *nats.Conn
	js      jetstream.JetStream
	streams *bus.Streams
	trail   *audit.Trail
	holder  *policies.Holder
	limiter guard.Limiter
	kube    kubernetes.Interface
	budget  *guard.Budget
	engine  *engine.Engine
	http    *http.Server

	// Tokens are what clients must present; exposed for tests and tools
	// that run the server in-process.
	WebhookToken string
	APIToken     string

	// checkpoints signs checkpoints of the trail (checkpoints.go).
	checkpoints *audit.Checkpointer

	ready   chan struct{}
	done    chan struct{}
	runErr  error
	closers []func()
}

// Start brings every part up and starts serving; it returns once the
// server accepts requests. The server stops when ctx ends; Wait returns
// after a clean shutdown.
func Start(ctx context.Context, cfg Config, log *slog.Logger) (_ *Server, err error) {
	cfg.ApplyDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("configuration: %w", err)
	}
	// s is not the named result: a failed start returns nil, and what was
	// started so far is still closed.
	s := &Server{cfg: cfg, log: log, ready: make(chan struct{}), done: make(chan struct{})}
	defer func() {
		if err != nil {
			s.close()
		}
	}()
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("data dir %s: %w", cfg.DataDir, err)
	}

	whSrc, apiSrc, err := s.loadTokens()
	if err != nil {
		return nil, err
	}
	natsDesc, err := s.connectNATS(ctx)
	if err != nil {
		return nil, err
	}
	if s.streams, err = bus.EnsureStreams(ctx, s.js, cfg.Streams); err != nil {
		return nil, err
	}
	if err := s.setupAudit(ctx); err != nil {
		return nil, err
	}

	pol, err := policies.Load(ctx, cfg.Policies)
	if err != nil {
		return nil, fmt.Errorf("load policies: %w", err)
	}
	s.holder = policies.NewHolder(pol)
	var shadow *policies.Holder
	if cfg.ShadowPolicies != "" {
		sp, err := policies.Load(ctx, cfg.ShadowPolicies)
		if err != nil {
			return nil, fmt.Errorf("load shadow policies: %w", err)
		}
		shadow = policies.NewHolder(sp)
		if _, err := s.trail.Append(ctx, audit.Record{
			Kind: audit.KindPolicyLoaded, Actor: "healer/serve", PolicyRevision: sp.Revision,
			Details: audit.Details("source", cfg.ShadowPolicies, "files", sp.Files, "at", "startup", "shadow", true),
		}); err != nil {
			return nil, fmt.Errorf("audit trail unavailable: %w", err)
		}
	}
	if _, err := s.trail.Append(ctx, audit.Record{
		Kind: audit.KindPolicyLoaded, Actor: "healer/serve", PolicyRevision: pol.Revision,
		Details: audit.Details("source", policySource(cfg.Policies), "files", pol.Files, "at", "startup"),
	}); err != nil {
		return nil, fmt.Errorf("audit trail unavailable: %w", err)
	}

	if err := s.setupLimiter(ctx); err != nil {
		return nil, err
	}
	kubeDesc, err := s.setupKube(ctx)
	if err != nil {
		return nil, err
	}
	agents := bus.NewAgentClient(s.nc, cfg.AgentAcceptTimeout)
	deps := remediators.Deps{Kube: s.kube, Agents: agents, VIP: cfg.VIP, Disabled: cfg.DisabledRemediators, Log: log}
	if len(cfg.VIP.VIPs) > 0 {
		if deps.VIPLeases, err = vip.EnsureBucket(ctx, s.js, cfg.Streams.Replicas); err != nil {
			return nil, err
		}
	}
	if cfg.Etcd != nil {
		if deps.Etcd, err = s.etcdDeps(ctx, agents); err != nil {
			return nil, err
		}
		deps.EtcdReplace = cfg.EtcdReplace
	}
	rems, unavailable, err := remediators.Build(deps)
	for _, r := range rems {
		if c, ok := r.(io.Closer); ok {
			s.closers = append(s.closers, func() { _ = c.Close() })
		}
	}
	if err != nil {
		return nil, err
	}

	reg := prometheus.NewRegistry()
	// The Go runtime's own figures (heap, GC, goroutines) and the
	// process's (RSS, file descriptors): what sizing a replica needs.
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	exporter, err := otelprom.New(otelprom.WithRegisterer(reg))
	if err != nil {
		return nil, fmt.Errorf("metrics exporter: %w", err)
	}
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(exporter))
	s.closers = append(s.closers, func() { _ = mp.Shutdown(context.WithoutCancel(ctx)) })
	metrics, err := engine.NewMetrics(mp.Meter("github.com/selfheal/healer/engine"))
	if err != nil {
		return nil, fmt.Errorf("metrics: %w", err)
	}
	if err := s.registerAuditMetrics(mp.Meter("github.com/selfheal/healer/audit")); err != nil {
		return nil, fmt.Errorf("metrics: %w", err)
	}
	tp, err := telemetry.New(ctx, cfg.Tracing, "healer-serve", cmp.Or(cfg.Version, "(unknown)"))
	if err != nil {
		return nil, fmt.Errorf("tracing: %w", err)
	}
	s.closers = append(s.closers, func() {
		if err := tp.Shutdown(ctx); err != nil {
			log.Warn("tracing: flush spans", "err", err)
		}
	})
	tracer := tp.Tracer("github.com/selfheal/healer")

	pauseKV, err := guard.EnsurePauseBucket(ctx, s.js, cfg.Streams.Replicas)
	if err != nil {
		return nil, err
	}
	pauses := guard.NewPauses(pauseKV, log)
	ph := &pausesHandler{pauses: pauses, trail: s.trail, log: log, apiToken: s.APIToken, known: func(n string) bool {
		return slices.ContainsFunc(remediators.Table(), func(e remediators.Entry) bool { return e.Name == n })
	}}
	broker, slackApp, err := s.setupApprovals(ctx, ph)
	if err != nil {
		return nil, err
	}
	var approver engine.Approver
	var notifier engine.Notifier
	if broker != nil {
		ph.approver = broker.TokenOwner
		approver = broker
	}
	if slackApp != nil {
		notifier = slackApp
	}
	breakers := guard.NewBreakers(cfg.Engine.Breaker, log, breakerNotices(ctx, notifier, cfg.Engine.Breaker))
	if err := registerGauges(mp.Meter("github.com/selfheal/healer"), breakers, s.budget); err != nil {
		return nil, fmt.Errorf("metrics: %w", err)
	}
	s.engine, err = engine.New(cfg.Engine, engine.Deps{
		Pauses: pauses, Approver: approver, Notifier: notifier, Shadow: shadow,
		JS: s.js, Streams: s.streams, Trail: s.trail, Policies: s.holder, Remediators: rems,
		Limiter: s.limiter, Budget: s.budget, Breakers: breakers,
		Metrics: metrics, Tracer: tracer, Log: log,
	})
	if err != nil {
		return nil, err
	}
	if s.budget != nil {
		// Every replica counts the nodes the others are taking out.
		budgetKV, err := guard.EnsureBudgetBucket(ctx, s.js, cfg.Streams.Replicas)
		if err != nil {
			return nil, err
		}
		s.budget.Share(ctx, budgetKV, s.engine.Instance())
	}
	det, err := alertmanager.New(cfg.Alertmanager, bus.NewPublisher(s.js, cfg.Alertmanager.PublishTimeout), log, alertmanager.WithTracer(tracer))
	if err != nil {
		return nil, err
	}

	mux := http.NewServeMux()
	mux.Handle("POST "+alertmanager.Path, httpauth.Bearer(s.WebhookToken, det))
	mux.Handle("/api/v1/audit", audit.NewHandler(s.trail, s.APIToken, log))
	mux.Handle(audit.CheckpointsPath, audit.NewCheckpointsHandler(s.checkpoints, s.APIToken, log))
	mux.Handle(PausesPath, ph)
	mux.Handle(PausesPath+"/", ph)
	if broker != nil {
		ah := &approvalsHandler{broker: broker, apiToken: s.APIToken, log: log}
		mux.Handle(ApprovalsPath, ah)
		mux.Handle(ApprovalsPath+"/", ah)
	}
	if slackApp != nil {
		// Slack's signature is these endpoints' authentication.
		mux.HandleFunc("POST "+chatops.InteractionsPath, slackApp.ServeInteractions)
		mux.HandleFunc("POST "+chatops.CommandsPath, slackApp.ServeCommands)
	}
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok\n")) })
	mux.HandleFunc("GET /readyz", s.readyz)
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	pageOpts := audit.PageOptions{Runbooks: runbooks.FS()}
	if broker != nil {
		pageOpts.Approvals = pageApprovals{broker}
	}
	mux.Handle("/", audit.NewPage(s.trail, s.APIToken, log, pageOpts))

	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return nil, fmt.Errorf("listen %s: %w", cfg.Listen, err)
	}
	s.addr = ln.Addr()
	s.http = &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      60 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		BaseContext:       func(net.Listener) context.Context { return context.WithoutCancel(ctx) },
	}

	var wg sync.WaitGroup
	engineCtx, stopEngine := context.WithCancel(ctx)
	wg.Go(func() { pauses.Run(engineCtx) })
	if err := pauses.WaitSynced(ctx, 10*time.Second); err != nil {
		stopEngine()
		return nil, err
	}
	if slackApp != nil {
		wg.Go(func() { slackApp.Run(engineCtx) })
	}
	engineDone := make(chan error, 1)
	wg.Go(func() { engineDone <- s.engine.Run(engineCtx) })
	httpDone := make(chan error, 1)
	go func() { httpDone <- s.http.Serve(ln) }()
	if cfg.Policies != "" {
		wg.Go(func() { s.watchPolicies(engineCtx) })
	}
	if shadow != nil {
		wg.Go(func() { s.watchShadow(engineCtx, shadow) })
	}
	detectors := []string{"alertmanager"}
	// The detectors that know what is true now re-assert it every
	// Resync (Alertmanager repeats firing alerts by itself).
	reassert := func(pub bus.EventPublisher) bus.EventPublisher {
		r, err := bus.NewReasserter(pub, cfg.Resync, log)
		if err != nil { // Validate refused such an interval already
			return pub
		}
		wg.Go(func() { r.Run(engineCtx) })
		return r
	}
	if s.kube != nil && !cfg.NodeProblem.Disabled {
		npd, err := nodeproblem.New(cfg.NodeProblem.Config, s.kube, reassert(bus.NewPublisher(s.js, cfg.NodeProblem.PublishTimeout)), log)
		if err != nil {
			stopEngine()
			return nil, err
		}
		if _, err := npd.RegisterMetrics(mp.Meter("github.com/selfheal/healer/detectors/nodeproblem")); err != nil {
			stopEngine()
			return nil, err
		}
		wg.Go(func() {
			if err := npd.Run(engineCtx); err != nil && engineCtx.Err() == nil {
				log.Error("nodeproblem detector stopped", "err", err)
			}
		})
		detectors = append(detectors, "nodeproblem")
	}

	// Node agents send their events through serve, which checks each is
	// about the agent's own node, from a node-local detector, before storing it.
	relay := bus.RelayConfig{Sources: agent.EventSources(), Meter: mp.Meter("github.com/selfheal/healer/bus")}
	if err := bus.RelayAgentEvents(engineCtx, s.nc, reassert(bus.NewPublisher(s.js, 5*time.Second)), relay, log); err != nil {
		stopEngine()
		return nil, err
	}
	detectors = append(detectors, "agents (relayed)")
	if deps.VIPLeases != nil {
		w := vip.NewWatcher(deps.VIPLeases, bus.NewPublisher(s.js, 5*time.Second), log)
		wg.Go(func() { s.watchVIPLeases(engineCtx, w) })
		detectors = append(detectors, "vip leases")
	}
	if cfg.Etcd != nil {
		ed, err := etcdmember.New(*cfg.Etcd, reassert(bus.NewPublisher(s.js, cfg.Etcd.PublishTimeout)), log)
		if err != nil {
			stopEngine()
			return nil, err
		}
		wg.Go(func() {
			if err := ed.Run(engineCtx); err != nil && engineCtx.Err() == nil {
				log.Error("etcdmember detector stopped", "err", err)
			}
		})
		detectors = append(detectors, "etcdmember")
	}
	if ce := cfg.CertExpiry; ce != nil {
		var opts []certexpiry.Option
		switch {
		case s.kube != nil:
			opts = append(opts, certexpiry.WithKubeClient(s.kube))
		case ce.Secrets != nil:
			stopEngine()
			return nil, errors.New("certExpiry.secrets: Kubernetes is not configured, so TLS secrets cannot be listed")
		}
		cd, err := certexpiry.New(*ce, reassert(bus.NewPublisher(s.js, ce.PublishTimeout)), log, opts...)
		if err != nil {
			stopEngine()
			return nil, err
		}
		wg.Go(func() {
			if err := cd.Run(engineCtx); err != nil && engineCtx.Err() == nil {
				log.Error("certexpiry detector stopped", "err", err)
			}
		})
		detectors = append(detectors, "certexpiry")
	}
	if cfg.LogPipeline.Kafka != nil {
		lp, err := logpipeline.New(cfg.LogPipeline, reassert(bus.NewPublisher(s.js, cfg.LogPipeline.PublishTimeout)), log)
		if err != nil {
			stopEngine()
			return nil, err
		}
		wg.Go(func() {
			if err := lp.Run(engineCtx); err != nil && engineCtx.Err() == nil {
				log.Error("logpipeline detector stopped", "err", err)
			}
		})
		detectors = append(detectors, "logpipeline (kafka)")
	}

	log.Info("healer serving",
		"listen", s.addr.String(),
		"engine_instance", s.engine.Instance(),
		"nats", natsDesc,
		"rate_limits", s.limiter.Describe(),
		"kubernetes", kubeDesc,
		"remediators", rems.Names(),
		"detectors", detectors,
		"policy_revision", pol.Revision,
		"policy_source", policySource(cfg.Policies),
		"shadow_policies", cfg.ShadowPolicies,
		"approvals", approvalsDesc(broker, slackApp, cfg),
		"tracing", tp.Describe(),
		"webhook_token", whSrc.String(),
		"api_token", apiSrc.String(),
	)
	for name, why := range unavailable {
		log.Warn("remediator unavailable", "remediator", name, "reason", why)
	}
	close(s.ready)

	go func() {
		defer close(s.done)
		var err error
		select {
		case <-ctx.Done():
		case err = <-httpDone:
			log.Error("http server stopped", "err", err)
		case err = <-engineDone:
			log.Error("engine stopped", "err", err)
		}
		s.runErr = err
		log.Info("shutting down: no new webhooks; finishing events in hand")
		shutdownCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cfg.ShutdownTimeout)
		defer cancel()
		err = boundedShutdown(shutdownCtx, []shutdownStep{
			{"http server", func() { _ = s.http.Shutdown(shutdownCtx) }},
			{"engine", func() { stopEngine(); wg.Wait() }},
			{"connections and embedded servers", s.close},
		})
		if err != nil {
			log.Error("shutdown cut short: exiting with work unfinished; JetStream redelivers what was not acknowledged", "err", err, "shutdown_timeout", cfg.ShutdownTimeout)
			if s.runErr == nil {
				s.runErr = err
			}
			return
		}
		log.Info("shutdown complete")
	}()
	return s, nil
}

// shutdownStep is one part of a clean shutdown, in order.
type shutdownStep struct {
	what string
	run  func()
}

// boundedShutdown runs the steps in order until ctx ends. A step still
// running then is left behind (the process is about to exit) and named in
// the error, so a stuck engine, NATS or audit stream never holds the
// process past its shutdown timeout.
func boundedShutdown(ctx context.Context, steps []shutdownStep) error {
	for _, st := range steps {
		done := make(chan struct{})
		go func() {
			defer close(done)
			st.run()
		}()
		select {
		case <-done:
		case <-ctx.Done():
			return fmt.Errorf("shutdown: %s still stopping after the shutdown timeout: %w", st.what, context.Cause(ctx))
		}
	}
	return nil
}

// setupApprovals returns the approval broker when anyone may approve, and
// the Slack app when a bot token is configured.
func (s *Server) setupApprovals(ctx context.Context, pauses chatops.PauseStore) (*approval.Broker, *chatops.Slack, error) {
	cfg := s.cfg
	if len(cfg.Approvals.Approvers) == 0 && len(cfg.Approvals.SlackGroups) == 0 {
		return nil, nil, nil
	}
	kv, err := approval.EnsureBucket(ctx, s.js, cfg.Streams.Replicas)
	if err != nil {
		return nil, nil, err
	}
	broker, err := approval.NewBroker(cfg.Approvals, kv, s.trail, s.log)
	if err != nil {
		return nil, nil, fmt.Errorf("approvals: %w", err)
	}
	switch n, err := broker.Scrub(ctx); {
	case err != nil:
		return nil, nil, fmt.Errorf("approvals: remove stored tokens: %w", err)
	case n > 0:
		s.log.Warn("approval requests stored approvers' tokens (an older version kept them with CLI and web votes): removed them; ROTATE every approver's token", "requests", n)
	}
	if !cfg.SlackEnabled() {
		return broker, nil, nil
	}
	var sec chatops.Secrets
	if sec.BotToken, err = httpauth.Secret(EnvSlackBotToken, cfg.Slack.BotTokenFile); err != nil {
		return nil, nil, fmt.Errorf("slack bot token: %w", err)
	}
	if sec.SigningSecret, err = httpauth.Secret(EnvSlackSigningSecret, cfg.Slack.SigningSecretFile); err != nil {
		return nil, nil, fmt.Errorf("slack signing secret: %w", err)
	}
	replay, err := chatops.EnsureReplayBucket(ctx, s.js, cfg.Streams.Replicas)
	if err != nil {
		return nil, nil, err
	}
	app, err := chatops.New(cfg.Slack, sec, chatops.Deps{
		Broker: broker, Pauses: pauses, Trail: s.trail, Replay: replay, Log: s.log, Status: s.statusLines,
	})
	if err != nil {
		return nil, nil, err
	}
	return broker, app, nil
}

func approvalsDesc(b *approval.Broker, app *chatops.Slack, cfg Config) string {
	switch {
	case b == nil:
		return "off (no approvers configured: actions needing approval are suppressed)"
	case app == nil:
		return fmt.Sprintf("%d approvers, CLI and web page; expire after %s", len(cfg.Approvals.Approvers), cfg.Approvals.Expiry)
	default:
		return fmt.Sprintf("%d approvers and %d Slack groups, Slack channel %s, CLI and web page; expire after %s",
			len(cfg.Approvals.Approvers), len(cfg.Approvals.SlackGroups), cfg.Slack.Channel, cfg.Approvals.Expiry)
	}
}

// statusLines are the breaker and budget lines of /healer status.
func (s *Server) statusLines(context.Context) []string {
	var lines []string
	var open []string
	for _, e := range remediators.Table() {
		if st := s.engine.Breakers.State(e.Name); st != gobreaker.StateClosed {
			open = append(open, e.Name+" ("+st.String()+")")
		}
	}
	if len(open) == 0 {
		lines = append(lines, "*Circuit breakers*: all closed")
	} else {
		lines = append(lines, "*Circuit breakers not closed*: "+strings.Join(open, ", "))
	}
	if s.budget == nil {
		return append(lines, "*Blast-radius budget*: unknown (Kubernetes not configured): disruptive actions are refused")
	}
	if st, err := s.budget.State(); err != nil {
		lines = append(lines, "*Blast-radius budget*: unknown: "+err.Error())
	} else {
		lines = append(lines, fmt.Sprintf("*Blast-radius budget*: %d of %d nodes out of service, %d in flight, %d allowed, %d available",
			st.OutOfService, st.TotalNodes, st.InFlight, st.Allowed, st.Available))
	}
	return lines
}

// breakerNotices tells people when a remediator's breaker opens.
func breakerNotices(ctx context.Context, n engine.Notifier, cfg guard.BreakerConfig) func(string, gobreaker.State, gobreaker.State) {
	cfg.ApplyDefaults()
	return func(name string, _, to gobreaker.State) {
		if n == nil || to != gobreaker.StateOpen {
			return
		}
		n.Notify(context.WithoutCancel(ctx), engine.Notice{
			Kind: engine.NoticeBreakerOpen, Remediator: name, Runbook: runbookFor(name),
			Text: fmt.Sprintf("%s failed %d times in a row: healer stops running it for %s, then tries it once.", name, cfg.ConsecutiveFailures, cfg.OpenFor),
		})
	}
}

// registerGauges exports the breakers' states and the blast-radius budget
// as gauges read at each scrape.
func registerGauges(meter metric.Meter, breakers *guard.Breakers, budget *guard.Budget) error {
	states, err := meter.Int64ObservableGauge("healer_breaker_state",
		metric.WithDescription("Circuit breaker of each remediator: 0 closed, 1 half-open (one trial), 2 open (not run)."))
	if err != nil {
		return err
	}
	nodes, err := meter.Int64ObservableGauge("healer_budget_nodes",
		metric.WithDescription("Blast-radius budget: nodes in the cluster, out of service, healer's in flight, allowed out at once and still available."))
	if err != nil {
		return err
	}
	known, err := meter.Int64ObservableGauge("healer_budget_known",
		metric.WithDescription("1 when the budget is known; 0 when it is not (disruptive actions are then refused)."))
	if err != nil {
		return err
	}
	_, err = meter.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		for _, e := range remediators.Table() {
			v := int64(0)
			switch breakers.State(e.Name) {
			case gobreaker.StateHalfOpen:
				v = 1
			case gobreaker.StateOpen:
				v = 2
			}
			o.ObserveInt64(states, v, metric.WithAttributes(attribute.String("remediator", e.Name)))
		}
		if budget == nil {
			o.ObserveInt64(known, 0)
			return nil
		}
		st, err := budget.State()
		if err != nil {
			o.ObserveInt64(known, 0)
			return nil
		}
		o.ObserveInt64(known, 1)
		for k, v := range map[string]int{"total": st.TotalNodes, "out_of_service": st.OutOfService, "in_flight": st.InFlight, "allowed": st.Allowed, "available": st.Available} {
			o.ObserveInt64(nodes, int64(v), metric.WithAttributes(attribute.String("state", k)))
		}
		return nil
	}, states, nodes, known)
	return err
}

// runbookFor is the runbook path of a remediator.
func runbookFor(name string) string {
	for _, e := range remediators.Table() {
		if e.Name == name {
			return "runbooks/" + name + ".md"
		}
	}
	return ""
}

// etcdDeps are what etcd.replace-member acts with: the detector's cluster
// configuration, the journal bucket and the configured provisioner.
func (s *Server) etcdDeps(ctx context.Context, agents *bus.AgentClient) (*etcdrem.Deps, error) {
	kv, err := etcdrem.EnsureBucket(ctx, s.js, s.cfg.Streams.Replicas)
	if err != nil {
		return nil, err
	}
	d := &etcdrem.Deps{Cluster: *s.cfg.Etcd, Journal: kv}
	switch s.cfg.EtcdReplace.Provisioner {
	case etcdrem.ProvisionerLocal:
		d.Provisioner, err = etcdrem.NewLocal(s.cfg.EtcdReplace.Local)
	default:
		d.Provisioner, err = etcdrem.NewAgentProvisioner(agents, s.cfg.EtcdReplace.Nodes)
	}
	return d, err
}

// watchVIPLeases runs the VIP lease watcher until ctx ends, starting it
// again with backoff when it stops (the bucket was unreachable).
func (s *Server) watchVIPLeases(ctx context.Context, w *vip.Watcher) {
	backoff := time.Second
	for ctx.Err() == nil {
		err := w.Run(ctx)
		if ctx.Err() != nil {
			return
		}
		s.log.Warn("vip lease watcher stopped; starting it again", "err", err, "retry_in", backoff)
		select {
		case <-ctx.Done():
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 30*time.Second)
	}
}

// Trail is the server's audit trail.
func (s *Server) Trail() *audit.Trail { return s.trail }

// Addr is the HTTP address the server listens on.
func (s *Server) Addr() string { return s.addr.String() }

// URL is the server's base URL.
func (s *Server) URL() string { return "http://" + s.addr.String() }

// NATSURL is the URL of the NATS server in use.
func (s *Server) NATSURL() string { return s.nc.ConnectedUrlRedacted() }

// NATSClientURL is where agents and tools reach NATS: the embedded
// server's listener, or the configured external servers.
func (s *Server) NATSClientURL() string {
	if s.ns != nil {
		return s.ns.ClientURL()
	}
	return s.cfg.NATSURL
}

// NATSOptions are the connection options serve logs in with to its
// embedded server, for tools and tests that run serve in-process; nil
// with an external NATS.
func (s *Server) NATSOptions() []nats.Option {
	if s.nsAuth == nil {
		return nil
	}
	return []nats.Option{s.nsAuth.ServeOption()}
}

// AgentPassword is the password of node's agent on the embedded server
// ("" with an external NATS, whose users are the operator's).
func (s *Server) AgentPassword(node string) (string, error) {
	if s.nsAuth == nil {
		return "", errors.New("serve runs no embedded NATS: agents log in as the NATS cluster's users")
	}
	return s.nsAuth.AgentPassword(node)
}

// Wait blocks until the server has shut down and returns why it stopped
// (nil after ctx ended).
func (s *Server) Wait() error {
	<-s.done
	return s.runErr
}

// Run starts the server and blocks until it has shut down.
func Run(ctx context.Context, cfg Config, log *slog.Logger) error {
	s, err := Start(ctx, cfg, log)
	if err != nil {
		return err
	}
	return s.Wait()
}

func (s *Server) close() {
	for i := len(s.closers) - 1; i >= 0; i-- {
		s.closers[i]()
	}
	s.closers = nil
}

func (s *Server) loadTokens() (wh, api httpauth.Source, err error) {
	s.WebhookToken, wh, err = httpauth.Load("HEALER_WEBHOOK_TOKEN", s.cfg.WebhookTokenFile, s.cfg.WebhookTokenPath())
	if err != nil {
		return wh, api, fmt.Errorf("webhook token: %w", err)
	}
	s.APIToken, api, err = httpauth.Load("HEALER_API_TOKEN", s.cfg.APITokenFile, s.cfg.APITokenPath())
	if err != nil {
		return wh, api, fmt.Errorf("api token: %w", err)
	}
	if s.WebhookToken == s.APIToken {
		s.log.Warn("the webhook and API tokens are the same; use two tokens so Alertmanager's cannot read the audit trail")
	}
	return wh, api, nil
}

func (s *Server) connectNATS(ctx context.Context) (string, error) {
	url := s.cfg.NATSURL
	desc := "external " + redactURL(url)
	if url == "" {
		host, port, _ := net.SplitHostPort(s.cfg.NATSListen)
		p, err := strconv.Atoi(port)
		if err != nil {
			return "", fmt.Errorf("natsListen %q: %w", s.cfg.NATSListen, err)
		}
		dir := filepath.Join(s.cfg.DataDir, "nats")
		key, err := bus.LoadAgentKey(s.cfg.AgentKeyPath())
		if err != nil {
			return "", fmt.Errorf("embedded nats: %w", err)
		}
		// Which agents are masters is not known here: each may hold VIP
		// leases. A NATS cluster of your own gives the bucket to masters only.
		s.nsAuth, err = bus.NewEmbeddedAuth(key, bus.AgentPermissionsOptions{KVBuckets: []string{vip.Bucket}}, s.log)
		if err != nil {
			return "", err
		}
		s.ns, err = bus.StartEmbedded(bus.EmbeddedConfig{StoreDir: dir, Host: host, Port: p, Auth: s.nsAuth}, s.log)
		if err != nil {
			return "", err
		}
		ns := s.ns
		s.closers = append(s.closers, func() { ns.Shutdown(); ns.WaitForShutdown() })
		url = ns.ClientURL()
		abs, _ := filepath.Abs(dir)
		desc = fmt.Sprintf("embedded JetStream at %s, data in %s; agents log in as their node: healer agent dev-credentials --data-dir %s --node NAME", url, abs, s.cfg.DataDir)
	}
	opts := []nats.Option{
		nats.Name("healer-serve"),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(500 * time.Millisecond),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				s.log.Warn("nats disconnected", "err", err)
			}
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) { s.log.Info("nats reconnected", "url", nc.ConnectedUrlRedacted()) }),
	}
	if s.ns != nil {
		// The embedded server is reached in-process, without loopback TCP;
		// its listener is for agents and tools.
		opts = append(opts, s.nsAuth.ServeOption(), nats.InProcessServer(s.ns))
	} else {
		auth, err := s.natsAuth()
		if err != nil {
			return "", err
		}
		opts = append(opts, auth...)
	}
	nc, err := nats.Connect(url, opts...)
	if err != nil {
		return "", fmt.Errorf("connect to nats %s: %w", redactURL(url), err)
	}
	s.nc = nc
	s.closers = append(s.closers, func() { _ = nc.Drain(); waitClosed(nc) })
	if s.js, err = jetstream.New(nc); err != nil {
		return "", fmt.Errorf("jetstream: %w", err)
	}
	return desc, nil
}

// natsAuth returns the options of the external server's credentials and
// TLS files.
func (s *Server) natsAuth() ([]nats.Option, error) {
	c := s.cfg
	return bus.ClientAuth{
		CredsFile: c.NATSCredsFile, NKeyFile: c.NATSNKeyFile, User: c.NATSUser, PasswordFile: c.NATSPasswordFile,
		CAFile: c.NATSCAFile, CertFile: c.NATSCertFile, KeyFile: c.NATSKeyFile,
	}.Options()
}

// redactURL hides the password of URLs like nats://user:pass@host:4222, so
// they can be logged. Several comma-separated URLs are each redacted.
func redactURL(raw string) string {
	parts := strings.Split(raw, ",")
	for i, p := range parts {
		u, err := neturl.Parse(strings.TrimSpace(p))
		if err != nil {
			parts[i] = "(unparsable URL)"
			continue
		}
		parts[i] = u.Redacted()
	}
	return strings.Join(parts, ",")
}

func waitClosed(nc *nats.Conn) {
	deadline := time.Now().Add(5 * time.Second)
	for !nc.IsClosed() && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
}

func (s *Server) setupLimiter(ctx context.Context) error {
	if s.cfg.RedisURL == "" {
		s.limiter = guard.NewLocal()
		s.log.Warn("NO REDIS CONFIGURED: rate limits are kept in this process only. That is correct for ONE replica; with several replicas every replica allows the full rate. Set --redis-url for production.")
		return nil
	}
	var password string
	if s.cfg.RedisPasswordFile != "" {
		pw, err := httpauth.Secret("", s.cfg.RedisPasswordFile)
		if err != nil {
			return fmt.Errorf("redisPasswordFile: %w", err)
		}
		password = pw
	}
	r, err := guard.NewRedis(s.cfg.RedisURL, password)
	if err != nil {
		return err
	}
	s.closers = append(s.closers, func() { _ = r.Close() })
	if err := r.Ping(ctx); err != nil {
		// Not fatal: the engine fails closed while Redis is away and the
		// events are kept.
		s.log.Error("redis unreachable at start; actions with rate limits are suppressed until it answers", "err", err)
	}
	s.limiter = r
	return nil
}

func (s *Server) setupKube(ctx context.Context) (string, error) {
	var rc *rest.Config
	var err error
	switch {
	case s.cfg.NoKubernetes:
		s.log.Info("Kubernetes turned off by the configuration (noKubernetes)")
		return "off", nil
	case s.cfg.Kubeconfig != "":
		rc, err = clientcmd.BuildConfigFromFlags("", s.cfg.Kubeconfig)
	case os.Getenv("KUBERNETES_SERVICE_HOST") != "":
		rc, err = rest.InClusterConfig()
	case os.Getenv("KUBECONFIG") != "":
		rc, err = clientcmd.NewNonInteractiveDeferredLoadingClientConfig(clientcmd.NewDefaultClientConfigLoadingRules(), nil).ClientConfig()
	default:
		s.log.Warn("Kubernetes not configured (no --kubeconfig, not in a pod, no $KUBECONFIG): Kubernetes remediators are off and node actions are suppressed")
		return "none", nil
	}
	if err != nil {
		return "", fmt.Errorf("kubernetes config: %w", err)
	}
	rc.UserAgent = "healer"
	rc.QPS, rc.Burst = s.cfg.KubeQPS, s.cfg.KubeBurst
	client, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return "", fmt.Errorf("kubernetes client: %w", err)
	}
	s.kube = client
	s.budget = guard.NewBudget(s.cfg.Engine.Budget, client, s.log)
	// 100,000 nodes take about 25 s to list and count on a small apiserver.
	if err := s.budget.Start(ctx, 3*time.Minute); err != nil {
		return "", fmt.Errorf("watch nodes on %s: %w", rc.Host, err)
	}
	st, _ := s.budget.State()
	return fmt.Sprintf("%s (%d nodes)", rc.Host, st.TotalNodes), nil
}

func (s *Server) watchPolicies(ctx context.Context) {
	w := policies.NewWatcher(s.cfg.Policies, s.cfg.PolicyPollInterval, s.log)
	err := w.Run(ctx, func(p *policies.Policy) {
		if cur := s.holder.Current(); cur != nil && cur.Revision == p.Revision {
			return
		}
		s.holder.Set(p)
		s.log.Info("policy loaded", "policy_revision", p.Revision)
		s.auditPolicy(ctx, audit.KindPolicyLoaded, p.Revision, audit.Details("source", s.cfg.Policies, "files", p.Files))
	}, func(rev string, err error) {
		cur := s.holder.Current()
		s.log.Error("policy refused; keeping the last good one", "refused_revision", rev, "current_revision", cur.Revision, "err", err)
		s.auditPolicy(ctx, audit.KindPolicyRefused, rev, audit.Details("source", s.cfg.Policies, "error", err.Error(), "kept_revision", cur.Revision))
	})
	if err != nil && ctx.Err() == nil {
		s.log.Error("policy watcher stopped", "err", err)
	}
}

// watchShadow reloads the shadow policies when their directory changes; a
// refused candidate keeps the last good one, as for the live policies.
func (s *Server) watchShadow(ctx context.Context, h *policies.Holder) {
	w := policies.NewWatcher(s.cfg.ShadowPolicies, s.cfg.PolicyPollInterval, s.log)
	err := w.Run(ctx, func(p *policies.Policy) {
		if cur := h.Current(); cur != nil && cur.Revision == p.Revision {
			return
		}
		h.Set(p)
		s.log.Info("shadow policy loaded", "policy_revision", p.Revision)
		s.auditPolicy(ctx, audit.KindPolicyLoaded, p.Revision, audit.Details("source", s.cfg.ShadowPolicies, "files", p.Files, "shadow", true))
	}, func(rev string, err error) {
		s.log.Error("shadow policy refused; keeping the last good one", "refused_revision", rev, "err", err)
		s.auditPolicy(ctx, audit.KindPolicyRefused, rev, audit.Details("source", s.cfg.ShadowPolicies, "error", err.Error(), "shadow", true))
	})
	if err != nil && ctx.Err() == nil {
		s.log.Error("shadow policy watcher stopped", "err", err)
	}
}

func (s *Server) auditPolicy(ctx context.Context, kind audit.Kind, rev string, details []byte) {
	if _, err := s.trail.Append(ctx, audit.Record{Kind: kind, Actor: "healer/serve", PolicyRevision: rev, Details: details}); err != nil {
		s.log.Error("audit policy change", "kind", kind, "err", err)
	}
}

func (s *Server) readyz(w http.ResponseWriter, _ *http.Request) {
	var problems []error
	if !s.nc.IsConnected() {
		problems = append(problems, errors.New("nats not connected"))
	}
	if s.holder.Current() == nil {
		problems = append(problems, errors.New("no policy loaded"))
	}
	if len(problems) > 0 {
		http.Error(w, errors.Join(problems...).Error(), http.StatusServiceUnavailable)
		return
	}
	_, _ = w.Write([]byte("ready\n"))
}

func policySource(dir string) string {
	if dir == "" {
		return "built-in"
	}
	return dir
}
