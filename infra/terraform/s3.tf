# INSTANODE_BUCKET: private, encrypted, unversioned. Anonymous-tier objects live under anon/ and
# are deleted by the lifecycle rule after var.anonymous_object_expiry_days.

resource "aws_s3_bucket" "storage" {
  bucket = "${local.prefix}-storage"
  # tenants' objects: a destroy fails while any is left, unless var.allow_destroy (dev only)
  force_destroy = var.allow_destroy
}

resource "aws_s3_bucket_public_access_block" "storage" {
  bucket = aws_s3_bucket.storage.id

  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}

resource "aws_s3_bucket_ownership_controls" "storage" {
  bucket = aws_s3_bucket.storage.id

  rule {
    object_ownership = "BucketOwnerEnforced"
  }
}

resource "aws_s3_bucket_server_side_encryption_configuration" "storage" {
  bucket = aws_s3_bucket.storage.id

  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm = "AES256"
    }
  }
}

resource "aws_s3_bucket_versioning" "storage" {
  bucket = aws_s3_bucket.storage.id

  versioning_configuration {
    status = "Disabled"
  }
}

resource "aws_s3_bucket_lifecycle_configuration" "storage" {
  bucket = aws_s3_bucket.storage.id

  rule {
    id     = "expire-anonymous-objects"
    status = "Enabled"

    filter {
      prefix = "anon/"
    }

    expiration {
      days = var.anonymous_object_expiry_days
    }
  }

  # Build contexts agents PUT through POST /deploy/upload-url: deploying deletes the one it used;
  # this removes those never deployed.
  rule {
    id     = "expire-unused-deploy-uploads"
    status = "Enabled"

    filter {
      prefix = "uploads/"
    }

    expiration {
      days = 1
    }
  }

  # A multipart upload never completed keeps its parts, billed and unlisted (a quota reading
  # lists objects): gone after a day, whoever started it.
  rule {
    id     = "abort-incomplete-multipart-uploads"
    status = "Enabled"

    filter {}

    abort_incomplete_multipart_upload {
      days_after_initiation = 1
    }
  }
}
