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
# The rules below are tried from top to bottom and the first match wins.
package healer

# Node problems that make a node unfit for new pods. For each of them the
# remedy is to cordon the node; draining or rebooting is left to humans.
node_problems := {"NodeKernelDeadlock", "NodeReadonlyFilesystem", "NodeNotReady"}

# At most one cordon per node every ten minutes, so a flapping alert cannot
# make healer fight a human who uncordons the node.
per_node_limit := {"key": concat("", ["node.cordon:", input.event.subject]), "max": 1, "per": "10m"}

# At most three cordons per hour in the whole cluster: more than that looks
# like a cluster-wide problem, which cordoning nodes one by one would not fix.
cluster_limit := {"key": "node.cordon:cluster", "max": 3, "per": "1h"}

decision := budget_unknown if {
	# Fail closed: without knowing how many nodes are already out of
	# service, taking out another one could take the cluster down. This
	# only holds back new remediations; undoing a cordon when a problem
	# clears gives capacity back, so it never waits for the budget.
	input.event.status == "firing"
	not input.context.budget.known
} else := missing_target if {
	input.event.type in node_problems
	not node_name
} else := cordon if {
	input.event.type in node_problems
	input.event.status == "firing"
} else := uncordon if {
	input.event.type in node_problems
	input.event.status == "resolved"
} else := unknown_status if {
	input.event.type in node_problems
} else := no_rule

budget_unknown := {
	"reason": "disruption budget unknown: doing nothing (fail closed)",
	"rule": "budget_unknown",
}

missing_target := {
	"reason": concat("", [
		input.event.type, " needs a node target (subject node/<name>), got subject \"",
		input.event.subject, "\"",
	]),
	"rule": "missing_target",
}

cordon := {
	"remediator": "node.cordon",
	"params": cordon_params,
	"approval": "none",
	"rate_limit": per_node_limit,
	"rate_limits": [cluster_limit],
	"reason": concat("", [
		input.event.type, " on ", input.event.subject,
		": cordon so no new pods land there",
	]),
	"rule": "cordon_sick_node",
}

# For NodeNotReady the remediator re-reads the node just before acting and
# cordons only if its Ready condition is still False or Unknown: a node that
# came back in the meantime is left alone.
cordon_params := {
	"reason": "NodeNotReady",
	"condition": "Ready",
	"condition_status": ["False", "Unknown"],
} if {
	input.event.type == "NodeNotReady"
} else := {"reason": input.event.type}

# The engine runs only the undo step (uncordon) of the remediator for a
# resolved event, and only for nodes healer itself cordoned.
uncordon := {
	"remediator": "node.cordon",
	"params": {"reason": input.event.type},
	"approval": "none",
	"reason": "problem cleared: undo cordon",
	"rule": "uncordon_recovered_node",
}

unknown_status := {
	"reason": concat("", [
		"status \"", object.get(input.event, "status", ""),
		"\" is neither firing nor resolved",
	]),
	"rule": "unknown_status",
}

no_rule := {"reason": concat("", ["no rule for event type \"", object.get(input.event, "type", ""), "\""])}

# node_name is the name of the node the event is about, if its subject
# names one ("node/worker-1" names worker-1).
node_name := name if {
	startswith(input.event.subject, "node/")
	name := substring(input.event.subject, 5, -1)
	name != ""
}
