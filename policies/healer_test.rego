# Tests for the default healer policy. healer runs them every time it loads
# the policy and refuses a policy that fails its own tests; run them by hand
# with `healer policy test policies/`.
package healer_test

import data.healer

# A known budget with room for one more node out of service.
budget_ok := {"total_nodes": 10, "out_of_service": 0, "in_flight": 0, "allowed": 1, "available": 1, "known": true}

ctx := {"now": "2025-01-02T03:04:05Z", "budget": budget_ok, "recent_actions": []}

# event returns a node event of the given type and status for worker-1.
event(type, status) := {
	"specversion": "1.0",
	"id": "e-1",
	"source": "alertmanager",
	"type": type,
	"subject": "node/worker-1",
	"time": "2025-01-02T03:04:00Z",
	"status": status,
	"key": "fp-1",
	"data": {"severity": "critical"},
}

test_kernel_deadlock_firing_cordons if {
	d := healer.decision with input as {"event": event("NodeKernelDeadlock", "firing"), "context": ctx}
	d.remediator == "node.cordon"
	d.approval == "none"
	d.params == {"reason": "NodeKernelDeadlock"}
	d.reason == "NodeKernelDeadlock on node/worker-1: cordon so no new pods land there"
	d.rule == "cordon_sick_node"
}

test_readonly_filesystem_firing_cordons if {
	d := healer.decision with input as {"event": event("NodeReadonlyFilesystem", "firing"), "context": ctx}
	d.remediator == "node.cordon"
	d.params == {"reason": "NodeReadonlyFilesystem"}
	d.reason == "NodeReadonlyFilesystem on node/worker-1: cordon so no new pods land there"
}

test_not_ready_firing_cordons_after_recheck if {
	d := healer.decision with input as {"event": event("NodeNotReady", "firing"), "context": ctx}
	d.remediator == "node.cordon"
	d.params == {"reason": "NodeNotReady", "condition": "Ready", "condition_status": ["False", "Unknown"]}
}

test_persistent_problems_escalate_to_drain if {
	every type in ["NodeKernelDeadlock", "NodeReadonlyFilesystem"] {
		d := healer.decision with input as {"event": event(type, "firing"), "context": ctx}
		d.steps == [
			{"remediator": "node.cordon", "params": {"reason": type}, "wait": "10m"},
			{"remediator": "node.drain", "params": {"reason": type, "timeout": "10m"}, "wait": "30m"},
		]
	}
}

test_not_ready_is_only_cordoned if {
	d := healer.decision with input as {"event": event("NodeNotReady", "firing"), "context": ctx}
	d.steps == []
	npd := object.union(event("NodeNotReady", "firing"), {"source": "nodeproblem"})
	d2 := healer.decision with input as {"event": npd, "context": ctx}
	d2.steps == []
	d2.params.condition == "Ready"
}

test_node_problem_detector_events_recheck_their_condition if {
	npd := object.union(event("NodeKernelDeadlock", "firing"), {"source": "nodeproblem"})
	d := healer.decision with input as {"event": npd, "context": ctx}
	d.params == {"reason": "NodeKernelDeadlock", "condition": "KernelDeadlock"}
	d.steps[1].params.condition == "KernelDeadlock"
}

test_cordon_is_rate_limited_per_node_and_cluster if {
	every type in ["NodeKernelDeadlock", "NodeReadonlyFilesystem", "NodeNotReady"] {
		d := healer.decision with input as {"event": event(type, "firing"), "context": ctx}
		d.rate_limit == {"key": "node.cordon:node/worker-1", "max": 1, "per": "10m"}
		d.rate_limits == [{"key": "node.cordon:cluster", "max": 3, "per": "1h"}]
	}
}

test_resolved_undoes_cordon_without_rate_limits if {
	every type in ["NodeKernelDeadlock", "NodeReadonlyFilesystem", "NodeNotReady"] {
		d := healer.decision with input as {"event": event(type, "resolved"), "context": ctx}
		d.remediator == "node.cordon"
		d.reason == "problem cleared: undo cordon"
		not d.rate_limit
		not d.rate_limits
	}
}

test_unknown_budget_does_nothing if {
	unknown := object.union(ctx, {"budget": {"known": false}})
	d := healer.decision with input as {"event": event("NodeKernelDeadlock", "firing"), "context": unknown}
	not d.remediator
	contains(d.reason, "budget unknown")
}

