package policies

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/selfheal/healer/bus"
)

// FuzzDecideDefault sends arbitrary events through input building and the
// built-in policy. Every answer must be a valid decision; the policy may
// only act on node subjects for the node problems it knows, and a resolved
// event must never carry rate limits (it can only undo).
func FuzzDecideDefault(f *testing.F) {
	f.Add("NodeKernelDeadlock", "node/worker-1", "firing", "alertmanager", `{"labels":{"node":"worker-1"}}`, true)
	f.Add("NodeNotReady", "node/", "resolved", "nodeproblem", `{}`, false)
	f.Add("NodeReadonlyFilesystem", "etcd/m-1", "firing", "nodeproblem", `[1,2]`, true)
	f.Add("", "", "", "", ``, true)
	p, err := Load(f.Context(), "")
	if err != nil {
		f.Fatal(err)
	}
	known := map[string]bool{"NodeKernelDeadlock": true, "NodeReadonlyFilesystem": true, "NodeNotReady": true}
	f.Fuzz(func(t *testing.T, typ, subject, status, source, data string, budgetKnown bool) {
		var raw json.RawMessage
		if json.Valid([]byte(data)) {
			raw = json.RawMessage(data)
		}
		in := &Input{
			Event: &bus.Event{SpecVersion: bus.SpecVersion, ID: "e", Source: source, Type: typ, Subject: subject,
				Time: time.Unix(1_700_000_000, 0).UTC(), Status: status, Key: "k", Data: raw},
			Context: Context{Now: time.Unix(1_700_000_000, 0).UTC(), Budget: Budget{TotalNodes: 10, Allowed: 1, Available: 1, Known: budgetKnown}},
		}
		d, err := p.Decide(t.Context(), in)
		if err != nil {
			t.Fatalf("Decide: %v", err)
		}
		if err := d.Validate(); err != nil {
			t.Fatalf("invalid decision %+v: %v", d, err)
		}
		if d.Remediator == "" {
			return
		}
		if !known[typ] || !strings.HasPrefix(subject, "node/") || subject == "node/" {
			t.Fatalf("acted on type %q subject %q: %+v", typ, subject, d)
		}
		if status == bus.StatusResolved && len(d.Limits()) > 0 {
			t.Fatalf("a resolved event got rate limits: %+v", d)
		}
		if status == bus.StatusFiring && !budgetKnown {
			t.Fatalf("acted with an unknown budget: %+v", d)
		}
	})
}
