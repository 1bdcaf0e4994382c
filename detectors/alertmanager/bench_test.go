package alertmanager

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/selfheal/healer/bus"
	"github.com/selfheal/healer/internal/httpauth"
)

const benchAlertsPerBody = 10

// benchBus is a real embedded JetStream with healer's streams, as serve runs it.
func benchBus(b *testing.B) jetstream.JetStream {
	b.Helper()
	ns, err := bus.StartEmbedded(bus.EmbeddedConfig{StoreDir: b.TempDir()}, nil)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { ns.Shutdown(); ns.WaitForShutdown() })
	nc, err := nats.Connect(ns.ClientURL(), nats.InProcessServer(ns))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(nc.Close)
	js, _ := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(4096))
	cfg := bus.StreamsConfig{}
	cfg.ApplyDefaults()
	if _, err := bus.EnsureStreams(b.Context(), js, cfg); err != nil {
		b.Fatal(err)
	}
	return js
}

func benchBody(run string, n int64) []byte {
	var m map[string]any
	base := captured(nil)
	_ = json.Unmarshal(base, &m)
	alert := m["alerts"].([]any)[0].(map[string]any)
	alerts := make([]any, benchAlertsPerBody)
	for i := range alerts {
		a := map[string]any{}
		for k, v := range alert {
			a[k] = v
		}
		a["fingerprint"] = fmt.Sprintf("%s-%d-%d", run, n, i)
		a["labels"] = map[string]any{"alertname": "NodeKernelDeadlock", "node": fmt.Sprintf("worker-%d", i), "severity": "critical"}
		alerts[i] = a
	}
	m["alerts"] = alerts
	b, _ := json.Marshal(m)
	return b
}

// BenchmarkIngest measures, in one run on one setup, alerts durably stored
// through the webhook (HTTP, auth, parsing, mapping, JetStream acks) and
// the raw JetStream publish rate of the same events, so the ratio shows
// what the webhook costs on top of the bus.
func BenchmarkIngest(b *testing.B) {
	b.Run("webhook", func(b *testing.B) {
		js := benchBus(b)
		d, err := New(Config{}, bus.NewPublisher(js, 10*time.Second), slog.New(slog.DiscardHandler))
		if err != nil {
			b.Fatal(err)
		}
		srv := httptest.NewServer(httpauth.Bearer("tok", d))
		b.Cleanup(srv.Close)
		client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 256}}
		run := fmt.Sprint(time.Now().UnixNano())
		bodies := make([][]byte, b.N)
		for i := range bodies {
			bodies[i] = benchBody(run, int64(i))
		}
		var seq atomic.Int64
		b.SetParallelism(16)
		b.ResetTimer()
		start := time.Now()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				req, _ := http.NewRequest(http.MethodPost, srv.URL, bytes.NewReader(bodies[seq.Add(1)-1]))
				req.Header.Set("Authorization", "Bearer tok")
				resp, err := client.Do(req)
				if err != nil {
					b.Error(err)
					return
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					b.Errorf("status %d", resp.StatusCode)
					return
				}
			}
		})
		b.ReportMetric(float64(b.N*benchAlertsPerBody)/time.Since(start).Seconds(), "alerts/s")
	})
	b.Run("raw-jetstream", func(b *testing.B) {
		js := benchBus(b)
		d, _ := New(Config{}, nil, slog.New(slog.DiscardHandler))
		run := fmt.Sprint(time.Now().UnixNano())
		// The same events the webhook would store, prepared beforehand.
		batches := make([][]*nats.Msg, b.N)
		for i := range batches {
			var m webhookMessage
			_ = json.Unmarshal(benchBody(run, int64(i)), &m.Message)
			evs, err := d.Events(&m.Message)
			if err != nil {
				b.Fatal(err)
			}
			for _, e := range evs {
				msg, _ := bus.Message(e)
				batches[i] = append(batches[i], msg)
			}
		}
		var seq atomic.Int64
		b.SetParallelism(16)
		b.ResetTimer()
		start := time.Now()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				batch := batches[seq.Add(1)-1]
				futures := make([]jetstream.PubAckFuture, 0, len(batch))
				for _, msg := range batch {
					f, err := js.PublishMsgAsync(msg)
					if err != nil {
						b.Error(err)
						return
					}
					futures = append(futures, f)
				}
				for _, f := range futures {
					select {
					case <-f.Ok():
					case err := <-f.Err():
						b.Error(err)
						return
					}
				}
			}
		})
		b.ReportMetric(float64(b.N*benchAlertsPerBody)/time.Since(start).Seconds(), "alerts/s")
	})
}
