package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/selfheal/healer/bus"
	"github.com/selfheal/healer/internal/app/agent"
)

const agentUsage = `Usage:
  healer agent --node NAME [flags]                 run the node agent
  healer agent permissions --node NAME [--kv B]    the NATS permissions of NAME's agent user
  healer agent dev-credentials --node NAME [--data-dir DIR] [--out FILE]
                                                   NAME's password on the embedded NATS server of
                                                   "healer serve --data-dir DIR" (make run)

Run "healer agent -h" for the flags.
`

func agentCmd(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) > 0 && args[0] == "permissions" {
		return agentPermissionsCmd(args[1:], stdout, stderr)
	}
	if len(args) > 0 && args[0] == "dev-credentials" {
		return agentDevCredentialsCmd(args[1:], stdout, stderr)
	}
	fs := flag.NewFlagSet("healer agent", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		configFile = fs.String("config", "", "YAML configuration file (flags and HEALER_* variables override it)")
		node       = fs.String("node", "", "this node's name as Kubernetes knows it (or HEALER_NODE; in a DaemonSet from spec.nodeName)")
		dataDir    = fs.String("data-dir", "", "agent state (default /var/lib/healer-agent)")
		natsURL    = fs.String("nats-url", "", "NATS servers (default nats://127.0.0.1:4222); tls:// for TLS")
		natsCreds  = fs.String("nats-creds", "", "NATS credentials file of this node's user")
		natsNKey   = fs.String("nats-nkey", "", "NATS nkey seed file of this node's user")
		natsUser   = fs.String("nats-user", "", "NATS user of this node (with --nats-password-file)")
		natsPass   = fs.String("nats-password-file", "", "file holding the NATS password")
		natsCA     = fs.String("nats-ca", "", "CA file that verifies the NATS servers")
		natsCert   = fs.String("nats-cert", "", "client certificate for NATS")
		natsKey    = fs.String("nats-key", "", "client key for NATS")
		logLevel   = fs.String("log-level", "info", "debug, info, warn or error")
		logFormat  = fs.String("log-format", "text", "text or json")
	)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: healer agent --node NAME [flags]\n\nRuns on every node: answers healer's action requests for this node over NATS and sends\nits node-local detectors' events. Every flag can also be set as HEALER_<FLAG>.\n\n")
		fs.PrintDefaults()
		fmt.Fprint(stderr, "\n"+agentUsage)
	}
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if err := flagsFromEnv(fs); err != nil {
		fmt.Fprintln(stderr, "healer agent:", err)
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "healer agent: unexpected arguments %q\n", fs.Args())
		return 2
	}
	log, err := newLogger(stderr, *logLevel, *logFormat)
	if err != nil {
		fmt.Fprintln(stderr, "healer agent:", err)
		return 2
	}
	var cfg agent.Config
	if *configFile != "" {
		if err := cfg.LoadFile(*configFile); err != nil {
			fmt.Fprintln(stderr, "healer agent:", err)
			return 2
		}
	}
	for dst, v := range map[*string]string{
		&cfg.Node: *node, &cfg.DataDir: *dataDir, &cfg.NATS.URL: *natsURL, &cfg.NATS.CredsFile: *natsCreds,
		&cfg.NATS.NKeyFile: *natsNKey, &cfg.NATS.User: *natsUser, &cfg.NATS.PasswordFile: *natsPass,
		&cfg.NATS.CAFile: *natsCA, &cfg.NATS.CertFile: *natsCert, &cfg.NATS.KeyFile: *natsKey,
	} {
		if v != "" {
			*dst = v
		}
	}
	if cfg.Node == "" {
		fmt.Fprintln(stderr, "healer agent: --node is required (this node's name, e.g. from the downward API's spec.nodeName)")
		return 2
	}
	if err := agent.Run(ctx, cfg, log, agent.Deps{Version: version()}); err != nil {
		log.Error("healer agent failed", "err", err)
		return 1
	}
	return 0
}

// agentDevCredentialsCmd writes the password of a node's agent on the
// embedded NATS server of a serve with the same data dir, and prints how
// to start the agent with it.
func agentDevCredentialsCmd(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("healer agent dev-credentials", flag.ContinueOnError)
	fs.SetOutput(stderr)
	node := fs.String("node", "", "node name")
	dataDir := fs.String("data-dir", "data", "data dir of the healer serve whose embedded NATS the agent joins")
	out := fs.String("out", "", "password file to write (default DATA-DIR/agents/NODE.password)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if _, err := bus.NodeToken(*node); err != nil {
		fmt.Fprintln(stderr, "healer agent dev-credentials: --node:", err)
		return 2
	}
	keyPath := filepath.Join(*dataDir, bus.AgentKeyFile)
	if _, err := os.Stat(keyPath); err != nil {
		fmt.Fprintf(stderr, "healer agent dev-credentials: %s: start \"healer serve --data-dir %s\" once first (it makes the key): %v\n", keyPath, *dataDir, err)
		return 1
	}
	key, err := bus.LoadAgentKey(keyPath)
	if err != nil {
		fmt.Fprintln(stderr, "healer agent dev-credentials:", err)
		return 1
	}
	if *out == "" {
		*out = filepath.Join(*dataDir, "agents", *node+".password")
	}
	if err := os.MkdirAll(filepath.Dir(*out), 0o700); err != nil {
		fmt.Fprintln(stderr, "healer agent dev-credentials:", err)
		return 1
	}
	if err := os.WriteFile(*out, []byte(bus.AgentPasswordFromKey(key, *node)+"\n"), 0o600); err != nil {
		fmt.Fprintln(stderr, "healer agent dev-credentials:", err)
		return 1
	}
	fmt.Fprintf(stdout, "wrote the NATS password of %s's agent to %s (mode 0600)\nstart the agent with:\n  healer agent --node %s --nats-user %s --nats-password-file %s [--config F]\n",
		*node, *out, *node, *node, *out)
	return 0
}

// agentPermissionsCmd prints the permissions block of a node agent's NATS
// user, for the operator's NATS server configuration.
func agentPermissionsCmd(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("healer agent permissions", flag.ContinueOnError)
	fs.SetOutput(stderr)
	node := fs.String("node", "", "node name")
	kv := fs.String("kv", "", "comma-separated key-value buckets the agent may use (a master's VIP leases)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	var opts bus.AgentPermissionsOptions
	if *kv != "" {
		opts.KVBuckets = strings.Split(*kv, ",")
	}
	perms, err := bus.AgentPermissions(*node, opts)
	if err != nil {
		fmt.Fprintln(stderr, "healer agent permissions:", err)
		return 2
	}
	quoted := func(subjects []string) string {
		q := make([]string, len(subjects))
		for i, s := range subjects {
			q[i] = fmt.Sprintf("%q", s)
		}
		return strings.Join(q, ", ")
	}
	// NATS server configuration syntax: paste into authorization.users,
	// with the node's password, nkey or (in operator mode) as a JWT's limits.
	fmt.Fprintf(stdout, `# healer agent of node %s
{
  user: %q
  permissions: {
    publish: { allow: [%s] }
    subscribe: { allow: [%s] }
    allow_responses: { max: %d, expires: %q }
  }
}
`, *node, *node, quoted(perms.Publish.Allow), quoted(perms.Subscribe.Allow), perms.Response.MaxMsgs, perms.Response.Expires.String())
	return 0
}
