"""Checkov on the wired Terraform module, each failing check explained in checkov-skips.yaml.

    python -m infra.checkov [DIR]  # DIR: a module with its chalice.tf.json; default: prod, packaged

A check fails the run when it fails and infra/terraform/checkov-skips.yaml does not list it, when
the list gives it no reason, and when a listed check no longer fails anywhere (a stale skip): the
list says exactly why each remaining finding does not apply. A ``#checkov:skip`` comment in a .tf
file fails the run too (the list is the one place for skips), and so does a check that checkov
could not run or a file it could not parse, since those would otherwise pass unseen.

Checkov 3.3.30 cannot evaluate a resource of a Terraform JSON file that has a ``dynamic`` block
(its parser leaves line markers in the block; every check of the resource then raises and is
left out of the report). The scan therefore reads a copy of the module whose .tf.json files have
their ``dynamic`` blocks removed: the Lambdas' ``vpc_config``, which is empty by default
(var.vpc = null), so the copy is the module's default configuration.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
TF_DIR = ROOT / "infra" / "terraform"
SKIPS = TF_DIR / "checkov-skips.yaml"
DEFAULT_DIR = ROOT / "build" / "checkov" / "prod"
FRAMEWORKS = ("terraform", "terraform_json")
MISSING = (
    "checkov not found ($CHECKOV, .venv-checkov/bin/checkov or PATH); "
    "`make tf-check` installs the pinned one into .venv-checkov when PyPI is reachable"
)


@dataclass(frozen=True)
class Finding:
    """One check's result on one resource."""

    check_id: str
    name: str
    resource: str
    file: str
    lines: tuple[int, int]

    def __str__(self) -> str:
        where = f"{self.file.lstrip('/')}:{self.lines[0]}-{self.lines[1]}"
        return f"{self.check_id} {self.resource} ({where}): {self.name}"


@dataclass(frozen=True)
class Scan:
    """What checkov reported: its passed count, its failed and inline-skipped findings, and the
    files it could not parse."""

    passed: int
    failed: tuple[Finding, ...]
    inline_skips: tuple[Finding, ...]
    parsing_errors: tuple[str, ...]


@dataclass(frozen=True)
class Verdict:
    explained: tuple[Finding, ...]  # failed, in the skip list
    unexplained: tuple[Finding, ...]  # failed, not in the skip list
    stale: tuple[str, ...]  # in the skip list, failing nowhere
    unreasoned: tuple[str, ...]  # in the skip list with no reason
    inline_skips: tuple[Finding, ...]  # skipped by a #checkov:skip comment, not by the list
    parsing_errors: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return not (
            self.unexplained
            or self.stale
            or self.unreasoned
            or self.inline_skips
            or self.parsing_errors
        )


class CheckovError(Exception):
    """Checkov did not produce a complete report."""


def load_skips(path: Path = SKIPS) -> dict[str, str]:
    """The skip list: check id -> the reason it does not apply (``""`` when none is given)."""
    doc = yaml.safe_load(path.read_text())
    if not isinstance(doc, dict):
        raise CheckovError(f"{path.name}: expected a mapping of check id to reason")
    return {
        str(check): "" if reason is None else str(reason).strip() for check, reason in doc.items()
    }


def _finding(check: Mapping[str, Any]) -> Finding:
    first, last = check.get("file_line_range") or (0, 0)
    return Finding(
        check_id=check["check_id"],
        name=check.get("check_name", ""),
        resource=check.get("resource", ""),
        file=check.get("file_path", ""),
        lines=(int(first), int(last)),
    )


def parse_report(doc: Any) -> Scan:
    """``checkov -o json``'s output: one framework's report, or a list of them."""
    reports = doc if isinstance(doc, list) else [doc]
    passed, failed, skipped, errors = 0, [], [], []
    for report in reports:
        results = report.get("results", {})
        passed += int(report.get("summary", {}).get("passed", 0))
        failed += [_finding(c) for c in results.get("failed_checks", [])]
        skipped += [_finding(c) for c in results.get("skipped_checks", [])]
        errors += [str(e) for e in results.get("parsing_errors", [])]
    return Scan(passed, tuple(failed), tuple(skipped), tuple(errors))


def compare(scan: Scan, skips: Mapping[str, str]) -> Verdict:
    """The scan's failed checks against the skip list."""
    failing = {f.check_id for f in scan.failed}
    return Verdict(
        explained=tuple(f for f in scan.failed if f.check_id in skips),
        unexplained=tuple(f for f in scan.failed if f.check_id not in skips),
        stale=tuple(sorted(check for check in skips if check not in failing)),
        unreasoned=tuple(sorted(check for check, reason in skips.items() if not reason)),
        inline_skips=scan.inline_skips,
        parsing_errors=scan.parsing_errors,
    )


