# The JSON secret chalicelib/config.py reads when INSTANODE_SECRETS_ARN is set; its keys override
# environment variables (INSTANODE_JWT_SECRET, INSTANODE_POSTGRES_BACKENDS,
# INSTANODE_VECTOR_BACKENDS). Terraform creates the secret only: the value is set out of band
# (README.md, "Secret value"), so it never enters this repository or the Terraform state.

resource "aws_secretsmanager_secret" "app" {
  name                    = "${local.prefix}-app"
  description             = "instanode ${var.stage}: JSON object of INSTANODE_* settings (JWT key, backend admin URLs)."
  recovery_window_in_days = var.secret_recovery_window_days
}
