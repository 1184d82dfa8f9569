"""Every build runs under memory, CPU and wall-clock limits (real buildah; a hostile build step
that tries to exceed each one)."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator

import pytest

from chalicelib.config import DeploySettings
from chalicelib.deploy.backend import DeployStatus
from chalicelib.deploy.baseimage import BUSYBOX_IMAGE, ensure_busybox_image
from chalicelib.deploy.local import LocalBackend
from tests.functional.test_local_backend import BUCKET, Deployer, context, new_slug

HTTPD = 'CMD ["httpd", "-f", "-p", "8080", "-h", "/"]\n'
LIMITS = {
    "INSTANODE_DEPLOY_BUILD_MEMORY_MB": "96",
    "INSTANODE_DEPLOY_BUILD_CPU_MILLIS": "500",
    "INSTANODE_DEPLOY_BUILD_TIMEOUT": "8",
}


@pytest.fixture(scope="module")
def deployer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployer]:
    ensure_busybox_image()
    deployer = Deployer(tmp_path_factory.mktemp("limited-deploys"))
    env = {
        "INSTANODE_DEPLOY_STATE_DIR": deployer.settings.state_dir,
        "INSTANODE_DEPLOY_PORTS": "41100-41199",
        "INSTANODE_DEPLOY_BUCKET": BUCKET,
        **LIMITS,
    }
    deployer.settings = DeploySettings.from_env(env)
    deployer.backend = LocalBackend(deployer.settings, lambda b, k: deployer.contexts[(b, k)])
    yield deployer
    for slug in deployer.slugs:
        deployer.backend.remove(slug)


def build_log(deployer: Deployer, step: str) -> tuple[DeployStatus, str, str]:
    """Deploy a busybox image with one RUN step: its final status, log and event reason."""
    slug = new_slug()
    deployer.start(slug, 1, context(f"FROM {BUSYBOX_IMAGE}\nRUN {step}\n{HTTPD}"))
    observed = deployer.wait(slug, 1)
    reason = observed.events[0].reason if observed.events else ""
    return observed.status, "\n".join(deployer.backend.logs(slug, 1)), reason


def test_a_build_step_runs_under_the_cpu_and_memory_limits(deployer: Deployer) -> None:
    status, log, _ = build_log(
        deployer,
        "echo cpu $(cat /sys/fs/cgroup/cpu*/cpu.cfs_quota_us | head -1)"
        " mem $(cat /sys/fs/cgroup/memory/memory.limit_in_bytes)",
    )
    assert status == DeployStatus.HEALTHY, log
    assert f"cpu 50000 mem {96 * 1024 * 1024}" in log, log


def test_a_build_step_over_its_memory_limit_is_killed(deployer: Deployer) -> None:
    control, log, _ = build_log(deployer, "dd if=/dev/zero of=/dev/null bs=16M count=1")
    assert control == DeployStatus.HEALTHY, log  # 16 MiB fits in 96

    status, log, _ = build_log(deployer, "dd if=/dev/zero of=/dev/null bs=512M count=1")

    assert status == DeployStatus.FAILED, log
    assert "512+0 records" not in log, log  # dd never got its buffer


def test_a_build_past_its_time_limit_is_stopped_and_says_so(deployer: Deployer) -> None:
    began = time.monotonic()

    status, log, reason = build_log(deployer, "sleep 120")

    assert status == DeployStatus.FAILED and reason == "BuildTimeout", (reason, log)
    assert time.monotonic() - began < 60
    left = subprocess.run(["pgrep", "-f", "sleep 120"], capture_output=True, text=True)
    assert left.stdout.strip() == "", "the build step still runs"
