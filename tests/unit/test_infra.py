"""infra/terraform, policies/ and the wiring agree with the app and with the local stack."""

from __future__ import annotations

import copy
import json
import re
import zipfile
from pathlib import Path
from typing import Any

import pytest
from chalice.config import Config
from chalice.deploy.swagger import SwaggerGenerator

import app
from chalicelib.routes.provision import ROUTES as PROVISION_ROUTES
from devstack.aws import create_tables, table_specs
from infra import hcl, tf

ROOT = Path(__file__).resolve().parents[2]
MODULE = hcl.parse_dir(ROOT / "infra" / "terraform")
STAGES = ("dev", "prod")
ACCOUNT, REGION = "123456789012", "eu-west-1"


def _locals() -> dict[str, Any]:
    merged: dict[str, Any] = {}
    for block in MODULE.children("locals"):
        merged.update(block.attributes)
    return merged


def _resource(type_: str, name: str) -> hcl.Block:
    (block,) = MODULE.children("resource", type_, name)
    return block


def _default(variable: str) -> Any:
    (block,) = MODULE.children("variable", variable)
    return block.attributes["default"]


def _named(template: str, stage: str) -> str:
    """A name attribute such as "${local.prefix}-resources", evaluated for ``stage``."""
    assert _locals()["prefix"] == "instanode-${var.stage}"
    name = template.replace("${local.prefix}", f"instanode-{stage}")
    assert "${" not in name, f"unexpected expression in {template!r}"
    return name


def _key_schema(hash_key: str, range_key: str | None = None) -> list[dict[str, str]]:
    keys = [{"AttributeName": hash_key, "KeyType": "HASH"}]
    return keys + ([{"AttributeName": range_key, "KeyType": "RANGE"}] if range_key else [])


def _terraform_tables(stage: str) -> dict[str, dict[str, Any]]:
    """Each aws_dynamodb_table as the create_table arguments devstack would pass."""
    tables = {}
    for block in MODULE.children("resource", "aws_dynamodb_table"):
        a = block.attributes
        spec: dict[str, Any] = {
            "TableName": _named(a["name"], stage),
            "KeySchema": _key_schema(a["hash_key"], a.get("range_key")),
            "AttributeDefinitions": [
                {"AttributeName": b.attributes["name"], "AttributeType": b.attributes["type"]}
                for b in block.children("attribute")
            ],
        }
        indexes = [
            {
                "IndexName": g.attributes["name"],
                "KeySchema": _key_schema(g.attributes["hash_key"], g.attributes.get("range_key")),
                "Projection": {"ProjectionType": g.attributes["projection_type"]},
            }
            for g in block.children("global_secondary_index")
        ]
        if indexes:
            spec["GlobalSecondaryIndexes"] = indexes
        tables[spec["TableName"]] = _sorted(spec)
    return tables


def _sorted(spec: dict[str, Any]) -> dict[str, Any]:
    out = dict(spec)
    for key, by in (
        ("AttributeDefinitions", "AttributeName"),
        ("GlobalSecondaryIndexes", "IndexName"),
    ):
        if key in out:
            out[key] = sorted(out[key], key=lambda x: x[by])
    return out


class _RecordingDynamo:
    """Stands in for the DynamoDB client devstack.aws.create_tables talks to."""

    def __init__(self) -> None:
        self.created: list[dict[str, Any]] = []
        self.ttl: dict[str, dict[str, Any]] = {}

    def list_tables(self) -> dict[str, list[str]]:
        return {"TableNames": []}

    def create_table(self, **kwargs: Any) -> None:
        self.created.append(kwargs)

    def update_time_to_live(self, TableName: str, TimeToLiveSpecification: dict[str, Any]) -> None:
        self.ttl[TableName] = TimeToLiveSpecification


# -- the app ---------------------------------------------------------------------------------


def test_binary_types_include_multipart_form_data() -> None:
    assert "multipart/form-data" in app.app.api.binary_types


# -- DynamoDB ---------------------------------------------------------------------------------


@pytest.mark.parametrize("stage", STAGES)
def test_terraform_declares_exactly_the_devstack_tables(stage: str) -> None:
    expected = {s["TableName"]: _sorted(s) for s in table_specs(f"instanode-{stage}")}
    assert _terraform_tables(stage) == expected


