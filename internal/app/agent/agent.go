package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/selfheal/healer/action"
	"github.com/selfheal/healer/bus"
)

// VerbPing answers with the agent's node, version and verbs; it changes
// nothing.
const VerbPing = "ping"

// Server answers the action requests for one node.
type Server struct {
	node    string
	nc      *nats.Conn
	verbs   map[string]action.NodeVerb
	log     *slog.Logger
	version string
	ttl     time.Duration
	slots   chan struct{}
	now     func() time.Time
	tracer  trace.Tracer

	mu      sync.Mutex
	replies map[string]*pending // by action id
}

// pending is a request that is running or has finished.
type pending struct {
	done  chan struct{}
	reply bus.NodeReply
	at    time.Time // when it finished
}

// NewServer returns a server for node on nc with the given verbs. It
// starts answering when Serve is called.
func NewServer(node string, nc *nats.Conn, verbs []action.NodeVerb, maxConcurrent int, replyTTL time.Duration, version string, log *slog.Logger) (*Server, error) {
	if _, err := bus.NodeToken(node); err != nil {
		return nil, err
	}
	s := &Server{
		node: node, nc: nc, verbs: map[string]action.NodeVerb{}, log: log, version: version,
		ttl: replyTTL, slots: make(chan struct{}, max(1, maxConcurrent)), now: time.Now,
		replies: map[string]*pending{}, tracer: noop.NewTracerProvider().Tracer(""),
	}
	for _, v := range verbs {
		if _, dup := s.verbs[v.Name()]; dup || v.Name() == VerbPing {
			return nil, fmt.Errorf("agent: verb %q registered twice", v.Name())
		}
		s.verbs[v.Name()] = v
	}
	return s, nil
}

// SetTracer makes the server trace each request, as a child of the
// engine's trace that the request carries. Call it before Serve.
func (s *Server) SetTracer(t trace.Tracer) { s.tracer = t }

// Verbs names the verbs the server answers.
func (s *Server) Verbs() []string {
	return append(slices.Sorted(maps.Keys(s.verbs)), VerbPing)
}

// Serve subscribes to the node's action subject and answers requests until
// ctx ends; then it waits for the requests in hand to finish.
func (s *Server) Serve(ctx context.Context) error { return s.serve(ctx, nil) }

func (s *Server) serve(ctx context.Context, subscribed chan<- struct{}) error {
	subj, err := bus.AgentSubject(s.node, bus.AgentActSuffix)
	if err != nil {
		return err
	}
	var wg sync.WaitGroup
	sub, err := s.nc.Subscribe(subj, func(m *nats.Msg) {
		if m.Reply == "" {
			s.log.WarnContext(ctx, "action request without a reply subject ignored", "subject", m.Subject)
			return
		}
		wg.Go(func() { s.handle(ctx, m) })
	})
	if err != nil {
		return fmt.Errorf("subscribe %s: %w", subj, err)
	}
	if err := s.nc.FlushTimeout(5 * time.Second); err != nil {
		s.log.WarnContext(ctx, "nats flush after subscribing", "err", err)
	}
	s.log.InfoContext(ctx, "agent answering actions", "subject", subj, "verbs", s.Verbs())
	if subscribed != nil {
		close(subscribed)
	}
	janitor := time.NewTicker(time.Minute)
	defer janitor.Stop()
	for {
		select {
		case <-ctx.Done():
			_ = sub.Unsubscribe()
			wg.Wait()
			return nil
		case <-janitor.C:
			s.forget()
		}
	}
}

// forget drops finished replies older than the TTL.
func (s *Server) forget() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for id, p := range s.replies {
		if !p.at.IsZero() && s.now().Sub(p.at) > s.ttl {
			delete(s.replies, id)
		}
	}
}

func (s *Server) send(m *nats.Msg, r bus.NodeReply) {
	b, err := json.Marshal(r)
	if err != nil {
		// Details came from a verb and did not encode: say so rather than
		// leave the caller waiting.
		b, _ = json.Marshal(bus.NodeReply{ID: r.ID, Code: bus.CodeFailed, Error: "agent: reply does not encode: " + err.Error()})
	}
	if err := s.nc.Publish(m.Reply, b); err != nil {
		s.log.Warn("reply not sent", "action_id", r.ID, "err", err)
	}
}

