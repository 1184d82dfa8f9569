"""Import time of ``app`` against ``chalice, boto3``, in fresh interpreters: in the source tree
(``measure_imports``, part of ``bench.provision``) and as the Lambda runs it, from the unzipped
deployment package (``measure_packaged``; ``python -m bench.imports [--n 9] [--against OLD.zip]``,
no stack)."""

from __future__ import annotations

import argparse
import importlib.util
import re
import subprocess
import sys
import tempfile
import zipfile
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from bench.meters import Stats, interleaved, stats_of
from devstack.stack import ROOT
from infra.tf import package

APP, BASE = "app", "chalice, boto3"
IMPORT_SUBJECTS = (APP, BASE)
IMPORT_REPEATS = 9
LAZY_DRIVERS = ("pg8000",)  # backend drivers `import app` must not pull in
IMPORT_PROBE = "import time; t = time.perf_counter(); import {}; print(time.perf_counter() - t)"
IMPORTTIME_LINE = re.compile(r"import time:\s+(?P<self>\d+) \|\s+\d+ \|\s*(?P<name>\S+)")


@dataclass(frozen=True)
class Imports:
    times: dict[str, Stats]
    extra_ms: list[tuple[str, float]]  # top-level packages `app` adds, by self time
    eager_drivers: list[str]

    @property
    def ratio(self) -> float:
        return self.times[APP].p50 / self.times[BASE].p50


def _python(*args: str) -> subprocess.CompletedProcess[str]:
    """A fresh interpreter in the repo root, with the stack's environment."""
    return subprocess.run(
        [sys.executable, *args], cwd=ROOT, capture_output=True, text=True, check=True
    )


def import_ms(modules: str) -> float:
    return float(_python("-c", IMPORT_PROBE.format(modules)).stdout) * 1000


def importtime(modules: str) -> dict[str, int]:
    """Module name -> self import time in microseconds, from one ``-X importtime`` run."""
    err = _python("-X", "importtime", "-c", f"import {modules}").stderr
    return {m["name"]: int(m["self"]) for m in map(IMPORTTIME_LINE.match, err.splitlines()) if m}


def measure_imports(top: int = 6) -> Imports:
    probes = {s: partial(import_ms, s) for s in IMPORT_SUBJECTS}
    times = stats_of(interleaved(probes, IMPORT_REPEATS))
    app, base = importtime(APP), importtime(BASE)
    extra: Counter[str] = Counter()
    for name, us in app.items():
        if name not in base:
            extra[name.split(".")[0]] += us
    eager = [d for d in LAZY_DRIVERS if d in app]
    return Imports(times, [(pkg, us / 1000) for pkg, us in extra.most_common(top)], eager)


# --- the packaged API handler ---------------------------------------------------------------

PACKAGE_STAGE = "dev"
MB = 1_000_000
# The Lambda Python runtime provides boto3 and what it needs on sys.path after the function's
# code (/var/task), so deployment.zip does not hold them. They are linked here from this venv one
# by one (not the venv's site-packages, whose dev tools and packages dropped from
# requirements.txt would hide a missing runtime dependency); the zip's own copy comes first, as
# on Lambda.
LAMBDA_RUNTIME = ("boto3", "botocore", "jmespath", "s3transfer", "dateutil", "urllib3", "six")
# the first deploy call and the first sealed record import the deploy client and the cipher
FIRST_USE = (
    "from chalicelib.config import DeploySettings; from chalicelib.deploy.kube import KubeBackend;"
    " from chalicelib.sealing import Sealer; s = Sealer('s' * 40); s.open(s.seal(b'x', 'k'), 'k');"
    " KubeBackend(DeploySettings.from_env({'INSTANODE_KUBE_API_URL': 'https://k:6443'}))._kube"
)
PACKAGED_SUBJECTS = {APP: APP, BASE: BASE, "app + first deploy, seal": f"app; {FIRST_USE}"}


