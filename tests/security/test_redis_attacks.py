"""Attacks on the shared Redis by a tenant, with the clients an attacker would use (redis-cli,
redis-py, a raw socket), against the test stack's real server: each asserts the denial.

- one command allocating far past the tenant's limit (big SETRANGE/APPEND/SETBIT/BITFIELD
  offsets, a value or argument list larger than the server takes, a reply without end);
- commands that copy a tenant's whole data set in one call (``*STORE``);
- escapes from the tenant's key prefix: listing, wiping or switching the keyspace, server
  administration, scripting, replication, other tenants' keys and channels;
- a full server: nobody's keys are evicted, writes fail instead.
"""

from __future__ import annotations

import time

import pytest
import redis

from chalicelib.models import Credentials
from tests.functional import redis_fixtures as rf
from tests.functional.redis_fixtures import MAX_VALUE_BYTES, MakeTenant, cli, connect, key

redis_server, backend, admin, provider = rf.redis_server, rf.backend, rf.admin, rf.provider
make_tenant = rf.make_tenant

TOO_BIG = "exceeds maximum allowed size (proto-max-bulk-len)"
OUT_OF_RANGE = "bit offset is not an integer or out of range"


def used_memory(admin: redis.Redis) -> int:
    return int(admin.info("memory")["used_memory"])


# -- one command allocating past the limit ---------------------------------------------------
@pytest.mark.parametrize(
    ("command", "refusal"),
    [
        (["SETRANGE", "{k}", "104857599", "x"], TOO_BIG),  # the 117 MB of issue 12
        (["SETRANGE", "{k}", str(MAX_VALUE_BYTES), "x"], TOO_BIG),
        (["SETBIT", "{k}", str(8 * MAX_VALUE_BYTES), "1"], OUT_OF_RANGE),
        (["SETBIT", "{k}", "4294967295", "1"], OUT_OF_RANGE),
        (["BITFIELD", "{k}", "SET", "u8", str(8 * MAX_VALUE_BYTES), "1"], OUT_OF_RANGE),
        (["BITFIELD", "{k}", "SET", "u8", "#134217728", "1"], OUT_OF_RANGE),
    ],
    ids=lambda v: " ".join(v) if isinstance(v, list) else "refused",
)
def test_big_offset_allocation_is_refused(
    make_tenant: MakeTenant, admin: redis.Redis, command: list[str], refusal: str
) -> None:
    _, creds = make_tenant()
    own = key(creds, "k")
    assert refusal in cli(creds, *(part.replace("{k}", own) for part in command))
    assert admin.exists(own) == 0


def test_append_past_the_largest_value_is_refused(make_tenant: MakeTenant) -> None:
    _, creds = make_tenant()
    own = key(creds, "k")
    assert cli(creds, "SETRANGE", own, str(MAX_VALUE_BYTES - 1), "x") == str(MAX_VALUE_BYTES)
    assert TOO_BIG in cli(creds, "APPEND", own, "x")
    assert connect(creds).strlen(own) == MAX_VALUE_BYTES


def test_value_larger_than_the_server_takes_is_refused(
    make_tenant: MakeTenant, admin: redis.Redis
) -> None:
    _, creds = make_tenant()
    out = cli(creds, "SET", key(creds, "big"), stdin=b"x" * (MAX_VALUE_BYTES + 1))
    # the server answers the protocol error and closes; the client may see the reset first
    assert any(sign in out.lower() for sign in ("invalid bulk length", "closed", "reset")), out
    assert admin.exists(key(creds, "big")) == 0


def test_huge_argument_list_closes_the_connection(
    make_tenant: MakeTenant, admin: redis.Redis
) -> None:
    """RPUSH with 2 million arguments (200 MB) streamed as one command: the server evicts the
    client once all clients' buffers pass maxmemory-clients, before the command runs."""
    _, creds = make_tenant()
    evicted = admin.info("stats")["evicted_clients"]
    before = used_memory(admin)
    sent = stream_rpush(creds, key(creds, "list"), count=2_000_000, size=100)
    assert sent < 2_000_000
    assert admin.info("stats")["evicted_clients"] == evicted + 1
    assert admin.exists(key(creds, "list")) == 0
    assert used_memory(admin) < before + MAX_VALUE_BYTES


