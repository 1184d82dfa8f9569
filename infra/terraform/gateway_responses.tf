# API Gateway's own answers in the app's error envelope. Chalice has no catch-all route, so an
# unknown method or path gets API Gateway's 403 MISSING_AUTHENTICATION_TOKEN: make it a 404
# (devstack/serve.py does the same locally, and its 10 MB body cap answers as REQUEST_TOO_LARGE
# does). The edge's throttle (edge.tf) and WAF rate rule answer 429 rate_limited, as the app's own
# limits do. DEFAULT_4XX/5XX keep their status codes.
# `python -m infra.tf package` makes the API deployment depend on these and redeploy when
# local.gateway_responses changes, since a gateway response takes effect only on a new deployment.

locals {
  gateway_responses = {
    MISSING_AUTHENTICATION_TOKEN = {
      status_code = "404"
      body        = <<-EOT
        {"ok":false,"error":"not_found","message":"No route matches this method and path.","request_id":"$context.requestId"}
      EOT
    }
    REQUEST_TOO_LARGE = {
      status_code = "413"
      body        = <<-EOT
        {"ok":false,"error":"payload_too_large","message":"The request is over API Gateway's 10 MB payload limit.","request_id":"$context.requestId"}
      EOT
    }
    THROTTLED = {
      status_code = "429"
      body        = <<-EOT
        {"ok":false,"error":"rate_limited","message":"Too many requests: the API's throttle refused this one before it ran.","agent_action":"Retry in a few seconds, backing off; send one request per resource.","request_id":"$context.requestId"}
      EOT
    }
    WAF_FILTERED = {
      status_code = "429"
      body        = <<-EOT
        {"ok":false,"error":"rate_limited","message":"Too many requests from this address in 5 minutes.","agent_action":"Wait 5 minutes before retrying from this address.","request_id":"$context.requestId"}
      EOT
    }
    DEFAULT_4XX = {
      status_code = null
      body        = <<-EOT
        {"ok":false,"error":"bad_request","message":$context.error.messageString,"request_id":"$context.requestId"}
      EOT
    }
    DEFAULT_5XX = {
      status_code = null
      body        = <<-EOT
        {"ok":false,"error":"internal_error","message":$context.error.messageString,"request_id":"$context.requestId"}
      EOT
    }
  }
}

resource "aws_api_gateway_gateway_response" "envelope" {
  for_each = local.gateway_responses

  rest_api_id   = aws_api_gateway_rest_api.rest_api.id
  response_type = each.key
  status_code   = each.value.status_code

  response_templates = {
    "application/json" = each.value.body
  }
}
