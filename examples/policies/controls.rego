# The controls platform teams ask for first. Each rule has an id, a message that says what to
# do, and tests in controls_test.rego; fixtures/ pins decisions for real plans.
package airlock

import rego.v1

# GPU-001: A100/H100-class instances only in production.
deny contains {
	"rule": "GPU-001",
	"msg": sprintf("%v uses GPU instance type %v in env `%v`; A100/H100-class GPUs are for production only", [rc.address, type, env(rc)]),
} if {
	some rc in changes
	creates_or_updates(rc)
	type := object.get(rc.change.after, "instance_type", object.get(rc.change.after, "machine_type", ""))
	some prefix in data.gpu.instance_prefixes
	startswith(type, prefix)
	not env(rc) in data.gpu.production_envs
}

# NODES-001: one change may add at most `limits.max_nodes_added` nodes.
node_count(obj) := n if {
	n := obj.scaling_config[0].desired_size
} else := n if {
	n := obj.node_count
} else := 0


added(rc) := node_count(rc.change.after) - before_count(rc)

before_count(rc) := 0 if rc.change.before == null

before_count(rc) := node_count(rc.change.before) if rc.change.before != null

total_added := sum([n |
	some rc in changes
	creates_or_updates(rc)
	rc.type in {"aws_eks_node_group", "google_container_node_pool"}
	n := max([added(rc), 0])
])

deny contains {
	"rule": "NODES-001",
	"msg": sprintf("this change adds %v nodes; at most %v may be added at once, split it", [total_added, data.limits.max_nodes_added]),
} if total_added > data.limits.max_nodes_added

# ENC-001: storage must be encrypted at rest.
unencrypted(rc) if {
	rc.type == "aws_ebs_volume"
	not rc.change.after.encrypted
}

unencrypted(rc) if {
	rc.type in {"aws_db_instance", "aws_rds_cluster"}
	not rc.change.after.storage_encrypted
}

unencrypted(rc) if {
	rc.type == "aws_s3_bucket"
	not rc.change.after.server_side_encryption_configuration
	not sse_resource_for(rc.name)
}

sse_resource_for(name) if {
	some other in changes
	other.type == "aws_s3_bucket_server_side_encryption_configuration"
	other.name == name
}

deny contains {
	"rule": "ENC-001",
	"msg": sprintf("%v (%v) is not encrypted at rest; enable encryption", [rc.address, rc.type]),
} if {
	some rc in changes
	creates_or_updates(rc)
	unencrypted(rc)
}

# REGION-001: data sets only in approved regions.
deny contains {
	"rule": "REGION-001",
	"msg": sprintf("%v stores data in %v; approved regions are %v", [rc.address, region, concat(", ", data.regions.approved)]),
} if {
	some rc in changes
	creates_or_updates(rc)
	rc.type in {"aws_s3_bucket", "google_bigquery_dataset", "google_storage_bucket"}
	region := object.get(rc.change.after, "region", object.get(rc.change.after, "location", "unknown"))
	not lower(region) in {lower(r) | some r in data.regions.approved}
}

# DEL-001: deleting stateful resources needs two SREs with MFA.
require_approval contains {
	"rule": "DEL-001",
	"msg": sprintf("%v (%v) would be deleted; stateful deletes need two SRE approvals with MFA", [rc.address, rc.type]),
	"quorum": 2,
	"groups": ["sre"],
	"mfa": true,
	"risk": "critical",
} if {
	some rc in changes
	deletes(rc)
	rc.type in data.stateful_types
}

# IAM-001: IAM changes need the security team.
require_approval contains {
	"rule": "IAM-001",
	"msg": sprintf("%v changes IAM; the security team must approve", [rc.address]),
	"groups": ["security"],
	"risk": "high",
} if {
	some rc in changes
	some prefix in data.iam_prefixes
	startswith(rc.type, prefix)
	not rc.change.actions == ["no-op"]
}
