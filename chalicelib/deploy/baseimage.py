"""A base image made on this machine, for tests and for self-hosters without a registry:
``localhost/instanode/busybox:latest`` is FROM scratch with Debian's static busybox
(busybox-static) and a link per applet (sh, httpd, wget, ...) in /bin."""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path

BUSYBOX_IMAGE = "localhost/instanode/busybox:latest"
_DOCKERFILE = 'FROM scratch\nCOPY rootfs/ /\nENV PATH=/bin\nCMD ["sh"]\n'
_PASSWD = "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n"
_GROUP = "root:x:0:\nnogroup:x:65534:\n"


def ensure_busybox_image(busybox: Path = Path("/bin/busybox")) -> str:
    """Build the image unless podman has it already; returns its name."""
    exists = subprocess.run(["podman", "image", "exists", BUSYBOX_IMAGE], check=False)
    if exists.returncode == 0:
        return BUSYBOX_IMAGE
    with tempfile.TemporaryDirectory(prefix="instanode-busybox-") as tmp:
        context = Path(tmp)
        rootfs = context / "rootfs"
        for folder in ("bin", "etc", "tmp", "www", "root"):
            (rootfs / folder).mkdir(parents=True)
        (rootfs / "tmp").chmod(0o1777)
        (rootfs / "bin" / "busybox").write_bytes(busybox.read_bytes())
        (rootfs / "bin" / "busybox").chmod(0o755)
        applets = subprocess.run(
            [str(busybox), "--list"], capture_output=True, text=True, check=True
        ).stdout.split()
        for applet in applets:
            link = rootfs / "bin" / applet
            if applet != "busybox" and not link.exists():
                link.symlink_to("busybox")
        (rootfs / "etc" / "passwd").write_text(_PASSWD)
        (rootfs / "etc" / "group").write_text(_GROUP)
        (context / "Dockerfile").write_text(_DOCKERFILE)
        built = subprocess.run(
            ["buildah", "bud", "--isolation", "chroot", "--layers=false", "-q"]
            + ["-t", BUSYBOX_IMAGE, str(context)],
            capture_output=True,
            text=True,
            check=False,
        )
    if built.returncode != 0:
        raise RuntimeError(f"building {BUSYBOX_IMAGE} failed: {built.stderr.strip()}")
    return BUSYBOX_IMAGE


if __name__ == "__main__":
    print(ensure_busybox_image())
