"""infra/checkov.py: checkov's JSON report against the skip list, and the skip list itself."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from infra import checkov


def _check(check_id: str, resource: str, file_path: str, lines: tuple[int, int]) -> dict[str, Any]:
    """One entry of a report's failed_checks/skipped_checks, as checkov 3.3.30 writes it."""
    return {
        "check_id": check_id,
        "bc_check_id": None,
        "check_name": f"Ensure {check_id} holds",
        "check_result": {"result": "FAILED", "evaluated_keys": []},
        "file_path": file_path,
        "file_abs_path": f"/tmp/checkov-x{file_path}",
        "repo_file_path": file_path,
        "file_line_range": list(lines),
        "resource": resource,
        "check_class": "checkov.terraform.checks.resource.aws.Example",
        "guideline": None,
    }


def _report(
    check_type: str,
    passed: int,
    failed: list[dict[str, Any]],
    skipped: list[dict[str, Any]] | None = None,
    parsing_errors: list[str] | None = None,
) -> dict[str, Any]:
    """One framework's report in `checkov -o json --quiet` (no passed_checks list)."""
    skipped = skipped or []
    return {
        "check_type": check_type,
        "results": {
            "failed_checks": failed,
            "skipped_checks": skipped,
            "parsing_errors": parsing_errors or [],
        },
        "summary": {
            "passed": passed,
            "failed": len(failed),
            "skipped": len(skipped),
            "parsing_errors": len(parsing_errors or []),
            "resource_count": 55,
            "checkov_version": "3.3.30",
        },
        "url": "Add an api key '--bc-api-key <api-key>' to see more detailed insights",
    }


TABLE = _check("CKV_AWS_119", "aws_dynamodb_table.resources", "/dynamodb.tf", (5, 74))
COUNTERS = _check("CKV_AWS_119", "aws_dynamodb_table.counters", "/dynamodb.tf", (97, 120))
LAMBDA = _check("CKV_AWS_50", "resource.reap_expired", "/chalice.tf.json", (71, 109))
DOC = [
    _report("terraform", 78, [TABLE, COUNTERS]),
    _report("terraform_json", 106, [LAMBDA]),
]
SKIPS = {"CKV_AWS_119": "AWS managed key.", "CKV_AWS_50": "No X-Ray."}


def _verdict(doc: Any, skips: dict[str, str]) -> checkov.Verdict:
    return checkov.compare(checkov.parse_report(doc), skips)


def test_every_failure_explained_passes() -> None:
    scan = checkov.parse_report(DOC)
    verdict = checkov.compare(scan, SKIPS)
    assert verdict.ok
    assert (scan.passed, len(verdict.explained)) == (184, 3)
    text = checkov.summary(scan, verdict)
    assert text.startswith("checkov: 184 passed, 3 skipped (2 checks explained")
    assert "CKV_AWS_119 x2, CKV_AWS_50 x1" in text


def test_a_failure_not_in_the_list_fails_and_names_resource_and_file() -> None:
    scan = checkov.parse_report(DOC)
    verdict = checkov.compare(scan, {"CKV_AWS_119": "AWS managed key."})
    assert not verdict.ok
    assert [f.resource for f in verdict.unexplained] == ["resource.reap_expired"]
    assert (
        "unexplained: CKV_AWS_50 resource.reap_expired (chalice.tf.json:71-109)"
        in checkov.summary(scan, verdict)
    )


def test_a_listed_check_that_fails_nowhere_is_stale() -> None:
    verdict = _verdict(DOC, {**SKIPS, "CKV_AWS_21": "Unversioned on purpose."})
    assert not verdict.ok
    assert verdict.stale == ("CKV_AWS_21",)
    assert not verdict.unexplained


def test_a_listed_check_without_a_reason_fails(tmp_path: Path) -> None:
    path = tmp_path / "skips.yaml"
    path.write_text('CKV_AWS_119:\nCKV_AWS_50: "  "\n')
    skips = checkov.load_skips(path)
    assert skips == {"CKV_AWS_119": "", "CKV_AWS_50": ""}
    verdict = _verdict(DOC, skips)
    assert not verdict.ok
    assert verdict.unreasoned == ("CKV_AWS_119", "CKV_AWS_50")


def test_inline_skips_and_parsing_errors_fail() -> None:
    inline = _check("CKV_AWS_18", "aws_s3_bucket.storage", "/s3.tf", (4, 8))
    with_inline = [_report("terraform", 78, [TABLE, COUNTERS], skipped=[inline]), DOC[1]]
    assert _verdict(with_inline, SKIPS).inline_skips[0].check_id == "CKV_AWS_18"
    assert not _verdict(with_inline, SKIPS).ok
    broken = [DOC[0], _report("terraform_json", 0, [LAMBDA], parsing_errors=["/chalice.tf.json"])]
    assert not _verdict(broken, SKIPS).ok


def test_a_single_framework_report_is_a_dict() -> None:
    scan = checkov.parse_report(DOC[0])
    assert scan.passed == 78
    assert [f.lines for f in scan.failed] == [(5, 74), (97, 120)]


def test_the_scan_copy_drops_json_dynamic_blocks_only(tmp_path: Path) -> None:
    module, copy = tmp_path / "module", tmp_path / "copy"
    module.mkdir()
    copy.mkdir()
    (module / "main.tf").write_text("locals { a = 1 }\n")
    function = {
        "function_name": "f",
        "dynamic": {"vpc_config": {"for_each": "${[]}", "content": {"subnet_ids": []}}},
    }
    doc = {"resource": {"aws_lambda_function": {"f": function}}, "locals": {"b": 2}}
    (module / "chalice.tf.json").write_text(json.dumps(doc))
    checkov.scan_copy(module, copy)
    assert (copy / "main.tf").read_text() == "locals { a = 1 }\n"
    scanned = json.loads((copy / "chalice.tf.json").read_text())
    assert scanned == {
        "resource": {"aws_lambda_function": {"f": {"function_name": "f"}}},
        "locals": {"b": 2},
    }


def test_the_skip_list_parses_and_gives_each_check_a_reason() -> None:
    skips = checkov.load_skips()
    assert skips
    for check, reason in skips.items():
        assert re.fullmatch(r"CKV2?_AWS_\d+", check), check
        assert reason.endswith("."), f"{check}: {reason!r}"
        assert len(reason.split()) >= 8, f"{check}: a reason, not a label: {reason!r}"


@pytest.mark.parametrize("text", ["- CKV_AWS_1\n", "just text\n"])
def test_a_skip_list_that_is_not_a_mapping_is_refused(tmp_path: Path, text: str) -> None:
    path = tmp_path / "skips.yaml"
    path.write_text(text)
    with pytest.raises(checkov.CheckovError):
        checkov.load_skips(path)
