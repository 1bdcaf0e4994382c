package policies

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"maps"
	"strings"
	"sync/atomic"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/metrics"
	"github.com/open-policy-agent/opa/v1/rego"
	"github.com/open-policy-agent/opa/v1/storage/inmem"
	"github.com/open-policy-agent/opa/v1/tester"
	"github.com/open-policy-agent/opa/v1/topdown"
)

// Query is the Rego query healer evaluates for every event.
const Query = "data.healer.decision"

// Policy is a loaded, tested and compiled set of policies, ready to decide.
// It is safe for concurrent use.
type Policy struct {
	// Dir is the directory the policy was loaded from, "" for the defaults.
	Dir string
	// Revision identifies the files' contents, see [Revision].
	Revision string
	// Files are the .rego file names, relative to Dir.
	Files []string
	// Tests is the number of Rego tests that passed when the policy loaded.
	Tests int

	query   rego.PreparedEvalQuery
	input   *inputBuilder
	output  *outputKeys
	metrics metrics.Metrics
}

// Load reads the policies in dir ("" for the embedded defaults), runs
// their Rego unit tests and prepares data.healer.decision for evaluation.
// A policy that does not parse or compile, calls a builtin healer keeps
// out of policies (see [BuiltinError]), does not define
// data.healer.decision, or fails or errors in any of its own tests is
// refused, with an error naming the file or the tests.
func Load(ctx context.Context, dir string) (*Policy, error) {
	src, err := ReadSource(dir)
	if err != nil {
		return nil, err
	}
	where := cmp.Or(dir, EmbeddedName)
	results, err := src.RunTests(ctx, TestOptions{})
	if err != nil {
		return nil, err
	}
	if err := testFailures(results); err != nil {
		return nil, fmt.Errorf("policy dir %s (%s): refused: %w", where, src.Revision, err)
	}

	// Decisions are made by the policy files alone: test files are left
	// out, and print() calls are compiled away.
	modules := maps.Clone(src.modules)
	maps.DeleteFunc(modules, func(name string, _ *ast.Module) bool { return src.tests[name] })
	caps := sandboxCapabilities()
	compiler := ast.NewCompiler().WithCapabilities(caps).WithEnablePrintStatements(false)
	if compiler.Compile(modules); compiler.Failed() {
		return nil, &CompileError{Source: where, Err: compiler.Errors}
	}
	ref := ast.Ref{ast.DefaultRootDocument, ast.StringTerm("healer"), ast.StringTerm("decision")}
	if len(compiler.GetRulesExact(ref)) == 0 {
		return nil, fmt.Errorf("policy dir %s: no rule %s outside the _test.rego files", where, Query)
	}
	query, err := rego.New(
		rego.Query(Query),
		rego.Compiler(compiler),
		rego.Store(inmem.New()),
		rego.Capabilities(caps),
	).PrepareForEval(ctx)
	if err != nil {
		return nil, fmt.Errorf("policy dir %s: prepare %s: %w", where, Query, err)
	}
	return &Policy{
		Dir:      dir,
		Revision: src.Revision,
		Files:    src.Files,
		Tests:    passed(results),
		query:    query,
		input:    newInputBuilder(compiler.Modules),
		output:   newOutputKeys(),
		metrics:  metrics.NoOp(),
	}, nil
}

// testFailures returns an error listing the tests that failed or errored.
func testFailures(results []*tester.Result) error {
	var errs []error
	for _, r := range results {
		switch {
		case r.Error != nil:
			errs = append(errs, fmt.Errorf("test %s.%s (%s): error: %w", r.Package, r.Name, location(r), r.Error))
		case r.Fail:
			errs = append(errs, fmt.Errorf("test %s.%s (%s) failed", r.Package, r.Name, location(r)))
		}
	}
	return errors.Join(errs...)
}

func passed(results []*tester.Result) int {
	n := 0
	for _, r := range results {
		if r.Pass() {
			n++
		}
	}
	return n
}

func location(r *tester.Result) string {
	if r.Location == nil {
		return "unknown location"
	}
	return fmt.Sprintf("%s:%d", r.Location.File, r.Location.Row)
}

