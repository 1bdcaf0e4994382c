package policies

import (
	"bytes"
	"encoding/json"
	"fmt"
	"sync/atomic"
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
	// Zone is the failure domain (topology.kubernetes.io/zone) of the
	// event's node, with that zone's own count and limit.
	Zone             string `json:"zone"`
	ZoneNodes        int    `json:"zone_nodes"`
	ZoneOutOfService int    `json:"zone_out_of_service"`
	ZoneAllowed      int    `json:"zone_allowed"`
}

// RecentAction is one action the engine took recently.
type RecentAction struct {
	Remediator string    `json:"remediator"`
	Target     string    `json:"target"`
	Time       time.Time `json:"time"`
	Result     string    `json:"result"`
}

// inputBuilder builds input documents for one policy. It holds the object
// keys of the document, terms for strings likely to occur in it, and what
// the policy can read, all made once when the policy loads so that building
// an input does not redo them; and it remembers the last budget, which
// rarely changes between events. It is safe for concurrent use.
type inputBuilder struct {
	// strings are terms for known strings; the map is never modified.
	strings map[string]*ast.Term
	use     inputUse
	// emptyArray stands for recent actions the policy cannot read.
	emptyArray *ast.Term
	lastBudget atomic.Pointer[budgetTerm]

	event, context                                                   *ast.Term
	specversion, id, source, typ, subject, time, dct, status, key, d *ast.Term
	now, budget, recentActions                                       *ast.Term
	totalNodes, outOfService, inFlight, allowed, available, known    *ast.Term
	zone, zoneNodes, zoneOutOfService, zoneAllowed                   *ast.Term
	remediator, target, result                                       *ast.Term
}

// budgetTerm is a budget and its term.
type budgetTerm struct {
	budget Budget
	term   *ast.Term
}

