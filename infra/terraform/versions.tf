# Chalice's generated chalice.tf.json pins Terraform < 1.4 and aws < 5; `python -m infra.tf package`
# drops that block, so these constraints are the only ones.
terraform {
  required_version = ">= 1.11" # ephemeral variables, write-only arguments (secrets.tf)

  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = "~> 5.100"
    }
  }
}

provider "aws" {
  region = var.region

  default_tags {
    tags = {
      app        = "instanode"
      stage      = var.stage
      managed-by = "terraform"
    }
  }
}
