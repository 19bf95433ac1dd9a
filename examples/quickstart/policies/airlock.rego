# Quickstart policy: one rule that denies, one that asks a human, and a cost.
# Contract: package `airlock`; the host reads `deny`, `require_approval` and `cost_usd`.
package airlock

import rego.v1

# FW001: never open SSH or RDP to the whole internet.
deny contains {
	"rule": "FW001",
	"msg": sprintf("opening port %v to %v is forbidden; use the bastion or a narrower CIDR", [input.action.arguments.port, input.action.arguments.cidr]),
} if {
	input.action.tool == "firewall.open"
	input.action.arguments.cidr == "0.0.0.0/0"
	input.action.arguments.port in data.limits.admin_ports
}

# NP001: scaling a node pool past the limit needs an SRE.
require_approval contains {
	"rule": "NP001",
	"msg": sprintf("scaling %v to %v nodes exceeds %v; an SRE must approve", [input.action.arguments.pool, input.action.arguments.count, data.limits.max_nodes_without_approval]),
	"groups": ["sre"],
	"risk": "high",
	"ttl_seconds": 900,
} if {
	input.action.tool == "nodepool.scale"
	input.action.arguments.count > data.limits.max_nodes_without_approval
}

# NP002: GPU pools in production need two SREs.
require_approval contains {
	"rule": "NP002",
	"msg": "GPU node pools in production need two approvers",
	"groups": ["sre"],
	"quorum": 2,
	"risk": "critical",
} if {
	input.action.tool == "nodepool.scale"
	startswith(input.action.arguments.pool, "gpu-")
	input.agent.labels.env == "prod"
}

# What a scale-up costs per hour, for budgets.
cost_usd := input.action.arguments.count * data.prices.node_hour_usd if {
	input.action.tool == "nodepool.scale"
}
