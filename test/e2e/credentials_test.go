package e2e

import (
	"context"
	"crypto/tls"
	"log/slog"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/redis/go-redis/v9"

	"github.com/selfheal/healer/bus"
	"github.com/selfheal/healer/internal/app/serve"
	"github.com/selfheal/healer/test/testenv"
)

// TestCredentialsFromFiles: serve reaches a NATS that wants TLS (its CA
// given as a file) and a user's password, and a Redis that wants a
// password, every secret read from a file and none of them logged. A wrong
// password stops the start with an error that does not quote it.
func TestCredentialsFromFiles(t *testing.T) {
	caFile, certFile, keyFile := testenv.ServingPKI(t)
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	const natsPassword, redisPassword = "nats-pw-Zq81x", "redis-pw-Lk27v"
	ns, err := bus.StartEmbedded(bus.EmbeddedConfig{
		StoreDir: t.TempDir(), Host: "127.0.0.1", Port: -1, ServerName: "tls-external",
		Users: []*server.User{{Username: "healer-serve", Password: natsPassword}},
		TLS:   &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12},
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ns.Shutdown(); ns.WaitForShutdown() })
	natsURL := ns.ClientURL() // tls://, for the certificate of 127.0.0.1

	rd := testenv.StartRedis(t)
	rc := redis.NewClient(&redis.Options{Addr: rd.Addr})
	if err := rc.ConfigSet(t.Context(), "requirepass", redisPassword).Err(); err != nil {
		t.Fatal(err)
	}
	_ = rc.Close()

	cfg := serve.Config{
		NATSURL: natsURL, NATSUser: "healer-serve", NATSPasswordFile: writeFile(t, "nats-password", natsPassword+"\n"),
		NATSCAFile: caFile,
		RedisURL:   rd.URL, RedisPasswordFile: writeFile(t, "redis-password", redisPassword+"\n"),
		NoKubernetes: true,
	}
	h := startHealer(t, cfg)
	if code, body := h.post(readTestdata(t, "kernel-deadlock-firing.json"), h.srv.WebhookToken); code != 200 {
		t.Fatalf("webhook: %d %s", code, body)
	}
	waitFor(t, 10*time.Second, "event and decision audited through the TLS NATS", func() (bool, string) {
		recs := h.records(url.Values{"target": {"node/worker-1"}})
		return strings.Join(kinds(recs), ",") == "event,decision", describe(recs)
	})
	if strings.Contains(h.logs.String(), "redis unreachable") {
		t.Errorf("Redis refused serve's password from the file:\n%s", h.logs.String())
	}
	h.noSecretsLogged(natsPassword, redisPassword)

	for name, mutate := range map[string]func(*serve.Config){
		"wrong NATS password": func(c *serve.Config) { c.NATSPasswordFile = writeFile(t, "bad-nats-password", "guessed-"+natsPassword) },
		"NATS CA not given":   func(c *serve.Config) { c.NATSCAFile = "" },
		"no NATS password":    func(c *serve.Config) { c.NATSUser, c.NATSPasswordFile = "", "" },
	} {
		t.Run(name, func(t *testing.T) {
			bad := cfg
			mutate(&bad)
			bad.DataDir, bad.Listen = t.TempDir(), "127.0.0.1:0"
			bad.WebhookTokenFile = writeFile(t, "wh", "wh-token-value-0123456789abcdef0123456789")
			bad.APITokenFile = writeFile(t, "api", "api-token-value-0123456789abcdef0123456789")
			ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
			defer cancel()
			srv, err := serve.Start(ctx, bad, slog.New(slog.DiscardHandler))
			if err == nil {
				cancel()
				_ = srv.Wait()
				t.Fatal("serve started against a NATS it should not have been let into")
			}
			if strings.Contains(err.Error(), natsPassword) {
				t.Errorf("the error quotes the password: %v", err)
			}
			t.Logf("refused as expected: %v", err)
		})
	}
}
