// Command healer is the one binary of healer: the service (serve), the
// node agent (agent), and the tools on-call and policy authors use (audit,
// policy, demo, version).
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"
)

const usage = `healer — self-healing remediation for Kubernetes clusters and their control planes

Usage:
  healer serve   [flags]                 run the service (webhook, engine, audit API)
  healer agent   --node NAME [flags]     run the node agent (actions and detectors on this node)
  healer audit   list|verify [flags]     read and verify the audit trail
  healer policy  test|eval [flags]       test and evaluate Rego policies
  healer remediators list [-o json]      what healer can do, and the permissions it needs
  healer pause   set|list|clear [flags]  hold healer back: pauses, the kill switch, maintenance windows
  healer approve ID --token-file MINE     approve an action waiting for approval (deny ID to refuse it)
  healer approvals                       list approval requests
  healer replay  --policies DIR [flags]  what candidate policies would have decided for recorded events
  healer demo    [flags]                 replace a killed etcd member, on this machine, in under a minute
  healer version                         print the version

Run "healer <command> -h" for the flags of a command.
`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	return dispatch(ctx, "healer", usage, map[string]command{
		"serve":       serveCmd,
		"agent":       agentCmd,
		"audit":       auditCmd,
		"policy":      policyCmd,
		"remediators": remediatorsCmd,
		"demo":        demoCmd,
		"pause":       pauseCmd,
		"approve":     approveCmd,
		"deny":        denyCmd,
		"approvals":   approvalsCmd,
		"replay":      replayCmd,
		"version": func(_ context.Context, _ []string, stdout, _ io.Writer) int {
			fmt.Fprintln(stdout, "healer", version())
			return 0
		},
	}, args, stdout, stderr)
}

// command is one verb of the CLI: it gets the arguments after its name and
// returns the exit code.
type command func(ctx context.Context, args []string, stdout, stderr io.Writer) int

// dispatch runs the subcommand named by args[0]; help prints usage to
// stdout, anything unknown prints it to stderr with exit code 2.
func dispatch(ctx context.Context, name, usage string, cmds map[string]command, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	if args[0] == "help" || args[0] == "-h" || args[0] == "--help" {
		fmt.Fprint(stdout, usage)
		return 0
	}
	cmd, ok := cmds[args[0]]
	if !ok {
		fmt.Fprintf(stderr, "%s: unknown command %q\n\n%s", name, args[0], usage)
		return 2
	}
	return cmd(ctx, args[1:], stdout, stderr)
}

// version is the module version stamped by the Go toolchain, with the VCS
// revision when the binary was built from a checkout.
func version() string {
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return "(unknown)"
	}
	v := info.Main.Version
	for _, s := range info.Settings {
		if s.Key == "vcs.revision" && len(s.Value) >= 12 {
			v += " " + s.Value[:12]
		}
	}
	return v
}
