import gzip
import io
import os
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

from chalicelib import errors
from chalicelib.deploy import tarball
from chalicelib.deploy.tarball import Context, extract, inspect

CAP = 1 << 20
DOCKERFILE = b'FROM python:3.12-slim\nCOPY . /app\nCMD ["python", "/app/main.py"]\n'


def _file(name: str, data: bytes = b"x") -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o644
    return info, data


def _dir(name: str) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.type = tarfile.DIRTYPE
    info.mode = 0o755
    return info, b""


def _link(name: str, target: str, kind: bytes = tarfile.SYMTYPE) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = target
    return info, b""


def _special(name: str, kind: bytes) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.type = kind
    return info, b""


def _tar(*members: tuple[tarfile.TarInfo, bytes], fmt: int = tarfile.PAX_FORMAT) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if info.isreg() else None)
    return buf.getvalue()


def _tgz(*members: tuple[tarfile.TarInfo, bytes]) -> bytes:
    return gzip.compress(_tar(*members))


def _with_dockerfile(*members: tuple[tarfile.TarInfo, bytes]) -> bytes:
    return _tgz(_file("Dockerfile", DOCKERFILE), *members)


def _app() -> bytes:
    return _tgz(
        _dir("."),
        _file("./Dockerfile", DOCKERFILE),
        _dir("./src"),
        _dir("./src/pkg"),
        _file("./src/pkg/main.py", b"print('hi')\n"),
        _file("./src/pkg/util.py", b"X = 1\n"),
        _link("./src/current", "pkg/main.py"),
        _link("./src/pkg/up", "../pkg"),
        _link("./src/hard.py", "src/pkg/util.py", tarfile.LNKTYPE),
        _file("./requirements.txt", b"fastapi\n"),
    )


def _invalid(data: bytes, max_bytes: int = CAP) -> errors.InvalidTarballError:
    with pytest.raises(errors.InvalidTarballError) as exc:
        inspect(data, max_bytes)
    assert exc.value.status == 400 and exc.value.code == "invalid_tarball"
    assert exc.value.agent_action
    return exc.value


# -- valid contexts --------------------------------------------------------------------------


def test_inspect_accepts_nested_dirs_and_internal_links() -> None:
    assert inspect(_app(), CAP) == Context(
        dockerfile=DOCKERFILE.decode(), files=4, uncompressed_bytes=len(DOCKERFILE) + 26
    )


def test_inspect_accepts_dockerfile_without_dot_prefix() -> None:
    assert inspect(_with_dockerfile(_file("app.py")), CAP).files == 2


def test_inspect_accepts_gnu_format() -> None:
    data = gzip.compress(_tar(_file("Dockerfile", DOCKERFILE), fmt=tarfile.GNU_FORMAT))
    assert inspect(data, CAP).dockerfile == DOCKERFILE.decode()


def test_inspect_accepts_duplicate_names_of_one_type() -> None:
    data = _tgz(_file("Dockerfile", b"FROM a\n"), _file("./Dockerfile", b"FROM b\n"))
    assert inspect(data, CAP).dockerfile == "FROM b\n"


def test_inspect_caps_dockerfile_text() -> None:
    long = b"# " + b"x" * (tarball.DOCKERFILE_MAX_BYTES + 100)
    assert len(inspect(_tgz(_file("Dockerfile", long)), CAP).dockerfile) == (64 << 10)


def test_inspect_replaces_undecodable_dockerfile_bytes() -> None:
    data = _tgz(_file("Dockerfile", b"FROM a\n# \xff\n"))
    assert inspect(data, CAP).dockerfile == "FROM a\n# \ufffd\n"


def test_inspect_accepts_size_at_cap() -> None:
    data = _with_dockerfile()
    assert inspect(data, len(data)).files == 1


def test_extract_reproduces_context(tmp_path: Path) -> None:
    extract(_app(), tmp_path / "ctx")
    root = tmp_path / "ctx"
    assert (root / "Dockerfile").read_bytes() == DOCKERFILE
    assert (root / "src/pkg/main.py").read_text() == "print('hi')\n"
    assert os.readlink(root / "src/current") == "pkg/main.py"
    assert (root / "src/current").read_text() == "print('hi')\n"
    assert (root / "src/pkg/up/util.py").read_text() == "X = 1\n"
    assert os.path.samefile(root / "src/hard.py", root / "src/pkg/util.py")
    assert (root / "requirements.txt").read_text() == "fastapi\n"


