package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"text/tabwriter"
	"time"

	"github.com/open-policy-agent/opa/v1/tester"

	"github.com/selfheal/healer/bus"
	"github.com/selfheal/healer/policies"
)

const policyUsage = `Usage:
  healer policy test DIR [-v] [--run REGEX] [-z]
  healer policy eval [--policies DIR] --input FILE [--format json|pretty]

test runs the Rego unit tests (rules named test_*, in any .rego file of DIR;
files are not read from subdirectories) the way "opa test" does, and prints
the results the same way. Exit codes, as for "opa test":
  0  all tests passed
  1  the policies could not be read or compiled, or healer would refuse them
  2  a test failed, errored or was skipped (todo_test_*; -z makes skips pass)
When every test passes (and no --run filter is given), test also checks that
healer would load DIR: data.healer.decision must be defined outside the
_test.rego files, which healer leaves out when it decides.

eval loads the policies as healer does (running their tests; a policy that
fails its own tests is refused) and prints the decision for one input:
  --policies DIR   the policy directory (default: the built-in policies)
  --input FILE     a full input document {"event": ..., "context": ...},
                   or a bare event. For a bare event the context is
                   {"now": <current time>, "budget": {"known": false},
                   "recent_actions": []}: an unknown budget, with which
                   policies should not act (the built-in ones do nothing for
                   a firing event). Write a full input document to set the
                   budget; see policies/testdata/kernel-deadlock.input.json.
                   A full document without context.now gets the current time.
  --format json    the decision as JSON, as the engine sees it (default)
  --format pretty  the decision as readable lines
Exit codes: 0 decided (also when the decision is to do nothing), 1 the input
or the policies are broken, 2 usage error.
`

// policyCmd runs "healer policy test|eval" with the arguments after
// "healer policy" and returns the exit code.
func policyCmd(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	return dispatch(ctx, "healer policy", policyUsage, map[string]command{"test": policyTest, "eval": policyEval}, args, stdout, stderr)
}

// Exit codes of "healer policy test", those of "opa test".
const (
	testExitPass   = 0
	testExitBroken = 1
	testExitFail   = 2
)

func policyTest(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := policyFlagSet("healer policy test", stderr)
	var (
		opts      policies.TestOptions
		skipsPass bool
	)
	fs.BoolVar(&opts.Verbose, "v", false, "list every test, not only failures, and explain failures")
	fs.BoolVar(&opts.Verbose, "verbose", false, "same as -v")
	fs.StringVar(&opts.Run, "run", "", "run only the tests whose full name (data.pkg.test_x) matches `REGEX`")
	fs.StringVar(&opts.Run, "r", "", "same as --run")
	fs.BoolVar(&skipsPass, "z", false, "skipped tests (todo_test_*) do not make the exit code 2")
	fs.BoolVar(&skipsPass, "exit-zero-on-skipped", false, "same as -z")
	fs.DurationVar(&opts.Timeout, "timeout", 5*time.Second, "time limit for each test")
	dirs, code, ok := parsePolicyFlags(fs, args)
	if !ok {
		return code
	}
	if len(dirs) != 1 {
		fmt.Fprintf(stderr, "healer policy test: want one policy directory, got %d arguments\n\n%s", len(dirs), policyUsage)
		return 2
	}
	dir := dirs[0]

	src, err := policies.ReadSource(dir)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return testExitBroken
	}
	results, err := src.RunTests(ctx, opts)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return testExitBroken
	}
	if len(results) == 0 {
		fmt.Fprintf(stderr, "healer policy test: no tests in %s\n", dir)
	}
	ch := make(chan *tester.Result, len(results))
	exit := testExitPass
	for _, r := range results {
		if !r.Pass() && (!r.Skip || !skipsPass) {
			exit = testExitFail
		}
		ch <- r
	}
	close(ch)
	reporter := tester.PrettyReporter{Output: stdout, Verbose: opts.Verbose, FailureLine: opts.Verbose}
	if err := reporter.Report(ch); err != nil {
		fmt.Fprintln(stderr, err)
		return testExitBroken
	}
	if exit != testExitPass || opts.Run != "" {
		return exit
	}
	// The tests pass; would healer load the policies too?
	if _, err := policies.Load(ctx, dir); err != nil {
		fmt.Fprintf(stderr, "healer would refuse these policies: %v\n", err)
		return testExitBroken
	}
	return testExitPass
}

