package policies

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/selfheal/healer/bus"
)

// writeDir writes files (name → content) into a new temporary directory.
func writeDir(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	writeFiles(t, dir, files)
	return dir
}

func writeFiles(t *testing.T, dir string, files map[string]string) {
	t.Helper()
	for name, content := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// testTime is the time of the decisions in the tests.
func testTime() time.Time { return time.Date(2025, 6, 1, 10, 14, 4, 0, time.UTC) }

// nodeEvent returns an event of typ and status about subject.
func nodeEvent(typ, status, subject string) *bus.Event {
	return &bus.Event{
		SpecVersion:     bus.SpecVersion,
		ID:              "e-" + typ + "-" + status,
		Source:          "alertmanager",
		Type:            typ,
		Subject:         subject,
		Time:            testTime().Add(-time.Second),
		DataContentType: "application/json",
		Status:          status,
		Key:             "fp-1",
		Data:            json.RawMessage(`{"severity":"critical","labels":{"node":"worker-1"}}`),
	}
}

// knownBudget is a budget with room for one more node out of service.
func knownBudget() Budget {
	return Budget{TotalNodes: 10, OutOfService: 1, InFlight: 0, Allowed: 2, Available: 1, Known: true}
}

// input wraps e in an input with a known budget.
func input(e *bus.Event) *Input {
	return &Input{Event: e, Context: Context{Now: testTime(), Budget: knownBudget()}}
}

// loadDir loads the policies in files, failing the test on error.
func loadDir(t *testing.T, files map[string]string) *Policy {
	t.Helper()
	p, err := Load(context.Background(), writeDir(t, files))
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	return p
}
