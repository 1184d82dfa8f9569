"""A deploy's build context as the API takes it: a gzipped tar of a directory with its
``Dockerfile`` at the root, leaving out what ``.dockerignore`` excludes.

The API refuses (400 ``invalid_tarball``) absolute or escaping links, special files and names
with backslashes or control characters, so those are refused here first, naming the file;
sockets and FIFOs are skipped (Docker leaves them out too). Owners and modes of the files are
not sent: entries are root's, files 0644 or 0755, directories 0755.
"""

from __future__ import annotations

import gzip
import io
import os
import posixpath
import stat
import tarfile
from pathlib import Path

from instanode.dockerignore import Matcher
from instanode.errors import InstanodeError

ALWAYS_SENT = ("Dockerfile", ".dockerignore")  # as Docker sends them, even when ignored


def source_bytes(source: str | os.PathLike[str] | bytes) -> bytes:
    """The gzipped tarball of ``source``: the bytes themselves, a tarball file, or a directory
    tarred here."""
    if isinstance(source, bytes):
        return source
    path = Path(source)
    if path.is_dir():
        return tar_directory(path)
    return path.read_bytes()


def tar_directory(root: Path) -> bytes:
    matcher = Matcher.of_context(root)
    buf = io.BytesIO()
    # mtime=0 and sorted entries: the same tree gives the same bytes (and the same fingerprint)
    with (
        gzip.GzipFile(fileobj=buf, mode="wb", mtime=0) as gz,
        tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar,
    ):
        for name in _members(root, matcher):
            _add(tar, root, name)
    return buf.getvalue()


def _members(root: Path, matcher: Matcher) -> list[str]:
    """The relative names to send, parents before children."""
    names: list[str] = []
    for dirpath, dirnames, filenames in os.walk(root):
        rel = Path(dirpath).relative_to(root).as_posix()
        prefix = "" if rel == "." else rel + "/"
        kept_dirs = []
        for d in sorted(dirnames):
            name = prefix + d
            if (root / name).is_symlink():
                filenames.append(d)  # a link to a directory is sent as the link
            elif not matcher.ignored(name):
                names.append(name)
                kept_dirs.append(d)
            elif matcher.has_exclusions:
                kept_dirs.append(d)  # a "!" pattern may take something below it back
        dirnames[:] = kept_dirs
        for f in sorted(filenames):
            name = prefix + f
            if not matcher.ignored(name) or name in ALWAYS_SENT:
                names.append(name)
    return names


def _add(tar: tarfile.TarFile, root: Path, name: str) -> None:
    _check_name(name)
    path = root / name
    st = path.lstat()
    info = tarfile.TarInfo(name)
    info.mtime = int(st.st_mtime)
    if stat.S_ISLNK(st.st_mode):
        info.type = tarfile.SYMTYPE
        info.linkname = _link_target(name, os.readlink(path))
        info.mode = 0o777
        tar.addfile(info)
    elif stat.S_ISDIR(st.st_mode):
        info.type = tarfile.DIRTYPE
        info.mode = 0o755
        tar.addfile(info)
    elif stat.S_ISREG(st.st_mode):
        info.size = st.st_size
        info.mode = 0o755 if st.st_mode & stat.S_IXUSR else 0o644
        with path.open("rb") as handle:
            tar.addfile(info, handle)
    elif stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
        raise _refused(name, "is a device file; a build context may hold only files and links")


def _link_target(name: str, target: str) -> str:
    inside = posixpath.normpath(posixpath.join(posixpath.dirname(name), target))
    if target.startswith("/") or inside == ".." or inside.startswith("../"):
        raise _refused(
            name, f"is a symbolic link to {target!r}, outside the directory being deployed"
        )
    return target


def _check_name(name: str) -> None:
    if any(c == "\\" or ord(c) < 32 or 127 <= ord(c) < 160 for c in name):
        raise _refused(name, "has a backslash or a control character in its name")


def _refused(name: str, why: str) -> InstanodeError:
    return InstanodeError(
        0,
        "invalid_tarball",
        f"{name!r} {why}.",
        agent_action=f"Remove or replace {name!r}, or list it in .dockerignore, then deploy again.",
    )
