package agent_test

import (
	"context"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/selfheal/healer/action"
	"github.com/selfheal/healer/bus"
	"github.com/selfheal/healer/internal/app/agent"
	"github.com/selfheal/healer/remediators/restart"
	"github.com/selfheal/healer/test/testenv"
)

// BenchmarkAgentRoundTrip measures one action request from serve to a
// node's agent and back over NATS (an embedded server on loopback, each
// side with its own connection and user, the agent confined by its
// permissions): "ping" is the transport alone, "restart.check" adds
// parameter validation and a health probe of a real process over HTTP.
// Each op is one request with a fresh action id.
func BenchmarkAgentRoundTrip(b *testing.B) {
	for _, tc := range []struct {
		name string
		tls  bool
		verb string
	}{
		{"ping", false, agent.VerbPing},
		{"ping-tls", true, agent.VerbPing},
		{"restart.check-tls", true, restart.VerbCheck},
	} {
		b.Run(tc.name, func(b *testing.B) {
			ctx, cancel := context.WithCancel(b.Context())
			defer cancel()
			env := startNATS(b, []string{"node-a"}, tc.tls)
			env.startAgent(ctx, "node-a", testenv.FreeAddr(b))
			client := bus.NewAgentClient(env.service, 2*time.Second)
			params := map[string]any{"component": "fakelet"}
			lat := make([]time.Duration, 0, b.N)
			b.ResetTimer()
			for i := range b.N {
				start := time.Now()
				_, err := client.Call(ctx, action.NodeRequest{ID: "b-" + strconv.Itoa(i), Verb: tc.verb, Node: "node-a", Params: params, Deadline: time.Now().Add(5 * time.Second)})
				if err != nil {
					b.Fatal(err)
				}
				lat = append(lat, time.Since(start))
			}
			b.StopTimer()
			slices.Sort(lat)
			b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
			b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
		})
	}
}