def test_terraform_tables_use_devstack_billing_and_ttl() -> None:
    fake = _RecordingDynamo()
    create_tables(fake, "instanode-prod")  # type: ignore[arg-type]
    for call in fake.created:
        name = call["TableName"].removeprefix("instanode-prod-")
        block = _resource("aws_dynamodb_table", name)
        (ttl,) = block.children("ttl")
        assert block.attributes["billing_mode"] == call["BillingMode"]
        assert ttl.attributes == {
            "attribute_name": fake.ttl[call["TableName"]]["AttributeName"],
            "enabled": fake.ttl[call["TableName"]]["Enabled"],
        }


def test_terraform_tables_enable_pitr_and_encryption() -> None:
    for block in MODULE.children("resource", "aws_dynamodb_table"):
        for setting in ("point_in_time_recovery", "server_side_encryption"):
            assert [b.attributes for b in block.children(setting)] == [{"enabled": True}], (
                f"{block.labels[1]}: {setting}"
            )


def test_outputs_name_every_table() -> None:
    (output,) = MODULE.children("output", "table_names")
    named = [e.text for e in output.attributes["value"]]
    assert named == [f"aws_dynamodb_table.{t}.name" for t in tf.TABLES]


def test_tables_and_bucket_survive_a_destroy_unless_allowed() -> None:
    assert _default("allow_destroy") is False
    for block in MODULE.children("resource", "aws_dynamodb_table"):
        protection = block.attributes["deletion_protection_enabled"]
        assert protection == hcl.Expr("!var.allow_destroy"), block.labels[1]
    bucket = _resource("aws_s3_bucket", "storage").attributes
    assert bucket["force_destroy"] == hcl.Expr("var.allow_destroy")


# -- S3 and the secret -------------------------------------------------------------------------


def test_bucket_expires_anonymous_objects_unused_uploads_and_stale_multiparts() -> None:
    rules = _resource("aws_s3_bucket_lifecycle_configuration", "storage").children("rule")
    by_prefix = {}
    for rule in rules:
        if rule.attributes["id"] == "abort-incomplete-multipart-uploads":
            (abort,) = rule.children("abort_incomplete_multipart_upload")
            assert abort.attributes == {"days_after_initiation": 1}
            continue
        (filter_,) = rule.children("filter")
        (expiration,) = rule.children("expiration")
        assert rule.attributes["status"] == "Enabled"
        by_prefix[filter_.attributes["prefix"]] = expiration.attributes["days"]
    assert by_prefix == {"anon/": hcl.Expr("var.anonymous_object_expiry_days"), "uploads/": 1}
    assert _default("anonymous_object_expiry_days") == 1


def test_bucket_blocks_public_access_encrypts_and_keeps_no_versions() -> None:
    public = _resource("aws_s3_bucket_public_access_block", "storage").attributes
    sse = _resource("aws_s3_bucket_server_side_encryption_configuration", "storage")
    (versioning,) = _resource("aws_s3_bucket_versioning", "storage").children(
        "versioning_configuration"
    )
    flags = ("block_public_acls", "block_public_policy", "ignore_public_acls")
    assert all(public[f] is True for f in (*flags, "restrict_public_buckets"))
    (by_default,) = sse.children("rule")[0].children("apply_server_side_encryption_by_default")
    assert by_default.attributes["sse_algorithm"] in ("AES256", "aws:kms")
    assert versioning.attributes["status"] == "Disabled"


@pytest.mark.parametrize("stage", STAGES)
def test_chalice_config_names_what_terraform_creates(stage: str) -> None:
    config = json.loads((ROOT / ".chalice" / "config.json").read_text())["stages"][stage]
    env = config["environment_variables"]
    bucket = _resource("aws_s3_bucket", "storage").attributes["bucket"]
    assert env["INSTANODE_TABLE_PREFIX"] == f"instanode-{stage}"
    assert env["INSTANODE_BUCKET"] == _named(bucket, stage)


# -- IAM policies ---------------------------------------------------------------------------


def _functions() -> list[str]:
    return ["api_handler", *(source.name for source in app.app.event_sources)]


