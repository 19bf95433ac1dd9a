# Shared helpers for the policy library. The plan under review is the whole input in CI
# (`airlock eval --input plan.json`), or the `plan` argument when an agent asks airlock to run
# `terraform apply`. Either way the rules below read `changes`.
package airlock

import rego.v1

plan := input.action.arguments.plan if {
	input.action.arguments.plan
} else := input

changes contains rc if {
	some rc in plan.resource_changes
}

creates_or_updates(rc) if {
	some a in rc.change.actions
	a in {"create", "update"}
}

deletes(rc) if "delete" in rc.change.actions

env(rc) := e if {
	e := rc.change.after.tags.env
} else := e if {
	e := rc.change.after.labels.env
} else := "unknown"
