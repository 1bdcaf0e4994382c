package e2e

import (
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/selfheal/healer/audit"
	"github.com/selfheal/healer/bus"
	"github.com/selfheal/healer/internal/app/serve"
	"github.com/selfheal/healer/remediators/nodedrain"
	"github.com/selfheal/healer/test/testenv"
)

// TestAlertToCordon carries one captured Alertmanager alert end to end:
// webhook → JetStream → OPA → guard (Redis, budget) → cordon on a real
// kube-apiserver → hash-chained audit, then the duplicate, budget, resolve,
// bad-input and Redis-down paths, in that order, on one healer.
func TestAlertToCordon(t *testing.T) {
	ctx := t.Context()
	kube := testenv.StartKube(t)
	redis := testenv.StartRedis(t)
	nodes := make([]string, 10) // ten nodes: at most one may be out of service
	for i := range nodes {
		nodes[i] = fmt.Sprintf("worker-%d", i+1)
	}
	testenv.CreateNodes(ctx, t, kube.Client, nodes...)

	h := startHealer(t, serve.Config{RedisURL: redis.URL, Kubeconfig: kube.KubeconfigPath})
	firing := readTestdata(t, "kernel-deadlock-firing.json")
	resolved := readTestdata(t, "kernel-deadlock-resolved.json")

	nodeState := func(name string) (unschedulable bool, owner string) {
		n, err := kube.Client.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			t.Fatalf("get node %s: %v", name, err)
		}
		return n.Spec.Unschedulable, n.Annotations[nodedrain.AnnotationOwner]
	}
	js := jetStreamAt(t, h.srv.NATSURL(), h.srv.NATSOptions()...)
	eventCount := func() uint64 {
		s, err := js.Stream(ctx, bus.StreamEvents)
		if err != nil {
			t.Fatal(err)
		}
		info, err := s.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return info.State.Msgs
	}

	t.Run("kernel deadlock cordons worker-1 within 2s", func(t *testing.T) {
		start := time.Now()
		if code, body := h.post(firing, h.srv.WebhookToken); code != http.StatusOK {
			t.Fatalf("webhook: %d %s", code, body)
		}
		waitFor(t, 2*time.Second-time.Since(start), "worker-1 cordoned by healer", func() (bool, string) {
			u, owner := nodeState("worker-1")
			return u && strings.HasPrefix(owner, "act-"), "unschedulable=" + boolStr(u) + " owner=" + owner
		})
		t.Logf("alert to cordon: %s", time.Since(start))

		var recs []audit.Record
		waitFor(t, 5*time.Second, "verified record", func() (bool, string) {
			recs = h.records(url.Values{"target": {"node/worker-1"}})
			return slices.Contains(kinds(recs), "verified"), describe(recs)
		})
		want := []string{"event", "decision", "action.started", "action.finished", "verified"}
		if got := kinds(recs); !slices.Equal(got, want) {
			t.Fatalf("audit kinds for worker-1 = %v, want %v%s", got, want, describe(recs))
		}
		for _, r := range recs {
			if r.Kind != audit.KindEvent && r.PolicyRevision == "" {
				t.Errorf("record %d (%s) has no policy revision", r.Seq, r.Kind)
			}
		}
		if recs[1].Remediator != "node.cordon" || !strings.HasPrefix(recs[1].PolicyRevision, "sha256:") {
			t.Errorf("decision record = %+v", recs[1])
		}
		_, owner := nodeState("worker-1")
		if recs[2].ActionID != owner {
			t.Errorf("action.started action_id %q, node owner annotation %q", recs[2].ActionID, owner)
		}
		all := h.records(url.Values{"after": {"0"}})
		if res := audit.VerifyRecords(all); !res.OK {
			t.Fatalf("audit chain broken: %+v", res)
		}
	})

	t.Run("the same POST again changes nothing", func(t *testing.T) {
		before := h.records(nil)
		msgs := eventCount()
		code, body := h.post(firing, h.srv.WebhookToken)
		if code != http.StatusOK || !strings.Contains(body, `"duplicates":1`) {
			t.Fatalf("webhook: %d %s (want 200 and one duplicate)", code, body)
		}
		time.Sleep(time.Second)
		if after := h.records(nil); len(after) != len(before) {
			t.Fatalf("audit grew from %d to %d records:%s", len(before), len(after), describe(after[len(before):]))
		}
		if got := eventCount(); got != msgs {
			t.Fatalf("events stream grew from %d to %d", msgs, got)
		}
	})

	t.Run("second node past the budget is suppressed", func(t *testing.T) {
		if code, body := h.post(alertFor(firing, "worker-2", "b000000000000002"), h.srv.WebhookToken); code != http.StatusOK {
			t.Fatalf("webhook: %d %s", code, body)
		}
		var recs []audit.Record
		waitFor(t, 5*time.Second, "suppressed record for worker-2", func() (bool, string) {
			recs = h.records(url.Values{"target": {"node/worker-2"}, "kind": {"suppressed"}})
			return len(recs) == 1, describe(recs)
		})
		if r := reason(recs[0]); !strings.Contains(r, "budget") {
			t.Errorf("suppressed reason %q does not name the budget", r)
		}
		if u, _ := nodeState("worker-2"); u {
			t.Fatal("worker-2 was cordoned past the budget")
		}
	})

	t.Run("resolved alert uncordons worker-1", func(t *testing.T) {
		if code, body := h.post(resolved, h.srv.WebhookToken); code != http.StatusOK {
			t.Fatalf("webhook: %d %s", code, body)
		}
		waitFor(t, 5*time.Second, "worker-1 uncordoned", func() (bool, string) {
			u, owner := nodeState("worker-1")
			return !u && owner == "", "unschedulable=" + boolStr(u) + " owner=" + owner
		})
		// The node changes before the undo's record is appended.
		var recs []audit.Record
		waitFor(t, 5*time.Second, "the undo audited", func() (bool, string) {
			recs = h.records(url.Values{"target": {"node/worker-1"}, "kind": {"action.finished"}})
			return len(recs) == 2, describe(recs)
		})
		if !strings.Contains(string(recs[1].Details), `"step":"undo"`) {
			t.Fatalf("want the cordon and the undo finished:%s", describe(recs))
		}
	})

	t.Run("the slot freed goes to worker-2, held back until now", func(t *testing.T) {
		waitFor(t, 5*time.Second, "worker-2 cordoned by its re-drive", func() (bool, string) {
			u, owner := nodeState("worker-2")
			return u && owner != "", "unschedulable=" + boolStr(u) + " owner=" + owner
		})
		// Its problem clears: uncordoned, and the budget is free again.
		if code, body := h.post(alertFor(resolved, "worker-2", "b000000000000002"), h.srv.WebhookToken); code != http.StatusOK {
			t.Fatalf("webhook: %d %s", code, body)
		}
		waitFor(t, 5*time.Second, "worker-2 uncordoned", func() (bool, string) {
			u, owner := nodeState("worker-2")
			return !u && owner == "", "unschedulable=" + boolStr(u) + " owner=" + owner
		})
	})

	t.Run("malformed body is 400 and stores nothing", func(t *testing.T) {
		msgs := eventCount()
		for name, body := range map[string]string{
			"not json":      `{"alerts": [`,
			"wrong version": strings.Replace(string(firing), `"version": "4"`, `"version": "3"`, 1),
			"no alerts":     `{"version":"4","status":"firing","alerts":[]}`,
			"bad status": strings.Replace(string(alertFor(firing, "worker-3", "c000000000000003")), `"status": "firing",
      "labels"`, `"status": "burning",
      "labels"`, 1),
		} {
			if code, resp := h.post([]byte(body), h.srv.WebhookToken); code != http.StatusBadRequest {
				t.Errorf("%s: status %d (%s), want 400", name, code, resp)
			}
		}
		if got := eventCount(); got != msgs {
			t.Fatalf("events stream grew from %d to %d after bad bodies", msgs, got)
		}
	})

	t.Run("missing or wrong token is 401", func(t *testing.T) {
		msgs := eventCount()
		for _, tok := range []string{"", "not-the-token", h.srv.APIToken} {
			if code, _ := h.post(firing, tok); code != http.StatusUnauthorized {
				t.Errorf("token %q: status %d, want 401", tok, code)
			}
		}
		if got := eventCount(); got != msgs {
			t.Fatalf("events stream grew from %d to %d without a token", msgs, got)
		}
	})

	t.Run("redis down fails closed", func(t *testing.T) {
		redis.Stop()
		defer redis.Start()
		if code, body := h.post(alertFor(firing, "worker-3", "d000000000000004"), h.srv.WebhookToken); code != http.StatusOK {
			t.Fatalf("webhook: %d %s", code, body)
		}
		var recs []audit.Record
		waitFor(t, 10*time.Second, "suppressed record for worker-3", func() (bool, string) {
			recs = h.records(url.Values{"target": {"node/worker-3"}, "kind": {"suppressed"}})
			return len(recs) == 1, describe(recs)
		})
		if r := reason(recs[0]); !strings.Contains(r, "rate limiter unavailable") {
			t.Errorf("suppressed reason %q does not say the limiter is unavailable", r)
		}
		if u, _ := nodeState("worker-3"); u {
			t.Fatal("worker-3 was cordoned while Redis was down")
		}
	})

	all := h.records(url.Values{"after": {"0"}})
	if res := audit.VerifyRecords(all); !res.OK {
		t.Fatalf("audit chain broken at the end: %+v", res)
	}
}

func boolStr(b bool) string {
	if b {
		return "true"
	}
	return "false"
}