func (s *Server) handle(ctx context.Context, m *nats.Msg) {
	ctx, span := s.tracer.Start(bus.ExtractTrace(ctx, m.Header), "agent.request", trace.WithSpanKind(trace.SpanKindServer),
		trace.WithAttributes(attribute.String("healer.node", s.node)))
	defer span.End()
	var req action.NodeRequest
	if err := json.Unmarshal(m.Data, &req); err != nil {
		s.send(m, bus.NodeReply{Code: bus.CodeInvalidParams, Error: "request does not decode: " + err.Error()})
		return
	}
	span.SetName("agent " + req.Verb)
	span.SetAttributes(attribute.String("healer.action_id", req.ID), attribute.String("healer.verb", req.Verb))
	log := s.log.With("action_id", req.ID, "verb", req.Verb, "event_id", req.EventID)
	switch {
	case req.ID == "":
		s.send(m, bus.NodeReply{Code: bus.CodeInvalidParams, Error: "request has no id"})
		return
	case req.Node != s.node:
		// The subject says this node; the request must say so too.
		s.send(m, bus.NodeReply{ID: req.ID, Code: bus.CodeInvalidParams, Error: fmt.Sprintf("request is for node %q; this is %q", req.Node, s.node)})
		return
	}
	// Accept at once, so the caller can tell a live agent from a dead one.
	s.send(m, bus.NodeReply{ID: req.ID, Progress: &bus.NodeProgress{Step: ""}})

	s.mu.Lock()
	p, seen := s.replies[req.ID]
	if !seen {
		p = &pending{done: make(chan struct{})}
		s.replies[req.ID] = p
	}
	s.mu.Unlock()
	if seen {
		log.InfoContext(ctx, "request retried; answering with the first one's outcome")
		select {
		case <-p.done:
			s.send(m, p.reply)
		case <-ctx.Done():
		}
		return
	}
	reply := s.run(ctx, m, req, log)
	s.mu.Lock()
	p.reply, p.at = reply, s.now()
	switch reply.Code {
	case bus.CodeInvalidParams, bus.CodeUnsafe, bus.CodeNotNeeded:
		delete(s.replies, req.ID) // nothing ran: a retry is looked at afresh
	}
	s.mu.Unlock()
	close(p.done)
	s.send(m, reply)
}

func (s *Server) run(ctx context.Context, m *nats.Msg, req action.NodeRequest, log *slog.Logger) bus.NodeReply {
	if req.Verb == VerbPing {
		return bus.ReplyFor(req.ID, action.Result{Message: "agent on " + s.node, Details: map[string]any{
			"node": s.node, "version": s.version, "verbs": s.Verbs(),
		}}, nil)
	}
	v, ok := s.verbs[req.Verb]
	if !ok {
		return bus.ReplyFor(req.ID, action.Result{}, fmt.Errorf("%w: unknown verb %q (this agent has %v)", action.ErrInvalidParams, req.Verb, s.Verbs()))
	}
	deadline := req.Deadline
	if limit := s.now().Add(bus.AgentMaxActionTime); deadline.IsZero() || deadline.After(limit) {
		deadline = limit
	}
	ctx, cancel := context.WithDeadlineCause(ctx, deadline, fmt.Errorf("%s %s: past the caller's deadline", req.Verb, req.ID))
	defer cancel()
	select {
	case s.slots <- struct{}{}:
		defer func() { <-s.slots }()
	case <-ctx.Done():
		return bus.ReplyFor(req.ID, action.Result{}, fmt.Errorf("agent busy: %w", context.Cause(ctx)))
	}
	sent := 0
	progress := func(_ context.Context, step string, details map[string]any) {
		if sent >= bus.AgentMaxReplies-2 {
			return // keep room for the reply
		}
		sent++
		s.send(m, bus.NodeReply{ID: req.ID, Progress: &bus.NodeProgress{Step: step, Details: details}})
	}
	start := s.now()
	res, err := v.Run(ctx, req, progress)
	switch {
	case err == nil:
		log.InfoContext(ctx, "action done", "changed", res.Changed, "message", res.Message, "took", s.now().Sub(start))
	case errors.Is(err, action.ErrNotNeeded):
		log.InfoContext(ctx, "action not needed", "reason", err)
	default:
		log.WarnContext(ctx, "action failed", "err", err, "took", s.now().Sub(start))
	}
	return bus.ReplyFor(req.ID, res, err)
}
