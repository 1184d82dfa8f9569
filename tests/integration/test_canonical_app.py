"""The seed's canonical prompt, the way an agent runs it over HTTP: "a tiny expense tracker,
Postgres backing store, a FastAPI app on top, deployed to a public URL". /db/new, then an app
built FROM python:3.11-slim with `RUN pip install` (the locally made base image, the package
registry reached from a contained build), given the database's internal_url, deployed as an
anonymous stack and as a paid team's /deploy/new; its rows are then read with the database's
connection_url. An Express app FROM node:18-slim (`npm install`) on its /cache/new Redis. And
one app that uses the internal_url of every data kind (postgres, vector, redis, mongodb, nats)
with its real client from inside its container."""

from __future__ import annotations

import io
import json
import tarfile
import time
from typing import Any
from urllib.parse import urlsplit

import pytest
import redis
import requests

from devstack.stack import Stack
from tests.conftest import connect, fresh_ip
from tests.integration.test_accounts_http import new_email, set_tier, sign_in

pytestmark = [pytest.mark.integration, pytest.mark.slow]

EXPENSES = """
import os
from urllib.parse import urlsplit

import pg8000.native
from fastapi import FastAPI
from pydantic import BaseModel

app = FastAPI()
url = urlsplit(os.environ["DATABASE_URL"])


def db() -> pg8000.native.Connection:
    return pg8000.native.Connection(
        user=url.username, password=url.password, host=url.hostname,
        port=url.port or 5432, database=url.path.lstrip("/"),
    )


class Expense(BaseModel):
    item: str
    cents: int


@app.on_event("startup")
def schema() -> None:
    conn = db()
    conn.run("CREATE TABLE IF NOT EXISTS expenses (id serial PRIMARY KEY, item text, cents int)")
    conn.close()


@app.get("/")
def health() -> dict:
    return {"ok": True}


@app.post("/expenses", status_code=201)
def add(expense: Expense) -> dict:
    conn = db()
    rows = conn.run(
        "INSERT INTO expenses (item, cents) VALUES (:i, :c) RETURNING id",
        i=expense.item, c=expense.cents,
    )
    conn.close()
    return {"id": rows[0][0], "item": expense.item, "cents": expense.cents}


@app.get("/expenses")
def expenses() -> list:
    conn = db()
    rows = conn.run("SELECT id, item, cents FROM expenses ORDER BY id")
    conn.close()
    return [{"id": r[0], "item": r[1], "cents": r[2]} for r in rows]
"""

FASTAPI_DOCKERFILE = """FROM python:3.11-slim
WORKDIR /app
RUN pip install --no-cache-dir fastapi uvicorn pg8000
COPY main.py .
EXPOSE 8080
CMD ["uvicorn", "main:app", "--host", "0.0.0.0", "--port", "8080"]
"""

NOTES = """
const express = require("express");
const { createClient } = require("redis");

const prefix = process.env.KEY_PREFIX;
const cache = createClient({ url: process.env.REDIS_URL });
cache.on("error", (err) => console.error("redis:", err.message));
const app = express();
app.use(express.json());
app.get("/", (req, res) => res.json({ ok: true }));
app.post("/notes", async (req, res) => {
  await cache.rPush(prefix + "notes", req.body.text);
  res.status(201).json({ saved: req.body.text });
});
app.get("/notes", async (req, res) => res.json(await cache.lRange(prefix + "notes", 0, -1)));
cache.connect().then(() => app.listen(8080, () => console.log("listening on 8080")));
"""

NODE_DOCKERFILE = """FROM node:18-slim
WORKDIR /app
COPY package.json .
RUN npm install --omit=dev --no-audit --no-fund
COPY server.js .
EXPOSE 8080
CMD ["node", "server.js"]
"""

PACKAGE_JSON = json.dumps(
    {"name": "notes", "version": "1.0.0", "dependencies": {"express": "^4.19.2", "redis": "^4.7.0"}}
)

DEADLINE = 600  # seconds: the first build of a base image comes on top of pip and npm


def tarball(**files: str) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, text in files.items():
            data = text.encode()
            member = tarfile.TarInfo(name)
            member.size, member.mode = len(data), 0o644
            tar.addfile(member, io.BytesIO(data))
    return buffer.getvalue()


def app_url(url: str, path: str) -> tuple[str, dict[str, str]]:
    """*.localhost is loopback: connect to 127.0.0.1 and send the URL's host."""
    parts = urlsplit(url)
    return f"http://127.0.0.1:{parts.port}{path}", {"Host": parts.netloc}