def stream_rpush(creds: Credentials, list_key: str, count: int, size: int) -> int:
    """Log in as the tenant on a raw socket and stream one RPUSH of ``count`` arguments;
    how many were sent before the server closed the connection."""
    client = connect(creds)
    conn = client.connection_pool.get_connection()
    conn.send_command("RPUSH", list_key, "x")  # checks the login works
    assert conn.read_response() == 1
    client.delete(list_key)
    sock = conn._sock
    assert sock is not None
    sock.sendall(
        b"*%d\r\n$5\r\nRPUSH\r\n$%d\r\n%s\r\n" % (count + 2, len(list_key), list_key.encode())
    )
    batch = b"$%d\r\n%s\r\n" % (size, b"v" * size) * 1000
    sent = 0
    try:
        while sent < count:
            sock.sendall(batch)
            sent += 1000
        sock.settimeout(10)
        reply = sock.recv(100)
        return sent if reply == b"" else count
    except OSError:
        return sent
    finally:
        conn.disconnect()


def test_reply_without_end_closes_the_connection(
    make_tenant: MakeTenant, admin: redis.Redis
) -> None:
    """SRANDMEMBER with a huge negative count repeats members into one reply: the normal
    client output buffer limit closes the client inside the command."""
    _, creds = make_tenant()
    connect(creds).sadd(key(creds, "s"), "a", "b", "c")
    started = time.monotonic()
    out = cli(creds, "SRANDMEMBER", key(creds, "s"), "-1000000000000")
    assert "closed" in out.lower()
    assert time.monotonic() - started < 10
    assert admin.ping()


COPYING_COMMANDS = [
    ["SUNIONSTORE", "{k}:d", "{k}:s"],
    ["SINTERSTORE", "{k}:d", "{k}:s"],
    ["SDIFFSTORE", "{k}:d", "{k}:s"],
    ["ZUNIONSTORE", "{k}:d", "1", "{k}:z"],
    ["ZINTERSTORE", "{k}:d", "1", "{k}:z"],
    ["ZDIFFSTORE", "{k}:d", "1", "{k}:z"],
    ["ZRANGESTORE", "{k}:d", "{k}:z", "0", "-1"],
    ["GEOSEARCHSTORE", "{k}:d", "{k}:z", "FROMLONLAT", "0", "0", "BYRADIUS", "1", "km"],
    ["GEORADIUS", "{k}:z", "0", "0", "1", "km", "STORE", "{k}:d"],
    ["GEORADIUSBYMEMBER", "{k}:z", "m", "1", "km", "STORE", "{k}:d"],
    ["SORT", "{k}:l", "STORE", "{k}:d"],
    ["COPY", "{k}:s", "{k}:d"],
    ["RESTORE", "{k}:d", "0", "payload"],
]


@pytest.mark.parametrize("command", COPYING_COMMANDS, ids=lambda c: c[0])
def test_copy_whole_data_set_in_one_call_is_refused(
    make_tenant: MakeTenant, command: list[str]
) -> None:
    _, creds = make_tenant()
    own = key(creds, "k")
    assert "NOPERM" in cli(creds, *(part.replace("{k}", own) for part in command))


def test_read_forms_of_copying_commands_stay_open(make_tenant: MakeTenant) -> None:
    _, creds = make_tenant()
    client = connect(creds)
    client.sadd(key(creds, "s"), "a")
    client.zadd(key(creds, "z"), {"a": 1})
    assert client.sunion(key(creds, "s")) == {b"a"}
    assert client.zunion([key(creds, "z")]) == [b"a"]


# -- escapes from the tenant's prefix --------------------------------------------------------
ESCAPE_COMMANDS = [
    ["KEYS", "*"],
    ["SCAN", "0"],
    ["RANDOMKEY"],
    ["DBSIZE"],
    ["SELECT", "1"],
    ["MOVE", "{own}", "1"],
    ["COPY", "{own}", "{own}2", "DB", "1"],
    ["SWAPDB", "0", "1"],
    ["FLUSHALL"],
    ["FLUSHDB"],
    ["CONFIG", "GET", "*"],
    ["CONFIG", "SET", "maxmemory", "0"],
    ["INFO"],
    ["CLIENT", "LIST"],
    ["CLIENT", "KILL", "TYPE", "normal"],
    ["CLIENT", "NO-EVICT", "on"],
    ["CLIENT", "PAUSE", "1000"],
    ["CLIENT", "TRACKING", "on", "BCAST"],
    ["DEBUG", "SLEEP", "1"],
    ["MONITOR"],
    ["SLOWLOG", "GET"],
    ["LATENCY", "LATEST"],
    ["EVAL", "return redis.call('GET', KEYS[1])", "1", "{own}"],
    ["EVAL_RO", "return 1", "0"],
    ["FUNCTION", "FLUSH"],
    ["FUNCTION", "LIST"],
    ["SCRIPT", "FLUSH"],
    ["PUBSUB", "CHANNELS"],
    ["PUBSUB", "NUMPAT"],
    ["MEMORY", "STATS"],
    ["MEMORY", "DOCTOR"],
    ["MEMORY", "PURGE"],
    ["MIGRATE", "127.0.0.1", "1", "{own}", "0", "1000"],
    ["RESTORE", "{own}2", "0", "x"],
    ["ACL", "LIST"],
    ["ACL", "USERS"],
    ["ACL", "GETUSER", "admin"],
    ["ACL", "SETUSER", "{user}", "~*"],
    ["ACL", "DELUSER", "admin"],
    ["ACL", "LOG"],
    ["MODULE", "LIST"],
    ["SAVE"],
    ["BGSAVE"],
    ["SHUTDOWN", "NOSAVE"],
    ["REPLICAOF", "127.0.0.1", "1"],
    ["FAILOVER"],
    ["SYNC"],
    ["WAIT", "1", "1"],
    ["CLUSTER", "INFO"],
]


