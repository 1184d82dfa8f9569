"""Least privilege, checked against what the code does: each Lambda function does its work here
(the API a tour of its routes, each scheduled job the cases it handles, through app.py's own
handlers) while every AWS call, presigned URL and presigned POST is recorded as IAM actions on
ARNs (tests/aws_access.py). The function's own policy (policies/<function>.json, rendered for
the test stack) must allow every one, and each of its grants must be needed by one: a missing
permission fails as surely as a spare one. The statements the Lambda service itself uses (the
function's log stream, the scheduled jobs' dead-letter queue) are checked by their shape.
"""

from __future__ import annotations

import html
import json
import re
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from email.utils import parseaddr
from typing import Any

import boto3
import pytest
import requests
from chalice.test import Client
from moto.ses.models import ses_backends

import app as app_module
from chalicelib import deps
from chalicelib.models import Kind
from chalicelib.providers import storage
from devstack.stack import ROOT
from tests.aws_access import Access, Policy, Where, record
from tests.functional.accounts_fixtures import call, follow, new_email, session_of
from tests.functional.conftest import scan, settings
from tests.functional.test_deploys import deploy, site
from tests.functional.test_deploys_kube import kube_team
from tests.functional.test_kube_backend import SPEC, ClusterThread, cluster, fail_build
from tests.functional.test_stacks import TWO, new_stack

__all__ = ["cluster", "kube_team"]  # fixtures, imported for pytest

ACCOUNT = "123456789012"  # moto's
REGION = "us-east-1"  # the test stack's
SCHEDULED = tuple(sorted(s.name for s in app_module.app.event_sources))
FUNCTIONS = ("api_handler", *SCHEDULED)
PLATFORM_SIDS = frozenset({"LambdaLogs", "JobFailures"})  # the Lambda service's, not the code's
PAST = 1_000_000  # an expiry long gone


def rendered(function: str, values: dict[str, str]) -> str:
    text = (ROOT / "policies" / f"{function}.json").read_text()
    for name, value in values.items():
        text = text.replace("${" + name + "}", value)
    return text


def values_for(env: dict[str, str]) -> dict[str, str]:
    return {
        "partition": "aws",
        "region": env["AWS_DEFAULT_REGION"],
        "account_id": ACCOUNT,
        "prefix": env["INSTANODE_TABLE_PREFIX"],
        "mail_from_address": parseaddr(env["INSTANODE_MAIL_FROM"])[1],
    }


# -- the files -------------------------------------------------------------------------------


def test_every_function_has_a_policy_file_of_its_own() -> None:
    config = json.loads((ROOT / ".chalice" / "config.json").read_text())
    files = {name: cfg.get("iam_policy_file") for name, cfg in config["lambda_functions"].items()}
    assert files == {f: f"../policies/{f}.json" for f in FUNCTIONS}
    assert sorted(p.stem for p in (ROOT / "policies").glob("*.json")) == sorted(FUNCTIONS)
    for stage in config["stages"].values():
        assert "iam_policy_file" not in stage  # a stage's file would win over the functions'


@pytest.mark.parametrize("function", FUNCTIONS)
def test_the_lambda_services_statements_are_the_functions_own(function: str) -> None:
    values = {"partition": "aws", "region": "r", "account_id": "1", "prefix": "p"}
    doc = json.loads(rendered(function, values | {"mail_from_address": "m@x"}))
    by_sid = {s["Sid"]: s for s in doc["Statement"]}
    log_stream = f"arn:aws:logs:r:1:log-group:/aws/lambda/p-{function}:*"
    if function == "api_handler":  # chalice names the API's function after the app alone
        log_stream = "arn:aws:logs:r:1:log-group:/aws/lambda/p:*"
    assert by_sid["LambdaLogs"]["Action"] == ["logs:CreateLogStream", "logs:PutLogEvents"]
    assert by_sid["LambdaLogs"]["Resource"] == [log_stream]  # Terraform made the group
    if function in SCHEDULED:  # on-failure destination of the asynchronous invocations
        assert by_sid["JobFailures"]["Action"] == ["sqs:SendMessage"]
        assert by_sid["JobFailures"]["Resource"] == ["arn:aws:sqs:r:1:p-jobs-dlq"]
    else:
        assert "JobFailures" not in by_sid


