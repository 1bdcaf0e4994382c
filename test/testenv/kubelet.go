package testenv

import (
	"context"
	"fmt"
	"hash/fnv"
	"slices"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"
)

// kubeletSyncTimeout is how long StartFakeKubelet waits for its pod
// informer to list.
const kubeletSyncTimeout = 30 * time.Second

// FakeKubelet plays the part of the kubelets of some Nodes for the pods
// bound to them; see StartFakeKubelet.
type FakeKubelet struct {
	client kubernetes.Interface
	nodes  []string
	queue  workqueue.TypedRateLimitingInterface[string]
	store  cache.Store
	cancel context.CancelFunc
	done   chan struct{}
	stop   sync.Once
}

// StartFakeKubelet runs, until ctx ends or t ends, a loop that does for the
// pods bound (spec.nodeName) to any of nodeNames what their kubelet would:
// a pod that is not yet running is reported Running, with every container
// started and ready and the pod Ready; a pod with a deletionTimestamp
// (deleted or evicted) is finalized, that is deleted with grace period 0,
// once — as if its containers had stopped at once, whatever its grace
// period. Nothing is run: the containers, addresses and images are made
// up. It waits until its informer has listed the pods and fails t on
// error.
func StartFakeKubelet(ctx context.Context, t testing.TB, client kubernetes.Interface, nodeNames ...string) *FakeKubelet {
	t.Helper()
	if len(nodeNames) == 0 {
		t.Fatalf("testenv: StartFakeKubelet: no node named")
	}
	ctx, cancel := context.WithCancel(ctx)
	k := &FakeKubelet{
		client: client,
		nodes:  slices.Clone(nodeNames),
		queue: workqueue.NewTypedRateLimitingQueueWithConfig(
			workqueue.NewTypedItemExponentialFailureRateLimiter[string](20*time.Millisecond, 2*time.Second),
			workqueue.TypedRateLimitingQueueConfig[string]{Name: "fake-kubelet"}),
		cancel: cancel,
		done:   make(chan struct{}),
	}
	t.Cleanup(k.Stop)

	factory := informers.NewSharedInformerFactory(client, 0)
	inf := factory.Core().V1().Pods().Informer()
	k.store = inf.GetStore()
	enqueue := func(obj any) {
		if pod, ok := obj.(*corev1.Pod); ok && slices.Contains(k.nodes, pod.Spec.NodeName) {
			if key, err := cache.MetaNamespaceKeyFunc(pod); err == nil {
				k.queue.Add(key)
			}
		}
	}
	if _, err := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    enqueue,
		UpdateFunc: func(_, obj any) { enqueue(obj) },
	}); err != nil {
		cancel()
		t.Fatalf("testenv: fake kubelet: watch pods: %v", err)
	}
	factory.Start(ctx.Done())
	syncCtx, syncCancel := context.WithTimeout(ctx, kubeletSyncTimeout)
	defer syncCancel()
	if !cache.WaitForCacheSync(syncCtx.Done(), inf.HasSynced) {
		cancel()
		factory.Shutdown()
		t.Fatalf("testenv: fake kubelet: pod informer did not sync within %s", kubeletSyncTimeout)
	}
	go func() {
		defer close(k.done)
		defer factory.Shutdown()
		go func() {
			<-ctx.Done()
			k.queue.ShutDown()
		}()
		for k.next(ctx) {
		}
	}()
	return k
}

// Stop ends the loop and waits for it; pods deleted afterwards stay
// Terminating, as on a node whose kubelet died. It is called when the test
// ends; calling it again does nothing.
func (k *FakeKubelet) Stop() {
	k.stop.Do(func() {
		k.cancel()
		<-k.done
	})
}

// next handles one queued pod; it returns false once the queue is shut down.
func (k *FakeKubelet) next(ctx context.Context) bool {
	key, quit := k.queue.Get()
	if quit {
		return false
	}
	defer k.queue.Done(key)
	if err := k.sync(ctx, key); err != nil && ctx.Err() == nil {
		k.queue.AddRateLimited(key)
		return true
	}
	k.queue.Forget(key)
	return true
}

