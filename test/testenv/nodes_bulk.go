package testenv

import (
	"context"
	"sync"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/kubernetes"
)

// CreateNodesParallel creates a Node for each name exactly as CreateNodes
// does, with workers requests in flight, for tests and benchmarks that need
// thousands of Nodes. It does not return the Nodes, so that they do not stay
// in memory, and fails t on the first error. The client's rate limit still
// applies: give it a high QPS for large counts.
func CreateNodesParallel(ctx context.Context, t testing.TB, client kubernetes.Interface, workers int, names ...string) {
	t.Helper()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	work := make(chan string)
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		firstErr error
	)
	for range max(workers, 1) {
		wg.Go(func() {
			for name := range work {
				if _, err := createNode(ctx, client, name); err != nil {
					mu.Lock()
					if firstErr == nil {
						firstErr = err
					}
					mu.Unlock()
					cancel()
				}
			}
		})
	}
feed:
	for _, name := range names {
		select {
		case work <- name:
		case <-ctx.Done():
			break feed
		}
	}
	close(work)
	wg.Wait()
	if firstErr != nil {
		t.Fatalf("testenv: %v", firstErr)
	}
	if err := ctx.Err(); err != nil && len(names) > 0 {
		t.Fatalf("testenv: create nodes: %v", err)
	}
}

// PatchNodeCondition sets one condition of a Node exactly as
// SetNodeCondition does, but returns its error instead of failing a test,
// so that it can be called from goroutines other than the test's.
func PatchNodeCondition(ctx context.Context, client kubernetes.Interface, node string,
	condType corev1.NodeConditionType, status corev1.ConditionStatus, reason, message string) (*corev1.Node, error) {
	return setNodeCondition(ctx, client, node, condType, status, reason, message)
}
