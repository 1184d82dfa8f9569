"""The local stack's servers. Each one starts as a private process under the state dir, on its own
port, and is reused when it is already up. Adding a server (Redis, NATS, a MongoDB-wire server)
means one more ``Service`` subclass and one line in ``profiles.py``.
"""

from __future__ import annotations

import importlib.util
import os
import pwd
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

RUN_AS = "instanode"  # servers such as Postgres refuse to run as root


class Service:
    name: str
    port: int
    host = "127.0.0.1"  # where ``port`` is checked

    def __init__(self, state: Path) -> None:
        self.dir = state / self.name
        self.pidfile = state / "pids" / f"{self.name}.pid"

    # -- what a subclass provides ---------------------------------------------------------
    def launch(self) -> int:
        """Start the server in the background; return its PID."""
        raise NotImplementedError

    def prepare(self) -> None:
        """One-time set-up before the first launch (default: nothing)."""

    # -- shared behaviour -------------------------------------------------------------------
    def pid(self) -> int | None:
        try:
            pid = int(self.pidfile.read_text())
        except (FileNotFoundError, ValueError):
            return None
        return pid if _alive(pid) else None

    def up(self) -> bool:
        """Start unless running; True when this call started it."""
        if self.pid() and port_open(self.port, self.host):
            return False
        if port_open(self.port, self.host):
            raise SystemExit(f"{self.name}: port {self.port} is taken by another process")
        self.dir.mkdir(parents=True, exist_ok=True)
        self.prepare()
        pid = self.launch()
        self.pidfile.parent.mkdir(parents=True, exist_ok=True)
        self.pidfile.write_text(str(pid))
        wait_for_port(self.port, self.name, self.host)
        return True

    def spawn(self, cmd: list[str], cwd: Path | None = None) -> subprocess.Popen[bytes]:
        """Start ``cmd`` in its own session, its output appended to ``<dir>/<name>.log``."""
        with open(self.dir / f"{self.name}.log", "ab") as log:  # the child keeps its own copy
            return subprocess.Popen(
                cmd,
                cwd=cwd or self.dir,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def down(self) -> None:
        pid = self.pid()
        if pid:
            stop_process(pid, signal.SIGINT)
        self.pidfile.unlink(missing_ok=True)


class Moto(Service):
    """moto in server mode (requests serialised, see moto_serial.py): DynamoDB, S3 and Secrets
    Manager at a LocalStack-style endpoint; with ``only="s3"`` a second one that serves S3
    alone (the storage kind's, which tenants reach: it holds none of the platform's tables)."""

    def __init__(self, state: Path, port: int, only: str | None = None) -> None:
        self.name = only or "moto"
        super().__init__(state)
        self.port = port
        self.only = only

    def launch(self) -> int:
        cmd = [
            sys.executable,
            "-m",
            "devstack.moto_serial",
            str(self.port),
            *filter(None, [self.only]),
        ]
        return self.spawn(cmd, cwd=Path(__file__).resolve().parent.parent).pid


class Postgres(Service):
    """PostgreSQL 16 with pgvector, from the binaries the ``pgserver`` wheel ships."""

    def __init__(self, state: Path, name: str, port: int, admin_password: str) -> None:
        self.name = name
        super().__init__(state)
        self.port = port
        self._password = admin_password
        self.data = self.dir / "data"

    @staticmethod
    def bin(tool: str) -> str:
        spec = importlib.util.find_spec("pgserver")
        assert spec and spec.submodule_search_locations, "pgserver is not installed"
        return str(Path(spec.submodule_search_locations[0]) / "pginstall" / "bin" / tool)

    def admin_url(self) -> str:
        return f"postgresql://postgres:{self._password}@127.0.0.1:{self.port}/postgres"

    def prepare(self) -> None:
        if (self.data / "PG_VERSION").exists():
            return
        user = _service_user()
        _let_traverse(self.dir)
        _let_traverse(Path(self.bin("postgres")).parent)
        pwfile = self.dir / "pwfile"
        pwfile.write_text(self._password)
        for path in (self.dir, pwfile):
            os.chown(path, user.pw_uid, user.pw_gid)
        _as_user(
            [
                self.bin("initdb"),
                "-D",
                str(self.data),
                "-U",
                "postgres",
                "--pwfile",
                str(pwfile),
                "--auth-host=scram-sha-256",
                "--auth-local=trust",
                "-E",
                "UTF8",
                "--no-instructions",
            ],
            user,
        )
        pwfile.unlink()

    def launch(self) -> int:
        user = _service_user()
        _as_user(
            [
                self.bin("pg_ctl"),
                "-D",
                str(self.data),
                "-l",
                str(self.dir / "postgres.log"),
                "-w",
                "-o",
                f"-p {self.port} -h 127.0.0.1 -c unix_socket_directories=''",
                "start",
            ],
            user,
        )
        return int((self.data / "postmaster.pid").read_text().split()[0])

    def drop_tenants(self) -> None:
        """Remove every tenant database and role (``db_*``; ``u_*`` and the ``o_*`` that own a
        database over its quota) from this server."""
        import pg8000.native

        conn = pg8000.native.Connection(
            "postgres", host="127.0.0.1", port=self.port, password=self._password
        )
        try:
            for (db,) in conn.run("SELECT datname FROM pg_database WHERE datname LIKE 'db\\_%'"):
                conn.run(f"DROP DATABASE {pg8000.native.identifier(db)} WITH (FORCE)")
            for (role,) in conn.run("SELECT rolname FROM pg_roles WHERE rolname ~ '^[uo]_'"):
                conn.run(f"DROP ROLE {pg8000.native.identifier(role)}")
        finally:
            conn.close()


def _service_user() -> pwd.struct_passwd:
    """The unprivileged user that runs the servers (created when running as root)."""
    if os.geteuid() != 0:
        return pwd.getpwuid(os.geteuid())
    try:
        return pwd.getpwnam(RUN_AS)
    except KeyError:
        useradd = shutil.which("useradd") or "/usr/sbin/useradd"
        subprocess.run([useradd, "--system", "--no-create-home", RUN_AS], check=True)
        return pwd.getpwnam(RUN_AS)


def _let_traverse(path: Path) -> None:
    """Let the service user reach ``path``: add o+x (search, not read) to any parent lacking it,
    as a checkout in a private temporary folder would."""
    for parent in path.resolve().parents:
        mode = parent.stat().st_mode
        if not mode & stat.S_IXOTH:
            parent.chmod(mode | stat.S_IXOTH)


def _as_user(cmd: list[str], user: pwd.struct_passwd) -> None:
    as_root = os.geteuid() == 0
    subprocess.run(
        cmd,
        check=True,
        stdout=subprocess.DEVNULL,
        user=user.pw_uid if as_root else None,
        group=user.pw_gid if as_root else None,
        cwd="/",
    )


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex((host, port)) == 0


def wait_for_port(port: int, what: str, host: str = "127.0.0.1", timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not port_open(port, host):
        if time.monotonic() > deadline:
            raise SystemExit(f"{what} did not open port {port} within {timeout:.0f}s")
        time.sleep(0.1)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie child of ours counts as gone
    try:
        finished, _ = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return True
    return finished == 0


def stop_process(pid: int, sig: signal.Signals, timeout: float = 15.0) -> None:
    """Signal ``pid`` and wait until it is gone (SIGKILL after ``timeout``)."""
    if not _alive(pid):
        return
    os.kill(pid, sig)
    deadline = time.monotonic() + timeout
    while _alive(pid):
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            return
        time.sleep(0.1)
