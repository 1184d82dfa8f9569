"""The build context an agent uploads: a gzipped tar with a Dockerfile at its root.

``inspect`` validates it without extracting anything (the archive is streamed once, member sizes
are counted from the headers before any data is decompressed, and the decompressed stream itself
is capped), and ``extract`` unpacks a context that passes into an empty directory. Every refusal
is an ``ApiError`` the agent can act on: 413 ``tarball_too_large``, 400 ``invalid_tarball`` or
400 ``dockerfile_not_found``.
"""

from __future__ import annotations

import gzip
import io
import posixpath
import tarfile
import zlib
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

from chalicelib.errors import DockerfileNotFoundError, InvalidTarballError, TarballTooLargeError

MAX_MEMBERS = 10_000
EXPANSION_FACTOR = 10  # the unpacked members may total at most this many times the cap
DOCKERFILE_MAX_BYTES = 64 << 10
DEFAULT_MAX_BYTES = 10 << 20  # the documented upload cap, used by ``extract`` when none is given
# Headers (with pax or long-name blocks) and end padding on top of the members' own bytes.
_HEADER_ALLOWANCE = (MAX_MEMBERS + 10) * 4 * tarfile.BLOCKSIZE

MAKE_IT = "Create it with `tar -czf app.tar.gz -C <dir> .` where <dir> holds the Dockerfile."
SLIM_IT = (
    "Slim the upload: leave out node_modules, .git, virtualenvs and build outputs "
    "(`tar -czf app.tar.gz --exclude=node_modules --exclude=.git -C <dir> .`); "
    "for a context up to your tier's cap that a request body cannot carry, "
    "upload it through the presigned path `POST /deploy/upload-url`."
)
# What an upload that is not gzip usually is, by its first bytes.
_SPECIAL = {
    tarfile.CHRTYPE: "character device",
    tarfile.BLKTYPE: "block device",
    tarfile.FIFOTYPE: "FIFO",
}
_OTHER_FORMATS = {
    b"PK\x03\x04": "a zip archive",
    b"BZh": "bzip2-compressed",
    b"\xfd7zXZ\x00": "xz-compressed",
    b"\x28\xb5\x2f\xfd": "zstd-compressed",
}


@dataclass(frozen=True)
class Context:
    dockerfile: str  # its text (UTF-8, undecodable bytes replaced), at most 64 KiB of it
    files: int  # regular files in the archive
    uncompressed_bytes: int  # the members' sizes added up


def inspect(data: bytes, max_bytes: int) -> Context:
    """Validate the gzipped tarball ``data`` against a cap of ``max_bytes`` (compressed)."""
    if len(data) > max_bytes:
        raise TarballTooLargeError(
            f"The build context is {len(data):,} bytes, over the {_mb(max_bytes)} MB cap "
            f"({max_bytes:,} bytes).",
            agent_action=SLIM_IT,
        )
    _check_gzip(data)
    scan = _Scan(expansion_limit=EXPANSION_FACTOR * max_bytes)
    stream = _CappedReader(gzip.GzipFile(fileobj=io.BytesIO(data)), scan.expansion_limit)
    try:
        with tarfile.open(fileobj=stream, mode="r|") as tar:
            for member in tar:
                scan.add(member, tar)
            stop = tar.offset
        stream.check_rest_is_padding(stop)
    except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
        raise _unreadable(exc) from exc
    return scan.finish()


def extract(data: bytes, dest: Path, *, max_bytes: int | None = None) -> None:
    """Unpack the build context ``data`` into the empty (or missing) directory ``dest``.

    ``data`` is inspected again first; ``max_bytes`` defaults to the larger of its size and
    ``DEFAULT_MAX_BYTES`` (it was checked against the tier's cap when it was uploaded).
    """
    inspect(data, max_bytes if max_bytes is not None else max(len(data), DEFAULT_MAX_BYTES))
    dest.mkdir(parents=True, exist_ok=True)
    if any(dest.iterdir()):
        raise ValueError(f"{dest} is not empty")
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
            tar.extractall(dest, filter="data")
    except tarfile.FilterError as exc:
        raise _invalid(f"The archive cannot be unpacked safely: {exc}.") from exc


