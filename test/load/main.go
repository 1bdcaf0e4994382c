// Command load drives healer's Alertmanager webhook with realistic v4
// payloads and reports durable ingest throughput and latency. By default
// it starts `healer serve` in-process on embedded NATS JetStream (engine
// in dry-run, so nothing acts); -url points it at a running healer instead.
//
//	go run ./test/load -duration 10s -concurrency 32 -alerts 10
//	go run ./test/load -rate 1000 -duration 20s          # latency at a fixed rate
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/selfheal/healer/internal/app/serve"
)

func main() {
	var (
		target      = flag.String("url", "", "healer base URL; empty starts one in-process")
		tokenFile   = flag.String("token-file", "", "webhook token file for -url (or HEALER_WEBHOOK_TOKEN)")
		duration    = flag.Duration("duration", 10*time.Second, "how long to send")
		concurrency = flag.Int("concurrency", 32, "concurrent senders")
		alerts      = flag.Int("alerts", 10, "alerts per webhook body")
		rate        = flag.Int("rate", 0, "target alerts per second (0: as fast as possible)")
	)
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := run(ctx, *target, *tokenFile, *duration, *concurrency, *alerts, *rate); err != nil {
		fmt.Fprintln(os.Stderr, "load:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, base, tokenFile string, d time.Duration, conc, perBody, rate int) error {
	token := os.Getenv("HEALER_WEBHOOK_TOKEN")
	if base == "" {
		dir, err := os.MkdirTemp("", "healer-load-")
		if err != nil {
			return err
		}
		defer func() { _ = os.RemoveAll(dir) }()
		sctx, cancel := context.WithCancel(ctx)
		cfg := serve.Config{DataDir: dir, Listen: "127.0.0.1:0", NATSListen: "127.0.0.1:-1"}
		cfg.Engine.DryRun = true
		srv, err := serve.Start(sctx, cfg, slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})))
		if err != nil {
			cancel()
			return err
		}
		defer func() { cancel(); _ = srv.Wait() }()
		base, token = srv.URL(), srv.WebhookToken
	} else if tokenFile != "" {
		b, err := os.ReadFile(tokenFile)
		if err != nil {
			return err
		}
		token = strings.TrimSpace(string(b))
	}
	if token == "" {
		return fmt.Errorf("no webhook token: use -token-file or HEALER_WEBHOOK_TOKEN")
	}

	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: conc, MaxConnsPerHost: conc}, Timeout: 30 * time.Second}
	var (
		seq       atomic.Int64
		sent      atomic.Int64
		failed    atomic.Int64
		mu        sync.Mutex
		latencies []time.Duration
		wg        sync.WaitGroup
	)
	runID := time.Now().UnixNano()
	var tick <-chan time.Time
	if rate > 0 {
		bodiesPerSec := max(1, rate/perBody)
		t := time.NewTicker(time.Second / time.Duration(bodiesPerSec))
		defer t.Stop()
		tick = t.C
	}
	deadline := time.Now().Add(d)
	start := time.Now()
	for range conc {
		wg.Go(func() {
			var local []time.Duration
			for time.Now().Before(deadline) && ctx.Err() == nil {
				if tick != nil {
					select {
					case <-tick:
					case <-ctx.Done():
						continue
					}
				}
				body := payload(runID, seq.Add(1), perBody)
				t0 := time.Now()
				req, _ := http.NewRequestWithContext(ctx, http.MethodPost, base+"/webhook/alertmanager", bytes.NewReader(body))
				req.Header.Set("Authorization", "Bearer "+token)
				req.Header.Set("Content-Type", "application/json")
				resp, err := client.Do(req)
				if err != nil {
					failed.Add(1)
					continue
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				_ = resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					failed.Add(1)
					continue
				}
				local = append(local, time.Since(t0))
				sent.Add(int64(perBody))
			}
			mu.Lock()
			latencies = append(latencies, local...)
			mu.Unlock()
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	slices.Sort(latencies)
	pct := func(p float64) time.Duration {
		if len(latencies) == 0 {
			return 0
		}
		return latencies[min(len(latencies)-1, int(float64(len(latencies))*p))]
	}
	fmt.Printf("alerts durably ingested: %d in %s = %.0f alerts/s (%d per body, %d senders, target rate %s)\n",
		sent.Load(), elapsed.Round(time.Millisecond), float64(sent.Load())/elapsed.Seconds(), perBody, conc, rateStr(rate))
	fmt.Printf("request latency: p50 %s  p99 %s  max %s  (requests %d, failed %d)\n",
		pct(0.50).Round(time.Microsecond), pct(0.99).Round(time.Microsecond), pct(1).Round(time.Microsecond), len(latencies), failed.Load())
	if failed.Load() > 0 {
		return fmt.Errorf("%d requests failed", failed.Load())
	}
	return nil
}

func rateStr(r int) string {
	if r == 0 {
		return "max"
	}
	return fmt.Sprintf("%d/s", r)
}

// payload builds an Alertmanager v4 body with n distinct firing alerts.
func payload(run, n int64, alerts int) []byte {
	type alert struct {
		Status       string            `json:"status"`
		Labels       map[string]string `json:"labels"`
		Annotations  map[string]string `json:"annotations"`
		StartsAt     time.Time         `json:"startsAt"`
		EndsAt       time.Time         `json:"endsAt"`
		GeneratorURL string            `json:"generatorURL"`
		Fingerprint  string            `json:"fingerprint"`
	}
	now := time.Now().UTC()
	as := make([]alert, alerts)
	for i := range as {
		node := fmt.Sprintf("worker-%d", (n*int64(alerts)+int64(i))%100000)
		as[i] = alert{
			Status:       "firing",
			Labels:       map[string]string{"alertname": "NodeKernelDeadlock", "node": node, "severity": "critical", "cluster": "load"},
			Annotations:  map[string]string{"summary": "Kernel deadlock on " + node},
			StartsAt:     now,
			GeneratorURL: "http://prometheus:9090/graph",
			Fingerprint:  fmt.Sprintf("%x-%x-%x", run, n, i),
		}
	}
	b, _ := json.Marshal(map[string]any{
		"version": "4", "status": "firing", "receiver": "healer", "groupKey": fmt.Sprintf("{}:{n=%d}", n),
		"groupLabels": map[string]string{"alertname": "NodeKernelDeadlock"}, "commonLabels": map[string]string{},
		"commonAnnotations": map[string]string{}, "externalURL": "http://alertmanager:9093", "alerts": as,
	})
	return b
}