def use(url: str, method: str = "GET", path: str = "/", body: Any = None) -> requests.Response:
    target, headers = app_url(url, path)
    return requests.request(method, target, headers=headers, json=body, timeout=30)


def wait(read: Any, ready: str = "healthy") -> dict[str, Any]:
    deadline = time.monotonic() + DEADLINE
    while True:
        body: dict[str, Any] = read()
        if body["status"] in (ready, "failed") or time.monotonic() > deadline:
            assert body["status"] == ready, json.dumps(body)[:4000]
            return body
        time.sleep(2)


def check_expenses(url: str, connection_url: str) -> None:
    for item, cents in (("coffee", 350), ("train", 1200)):
        added = use(url, "POST", "/expenses", {"item": item, "cents": cents})
        assert added.status_code == 201, added.text
    listed = use(url, "GET", "/expenses").json()
    assert [(e["item"], e["cents"]) for e in listed] == [("coffee", 350), ("train", 1200)]
    conn = connect(connection_url)  # the agent's own view of the same rows
    try:
        assert conn.run("SELECT item, cents FROM expenses ORDER BY id") == [
            ["coffee", 350],
            ["train", 1200],
        ]
    finally:
        conn.close()


def test_an_anonymous_stack_serves_the_expense_tracker_on_its_database(api: str) -> None:
    ip = {"X-Forwarded-For": fresh_ip()}
    db = requests.post(f"{api}/db/new", json={"name": "expenses"}, headers=ip, timeout=30).json()
    manifest = "services:\n  api:\n    port: 8080\n    env:\n"
    manifest += f"      DATABASE_URL: {json.dumps(db['internal_url'])}\n"
    files = {
        "instant.yaml": ("instant.yaml", manifest, "application/yaml"),
        "api": ("api.tar.gz", tarball(Dockerfile=FASTAPI_DOCKERFILE, **{"main.py": EXPENSES})),
    }
    made = requests.post(
        f"{api}/stacks/new", data={"name": "expense tracker"}, files=files, headers=ip, timeout=60
    )
    assert made.status_code == 202, made.text
    slug = made.json()["slug"]

    stack = wait(lambda: requests.get(f"{api}/api/v1/stacks/{slug}", timeout=30).json())

    check_expenses(stack["stack_url"], db["connection_url"])


def test_a_paid_team_deploys_the_expense_tracker_with_env_vars(api: str, stack: Stack) -> None:
    email = new_email()
    session = sign_in(api, stack, email)
    set_tier(stack, email, "pro")
    db = session.post(f"{api}/db/new", json={"name": "expenses"}, timeout=30).json()
    context = tarball(Dockerfile=FASTAPI_DOCKERFILE, **{"main.py": EXPENSES})
    made = session.post(
        f"{api}/deploy/new",
        data={"name": "expense-tracker", "port": "8080"},
        files={
            "tarball": ("app.tar.gz", context, "application/gzip"),
            "env_vars": (None, json.dumps({"DATABASE_URL": db["internal_url"]})),
        },
        timeout=60,
    )
    assert made.status_code == 202, made.text
    app_id = made.json()["id"]

    app = wait(lambda: session.get(f"{api}/api/v1/deployments/{app_id}", timeout=30).json())

    check_expenses(app["url"], db["connection_url"])


def test_an_express_app_keeps_its_notes_in_its_cache(api: str) -> None:
    ip = {"X-Forwarded-For": fresh_ip()}
    cache = requests.post(f"{api}/cache/new", json={"name": "notes"}, headers=ip, timeout=30).json()
    env = {"REDIS_URL": cache["internal_url"], "KEY_PREFIX": cache["key_prefix"]}
    manifest = "services:\n  web:\n    port: 8080\n    env:\n"
    manifest += "".join(f"      {k}: {json.dumps(v)}\n" for k, v in env.items())
    context = tarball(
        Dockerfile=NODE_DOCKERFILE, **{"package.json": PACKAGE_JSON, "server.js": NOTES}
    )
    files = {
        "instant.yaml": ("instant.yaml", manifest, "application/yaml"),
        "web": ("web.tar.gz", context),
    }
    made = requests.post(
        f"{api}/stacks/new", data={"name": "notes"}, files=files, headers=ip, timeout=60
    )
    assert made.status_code == 202, made.text
    slug = made.json()["slug"]

    url = wait(lambda: requests.get(f"{api}/api/v1/stacks/{slug}", timeout=30).json())["stack_url"]

    assert use(url, "POST", "/notes", {"text": "buy milk"}).status_code == 201
    assert use(url, "GET", "/notes").json() == ["buy milk"]
    parts = urlsplit(cache["connection_url"])
    mine = redis.Redis(
        host=parts.hostname, port=parts.port, username=parts.username, password=parts.password
    )
    assert mine.lrange(f"{cache['key_prefix']}notes", 0, -1) == [b"buy milk"]


