// Package testenv starts the real components healer's tests run against: an
// etcd and a kube-apiserver built from the Kubernetes sources, and a
// redis-server from the operating system.
//
// StartKube runs etcd and kube-apiserver on free loopback ports with RBAC
// on, so tests exercise real admission, validation, subresources and
// authorization. KubeOptions.Controllers adds a real kube-controller-manager
// running only the named controllers (the disruption controller, so that
// PodDisruptionBudgets block evictions). Without a scheduler or kubelet,
// Nodes are plain objects that tests create with CreateNodes and change with
// SetNodeCondition; StartFakeKubelet is the one stand-in: it marks pods bound
// to its nodes Running and Ready and finalizes pods being deleted or
// evicted, as a kubelet would. StartRedis runs redis-server without
// persistence. NewBridgeNet builds hosts as network namespaces on a bridge
// (root and iproute2 needed), for tests of what crosses a network such as
// a floating VIP; SampleAddr watches which hosts carry an address.
// RunFakeDaemonIfAsked turns the test binary into a small daemon that tests
// supervise, restart and crash with a real Go panic.
// StartNATSCluster runs three clustered JetStream servers on loopback that a
// test can stop, restart and move stream leaders between.
//
// The Kubernetes binaries are built by `make testenv` (hack/testenv/build.sh)
// into bin/ at the module root; HEALER_TESTENV_BIN names another directory
// holding them. A test whose binaries are missing fails rather than skips.
//
// Every process runs in its own process group, is killed when the test ends
// (also when it panics), and on Linux is killed by the kernel if the test
// binary dies first. Process output is kept in the test's temporary
// directory and logged only when the test fails.
package testenv