@dataclass
class _Scan:
    """What has been seen so far of one archive, member by member."""

    expansion_limit: int
    members: int = 0
    files: int = 0
    total: int = 0
    dockerfile: str | None = None
    kinds: dict[str, str] = field(default_factory=dict)  # normalised name -> kind
    symlinks: set[str] = field(default_factory=set)
    top: dict[str, None] = field(default_factory=dict)  # top-level names, in order

    def add(self, member: tarfile.TarInfo, tar: tarfile.TarFile) -> None:
        self.members += 1
        if self.members > MAX_MEMBERS:
            raise _invalid(f"The archive has more than {MAX_MEMBERS:,} entries.", SLIM_IT)
        name = _normalise(member.name)
        kind = _kind(member)
        if not name and kind != "dir":
            raise _invalid(f"An archive entry has an empty name ({member.name!r}).")
        self.total += member.size
        if self.total > self.expansion_limit:
            raise _invalid(
                f"The archive unpacks to more than {_mb(self.expansion_limit)} MB "
                f"({EXPANSION_FACTOR}x the cap): a gzip bomb, or large generated files.",
                SLIM_IT,
            )
        if self.kinds.setdefault(name, kind) != kind:
            raise _invalid(f"{name!r} appears twice, as a {self.kinds[name]} and as a {kind}.")
        if kind == "symlink":
            _check_symlink(name, member.linkname)
            self.symlinks.add(name)
        elif kind == "hardlink":
            self._check_hardlink(name, member.linkname)
        elif kind == "file":
            self.files += 1
            if name == "Dockerfile":
                self.dockerfile = _read_text(tar, member)
        if name:
            head, sep, _ = name.partition("/")
            self.top.setdefault(head + ("/" if sep or kind == "dir" else ""))

    def _check_hardlink(self, name: str, linkname: str) -> None:
        if linkname.startswith("/"):
            raise _invalid(f"Hard link {name!r} points to an absolute path ({linkname!r}).")
        target = posixpath.normpath(linkname)
        if target == ".." or target.startswith("../"):
            raise _invalid(f"Hard link {name!r} points outside the archive ({linkname!r}).")
        if self.kinds.get(target) != "file":
            raise _invalid(
                f"Hard link {name!r} points to {linkname!r}, which is not a regular file "
                "earlier in the archive."
            )

    def finish(self) -> Context:
        for name in self.kinds:
            parts = name.split("/")
            for i in range(1, len(parts)):
                link = "/".join(parts[:i])
                if link in self.symlinks:
                    raise _invalid(f"{name!r} lies under the symbolic link {link!r}.")
        if self.dockerfile is None:
            raise self._no_dockerfile()
        return Context(self.dockerfile, self.files, self.total)

    def _no_dockerfile(self) -> DockerfileNotFoundError:
        kind = self.kinds.get("Dockerfile")
        if kind is not None:
            message = f"The Dockerfile at the root of the archive is a {kind}, not a regular file."
        else:
            found = list(self.top)
            listed = ", ".join(found[:5]) + (
                f" and {len(found) - 5} more" if len(found) > 5 else ""
            )
            message = "The archive has no Dockerfile at its root; " + (
                f"its top-level entries are: {listed}." if found else "it is empty."
            )
            nested = sorted(n for n in self.kinds if n.endswith("/Dockerfile"))
            if nested:
                message += f" A Dockerfile is at {nested[0]}: archive that directory instead."
        return DockerfileNotFoundError(
            message,
            agent_action="Put a regular file named `Dockerfile` (capital D, no extension) at the "
            "top of the directory you archive, and archive that directory's contents: "
            "`tar -czf app.tar.gz -C <dir> .`",
        )


