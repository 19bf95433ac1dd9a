package airlock

import rego.v1

instance(type, env) := {"resource_changes": [{
	"address": "aws_instance.train",
	"type": "aws_instance",
	"change": {"actions": ["create"], "before": null, "after": {"instance_type": type, "tags": {"env": env}}},
}]}

test_gpu_in_dev_is_denied if {
	some r in deny with input as instance("p5.48xlarge", "dev")
	r.rule == "TF100"
}

test_gpu_in_prod_is_allowed if {
	count(deny) == 0 with input as instance("p5.48xlarge", "prod")
}

test_small_instance_in_dev_is_allowed if {
	count(deny) == 0 with input as instance("t3.micro", "dev")
}

test_database_delete_needs_two_sres if {
	some r in require_approval with input as {"resource_changes": [{
		"address": "aws_db_instance.main",
		"type": "aws_db_instance",
		"change": {"actions": ["delete"], "before": {}, "after": null},
	}]}
	r.quorum == 2
	r.mfa
}

test_replacing_a_bucket_needs_approval if {
	count(require_approval) == 1 with input as {"resource_changes": [{
		"address": "aws_s3_bucket.logs",
		"type": "aws_s3_bucket",
		"change": {"actions": ["delete", "create"], "before": {}, "after": {}},
	}]}
}