@pytest.mark.parametrize("command", ESCAPE_COMMANDS, ids=" ".join)
def test_escape_command_is_refused(
    make_tenant: MakeTenant, admin: redis.Redis, command: list[str]
) -> None:
    ref, creds = make_tenant()
    own = key(creds, "k")
    connect(creds).set(own, "v")
    args = [part.replace("{own}", own).replace("{user}", ref.principal) for part in command]
    out = cli(creds, *args)
    assert "NOPERM" in out or out.startswith("ERR DEBUG command not allowed")
    assert admin.get(own) == b"v"
    assert admin.ping()


@pytest.mark.parametrize(
    "command",
    [
        ["GET", "{other}"],
        ["SET", "{other}", "x"],
        ["DEL", "{other}"],
        ["DUMP", "{other}"],
        ["OBJECT", "ENCODING", "{other}"],
        ["MEMORY", "USAGE", "{other}"],
        ["RENAME", "{own}", "{other}"],
        ["LMOVE", "{own}", "{other}", "LEFT", "LEFT"],
    ],
    ids=lambda c: c[0],
)
def test_touch_other_tenants_key_is_refused(
    make_tenant: MakeTenant, admin: redis.Redis, command: list[str]
) -> None:
    _, mine = make_tenant()
    _, theirs = make_tenant()
    other, own = key(theirs, "secret"), key(mine, "l")
    connect(theirs).set(other, "s")
    connect(mine).rpush(own, "x")
    args = [part.replace("{other}", other).replace("{own}", own) for part in command]
    assert "NOPERM" in cli(mine, *args)
    assert admin.get(other) == b"s"


@pytest.mark.parametrize(
    "command",
    [
        ["SUBSCRIBE", "{other}:ch"],
        ["PSUBSCRIBE", "{other}:*"],
        ["PSUBSCRIBE", "*"],
        ["SSUBSCRIBE", "{other}:ch"],
        ["PUBLISH", "{other}:ch", "hi"],
    ],
    ids=" ".join,
)
def test_other_tenants_channels_are_refused(make_tenant: MakeTenant, command: list[str]) -> None:
    _, mine = make_tenant()
    theirs, _ = make_tenant()
    args = [part.replace("{other}", theirs.namespace) for part in command]
    assert "NOPERM" in cli(mine, *args)


def test_own_keys_and_channels_stay_open(make_tenant: MakeTenant) -> None:
    _, creds = make_tenant()
    client = connect(creds)
    pubsub = client.pubsub()
    pubsub.subscribe(key(creds, "ch"))
    assert pubsub.get_message(timeout=2)["type"] == "subscribe"  # type: ignore[index]
    assert client.publish(key(creds, "ch"), "hi") == 1
    assert client.object("encoding", key(creds, "ch")) is None  # OBJECT on own keys: open
    pubsub.close()


# -- a full server ---------------------------------------------------------------------------
def test_full_server_evicts_no_other_tenants_key(
    make_tenant: MakeTenant, admin: redis.Redis
) -> None:
    _, victim = make_tenant()
    _, hog = make_tenant()
    victim_client = connect(victim)
    victim_client.set(key(victim, "kept"), "v")
    written = rf.fill_until_oom(connect(hog), hog)
    assert written * MAX_VALUE_BYTES <= int(admin.config_get("maxmemory")["maxmemory"])
    assert victim_client.get(key(victim, "kept")) == b"v"
    with pytest.raises(redis.exceptions.OutOfMemoryError):
        victim_client.set(key(victim, "new"), b"v" * MAX_VALUE_BYTES)  # refused, evicting nobody
    assert admin.info("stats")["evicted_keys"] == 0


def test_full_server_still_takes_admin_and_deletes(
    make_tenant: MakeTenant, admin: redis.Redis
) -> None:
    _, hog = make_tenant()
    client = connect(hog)
    rf.fill_until_oom(client, hog)
    assert client.delete(key(hog, "fill0")) == 1  # a tenant can always free memory
    assert admin.acl_users()
