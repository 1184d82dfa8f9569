"""python -m devstack {up,down,env,serve,run,reap} [--profile dev|test]"""

from __future__ import annotations

import argparse
import logging
import os
import shlex
import signal
import subprocess
import sys
import threading

from devstack.services import port_open
from devstack.stack import ROOT, Stack, get_profile

JOB_INTERVAL_SECONDS = int(os.environ.get("INSTANODE_JOB_INTERVAL", "60"))


def _run_jobs() -> None:
    """chalice local runs no schedules, so the local stack runs the scheduled jobs itself."""
    from chalicelib.jobs.quota import run_quota_job
    from chalicelib.jobs.reaper import run_reaper
    from chalicelib.jobs.reconcile import run_reconciler

    for job in (run_quota_job, run_reaper, run_reconciler):
        try:
            job()
        except Exception:
            logging.exception("%s failed", job.__name__)


def _jobs_forever(stop: threading.Event) -> None:
    _run_jobs()  # at once: a Redis (re)started by `up` gets its tenants' ACLs back
    while not stop.wait(JOB_INTERVAL_SECONDS):
        _run_jobs()


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="devstack")
    parser.add_argument("command", choices=["up", "down", "env", "serve", "run", "reap"])
    parser.add_argument("--profile", type=get_profile, default="dev", help="dev, test, bench[+N]")
    parser.add_argument("--port", type=int, help="serve on this port instead of the profile's")
    args = parser.parse_args(argv)
    stack = Stack(args.profile)
    if args.command == "up":
        started = stack.up()
        print(f"stack '{stack.profile.name}' up; started: {[s.name for s in started] or 'nothing'}")
    elif args.command == "down":
        stack.stop_api()
        stack.remove_apps()
        stack.down()
    elif args.command == "env":
        for key, value in stack.env().items():
            print(f"export {key}={shlex.quote(value)}")
    elif args.command == "reap":
        if not port_open(stack.profile.moto_port):
            print(f"the '{stack.profile.name}' stack is not running (`make run` starts it)")
            return 1
        os.environ.update(stack.env())
        from chalicelib.jobs.reaper import run_reaper

        print(run_reaper().as_json())
    else:
        _serve(stack, args.port or stack.profile.api_port, start_stack=args.command == "run")
    return 0


def _serve(stack: Stack, port: int, start_stack: bool) -> None:
    from devstack.serve import serve

    # Ctrl-C, and SIGTERM from `make stop`, end the server and what this run started (SIGINT is
    # set explicitly: a shell starting us in the background would have left it ignored).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _interrupt)
    started = stack.up() if start_stack else []
    if stack.moto in started:
        stack.remove_apps()  # left by a run that did not stop cleanly: a new moto has no records
    stop = threading.Event()
    if start_stack:
        os.environ.update(stack.env())
        threading.Thread(target=_jobs_forever, args=(stop,), daemon=True).start()
        stack.api_pidfile.write_text(str(os.getpid()))
        if not stack.profile.name.startswith("test"):  # tests build the images they use
            _prepare_base_images(stack)
    print(
        f"instanode API on http://127.0.0.1:{port} (Ctrl-C stops it and what it started)",
        flush=True,
    )
    try:
        serve(stack.env(), port)
    except KeyboardInterrupt:
        pass
    finally:
        stop.set()
        stack.down(started)
        if start_stack:
            stack.api_pidfile.unlink(missing_ok=True)


def _prepare_base_images(stack: Stack) -> None:
    """Build the local deploy backend's base images (python, node, debian: a minute or so
    each, the first time) in a detached process, so the first deploys need not wait; the API
    does not wait for it either. Built images are kept in podman's store: later runs find them
    at once."""
    log_path = stack.state / "base-images.log"
    with open(log_path, "ab") as log:
        # setsid --fork: its own session (Ctrl-C does not stop a build half-way) and not our
        # child (no zombie once it is done); this returns at once
        subprocess.run(
            ["setsid", "--fork", sys.executable, "-m", "chalicelib.deploy.baseimage", "--all"],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
            check=False,
        )
    print(f"preparing the deploy base images in the background: tail -f {log_path}", flush=True)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