ALLOWED_ACTIONS = {
    "dynamodb:BatchGetItem",
    "dynamodb:BatchWriteItem",  # deleting a webhook inbox's stored requests
    "dynamodb:ConditionCheckItem",
    "dynamodb:DeleteItem",
    "dynamodb:GetItem",
    "dynamodb:PutItem",
    "dynamodb:Query",
    "dynamodb:Scan",  # the reconciler's pass over the deployments and stacks it knows
    "dynamodb:UpdateItem",
    "s3:GetObject",
    "s3:PutObject",
    "s3:DeleteObject",
    "s3:ListBucket",
    "secretsmanager:GetSecretValue",
    "ses:SendEmail",
    "sqs:SendMessage",  # a scheduled job's failed run, to its dead-letter queue
    "logs:CreateLogStream",  # the log group is Terraform's: no logs:CreateLogGroup
    "logs:PutLogEvents",
}
OBJECT_PREFIXES = ("anon", "deploys", "stacks", "uploads")  # tenants', build contexts, uploads


def _policy(function: str, stage: str) -> dict[str, Any]:
    text = (ROOT / "policies" / f"{function}.json").read_text()
    values = {
        "prefix": f"instanode-{stage}",
        "partition": "aws",
        "region": REGION,
        "account_id": ACCOUNT,
        "mail_from_address": "noreply@example.com",
    }
    rendered = re.sub(r"\$\{(\w+)\}", lambda m: values[m.group(1)], text)
    doc: dict[str, Any] = json.loads(rendered)
    return doc


def _stage_arns(stage: str, function: str) -> set[str]:
    """Every ARN the function may touch, from devstack's tables and terraform's names."""
    prefix = f"instanode-{stage}"
    table = f"arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/"
    arns = set()
    for spec in table_specs(prefix):
        arns.add(table + spec["TableName"])
        arns |= {
            f"{table}{spec['TableName']}/index/{i['IndexName']}"
            for i in spec.get("GlobalSecondaryIndexes", [])
        }
    bucket = _named(_resource("aws_s3_bucket", "storage").attributes["bucket"], stage)
    secret = _named(_resource("aws_secretsmanager_secret", "app").attributes["name"], stage)
    name = prefix if function == "api_handler" else f"{prefix}-{function}"  # chalice's names
    dlq = _named(_resource("aws_sqs_queue", "jobs_dlq").attributes["name"], stage)
    return arns | {
        f"arn:aws:sqs:{REGION}:{ACCOUNT}:{dlq}",  # the scheduled jobs' failed runs
        f"arn:aws:s3:::{bucket}",
        *(f"arn:aws:s3:::{bucket}/{p}/*" for p in OBJECT_PREFIXES),
        f"arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:{secret}-??????",
        f"arn:aws:logs:{REGION}:{ACCOUNT}:log-group:/aws/lambda/{name}:*",
        f"arn:aws:ses:{REGION}:{ACCOUNT}:identity/*",  # sign-in links sent through SES
    }


def _statements(function: str, stage: str = "prod") -> list[dict[str, Any]]:
    doc = _policy(function, stage)
    assert doc["Version"] == "2012-10-17"
    return list(doc["Statement"])


def _as_list(value: str | list[str]) -> list[str]:
    return [value] if isinstance(value, str) else value


@pytest.mark.parametrize("stage", STAGES)
@pytest.mark.parametrize("function", _functions())
def test_policies_reference_only_their_stage_resources(stage: str, function: str) -> None:
    statements = _statements(function, stage)
    resources = {r for s in statements for r in _as_list(s["Resource"])}
    assert all(s["Effect"] == "Allow" and "NotResource" not in s for s in statements)
    assert resources <= _stage_arns(stage, function)


@pytest.mark.parametrize("function", _functions())
def test_policies_grant_only_item_object_secret_and_log_actions(function: str) -> None:
    actions = {a for s in _statements(function) for a in _as_list(s["Action"])}
    assert actions <= ALLOWED_ACTIONS
    assert all("NotAction" not in s for s in _statements(function))


