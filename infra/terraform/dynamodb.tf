# The same tables devstack/aws.py table_specs() creates locally (tests/unit/test_infra.py compares
# them). Every table: on-demand billing, TTL on `ttl`, point-in-time recovery, KMS encryption,
# deletion protection (unless var.allow_destroy).

resource "aws_dynamodb_table" "resources" {
  name                        = "${local.prefix}-resources"
  billing_mode                = "PAY_PER_REQUEST"
  deletion_protection_enabled = !var.allow_destroy
  hash_key                    = "id"

  attribute {
    name = "id"
    type = "S"
  }

  attribute {
    name = "owner"
    type = "S"
  }

  attribute {
    name = "created_at"
    type = "N"
  }

  attribute {
    name = "expiry_shard"
    type = "S"
  }

  attribute {
    name = "expires_at"
    type = "N"
  }

  attribute {
    name = "placement"
    type = "S"
  }

  global_secondary_index {
    name            = "by_owner"
    hash_key        = "owner"
    range_key       = "created_at"
    projection_type = "ALL"
  }

  global_secondary_index {
    name            = "by_expiry"
    hash_key        = "expiry_shard"
    range_key       = "expires_at"
    projection_type = "ALL"
  }

  global_secondary_index {
    name            = "by_placement"
    hash_key        = "placement"
    range_key       = "created_at"
    projection_type = "ALL"
  }

  ttl {
    attribute_name = "ttl"
    enabled        = true
  }

  point_in_time_recovery {
    enabled = true
  }

  server_side_encryption {
    enabled = true
  }
}

resource "aws_dynamodb_table" "idempotency" {
  name                        = "${local.prefix}-idempotency"
  billing_mode                = "PAY_PER_REQUEST"
  deletion_protection_enabled = !var.allow_destroy
  hash_key                    = "pk"

  attribute {
    name = "pk"
    type = "S"
  }

  ttl {
    attribute_name = "ttl"
    enabled        = true
  }

  point_in_time_recovery {
    enabled = true
  }

  server_side_encryption {
    enabled = true
  }
}

resource "aws_dynamodb_table" "counters" {
  name                        = "${local.prefix}-counters"
  billing_mode                = "PAY_PER_REQUEST"
  deletion_protection_enabled = !var.allow_destroy
  hash_key                    = "pk"

  attribute {
    name = "pk"
    type = "S"
  }

  ttl {
    attribute_name = "ttl"
    enabled        = true
  }

  point_in_time_recovery {
    enabled = true
  }

  server_side_encryption {
    enabled = true
  }
}

# Received webhook requests: a ring buffer per inbox (slot = seq % kept_requests).
resource "aws_dynamodb_table" "webhook-requests" {
  name                        = "${local.prefix}-webhook-requests"
  billing_mode                = "PAY_PER_REQUEST"
  deletion_protection_enabled = !var.allow_destroy
  hash_key                    = "inbox"
  range_key                   = "slot"

  attribute {
    name = "inbox"
    type = "S"
  }

  attribute {
    name = "slot"
    type = "N"
  }

  attribute {
    name = "seq"
    type = "N"
  }

  global_secondary_index {
    name            = "by_seq"
    hash_key        = "inbox"
    range_key       = "seq"
    projection_type = "ALL"
  }

  ttl {
    attribute_name = "ttl"
    enabled        = true
  }

  point_in_time_recovery {
    enabled = true
  }

  server_side_encryption {
    enabled = true
  }
}

