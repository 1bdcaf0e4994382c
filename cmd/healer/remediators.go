package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"github.com/selfheal/healer/remediators"
)

const remediatorsUsage = `Usage: healer remediators list [-o table|json]

Lists the remediators this healer knows: the name policies use, what it acts
on, whether it takes a target out of service (and so counts against the
blast-radius budget), the Kubernetes permissions it needs and its runbook.
`

func remediatorsCmd(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	return dispatch(ctx, "healer remediators", remediatorsUsage, map[string]command{"list": remediatorsList}, args, stdout, stderr)
}

func remediatorsList(_ context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("healer remediators list", flag.ContinueOnError)
	fs.SetOutput(stderr)
	format := fs.String("o", "table", "output: table or json")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	infos := remediators.Infos()
	switch *format {
	case "json":
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(infos); err != nil {
			fmt.Fprintln(stderr, "healer remediators list:", err)
			return 1
		}
		return 0
	case "table":
	default:
		fmt.Fprintf(stderr, "healer remediators list: -o %q: want table or json\n", *format)
		return 2
	}
	tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tTARGET\tDISRUPTIVE\tRBAC\tRUNBOOK\tSUMMARY")
	for _, in := range infos {
		var rules []string
		for _, r := range in.RBAC {
			group := strings.Join(r.APIGroups, ",")
			if group == "" {
				group = "core"
			}
			rules = append(rules, fmt.Sprintf("%s/%s:%s", group, strings.Join(r.Resources, ","), strings.Join(r.Verbs, ",")))
		}
		if len(rules) == 0 {
			rules = []string{"none (acts through the node agents)"}
		}
		fmt.Fprintf(tw, "%s\t%s\t%v\t%s\t%s\t%s\n", in.Name, in.TargetKind, in.Disruptive, strings.Join(rules, " "), in.Runbook, in.Summary)
	}
	if err := tw.Flush(); err != nil {
		return 1
	}
	return 0
}
