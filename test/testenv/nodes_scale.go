package testenv

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
)

// EtcdQuotaArg returns etcd's --quota-backend-bytes flag for a quota of gib
// GiB, for KubeOptions.EtcdArgs. etcd's default quota is 2 GiB; 100,000
// realistic Nodes take about 1 GiB, and every write keeps the old revision
// until the apiserver compacts (every 5 minutes).
func EtcdQuotaArg(gib int) string {
	return "--quota-backend-bytes=" + strconv.FormatInt(int64(gib)<<30, 10)
}

// FleetRegion is the region of the Nodes RealisticNode makes; their zones
// are FleetRegion followed by a, b and c.
const FleetRegion = "eu-west-1"

// npdCondition is a condition node-problem-detector sets, with the reason
// and message it reports while the problem is absent.
type npdCondition struct{ typ, reason, message string }

// npdConditions are the conditions node-problem-detector sets with its
// default configuration.
func npdConditions() []npdCondition {
	return []npdCondition{
		{"KernelDeadlock", "KernelHasNoDeadlock", "kernel has no deadlock"},
		{"ReadonlyFilesystem", "FilesystemIsNotReadOnly", "Filesystem is not read-only"},
		{"FrequentKubeletRestart", "NoFrequentKubeletRestart", "kubelet is functioning properly"},
		{"FrequentDockerRestart", "NoFrequentDockerRestart", "docker is functioning properly"},
		{"FrequentContainerdRestart", "NoFrequentContainerdRestart", "containerd is functioning properly"},
		{"CorruptDockerOverlay2", "NoCorruptDockerOverlay2", "docker overlay2 is functioning properly"},
	}
}

// fleetImages are the repositories of the images RealisticNode lists; each
// node lists a window of them, so nodes share most but not all images.
func fleetImages() []string {
	return []string{
		"602401143452.dkr.ecr.eu-west-1.amazonaws.com/amazon-k8s-cni",
		"602401143452.dkr.ecr.eu-west-1.amazonaws.com/amazon-k8s-cni-init",
		"602401143452.dkr.ecr.eu-west-1.amazonaws.com/eks/kube-proxy",
		"602401143452.dkr.ecr.eu-west-1.amazonaws.com/eks/coredns",
		"602401143452.dkr.ecr.eu-west-1.amazonaws.com/eks/aws-ebs-csi-driver",
		"602401143452.dkr.ecr.eu-west-1.amazonaws.com/eks/csi-node-driver-registrar",
		"602401143452.dkr.ecr.eu-west-1.amazonaws.com/eks/livenessprobe",
		"registry.k8s.io/node-problem-detector/node-problem-detector",
		"quay.io/prometheus/node-exporter",
		"docker.io/fluent/fluent-bit",
		"docker.io/grafana/promtail",
		"docker.io/library/nginx",
		"docker.io/library/redis",
		"ghcr.io/open-telemetry/opentelemetry-collector-releases/opentelemetry-collector-contrib",
		"quay.io/cilium/hubble-relay",
		"registry.k8s.io/pause",
	}
}

// RealisticNodeName returns the name of the i-th Node of RealisticNode: the
// private DNS name of an EC2 instance, as kubelets on AWS register.
func RealisticNodeName(i int) string {
	return "ip-" + fleetIP(i, "-") + "." + FleetRegion + ".compute.internal"
}

// fleetIP is the i-th node's private address, 10.16.0.0 onwards, with sep
// between the octets.
func fleetIP(i int, sep string) string {
	return "10" + sep + strconv.Itoa(16+i>>16) + sep + strconv.Itoa(i>>8&0xff) + sep + strconv.Itoa(i&0xff)
}