# Accounts: users, teams, API keys (hashed), magic links and CLI sessions (hashed, TTL),
# revoked session ids (TTL) and the mail outbox. GSI by_team lists a team's users and API keys;
# sparse GSI by_pending holds only outbox messages not yet delivered.
resource "aws_dynamodb_table" "accounts" {
  name                        = "${local.prefix}-accounts"
  billing_mode                = "PAY_PER_REQUEST"
  deletion_protection_enabled = !var.allow_destroy
  hash_key                    = "pk"

  attribute {
    name = "pk"
    type = "S"
  }

  attribute {
    name = "team_id"
    type = "S"
  }

  attribute {
    name = "created_at"
    type = "N"
  }

  attribute {
    name = "pending"
    type = "S"
  }

  global_secondary_index {
    name            = "by_team"
    hash_key        = "team_id"
    range_key       = "created_at"
    projection_type = "ALL"
  }

  global_secondary_index {
    name            = "by_pending"
    hash_key        = "pending"
    range_key       = "created_at"
    projection_type = "ALL"
  }

  ttl {
    attribute_name = "ttl"
    enabled        = true
  }

  point_in_time_recovery {
    enabled = true
  }

  server_side_encryption {
    enabled = true
  }
}

# Container deploys: GSI by_owner lists a team's, by_name finds the app a `redeploy=true` names
# (owner_name = "<owner>#<name>"), sparse by_expiry feeds the reaper, sparse by_progress holds
# the apps still building or deploying (the poller advances them).
resource "aws_dynamodb_table" "deployments" {
  name                        = "${local.prefix}-deployments"
  billing_mode                = "PAY_PER_REQUEST"
  deletion_protection_enabled = !var.allow_destroy
  hash_key                    = "id"

  attribute {
    name = "id"
    type = "S"
  }

  attribute {
    name = "owner"
    type = "S"
  }

  attribute {
    name = "owner_name"
    type = "S"
  }

  attribute {
    name = "created_at"
    type = "N"
  }

  attribute {
    name = "expiry_shard"
    type = "S"
  }

  attribute {
    name = "expires_at"
    type = "N"
  }

  global_secondary_index {
    name            = "by_owner"
    hash_key        = "owner"
    range_key       = "created_at"
    projection_type = "ALL"
  }

  global_secondary_index {
    name            = "by_name"
    hash_key        = "owner_name"
    range_key       = "created_at"
    projection_type = "ALL"
  }

  global_secondary_index {
    name            = "by_expiry"
    hash_key        = "expiry_shard"
    range_key       = "expires_at"
    projection_type = "ALL"
  }

  attribute {
    name = "progress_shard"
    type = "S"
  }

  attribute {
    name = "updated_at"
    type = "N"
  }

  global_secondary_index {
    name            = "by_progress"
    hash_key        = "progress_shard"
    range_key       = "updated_at"
    projection_type = "ALL"
  }

  ttl {
    attribute_name = "ttl"
    enabled        = true
  }

  point_in_time_recovery {
    enabled = true
  }

  server_side_encryption {
    enabled = true
  }
}

# Multi-service stacks (pk slug): GSI by_owner lists an owner's stacks, sparse by_expiry feeds
# the reaper (anonymous stacks and those of tiers without deploy slots expire).
resource "aws_dynamodb_table" "stacks" {
  name                        = "${local.prefix}-stacks"
  billing_mode                = "PAY_PER_REQUEST"
  deletion_protection_enabled = !var.allow_destroy
  hash_key                    = "slug"

  attribute {
    name = "slug"
    type = "S"
  }

  attribute {
    name = "owner"
    type = "S"
  }

  attribute {
    name = "created_at"
    type = "N"
  }

  attribute {
    name = "expiry_shard"
    type = "S"
  }

  attribute {
    name = "expires_at"
    type = "N"
  }

  global_secondary_index {
    name            = "by_owner"
    hash_key        = "owner"
    range_key       = "created_at"
    projection_type = "ALL"
  }

  global_secondary_index {
    name            = "by_expiry"
    hash_key        = "expiry_shard"
    range_key       = "expires_at"
    projection_type = "ALL"
  }

  ttl {
    attribute_name = "ttl"
    enabled        = true
  }

  point_in_time_recovery {
    enabled = true
  }

  server_side_encryption {
    enabled = true
  }
}
