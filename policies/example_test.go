package policies_test

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/selfheal/healer/bus"
	"github.com/selfheal/healer/policies"
)

// Load with an empty directory loads the built-in policies, after running
// their Rego tests.
func ExampleLoad() {
	p, err := policies.Load(context.Background(), "")
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(p.Files, p.Tests > 0)
	// Output: [healer.rego healer_test.rego] true
}

func ExamplePolicy_Decide() {
	ctx := context.Background()
	p, err := policies.Load(ctx, "")
	if err != nil {
		fmt.Println(err)
		return
	}
	now := time.Date(2025, 6, 1, 10, 14, 4, 0, time.UTC)
	d, err := p.Decide(ctx, &policies.Input{
		Event: &bus.Event{
			SpecVersion: bus.SpecVersion, ID: "e-1", Source: "alertmanager",
			Type: "NodeKernelDeadlock", Subject: "node/worker-1", Time: now,
			Status: bus.StatusFiring, Key: "fp-1",
		},
		Context: policies.Context{
			Now:    now,
			Budget: policies.Budget{TotalNodes: 10, OutOfService: 1, Allowed: 2, Available: 1, Known: true},
		},
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(d.Remediator, d.Params["reason"], d.Approval)
	for _, l := range d.Limits() {
		fmt.Printf("at most %d per %s for %s\n", l.Max, l.Per, l.Key)
	}
	fmt.Println(d.Reason)
	b, _ := json.Marshal(d.RateLimit)
	fmt.Println(string(b))
	// Output:
	// node.cordon NodeKernelDeadlock none
	// at most 1 per 10m0s for node.cordon:node/worker-1
	// at most 3 per 1h0m0s for node.cordon:cluster
	// NodeKernelDeadlock on node/worker-1: cordon so no new pods land there
	// {"key":"node.cordon:node/worker-1","max":1,"per":"10m"}
}
