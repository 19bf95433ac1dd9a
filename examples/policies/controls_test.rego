package airlock

import rego.v1

change(type, actions, before, after) := {"resource_changes": [{
	"address": sprintf("%v.x", [type]), "type": type, "name": "x",
	"change": {"actions": actions, "before": before, "after": after},
}]}

test_gpu_outside_production_denied if {
	some r in deny with input as change("aws_instance", ["create"], null, {"instance_type": "p5.48xlarge", "tags": {"env": "dev"}})
	r.rule == "GPU-001"
}

test_gpu_on_gcp_outside_production_denied if {
	some r in deny with input as change("google_compute_instance", ["create"], null, {"machine_type": "a3-highgpu-8g", "labels": {"env": "test"}})
	r.rule == "GPU-001"
}

test_gpu_in_production_allowed if {
	count(deny) == 0 with input as change("aws_instance", ["create"], null, {"instance_type": "p5.48xlarge", "tags": {"env": "prod"}})
}

test_small_instance_anywhere_allowed if {
	count(deny) == 0 with input as change("aws_instance", ["create"], null, {"instance_type": "t3.micro", "tags": {"env": "dev"}})
}

test_adding_many_nodes_denied if {
	some r in deny with input as change("google_container_node_pool", ["create"], null, {"node_count": 25})
	r.rule == "NODES-001"
}

test_removing_nodes_is_fine if {
	count(deny) == 0 with input as change("aws_eks_node_group", ["update"], {"scaling_config": [{"desired_size": 50}]}, {"scaling_config": [{"desired_size": 5}]})
}

test_unencrypted_database_denied if {
	some r in deny with input as change("aws_db_instance", ["create"], null, {"storage_encrypted": false})
	r.rule == "ENC-001"
}

test_encrypted_volume_allowed if {
	count(deny) == 0 with input as change("aws_ebs_volume", ["create"], null, {"encrypted": true})
}

test_bucket_outside_approved_regions_denied if {
	some r in deny with input as change("aws_s3_bucket", ["create"], null, {"region": "ap-south-1", "server_side_encryption_configuration": [{}]})
	r.rule == "REGION-001"
}

test_deleting_a_volume_needs_two_sres_with_mfa if {
	some r in require_approval with input as change("aws_ebs_volume", ["delete"], {"encrypted": true}, null)
	r.rule == "DEL-001"
	r.quorum == 2
	r.groups == ["sre"]
	r.mfa
}

test_iam_changes_need_security if {
	some r in require_approval with input as change("aws_iam_role", ["create"], null, {"name": "x"})
	r.groups == ["security"]
}

test_agents_plans_are_gated_too if {
	some r in deny with input as {"action": {"tool": "infra__terraform_apply", "arguments": {"plan": change("aws_ebs_volume", ["create"], null, {"encrypted": false})}}}
	r.rule == "ENC-001"
}