# -- the functions at work -------------------------------------------------------------------


@pytest.fixture
def aws(app_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The settings come from the app's secret (as in AWS), and mail goes through SES."""
    env = dict(app_env)
    secret = boto3.client("secretsmanager").create_secret(
        Name=f"{env['INSTANODE_TABLE_PREFIX']}-app",
        SecretString=json.dumps({"INSTANODE_JWT_SECRET": env["INSTANODE_JWT_SECRET"]}),
    )
    sender = parseaddr(env["INSTANODE_MAIL_FROM"])[1]
    boto3.client("ses").verify_email_identity(EmailAddress=sender)
    monkeypatch.setenv("INSTANODE_SECRETS_ARN", secret["ARN"])
    monkeypatch.delenv("INSTANODE_JWT_SECRET")
    monkeypatch.setenv("INSTANODE_MAIL_URL", f"ses://{env['AWS_DEFAULT_REGION']}")
    deps.reset()
    return env


@contextmanager
def cold_start(monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> Iterator[list[Access]]:
    """What a function asks of AWS from a cold start (its settings read from the secret) on."""
    deps.reset()
    with record(monkeypatch, Where("aws", env["AWS_DEFAULT_REGION"], ACCOUNT)) as used:
        yield used


def ses_link(email: str) -> str:
    """The first link in the newest mail SES (moto) took for ``email`` (moto keeps the HTML
    part where there is one)."""
    sent = ses_backends[ACCOUNT][REGION].sent_messages
    body = next(m.body for m in reversed(sent) if email in m.destinations["ToAddresses"])
    found = re.search(r"https?://[^\s\"<>]+", body)
    assert found, body
    return html.unescape(found.group(0))


def claimed(client: Client, upgrade_jwt: str) -> str:
    """Claim by email (sent through SES); the session token."""
    email = new_email()
    assert call(client, "POST", "/claim", {"token": upgrade_jwt, "email": email}).status == 200
    return session_of(follow(client, ses_link(email)))


def judge(function: str, env: dict[str, str], used: list[Access]) -> None:
    policy = Policy.parse(rendered(function, values_for(env)))
    missing = policy.missing(used)
    code_sids = {g.sid for g in policy.grants} - PLATFORM_SIDS
    unused = policy.unused(used, code_sids)
    report = [f"  missing: {a}" for a in missing] + [
        f"  unused:  {g.action} on {g.resource} (statement {g.sid})" for g in unused
    ]
    assert not report, f"policies/{function}.json against what it did:\n" + "\n".join(report)


def run_job(name: str) -> Any:
    """The scheduled function as Lambda calls it, with an EventBridge schedule event."""
    event = {
        "version": "0",
        "id": "0",
        "detail-type": "Scheduled Event",
        "source": "aws.events",
        "account": ACCOUNT,
        "time": "2026-12-04T00:00:00Z",
        "region": "us-east-1",
        "resources": [],
        "detail": {},
    }
    return getattr(app_module, name)(event, None)


def age(table: str, key: dict[str, str], attribute: str = "expires_at") -> None:
    """Make a record due now (its expiry long past), behind the code's back."""
    dynamo = deps.get_dynamo()
    dynamo.client.update_item(
        TableName=table,
        Key={k: {"S": v} for k, v in key.items()},
        UpdateExpression=f"SET {attribute} = :past",
        ExpressionAttributeValues={":past": {"N": str(PAST)}},
    )


@dataclass(frozen=True)
class OnCluster:
    """A Hobby team deploying to the emulated cluster, with the settings of the ``aws`` fixture
    (in that order: the team signs in through the stack's SMTP server first)."""

    token: str
    cluster: ClusterThread
    env: dict[str, str]


@pytest.fixture
def on_cluster(kube_team: str, cluster: ClusterThread, aws: dict[str, str]) -> OnCluster:
    return OnCluster(kube_team, cluster, aws)


KINDS = ("/db/new", "/vector/new", "/cache/new", "/nosql/new", "/queue/new", "/storage/new")


def anonymous_resources(client: Client) -> list[dict[str, Any]]:
    made = [call(client, "POST", path, {"name": "iam"}) for path in (*KINDS, "/webhook/new")]
    assert [r.status for r in made] == [201] * len(made), made
    return [r.body for r in made]


def test_api_handler(
    on_cluster: OnCluster, client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    kube_team, aws = on_cluster.token, on_cluster.env

    def ok(
        method: str, path: str, body: Any = None, *, statuses: tuple[int, ...] = (200,), **kw: Any
    ) -> Any:
        reply = call(client, method, path, body, **kw)
        assert reply.status in statuses, (method, path, reply)
        return reply.body

    with cold_start(monkeypatch, aws) as used:
        ok("GET", "/readyz")
        made = anonymous_resources(client)
        for _ in range(2):  # made, then replayed
            ok("POST", "/db/new", {"name": "x"}, statuses=(201,), Idempotency_Key="iam-1")
        storage, hook = made[-2], made[-1]
        for op in (
            {"operation": "GET"},
            {"operation": "PUT", "content_length": 1},
            {"operation": "POST"},
        ):
            ok("POST", f"/storage/{storage['token']}/presign", {"key": "a", **op})
        ok("POST", f"/webhook/receive/{hook['token']}", {"a": 1})
        # a team: claimed by email (through SES), its resources, keys and a CLI sign-in
        token = claimed(client, made[0]["upgrade_jwt"])
        ok("GET", f"/api/v1/webhooks/{hook['token']}/requests", bearer=token)
        listed = ok("GET", "/api/v1/resources", bearer=token)["items"]
        first = f"/api/v1/resources/{listed[0]['id']}"
        ok("GET", first, bearer=token)
        ok("POST", f"{first}/rotate-credentials", bearer=token)
        for resource in listed:  # every kind's removal
            ok("DELETE", f"/api/v1/resources/{resource['id']}", bearer=token)
        ok("POST", "/api/v1/api-keys", {"name": "ci"}, statuses=(201,), bearer=token)
        ok("GET", "/api/v1/api-keys", bearer=token)
        ok("GET", "/auth/me", bearer=token)
        device = ok("POST", "/auth/cli")
        approval = {"user_code": device["user_code"]}
        ok("POST", f"/auth/cli/{device['session_id']}/approve", approval, bearer=token)
        ok("GET", f"/auth/cli/{device['session_id']}")
        # an app on the cluster: deployed, read, changed, redeployed, deleted
        app = deploy(client, kube_team, site("v1"), name="iam")
        assert app.status == 202, app
        ok("POST", "/deploy/upload-url", {}, bearer=kube_team)
        path = f"/api/v1/deployments/{app.body['id']}"
        for read in (
            path,
            "/api/v1/deployments",
            f"{path}/events",
            f"/deploy/{app.body['id']}/logs",
        ):
            ok("GET", read, bearer=kube_team)
        changes = {"env_vars": {"A": "1"}}
        ok("PATCH", f"/deploy/{app.body['id']}/env", changes, statuses=(200, 202), bearer=kube_team)
        again = deploy(client, kube_team, site("v2"), name="iam", redeploy="true")
        assert again.status == 202, again
        skip = {"X_Skip_Email_Confirmation": "yes"}
        ok("DELETE", path, statuses=(200, 202), bearer=kube_team, **skip)
        # a stack: made, read, changed, deleted
        stacked = new_stack(client, TWO, {"web": site("w"), "api": site("a")}, token=kube_team)
        assert stacked.status == 202, stacked
        slug = stacked.body["slug"]
        ok("GET", f"/api/v1/stacks/{slug}", bearer=kube_team)
        ok("PATCH", f"/stacks/{slug}/env", changes, statuses=(200, 202), bearer=kube_team)
        ok("DELETE", f"/api/v1/stacks/{slug}", statuses=(200, 202), bearer=kube_team, **skip)
    judge("api_handler", aws, used)


def test_reap_expired(aws: dict[str, str], client: Client, monkeypatch: pytest.MonkeyPatch) -> None:
    s = settings()
    made = anonymous_resources(client)
    storage, hook = made[-2], made[-1]
    assert call(client, "POST", f"/webhook/receive/{hook['token']}", {"a": 1}).status == 200
    put = {"operation": "PUT", "key": "a", "content_length": 1}
    signed = call(client, "POST", f"/storage/{storage['token']}/presign", put).body
    assert requests.put(signed["url"], data=b"x", timeout=10).status_code == 200
    for body in made:
        age(s.resources_table, {"id": body["id"]})
    with cold_start(monkeypatch, aws) as used:
        report = run_job("reap_expired")
    assert report["expired"] == len(KINDS) + 1 and report["failed"] == 0, report
    judge("reap_expired", aws, used)


def test_enforce_quotas(
    aws: dict[str, str], client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    anonymous_resources(client)
    with cold_start(monkeypatch, aws) as used:
        report = run_job("enforce_quotas")
    assert report["failed"] == 0, report
    judge("enforce_quotas", aws, used)


def test_reconcile_backends(
    aws: dict[str, str], client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Known resources, an orphan prefix seen an hour ago (removed now) and whatever else the
    shared bucket holds (new suspects only: the grace keeps the other tiers' objects)."""
    anonymous_resources(client)
    backend = settings().backends[Kind.STORAGE][0]
    orphan = f"anon/s_{secrets.token_hex(10)}"
    with storage.admin_client(backend) as s3:
        s3.put_object(Bucket=storage.bucket_of(backend), Key=f"{orphan}/left.txt", Body=b"x")
    ledger = {"pk": f"reconcile#{Kind.STORAGE.value}#{backend.name}"}
    deps.get_dynamo().put_item(settings().counters_table, ledger | {"suspects": {orphan: PAST}})
    with cold_start(monkeypatch, aws) as used:
        report = run_job("reconcile_backends")
    assert report["failed"] == 0 and report["removed"] >= 1, report
    judge("reconcile_backends", aws, used)


def test_deliver_mail(aws: dict[str, str], client: Client, monkeypatch: pytest.MonkeyPatch) -> None:
    ses = boto3.client("ses")
    sender = parseaddr(aws["INSTANODE_MAIL_FROM"])[1]
    ses.delete_identity(Identity=sender)  # SES refuses: the message waits in the outbox
    assert call(client, "POST", "/auth/email/start", {"email": new_email()}).status == 200
    ses.verify_email_identity(EmailAddress=sender)
    (pending,) = [i for i in scan(deps.get_dynamo(), settings().accounts_table) if "pending" in i]
    age(settings().accounts_table, {"pk": pending["pk"]}, "created_at")
    with cold_start(monkeypatch, aws) as used:
        report = run_job("deliver_mail")
    assert report == {"sent": 1, "failed": 0}
    judge("deliver_mail", aws, used)


def test_deploy_jobs(
    on_cluster: OnCluster, client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    kube_team, cluster, aws = on_cluster.token, on_cluster.cluster, on_cluster.env
    s = settings()
    anonymous = new_stack(client, TWO, {"web": site("w"), "api": site("a")})
    assert anonymous.status == 202, anonymous
    age(s.stacks_table, {"slug": anonymous.body["slug"]})
    team = call(client, "GET", "/auth/me", bearer=kube_team).body["team"]["id"]
    deps.get_teams().set_tier(team, "pro")
    building = deploy(client, kube_team, site("v1"), name="building", ttl_policy="auto_24h").body
    failing = deploy(client, kube_team, site("v1"), name="failing", ttl_policy="auto_24h").body
    fail_build(cluster, replace(SPEC, slug=failing["slug"], revision=1), ["error"], 1)
    with cold_start(monkeypatch, aws) as polled:
        run_job("poll_deploys")
    age(s.deployments_table, {"id": building["id"]})
    with cold_start(monkeypatch, aws) as reaped:
        report = run_job("reap_deploys")
    assert (report["expired"], report["stacks_expired"], report["failed"]) == (1, 1, 0), report
    judge("poll_deploys", aws, polled)
    judge("reap_deploys", aws, reaped)
