"""instanode: the Chalice app. Routes: chalicelib/routes; scheduled jobs: chalicelib/jobs."""

from __future__ import annotations

from chalice.app import Chalice, Rate

from chalicelib.envelope import envelope
from chalicelib.routes import (
    api,
    auth,
    billing,
    claim,
    deploy,
    docs,
    meta,
    pages,
    provision,
    stacks,
    storage,
    webhooks,
)

app = Chalice(app_name="instanode")
# Real API Gateway passes multipart bodies through intact only when the type is binary.
app.api.binary_types.append("multipart/form-data")
app.register_middleware(envelope, "http")
app.register_blueprint(provision.bp)
app.register_blueprint(meta.bp)
app.register_blueprint(docs.bp)
app.register_blueprint(pages.bp)
app.register_blueprint(storage.bp)
app.register_blueprint(webhooks.bp)
app.register_blueprint(claim.bp)
app.register_blueprint(auth.bp)
app.register_blueprint(api.bp)
app.register_blueprint(billing.bp)
app.register_blueprint(deploy.bp)
app.register_blueprint(stacks.bp)


@app.schedule(Rate(5, unit=Rate.MINUTES))
def reap_expired(event: object) -> dict[str, int]:
    """Remove anonymous resources whose 24h have passed (and stale half-made ones)."""
    from chalicelib.jobs.reaper import run_reaper

    return run_reaper().as_json()


@app.schedule(Rate(5, unit=Rate.MINUTES))
def reap_deploys(event: object) -> dict[str, int]:
    """Remove container deploys whose TTL ran out (auto_24h) and free their slots."""
    from chalicelib.jobs.deploys import run_deploy_reaper

    return run_deploy_reaper().as_json()


@app.schedule(Rate(1, unit=Rate.MINUTES))
def poll_deploys(event: object) -> dict[str, int]:
    """Advance builds and rollouts nobody polls (building -> deploying -> healthy or failed)."""
    from chalicelib.jobs.deploys import run_deploy_poller

    return run_deploy_poller()


@app.schedule(Rate(5, unit=Rate.MINUTES))
def deliver_mail(event: object) -> dict[str, int]:
    """Retry outbox messages the mail server did not accept at once (sign-in links)."""
    import time

    from chalicelib.deps import get_outbox

    report = get_outbox().retry_pending(int(time.time()))
    return {"sent": report.sent, "failed": report.failed}


@app.schedule(Rate(5, unit=Rate.MINUTES))
def enforce_quotas(event: object) -> dict[str, int]:
    """Measure tenants where the backend does not enforce limits itself; restrict the over-quota."""
    from chalicelib.jobs.quota import run_quota_job

    return run_quota_job().as_json()


@app.schedule(Rate(15, unit=Rate.MINUTES))
def reconcile_backends(event: object) -> dict[str, int]:
    """Remove backend objects (roles, users, accounts, prefixes) that no record knows."""
    from chalicelib.jobs.reconcile import run_reconciler

    return run_reconciler().as_json()