def test_mail_may_be_sent_only_from_the_configured_address() -> None:
    senders = []
    for function in _functions():
        for send in [s for s in _statements(function) if s["Action"] == ["ses:SendEmail"]]:
            assert send["Condition"] == {"StringEquals": {"ses:FromAddress": "noreply@example.com"}}
            senders.append(function)
    assert senders == ["api_handler", "deliver_mail"]  # the reaper, say, sends none
    rendered = tf.render_policy('{"a": "${mail_from_address}", "p": "${prefix}"}')
    assert rendered == '{"a": "${local.mail_from_address}", "p": "${local.prefix}"}'
    assert "mail_from_address" in _locals()


@pytest.mark.parametrize("function", _functions())
def test_policies_query_indexes_but_write_only_tables(function: str) -> None:
    for statement in _statements(function):
        actions = set(_as_list(statement["Action"]))
        on_index = any("/index/" in r for r in _as_list(statement["Resource"]))
        assert not on_index or actions == {"dynamodb:Query"}


def test_policies_name_no_stage() -> None:
    """One file per function serves every stage: its names go through ${prefix}."""
    for path in (ROOT / "policies").glob("*.json"):
        assert not re.search(r"instanode-(dev|prod)", path.read_text()), path


# -- alarms and the jobs' dead-letter queue -----------------------------------------------------


def test_alarms_watch_every_function_and_every_table() -> None:
    (block,) = [b for b in MODULE.children("locals") if "lambdas" in b.attributes]
    lambdas, tables = block.attributes["lambdas"], block.attributes["tables"]
    assert lambdas == {n: hcl.Expr(f"aws_lambda_function.{n}") for n in _functions()}
    assert tables == {t: hcl.Expr(f"aws_dynamodb_table.{t}.name") for t in tf.TABLES}
    failures = _resource("aws_cloudwatch_metric_alarm", "lambda_failures").attributes
    assert failures["for_each"] == hcl.Expr("local.lambda_failures")
    assert "for name, function in local.lambdas" in _locals()["lambda_failures"].text
    assert set(_locals()["failure_metrics"]) == {"Errors", "Throttles"}
    duration = _resource("aws_cloudwatch_metric_alarm", "lambda_duration").attributes
    assert duration["for_each"] == hcl.Expr("local.lambdas")
    throttles = _resource("aws_cloudwatch_metric_alarm", "dynamodb_throttles").attributes
    assert throttles["for_each"] == hcl.Expr("local.tables")


def test_every_alarm_notifies_the_topic_when_it_fires_and_when_it_clears() -> None:
    alarms = MODULE.children("resource", "aws_cloudwatch_metric_alarm")
    assert len(alarms) == 5
    for alarm in alarms:
        for actions in ("alarm_actions", "ok_actions"):
            assert alarm.attributes[actions] == hcl.Expr("local.alarm_actions"), alarm.labels
        assert alarm.attributes["treat_missing_data"] == "notBreaching"
    assert _locals()["alarm_actions"] == [hcl.Expr("aws_sns_topic.alarms.arn")]
    subscription = _resource("aws_sns_topic_subscription", "alarm_email").attributes
    assert subscription["count"] == hcl.Expr('var.alarm_email == "" ? 0 : 1')


def test_failed_job_runs_go_to_the_dlq_without_retries() -> None:
    config = _resource("aws_lambda_function_event_invoke_config", "jobs")
    assert config.attributes["for_each"] == hcl.Expr("local.jobs")
    assert config.attributes["maximum_retry_attempts"] == 0
    ((on_failure,),) = [d.children("on_failure") for d in config.children("destination_config")]
    assert on_failure.attributes["destination"] == hcl.Expr("aws_sqs_queue.jobs_dlq.arn")
    assert _resource("aws_sqs_queue", "jobs_dlq").attributes["sqs_managed_sse_enabled"] is True


def test_hcl_reader_keeps_for_expressions_as_text() -> None:
    parsed = hcl.parse(
        'locals {\n  x = { for k, v in y : k => v if k != "a" }\n  z = [for i in w : i]\n}\n'
    )
    (block,) = parsed.children("locals")
    assert block.attributes == {
        "x": hcl.Expr('{ for k, v in y : k => v if k != "a" }'),
        "z": hcl.Expr("[for i in w : i]"),
    }


# -- API Gateway responses ----------------------------------------------------------------------


