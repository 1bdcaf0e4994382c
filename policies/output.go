package policies

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"
)

// outputKeys are the keys of the decision document, made once per policy.
type outputKeys struct {
	remediator, params, approval, rateLimit, rateLimits, dryRun, reason, rule *ast.Term
	limitKey, limitMax, limitPer                                              *ast.Term
	steps, wait, escalate                                                     *ast.Term
}

func newOutputKeys() *outputKeys {
	s := ast.StringTerm
	return &outputKeys{
		remediator: s("remediator"), params: s("params"), approval: s("approval"),
		rateLimit: s("rate_limit"), rateLimits: s("rate_limits"), dryRun: s("dry_run"),
		reason: s("reason"), rule: s("rule"),
		limitKey: s("key"), limitMax: s("max"), limitPer: s("per"),
		steps: s("steps"), wait: s("wait"), escalate: s("escalate"),
	}
}

// decision converts the value of data.healer.decision into a Decision,
// checking each field's type; it does not call Validate. Unknown fields
// are refused: a misspelt "rate_limit" silently ignored would lift a limit
// the policy author meant to set.
func (k *outputKeys) decision(v ast.Value) (Decision, error) {
	var d Decision
	obj, ok := v.(ast.Object)
	if !ok {
		return d, fmt.Errorf("decision: want an object, got %s", ast.ValueName(v))
	}
	found := 0
	get := func(key *ast.Term) ast.Value {
		t := obj.Get(key)
		if t == nil {
			return nil
		}
		found++
		return t.Value
	}
	var err error
	if v := get(k.remediator); v != nil && err == nil {
		d.Remediator, err = stringField("remediator", v)
	}
	if v := get(k.params); v != nil && err == nil {
		d.Params, err = paramsField(v)
	}
	if v := get(k.approval); v != nil && err == nil {
		d.Approval, err = stringField("approval", v)
	}
	if v := get(k.rateLimit); v != nil && err == nil {
		if _, null := v.(ast.Null); !null {
			var l RateLimit
			l, err = k.rateLimitField("rate_limit", v)
			d.RateLimit = &l
		}
	}
	if v := get(k.rateLimits); v != nil && err == nil {
		d.RateLimits, err = k.rateLimitsField(v)
	}
	if v := get(k.dryRun); v != nil && err == nil {
		d.DryRun, err = boolField("dry_run", v)
	}
	if v := get(k.reason); v != nil && err == nil {
		d.Reason, err = stringField("reason", v)
	}
	if v := get(k.rule); v != nil && err == nil {
		d.Rule, err = stringField("rule", v)
	}
	if v := get(k.steps); v != nil && err == nil {
		d.Steps, err = k.stepsField(v)
	}
	if err == nil && found < obj.Len() {
		err = unknownField(obj, "remediator, params, approval, rate_limit, rate_limits, dry_run, reason, rule, steps",
			k.remediator, k.params, k.approval, k.rateLimit, k.rateLimits, k.dryRun, k.reason, k.rule, k.steps)
	}
	if err != nil {
		return Decision{}, fmt.Errorf("decision: %w", err)
	}
	return d, nil
}

// unknownField returns an error naming the first key of obj that is not
// one of known.
func unknownField(obj ast.Object, list string, known ...*ast.Term) error {
	for _, key := range obj.Keys() {
		if !slices.ContainsFunc(known, key.Equal) {
			if s, ok := key.Value.(ast.String); ok {
				return fmt.Errorf("unknown field %q (known: %s)", string(s), list)
			}
			return fmt.Errorf("unknown field %v (known: %s)", key, list)
		}
	}
	return nil
}

func stringField(field string, v ast.Value) (string, error) {
	switch s := v.(type) {
	case ast.String:
		return string(s), nil
	case ast.Null:
		return "", nil
	default:
		return "", fmt.Errorf("%s: want a string, got %s", field, ast.ValueName(v))
	}
}

func boolField(field string, v ast.Value) (bool, error) {
	switch b := v.(type) {
	case ast.Boolean:
		return bool(b), nil
	case ast.Null:
		return false, nil
	default:
		return false, fmt.Errorf("%s: want a boolean, got %s", field, ast.ValueName(v))
	}
}

func paramsField(v ast.Value) (map[string]any, error) {
	switch v.(type) {
	case ast.Object:
	case ast.Null:
		return nil, nil
	default:
		return nil, fmt.Errorf("params: want an object, got %s", ast.ValueName(v))
	}
	x, err := goValue(v)
	if err != nil {
		return nil, fmt.Errorf("params%w", err)
	}
	m, _ := x.(map[string]any)
	return m, nil
}

// valueError is a value that JSON cannot hold, at path (".a[1]") within
// the value being converted.
type valueError struct {
	path string
	msg  string
}

func (e *valueError) Error() string { return e.path + ": " + e.msg }

