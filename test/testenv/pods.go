package testenv

import (
	"context"
	"fmt"
	"maps"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// PodImage is the image of the pods CreatePods makes. Nothing pulls it.
const PodImage = "registry.k8s.io/pause:3.10"

// PodOwner is the kind of controller CreatePods makes the pods' owner.
type PodOwner string

// The owners CreatePods can give pods.
const (
	// OwnedByReplicaSet pods are controlled by a ReplicaSet, as a
	// Deployment's are; drain evicts them.
	OwnedByReplicaSet PodOwner = "ReplicaSet"
	// OwnedByDaemonSet pods are controlled by a DaemonSet; drain leaves
	// them.
	OwnedByDaemonSet PodOwner = "DaemonSet"
	// Unowned pods declare no controller; drain refuses them unless forced.
	Unowned PodOwner = "None"
)

// PodSet says what CreatePods makes.
type PodSet struct {
	// Namespace of the owner and the pods, "default" when empty. It is
	// created when missing.
	Namespace string
	// Name is the owner's name, and the pods' names are Name-<random>.
	Name string
	// Node is the node every pod is bound to (spec.nodeName).
	Node string
	// Count is how many pods to make.
	Count int
	// Labels are the pods' labels and the owner's selector; {"app": Name}
	// when empty.
	Labels map[string]string
	// Owner is the pods' controller; OwnedByReplicaSet when empty.
	Owner PodOwner
	// EmptyDir gives each pod an emptyDir volume (local data that a drain
	// would lose).
	EmptyDir bool
}

// CreatePods creates set.Count pods bound to set.Node and, unless they are
// Unowned, the ReplicaSet or DaemonSet that controls them (reused when it
// exists). No controller runs them: the owner only makes the pods look
// managed, and they stay Pending until a FakeKubelet for the node reports
// them Running. It returns the pods as created and fails t on any error.
func CreatePods(ctx context.Context, t testing.TB, client kubernetes.Interface, set PodSet) []*corev1.Pod {
	t.Helper()
	pods, err := createPods(ctx, client, set)
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	return pods
}

func createPods(ctx context.Context, client kubernetes.Interface, set PodSet) ([]*corev1.Pod, error) {
	if set.Name == "" || set.Node == "" {
		return nil, fmt.Errorf("create pods: PodSet needs a Name and a Node, got %+v", set)
	}
	if set.Namespace == "" {
		set.Namespace = metav1.NamespaceDefault
	}
	if len(set.Labels) == 0 {
		set.Labels = map[string]string{"app": set.Name}
	}
	if set.Owner == "" {
		set.Owner = OwnedByReplicaSet
	}
	if err := ensureNamespace(ctx, client, set.Namespace); err != nil {
		return nil, err
	}
	template := corev1.PodTemplateSpec{
		ObjectMeta: metav1.ObjectMeta{Labels: maps.Clone(set.Labels)},
		Spec: corev1.PodSpec{
			Containers: []corev1.Container{{Name: "app", Image: PodImage}},
		},
	}
	if set.EmptyDir {
		template.Spec.Volumes = []corev1.Volume{{Name: "scratch", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}}}
		template.Spec.Containers[0].VolumeMounts = []corev1.VolumeMount{{Name: "scratch", MountPath: "/scratch"}}
	}
	var owner *metav1.OwnerReference
	switch set.Owner {
	case OwnedByReplicaSet:
		ref, err := ensureReplicaSet(ctx, client, set, template)
		if err != nil {
			return nil, err
		}
		owner = ref
	case OwnedByDaemonSet:
		// The tolerations the DaemonSet controller gives its pods.
		template.Spec.Tolerations = []corev1.Toleration{
			{Key: corev1.TaintNodeNotReady, Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoExecute},
			{Key: corev1.TaintNodeUnreachable, Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoExecute},
			{Key: corev1.TaintNodeUnschedulable, Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoSchedule},
		}
		ref, err := ensureDaemonSet(ctx, client, set, template)
		if err != nil {
			return nil, err
		}
		owner = ref
	case Unowned:
	default:
		return nil, fmt.Errorf("create pods %s/%s: unknown owner %q", set.Namespace, set.Name, set.Owner)
	}
	pods := make([]*corev1.Pod, 0, set.Count)
	for range set.Count {
		pod := &corev1.Pod{
			ObjectMeta: *template.ObjectMeta.DeepCopy(),
			Spec:       *template.Spec.DeepCopy(),
		}
		pod.GenerateName = set.Name + "-"
		pod.Namespace = set.Namespace
		pod.Spec.NodeName = set.Node
		if owner != nil {
			pod.OwnerReferences = []metav1.OwnerReference{*owner}
		}
		created, err := client.CoreV1().Pods(set.Namespace).Create(ctx, pod, metav1.CreateOptions{})
		if err != nil {
			return nil, fmt.Errorf("create pod %s/%s-* on node %s: %w", set.Namespace, set.Name, set.Node, err)
		}
		pods = append(pods, created)
	}
	return pods, nil
}

