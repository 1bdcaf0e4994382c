# The default healer policy.
#
# healer evaluates data.healer.decision once per event. The input is
#
#   {"event":   <the CloudEvent, with "data" parsed>,
#    "context": {"now": ..., "budget": {...}, "recent_actions": [...]}}
#
# and the decision says which remediator to run with which params, how
# often it may run (rate limits) and why. A decision without a remediator
# means "do nothing"; it still carries a reason, which is audited.
#
# The branches of `decision` are tried from top to bottom and the first
# whose conditions hold wins. They are written out in full rather than
# assembled from helper rules: this runs for every event, and every extra
# rule costs evaluation time.
package healer

# Node problems that make a node unfit for new pods, with the params the
# node.cordon remediator gets for each. Draining or rebooting is left to
# humans.
cordon_params := {
	"NodeKernelDeadlock": {"reason": "NodeKernelDeadlock"},
	"NodeReadonlyFilesystem": {"reason": "NodeReadonlyFilesystem"},
	# The remediator re-reads the node just before acting and cordons only
	# if its Ready condition is still False or Unknown: a node that came
	# back in the meantime is left alone.
	"NodeNotReady": {
		"reason": "NodeNotReady",
		"condition": "Ready",
		"condition_status": ["False", "Unknown"],
	},
}

# When node-problem-detector reported the problem as a condition, the
# remediator re-reads the node just before acting and goes ahead only if
# the condition still holds. (NodeNotReady always re-checks Ready.)
npd_params := {
	"NodeKernelDeadlock": {"reason": "NodeKernelDeadlock", "condition": "KernelDeadlock"},
	"NodeReadonlyFilesystem": {"reason": "NodeReadonlyFilesystem", "condition": "ReadonlyFilesystem"},
	"NodeNotReady": {
		"reason": "NodeNotReady",
		"condition": "Ready",
		"condition_status": ["False", "Unknown"],
	},
}

# The tables for this event's source.
params_table := npd_params if {
	input.event.source == "nodeproblem"
} else := cordon_params

# A cordon keeps new pods off a sick node, but the pods already there stay
# on a node whose kernel is stuck or whose disk went read-only. If the
# problem persists 10 minutes after the cordon, the node is drained. The
# ladders are written out in full: this runs for every event, and tables
# cost nothing to look up while building objects costs allocations.
ladders := {
	"NodeKernelDeadlock": [
		{"remediator": "node.cordon", "params": {"reason": "NodeKernelDeadlock"}, "wait": "10m"},
		{"remediator": "node.drain", "params": {"reason": "NodeKernelDeadlock", "timeout": "10m"}, "wait": "30m"},
	],
	"NodeReadonlyFilesystem": [
		{"remediator": "node.cordon", "params": {"reason": "NodeReadonlyFilesystem"}, "wait": "10m"},
		{"remediator": "node.drain", "params": {"reason": "NodeReadonlyFilesystem", "timeout": "10m"}, "wait": "30m"},
	],
	# A node that is not ready has nothing left to drain: cordon only.
	"NodeNotReady": [],
}

npd_ladders := {
	"NodeKernelDeadlock": [
		{"remediator": "node.cordon", "params": {"reason": "NodeKernelDeadlock", "condition": "KernelDeadlock"}, "wait": "10m"},
		{"remediator": "node.drain", "params": {"reason": "NodeKernelDeadlock", "condition": "KernelDeadlock", "timeout": "10m"}, "wait": "30m"},
	],
	"NodeReadonlyFilesystem": [
		{"remediator": "node.cordon", "params": {"reason": "NodeReadonlyFilesystem", "condition": "ReadonlyFilesystem"}, "wait": "10m"},
		{"remediator": "node.drain", "params": {"reason": "NodeReadonlyFilesystem", "condition": "ReadonlyFilesystem", "timeout": "10m"}, "wait": "30m"},
	],
	"NodeNotReady": [],
}

ladder_table := npd_ladders if {
	input.event.source == "nodeproblem"
} else := ladders

# Node daemons that crashed (the runtimepanic detector in healer agent
# names the daemon in data.source): restart the daemon through the node's
# agent. A restart that verifies healthy ends the ladder; one that fails,
# or that the agent refuses because the daemon was restarted three times in
# the last hour (flapping), escalates to cordon and then drain. The drain's
# rungs are held to the blast-radius budget by the engine.
restart_ladder_types := {"RuntimePanic", "RuntimeFatalError", "ComponentUnhealthy"}

# A daemon that systemd keeps restarting is not helped by another restart.
crash_loop_ladder := [
	{"remediator": "node.cordon", "params": {"reason": "RuntimeCrashLoop"}, "wait": "10m"},
	{"remediator": "node.drain", "params": {"reason": "RuntimeCrashLoop", "timeout": "10m"}, "wait": "30m"},
]

# A component that stopped answering its health check is restarted only if
# it still does not answer just before the restart (systemd may have
# restarted it meanwhile); a crash is restarted whatever its health.
restart_params := {"component": input.event.data.source, "only_if_unhealthy": true} if {
	input.event.type == "ComponentUnhealthy"
} else := {"component": input.event.data.source}

