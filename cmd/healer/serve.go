package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"

	"github.com/selfheal/healer/internal/app/serve"
)

func serveCmd(ctx context.Context, args []string, _, stderr io.Writer) int {
	fs := flag.NewFlagSet("healer serve", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		configFile = fs.String("config", "", "YAML configuration file (flags and HEALER_* variables override it)")
		dataDir    = fs.String("data-dir", "", "directory for the embedded NATS store and generated tokens (default ./data)")
		listen     = fs.String("listen", "", "HTTP address (default 127.0.0.1:8080)")
		natsURL    = fs.String("nats-url", "", "external NATS server; empty runs JetStream embedded")
		natsCreds  = fs.String("nats-creds", "", "NATS credentials file for --nats-url")
		natsListen = fs.String("nats-listen", "", "client address of the embedded NATS server (default 127.0.0.1:4222)")
		redisURL   = fs.String("redis-url", "", "Redis for rate limits (redis://host:port/db); empty uses an in-process limiter (single replica only)")
		kubeconfig = fs.String("kubeconfig", "", "kubeconfig of the cluster to heal; default in-cluster, else $KUBECONFIG, else Kubernetes off")
		policyDir  = fs.String("policies", "", "directory of Rego policies, reloaded on change (default: built-in policies)")
		shadowDir  = fs.String("shadow-policies", "", "directory of candidate Rego policies evaluated beside the live ones without acting; differences are audited (policy.shadow)")
		whToken    = fs.String("webhook-token-file", "", "file holding the webhook bearer token (or HEALER_WEBHOOK_TOKEN)")
		apiToken   = fs.String("api-token-file", "", "file holding the API bearer token (or HEALER_API_TOKEN)")
		dryRun     = fs.Bool("dry-run", false, "decide and audit, but never act")
		acceptNew  = fs.Bool(acceptNewTrailFlag, false, "start although the audit stream disagrees with the newest signed checkpoint (deleted, recreated or truncated), and audit that (audit.accepted); give it once, on purpose: it is not read from the environment")
		logLevel   = fs.String("log-level", "info", "debug, info, warn or error")
		logFormat  = fs.String("log-format", "text", "text or json")
	)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: healer serve [flags]\n\nRuns the webhook, the engine and the audit API. With no flags it runs on embedded defaults.\nEvery flag but --accept-new-audit-trail can also be set as HEALER_<FLAG> (for example HEALER_REDIS_URL).\n\n")
		fs.PrintDefaults()
	}
	// HEALER_* environment variables fill flags not given on the command line.
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if err := flagsFromEnv(fs); err != nil {
		fmt.Fprintln(stderr, "healer serve:", err)
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "healer serve: unexpected arguments %q\n", fs.Args())
		return 2
	}

	log, err := newLogger(stderr, *logLevel, *logFormat)
	if err != nil {
		fmt.Fprintln(stderr, "healer serve:", err)
		return 2
	}
	var cfg serve.Config
	if *configFile != "" {
		if err := cfg.LoadFile(*configFile); err != nil {
			fmt.Fprintln(stderr, "healer serve:", err)
			return 2
		}
	}
	set := func(dst *string, v string) {
		if v != "" {
			*dst = v
		}
	}
	set(&cfg.DataDir, *dataDir)
	set(&cfg.Listen, *listen)
	set(&cfg.NATSURL, *natsURL)
	set(&cfg.NATSCredsFile, *natsCreds)
	set(&cfg.NATSListen, *natsListen)
	set(&cfg.RedisURL, *redisURL)
	set(&cfg.Kubeconfig, *kubeconfig)
	set(&cfg.Policies, *policyDir)
	set(&cfg.ShadowPolicies, *shadowDir)
	cfg.Version = version()
	set(&cfg.WebhookTokenFile, *whToken)
	set(&cfg.APITokenFile, *apiToken)
	if *dryRun {
		cfg.Engine.DryRun = true
	}
	cfg.Audit.AcceptNewTrail = *acceptNew
	if err := serve.Run(ctx, cfg, log); err != nil {
		log.Error("healer serve failed", "err", err)
		return 1
	}
	return 0
}

// acceptNewTrailFlag is the one serve flag never taken from the
// environment.
const acceptNewTrailFlag = "accept-new-audit-trail"

// flagsFromEnv sets each flag not given on the command line from its
// HEALER_<FLAG> environment variable, if set.
func flagsFromEnv(fs *flag.FlagSet) error {
	given := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
	var envErr error
	fs.VisitAll(func(f *flag.Flag) {
		if f.Name == acceptNewTrailFlag {
			// Left set in a Deployment it would accept every
			// replacement of the audit trail unseen.
			return
		}
		env := "HEALER_" + strings.ToUpper(strings.ReplaceAll(f.Name, "-", "_"))
		if v, ok := os.LookupEnv(env); ok && !given[f.Name] && envErr == nil {
			if err := f.Value.Set(v); err != nil {
				envErr = fmt.Errorf("%s: %w", env, err)
			}
		}
	})
	return envErr
}

func newLogger(w io.Writer, level, format string) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level %q: want debug, info, warn or error", level)
	}
	opts := &slog.HandlerOptions{Level: l}
	switch format {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	default:
		return nil, fmt.Errorf("--log-format %q: want text or json", format)
	}
}