func ensureNamespace(ctx context.Context, client kubernetes.Interface, name string) error {
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}
	_, err := client.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("create namespace %s: %w", name, err)
	}
	return nil
}

func ensureReplicaSet(ctx context.Context, client kubernetes.Interface, set PodSet, template corev1.PodTemplateSpec) (*metav1.OwnerReference, error) {
	replicas := int32(set.Count)
	rs := &appsv1.ReplicaSet{
		ObjectMeta: metav1.ObjectMeta{Name: set.Name, Namespace: set.Namespace, Labels: maps.Clone(set.Labels)},
		Spec: appsv1.ReplicaSetSpec{
			Replicas: &replicas,
			Selector: &metav1.LabelSelector{MatchLabels: maps.Clone(set.Labels)},
			Template: template,
		},
	}
	rsc := client.AppsV1().ReplicaSets(set.Namespace)
	got, err := rsc.Create(ctx, rs, metav1.CreateOptions{})
	if apierrors.IsAlreadyExists(err) {
		got, err = rsc.Get(ctx, set.Name, metav1.GetOptions{})
	}
	if err != nil {
		return nil, fmt.Errorf("create replicaset %s/%s: %w", set.Namespace, set.Name, err)
	}
	return controllerRef("ReplicaSet", got.ObjectMeta), nil
}

func ensureDaemonSet(ctx context.Context, client kubernetes.Interface, set PodSet, template corev1.PodTemplateSpec) (*metav1.OwnerReference, error) {
	ds := &appsv1.DaemonSet{
		ObjectMeta: metav1.ObjectMeta{Name: set.Name, Namespace: set.Namespace, Labels: maps.Clone(set.Labels)},
		Spec: appsv1.DaemonSetSpec{
			Selector: &metav1.LabelSelector{MatchLabels: maps.Clone(set.Labels)},
			Template: template,
		},
	}
	dsc := client.AppsV1().DaemonSets(set.Namespace)
	got, err := dsc.Create(ctx, ds, metav1.CreateOptions{})
	if apierrors.IsAlreadyExists(err) {
		got, err = dsc.Get(ctx, set.Name, metav1.GetOptions{})
	}
	if err != nil {
		return nil, fmt.Errorf("create daemonset %s/%s: %w", set.Namespace, set.Name, err)
	}
	return controllerRef("DaemonSet", got.ObjectMeta), nil
}

func controllerRef(kind string, meta metav1.ObjectMeta) *metav1.OwnerReference {
	yes := true
	return &metav1.OwnerReference{
		APIVersion:         appsv1.SchemeGroupVersion.String(),
		Kind:               kind,
		Name:               meta.Name,
		UID:                meta.UID,
		Controller:         &yes,
		BlockOwnerDeletion: &yes,
	}
}