@pytest.mark.skipif(shutil.which("tar") is None, reason="needs the tar command")
def test_extract_reproduces_tree_archived_by_tar_command(tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "app/static").mkdir(parents=True)
    (src / "Dockerfile").write_bytes(DOCKERFILE)
    (src / "app/main.py").write_text("print('hi')\n")
    (src / "app/static/logo.svg").write_text("<svg/>")
    (src / "app/latest").symlink_to("main.py")
    archive = tmp_path / "app.tar.gz"
    subprocess.run(["tar", "-czf", str(archive), "-C", str(src), "."], check=True)
    data = archive.read_bytes()
    assert inspect(data, CAP).files == 3
    extract(data, tmp_path / "out")
    assert (tmp_path / "out/app/static/logo.svg").read_text() == "<svg/>"
    assert os.readlink(tmp_path / "out/app/latest") == "main.py"


def test_extract_refuses_non_empty_dest(tmp_path: Path) -> None:
    (tmp_path / "left.txt").write_text("x")
    with pytest.raises(ValueError):
        extract(_app(), tmp_path)


def test_extract_rechecks_archive(tmp_path: Path) -> None:
    with pytest.raises(errors.InvalidTarballError):
        extract(_with_dockerfile(_file("../evil")), tmp_path)
    assert not (tmp_path.parent / "evil").exists()


# -- size ------------------------------------------------------------------------------------


def test_inspect_rejects_over_cap() -> None:
    data = _with_dockerfile(_file("blob", os.urandom(4096)))
    with pytest.raises(errors.TarballTooLargeError) as exc:
        inspect(data, 4096)
    assert exc.value.status == 413 and exc.value.code == "tarball_too_large"
    assert "0 MB cap (4,096 bytes)" in exc.value.message
    assert exc.value.agent_action and "POST /deploy/upload-url" in exc.value.agent_action


def test_inspect_states_cap_in_mb() -> None:
    with pytest.raises(errors.TarballTooLargeError) as exc:
        inspect(b"\x1f\x8b" + b"\0" * (10 << 20), 10 << 20)
    assert "over the 10 MB cap" in exc.value.message


def test_inspect_rejects_gzip_bomb() -> None:
    data = _with_dockerfile(_file("zeros", b"\0" * (10 * 64 * 1024 + 1)))
    assert len(data) < 64 * 1024
    assert "gzip bomb" in _invalid(data, 64 * 1024).message


def test_inspect_rejects_declared_size_before_reading_data() -> None:
    info = tarfile.TarInfo("huge")
    info.size = 1 << 40
    data = gzip.compress(info.tobuf(tarfile.PAX_FORMAT))  # the header alone; no data follows
    assert "gzip bomb" in _invalid(data).message


def test_inspect_rejects_too_many_members() -> None:
    members = [_file(f"f{i}", b"") for i in range(tarball.MAX_MEMBERS)]
    assert "10,000 entries" in _invalid(_with_dockerfile(*members)).message


# -- not a gzipped tar -----------------------------------------------------------------------


def test_inspect_rejects_plain_tar() -> None:
    assert "uncompressed tar" in _invalid(_tar(_file("Dockerfile", DOCKERFILE))).message


def test_inspect_rejects_zip() -> None:
    assert "zip archive" in _invalid(b"PK\x03\x04" + os.urandom(200)).message


def test_inspect_rejects_random_bytes() -> None:
    assert _invalid(b"\x00garbage" + os.urandom(500)).message == "The upload is not a gzipped tar."


def test_inspect_rejects_empty_upload() -> None:
    assert _invalid(b"").message == "The upload is empty."


def test_inspect_rejects_gzip_of_non_tar() -> None:
    assert "readable tar" in _invalid(gzip.compress(b"hello, not a tar\n" * 100)).message


def test_inspect_rejects_gzip_of_nothing() -> None:
    _invalid(gzip.compress(b""))