@dataclass(frozen=True)
class Packaged:
    """One deployment.zip: its import times (by PACKAGED_SUBJECTS label) and sizes."""

    label: str
    times: dict[str, Stats]
    zipped_mb: float
    unzipped_mb: float
    top_mb: list[tuple[str, float]]  # the zip's top-level entries by unzipped size


def packaged_import_ms(task: Path, runtime: Path, modules: str) -> float:
    """``import modules`` from the unzipped package in a fresh interpreter: no site-packages,
    no PYTHON* variables, no user site (``-I -S``), and no bytecode written (``-B``): /var/task
    is read-only, so Lambda compiles the package's modules at every cold start."""
    probe = f"import sys; sys.path[:0] = {[str(task), str(runtime)]!r}; " + IMPORT_PROBE
    cmd = [sys.executable, "-I", "-S", "-B", "-c", probe.format(modules)]
    done = subprocess.run(cmd, cwd=task, capture_output=True, text=True, check=True)
    return float(done.stdout) * 1000


def link_runtime(into: Path) -> None:
    for name in LAMBDA_RUNTIME:
        spec = importlib.util.find_spec(name)
        assert spec is not None and spec.origin is not None, name
        origin = Path(spec.origin)
        source = origin.parent if spec.submodule_search_locations else origin
        (into / source.name).symlink_to(source)


def zip_sizes(zip_path: Path, top: int) -> tuple[float, list[tuple[str, float]]]:
    by_top: Counter[str] = Counter()
    for info in zipfile.ZipFile(zip_path).infolist():
        by_top[info.filename.split("/")[0]] += info.file_size
    return sum(by_top.values()) / MB, [(name, n / MB) for name, n in by_top.most_common(top)]


def measure_packaged(
    repeats: int = IMPORT_REPEATS, against: Path | None = None, top: int = 12
) -> list[Packaged]:
    """This tree's package (built now), and the deployment.zip ``against`` if given (e.g. an
    older build), their runs interleaved."""
    with tempfile.TemporaryDirectory(prefix="bench-package-") as tmp:
        root = Path(tmp)
        package(PACKAGE_STAGE, root / "out")
        zips = {"this tree": root / "out" / "deployment.zip"}
        if against is not None:
            zips[str(against)] = against
        runtime = root / "runtime"
        runtime.mkdir()
        link_runtime(runtime)
        probes = {}
        for i, (label, zip_path) in enumerate(zips.items()):
            task = root / f"task{i}"
            zipfile.ZipFile(zip_path).extractall(task)
            for subject, modules in PACKAGED_SUBJECTS.items():
                probes[f"{label}: {subject}"] = partial(packaged_import_ms, task, runtime, modules)
        samples = stats_of(interleaved(probes, repeats))
        found = []
        for label, zip_path in zips.items():
            times = {subject: samples[f"{label}: {subject}"] for subject in PACKAGED_SUBJECTS}
            unzipped, top_mb = zip_sizes(zip_path, top)
            found.append(Packaged(label, times, zip_path.stat().st_size / MB, unzipped, top_mb))
        return found


def packaged_lines(p: Packaged) -> list[str]:
    n = p.times[APP].n
    lines = [
        f"packaged API handler, {p.label} (stage {PACKAGE_STAGE}), fresh interpreters, p50 of {n}:"
    ]
    lines += [f"  import {label:<26}{s.p50:7.1f} ms" for label, s in p.times.items()]
    lines.append(
        f"  import app / import chalice, boto3: {p.times[APP].p50 / p.times[BASE].p50:.2f}x"
    )
    lines.append(f"  deployment.zip {p.zipped_mb:.1f} MB, unzipped {p.unzipped_mb:.1f} MB")
    lines.append("  largest top-level entries (MB, unzipped):")
    lines += [f"    {name:<48}{mb:6.2f}" for name, mb in p.top_mb]
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.imports", description=__doc__)
    parser.add_argument("--n", type=int, default=IMPORT_REPEATS, help="interleaved runs")
    parser.add_argument(
        "--against", type=Path, help="another deployment.zip to measure too (an older build)"
    )
    args = parser.parse_args(argv)
    for found in measure_packaged(args.n, args.against):
        print("\n".join(packaged_lines(found)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