test_missing_budget_does_nothing if {
	d := healer.decision with input as {"event": event("NodeKernelDeadlock", "firing"), "context": {}}
	not d.remediator
	contains(d.reason, "budget unknown")
}

test_unknown_budget_still_undoes if {
	d := healer.decision with input as {"event": event("NodeKernelDeadlock", "resolved"), "context": {}}
	d.remediator == "node.cordon"
	d.reason == "problem cleared: undo cordon"
}

test_other_event_type_does_nothing if {
	d := healer.decision with input as {"event": event("EtcdMemberDown", "firing"), "context": ctx}
	not d.remediator
	d.reason == `no rule for event type "EtcdMemberDown"`
}

test_node_problem_without_node_subject_does_nothing if {
	every subject in ["pod/web-1", "node/", "worker-1", ""] {
		e := object.union(event("NodeKernelDeadlock", "firing"), {"subject": subject})
		d := healer.decision with input as {"event": e, "context": ctx}
		not d.remediator
		d.rule == "missing_target"
		contains(d.reason, sprintf("got subject %q", [subject]))
	}
}

test_node_problem_with_other_status_does_nothing if {
	d := healer.decision with input as {"event": event("NodeNotReady", "pending"), "context": ctx}
	not d.remediator
	d.reason == `status "pending" is neither firing nor resolved`
}

test_every_decision_has_a_reason if {
	every type in ["NodeKernelDeadlock", "NodeNotReady", "Other"] {
		every status in ["firing", "resolved", "pending"] {
			d := healer.decision with input as {"event": event(type, status), "context": ctx}
			d.reason != ""
		}
	}
}

# agent_event returns an event a node agent's detector sends about worker-1.
agent_event(src, type, payload) := {
	"specversion": "1.0",
	"id": "e-2",
	"source": src,
	"type": type,
	"subject": "node/worker-1",
	"time": "2025-01-02T03:04:00Z",
	"status": "firing",
	"key": "worker-1/x",
	"data": payload,
}

budget_unknown := {"known": false}

test_crashed_daemon_is_restarted_then_node_drained if {
	every type in ["RuntimePanic", "RuntimeFatalError"] {
		d := healer.decision with input as {"event": agent_event("runtimepanic", type, {"source": "kubelet"}), "context": ctx}
		d.remediator == "component.restart"
		d.rule == "restart_crashed_daemon"
		d.steps[0] == {"remediator": "component.restart", "params": {"component": "kubelet"}, "escalate": "on_failure"}
		d.steps[1].remediator == "node.cordon"
		d.steps[2].remediator == "node.drain"
	}
}

test_crashed_daemon_restart_does_not_wait_for_the_budget if {
	d := healer.decision with input as {"event": agent_event("runtimepanic", "RuntimePanic", {"source": "containerd"}), "context": {"budget": budget_unknown, "recent_actions": []}}
	d.remediator == "component.restart"
	d.steps[0].params == {"component": "containerd"}
}

test_crash_without_daemon_name_is_not_restarted if {
	d := healer.decision with input as {"event": agent_event("runtimepanic", "RuntimePanic", {}), "context": ctx}
	not d.remediator
}

test_crash_loop_cordons_then_drains if {
	d := healer.decision with input as {"event": agent_event("runtimepanic", "RuntimeCrashLoop", {"source": "kubelet"}), "context": ctx}
	d.rule == "cordon_crash_looping_node"
	[s.remediator | some s in d.steps] == ["node.cordon", "node.drain"]
}

test_crash_loop_waits_for_the_budget if {
	d := healer.decision with input as {"event": agent_event("runtimepanic", "RuntimeCrashLoop", {"source": "kubelet"}), "context": {"budget": budget_unknown, "recent_actions": []}}
	d.rule == "budget_unknown"
	not d.remediator
}

test_lagging_shipper_is_restarted_once_then_left_to_humans if {
	d := healer.decision with input as {"event": agent_event("logpipeline", "LogShipperLag", {"component": "filebeat"}), "context": ctx}
	d.remediator == "component.restart"
	d.steps == [{"remediator": "component.restart", "params": {"component": "filebeat"}, "wait": "15m"}]
	d.rate_limit == {"key": "component.restart:node/worker-1/filebeat", "max": 1, "per": "30m"}
}