def test_inspect_rejects_truncated_gzip() -> None:
    data = _with_dockerfile(_file("blob", os.urandom(20_000)))
    _invalid(data[: len(data) // 2])


def test_inspect_rejects_truncated_gzip_trailer() -> None:
    assert "truncated" in _invalid(_with_dockerfile()[:-4]).message


def test_inspect_rejects_corrupt_gzip_crc() -> None:
    data = bytearray(_with_dockerfile())
    data[-8] ^= 0xFF
    assert "corrupt" in _invalid(bytes(data)).message


def test_inspect_rejects_truncated_member_data() -> None:
    raw = _tar(_file("Dockerfile", DOCKERFILE), _file("blob", os.urandom(5000)))
    assert "truncated" in _invalid(gzip.compress(raw[: 512 * 4])).message


def test_inspect_rejects_corrupt_header_mid_archive() -> None:
    raw = bytearray(_tar(_file("Dockerfile", DOCKERFILE), _file("app.py", b"print(1)\n")))
    raw[1024 + 1024 : 1024 + 1024 + 512] = os.urandom(512)  # the 2nd member's ustar header
    assert "corrupt" in _invalid(gzip.compress(bytes(raw))).message


# -- member names ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["../evil", "a/../../b", "./x/../../y", "ok/.."])
def test_inspect_rejects_dotdot_segment(name: str) -> None:
    assert "'..'" in _invalid(_with_dockerfile(_file(name))).message


@pytest.mark.parametrize("name", ["/etc/passwd", "//x"])
def test_inspect_rejects_absolute_name(name: str) -> None:
    assert "absolute" in _invalid(_with_dockerfile(_file(name))).message


@pytest.mark.parametrize("name", ["a\\b", "..\\evil", "tab\there", "nl\nx", "del\x7f", "c1\x85"])
def test_inspect_rejects_backslash_or_control_character(name: str) -> None:
    assert "control character" in _invalid(_with_dockerfile(_file(name))).message


def test_inspect_rejects_nul_in_pax_name() -> None:
    info, data = _file("x")
    info.pax_headers = {"path": "a\x00b"}
    assert "control character" in _invalid(_with_dockerfile((info, data))).message


@pytest.mark.parametrize("name", [".", "./", "./."])
def test_inspect_rejects_empty_file_name(name: str) -> None:
    assert "empty name" in _invalid(_with_dockerfile(_file(name))).message


def test_inspect_rejects_name_differing_in_type() -> None:
    assert "appears twice" in _invalid(_with_dockerfile(_file("a"), _dir("./a"))).message


# -- links -----------------------------------------------------------------------------------


def test_inspect_rejects_symlink_to_absolute_path() -> None:
    assert "absolute" in _invalid(_with_dockerfile(_link("etc", "/etc"))).message


@pytest.mark.parametrize(
    ("name", "target"), [("a", "../../x"), ("d/e/l", "../../../x"), ("l", "..")]
)
def test_inspect_rejects_symlink_escaping_tree(name: str, target: str) -> None:
    assert "outside" in _invalid(_with_dockerfile(_link(name, target))).message


def test_inspect_rejects_symlink_with_empty_target() -> None:
    _invalid(_with_dockerfile(_link("l", "")))


def test_inspect_rejects_member_under_symlink() -> None:
    data = _with_dockerfile(_link("sub/l", ".."), _link("sub/l/x", ".."))
    assert "under the symbolic link 'sub/l'" in _invalid(data).message


@pytest.mark.parametrize("target", ["../../etc/passwd", "/etc/passwd"])
def test_inspect_rejects_hardlink_outside(target: str) -> None:
    _invalid(_with_dockerfile(_link("h", target, tarfile.LNKTYPE)))


def test_inspect_rejects_hardlink_to_missing_member() -> None:
    assert (
        "not a regular file"
        in _invalid(_with_dockerfile(_link("h", "nope", tarfile.LNKTYPE))).message
    )


# -- special members -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "word"),
    [(tarfile.FIFOTYPE, "FIFO"), (tarfile.CHRTYPE, "character device"), (tarfile.BLKTYPE, "block")],
)
def test_inspect_rejects_special_member(kind: bytes, word: str) -> None:
    assert word in _invalid(_with_dockerfile(_special("dev", kind))).message


# -- the Dockerfile --------------------------------------------------------------------------


def _not_found(data: bytes) -> errors.DockerfileNotFoundError:
    with pytest.raises(errors.DockerfileNotFoundError) as exc:
        inspect(data, CAP)
    assert exc.value.status == 400 and exc.value.code == "dockerfile_not_found"
    assert exc.value.agent_action
    return exc.value


def test_inspect_rejects_missing_dockerfile() -> None:
    data = _tgz(_file("./main.py"), _dir("./src"), _file("./src/a.py"))
    assert _not_found(data).message.endswith("top-level entries are: main.py, src/.")


def test_inspect_lists_at_most_five_top_level_names() -> None:
    data = _tgz(*(_file(f"f{i}") for i in range(8)))
    assert _not_found(data).message.endswith("f0, f1, f2, f3, f4 and 3 more.")


def test_inspect_rejects_dockerfile_only_in_subdirectory() -> None:
    error = _not_found(_tgz(_file("app/Dockerfile", DOCKERFILE), _file("app/main.py")))
    assert "top-level entries are: app/." in error.message
    assert "A Dockerfile is at app/Dockerfile" in error.message


def test_inspect_rejects_lowercase_dockerfile() -> None:
    assert "dockerfile" in _not_found(_tgz(_file("dockerfile", DOCKERFILE))).message


def test_inspect_rejects_dockerfile_symlink() -> None:
    data = _tgz(_file("build/Dockerfile", DOCKERFILE), _link("Dockerfile", "build/Dockerfile"))
    assert "is a symlink" in _not_found(data).message


def test_inspect_rejects_empty_archive() -> None:
    assert _not_found(_tgz(_dir("."))).message.endswith("it is empty.")
