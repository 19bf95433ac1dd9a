# Terraform plan gate: the same Rego engine airlock uses for agents, run on the JSON that
# `terraform show -json plan.out` prints. `airlock eval` exits 0 (allow), 1 (deny) or
# 2 (needs approval), so it drops into any CI pipeline.
package airlock

import rego.v1

# Resource changes that create or update something.
writes contains rc if {
	some rc in input.resource_changes
	some action in rc.change.actions
	action in {"create", "update"}
}

environment(rc) := env if {
	env := rc.change.after.tags.env
} else := "unknown"

# TF100: GPU instance types (A100/H100 class) only in production.
deny contains {
	"rule": "TF100",
	"msg": sprintf("%v uses GPU instance type %v outside production (env=%v)", [rc.address, rc.change.after.instance_type, environment(rc)]),
} if {
	some rc in writes
	rc.type == "aws_instance"
	some prefix in data.gpu_instance_prefixes
	startswith(rc.change.after.instance_type, prefix)
	environment(rc) != "prod"
}

# TF300: deleting stateful resources needs two SREs with MFA.
require_approval contains {
	"rule": "TF300",
	"msg": sprintf("%v (%v) would be deleted; stateful deletes need two SRE approvals", [rc.address, rc.type]),
	"quorum": 2,
	"groups": ["sre"],
	"mfa": true,
	"risk": "critical",
} if {
	some rc in input.resource_changes
	"delete" in rc.change.actions
	rc.type in data.stateful_types
}