// newInputBuilder returns a builder for a policy made of the compiled
// modules. The strings it keeps terms for are the event envelope's values
// that vary little and the policy's string constants, which include the
// event types it looks for.
func newInputBuilder(modules map[string]*ast.Module) *inputBuilder {
	s := ast.StringTerm
	known := append([]string{bus.SpecVersion, bus.StatusFiring, bus.StatusResolved, "application/json"}, stringConstants(modules)...)
	strs := make(map[string]*ast.Term, len(known))
	for _, v := range known {
		strs[v] = s(v)
	}
	return &inputBuilder{
		strings: strs, use: inputUseOf(modules), emptyArray: ast.ArrayTerm(),
		event: s("event"), context: s("context"),
		specversion: s("specversion"), id: s("id"), source: s("source"), typ: s("type"),
		subject: s("subject"), time: s("time"), dct: s("datacontenttype"), status: s("status"),
		key: s("key"), d: s("data"),
		now: s("now"), budget: s("budget"), recentActions: s("recent_actions"),
		totalNodes: s("total_nodes"), outOfService: s("out_of_service"), inFlight: s("in_flight"),
		allowed: s("allowed"), available: s("available"), known: s("known"),
		zone: s("zone"), zoneNodes: s("zone_nodes"), zoneOutOfService: s("zone_out_of_service"), zoneAllowed: s("zone_allowed"),
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
	data bool // input.event.data
	// dataKeys, when data is read only as input.event.data.<key> with
	// constant keys, holds those keys: only they are converted. Nil means
	// the whole of data may be read.
	dataKeys      map[string]bool
	recentActions bool // input.context.recent_actions
}

// inputUseOf finds out, from every reference to input in the compiled
// modules, which costly parts of the input they can reach. A reference
// reaches a part when it names the part, something inside it, something
// containing it (input.event, or input itself), or takes a key that is not
// a constant on the way there (input.event[k]).
func inputUseOf(modules map[string]*ast.Module) inputUse {
	var u inputUse
	keys, allData := map[string]bool{}, false
	for _, m := range modules {
		ast.WalkRefs(m, func(r ast.Ref) bool {
			if !r[0].Equal(ast.InputRootDocument) {
				return false
			}
			if reaches(r, "event", "data") {
				u.data = true
				if k, ok := dataKey(r); ok {
					keys[k] = true
				} else {
					allData = true
				}
			}
			u.recentActions = u.recentActions || reaches(r, "context", "recent_actions")
			return false
		})
	}
	if u.data && !allData {
		u.dataKeys = keys
	}
	return u
}

// dataKey returns the key of a reference input.event.data.<key>… whose key
// is a constant; anything else (input.event.data itself, a variable key,
// input.event) may read all of data.
func dataKey(r ast.Ref) (string, bool) {
	if len(r) < 4 {
		return "", false
	}
	k, ok := r[3].Value.(ast.String)
	return string(k), ok
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
func (b *inputBuilder) value(in *Input) (ast.Value, error) {
	ev, err := b.eventValue(in.Event)
	if err != nil {
		return nil, err
	}
	c := &in.Context
	recent := b.emptyArray
	if b.use.recentActions && len(c.RecentActions) > 0 {
		terms := make([]*ast.Term, len(c.RecentActions))
		for i := range c.RecentActions {
			a := &c.RecentActions[i]
			terms[i] = ast.NewTerm(ast.NewObject(
				[2]*ast.Term{b.remediator, b.str(a.Remediator)},
				[2]*ast.Term{b.target, b.str(a.Target)},
				[2]*ast.Term{b.time, timeTerm(a.Time)},
				[2]*ast.Term{b.result, b.str(a.Result)},
			))
		}
		recent = ast.ArrayTerm(terms...)
	}
	ctx := ast.NewObject(
		[2]*ast.Term{b.now, timeTerm(c.Now)},
		[2]*ast.Term{b.budget, b.budgetTerm(c.Budget)},
		[2]*ast.Term{b.recentActions, recent},
	)
	return ast.NewObject(
		[2]*ast.Term{b.event, ast.NewTerm(ev)},
		[2]*ast.Term{b.context, ast.NewTerm(ctx)},
	), nil
}

// budgetTerm returns the term for bu, reusing the last one when the budget
// has not changed.
func (b *inputBuilder) budgetTerm(bu Budget) *ast.Term {
	if last := b.lastBudget.Load(); last != nil && last.budget == bu {
		return last.term
	}
	t := ast.NewTerm(ast.NewObject(
		[2]*ast.Term{b.totalNodes, ast.InternedTerm(bu.TotalNodes)},
		[2]*ast.Term{b.outOfService, ast.InternedTerm(bu.OutOfService)},
		[2]*ast.Term{b.inFlight, ast.InternedTerm(bu.InFlight)},
		[2]*ast.Term{b.allowed, ast.InternedTerm(bu.Allowed)},
		[2]*ast.Term{b.available, ast.InternedTerm(bu.Available)},
		[2]*ast.Term{b.known, ast.InternedTerm(bu.Known)},
		[2]*ast.Term{b.zone, ast.StringTerm(bu.Zone)},
		[2]*ast.Term{b.zoneNodes, ast.InternedTerm(bu.ZoneNodes)},
		[2]*ast.Term{b.zoneOutOfService, ast.InternedTerm(bu.ZoneOutOfService)},
		[2]*ast.Term{b.zoneAllowed, ast.InternedTerm(bu.ZoneAllowed)},
	))
	b.lastBudget.Store(&budgetTerm{budget: bu, term: t})
	return t
}

func (b *inputBuilder) eventValue(e *bus.Event) (ast.Value, error) {
	if e == nil {
		return nil, fmt.Errorf("decision input: no event")
	}
	var items [10][2]*ast.Term
	n := 0
	add := func(key, val *ast.Term) {
		items[n] = [2]*ast.Term{key, val}
		n++
	}
	add(b.specversion, b.str(e.SpecVersion))
	add(b.id, ast.StringTerm(e.ID))
	add(b.source, b.str(e.Source))
	add(b.typ, b.str(e.Type))
	add(b.subject, ast.StringTerm(e.Subject))
	add(b.time, timeTerm(e.Time))
	if e.DataContentType != "" {
		add(b.dct, b.str(e.DataContentType))
	}
	add(b.status, b.str(e.Status))
	add(b.key, ast.StringTerm(e.Key))
	if b.use.data && len(e.Data) > 0 {
		v, err := dataValue(e.Data, b.use.dataKeys)
		if err != nil {
			return nil, fmt.Errorf("event %q: data: %w", e.ID, err)
		}
		add(b.d, ast.NewTerm(v))
	}
	return ast.NewObject(items[:n]...), nil
}

// str returns a term for s, shared when s is one of the strings known in
// advance so that it need not be allocated.
func (b *inputBuilder) str(s string) *ast.Term {
	if t, ok := b.strings[s]; ok {
		return t
	}
	return ast.StringTerm(s)
}

// dataValue converts an event's data for the policy: all of it when keys
// is nil, else an object of just those top-level keys (the rest cannot be
// read by the policy, and converting large alert labels costs time).
func dataValue(b []byte, keys map[string]bool) (ast.Value, error) {
	if keys == nil {
		return jsonValue(b)
	}
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(b, &obj); err != nil {
		return jsonValue(b) // not an object: the policy reads no key of it; keep it as it is
	}
	items := make([][2]*ast.Term, 0, len(keys))
	for k := range keys {
		raw, ok := obj[k]
		if !ok {
			continue
		}
		v, err := jsonValue(raw)
		if err != nil {
			return nil, fmt.Errorf("key %q: %w", k, err)
		}
		items = append(items, [2]*ast.Term{ast.StringTerm(k), ast.NewTerm(v)})
	}
	return ast.NewObject(items...), nil
}

// jsonValue parses one JSON value, keeping numbers exact.
func jsonValue(b []byte) (ast.Value, error) {
	var x any
	if err := util.UnmarshalJSON(bytes.TrimSpace(b), &x); err != nil {
		return nil, err
	}
	v, err := ast.InterfaceToValue(x)
	if err != nil {
		// A number Rego cannot hold (1E100000) is valid JSON: keep it as
		// its text rather than leave the event without a decision.
		v, err = ast.InterfaceToValue(oversizeNumbersAsText(x))
	}
	if err != nil {
		return nil, fmt.Errorf("convert JSON to Rego value: %w", err)
	}
	return v, nil
}

// oversizeNumbersAsText replaces, in a decoded JSON value, each number
// that Rego cannot represent with its text.
func oversizeNumbersAsText(x any) any {
	switch v := x.(type) {
	case json.Number:
		if _, err := ast.InterfaceToValue(v); err != nil {
			return string(v)
		}
		return v
	case map[string]any:
		for k, e := range v {
			v[k] = oversizeNumbersAsText(e)
		}
		return v
	case []any:
		for i, e := range v {
			v[i] = oversizeNumbersAsText(e)
		}
		return v
	default:
		return x
	}
}

// timeTerm formats t as encoding/json does.
func timeTerm(t time.Time) *ast.Term {
	return ast.StringTerm(t.Format(time.RFC3339Nano))
}
