# Alarms to one SNS topic (an email subscription when var.alarm_email is set), and a dead-letter
# queue for the scheduled jobs' failed runs. What each alarm means and what to do: README.md,
# "Alarms". The Lambdas are chalice.tf.json's (tests/unit/test_infra.py checks this map holds
# every function of app.py).

locals {
  lambdas = {
    api_handler        = aws_lambda_function.api_handler
    reap_expired       = aws_lambda_function.reap_expired
    reap_deploys       = aws_lambda_function.reap_deploys
    poll_deploys       = aws_lambda_function.poll_deploys
    deliver_mail       = aws_lambda_function.deliver_mail
    enforce_quotas     = aws_lambda_function.enforce_quotas
    reconcile_backends = aws_lambda_function.reconcile_backends
  }
  jobs = { for name, function in local.lambdas : name => function if name != "api_handler" }
  # any Errors or Throttles of a function in 5 minutes: one alarm each, "<name>-<metric>"
  failure_metrics = {
    Errors    = "it raised (an unhandled error or a timeout)"
    Throttles = "it was throttled: its reserved concurrency (var.reserved_concurrency) is used up"
  }
  lambda_failures = merge([
    for name, function in local.lambdas : {
      for metric, means in local.failure_metrics : "${name}-${metric}" => {
        name = name, function = function, metric = metric, means = means
      }
    }
  ]...)
  tables = {
    resources        = aws_dynamodb_table.resources.name
    idempotency      = aws_dynamodb_table.idempotency.name
    counters         = aws_dynamodb_table.counters.name
    webhook-requests = aws_dynamodb_table.webhook-requests.name
    accounts         = aws_dynamodb_table.accounts.name
    deployments      = aws_dynamodb_table.deployments.name
    stacks           = aws_dynamodb_table.stacks.name
  }
  alarm_actions = [aws_sns_topic.alarms.arn]
}

resource "aws_sns_topic" "alarms" {
  name              = "${local.prefix}-alarms"
  kms_master_key_id = "alias/aws/sns"
}

resource "aws_sns_topic_subscription" "alarm_email" {
  count     = var.alarm_email == "" ? 0 : 1
  topic_arn = aws_sns_topic.alarms.arn
  protocol  = "email"
  endpoint  = var.alarm_email
}

# A job's failed run (an unhandled error, a timeout) lands here: a job runs again at its next
# tick anyway, so no retry; the message keeps the event and the error for 14 days.
resource "aws_sqs_queue" "jobs_dlq" {
  name                      = "${local.prefix}-jobs-dlq"
  message_retention_seconds = 1209600
  sqs_managed_sse_enabled   = true
}

resource "aws_lambda_function_event_invoke_config" "jobs" {
  for_each               = local.jobs
  function_name          = each.value.function_name
  maximum_retry_attempts = 0

  destination_config {
    on_failure {
      destination = aws_sqs_queue.jobs_dlq.arn
    }
  }
}

resource "aws_cloudwatch_metric_alarm" "lambda_failures" {
  for_each            = local.lambda_failures
  alarm_name          = "${each.value.function.function_name}-${lower(each.value.metric)}"
  alarm_description   = "${each.value.name}: ${each.value.means}. Runbook: infra/terraform/README.md#alarms"
  namespace           = "AWS/Lambda"
  metric_name         = each.value.metric
  dimensions          = { FunctionName = each.value.function.function_name }
  statistic           = "Sum"
  period              = 300
  evaluation_periods  = 1
  comparison_operator = "GreaterThanThreshold"
  threshold           = 0
  treat_missing_data  = "notBreaching"
  alarm_actions       = local.alarm_actions
  ok_actions          = local.alarm_actions
}

resource "aws_cloudwatch_metric_alarm" "lambda_duration" {
  for_each            = local.lambdas
  alarm_name          = "${each.value.function_name}-p99-duration"
  alarm_description   = "${each.key}'s p99 duration is over 80% of its timeout. Runbook: infra/terraform/README.md#alarms"
  namespace           = "AWS/Lambda"
  metric_name         = "Duration"
  dimensions          = { FunctionName = each.value.function_name }
  extended_statistic  = "p99"
  period              = 300
  evaluation_periods  = 3
  comparison_operator = "GreaterThanThreshold"
  threshold           = each.value.timeout * 1000 * 0.8
  treat_missing_data  = "notBreaching"
  alarm_actions       = local.alarm_actions
  ok_actions          = local.alarm_actions
}

resource "aws_cloudwatch_metric_alarm" "jobs_dlq" {
  alarm_name          = "${local.prefix}-jobs-dlq-depth"
  alarm_description   = "A scheduled job's run failed: its event and error are in ${aws_sqs_queue.jobs_dlq.name}. Runbook: infra/terraform/README.md#alarms"
  namespace           = "AWS/SQS"
  metric_name         = "ApproximateNumberOfMessagesVisible"
  dimensions          = { QueueName = aws_sqs_queue.jobs_dlq.name }
  statistic           = "Maximum"
  period              = 300
  evaluation_periods  = 1
  comparison_operator = "GreaterThanThreshold"
  threshold           = 0
  treat_missing_data  = "notBreaching"
  alarm_actions       = local.alarm_actions
  ok_actions          = local.alarm_actions
}

resource "aws_cloudwatch_metric_alarm" "dynamodb_throttles" {
  for_each            = local.tables
  alarm_name          = "${each.value}-throttles"
  alarm_description   = "Requests to ${each.value} were throttled (on-demand tables throttle past their previous peak's double). Runbook: infra/terraform/README.md#alarms"
  evaluation_periods  = 1
  comparison_operator = "GreaterThanThreshold"
  threshold           = 0
  treat_missing_data  = "notBreaching"
  alarm_actions       = local.alarm_actions
  ok_actions          = local.alarm_actions

  metric_query {
    id          = "throttled"
    expression  = "reads + writes"
    label       = "throttled requests"
    return_data = true
  }

  metric_query {
    id = "reads"
    metric {
      namespace   = "AWS/DynamoDB"
      metric_name = "ReadThrottleEvents"
      dimensions  = { TableName = each.value }
      stat        = "Sum"
      period      = 300
    }
  }

  metric_query {
    id = "writes"
    metric {
      namespace   = "AWS/DynamoDB"
      metric_name = "WriteThrottleEvents"
      dimensions  = { TableName = each.value }
      stat        = "Sum"
      period      = 300
    }
  }
}

resource "aws_cloudwatch_metric_alarm" "api_5xx" {
  alarm_name          = "${local.prefix}-api-5xx-rate"
  alarm_description   = "Over ${var.api_5xx_rate_threshold * 100}% of API requests answered 5xx for 10 minutes. Runbook: infra/terraform/README.md#alarms"
  namespace           = "AWS/ApiGateway"
  metric_name         = "5XXError"
  dimensions          = { ApiName = aws_api_gateway_rest_api.rest_api.name, Stage = aws_api_gateway_stage.api.stage_name }
  statistic           = "Average"
  period              = 300
  evaluation_periods  = 2
  comparison_operator = "GreaterThanThreshold"
  threshold           = var.api_5xx_rate_threshold
  treat_missing_data  = "notBreaching"
  alarm_actions       = local.alarm_actions
  ok_actions          = local.alarm_actions
}
