package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/selfheal/healer/audit"
	"github.com/selfheal/healer/bus"
	"github.com/selfheal/healer/policies"
)

const replayUsage = `Usage:
  healer replay --policies DIR [--since 24h|T] [--changed] [--json] [--fail-on-change]

replay decides the events in the audit trail again with the policies in
DIR, in the context they were first decided in (their time, the budget and
the recent actions then), and prints, per event, the decision then and the
decision now, then a summary: how many events the candidate would act on
more, less or differently. Nothing is acted on. --changed prints only the
events whose decision changes; --fail-on-change exits 3 when any does (for
a policy change's CI). Also takes --server URL and --token-file F (or
$HEALER_API_TOKEN).
`

func replayCmd(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("healer replay", stderr)
	var cf clientFlags
	cf.register(fs)
	dir := fs.String("policies", "", "directory of the candidate policies (required)")
	since := fs.String("since", "24h", "replay events recorded since (a duration back from now, or RFC 3339)")
	changed := fs.Bool("changed", false, "print only events whose decision changes")
	asJSON := fs.Bool("json", false, "print JSON: one object per event and the summary")
	failOnChange := fs.Bool("fail-on-change", false, "exit 3 when any decision changes")
	fs.Usage = func() { fmt.Fprint(stderr, replayUsage) }
	if code, ok := parseFlags(fs, args, stderr); !ok {
		return code
	}
	if *dir == "" {
		fmt.Fprint(stderr, "healer replay: --policies is required\n\n"+replayUsage)
		return 2
	}
	from, err := audit.ParseSince(*since, time.Now())
	if err != nil {
		fmt.Fprintln(stderr, "healer replay: --since:", err)
		return 2
	}
	pol, err := policies.Load(ctx, *dir)
	if err != nil {
		fmt.Fprintln(stderr, "healer replay: the candidate policies do not load:", err)
		return 1
	}
	c, err := cf.client()
	if err != nil {
		fmt.Fprintln(stderr, "healer replay:", err)
		return 2
	}
	recorded, err := recordedDecisions(ctx, c, from)
	if err != nil {
		fmt.Fprintln(stderr, "healer replay:", err)
		return 1
	}
	var sum policies.ReplaySummary
	var out []policies.Replayed
	for _, rec := range recorded {
		r := pol.Replay(ctx, rec)
		sum.Add(r)
		if !*changed || r.Change != policies.ChangeSame {
			out = append(out, r)
		}
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		_ = enc.Encode(map[string]any{"candidate_revision": pol.Revision, "events": append([]policies.Replayed{}, out...), "summary": sum})
	} else {
		writeReplay(stdout, out)
		fmt.Fprintf(stdout, "\n%d events since %s replayed with %s (%s): %d the same, %d would act more, %d would act less, %d would act differently",
			sum.Events, from.UTC().Format(time.RFC3339), *dir, short(pol.Revision), sum.Same, sum.More, sum.Less, sum.Different)
		if sum.Errors > 0 {
			fmt.Fprintf(stdout, ", %d could not be decided", sum.Errors)
		}
		fmt.Fprintln(stdout)
	}
	if *failOnChange && sum.Events != sum.Same {
		return 3
	}
	return 0
}

func short(rev string) string {
	rev = strings.TrimPrefix(rev, "sha256:")
	return rev[:min(12, len(rev))]
}

func writeReplay(w io.Writer, rs []policies.Replayed) {
	if len(rs) == 0 {
		fmt.Fprintln(w, "no events to show")
		return
	}
	tw := tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "TIME\tTARGET\tEVENT\tTHEN\tNOW\tCHANGE")
	for _, r := range rs {
		now := decisionText(r.Now)
		if r.Error != "" {
			now = "error: " + r.Error
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", r.Time.UTC().Format(time.RFC3339), cell(r.Target),
			cell(r.Type+" "+r.Status), cell(decisionText(r.Then)), cell(now), r.Change)
	}
	_ = tw.Flush()
}

// decisionText is a decision in a few words: "node.cordon (approval two)",
// "nothing: <reason>".
func decisionText(d policies.Decision) string {
	if d.Remediator == "" {
		return "nothing: " + d.Reason
	}
	var parts []string
	for _, st := range d.Ladder() {
		s := st.Remediator
		if len(st.Params) > 0 {
			b, _ := json.Marshal(st.Params)
			s += string(b)
		}
		parts = append(parts, s)
	}
	s := strings.Join(parts, " → ")
	if d.Approval != "" && d.Approval != policies.ApprovalNone {
		s += " (approval " + d.Approval + ")"
	}
	if d.DryRun {
		s += " (dry-run)"
	}
	return s
}

// recordedDecisions reads the events since from and the decision each
// got, with the budget then and the actions finished on its target in the
// 24 hours before.
func recordedDecisions(ctx context.Context, c *auditClient, from time.Time) ([]policies.Recorded, error) {
	events, err := allRecords(ctx, c, audit.KindEvent, from)
	if err != nil {
		return nil, err
	}
	decisions, err := allRecords(ctx, c, audit.KindDecision, from)
	if err != nil {
		return nil, err
	}
	finished, err := allRecords(ctx, c, audit.KindActionFinished, from.Add(-24*time.Hour))
	if err != nil {
		return nil, err
	}
	last := map[string]audit.Record{}
	for _, d := range decisions {
		last[d.EventID] = d // the last decision of an event is the one it was handled by
	}
	var out []policies.Recorded
	for _, er := range events {
		var ev bus.Event
		if err := json.Unmarshal(er.Details, &ev); err != nil || ev.ID == "" {
			continue // not an event healer decided on
		}
		dr, ok := last[ev.ID]
		if !ok {
			continue // never decided (a duplicate, or still in the queue)
		}
		var dd struct {
			Decision policies.Decision `json:"decision"`
			Budget   policies.Budget   `json:"budget"`
		}
		if err := json.Unmarshal(dr.Details, &dd); err != nil {
			return nil, fmt.Errorf("decision record %d: %w", dr.Seq, err)
		}
		rec := policies.Recorded{Event: &ev, Time: dr.Time, Budget: dd.Budget, Decision: dd.Decision, Revision: dr.PolicyRevision}
		for _, f := range slices.Backward(finished) {
			if f.Target != ev.Subject || !f.Time.Before(dr.Time) || dr.Time.Sub(f.Time) > 24*time.Hour {
				continue
			}
			var fd struct {
				Step string `json:"step"`
			}
			_ = json.Unmarshal(f.Details, &fd)
			rec.Recent = append(rec.Recent, policies.RecentAction{Remediator: f.Remediator, Target: f.Target, Time: f.Time, Result: fd.Step + " finished"})
			if len(rec.Recent) == 10 {
				break
			}
		}
		out = append(out, rec)
	}
	return out, nil
}

// allRecords pages through every record of kind since from.
func allRecords(ctx context.Context, c *auditClient, kind audit.Kind, from time.Time) ([]audit.Record, error) {
	var out []audit.Record
	after := uint64(0)
	for {
		q := url.Values{"kind": {string(kind)}, "since": {from.UTC().Format(time.RFC3339Nano)},
			"after": {strconv.FormatUint(after, 10)}, "limit": {strconv.Itoa(audit.MaxLimit)}}
		page, err := c.records(ctx, q)
		if err != nil {
			return nil, err
		}
		out = append(out, page...)
		if len(page) < audit.MaxLimit {
			return out, nil
		}
		after = page[len(page)-1].Seq
	}
}