def summary(scan: Scan, verdict: Verdict) -> str:
    per_check = Counter(f.check_id for f in verdict.explained)
    lines = [
        f"checkov: {scan.passed} passed, {len(verdict.explained)} skipped ({len(per_check)} "
        f"checks explained in {SKIPS.name}), {len(verdict.unexplained)} failed unexplained",
        "  skipped: " + ", ".join(f"{check} x{n}" for check, n in sorted(per_check.items())),
    ]
    lines += [f"  unexplained: {f}" for f in verdict.unexplained]
    lines += [f"  stale skip (fails nowhere now, remove it): {c}" for c in verdict.stale]
    lines += [f"  skip without a reason: {c}" for c in verdict.unreasoned]
    lines += [f"  inline skip (move it to {SKIPS.name}): {f}" for f in verdict.inline_skips]
    lines += [f"  parsing error: {e}" for e in verdict.parsing_errors]
    return "\n".join(lines)


def find_checkov() -> str | None:
    """``$CHECKOV``, else the repository's .venv-checkov, else checkov on PATH."""
    local = ROOT / ".venv-checkov" / "bin" / "checkov"
    return os.environ.get("CHECKOV") or (str(local) if local.exists() else shutil.which("checkov"))


def _without_dynamic_blocks(doc: dict[str, Any]) -> dict[str, Any]:
    for resources in doc.get("resource", {}).values():
        for resource in resources.values():
            resource.pop("dynamic", None)
    return doc


def scan_copy(module_dir: Path, into: Path) -> None:
    for tf in module_dir.glob("*.tf"):
        shutil.copy2(tf, into / tf.name)
    for tf_json in module_dir.glob("*.tf.json"):
        doc = _without_dynamic_blocks(json.loads(tf_json.read_text()))
        (into / tf_json.name).write_text(json.dumps(doc, indent=2))


# checkov logs these (and goes on) when it leaves a check or a block out of its report
_CRASHES = ("Failed to run check", "Failed to add block")


def scan(checkov: str, module_dir: Path) -> Scan:
    """Checkov's Terraform and Terraform JSON checks on the module (offline: no Prisma Cloud
    guidelines, no upload)."""
    with tempfile.TemporaryDirectory(prefix="checkov-") as tmp:
        scan_copy(module_dir, Path(tmp))
        cmd = [checkov, "-d", tmp, "-o", "json", "--quiet", "--skip-download"]
        cmd += ["--framework", *FRAMEWORKS]
        done = subprocess.run(cmd, capture_output=True, text=True)
    crashed = [line for line in done.stderr.splitlines() if any(m in line for m in _CRASHES)]
    if done.returncode not in (0, 1) or crashed:
        raise CheckovError(
            f"{checkov} exited {done.returncode}; checks or blocks it could not evaluate: "
            f"{len(crashed)}\n" + "\n".join(crashed[:5] or done.stderr.splitlines()[-5:])
        )
    try:
        return parse_report(json.loads(done.stdout))
    except ValueError as exc:
        raise CheckovError(f"{checkov} gave no JSON report ({exc}): {done.stdout[:200]!r}") from exc


def run(module_dir: Path) -> tuple[bool, str]:
    """Checkov on ``module_dir`` against the skip list: (ok, the summary to print). Without
    checkov: (True, a ``SKIP`` line saying why)."""
    checkov = find_checkov()
    if checkov is None:
        return True, f"checkov: SKIP {MISSING}"
    try:
        result = scan(checkov, module_dir)
        skips = load_skips()
    except (CheckovError, OSError, yaml.YAMLError) as exc:
        return False, f"checkov: {exc}"
    verdict = compare(result, skips)
    return verdict.ok, summary(result, verdict)


def prepare_default() -> Path:
    """The prod module, packaged into build/checkov/prod beside a copy of infra/terraform/*.tf."""
    from infra import tf  # here, not at the top: infra.tf's check runs this module

    DEFAULT_DIR.mkdir(parents=True, exist_ok=True)
    for old in DEFAULT_DIR.glob("*.tf*"):
        old.unlink()
    for source in TF_DIR.glob("*.tf"):
        shutil.copy2(source, DEFAULT_DIR / source.name)
    tf.package("prod", DEFAULT_DIR)
    return DEFAULT_DIR


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m infra.checkov", description=__doc__.split("\n")[0]
    )
    parser.add_argument(
        "dir", nargs="?", type=Path, help="a wired module (default: prod, packaged)"
    )
    args = parser.parse_args(argv)
    module_dir = args.dir or (prepare_default() if find_checkov() else DEFAULT_DIR)
    ok, detail = run(module_dir)
    print(detail)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
