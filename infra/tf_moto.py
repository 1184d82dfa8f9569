"""The wired module against a local AWS emulator (moto), as `make tf-check` runs it.

A private moto server on a free port stands in for every AWS endpoint the module uses (an
override file points the provider there, the way terraform-local does). Against it:

1. a prod ``plan`` with the local stack's settings must fail its preconditions, naming them;
2. a prod ``apply`` with production-like settings must create everything but the known moto gaps
   (``MOTO_GAPS``: each with its reason, the resources they hold back printed);
3. every function's environment as Terraform made it, with the secret's value Terraform wrote
   (write-only, from the ephemeral ``app_secret``), must load as the app's ``Settings``, and be
   the production settings asked for (not the local defaults);
4. ``destroy`` must remove everything it made, tables and bucket included (``allow_destroy``).
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

Runner = Callable[[list[str], Path], "tuple[int, str, str]"]

# Errors moto gives where AWS would not, with why; anything else failing the apply is a defect.
MOTO_GAPS = {
    r"Only OpenAPI 3\.x\.x are currently supported": "moto imports a REST API only from OpenAPI "
    "3; API Gateway takes the Swagger 2.0 Chalice writes. The REST API and what hangs on it "
    "(deployment, stage, method settings, gateway responses, the 5xx alarm) are not made.",
}
SERVICES = (
    "apigateway",
    "cloudwatch",
    "dynamodb",
    "events",
    "iam",
    "lambda",
    "logs",
    "s3",
    "secretsmanager",
    "sesv2",
    "sns",
    "sqs",
    "sts",
    "wafv2",
)
JWT_SECRET = "s" * 40  # the secret's value: written by Terraform, never in its state
PRODUCTION_LIKE = {
    "stage": "prod",
    "public_base_url": "https://api.example.com",
    "mail_from": "instanode <noreply@example.com>",
    "deploy": {
        "kube_api_url": "https://k8s.example.com",
        "kube_ca_data": base64.b64encode(b"-----BEGIN CERTIFICATE-----\n").decode(),
        "registry": "registry.example.com/instanode",
        "domain": "apps.example.com",
    },
    "app_secret": json.dumps({"INSTANODE_JWT_SECRET": JWT_SECRET, "INSTANODE_KUBE_TOKEN": "t"}),
    "app_secret_version": 1,
    "allow_destroy": True,
}
REGION = "us-east-1"  # variables.tf's default
LOCAL_LIKE = {
    "stage": "prod",
    "public_base_url": "http://127.0.0.1:8000",
    "mail_from": "instanode <noreply@instanode.localhost>",
    "deploy": {"backend": "local"},
}
_ERROR = re.compile(r"^Error: (.*)$", re.M)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def moto_server() -> Iterator[str]:
    """A private moto server (with AWS's managed IAM policies); its endpoint URL."""
    port = _free_port()
    env = {**os.environ, "MOTO_IAM_LOAD_MANAGED_POLICIES": "true"}
    command = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]
    server = subprocess.Popen(
        command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise RuntimeError("moto server did not start") from None
                time.sleep(0.2)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.terminate()
        server.wait(timeout=10)


def _override(endpoint: str) -> str:
    endpoints = "\n".join(f'    {service} = "{endpoint}"' for service in SERVICES)
    return f"""provider "aws" {{
  region                      = var.region
  access_key                  = "moto"
  secret_key                  = "moto"
  skip_credentials_validation = true
  skip_requesting_account_id  = true
  skip_metadata_api_check     = true
  s3_use_path_style           = true

  endpoints {{
{endpoints}
  }}
}}
"""


def _module(stage_dir: Path, into: Path, endpoint: str) -> Path:
    work = into / "module"
    shutil.copytree(stage_dir, work, ignore=shutil.ignore_patterns(".terraform*", "terraform.*"))
    (work / "moto_override.tf").write_text(_override(endpoint))
    (work / "production.tfvars.json").write_text(json.dumps(PRODUCTION_LIKE))
    (work / "local.tfvars.json").write_text(json.dumps(LOCAL_LIKE))
    return work


def check(run: Runner, stage_dir: Path, mirror: Path) -> tuple[bool, str]:
    """Plan (local settings: refused), apply and destroy (production-like) against moto."""
    with tempfile.TemporaryDirectory(prefix="tf-moto-") as tmp, moto_server() as endpoint:
        work = _module(stage_dir, Path(tmp), endpoint)
        steps = [
            ["init", "-backend=false", f"-plugin-dir={mirror}", "-input=false", "-no-color"],
            ["workspace", "new", "-no-color", "prod"],
        ]
        for args in steps:
            code, out, err = run(args, work)
            if code != 0:
                return False, f"terraform {args[0]} failed:\n{out}{err}"
        refused = _refused_plan(run, work)
        if refused:
            return False, refused
        applied, report = _apply(run, work)
        problems = _settings_problems(endpoint)
        _, state, _ = run(["show", "-json", "-no-color"], work)
        if JWT_SECRET in state:
            problems.append("the app secret's value is in the Terraform state")
        if problems:
            applied, report = False, report + "\n" + "\n".join(f"  {p}" for p in problems)
        else:
            report += (
                "\n  every function's environment + the secret load as the production Settings"
            )
        code, out, err = run(_command("destroy", "production.tfvars.json"), work)
        if code != 0:
            return False, f"{report}\ndestroy failed:\n{_errors(out + err)}"
        _, left, _ = run(["state", "list", "-no-color"], work)
        if left.strip():
            return False, f"{report}\ndestroy left: {left.split()}"
        return applied, f"{report}\n  destroy removed all of it"


def _command(verb: str, var_file: str) -> list[str]:
    return [
        verb,
        "-auto-approve",
        "-input=false",
        "-no-color",
        "-parallelism=8",
        f"-var-file={var_file}",
    ]


def _refused_plan(run: Runner, work: Path) -> str:
    """ "" when a prod plan with the local stack's settings fails on exactly its preconditions."""
    code, out, err = run(["plan", "-input=false", "-no-color", "-var-file=local.tfvars.json"], work)
    text = out + err
    named = ("public_base_url", 'deploy.backend = "kubernetes"')
    if code == 0 or not all(n in text for n in named):
        return "a prod plan with local settings was not refused by its preconditions:\n" + text
    return ""


def _apply(run: Runner, work: Path) -> tuple[bool, str]:
    code, out, err = run(_command("apply", "production.tfvars.json"), work)
    errors = _ERROR.findall(out + err)
    unknown = [e for e in errors if not any(re.search(g, e) for g in MOTO_GAPS)]
    _, listed, _ = run(["state", "list", "-no-color"], work)
    made = [r for r in listed.split() if not r.startswith("data.")]
    lines = [f"  apply made {len(made)} resources against moto"]
    lines += [f"  moto gap: {reason}" for gap, reason in MOTO_GAPS.items() if _hit(gap, errors)]
    if unknown:
        lines.append("  apply failed:\n" + _errors(out + err))
    return not unknown and (code == 0 or bool(errors)), "\n".join(lines)


def _hit(gap: str, errors: list[str]) -> bool:
    return any(re.search(gap, e) for e in errors)


def _errors(text: str) -> str:
    return "\n".join(f"    {e}" for e in _ERROR.findall(text)) or text[-2000:]


def _settings_problems(endpoint: str) -> list[str]:
    """Each function's environment, as a cold start in Lambda reads it (the secret's value
    through the moto endpoint), loaded with the app's own ``Settings.from_env``."""
    import boto3
    from botocore.exceptions import ClientError

    from chalicelib.config import Settings
    from chalicelib.errors import ConfigError

    aws = {"AWS_ENDPOINT_URL": endpoint, "AWS_DEFAULT_REGION": REGION}
    aws |= {"AWS_ACCESS_KEY_ID": "moto", "AWS_SECRET_ACCESS_KEY": "moto"}
    saved = {k: os.environ.get(k) for k in aws}
    os.environ.update(aws)
    try:
        functions = boto3.client("lambda").list_functions()["Functions"]
        problems = [] if functions else ["apply made no function"]
        for function in functions:
            name, env = function["FunctionName"], function["Environment"]["Variables"]
            try:
                settings = Settings.from_env(env)
            except (ConfigError, ClientError) as exc:
                problems.append(f"{name}: its settings do not load: {exc}")
                continue
            wanted = (PRODUCTION_LIKE["public_base_url"], "kubernetes", f"ses://{REGION}")
            found = (settings.public_base_url, settings.deploy.backend, settings.mail_url)
            if found != wanted:
                problems.append(f"{name}: settings {found}, not the production {wanted}")
        return problems
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
