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

// inputKeys are the object keys of the input document and terms for
// strings likely to occur in it, made once per policy so that building an
// input does not allocate them again. They are never modified.
type inputKeys struct {
	strings map[string]*ast.Term

	event, context                                                   *ast.Term
	specversion, id, source, typ, subject, time, dct, status, key, d *ast.Term
	now, budget, recentActions                                       *ast.Term
	totalNodes, outOfService, inFlight, allowed, available, known    *ast.Term
	remediator, target, result                                       *ast.Term
}

// newInputKeys returns the keys, with terms for the strings of the event
// envelope that have few values and for the given strings (the policy's
// string constants, which include the event types it looks for).
func newInputKeys(known []string) *inputKeys {
	s := ast.StringTerm
	strs := make(map[string]*ast.Term, len(known)+4)
	for _, v := range append([]string{bus.SpecVersion, bus.StatusFiring, bus.StatusResolved, "application/json"}, known...) {
		strs[v] = s(v)
	}
	return &inputKeys{
		strings: strs,
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

// stringConstants returns the string constants in modules.
func stringConstants(modules map[string]*ast.Module) []string {
	var out []string
	for _, m := range modules {
		ast.WalkTerms(m, func(t *ast.Term) bool {
			if s, ok := t.Value.(ast.String); ok {
				out = append(out, string(s))
			}
			return false
		})
	}
	return out
}

// inputUse records which of the costly parts of the input document a
// policy can read at all; the parts it cannot read are left out.
type inputUse struct {
	data          bool // input.event.data
	recentActions bool // input.context.recent_actions
}

// inputUseOf finds out, from every reference to input in the compiled
// modules, which costly parts of the input they can reach. A reference
// reaches a part when it names the part, something inside it, something
// containing it (input.event, or input itself), or takes a key that is not
// a constant on the way there (input.event[k]).
func inputUseOf(modules map[string]*ast.Module) inputUse {
	var u inputUse
	for _, m := range modules {
		ast.WalkRefs(m, func(r ast.Ref) bool {
			if !r[0].Equal(ast.InputRootDocument) {
				return false
			}
			u.data = u.data || reaches(r, "event", "data")
			u.recentActions = u.recentActions || reaches(r, "context", "recent_actions")
			return false
		})
	}
	return u
}

// reaches reports whether r, a reference to input, can read input.<path>.
func reaches(r ast.Ref, path ...string) bool {
	for i, want := range path {
		if len(r) <= i+1 {
			return true // r names a document that contains the part
		}
		s, ok := r[i+1].Value.(ast.String)
		if !ok {
			return true // a variable key may be the part's name
		}
		if string(s) != want {
			return false
		}
	}
	return true
}

// value builds the input document as an AST value directly, the document
// json.Marshal(in) describes, without a JSON round trip. Only the event's
// data is parsed from JSON, and only if the policy can read it; likewise
// recent actions are only converted if the policy can read them.
func (k *inputKeys) value(in *Input, use inputUse) (ast.Value, error) {
	ev, err := k.eventValue(in.Event, use.data)
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
	var recent []*ast.Term
	if use.recentActions {
		recent = make([]*ast.Term, len(c.RecentActions))
		for i := range c.RecentActions {
			a := &c.RecentActions[i]
			recent[i] = ast.NewTerm(ast.NewObject(
				[2]*ast.Term{k.remediator, k.str(a.Remediator)},
				[2]*ast.Term{k.target, k.str(a.Target)},
				[2]*ast.Term{k.time, timeTerm(a.Time)},
				[2]*ast.Term{k.result, k.str(a.Result)},
			))
		}
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

func (k *inputKeys) eventValue(e *bus.Event, withData bool) (ast.Value, error) {
	if e == nil {
		return nil, fmt.Errorf("decision input: no event")
	}
	var items [10][2]*ast.Term
	n := 0
	add := func(key, val *ast.Term) {
		items[n] = [2]*ast.Term{key, val}
		n++
	}
	add(k.specversion, k.str(e.SpecVersion))
	add(k.id, ast.StringTerm(e.ID))
	add(k.source, k.str(e.Source))
	add(k.typ, k.str(e.Type))
	add(k.subject, ast.StringTerm(e.Subject))
	add(k.time, timeTerm(e.Time))
	if e.DataContentType != "" {
		add(k.dct, k.str(e.DataContentType))
	}
	add(k.status, k.str(e.Status))
	add(k.key, ast.StringTerm(e.Key))
	if withData && len(e.Data) > 0 {
		v, err := jsonValue(e.Data)
		if err != nil {
			return nil, fmt.Errorf("event %q: data: %w", e.ID, err)
		}
		add(k.d, ast.NewTerm(v))
	}
	return ast.NewObject(items[:n]...), nil
}

// str returns a term for s, shared when s is one of the strings known in
// advance (see newInputKeys) so that it need not be allocated.
func (k *inputKeys) str(s string) *ast.Term {
	if t, ok := k.strings[s]; ok {
		return t
	}
	return ast.StringTerm(s)
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