// sync brings one pod to where its kubelet would take it.
func (k *FakeKubelet) sync(ctx context.Context, key string) error {
	obj, exists, err := k.store.GetByKey(key)
	if err != nil || !exists {
		return err
	}
	pod := obj.(*corev1.Pod)
	if !slices.Contains(k.nodes, pod.Spec.NodeName) {
		return nil
	}
	pods := k.client.CoreV1().Pods(pod.Namespace)
	if pod.DeletionTimestamp != nil {
		zero := int64(0)
		err := pods.Delete(ctx, pod.Name, metav1.DeleteOptions{
			GracePeriodSeconds: &zero,
			Preconditions:      &metav1.Preconditions{UID: &pod.UID},
		})
		if apierrors.IsNotFound(err) || apierrors.IsConflict(err) {
			return nil // gone already, or a new pod of the same name
		}
		if err != nil {
			return fmt.Errorf("finalize pod %s: %w", key, err)
		}
		return nil
	}
	if running(pod) {
		return nil
	}
	updated := pod.DeepCopy()
	updated.Status = runningStatus(pod, time.Now())
	if _, err := pods.UpdateStatus(ctx, updated, metav1.UpdateOptions{}); err != nil {
		if apierrors.IsNotFound(err) {
			return nil
		}
		// A conflict means the informer has a newer pod coming; retry.
		return fmt.Errorf("report pod %s running: %w", key, err)
	}
	return nil
}

// running reports whether the pod's status already says what runningStatus
// would.
func running(pod *corev1.Pod) bool {
	if pod.Status.Phase != corev1.PodRunning || len(pod.Status.ContainerStatuses) != len(pod.Spec.Containers) {
		return false
	}
	for _, c := range pod.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// runningStatus is the status of pod with every container running and
// ready since now, keeping a start time it already has.
func runningStatus(pod *corev1.Pod, now time.Time) corev1.PodStatus {
	start := metav1.NewTime(now)
	if pod.Status.StartTime != nil {
		start = *pod.Status.StartTime
	}
	cond := func(t corev1.PodConditionType) corev1.PodCondition {
		return corev1.PodCondition{Type: t, Status: corev1.ConditionTrue, LastTransitionTime: start}
	}
	ip := fakePodIP(pod.UID)
	st := corev1.PodStatus{
		Phase: corev1.PodRunning,
		Conditions: []corev1.PodCondition{
			cond(corev1.PodReadyToStartContainers),
			cond(corev1.PodInitialized),
			cond(corev1.ContainersReady),
			cond(corev1.PodReady),
			cond(corev1.PodScheduled),
		},
		HostIP:    "127.0.0.1",
		HostIPs:   []corev1.HostIP{{IP: "127.0.0.1"}},
		PodIP:     ip,
		PodIPs:    []corev1.PodIP{{IP: ip}},
		StartTime: &start,
		QOSClass:  pod.Status.QOSClass, // set by the apiserver at create, and immutable
	}
	for _, c := range pod.Spec.InitContainers {
		st.InitContainerStatuses = append(st.InitContainerStatuses, corev1.ContainerStatus{
			Name:        c.Name,
			Image:       c.Image,
			ImageID:     "fake://" + c.Image,
			ContainerID: "fake://" + string(pod.UID) + "/" + c.Name,
			State: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{
				ExitCode: 0, Reason: "Completed", StartedAt: start, FinishedAt: start,
			}},
			Ready: true,
		})
	}
	started := true
	for _, c := range pod.Spec.Containers {
		st.ContainerStatuses = append(st.ContainerStatuses, corev1.ContainerStatus{
			Name:        c.Name,
			Image:       c.Image,
			ImageID:     "fake://" + c.Image,
			ContainerID: "fake://" + string(pod.UID) + "/" + c.Name,
			State:       corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: start}},
			Ready:       true,
			Started:     &started,
		})
	}
	return st
}

// fakePodIP makes up a stable address in 10.244.0.0/16 for a pod.
func fakePodIP(uid types.UID) string {
	h := fnv.New32a()
	_, _ = h.Write([]byte(uid))
	n := h.Sum32()
	return fmt.Sprintf("10.244.%d.%d", (n>>8)&0xff, 1+n%254)
}