class _CappedReader:
    """The decompressed tar stream, refusing to yield more than ``limit`` bytes in all and
    remembering its last chunks so the end of the archive can be checked."""

    def __init__(self, source: gzip.GzipFile, expansion_limit: int) -> None:
        self._source = source
        self._limit = expansion_limit + _HEADER_ALLOWANCE
        self._expansion_limit = expansion_limit
        self.count = 0
        self._recent: deque[bytes] = deque(maxlen=4)

    def read(self, size: int = -1, /) -> bytes:
        allowed = self._limit - self.count + 1
        chunk = self._source.read(allowed if size < 0 else min(size, allowed))
        self.count += len(chunk)
        if self.count > self._limit:
            raise _invalid(
                f"The archive unpacks to more than {_mb(self._expansion_limit)} MB "
                f"({EXPANSION_FACTOR}x the cap): a gzip bomb, or large generated files.",
                SLIM_IT,
            )
        self._recent.append(chunk)
        return chunk

    def check_rest_is_padding(self, stop: int) -> None:
        """After the last member (at ``stop``) there may only be zero blocks; reading them to the
        end also checks the gzip stream's length and CRC."""
        recent = b"".join(self._recent)
        start = stop - (self.count - len(recent))
        if start >= 0 and recent[start:].strip(b"\0"):
            raise _invalid(f"The tar archive is corrupt: an unreadable header at byte {stop:,}.")
        while chunk := self.read(1 << 16):
            if chunk.strip(b"\0"):
                raise _invalid(f"The tar archive is corrupt: data after its end at byte {stop:,}.")

    def write(self, b: bytes, /) -> int:
        raise io.UnsupportedOperation("read-only")

    def tell(self) -> int:
        return self.count

    def seek(self, pos: int, /) -> int:
        raise io.UnsupportedOperation("not seekable")

    def close(self) -> None:
        self._source.close()


def _check_gzip(data: bytes) -> None:
    if data[:2] == b"\x1f\x8b":
        return
    if not data:
        raise _invalid("The upload is empty.")
    what = next((kind for magic, kind in _OTHER_FORMATS.items() if data.startswith(magic)), None)
    if data[257:262] == b"ustar":
        what = "an uncompressed tar"
    message = "The upload is not a gzipped tar" + (f": it is {what}." if what else ".")
    raise _invalid(message)


def _normalise(raw: str) -> str:
    """``raw`` without "./" and empty segments; refused if it could leave the tree."""
    if raw.startswith("/"):
        raise _invalid(f"Archive entry {raw!r} has an absolute path.")
    bad = next((c for c in raw if c == "\\" or ord(c) < 32 or 127 <= ord(c) < 160), None)
    if bad is not None:
        raise _invalid(f"Archive entry {raw!r} has a backslash or control character ({bad!r}).")
    parts = [part for part in raw.split("/") if part not in ("", ".")]
    if ".." in parts:
        raise _invalid(f"Archive entry {raw!r} has a '..' segment.")
    return "/".join(parts)


def _kind(member: tarfile.TarInfo) -> str:
    if member.isreg():
        return "file"
    if member.isdir():
        return "dir"
    if member.issym():
        return "symlink"
    if member.islnk():
        return "hardlink"
    special = _SPECIAL.get(member.type, f"special entry (type {member.type!r})")
    raise _invalid(
        f"Archive entry {member.name!r} is a {special}; only files, directories and links "
        "are allowed."
    )


def _check_symlink(name: str, linkname: str) -> None:
    if not linkname:
        raise _invalid(f"Symbolic link {name!r} has an empty target.")
    if linkname.startswith("/"):
        raise _invalid(f"Symbolic link {name!r} points to an absolute path ({linkname!r}).")
    target = posixpath.normpath(posixpath.join(posixpath.dirname(name), linkname))
    if target == ".." or target.startswith("../"):
        raise _invalid(f"Symbolic link {name!r} points outside the archive ({linkname!r}).")


def _read_text(tar: tarfile.TarFile, member: tarfile.TarInfo) -> str:
    handle = tar.extractfile(member)
    raw = handle.read(DOCKERFILE_MAX_BYTES) if handle else b""
    return raw.decode("utf-8", errors="replace")


def _unreadable(exc: BaseException) -> InvalidTarballError:
    if str(exc) == "unexpected end of data":
        return _invalid("The tar archive ends in the middle of a member: it is truncated.")
    if isinstance(exc, tarfile.TarError):
        return _invalid(f"The gzip stream does not hold a readable tar archive ({exc}).")
    if isinstance(exc, EOFError):
        return _invalid("The gzip stream ends early: the upload is truncated.")
    return _invalid(f"The gzip stream is corrupt ({exc}).")


def _invalid(message: str, action: str = MAKE_IT) -> InvalidTarballError:
    return InvalidTarballError(message, agent_action=action)


def _mb(n: int) -> str:
    return f"{n / (1 << 20):.1f}".removesuffix(".0")
