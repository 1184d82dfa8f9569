# Names follow .chalice/config.json: INSTANODE_TABLE_PREFIX = instanode-<stage>,
# INSTANODE_BUCKET = instanode-<stage>-storage. The account, region and partition fill the
# ${account_id}, ${region} and ${partition} placeholders of policies/policy-<stage>.json.
locals {
  prefix     = "instanode-${var.stage}"
  account_id = data.aws_caller_identity.current.account_id
  region     = data.aws_region.current.name
  partition  = data.aws_partition.current.partition
}

data "aws_caller_identity" "current" {}

data "aws_region" "current" {}

data "aws_partition" "current" {}
