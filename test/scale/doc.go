// Package scale measures a real `healer serve` process against a large
// cluster. It holds tests and benchmarks only.
//
// BenchmarkServeMemory builds the healer binary, starts a real etcd and
// kube-apiserver (test/testenv, with etcd's quota raised to 8 GiB),
// creates -scale.nodes realistic Node objects in it (labels with zones,
// node-problem-detector's and the kubelet's conditions, addresses, capacity,
// node info and -scale.images images: about 10 KiB each as JSON), and starts
// `healer serve` as production runs it: an external NATS JetStream and Redis
// (both started by the test), a kubeconfig, and the default configuration,
// so every Kubernetes watch of serve is on (the blast-radius budget's Node
// informer and the node-problem detector's Node and Event informers). The
// process runs with GODEBUG=gctrace=1, which makes the Go runtime report the
// live heap after each collection on stderr (serve's /metrics has the Go
// runtime's gauges too, but only as often as it is scraped). Once both Node
// watches hold every node (the start-up log, the detector's "initial sync done" line and the healer_budget_nodes gauge
// all say how many), node heartbeats are patched at -scale.churn-rate per
// second for -scale.churn, and the benchmark reports, from /proc:
//
//   - MiB-peak-rss: the process's peak resident set (VmHWM);
//   - MiB-rss-synced: its resident set once both watches had synced;
//   - MiB-rss-steady: its resident set after the churn and a pause;
//   - MiB-peak-live-heap and MiB-live-heap-steady: the Go heap marked live
//     by the largest and by the last collection (gctrace);
//   - s-create-nodes, s-to-serving, s-to-synced: how long the Nodes took to
//     create, and serve to start and to sync;
//   - s-to-budget-full and nodes-in-budget-at-serving: when the budget's
//     gauge first counted every node, and how many it counted when serve
//     logged that it serves (every node: its start-up waits until its
//     handler has counted the first list, not only for the informer's
//     cache, which ran seconds ahead of the counts at 100,000 nodes);
//   - KiB/node-json and KiB/node-protobuf: the size of one Node as served;
//   - B/node-budget and B/node-nodeproblem, s-sync-… and
//     MiB-peak-live-heap-…: each of the two Node watches run alone in the
//     test process afterwards (guard.NewBudget, nodeproblem.New) with a
//     client configured as serve's, on the same cluster: the live heap each
//     adds once synced, how long it took and its peak while syncing.
//
// The full run, 100,000 Nodes (about 15 minutes of setup on two cores):
//
//	go test -run '^$' -bench ServeMemory -benchtime 1x -timeout 60m -v ./test/scale/
//
// Smaller runs take -scale.nodes, e.g. -args -scale.nodes 10000.
// TestServeMemorySmoke runs the same harness on 200 Nodes in `make test`.
package scale