EVERY_KIND = """
import asyncio, json, os, tempfile
from http.server import BaseHTTPRequestHandler, HTTPServer
from urllib.parse import urlsplit

import nats, pg8000.native, pymongo, redis


def answer(name, sql):
    u = urlsplit(os.environ[name])
    conn = pg8000.native.Connection(user=u.username, password=u.password, host=u.hostname,
                                    port=u.port, database=u.path[1:])
    try:
        return conn.run(sql)[0][0]
    finally:
        conn.close()


def cache():
    r = redis.Redis.from_url(os.environ["REDIS_URL"])
    r.set(os.environ["KEY_PREFIX"] + "k", "v")
    return r.get(os.environ["KEY_PREFIX"] + "k") == b"v"


def mongo():
    client = pymongo.MongoClient(os.environ["MONGO_URL"], serverSelectionTimeoutMS=5000)
    db = client.get_default_database()
    db.things.insert_one({"n": 1})
    return db.things.find_one({"n": 1}) is not None


def queue():
    async def go():
        with tempfile.NamedTemporaryFile("w", suffix=".creds", delete=False) as f:
            f.write(os.environ["NATS_CREDS"])
        nc = await nats.connect(os.environ["NATS_URL"], user_credentials=f.name, connect_timeout=5)
        await nc.publish(os.environ["SUBJECT_PREFIX"] + "hello", b"hi")
        await nc.flush(timeout=5)
        await nc.close()
        return True
    return asyncio.run(go())


CHECKS = {
    "postgres": lambda: answer("DATABASE_URL", "SELECT 1") == 1,
    "vector": lambda: answer("VECTOR_URL", "SELECT '[3,4]'::vector <-> '[0,0]'::vector") == 5,
    "redis": cache,
    "mongodb": mongo,
    "nats": queue,
}


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        results = {}
        for kind, check in CHECKS.items():
            try:
                results[kind] = "ok" if check() else "wrong answer"
            except Exception as exc:
                results[kind] = f"{type(exc).__name__}: {exc}"
        body = json.dumps(results).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(body)


HTTPServer(("0.0.0.0", 8080), Handler).serve_forever()
"""

EVERY_KIND_DOCKERFILE = """FROM python:3.11-slim
RUN pip install --no-cache-dir pg8000 redis pymongo nats-py nkeys
COPY kinds.py /kinds.py
CMD ["python3", "/kinds.py"]
"""


def test_every_kinds_internal_url_answers_from_inside_a_deployed_app(api: str) -> None:
    ip = fresh_ip()
    made = {
        path: requests.post(
            f"{api}{path}", json={"name": "kinds"}, headers={"X-Forwarded-For": ip}, timeout=30
        ).json()
        for path in ("/db/new", "/vector/new", "/cache/new", "/nosql/new", "/queue/new")
    }
    queue = made["/queue/new"]
    env = {
        "DATABASE_URL": made["/db/new"]["internal_url"],
        "VECTOR_URL": made["/vector/new"]["internal_url"],
        "REDIS_URL": made["/cache/new"]["internal_url"],
        "KEY_PREFIX": made["/cache/new"]["key_prefix"],
        "MONGO_URL": made["/nosql/new"]["internal_url"],
        "NATS_URL": queue["internal_url"],
        "NATS_CREDS": queue["credentials"]["creds_file"],
        "SUBJECT_PREFIX": queue["subject_prefix"],
    }
    manifest = "services:\n  kinds:\n    port: 8080\n    env:\n"
    manifest += "".join(f"      {k}: {json.dumps(v)}\n" for k, v in env.items())
    files = {
        "instant.yaml": ("instant.yaml", manifest, "application/yaml"),
        "kinds": (
            "kinds.tar.gz",
            tarball(Dockerfile=EVERY_KIND_DOCKERFILE, **{"kinds.py": EVERY_KIND}),
        ),
    }
    started = requests.post(
        f"{api}/stacks/new",
        data={"name": "kinds"},
        files=files,
        headers={"X-Forwarded-For": fresh_ip()},  # five provisions were that network's day
        timeout=60,
    )
    assert started.status_code == 202, started.text
    slug = started.json()["slug"]

    url = wait(lambda: requests.get(f"{api}/api/v1/stacks/{slug}", timeout=30).json())["stack_url"]

    assert use(url).json() == dict.fromkeys(
        ["postgres", "vector", "redis", "mongodb", "nats"], "ok"
    )
