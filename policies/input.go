package policies

import (
	"bytes"
	"encoding/json"
	"fmt"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/util"

	"github.com/selfheal/healer/bus"
)

// Input is the document a policy sees as `input`: the event and what the
// engine knows about the cluster and its own recent actions.
type Input struct {
	Event   *bus.Event `json:"event"`
	Context Context    `json:"context"`
}

// Context is the engine's view of the world when it asks for a decision.
type Context struct {
	// Now is the time of the decision; policies should use it rather than
	// time.now_ns(), which is set to the same instant.
	Now    time.Time `json:"now"`
	Budget Budget    `json:"budget"`
	// RecentActions are the engine's recent actions, newest first.
	RecentActions []RecentAction `json:"recent_actions"`
}

// MarshalJSON writes a nil RecentActions as [] so that the JSON form is the
// exact document policies see.
func (c Context) MarshalJSON() ([]byte, error) {
	type plain Context
	p := plain(c)
	if p.RecentActions == nil {
		p.RecentActions = []RecentAction{}
	}
	b, err := json.Marshal(p)
	if err != nil {
		return nil, fmt.Errorf("decision context: %w", err)
	}
	return b, nil
}

// Budget is the disruption budget: how many nodes may be out of service.
type Budget struct {
	TotalNodes   int `json:"total_nodes"`
	OutOfService int `json:"out_of_service"`
	InFlight     int `json:"in_flight"`
	Allowed      int `json:"allowed"`
	Available    int `json:"available"`
	// Known is false when the engine could not work the budget out; the
	// other fields are then meaningless and policies should not act.
	Known bool `json:"known"`
}

// RecentAction is one action the engine took recently.
type RecentAction struct {
	Remediator string    `json:"remediator"`
	Target     string    `json:"target"`
	Time       time.Time `json:"time"`
	Result     string    `json:"result"`
}

// inputKeys are the object keys of the input document, made once per
// policy so that building an input does not allocate them again.
type inputKeys struct {
	event, context                                                   *ast.Term
	specversion, id, source, typ, subject, time, dct, status, key, d *ast.Term
	now, budget, recentActions                                       *ast.Term
	totalNodes, outOfService, inFlight, allowed, available, known    *ast.Term
	remediator, target, result                                       *ast.Term
}

func newInputKeys() *inputKeys {
	s := ast.StringTerm
	return &inputKeys{
		event: s("event"), context: s("context"),
		specversion: s("specversion"), id: s("id"), source: s("source"), typ: s("type"),
		subject: s("subject"), time: s("time"), dct: s("datacontenttype"), status: s("status"),
		key: s("key"), d: s("data"),
		now: s("now"), budget: s("budget"), recentActions: s("recent_actions"),
		totalNodes: s("total_nodes"), outOfService: s("out_of_service"), inFlight: s("in_flight"),
		allowed: s("allowed"), available: s("available"), known: s("known"),
		remediator: s("remediator"), target: s("target"), result: s("result"),
	}
}

// value builds the input document as an AST value directly, the same
// document json.Marshal(in) describes, without a JSON round trip. Only the
// event's data is parsed from JSON.
func (k *inputKeys) value(in *Input) (ast.Value, error) {
	ev, err := k.eventValue(in.Event)
	if err != nil {
		return nil, err
	}
	c := &in.Context
	b := &c.Budget
	budget := ast.NewObject(
		[2]*ast.Term{k.totalNodes, ast.InternedTerm(b.TotalNodes)},
		[2]*ast.Term{k.outOfService, ast.InternedTerm(b.OutOfService)},
		[2]*ast.Term{k.inFlight, ast.InternedTerm(b.InFlight)},
		[2]*ast.Term{k.allowed, ast.InternedTerm(b.Allowed)},
		[2]*ast.Term{k.available, ast.InternedTerm(b.Available)},
		[2]*ast.Term{k.known, ast.InternedTerm(b.Known)},
	)
	recent := make([]*ast.Term, len(c.RecentActions))
	for i := range c.RecentActions {
		a := &c.RecentActions[i]
		recent[i] = ast.NewTerm(ast.NewObject(
			[2]*ast.Term{k.remediator, ast.InternedTerm(a.Remediator)},
			[2]*ast.Term{k.target, ast.InternedTerm(a.Target)},
			[2]*ast.Term{k.time, timeTerm(a.Time)},
			[2]*ast.Term{k.result, ast.InternedTerm(a.Result)},
		))
	}
	ctx := ast.NewObject(
		[2]*ast.Term{k.now, timeTerm(c.Now)},
		[2]*ast.Term{k.budget, ast.NewTerm(budget)},
		[2]*ast.Term{k.recentActions, ast.NewTerm(ast.NewArray(recent...))},
	)
	return ast.NewObject(
		[2]*ast.Term{k.event, ast.NewTerm(ev)},
		[2]*ast.Term{k.context, ast.NewTerm(ctx)},
	), nil
}

func (k *inputKeys) eventValue(e *bus.Event) (ast.Value, error) {
	if e == nil {
		return nil, fmt.Errorf("decision input: no event")
	}
	obj := ast.NewObjectWithCapacity(10)
	obj.Insert(k.specversion, ast.InternedTerm(e.SpecVersion))
	obj.Insert(k.id, ast.InternedTerm(e.ID))
	obj.Insert(k.source, ast.InternedTerm(e.Source))
	obj.Insert(k.typ, ast.InternedTerm(e.Type))
	obj.Insert(k.subject, ast.InternedTerm(e.Subject))
	obj.Insert(k.time, timeTerm(e.Time))
	if e.DataContentType != "" {
		obj.Insert(k.dct, ast.InternedTerm(e.DataContentType))
	}
	obj.Insert(k.status, ast.InternedTerm(e.Status))
	obj.Insert(k.key, ast.InternedTerm(e.Key))
	if len(e.Data) > 0 {
		v, err := jsonValue(e.Data)
		if err != nil {
			return nil, fmt.Errorf("event %q: data: %w", e.ID, err)
		}
		obj.Insert(k.d, ast.NewTerm(v))
	}
	return obj, nil
}

// jsonValue parses one JSON value, keeping numbers exact.
func jsonValue(b []byte) (ast.Value, error) {
	var x any
	if err := util.UnmarshalJSON(bytes.TrimSpace(b), &x); err != nil {
		return nil, err
	}
	v, err := ast.InterfaceToValue(x)
	if err != nil {
		return nil, fmt.Errorf("convert JSON to Rego value: %w", err)
	}
	return v, nil
}

// timeTerm formats t as encoding/json does.
func timeTerm(t time.Time) *ast.Term {
	return ast.StringTerm(t.Format(time.RFC3339Nano))
}