def _gateway_body(response_type: str) -> dict[str, Any]:
    body = _locals()["gateway_responses"][response_type]["body"]
    body = body.replace("$context.error.messageString", '"Some message"')
    parsed: dict[str, Any] = json.loads(body.replace("$context.requestId", "req-1"))
    return parsed


def test_gateway_turns_missing_authentication_token_into_404() -> None:
    response = _locals()["gateway_responses"]["MISSING_AUTHENTICATION_TOKEN"]
    assert response["status_code"] == "404"
    assert _gateway_body("MISSING_AUTHENTICATION_TOKEN") == {
        "ok": False,
        "error": "not_found",
        "message": "No route matches this method and path.",
        "request_id": "req-1",
    }


@pytest.mark.parametrize("response_type", ["THROTTLED", "WAF_FILTERED"])
def test_the_edge_refuses_floods_as_the_app_does(response_type: str) -> None:
    assert _locals()["gateway_responses"][response_type]["status_code"] == "429"
    body = _gateway_body(response_type)
    assert (body["ok"], body["error"], body["request_id"]) == (False, "rate_limited", "req-1")
    assert body["agent_action"]


def test_gateway_answers_a_body_over_its_limit_as_payload_too_large() -> None:
    """The local server's 10 MB cap (devstack/serve.py) answers the same code."""
    assert _locals()["gateway_responses"]["REQUEST_TOO_LARGE"]["status_code"] == "413"
    body = _gateway_body("REQUEST_TOO_LARGE")
    assert (body["ok"], body["error"], body["request_id"]) == (False, "payload_too_large", "req-1")


@pytest.mark.parametrize(
    ("response_type", "code"), [("DEFAULT_4XX", "bad_request"), ("DEFAULT_5XX", "internal_error")]
)
def test_gateway_defaults_keep_status_and_use_the_envelope(response_type: str, code: str) -> None:
    assert _locals()["gateway_responses"][response_type]["status_code"] is None
    assert _gateway_body(response_type) == {
        "ok": False,
        "error": code,
        "message": "Some message",
        "request_id": "req-1",
    }


def test_gateway_responses_apply_every_entry_as_json() -> None:
    response = _resource("aws_api_gateway_gateway_response", "envelope").attributes
    assert response["for_each"] == hcl.Expr("local.gateway_responses")
    assert response["response_templates"] == {"application/json": hcl.Expr("each.value.body")}
    assert response["status_code"] == hcl.Expr("each.value.status_code")


# -- wiring chalice.tf.json ----------------------------------------------------------------------


def _function(stage: str, name: str) -> dict[str, Any]:
    return {
        "function_name": f"instanode-{stage}-{name}",
        "tags": {"aws-chalice": f"version=1.34.0:stage={stage}:app=instanode"},
        "environment": {
            "variables": {
                "INSTANODE_STAGE": stage,
                "INSTANODE_TABLE_PREFIX": f"instanode-{stage}",
                "INSTANODE_BUCKET": f"instanode-{stage}-storage",
            }
        },
        "role": f"${{aws_iam_role.{name}_role.arn}}",
    }


def _chalice_output(stage: str = "prod") -> dict[str, Any]:
    """The shape `chalice package --pkg-format terraform` writes (trimmed)."""
    policy = (ROOT / "policies" / "api_handler.json").read_text()
    return {
        "terraform": {"required_version": ">= 0.12.26, < 1.4.0"},
        "data": {"aws_region": {"chalice": {}}, "null_data_source": {"chalice": {}}},
        "locals": {"chalice_api_swagger": "{}"},
        "resource": {
            "aws_iam_role": {"api_handler_role": {}, "reap_expired_role": {}},
            "aws_iam_role_policy": {
                "api_handler_role": {"policy": json.dumps(json.loads(policy))},
            },
            "aws_lambda_function": {
                "api_handler": _function(stage, "api_handler"),
                "reap_expired": _function(stage, "reap_expired"),
            },
            "aws_cloudwatch_event_rule": {"reap_expired-event": {"name": "reap_expired-event"}},
            "aws_api_gateway_rest_api": {
                "rest_api": {"body": "${local.chalice_api_swagger}", "name": "instanode"}
            },
            "aws_api_gateway_deployment": {
                "rest_api": {
                    "stage_name": "api",
                    "stage_description": "${md5(local.chalice_api_swagger)}",
                    "rest_api_id": "${aws_api_gateway_rest_api.rest_api.id}",
                }
            },
        },
        "output": {"EndpointURL": {"value": "${aws_api_gateway_deployment.rest_api.invoke_url}"}},
    }


