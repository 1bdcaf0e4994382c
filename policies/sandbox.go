package policies

import (
	"cmp"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/open-policy-agent/opa/v1/ast"
)

// deniedBuiltin says why healer keeps an OPA builtin out of its policies,
// or returns "" when policies may call it. A decision is made from the
// event and the engine's context alone: a policy that could reach the
// network, read files or read the process's environment would turn
// healer's cluster powers and secrets into the policy author's, and could
// hang every decision on a slow peer. This is the one list; Load and
// RunTests refuse a policy that calls any of these, and the compiler is
// given capabilities without them (see sandboxCapabilities).
//
// Kept on purpose: time.now_ns (the engine sets the evaluation time to
// the event's decision time), rand.intn and uuid.rfc4122 (not
// deterministic, but they reach nothing), trace and print (print calls are
// compiled out of decisions), io.jwt.* and crypto.* (they verify with the
// keys given, and fetch none), time.* with a zone name (Go refuses zone
// names that are paths).
func deniedBuiltin(name string) string {
	switch {
	case name == "http.send":
		// Any URL healer's pod can reach (cloud metadata endpoints,
		// in-cluster services), with the event's data in the request;
		// and a slow server stalls the decision.
		return "network"
	case name == "net.lookup_ip_addr":
		// A DNS query to any name, which also carries data out.
		return "network: DNS lookups"
	case strings.HasPrefix(name, "net."):
		// The net.cidr_* functions are arithmetic, but the family is
		// kept out whole, as the trust boundary promises, so that no one
		// has to sort a new member of it when OPA adds one; net.cidr_expand
		// would besides build every address of a range. Events carry the
		// addresses policies need.
		return "network builtins (net.*) are kept out as a family"
	case name == "opa.runtime":
		// healer's environment (HEALER_* tokens and secrets) and config.
		return "runtime: it reads healer's environment"
	case name == "json.match_schema", name == "json.verify_schema":
		// A schema's $ref is loaded: file:// reads any local file (allow_net
		// does not cover files), http:// fetches.
		return "a schema's $ref reads local files and fetches URLs"
	}
	return ""
}

// sandboxCapabilities are the capabilities healer compiles and evaluates
// policies with: this OPA's builtins less the denied ones, and no host to
// connect to (an empty, not absent, allow_net).
func sandboxCapabilities() *ast.Capabilities {
	caps := ast.CapabilitiesForThisVersion()
	caps.Builtins = slices.DeleteFunc(caps.Builtins, func(b *ast.Builtin) bool { return deniedBuiltin(b.Name) != "" })
	caps.AllowNet = []string{}
	return caps
}

// BuiltinError is a policy's use of a builtin healer does not allow: a
// call, or a with that replaces it in a test.
type BuiltinError struct {
	// File is the policy file's display name (directory and file).
	File string
	Row  int
	// Builtin is the builtin's name, such as http.send.
	Builtin string
	// Why is the reason the builtin is not allowed.
	Why string
}

// Error names the file, line and builtin, and says why.
func (e *BuiltinError) Error() string {
	return fmt.Sprintf("policy %s:%d: builtin %s is not allowed in healer policies (%s)", e.File, e.Row, e.Builtin, e.Why)
}

// checkSandbox returns a *BuiltinError for every use of a denied builtin
// in modules (keyed by display name), sorted by file and line, joined.
func checkSandbox(modules map[string]*ast.Module) error {
	var found []*BuiltinError
	for _, file := range slices.Sorted(maps.Keys(modules)) {
		seen := map[BuiltinError]bool{}
		use := func(ref ast.Ref, loc *ast.Location) {
			name := ref.String()
			why := deniedBuiltin(name)
			if why == "" {
				return
			}
			e := BuiltinError{File: file, Builtin: name, Why: why}
			if loc != nil {
				e.Row = loc.Row
			}
			if !seen[e] {
				seen[e] = true
				found = append(found, &e)
			}
		}
		ast.NewGenericVisitor(func(x any) bool {
			switch x := x.(type) {
			case *ast.Expr:
				if x.IsCall() {
					use(x.Operator(), x.Location)
				}
				for _, w := range x.With {
					if ref, ok := w.Target.Value.(ast.Ref); ok {
						use(ref, w.Location)
					}
				}
			case *ast.Term:
				// A call nested in a term: an argument, a rule's value,
				// a template string's part.
				if call, ok := x.Value.(ast.Call); ok && len(call) > 0 {
					if ref, ok := call[0].Value.(ast.Ref); ok {
						use(ref, x.Location)
					}
				}
			}
			return false
		}).Walk(modules[file])
	}
	slices.SortStableFunc(found, func(a, b *BuiltinError) int {
		return cmp.Or(strings.Compare(a.File, b.File), cmp.Compare(a.Row, b.Row))
	})
	errs := make([]error, len(found))
	for i, e := range found {
		errs[i] = e
	}
	return errors.Join(errs...)
}
