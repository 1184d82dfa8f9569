# The API's edge: the stage (Chalice's deployment no longer makes it, infra/tf.py), throttling
# stage-wide and tighter on the routes that create something, access logs, metrics, and an
# optional WAF rate limit per client IP. The app's own per-network limits stay behind these:
# the edge stops a flood before it costs a Lambda invocation.

locals {
  # POST routes that make a database, an account, a build...: their own, tighter throttle
  creating_routes = [
    "db/new", "vector/new", "cache/new", "queue/new", "nosql/new", "storage/new", "webhook/new",
    "deploy/new", "stacks/new",
  ]
}

resource "aws_cloudwatch_log_group" "api_access" {
  name              = "/aws/apigateway/${local.prefix}-access"
  retention_in_days = var.log_retention_days
}

resource "aws_api_gateway_stage" "api" {
  rest_api_id   = aws_api_gateway_rest_api.rest_api.id
  deployment_id = aws_api_gateway_deployment.rest_api.id
  stage_name    = "api"

  # The route template, never the path: a path carries resource tokens (bearer capabilities).
  access_log_settings {
    destination_arn = aws_cloudwatch_log_group.api_access.arn
    format = jsonencode({
      requestId    = "$context.requestId"
      sourceIp     = "$context.identity.sourceIp"
      requestTime  = "$context.requestTimeEpoch"
      method       = "$context.httpMethod"
      route        = "$context.resourcePath"
      status       = "$context.status"
      bytes        = "$context.responseLength"
      latencyMs    = "$context.responseLatency"
      error        = "$context.error.responseType"
      lambdaStatus = "$context.integration.status"
    })
  }

  depends_on = [aws_api_gateway_account.logs]
}

resource "aws_api_gateway_method_settings" "all" {
  rest_api_id = aws_api_gateway_rest_api.rest_api.id
  stage_name  = aws_api_gateway_stage.api.stage_name
  method_path = "*/*"

  settings {
    metrics_enabled        = true
    logging_level          = "ERROR" # execution logs of failures only, no request data
    data_trace_enabled     = false
    throttling_rate_limit  = var.throttle.stage.rate
    throttling_burst_limit = var.throttle.stage.burst
  }
}

resource "aws_api_gateway_method_settings" "creating" {
  for_each    = toset(local.creating_routes)
  rest_api_id = aws_api_gateway_rest_api.rest_api.id
  stage_name  = aws_api_gateway_stage.api.stage_name
  method_path = "${each.value}/POST"

  settings {
    metrics_enabled        = true
    logging_level          = "ERROR"
    data_trace_enabled     = false
    throttling_rate_limit  = var.throttle.creating.rate
    throttling_burst_limit = var.throttle.creating.burst
  }
}

# API Gateway writes logs through one role per account and region: made here unless the account
# already has it (var.manage_api_gateway_account = false).
resource "aws_iam_role" "api_gateway_logs" {
  count = var.manage_api_gateway_account ? 1 : 0
  name  = "${local.prefix}-api-gateway-logs"
  assume_role_policy = jsonencode({
    Version = "2012-10-17"
    Statement = [{
      Effect    = "Allow"
      Principal = { Service = "apigateway.amazonaws.com" }
      Action    = "sts:AssumeRole"
    }]
  })
}

resource "aws_iam_role_policy_attachment" "api_gateway_logs" {
  count      = var.manage_api_gateway_account ? 1 : 0
  role       = aws_iam_role.api_gateway_logs[0].name
  policy_arn = "arn:${local.partition}:iam::aws:policy/service-role/AmazonAPIGatewayPushToCloudWatchLogs"
}

resource "aws_api_gateway_account" "logs" {
  count               = var.manage_api_gateway_account ? 1 : 0
  cloudwatch_role_arn = aws_iam_role.api_gateway_logs[0].arn
  depends_on          = [aws_iam_role_policy_attachment.api_gateway_logs]
}

resource "aws_wafv2_web_acl" "api" {
  count = var.waf_rate_limit > 0 ? 1 : 0
  name  = "${local.prefix}-api"
  scope = "REGIONAL"

  default_action {
    allow {}
  }

  rule {
    name     = "requests-per-ip"
    priority = 0

    action {
      block {}
    }

    statement {
      rate_based_statement {
        limit              = var.waf_rate_limit
        aggregate_key_type = "IP"
      }
    }

    visibility_config {
      cloudwatch_metrics_enabled = true
      metric_name                = "${local.prefix}-requests-per-ip"
      sampled_requests_enabled   = false # samples would keep request paths: resource tokens
    }
  }

  visibility_config {
    cloudwatch_metrics_enabled = true
    metric_name                = "${local.prefix}-api"
    sampled_requests_enabled   = false
  }
}

resource "aws_wafv2_web_acl_association" "api" {
  count        = var.waf_rate_limit > 0 ? 1 : 0
  resource_arn = aws_api_gateway_stage.api.arn
  web_acl_arn  = aws_wafv2_web_acl.api[0].arn
}