def test_wire_declares_the_greedy_webhook_path_parameter() -> None:
    doc = _chalice_output()
    swagger = SwaggerGenerator("us-east-1", {"api_handler_arn": "arn:x"}).generate_swagger(app.app)
    doc["locals"]["chalice_api_swagger"] = json.dumps(swagger)
    wired = json.loads(tf.wire(doc, "prod")["locals"]["chalice_api_swagger"])
    methods = wired["paths"]["/webhook/receive/{token}/{path+}"]
    assert set(methods) == {"get", "post", "put", "patch", "delete", "head", "options"}
    for method in methods.values():
        assert {(p["name"], p["in"], p["required"]) for p in method["parameters"]} == {
            ("token", "path", True),
            ("path", "path", True),
        }


def test_wire_drops_version_pins_and_null_data_source() -> None:
    wired = tf.wire(_chalice_output(), "prod")
    assert "terraform" not in wired
    assert wired["data"] == {"aws_region": {"chalice": {}}}
    (versions,) = MODULE.children("terraform")
    (providers,) = versions.children("required_providers")
    assert providers.attributes["aws"]["version"].startswith("~> 5.")


def test_wire_gives_every_function_its_package_env_the_settings_and_the_secret_arn() -> None:
    output = _chalice_output()
    wired = tf.wire(output, "prod")
    for name, function in wired["resource"]["aws_lambda_function"].items():
        assert function["environment"]["variables"] == (
            f"${{merge(local.package_env.{name}, local.app_settings, "
            "{INSTANODE_SECRETS_ARN = aws_secretsmanager_secret.app.arn})}"
        )
        package = output["resource"]["aws_lambda_function"][name]["environment"]["variables"]
        assert wired["locals"]["package_env"][name] == package
        assert "aws_dynamodb_table.resources" in function["depends_on"]
    settings = _locals()["app_settings"].text
    for variable in ("PUBLIC_BASE_URL", "MAIL_URL", "MAIL_FROM", "DEPLOY_BACKEND", "KUBE_API_URL"):
        assert f"INSTANODE_{variable}" in settings
    assert 'if value != ""' in settings  # an unset variable leaves the app's default


def test_vpc_mode_puts_every_function_in_the_subnets_and_lets_its_role_attach() -> None:
    wired = tf.wire(_chalice_output(), "prod")["resource"]
    attachments = wired["aws_iam_role_policy_attachment"]
    for name, function in wired["aws_lambda_function"].items():
        vpc = function["dynamic"]["vpc_config"]
        assert vpc["for_each"] == "${var.vpc == null ? [] : [var.vpc]}"
        assert vpc["content"]["subnet_ids"] == "${vpc_config.value.subnet_ids}"
        attachment = attachments[f"{name}_vpc_access"]
        assert attachment["count"] == "${var.vpc == null ? 0 : 1}"
        assert attachment["role"] == f"${{aws_iam_role.{name}_role.name}}"
        assert attachment["policy_arn"].endswith(
            ":policy/service-role/AWSLambdaVPCAccessExecutionRole"
        )


def test_prod_settings_preconditions_name_what_is_missing() -> None:
    (check,) = MODULE.children("resource", "terraform_data", "production_settings")
    (lifecycle,) = check.children("lifecycle")
    messages = [p.attributes["error_message"] for p in lifecycle.children("precondition")]
    assert any("public_base_url" in m and "loopback" in m for m in messages)
    assert any('deploy.backend = "kubernetes"' in m for m in messages)
    assert any("mail_from" in m for m in messages)


def test_wire_gives_every_function_a_log_group_with_retention_first() -> None:
    wired = tf.wire(_chalice_output(), "prod")["resource"]
    groups = wired["aws_cloudwatch_log_group"]
    for name, function in wired["aws_lambda_function"].items():
        assert groups[name] == {
            "name": f"/aws/lambda/{function['function_name']}",
            "retention_in_days": "${var.log_retention_days}",
        }
        assert f"aws_cloudwatch_log_group.{name}" in function["depends_on"]


