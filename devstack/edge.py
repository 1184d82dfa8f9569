"""The edge: what deployed apps reach of the local stack's data servers.

Apps run in podman networks that reach no port of this host (``chalicelib.deploy.firewall``)
but the edge address's. There this process listens on the tenant-facing ports only (Postgres,
Redis, NATS, MongoDB, the S3-only endpoint) and pipes each connection to the server on
127.0.0.1: an app's ``internal_url`` works from inside its container, while the platform's AWS
endpoint, SMTP and the API stay out of its reach. Tenants still need their own credentials.

    python -m devstack.edge ADDRESS PORT[:TARGET_PORT] ...
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import Awaitable, Callable

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while chunk := await reader.read(65536):
            writer.write(chunk)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        with contextlib.suppress(ConnectionError, OSError):
            writer.close()


def _forwarder(target: int) -> Handler:
    async def forward(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1", target)
        except OSError:
            writer.close()
            return
        await asyncio.gather(_pipe(reader, upstream_writer), _pipe(upstream_reader, writer))

    return forward


async def serve(address: str, ports: dict[int, int]) -> None:
    servers = [
        await asyncio.start_server(_forwarder(target), address, port)
        for port, target in ports.items()
    ]
    await asyncio.gather(*(server.serve_forever() for server in servers))


def main(argv: list[str]) -> None:
    address, specs = argv[0], argv[1:]
    ports: dict[int, int] = {}
    for spec in specs:
        port, _, target = spec.partition(":")
        ports[int(port)] = int(target or port)
    asyncio.run(serve(address, ports))


if __name__ == "__main__":
    main(sys.argv[1:])
