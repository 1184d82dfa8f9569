"""What each MCP tool tells the agent: when to use it, what it returns, and the claim story of
anonymous resources. The agent reads only these to choose a tool."""

from __future__ import annotations

CLAIM_STORY = (
    "Anonymous resources (no token configured) work at once but expire 24 hours after creation "
    "unless claimed: the answer carries `upgrade_jwt` and `upgrade` (the claim link) and a "
    "`note`; show the user the `upgrade` link, or call claim_token with their email. Keep "
    "`upgrade_jwt`: claim_resource and claim_token take it."
)

CREATE = {  # tool -> (the SDK namespace, what it makes)
    "create_postgres": (
        "db",
        "Provision a PostgreSQL database (POST /db/new). Use it whenever the code needs a SQL "
        "database. Returns `connection_url` (postgres://USER:PASS@HOST:PORT/DB, for this "
        "machine), `internal_url` (for an app deployed here: use it in create_deploy's env), "
        "`token`, `id`, `tier`, `limits`, `expires_at`.",
    ),
    "create_vector": (
        "vector",
        "Provision a PostgreSQL database with the pgvector extension installed (POST "
        "/vector/new), for embeddings and similarity search (`vector(N)` columns, HNSW and "
        "IVFFlat indexes). Returns the same fields as create_postgres.",
    ),
    "create_cache": (
        "cache",
        "Provision a Redis keyspace with its own ACL user (POST /cache/new). Returns "
        "`connection_url` (redis://USER:PASS@HOST:PORT/0), `internal_url` and `key_prefix`: "
        "every key and channel must start with it (SCAN/KEYS, scripting and SELECT are not "
        "available).",
    ),
    "create_nosql": (
        "nosql",
        "Provision a MongoDB database with a user scoped to it (POST /nosql/new). Returns a "
        "`connection_url` (mongodb://USER:PASS@HOST:PORT/DB?authSource=DB), `internal_url`, and "
        "`limits.connections`, the connection budget.",
    ),
    "create_queue": (
        "queue",
        "Provision a NATS JetStream account of its own (POST /queue/new) for queues, streams and "
        "pub/sub. Returns `connection_url` (nats://HOST:PORT), `credentials` (`nats_jwt`, "
        "`nats_nkey`, `creds_file`) and `subject_prefix`.",
    ),
    "create_storage": (
        "storage",
        "Provision an S3 prefix for files (POST /storage/new). It has no long-lived keys (`mode: "
        "broker`): to read or write an object call presign_storage with this answer's `token`. "
        "Returns `token`, `endpoint`, `prefix`, `connection_url`.",
    ),
    "create_webhook": (
        "webhook",
        "Make a public URL that captures every HTTP request sent to it (POST /webhook/new), to "
        "point Stripe, GitHub or any webhook sender at. Returns `receive_url` (any method, any "
        "path below it) and `token`; the captured requests are at GET "
        "/api/v1/webhooks/<token>/requests (or `instanode webhook tail <token>`).",
    ),
}