def test_every_function_has_its_reserved_concurrency_variable() -> None:
    (block,) = MODULE.children("variable", "reserved_concurrency")
    declared = re.findall(r"(\w+)\s*=\s*optional\(number, (-?\d+)\)", str(block.attributes["type"]))
    assert sorted(name for name, _ in declared) == sorted(_functions())
    assert {name: int(n) for name, n in declared}["poll_deploys"] == 1  # never two at once
    output = _chalice_output()
    output["resource"]["aws_lambda_function"] = {n: _function("prod", n) for n in _functions()}
    for name, function in tf.wire(output, "prod")["resource"]["aws_lambda_function"].items():
        assert function["reserved_concurrent_executions"] == f"${{var.reserved_concurrency.{name}}}"


def _timeout(function: str) -> int:
    on_disk = json.loads((ROOT / ".chalice" / "config.json").read_text())
    return int(Config("prod", function_name=function, config_from_disk=on_disk).lambda_timeout)


def test_api_times_out_before_api_gateway_and_jobs_before_their_next_run() -> None:
    assert _timeout("api_handler") < 29  # API Gateway answers 504 at 29 s
    units = {"minute": 60, "minutes": 60, "hour": 3600, "hours": 3600}
    for source in app.app.event_sources:
        rate = re.fullmatch(r"rate\((\d+) (\w+)\)", source.schedule_expression.to_string())
        assert rate, source.name
        assert _timeout(source.name) < int(rate[1]) * units[rate[2]], source.name


def test_wire_rejects_a_package_of_another_stage() -> None:
    with pytest.raises(tf.WireError, match="another stage"):
        tf.wire(_chalice_output("dev"), "prod")


def test_wire_rejects_config_names_terraform_does_not_create() -> None:
    doc = _chalice_output()
    doc["resource"]["aws_lambda_function"]["api_handler"]["environment"]["variables"][
        "INSTANODE_BUCKET"
    ] = "some-other-bucket"
    with pytest.raises(tf.WireError, match="INSTANODE_BUCKET"):
        tf.wire(doc, "prod")


def test_wire_leaves_its_input_unchanged() -> None:
    doc = _chalice_output()
    before = copy.deepcopy(doc)
    tf.wire(doc, "prod")
    assert doc == before


def test_render_policy_fills_placeholders_and_escapes_other_templates() -> None:
    policy = '"arn:${partition}:s3:::b/${aws:username}/*", "x:${account_id}", "%{if}"'
    assert tf.render_policy(policy) == (
        '"arn:${local.partition}:s3:::b/$${aws:username}/*", "x:${local.account_id}", "%%{if}"'
    )


def test_wire_hands_the_stage_to_edge_tf_and_redeploys_on_any_change() -> None:
    wired = tf.wire(_chalice_output(), "prod")
    deployment = wired["resource"]["aws_api_gateway_deployment"]["rest_api"]
    assert "stage_name" not in deployment and "stage_description" not in deployment
    assert deployment["triggers"] == {
        "swagger": "${md5(local.chalice_api_swagger)}",
        "gateway_responses": "${sha1(jsonencode(local.gateway_responses))}",
    }
    assert wired["output"]["EndpointURL"] == {"value": "${aws_api_gateway_stage.api.invoke_url}"}
    assert wired["resource"]["aws_api_gateway_rest_api"]["rest_api"]["name"] == "${local.prefix}"
    stage = _resource("aws_api_gateway_stage", "api").attributes
    assert (stage["stage_name"], stage["deployment_id"]) == (
        "api",
        hcl.Expr("aws_api_gateway_deployment.rest_api.id"),
    )


def test_access_logs_name_the_route_never_the_path_with_its_token() -> None:
    (settings,) = _resource("aws_api_gateway_stage", "api").children("access_log_settings")
    fields = settings.attributes["format"].text
    assert "$context.resourcePath" in fields and "$context.path" not in fields
    assert "$context.requestId" in fields and "$context.identity.sourceIp" in fields
    for block in MODULE.children("resource", "aws_wafv2_web_acl"):
        for config in [*block.children("visibility_config"), *block.children("rule")]:
            for visibility in [config, *config.children("visibility_config")]:
                assert visibility.attributes.get("sampled_requests_enabled", False) is False


