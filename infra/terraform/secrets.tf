# The JSON secret chalicelib/config.py reads when INSTANODE_SECRETS_ARN is set; its keys override
# environment variables (INSTANODE_JWT_SECRET, INSTANODE_POSTGRES_BACKENDS,
# INSTANODE_VECTOR_BACKENDS). Its value never enters this repository, the plan or the state:
# either Terraform writes it as a write-only argument from the ephemeral var.app_secret (each
# new var.app_secret_version), or the operator sets it out of band (README.md, "Secret value").

resource "aws_secretsmanager_secret" "app" {
  name                    = "${local.prefix}-app"
  description             = "instanode ${var.stage}: JSON object of INSTANODE_* settings (JWT key, backend admin URLs)."
  recovery_window_in_days = var.secret_recovery_window_days
}

resource "aws_secretsmanager_secret_version" "app" {
  count                    = var.app_secret_version > 0 ? 1 : 0
  secret_id                = aws_secretsmanager_secret.app.id
  secret_string_wo         = var.app_secret
  secret_string_wo_version = var.app_secret_version
}
