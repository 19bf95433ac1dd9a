package airlock

import rego.v1

scale(pool, count) := {
	"agent": {"id": "ops-bot", "labels": {"env": "prod"}},
	"action": {"tool": "nodepool.scale", "arguments": {"pool": pool, "count": count}},
}

test_ssh_to_the_world_is_denied if {
	some r in deny with input as {"action": {"tool": "firewall.open", "arguments": {"port": 22, "cidr": "0.0.0.0/0"}}}
	r.rule == "FW001"
}

test_https_to_the_world_is_allowed if {
	count(deny) == 0 with input as {"action": {"tool": "firewall.open", "arguments": {"port": 443, "cidr": "0.0.0.0/0"}}}
}

test_small_scale_needs_no_approval if {
	count(require_approval) == 0 with input as scale("web", 4)
}

test_large_scale_needs_an_sre if {
	some r in require_approval with input as scale("web", 12)
	r.rule == "NP001"
	r.groups == ["sre"]
}

test_gpu_pools_need_two if {
	some r in require_approval with input as scale("gpu-a100", 2)
	r.quorum == 2
}

test_cost_is_count_times_price if {
	cost_usd == 2 with input as scale("web", 4)
}