// goValue converts v to the Go value encoding/json would decode its JSON
// form into: numbers are float64 and sets become sorted arrays.
func goValue(v ast.Value) (any, error) {
	switch x := v.(type) {
	case ast.Null:
		return nil, nil
	case ast.Boolean:
		return bool(x), nil
	case ast.String:
		return string(x), nil
	case ast.Number:
		f, ok := x.Float64()
		if !ok || math.IsInf(f, 0) {
			return nil, &valueError{msg: fmt.Sprintf("number %s out of range", x)}
		}
		return f, nil
	case *ast.Array:
		out := make([]any, x.Len())
		for i := range out {
			e, err := goValue(x.Elem(i).Value)
			if err != nil {
				return nil, within(fmt.Sprintf("[%d]", i), err)
			}
			out[i] = e
		}
		return out, nil
	case ast.Set:
		return goValue(x.Sorted())
	case ast.Object:
		out := make(map[string]any, x.Len())
		err := x.Iter(func(k, t *ast.Term) error {
			ks, ok := k.Value.(ast.String)
			if !ok {
				return &valueError{msg: fmt.Sprintf("key %v: want a string", k)}
			}
			e, err := goValue(t.Value)
			if err != nil {
				return within("."+string(ks), err)
			}
			out[string(ks)] = e
			return nil
		})
		return out, err
	default:
		return nil, &valueError{msg: ast.ValueName(v) + " is not JSON"}
	}
}

// within prefixes the path of a *valueError with segment.
func within(segment string, err error) error {
	var ve *valueError
	if errors.As(err, &ve) {
		return &valueError{path: segment + ve.path, msg: ve.msg}
	}
	return err
}

func (k *outputKeys) rateLimitsField(v ast.Value) ([]RateLimit, error) {
	var arr *ast.Array
	switch x := v.(type) {
	case ast.Null:
		return nil, nil
	case *ast.Array:
		arr = x
	case ast.Set:
		arr = x.Sorted()
	default:
		return nil, fmt.Errorf("rate_limits: want an array, got %s", ast.ValueName(v))
	}
	if arr.Len() == 0 {
		return nil, nil
	}
	out := make([]RateLimit, arr.Len())
	for i := range out {
		l, err := k.rateLimitField(fmt.Sprintf("rate_limits[%d]", i), arr.Elem(i).Value)
		if err != nil {
			return nil, err
		}
		out[i] = l
	}
	return out, nil
}

func (k *outputKeys) rateLimitField(field string, v ast.Value) (RateLimit, error) {
	var l RateLimit
	obj, ok := v.(ast.Object)
	if !ok {
		return l, fmt.Errorf("%s: want an object, got %s", field, ast.ValueName(v))
	}
	found := 0
	var err error
	if t := obj.Get(k.limitKey); t != nil {
		found++
		l.Key, err = stringField(field+".key", t.Value)
	}
	if t := obj.Get(k.limitMax); t != nil && err == nil {
		found++
		l.Max, err = intField(field+".max", t.Value)
	}
	if t := obj.Get(k.limitPer); t != nil && err == nil {
		found++
		l.Per, err = durationField(field+".per", t.Value)
	}
	if err == nil && found < obj.Len() {
		if err = unknownField(obj, "key, max, per", k.limitKey, k.limitMax, k.limitPer); err != nil {
			err = fmt.Errorf("%s: %w", field, err)
		}
	}
	return l, err
}

func intField(field string, v ast.Value) (int, error) {
	n, ok := v.(ast.Number)
	if !ok {
		return 0, fmt.Errorf("%s: want a whole number, got %s", field, ast.ValueName(v))
	}
	i, ok := n.Int()
	if !ok {
		return 0, fmt.Errorf("%s: want a whole number, got %s", field, n)
	}
	return i, nil
}

func durationField(field string, v ast.Value) (time.Duration, error) {
	switch x := v.(type) {
	case ast.String:
		d, err := time.ParseDuration(string(x))
		if err != nil {
			return 0, fmt.Errorf("%s: %w", field, err)
		}
		return d, nil
	case ast.Number:
		d, err := secondsDuration(string(x))
		if err != nil {
			return 0, fmt.Errorf("%s: %w", field, err)
		}
		return d, nil
	default:
		return 0, fmt.Errorf("%s: want a duration string or a number of seconds, got %s", field, ast.ValueName(v))
	}
}

// stepsField reads the steps of an escalation ladder: an array of
// {"remediator", "params", "wait", "escalate"} objects.
func (k *outputKeys) stepsField(v ast.Value) ([]Step, error) {
	arr, ok := v.(*ast.Array)
	if !ok {
		return nil, fmt.Errorf("steps: want an array, got %s", ast.ValueName(v))
	}
	if arr.Len() == 0 {
		return nil, nil // no ladder: the decision's remediator alone
	}
	steps := make([]Step, 0, arr.Len())
	for i := range arr.Len() {
		obj, ok := arr.Elem(i).Value.(ast.Object)
		if !ok {
			return nil, fmt.Errorf("steps[%d]: want an object, got %s", i, ast.ValueName(arr.Elem(i).Value))
		}
		var st Step
		var err error
		found := 0
		if t := obj.Get(k.remediator); t != nil {
			found++
			st.Remediator, err = stringField(fmt.Sprintf("steps[%d].remediator", i), t.Value)
		}
		if t := obj.Get(k.params); t != nil && err == nil {
			found++
			st.Params, err = paramsField(t.Value)
		}
		if t := obj.Get(k.wait); t != nil && err == nil {
			found++
			st.Wait, err = durationField(fmt.Sprintf("steps[%d].wait", i), t.Value)
		}
		if t := obj.Get(k.escalate); t != nil && err == nil {
			found++
			st.Escalate, err = stringField(fmt.Sprintf("steps[%d].escalate", i), t.Value)
		}
		if err == nil && found < obj.Len() {
			err = unknownField(obj, "remediator, params, wait, escalate", k.remediator, k.params, k.wait, k.escalate)
		}
		if err != nil {
			return nil, fmt.Errorf("steps[%d]: %w", i, err)
		}
		steps = append(steps, st)
	}
	return steps, nil
}