// RealisticNode returns the i-th Node of a fleet as kubelets on cloud VMs
// register them and node-problem-detector keeps their conditions: the
// kubelet's and the cloud's labels (zone among them, the fleet spread over
// three zones) and annotations, a pod CIDR and provider ID, capacity and
// allocatable, node-problem-detector's six conditions and the kubelet's
// four (all healthy), four addresses, node info, and the given number of
// images (a kubelet lists up to 50). Everything unique to a real node
// (IDs, addresses, names) is unique here too. With 20 images a Node is
// about 10 KiB as JSON once the apiserver has added its managed fields.
func RealisticNode(i, images int) *corev1.Node {
	name := RealisticNodeName(i)
	ip := fleetIP(i, ".")
	zone := FleetRegion + string(rune('a'+i%3))
	id := sha256.Sum256([]byte(name))
	hexID := hex.EncodeToString(id[:])
	instance := "i-0" + hexID[:16]
	uuid := func(s string) string { return s[:8] + "-" + s[8:12] + "-" + s[12:16] + "-" + s[16:20] + "-" + s[20:32] }
	const instanceType = "m6i.2xlarge"
	cidr := strconv.Itoa(100+i>>16) + "." + strconv.Itoa(i>>8&0xff) + "." + strconv.Itoa(i&0xff) + ".0/24"
	// One creation time per node, a little apart, as a fleet that grew.
	created := metav1.NewTime(time.Date(2026, 9, 1, 0, 0, 0, 0, time.UTC).Add(time.Duration(i) * 17 * time.Second))
	now := metav1.NewTime(time.Now().Truncate(time.Second))

	capacity := corev1.ResourceList{
		corev1.ResourceCPU:              resource.MustParse("8"),
		corev1.ResourceEphemeralStorage: resource.MustParse("104845292Ki"),
		"hugepages-1Gi":                 resource.MustParse("0"),
		"hugepages-2Mi":                 resource.MustParse("0"),
		corev1.ResourceMemory:           resource.MustParse("32386572Ki"),
		corev1.ResourcePods:             resource.MustParse("58"),
		"attachable-volumes-aws-ebs":    resource.MustParse("25"),
	}
	allocatable := corev1.ResourceList{
		corev1.ResourceCPU:              resource.MustParse("7910m"),
		corev1.ResourceEphemeralStorage: resource.MustParse("95551679124"),
		"hugepages-1Gi":                 resource.MustParse("0"),
		"hugepages-2Mi":                 resource.MustParse("0"),
		corev1.ResourceMemory:           resource.MustParse("31369740Ki"),
		corev1.ResourcePods:             resource.MustParse("58"),
		"attachable-volumes-aws-ebs":    resource.MustParse("25"),
	}
	cond := func(t corev1.NodeConditionType, reason, msg string, s corev1.ConditionStatus) corev1.NodeCondition {
		return corev1.NodeCondition{Type: t, Status: s, Reason: reason, Message: msg,
			LastHeartbeatTime: now, LastTransitionTime: created}
	}
	var conditions []corev1.NodeCondition
	for _, c := range npdConditions() {
		conditions = append(conditions, cond(corev1.NodeConditionType(c.typ), c.reason, c.message, corev1.ConditionFalse))
	}
	conditions = append(conditions,
		cond(corev1.NodeMemoryPressure, "KubeletHasSufficientMemory", "kubelet has sufficient memory available", corev1.ConditionFalse),
		cond(corev1.NodeDiskPressure, "KubeletHasNoDiskPressure", "kubelet has no disk pressure", corev1.ConditionFalse),
		cond(corev1.NodePIDPressure, "KubeletHasSufficientPID", "kubelet has sufficient PID available", corev1.ConditionFalse),
		cond(corev1.NodeReady, "KubeletReady", "kubelet is posting ready status", corev1.ConditionTrue),
	)
	shared := fleetImages()
	imageList := make([]corev1.ContainerImage, 0, images)
	for j := range images {
		repo := shared[(i+j)%len(shared)]
		tag := "v1." + strconv.Itoa((i+j)%7) + "." + strconv.Itoa(j%5)
		if j >= len(shared) {
			// Beyond the shared images: the workloads' own.
			repo = "123456789012.dkr.ecr.eu-west-1.amazonaws.com/shop/service-" + strconv.Itoa((i+j)%40)
		}
		digest := sha256.Sum256([]byte(repo + ":" + tag))
		imageList = append(imageList, corev1.ContainerImage{
			Names:     []string{repo + "@sha256:" + hex.EncodeToString(digest[:]), repo + ":" + tag},
			SizeBytes: 20_000_000 + int64(digest[0])<<20 + int64(digest[1])<<12,
		})
	}

	return &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{
			Name:              name,
			CreationTimestamp: created,
			Labels: map[string]string{
				"beta.kubernetes.io/arch":                  "amd64",
				"beta.kubernetes.io/instance-type":         instanceType,
				"beta.kubernetes.io/os":                    "linux",
				"eks.amazonaws.com/capacityType":           "ON_DEMAND",
				"eks.amazonaws.com/nodegroup":              "pool-" + strconv.Itoa(i%12),
				"eks.amazonaws.com/nodegroup-image":        "ami-0a1b2c3d4e5f60718",
				"eks.amazonaws.com/sourceLaunchTemplateId": "lt-0" + hexID[16:32],
				"failure-domain.beta.kubernetes.io/region": FleetRegion,
				"failure-domain.beta.kubernetes.io/zone":   zone,
				"k8s.io/cloud-provider-aws":                hexID[32:64],
				HostnameLabel:                              name,
				"kubernetes.io/arch":                       "amd64",
				"kubernetes.io/os":                         "linux",
				"node-role.kubernetes.io/worker":           "",
				"node.kubernetes.io/instance-type":         instanceType,
				"topology.ebs.csi.aws.com/zone":            zone,
				"topology.k8s.aws/zone-id":                 "euw1-az" + strconv.Itoa(1+i%3),
				"topology.kubernetes.io/region":            FleetRegion,
				"topology.kubernetes.io/zone":              zone,
			},
			Annotations: map[string]string{
				"alpha.kubernetes.io/provided-node-ip":                   ip,
				"csi.volume.kubernetes.io/nodeid":                        `{"ebs.csi.aws.com":"` + instance + `"}`,
				"node.alpha.kubernetes.io/ttl":                           "0",
				"volumes.kubernetes.io/controller-managed-attach-detach": "true",
			},
		},
		Spec: corev1.NodeSpec{
			PodCIDR:    cidr,
			PodCIDRs:   []string{cidr},
			ProviderID: "aws:///" + zone + "/" + instance,
		},
		Status: corev1.NodeStatus{
			Capacity:    capacity,
			Allocatable: allocatable,
			Phase:       corev1.NodeRunning,
			Conditions:  conditions,
			Addresses: []corev1.NodeAddress{
				{Type: corev1.NodeInternalIP, Address: ip},
				{Type: corev1.NodeExternalIP, Address: "203.0." + strconv.Itoa(i>>8&0xff) + "." + strconv.Itoa(i&0xff)},
				{Type: corev1.NodeInternalDNS, Address: name},
				{Type: corev1.NodeHostName, Address: name},
			},
			DaemonEndpoints: corev1.NodeDaemonEndpoints{KubeletEndpoint: corev1.DaemonEndpoint{Port: 10250}},
			NodeInfo: corev1.NodeSystemInfo{
				MachineID:               hexID[:32],
				SystemUUID:              "ec2" + uuid(hexID[32:])[3:],
				BootID:                  uuid(hexID[16:48]),
				KernelVersion:           "6.1.112-124.190.amzn2023.x86_64",
				OSImage:                 "Amazon Linux 2023.6.20241010",
				ContainerRuntimeVersion: "containerd://1.7.22",
				KubeletVersion:          "v1.36.3-eks-7f9249a",
				OperatingSystem:         "linux",
				Architecture:            "amd64",
			},
			Images: imageList,
		},
	}
}