def test_creating_routes_have_a_tighter_throttle_than_the_stage() -> None:
    creating = _resource("aws_api_gateway_method_settings", "creating").attributes
    assert creating["for_each"] == hcl.Expr("toset(local.creating_routes)")
    assert creating["method_path"] == "${each.value}/POST"
    routes = {f"/{r}" for r in _locals()["creating_routes"]}
    assert routes == {*PROVISION_ROUTES, "/deploy/new", "/stacks/new"}
    assert all("POST" in app.app.routes[r] for r in routes)
    (block,) = MODULE.children("variable", "throttle")
    defaults = re.findall(r"(\w+)\s*=\s*optional\(object\((.*?)\), \{\}\)", str(block.attributes))
    rates = {
        name: dict(re.findall(r"(\w+) = optional\(number, (\d+)\)", fields))
        for name, fields in defaults
    }
    assert int(rates["creating"]["rate"]) < int(rates["stage"]["rate"])
    assert int(rates["creating"]["burst"]) < int(rates["stage"]["burst"])
    waf = _resource("aws_wafv2_web_acl", "api").attributes
    assert (
        waf["count"] == hcl.Expr("var.waf_rate_limit > 0 ? 1 : 0")
        and _default("waf_rate_limit") == 0
    )


def test_wired_references_resolve_in_the_module() -> None:
    wired = tf.wire(_chalice_output(), "prod")
    text = json.dumps(wired)
    declared = {(b.labels[0], b.labels[1]) for b in MODULE.children("resource")} | {
        (t, n) for t, items in wired["resource"].items() for n in items
    }
    local_names = set(_locals()) | set(wired["locals"])
    variables = {b.labels[0] for b in MODULE.children("variable")}
    for kind, name in re.findall(r"\b(aws_[a-z0-9_]+)\.([A-Za-z0-9_-]+)", text):
        assert (kind, name) in declared, f"{kind}.{name}"
    assert set(re.findall(r"\blocal\.(\w+)", text)) <= local_names
    assert set(re.findall(r"\bvar\.(\w+)", text)) <= variables


# -- the builds' identity (builds.tf) -------------------------------------------------------------


def test_builds_may_only_read_their_build_contexts() -> None:
    policy = str(_resource("aws_iam_role_policy", "builds").attributes["policy"])
    assert re.findall(r'"(\w+:\w+)"', policy) == ["s3:GetObject"]
    resources = re.findall(r'"\$\{aws_s3_bucket\.storage\.arn\}/([^"]*)"', policy)
    assert resources == ["deploys/*", "stacks/*"]  # not tenants' anon/, not agents' uploads/


def test_builds_role_is_for_eks_pod_identity_only() -> None:
    trust = str(_resource("aws_iam_role", "builds").attributes["assume_role_policy"])
    assert re.findall(r'Service\s*=\s*"([^"]+)"', trust) == ["pods.eks.amazonaws.com"]
    assert re.findall(r'"(sts:\w+)"', trust) == ["sts:AssumeRole", "sts:TagSession"]
    association = _resource("aws_eks_pod_identity_association", "builds").attributes
    assert association["service_account"] == hcl.Expr("var.deploy.build_service_account")
    assert "INSTANODE_KUBE_BUILD_SERVICE_ACCOUNT" in _locals()["app_settings"].text


def test_the_package_carries_no_bytecode(tmp_path: Path) -> None:
    source, target = tmp_path / "chalice.zip", tmp_path / "deployment.zip"
    with zipfile.ZipFile(source, "w") as z:
        z.writestr("app.py", "x = 1\n")
        z.writestr("chalicelib/__pycache__/config.cpython-311.pyc", b"\0")
        z.writestr(zipfile.ZipInfo("chalicelib/config.py", (2020, 1, 1, 0, 0, 0)), "y = 2\n")
    tf.without_bytecode(source, target)
    with zipfile.ZipFile(target) as z:
        assert z.namelist() == ["app.py", "chalicelib/config.py"]
        assert z.getinfo("chalicelib/config.py").date_time == (2020, 1, 1, 0, 0, 0)
        assert z.read("chalicelib/config.py") == b"y = 2\n"
