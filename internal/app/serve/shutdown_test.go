package serve

import (
	"context"
	"strings"
	"testing"
	"time"
)

// A step that never returns does not hold the shutdown past its timeout:
// the error names it, and the steps after it are not waited for.
func TestBoundedShutdownNamesWhatIsStuck(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
	defer cancel()
	stuck := make(chan struct{})
	defer close(stuck)
	var ran []string
	start := time.Now()
	err := boundedShutdown(ctx, []shutdownStep{
		{"http server", func() { ran = append(ran, "http") }},
		{"engine", func() { <-stuck }},
		{"connections", func() { ran = append(ran, "connections") }},
	})
	if took := time.Since(start); took > 2*time.Second {
		t.Fatalf("took %s", took)
	}
	if err == nil || !strings.Contains(err.Error(), "engine still stopping") {
		t.Fatalf("err = %v", err)
	}
	if strings.Join(ran, ",") != "http" {
		t.Fatalf("ran %v", ran)
	}
	if err := boundedShutdown(t.Context(), []shutdownStep{{"all", func() {}}}); err != nil {
		t.Fatal(err)
	}
}
