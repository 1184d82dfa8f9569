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