test_consumer_lag_without_a_node_is_not_acted_on if {
	e := object.union(agent_event("logpipeline", "KafkaConsumerLag", {"component": "logstash"}), {"subject": "logpipeline/logstash"})
	d := healer.decision with input as {"event": e, "context": ctx}
	not d.remediator
}

test_lost_vip_holder_floats_the_vip_without_waiting_for_the_budget if {
	e := object.union(agent_event("vip", "VIPHolderLost", {"vip": "10.10.0.100", "holder": "master-1"}), {"subject": "vip/10.10.0.100"})
	d := healer.decision with input as {"event": e, "context": {"budget": budget_unknown, "recent_actions": []}}
	d.remediator == "vip.float"
	d.params == {}
	d.rule == "float_vip"
	d.rate_limit.key == "vip.float:vip/10.10.0.100"
}

test_unhealthy_component_is_restarted_only_if_still_unhealthy if {
	d := healer.decision with input as {"event": agent_event("runtimepanic", "ComponentUnhealthy", {"source": "kubelet"}), "context": ctx}
	d.rule == "restart_crashed_daemon"
	d.steps[0].params == {"component": "kubelet", "only_if_unhealthy": true}
}

test_healthy_again_undoes_the_cordon if {
	e := object.union(agent_event("runtimepanic", "ComponentUnhealthy", {"source": "kubelet"}), {"status": "resolved"})
	d := healer.decision with input as {"event": e, "context": ctx}
	d.remediator == "node.cordon"
	d.rule == "uncordon_healthy_component"
}

cert_event(band, kind) := object.union(agent_event("certexpiry", "CertificateExpiring", {
	"kind": kind, "path": "/etc/kubernetes/pki/apiserver.crt", "band": band, "days_left": 6.5,
}), {"key": "master-1:file:/etc/kubernetes/pki/apiserver.crt"})

test_certificate_in_the_7_day_band_is_renewed if {
	d := healer.decision with input as {"event": cert_event("7d", "file"), "context": ctx}
	d.remediator == "cert.renew"
	d.params == {"file": "/etc/kubernetes/pki/apiserver.crt"}
	d.rule == "renew_expiring_certificate"
}

test_certificate_at_30_days_is_only_reported if {
	d := healer.decision with input as {"event": cert_event("30d", "file"), "context": ctx}
	not d.remediator
	d.rule == "report_expiring_certificate"
}

test_kubeconfig_certificate_is_not_renewed if {
	d := healer.decision with input as {"event": cert_event("1d", "kubeconfig"), "context": ctx}
	not d.remediator
}

etcd_lost(member) := object.union(agent_event("etcdmember", "EtcdMemberLost", {
	"cluster": "cp", "lost_after": "1m0s", "member": member,
	"quorum": {"voters": 3, "healthy_voters": 2, "quorum": 2},
}), {"subject": sprintf("etcd/%s", [object.get(member, "name", "x")])})

test_lost_etcd_member_is_replaced if {
	e := etcd_lost({"id": "8e9e05c52164694d", "name": "member-2", "is_learner": false})
	d := healer.decision with input as {"event": e, "context": ctx}
	d.remediator == "etcd.replace-member"
	d.params == {"member_id": "8e9e05c52164694d"}
	d.rule == "replace_lost_etcd_member"
	d.rate_limit.key == "etcd.replace-member:etcd/member-2"
	d.rate_limits[0].key == "etcd.replace-member:cp"
	d.reason == "etcd member member-2 unreachable for 1m0s (voters 3, healthy 2, quorum 2): replace it with a fresh member of the same name and peer URL"
}

test_lost_etcd_learner_is_only_reported if {
	e := etcd_lost({"id": "ab", "name": "member-4", "is_learner": true})
	d := healer.decision with input as {"event": e, "context": ctx}
	not d.remediator
	d.rule == "report_etcd"
}

test_etcd_alarm_is_reported_with_the_quorum_view if {
	e := object.union(agent_event("etcdmember", "EtcdAlarm", {"quorum": {"voters": 3, "healthy_voters": 2, "quorum": 2}}), {"subject": "etcd/member-2"})
	d := healer.decision with input as {"event": e, "context": ctx}
	not d.remediator
	d.rule == "report_etcd"
	d.reason == "EtcdAlarm on etcd/member-2 (voters 3, healthy 2, quorum 2): not remediated automatically; see runbooks/etcdmember.md"
}