# The quorum view every etcdmember event carries.
etcd_quorum := q if {
	q := input.event.data.quorum
} else := {}

# Expiry bands in which healer renews a certificate itself.
renew_bands := {"7d", "1d", "expired"}

# Log shippers and consumers that fall behind (the logpipeline detector
# names the component to restart in data.component).
lag_types := {"LogShipperLag", "KafkaConsumerLag"}

# Restarting a daemon takes nothing out of service, so it does not wait
# for the budget; the disruptive rungs of its ladder do (the engine holds
# every ladder with a disruptive step to the budget).
#
# A crashed node daemon: restart it, escalate when that does not help.
decision := {
	"remediator": "component.restart",
	"approval": "none",
	# Flap protection (3 restarts of a daemon an hour) is the agent's; this
	# caps restarts across the cluster, where more looks like a bad rollout.
	"rate_limits": [{"key": "component.restart:cluster", "max": 20, "per": "1h"}],
	"reason": sprintf("%s in %s on %s: restart it", [input.event.type, input.event.data.source, input.event.subject]),
	"rule": "restart_crashed_daemon",
	"steps": [
		{"remediator": "component.restart", "params": restart_params, "escalate": "on_failure"},
		{"remediator": "node.cordon", "params": {"reason": input.event.type}, "wait": "10m"},
		{"remediator": "node.drain", "params": {"reason": input.event.type, "timeout": "10m"}, "wait": "30m"},
	],
} if {
	input.event.status == "firing"
	restart_ladder_types[input.event.type]
	node_subject
	is_string(input.event.data.source)
}

# A log pipeline falling behind: restart the stuck shipper or consumer
# once; if the lag has not cleared 15 minutes later the ladder ends as
# failed and a human takes over.
else := {
	"remediator": "component.restart",
	"approval": "none",
	"rate_limit": {"key": sprintf("component.restart:%s/%s", [input.event.subject, input.event.data.component]), "max": 1, "per": "30m"},
	"rate_limits": [{"key": "component.restart:cluster", "max": 20, "per": "1h"}],
	"reason": sprintf("%s: %s on %s is behind; restart it", [input.event.type, input.event.data.component, input.event.subject]),
	"rule": "restart_lagging_pipeline",
	"steps": [{"remediator": "component.restart", "params": {"component": input.event.data.component}, "wait": "15m"}],
} if {
	input.event.status == "firing"
	lag_types[input.event.type]
	node_subject
	is_string(input.event.data.component)
}

# A master stopped renewing the lease of a virtual IP it carried (its agent
# died or lost its network). It has dropped the address itself before the
# lease ran out; float the VIP to the first healthy candidate master.
# Moving an address takes no node out of service, so no budget applies.
else := {
	"remediator": "vip.float",
	"params": {},
	"approval": "none",
	# A VIP that keeps moving is a network problem, not a dead master.
	"rate_limit": {"key": sprintf("vip.float:%s", [input.event.subject]), "max": 5, "per": "10m"},
	"reason": sprintf("%s: holder %v stopped renewing its lease; float it to a healthy master", [input.event.subject, input.event.data.holder]),
	"rule": "float_vip",
} if {
	input.event.status == "firing"
	input.event.type == "VIPHolderLost"
	startswith(input.event.subject, "vip/")
}

# A control-plane certificate on a node's disk is about to expire (the
# certexpiry detector): renew it with its CA, restart what serves it, check
# the endpoint. At 30 days left that is only noted; healer renews from the
# 7-day band on, as kubeadm would on an upgrade. Certificates elsewhere
# (kubeconfigs, secrets, endpoints) are reported for humans.
else := {
	"remediator": "cert.renew",
	"params": {"file": input.event.data.path},
	"approval": "none",
	"rate_limit": {"key": sprintf("cert.renew:%s:%s", [input.event.subject, input.event.data.path]), "max": 1, "per": "1h"},
	"reason": sprintf("%s on %s expires in %v days: renew it", [input.event.data.path, input.event.subject, input.event.data.days_left]),
	"rule": "renew_expiring_certificate",
} if {
	input.event.status == "firing"
	input.event.source == "certexpiry"
	input.event.data.kind == "file"
	renew_bands[input.event.data.band]
	node_subject
}

else := {
	"reason": sprintf("certificate %v (%v) is in band %v: reported, not renewed automatically", [input.event.subject, input.event.data.kind, input.event.data.band]),
	"rule": "report_expiring_certificate",
} if {
	input.event.source == "certexpiry"
}