// CreateRealisticNodes creates the Nodes RealisticNode numbers first to
// first+count-1, with images images each, keeping workers requests in
// flight. Unlike CreateNodes each Node is one request, status included, as
// a kubelet registers (a Node's status may be set when it is created). It
// logs progress every tenth of the way, returns how long it took and fails
// t on the first error. The client's rate limit applies: give it a high QPS.
func CreateRealisticNodes(ctx context.Context, t testing.TB, client kubernetes.Interface, workers, first, count, images int) time.Duration {
	t.Helper()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	begin := time.Now()
	var (
		next     atomic.Int64
		done     atomic.Int64
		wg       sync.WaitGroup
		mu       sync.Mutex
		firstErr error
	)
	next.Store(int64(first))
	end := int64(first + count)
	step := max(int64(count)/10, 1)
	for range max(workers, 1) {
		wg.Go(func() {
			for ctx.Err() == nil {
				i := next.Add(1) - 1
				if i >= end {
					return
				}
				node := RealisticNode(int(i), images)
				if _, err := client.CoreV1().Nodes().Create(ctx, node, metav1.CreateOptions{}); err != nil {
					mu.Lock()
					if firstErr == nil {
						firstErr = fmt.Errorf("create node %q: %w", node.Name, err)
					}
					mu.Unlock()
					cancel()
					return
				}
				if n := done.Add(1); n%step == 0 {
					t.Logf("testenv: %d of %d nodes created after %s", n, count, time.Since(begin).Round(time.Second))
				}
			}
		})
	}
	wg.Wait()
	if firstErr != nil {
		t.Fatalf("testenv: %v", firstErr)
	}
	if err := ctx.Err(); err != nil {
		t.Fatalf("testenv: create nodes: %v", err)
	}
	return time.Since(begin)
}

// HeartbeatNode renews the lastHeartbeatTime of node's conditions the way
// node-problem-detector does when nothing changed: a strategic merge patch
// of status.conditions, merged by type, with the six conditions RealisticNode
// gives it and the time now. With ready the kubelet's Ready condition is
// renewed too. Conditions keep their status, reason and transition time. A
// node whose heartbeat is renewed twice within a second does not change
// (the time has one-second precision), so the apiserver sends no watch
// event for the second patch.
func HeartbeatNode(ctx context.Context, client kubernetes.Interface, node string, ready bool) error {
	type heartbeat struct {
		Type              corev1.NodeConditionType `json:"type"`
		LastHeartbeatTime metav1.Time              `json:"lastHeartbeatTime"`
	}
	now := metav1.NewTime(time.Now())
	npd := npdConditions()
	conds := make([]heartbeat, 0, len(npd)+1)
	for _, c := range npd {
		conds = append(conds, heartbeat{Type: corev1.NodeConditionType(c.typ), LastHeartbeatTime: now})
	}
	if ready {
		conds = append(conds, heartbeat{Type: corev1.NodeReady, LastHeartbeatTime: now})
	}
	raw, err := json.Marshal(map[string]any{"status": map[string]any{"conditions": conds}})
	if err != nil {
		return fmt.Errorf("encode heartbeat of node %q: %w", node, err)
	}
	if _, err := client.CoreV1().Nodes().Patch(ctx, node, types.StrategicMergePatchType, raw, metav1.PatchOptions{}, "status"); err != nil {
		return fmt.Errorf("heartbeat of node %q: %w", node, err)
	}
	return nil
}
