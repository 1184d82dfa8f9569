"""A TCP proxy in front of a real server that fails the way a crashed server does, at a chosen
point: after the n-th chunk its clients send (counted over every connection), that chunk is
delivered, then every connection is cut and new ones are refused until ``restore()``. The
server itself ran the request; its answer never arrives (the case compensation must survive).
"""

from __future__ import annotations

import socket
import struct
import threading
import time
from contextlib import suppress
from types import TracebackType

CRASH_DELAY_SECONDS = 0.3  # between the fatal chunk reaching the server and the cut


class FaultProxy:
    def __init__(self, target_port: int) -> None:
        self._target = ("127.0.0.1", target_port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._budget: int | None = None  # chunks left before the cut (None: never)
        self._heal_after: float | None = None
        self._generation = 0  # one per arm()
        self._down = False
        self._open: set[socket.socket] = set()
        self.fired = False  # the fatal chunk was sent: answers are dropped from now on
        self.cut = False  # the connections were cut
        self.hit = False  # the fault fired since the last arm()
        threading.Thread(target=self._accept, daemon=True).start()

    def arm(self, chunks: int, heal_after: float | None = None) -> None:
        """Cut after ``chunks`` more client chunks; the server comes back by itself
        ``heal_after`` seconds after the cut (None: only when ``restore()`` is called)."""
        with self._lock:
            self._budget, self._down, self.fired, self.cut = chunks, False, False, False
            self.hit = False
            self._generation += 1
            self._heal_after = heal_after

    def wait_for_cut(self) -> None:
        """Once the fault fired, until the connections are cut."""
        deadline = time.monotonic() + CRASH_DELAY_SECONDS + 5
        while self.fired and not self.cut and time.monotonic() < deadline:
            time.sleep(0.05)

    def restore(self) -> None:
        """The server is back: accept and forward again, never cut."""
        self.wait_for_cut()
        with self._lock:
            self._budget, self._down, self.fired = None, False, False

    def close(self) -> None:
        with self._lock:
            self._down = True
            self._cut_all()
        self._listener.close()

    def __enter__(self) -> FaultProxy:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # -- plumbing -------------------------------------------------------------------------
    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                down = self._down
            if down:
                _reset(client)  # a dead server's port: connection refused
                continue
            try:
                server = socket.create_connection(self._target, timeout=5)
            except OSError:
                _reset(client)
                continue
            server.settimeout(None)
            with self._lock:
                self._open.update((client, server))
            threading.Thread(target=self._pump, args=(client, server, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, False), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, counted: bool) -> None:
        while True:
            try:
                data = source.recv(65536)
            except OSError:
                data = b""
            if not data:
                self._drop(source, sink)
                return
            if not counted and self.fired:
                continue  # the server's answers after the fatal request are lost
            try:
                sink.sendall(data)
            except OSError:
                self._drop(source, sink)
                return
            if counted and self._spend():
                threading.Timer(CRASH_DELAY_SECONDS, self._crash).start()  # the server acts

    def _spend(self) -> bool:
        with self._lock:
            if self._budget is None or self._down:
                return False
            self._budget -= 1
            if self._budget > 0:
                return False
            self._down = self.fired = self.hit = True
            return True

    def _crash(self) -> None:
        with self._lock:
            self.cut = True
            self._cut_all()
            if self._heal_after is not None:
                threading.Timer(self._heal_after, self._heal, args=(self._generation,)).start()

    def _heal(self, generation: int) -> None:
        with self._lock:
            if generation == self._generation:  # not re-armed since
                self._budget, self._down, self.fired = None, False, False

    def _cut_all(self) -> None:
        for sock in list(self._open):
            _reset(sock)
        self._open.clear()

    def _drop(self, *socks: socket.socket) -> None:
        with self._lock:
            for sock in socks:
                self._open.discard(sock)
                with suppress(OSError):
                    sock.close()


def _reset(sock: socket.socket) -> None:
    """Close with RST, as a killed process's socket does."""
    with suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with suppress(OSError):
        sock.close()
