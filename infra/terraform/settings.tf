# The app's production settings, from variables, into every Lambda's environment (infra/tf.py
# merges local.app_settings over the package's own variables). Secret settings (the JWT key, the
# backends' admin URLs, the Kubernetes token) are the secret's (secrets.tf), never here. A prod
# plan whose settings are the local stack's fails its preconditions.

locals {
  app_settings = { for name, value in {
    INSTANODE_PUBLIC_BASE_URL            = var.public_base_url
    INSTANODE_MAIL_URL                   = "ses://${var.region}"
    INSTANODE_MAIL_FROM                  = var.mail_from
    INSTANODE_DEPLOY_BACKEND             = var.deploy.backend
    INSTANODE_DEPLOY_DOMAIN              = var.deploy.domain
    INSTANODE_DEPLOY_REGISTRY            = var.deploy.registry
    INSTANODE_KUBE_API_URL               = var.deploy.kube_api_url
    INSTANODE_KUBE_NAMESPACE             = var.deploy.kube_namespace
    INSTANODE_KUBE_CA_DATA               = var.deploy.kube_ca_data
    INSTANODE_KUBE_BUILD_SERVICE_ACCOUNT = var.deploy.build_service_account
    # read by nobody: a new app_secret_version changes the functions' configuration, so Lambda
    # starts new containers, which read the new value
    INSTANODE_SECRET_VERSION = tostring(var.app_secret_version)
  } : name => value if value != "" }
  # the address in var.mail_from ("instanode <noreply@example.com>"): the only sender the
  # policies' SendMail statement allows (ses:FromAddress)
  mail_from_address = try(regex("[^<>\\s]+@[^<>\\s]+", var.mail_from), "")
  loopback          = "^https?://(localhost|127\\.[0-9.]+|\\[::1\\]|0\\.0\\.0\\.0)([:/]|$)"
}

resource "terraform_data" "production_settings" {
  input = local.app_settings

  lifecycle {
    precondition {
      condition     = var.stage != "prod" || (startswith(var.public_base_url, "https://") && !can(regex(local.loopback, var.public_base_url)))
      error_message = "prod needs public_base_url: the https:// address agents reach this API at (its links and llms.txt name it), not a loopback one."
    }
    precondition {
      condition     = var.stage != "prod" || var.deploy.backend == "kubernetes"
      error_message = "prod deploys containers on Kubernetes: set deploy.backend = \"kubernetes\" (\"local\" runs podman on the Lambda's own machine)."
    }
    precondition {
      condition     = var.deploy.backend != "kubernetes" || (var.deploy.kube_api_url != "" && var.deploy.registry != "" && var.deploy.domain != "")
      error_message = "deploy.backend \"kubernetes\" needs deploy.kube_api_url, deploy.registry (where built images are pushed) and deploy.domain (apps' host names)."
    }
    precondition {
      condition     = var.stage != "prod" || var.deploy.backend != "kubernetes" || can(base64decode(var.deploy.kube_ca_data))
      error_message = "prod verifies the cluster API's certificate: set deploy.kube_ca_data to its CA, base64 PEM (a kubeconfig's certificate-authority-data)."
    }
    precondition {
      condition     = var.stage != "prod" || can(regex("@", var.mail_from))
      error_message = "prod sends sign-in links through SES: set mail_from to an address of the SES identity (ses_identity)."
    }
  }
}

# The identity sign-in links are sent from: a domain (DKIM records to add to its DNS are in the
# ses_dkim_tokens output) or one address (SES mails it a confirmation link).
resource "aws_sesv2_email_identity" "mail" {
  count          = var.ses_identity == "" ? 0 : 1
  email_identity = var.ses_identity
}
