package policies

import (
	"fmt"
	"math"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"
)

// decisionFromValue converts the value of data.healer.decision into a
// Decision, checking each field's type; it does not call Validate.
// Unknown fields are refused: a misspelt "rate_limit" silently ignored
// would lift a limit the policy author meant to set.
func decisionFromValue(v ast.Value) (Decision, error) {
	var d Decision
	obj, ok := v.(ast.Object)
	if !ok {
		return d, fmt.Errorf("decision: want an object, got %s", ast.ValueName(v))
	}
	err := obj.Iter(func(k, val *ast.Term) error {
		name, ok := k.Value.(ast.String)
		if !ok {
			return fmt.Errorf("decision: key %v: want a string", k)
		}
		var err error
		switch field := string(name); field {
		case "remediator":
			d.Remediator, err = stringField(field, val.Value)
		case "params":
			d.Params, err = paramsField(val.Value)
		case "approval":
			d.Approval, err = stringField(field, val.Value)
		case "rate_limit":
			if _, null := val.Value.(ast.Null); null {
				return nil
			}
			var l RateLimit
			l, err = rateLimitField(field, val.Value)
			d.RateLimit = &l
		case "rate_limits":
			d.RateLimits, err = rateLimitsField(val.Value)
		case "dry_run":
			d.DryRun, err = boolField(field, val.Value)
		case "reason":
			d.Reason, err = stringField(field, val.Value)
		case "rule":
			d.Rule, err = stringField(field, val.Value)
		default:
			return fmt.Errorf("decision: unknown field %q (known: remediator, params, approval, rate_limit, rate_limits, dry_run, reason, rule)", field)
		}
		if err != nil {
			return fmt.Errorf("decision: %w", err)
		}
		return nil
	})
	return d, err
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
	x, err := goValue("params", v)
	if err != nil {
		return nil, err
	}
	m, _ := x.(map[string]any)
	return m, nil
}

// goValue converts v to the Go value encoding/json would decode its JSON
// form into: numbers are float64 and sets become arrays.
func goValue(path string, v ast.Value) (any, error) {
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
			return nil, fmt.Errorf("%s: number %s out of range", path, x)
		}
		return f, nil
	case *ast.Array:
		out := make([]any, x.Len())
		for i := range x.Len() {
			e, err := goValue(fmt.Sprintf("%s[%d]", path, i), x.Elem(i).Value)
			if err != nil {
				return nil, err
			}
			out[i] = e
		}
		return out, nil
	case ast.Set:
		return goValue(path, x.Sorted())
	case ast.Object:
		out := make(map[string]any, x.Len())
		err := x.Iter(func(k, t *ast.Term) error {
			ks, ok := k.Value.(ast.String)
			if !ok {
				return fmt.Errorf("%s: key %v: want a string", path, k)
			}
			e, err := goValue(path+"."+string(ks), t.Value)
			if err != nil {
				return err
			}
			out[string(ks)] = e
			return nil
		})
		return out, err
	default:
		return nil, fmt.Errorf("%s: %s is not JSON", path, ast.ValueName(v))
	}
}

func rateLimitsField(v ast.Value) ([]RateLimit, error) {
	var elems []*ast.Term
	switch x := v.(type) {
	case ast.Null:
		return nil, nil
	case *ast.Array:
		elems = make([]*ast.Term, x.Len())
		for i := range elems {
			elems[i] = x.Elem(i)
		}
	case ast.Set:
		sorted := x.Sorted()
		elems = make([]*ast.Term, sorted.Len())
		for i := range elems {
			elems[i] = sorted.Elem(i)
		}
	default:
		return nil, fmt.Errorf("rate_limits: want an array, got %s", ast.ValueName(v))
	}
	if len(elems) == 0 {
		return nil, nil
	}
	out := make([]RateLimit, len(elems))
	for i, t := range elems {
		l, err := rateLimitField(fmt.Sprintf("rate_limits[%d]", i), t.Value)
		if err != nil {
			return nil, err
		}
		out[i] = l
	}
	return out, nil
}

func rateLimitField(field string, v ast.Value) (RateLimit, error) {
	var l RateLimit
	obj, ok := v.(ast.Object)
	if !ok {
		return l, fmt.Errorf("%s: want an object, got %s", field, ast.ValueName(v))
	}
	err := obj.Iter(func(k, val *ast.Term) error {
		name, _ := k.Value.(ast.String)
		var err error
		switch string(name) {
		case "key":
			l.Key, err = stringField(field+".key", val.Value)
		case "max":
			l.Max, err = intField(field+".max", val.Value)
		case "per":
			l.Per, err = durationField(field+".per", val.Value)
		default:
			err = fmt.Errorf("%s: unknown field %v (known: key, max, per)", field, k)
		}
		return err
	})
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
