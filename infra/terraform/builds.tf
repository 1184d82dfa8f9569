# The identity a kaniko build has in AWS: it reads its build context (deploys/ and stacks/ in the
# bucket) and nothing else; pushing the image is the registry's credential (the operator's
# instanode-registry-auth Secret). On EKS, Pod Identity gives this role to the builds' service
# account, so no AWS key sits in the cluster; elsewhere the operator's instanode-build-aws
# Secret holds a key of an identity with the same policy.

resource "aws_iam_role" "builds" {
  name        = "${local.prefix}-builds"
  description = "instanode ${var.stage}: kaniko builds read their build context."
  assume_role_policy = jsonencode({
    Version = "2012-10-17"
    Statement = [{
      Effect    = "Allow"
      Principal = { Service = "pods.eks.amazonaws.com" }
      Action    = ["sts:AssumeRole", "sts:TagSession"]
    }]
  })
}

resource "aws_iam_role_policy" "builds" {
  name = "build-contexts"
  role = aws_iam_role.builds.id
  policy = jsonencode({
    Version = "2012-10-17"
    Statement = [{
      Sid      = "BuildContexts"
      Effect   = "Allow"
      Action   = ["s3:GetObject"]
      Resource = ["${aws_s3_bucket.storage.arn}/deploys/*", "${aws_s3_bucket.storage.arn}/stacks/*"]
    }]
  })
}

resource "aws_eks_pod_identity_association" "builds" {
  count           = var.deploy.eks_cluster_name == "" ? 0 : 1
  cluster_name    = var.deploy.eks_cluster_name
  namespace       = var.deploy.kube_namespace
  service_account = var.deploy.build_service_account
  role_arn        = aws_iam_role.builds.arn
}
