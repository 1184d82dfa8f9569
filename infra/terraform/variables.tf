variable "stage" {
  description = "Chalice stage this configuration deploys; must match the stage chalice.tf.json was packaged for."
  type        = string

  validation {
    condition     = contains(["dev", "prod"], var.stage)
    error_message = "stage must be \"dev\" or \"prod\" (the stages in .chalice/config.json)."
  }
}

variable "region" {
  description = "AWS region for every resource."
  type        = string
  default     = "us-east-1"
}

variable "anonymous_object_expiry_days" {
  description = "Days after which objects under anon/ in the storage bucket are deleted."
  type        = number
  default     = 1
}

variable "secret_recovery_window_days" {
  description = "Days a deleted app secret can still be restored (0 deletes it at once)."
  type        = number
  default     = 7
}

variable "app_secret" {
  description = "The app secret's value, a JSON object of INSTANODE_* settings (infra/terraform/README.md, \"Secret value\"), written with each new app_secret_version and never kept in the state or the plan: pass it as TF_VAR_app_secret, never in a file or on the command line. Leave it unset to set the value out of band."
  type        = string
  default     = null
  sensitive   = true
  ephemeral   = true
}

variable "app_secret_version" {
  description = "Bump it (1, 2, …) together with app_secret to write a new value; 0: Terraform leaves the value alone. The functions' configuration names it, so new containers (which read the secret at cold start) take the new value at once."
  type        = number
  default     = 0

  validation {
    condition     = var.app_secret_version >= 0 && floor(var.app_secret_version) == var.app_secret_version
    error_message = "app_secret_version is a whole number: 0 (value set out of band), then 1, 2, …"
  }
}

variable "log_retention_days" {
  description = "Days every Lambda's log group keeps its events (a CloudWatch Logs retention value)."
  type        = number
  default     = 30

  validation {
    condition     = contains([1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653], var.log_retention_days)
    error_message = "log_retention_days must be a value CloudWatch Logs accepts (1, 3, 5, 7, 14, 30, 60, 90, ... 3653)."
  }
}

variable "reserved_concurrency" {
  description = "Reserved concurrent executions per function: the API cannot take the account's whole concurrency and starve the jobs, and a scheduled job (1) never runs twice at once. -1 leaves a function unreserved."
  type = object({
    api_handler        = optional(number, 50)
    reap_expired       = optional(number, 1)
    reap_deploys       = optional(number, 1)
    poll_deploys       = optional(number, 1)
    deliver_mail       = optional(number, 1)
    enforce_quotas     = optional(number, 1)
    reconcile_backends = optional(number, 1)
  })
  default = {}
}

variable "allow_destroy" {
  description = "false (the default): every table has deletion protection and the bucket refuses to be destroyed while it holds objects. true, for a dev stage only: `terraform destroy` removes the tables and empties the bucket."
  type        = bool
  default     = false
}

variable "alarm_email" {
  description = "An address subscribed (by email, confirmed from the first message) to the alarms topic; \"\" subscribes none."
  type        = string
  default     = ""
}

variable "api_5xx_rate_threshold" {
  description = "The share of API requests answered 5xx (0-1) over which the api-5xx-rate alarm fires, for two 5-minute periods."
  type        = number
  default     = 0.05

  validation {
    condition     = var.api_5xx_rate_threshold > 0 && var.api_5xx_rate_threshold < 1
    error_message = "api_5xx_rate_threshold is a share of requests, between 0 and 1."
  }
}

variable "throttle" {
  description = "Requests per second and burst API Gateway lets through: `stage` for every route and all clients together, `creating` (tighter) for each route that creates something (the /<kind>/new provisions, /deploy/new, /stacks/new)."
  type = object({
    stage    = optional(object({ rate = optional(number, 100), burst = optional(number, 200) }), {})
    creating = optional(object({ rate = optional(number, 10), burst = optional(number, 20) }), {})
  })
  default = {}
}

variable "waf_rate_limit" {
  description = "Requests per client IP per 5 minutes over which a WAF web ACL on the stage blocks the IP (a WAF costs money: 0, the default, makes none)."
  type        = number
  default     = 0

  validation {
    condition     = var.waf_rate_limit == 0 || var.waf_rate_limit >= 10
    error_message = "waf_rate_limit is 0 (no WAF) or at least 10 (AWS WAF's minimum)."
  }
}

variable "manage_api_gateway_account" {
  description = "Make API Gateway's CloudWatch Logs role (one per account and region, which access logs need); false when the account already has one."
  type        = bool
  default     = true
}

# VPC mode: every Lambda runs in these private subnets with these security groups and reaches the
# backends' admin endpoints (Postgres, Redis, MongoDB, NATS, the Kubernetes API) over private
# addresses, so none of them needs to face the internet. The subnets also need a way to AWS's own
# APIs: gateway endpoints for DynamoDB and S3, interface endpoints (or a NAT gateway) for Secrets
# Manager, SES, SQS and CloudWatch Logs (README.md, "Network").
variable "vpc" {
  description = "null (the default): the Lambdas run outside any VPC. Else the private subnets and security groups they run in."
  type = object({
    subnet_ids         = list(string)
    security_group_ids = list(string)
  })
  default = null

  validation {
    condition     = var.vpc == null ? true : length(var.vpc.subnet_ids) >= 2 && length(var.vpc.security_group_ids) >= 1
    error_message = "vpc needs at least two subnets (two availability zones) and one security group."
  }
}

variable "public_base_url" {
  description = "The https:// address agents reach the API at: the base of every link, agent_action and /llms.txt (a custom domain, or the stage's invoke URL)."
  type        = string
  default     = ""
}

variable "mail_from" {
  description = "The sender of sign-in links, an address of var.ses_identity, e.g. \"instanode <noreply@example.com>\"."
  type        = string
  default     = ""
}

variable "ses_identity" {
  description = "The SES identity (a domain, or one address) this module verifies for mail_from; \"\" when the account already has it."
  type        = string
  default     = ""
}

variable "deploy" {
  description = "Container deploys: backend \"kubernetes\" (prod) builds with kaniko on the cluster at kube_api_url and pushes to registry; apps get <slug>.<domain>. The cluster token is the secret's INSTANODE_KUBE_TOKEN."
  type = object({
    backend        = optional(string, "kubernetes")
    kube_api_url   = optional(string, "")
    kube_namespace = optional(string, "instanode-apps")
    kube_ca_data   = optional(string, "") # base64 PEM, as a kubeconfig's certificate-authority-data
    registry       = optional(string, "")
    domain         = optional(string, "")
    # EKS: the cluster whose Pod Identity gives builds.tf's role to build_service_account
    eks_cluster_name      = optional(string, "")
    build_service_account = optional(string, "")
  })
  default = {}

  validation {
    condition     = var.deploy.eks_cluster_name == "" || var.deploy.build_service_account != ""
    error_message = "deploy.eks_cluster_name gives the builds' role to a service account: name it in deploy.build_service_account (e.g. \"instanode-build\", made in kube_namespace)."
  }

  validation {
    condition     = contains(["kubernetes", "local"], var.deploy.backend)
    error_message = "deploy.backend is \"kubernetes\" or \"local\" (podman on the Lambda's machine: for trials only)."
  }
}