// Decide evaluates data.healer.decision for in. When the policy defines no
// decision for the input, the result is a Decision that does nothing with
// Reason NoRuleMatched. A result that does not fit the decision contract is
// an error naming the field.
func (p *Policy) Decide(ctx context.Context, in *Input) (Decision, error) {
	if in == nil || in.Event == nil {
		return Decision{}, fmt.Errorf("policy %s: decide: no event", p)
	}
	if err := ctx.Err(); err != nil {
		return Decision{}, fmt.Errorf("policy %s: decide event %q: %w", p, in.Event.ID, err)
	}
	input, err := p.input.value(in)
	if err != nil {
		return Decision{}, fmt.Errorf("policy %s: decide: %w", p, err)
	}
	v, err := p.eval(ctx, in, input)
	if err != nil {
		return Decision{}, fmt.Errorf("policy %s: decide event %q: %w", p, in.Event.ID, err)
	}
	if v == nil {
		return Decision{Approval: ApprovalNone, Reason: NoRuleMatched}, nil
	}
	d, err := p.output.decision(v)
	if err == nil {
		err = d.Validate()
	}
	if err != nil {
		return Decision{}, fmt.Errorf("policy %s: event %q: %w", p, in.Event.ID, err)
	}
	return d, nil
}

// eval runs the prepared query and returns the decision's value, nil when
// it is undefined. It skips what a plain Eval would spend per call on
// metrics, a cancellation goroutine and converting the result to Go values.
func (p *Policy) eval(ctx context.Context, in *Input, input ast.Value) (ast.Value, error) {
	opts := make([]rego.EvalOption, 0, 6)
	opts = append(opts,
		rego.EvalParsedInput(input),
		rego.EvalMetrics(p.metrics),
		rego.EvalGenerateJSON(keepTerm),
	)
	if !in.Context.Now.IsZero() {
		opts = append(opts, rego.EvalTime(in.Context.Now))
	}
	// A cancel that the context triggers, without the goroutine per
	// evaluation that Eval would otherwise start to watch the context.
	cancel := topdown.NewCancel()
	opts = append(opts, rego.EvalExternalCancel(cancel))
	if ctx.Done() != nil {
		stop := context.AfterFunc(ctx, cancel.Cancel)
		defer stop()
	}
	rs, err := p.query.Eval(ctx, opts...)
	if err != nil {
		return nil, err
	}
	switch {
	case len(rs) == 0:
		return nil, nil
	case len(rs) > 1 || len(rs[0].Expressions) != 1:
		return nil, fmt.Errorf("%s: %d results, want one", Query, len(rs))
	}
	t, ok := rs[0].Expressions[0].Value.(*ast.Term)
	if !ok {
		return nil, fmt.Errorf("%s: unexpected result type %T", Query, rs[0].Expressions[0].Value)
	}
	return t.Value, nil
}

// keepTerm is the result converter that leaves results as AST terms.
func keepTerm(t *ast.Term, _ *rego.EvalContext) (any, error) { return t, nil }

// String names the policy by its source and revision.
func (p *Policy) String() string {
	return fmt.Sprintf("%s@%s", cmp.Or(p.Dir, EmbeddedName), shortRevision(p.Revision))
}

func shortRevision(rev string) string {
	hexPart := strings.TrimPrefix(rev, "sha256:")
	if len(hexPart) > 12 {
		hexPart = hexPart[:12]
	}
	return hexPart
}

// Holder holds the policy in use, for concurrent readers and a writer that
// swaps it when a new revision loads.
type Holder struct {
	p atomic.Pointer[Policy]
}

// NewHolder returns a Holder holding p, which may be nil.
func NewHolder(p *Policy) *Holder {
	h := &Holder{}
	h.p.Store(p)
	return h
}

// Current returns the policy in use, nil if none was set.
func (h *Holder) Current() *Policy { return h.p.Load() }

// Set makes p the policy in use.
func (h *Holder) Set(p *Policy) { h.p.Store(p) }