func policyEval(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := policyFlagSet("healer policy eval", stderr)
	var dir, inputFile, format string
	fs.StringVar(&dir, "policies", "", "policy `DIR` (default: the built-in policies)")
	fs.StringVar(&inputFile, "input", "", "input document or bare event, as JSON (required)")
	fs.StringVar(&format, "format", "json", "output format: json or pretty")
	rest, code, ok := parsePolicyFlags(fs, args)
	if !ok {
		return code
	}
	switch {
	case len(rest) > 0:
		fmt.Fprintf(stderr, "healer policy eval: unexpected arguments %q\n\n%s", rest, policyUsage)
		return 2
	case inputFile == "":
		fmt.Fprintf(stderr, "healer policy eval: --input is required\n\n%s", policyUsage)
		return 2
	case format != "json" && format != "pretty":
		fmt.Fprintf(stderr, "healer policy eval: --format %q: want json or pretty\n\n%s", format, policyUsage)
		return 2
	}

	in, notes, err := readPolicyInput(inputFile, time.Now())
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	for _, n := range notes {
		fmt.Fprintf(stderr, "note: %s\n", n)
	}
	p, err := policies.Load(ctx, dir)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	d, err := p.Decide(ctx, in)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	if format == "pretty" {
		err = writePrettyDecision(stdout, p, d)
	} else {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		err = enc.Encode(d)
	}
	if err != nil {
		fmt.Fprintf(stderr, "healer policy eval: write decision: %v\n", err)
		return 1
	}
	return 0
}

// readPolicyInput reads an input document or a bare event from file, and
// returns notes on what it filled in. now is the time filled in.
func readPolicyInput(file string, now time.Time) (*policies.Input, []string, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, nil, fmt.Errorf("read input: %w", err)
	}
	var top map[string]json.RawMessage
	if err := json.Unmarshal(b, &top); err != nil {
		return nil, nil, fmt.Errorf("input %s: want a JSON object: %w", file, err)
	}
	var notes []string
	in := &policies.Input{}
	_, hasEvent := top["event"]
	_, hasType := top["type"]
	switch {
	case hasEvent:
		for k := range top {
			if k != "event" && k != "context" {
				return nil, nil, fmt.Errorf("input %s: unknown field %q (an input document has event and context)", file, k)
			}
		}
		if err := json.Unmarshal(top["event"], &in.Event); err != nil {
			return nil, nil, fmt.Errorf("input %s: event: %w", file, err)
		}
		if in.Event == nil {
			return nil, nil, fmt.Errorf("input %s: event is null", file)
		}
		if c, ok := top["context"]; ok {
			dec := json.NewDecoder(bytes.NewReader(c))
			dec.DisallowUnknownFields()
			if err := dec.Decode(&in.Context); err != nil {
				return nil, nil, fmt.Errorf("input %s: context: %w", file, err)
			}
		} else {
			notes = append(notes, "the input has no context: the budget is unknown")
		}
		if in.Context.Now.IsZero() {
			in.Context.Now = now
			notes = append(notes, "context.now is the current time")
		}
	case hasType:
		in.Event = &bus.Event{}
		if err := json.Unmarshal(b, in.Event); err != nil {
			return nil, nil, fmt.Errorf("input %s: event: %w", file, err)
		}
		in.Context = policies.Context{Now: now}
		notes = append(notes, "the input is a bare event: context.now is the current time and the budget is unknown (known: false)")
	default:
		return nil, nil, fmt.Errorf("input %s: neither an input document (with \"event\") nor an event (with \"type\")", file)
	}
	if err := in.Event.Validate(); err != nil {
		notes = append(notes, fmt.Sprintf("healer would reject this event before asking the policy: %v", err))
	}
	return in, notes, nil
}

// writePrettyDecision prints d as aligned "field: value" lines.
func writePrettyDecision(w io.Writer, p *policies.Policy, d policies.Decision) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	line := func(k, v string) { fmt.Fprintf(tw, "%s:\t%s\n", k, v) }
	if d.Remediator == "" {
		line("remediator", "(none: do nothing)")
	} else {
		line("remediator", d.Remediator)
	}
	if len(d.Params) > 0 {
		b, err := json.Marshal(d.Params)
		if err != nil {
			return fmt.Errorf("params: %w", err)
		}
		line("params", string(b))
	}
	line("approval", d.Approval)
	for _, l := range d.Limits() {
		line("rate limit", fmt.Sprintf("%s: at most %d per %s", l.Key, l.Max, policies.FormatDuration(l.Per)))
	}
	if d.DryRun {
		line("dry run", "yes")
	}
	line("reason", d.Reason)
	if d.Rule != "" {
		line("rule", d.Rule)
	}
	line("policy", p.String())
	return tw.Flush()
}

func policyFlagSet(name string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, policyUsage, "\nFlags of ", name, ":\n")
		fs.PrintDefaults()
	}
	return fs
}

// parsePolicyFlags parses args, allowing flags after positional arguments
// ("test DIR -v", as with opa), and returns the positional arguments. When
// parsing ends the command it reports the exit code: 0 for -h, 2 for an
// error.
func parsePolicyFlags(fs *flag.FlagSet, args []string) ([]string, int, bool) {
	var positional []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil, 0, false
			}
			return nil, 2, false
		}
		rest := fs.Args()
		if len(rest) == 0 {
			return positional, 0, true
		}
		// After "--" everything is positional.
		if i := len(args) - len(rest) - 1; i >= 0 && args[i] == "--" {
			return append(positional, rest...), 0, true
		}
		positional = append(positional, rest[0])
		args = rest[1:]
	}
}