# etcd: a voter unreachable for lostAfter is replaced with a fresh member
# of the same name and peer URL. etcd.replace-member re-checks the quorum
# just before it acts and refuses when the change could cost it; one
# replacement per member per 30 minutes, two per cluster per hour. To have
# a human approve each replacement, set "approval": "one".
else := {
	"remediator": "etcd.replace-member",
	"params": {"member_id": input.event.data.member.id},
	"approval": "none",
	"rate_limit": {"key": sprintf("etcd.replace-member:%s", [input.event.subject]), "max": 1, "per": "30m"},
	"rate_limits": [{"key": sprintf("etcd.replace-member:%s", [input.event.data.cluster]), "max": 2, "per": "1h"}],
	"reason": sprintf("etcd member %s unreachable for %s (voters %v, healthy %v, quorum %v): replace it with a fresh member of the same name and peer URL", [
		input.event.data.member.name, object.get(input.event.data, "lost_after", "?"),
		object.get(etcd_quorum, "voters", "?"), object.get(etcd_quorum, "healthy_voters", "?"), object.get(etcd_quorum, "quorum", "?"),
	]),
	"rule": "replace_lost_etcd_member",
} if {
	input.event.source == "etcdmember"
	input.event.type == "EtcdMemberLost"
	input.event.status == "firing"
	input.event.data.member.id != ""
	input.event.data.member.name != ""
	not input.event.data.member.is_learner
}

# Other etcd events (an alarm, quorum at risk, a lost learner, a leader
# change) are audited for on-call with the quorum view, see
# runbooks/etcdmember.md.
else := {
	"reason": sprintf("%s on %s (voters %v, healthy %v, quorum %v): not remediated automatically; see runbooks/etcdmember.md", [
		input.event.type, input.event.subject,
		object.get(etcd_quorum, "voters", "?"), object.get(etcd_quorum, "healthy_voters", "?"), object.get(etcd_quorum, "quorum", "?"),
	]),
	"rule": "report_etcd",
} if {
	input.event.source == "etcdmember"
}

# Fail closed: without knowing how many nodes are already out of service,
# taking out another one could take the cluster down. This holds back new
# remediations only: undoing a cordon when a problem clears gives capacity
# back, so it never waits for the budget.
else := {
	"reason": "disruption budget unknown: doing nothing (fail closed)",
	"rule": "budget_unknown",
} if {
	input.event.status == "firing"
	not input.context.budget.known
}

# A daemon in a crash loop: take the node out of service.
else := {
	"remediator": "node.cordon",
	"params": {"reason": "RuntimeCrashLoop"},
	"approval": "none",
	"rate_limit": {"key": sprintf("node.cordon:%s", [input.event.subject]), "max": 1, "per": "10m"},
	"rate_limits": [{"key": "node.cordon:cluster", "max": 3, "per": "1h"}],
	"reason": sprintf("%s keeps restarting on %s: cordon, then drain", [input.event.data.source, input.event.subject]),
	"rule": "cordon_crash_looping_node",
	"steps": crash_loop_ladder,
} if {
	input.event.status == "firing"
	input.event.type == "RuntimeCrashLoop"
	node_subject
}

# A node problem: cordon the node.
else := {
	"remediator": "node.cordon",
	"params": params,
	"approval": "none",
	# At most one cordon per node every ten minutes, so that a flapping
	# alert cannot make healer fight a human who uncordons the node.
	"rate_limit": {"key": sprintf("node.cordon:%s", [input.event.subject]), "max": 1, "per": "10m"},
	# At most three cordons an hour in the whole cluster: more looks like
	# a cluster-wide problem, which cordoning nodes one by one won't fix.
	"rate_limits": [{"key": "node.cordon:cluster", "max": 3, "per": "1h"}],
	"reason": sprintf("%s on %s: cordon so no new pods land there", [input.event.type, input.event.subject]),
	"rule": "cordon_sick_node",
	"steps": ladder_table[input.event.type],
} if {
	input.event.status == "firing"
	params := params_table[input.event.type]
	node_subject
}

# A component answers its health check again: if healer had to cordon the
# node for it, uncordon (only a node healer cordoned for this problem).
else := {
	"remediator": "node.cordon",
	"params": {"reason": "ComponentUnhealthy"},
	"approval": "none",
	"reason": sprintf("%v is healthy again: undo cordon", [input.event.data.source]),
	"rule": "uncordon_healthy_component",
} if {
	input.event.status == "resolved"
	input.event.type == "ComponentUnhealthy"
	node_subject
}

# The node problem cleared. For a resolved event the engine runs only the
# undo step of the remediator (uncordon), and only on nodes healer itself
# cordoned.
else := {
	"remediator": "node.cordon",
	"params": {"reason": input.event.type},
	"approval": "none",
	"reason": "problem cleared: undo cordon",
	"rule": "uncordon_recovered_node",
} if {
	input.event.status == "resolved"
	cordon_params[input.event.type]
	node_subject
}

# A node problem that does not name its node.
else := {
	"reason": sprintf(
		"%s needs a node target (subject node/<name>), got subject %q",
		[input.event.type, input.event.subject],
	),
	"rule": "missing_target",
} if {
	cordon_params[input.event.type]
	not node_subject
}

# A node problem neither firing nor resolved.
else := {
	"reason": sprintf("status %q is neither firing nor resolved", [input.event.status]),
	"rule": "unknown_status",
} if {
	cordon_params[input.event.type]
}

# Anything else is none of healer's business.
else := {"reason": sprintf("no rule for event type %q", [input.event.type])}

# node_subject holds when the event's subject names a node: node/<name>.
node_subject if {
	startswith(input.event.subject, "node/")
	input.event.subject != "node/"
}