TOOLS = {  # tool -> what the agent reads
    "claim_resource": (
        "Turn an `upgrade_jwt` (from any create_* answer) into the claim link to show the user, "
        "and preview what claiming takes (GET /claim/preview: `token_valid`, `token_expires_at`, "
        "`items`: every resource of this network). No side effects, no email sent, no sign-in "
        "needed. Returns the preview plus `claim_url`. Anonymous resources expire 24 hours after "
        "creation unless claimed; use this when the user wants to keep them (or to re-surface "
        "the link), and claim_token when they give you their email."
    ),
    "claim_token": (
        "Claim anonymous resources for the user by email (POST /claim with the `upgrade_jwt` of "
        "any create_* answer and the user's email). Mails them a sign-in link; opening it "
        "creates their account and team and moves every resource of this network into it (Free "
        "tier: same limits, still 24 h until the team upgrades). Returns `email`, `message`, "
        "`link_expires_at`. Ask the user for their email first; a malformed one is "
        "`invalid_email_format`."
    ),
    "get_api_token": (
        "Sign this MCP server in to the user's account (the device flow, POST /auth/cli). Call "
        "it with no arguments: it returns `auth_url`, `user_code` and `session_id`; ask the user "
        "to open `auth_url`, sign in and type `user_code`. Then call it again with `session_id`: "
        "once they approve it returns `api_token` (shown once; a write-scoped API key) and this "
        "server uses it from then on, so provisions belong to their team on its tier (no 24 h "
        "expiry on paid tiers) and the account tools (list_resources, deployments) work. "
        "`status` stays `pending` until approval and is `expired` after 5 minutes."
    ),
    "list_resources": (
        "List the signed-in team's resources (GET /api/v1/resources): each with `id`, `kind`, "
        "`name`, `tier`, `expires_at`, `token`. Needs a token (get_api_token or "
        "INSTANODE_TOKEN)."
    ),
    "delete_resource": (
        "Delete one of the team's resources by `id` (DELETE /api/v1/resources/<id>): its data is "
        "destroyed. Irreversible: only when the user asked for it. Needs a token."
    ),
    "rotate_credentials": (
        "Rotate a resource's credentials (POST /api/v1/resources/<id>/rotate-credentials): "
        "returns the new `connection_url` (and the like); the old credentials stop working at "
        "once, so update every place that used them (.env files, deployments' env via "
        "update_deploy_env). Needs a token."
    ),
    "presign_storage": (
        "Get a short-lived signed URL for one object of a create_storage prefix (POST "
        "/storage/<token>/presign). GET to download; PUT to upload (give `content_length`, the "
        "exact byte size, and send exactly that many bytes); POST for a browser form upload. "
        "Returns `url`, the full `key`, `expires_at` (POST: also the form `fields`)."
    ),
    "create_deploy": (
        "Deploy a container app from a directory on this machine (POST /deploy/new): the "
        "directory (with a Dockerfile at its root; .dockerignore honoured) is packed, uploaded, "
        "built and run. Returns `id`, `status` (`building`), `url`. With `wait`=true it returns "
        "when the app is `healthy` (open `url`), or as an error result `deploy_failed` with the "
        "classified failure (`failure.reason`, `failure.last_lines`, `failure.hint`): fix the "
        "app and call again with `redeploy`=true and the same `name` (same id and URL; without "
        "it a second app is made). get_capabilities' `deploy_base_images` names what FROM can "
        "use. Pass the app its resources' `internal_url` in `env` (e.g. DATABASE_URL). Needs a "
        "signed-in team whose tier deploys apps (get_api_token; a 402 says so); anonymous agents "
        "use create_stack."
    ),
    "create_stack": (
        "Deploy one or more services from an instant.yaml on this machine (POST /stacks/new): "
        "`services: {web: {port, expose, env}, api: {...}}`; each service is built from the "
        "directory named after it next to the manifest (a single service: the manifest's own "
        "directory), and an env value `service://api` is the URL of service api. Works without "
        "an account: anonymous stacks live 6 hours and cannot be changed afterwards; a signed-in "
        "team's stack can (update_stack_env). Returns `slug`, `stack_url`, `services` with their "
        "`status`; poll get_stack."
    ),
    "get_stack": (
        "Read a stack by `slug` (GET /api/v1/stacks/<slug>): per-service `status` and `url`, "
        "`stack_url`, the manifest, env (redacted). Poll it after create_stack until services "
        "are healthy (or failed)."
    ),
    "update_stack_env": (
        'Merge environment variables into a stack (PATCH /stacks/<slug>/env); a value "" deletes '
        "the key. Applied by the stack's next redeploy. Not possible for anonymous stacks."
    ),
    "list_deployments": (
        "List the team's deployments (GET /api/v1/deployments): `id`, `name`, `status`, `url`. "
        "Needs a token."
    ),
    "get_deployment": (
        "Read one deployment (GET /api/v1/deployments/<id>): `status` (building, deploying, "
        "healthy, failed, ...), `url`, `error_message`. Poll it after create_deploy without "
        "wait."
    ),
    "get_deployment_events": (
        "Why a deployment failed (GET /api/v1/deployments/<id>/events): `events`, oldest first, "
        "each with `reason`, `last_lines` (the build or run output) and `hint` (what to fix). "
        "Read it when status is failed, fix the Dockerfile or code, then create_deploy with "
        "redeploy=true."
    ),
    "redeploy": (
        "Rebuild and restart a deployment from its last uploaded source as a new revision (POST "
        "/deploy/<id>/redeploy): same id and URL, e.g. after a transient failure. To ship "
        "changed code use create_deploy with redeploy=true and the same name instead. `wait` as "
        "in create_deploy."
    ),
    "update_deploy_env": (
        'Merge environment variables into a deployment (PATCH /deploy/<id>/env); a value "" '
        "deletes the key. This rolls out a new revision with them at once (same id and URL); "
        "`wait` as in create_deploy."
    ),
    "delete_deployment": (
        "Delete a deployment (DELETE /api/v1/deployments/<id>). On a team with an email this is "
        "two steps: it answers `pending_confirmation` and mails the user a confirmation; relay "
        "the `agent_action`. `skip_email_confirmation`=true deletes at once: only with the "
        "user's explicit consent. Irreversible."
    ),
    "get_capabilities": (
        "What each tier may do (GET /api/v1/capabilities): limits per resource kind, how many "
        "apps a tier may deploy, and `deploy_base_images` (what a Dockerfile's FROM can name "
        "here). No token needed; read it before a deploy or when a create answers 402."
    ),
}
