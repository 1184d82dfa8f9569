# chalice.tf.json adds EndpointURL (the API's base URL) and RestAPIId.

output "stage" {
  value = var.stage
}

output "table_names" {
  value = [
    aws_dynamodb_table.resources.name,
    aws_dynamodb_table.idempotency.name,
    aws_dynamodb_table.counters.name,
    aws_dynamodb_table.webhook-requests.name,
    aws_dynamodb_table.accounts.name,
    aws_dynamodb_table.deployments.name,
    aws_dynamodb_table.stacks.name,
  ]
}

output "bucket" {
  value = aws_s3_bucket.storage.bucket
}

output "secret_arn" {
  value = aws_secretsmanager_secret.app.arn
}

output "secret_name" {
  value = aws_secretsmanager_secret.app.name
}

output "ses_dkim_tokens" {
  description = "For a domain ses_identity: add a CNAME <token>._domainkey.<domain> -> <token>.dkim.amazonses.com for each."
  value       = one(aws_sesv2_email_identity.mail[*].dkim_signing_attributes[0].tokens)
}

output "builds_role_arn" {
  description = "The role kaniko builds read their context with (builds.tf): Pod Identity gives it on EKS; elsewhere give an identity its policy."
  value       = aws_iam_role.builds.arn
}
