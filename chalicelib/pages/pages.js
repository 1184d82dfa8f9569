// The claim, sign-in, dashboard and CLI-approval pages: <body data-page="..."> names the init
// function below. Values from the URL or the API reach the DOM as text only (textContent and
// append() of strings), never as markup.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const params = new URLSearchParams(location.search);
  const UNREACHABLE = "Could not reach instanode. Check your connection and try again.";

  async function call(method, path, body) {
    const init = { method, credentials: "same-origin", headers: { Accept: "application/json" } };
    if (body !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    try {
      const resp = await fetch(path, init);
      const data = await resp.json().catch(() => ({}));
      return { ok: resp.ok, status: resp.status, data };
    } catch {
      return { ok: false, status: 0, data: { message: UNREACHABLE } };
    }
  }

  function errorText(resp) {
    return resp.data.message || `Something went wrong (HTTP ${resp.status}). Please try again.`;
  }

  function show(id, text) {
    if (text !== undefined) $(id).textContent = text;
    $(id).hidden = false;
  }

  function hide(...ids) {
    for (const id of ids) $(id).hidden = true;
  }

  function el(tag, ...children) {
    const node = document.createElement(tag);
    node.append(...children);
    return node;
  }

  function when(iso) {
    if (!iso) return "never";
    const node = el("time", new Date(iso).toLocaleString());
    node.dateTime = iso;
    return node;
  }

  function onSubmit(formId, buttonId, send) {
    $(formId).addEventListener("submit", async (event) => {
      event.preventDefault();
      $(buttonId).disabled = true;
      try {
        await send();
      } finally {
        $(buttonId).disabled = false;
      }
    });
  }

  // The signed-in user (GET /auth/me), or null after sending the browser to sign in first.
  async function signedIn(next) {
    const me = await call("GET", "/auth/me");
    if (me.status !== 401) return me;
    // Slashes stay readable in the query string; everything else is encoded.
    location.replace(`/login?next=${encodeURIComponent(next).replaceAll("%2F", "/")}`);
    return null;
  }

  async function claim() {
    const token = params.get("t");
    const preview = token && (await call("GET", `/claim/preview?t=${encodeURIComponent(token)}`));
    hide("claim-loading");
    if (preview && !preview.ok) return show("claim-error", errorText(preview));
    if (!preview || !preview.data.token_valid) return show("claim-invalid");
    describeClaim(preview.data);
    show("claim-details");
    onSubmit("claim-form", "claim-submit", async () => {
      hide("claim-error");
      const team = $("team-name").value.trim();
      const body = { token, email: $("email").value, ...(team && { team_name: team }) };
      const resp = await call("POST", "/claim", body);
      if (!resp.ok) return show("claim-error", errorText(resp));
      hide("claim-details");
      $("claim-sent-email").textContent = resp.data.email;
      $("claim-sent-until").append(when(resp.data.link_expires_at));
      show("claim-sent");
    });
  }

  function describeClaim({ resource, items, recycle_blocked }) {
    $("claim-resource").append(
      ...(resource
        ? [el("strong", resource.name), ` · ${resource.kind} · expires `, when(resource.expires_at)]
        : ["The resource this link was made for no longer exists."]),
    );
    $("claim-recycle").hidden = !recycle_blocked;
    for (const item of items) {
      const about = ` (${item.kind}, ${item.tier}), expires `;
      $("claim-items").append(el("li", el("strong", item.name), about, when(item.expires_at)));
    }
    if (!items.length) $("claim-items").append(el("li", "No live resources right now."));
  }

  const LINK_ERRORS = new Map([
    ["link_invalid", "That sign-in link was already used or has expired. Enter your email to get a new one."],
    ["link_in_use", "That sign-in link is being used right now (was it opened twice?). Wait a few seconds, then open it again."],
    ["sign_in_incomplete", "Something went wrong before we could finish signing you in. Open the same sign-in link again to finish: it still works."],
  ]);

  function login() {
    const linkError = LINK_ERRORS.get(params.get("error"));
    if (linkError) show("login-error", linkError);
    const next = params.get("next");
    const safeNext = next && /^\/(?![/\\])/.test(next) ? next : undefined;
    onSubmit("login-form", "login-submit", async () => {
      hide("login-error");
      const email = $("email").value;
      const resp = await call("POST", "/auth/email/start", { email, next: safeNext });
      if (!resp.ok) return show("login-error", errorText(resp));
      hide("login-form");
      $("login-sent-email").textContent = email;
      show("login-sent");
    });
  }

  async function dashboard() {
    const me = await signedIn("/dashboard");
    if (!me) return;
    hide("dashboard-loading");
    if (!me.ok) return show("dashboard-error", errorText(me));
    $("user-email").textContent = me.data.user.email;
    $("team-name").textContent = me.data.team.name;
    $("team-tier").textContent = me.data.team.tier;
    $("logout").addEventListener("click", logout);
    show("account");
    const rows = $("resources").tBodies[0];
    let cursor = null;
    do {
      const query = cursor ? `?cursor=${encodeURIComponent(cursor)}` : "";
      const page = await call("GET", `/api/v1/resources${query}`);
      if (!page.ok) return show("dashboard-error", errorText(page));
      rows.append(...page.data.items.map(resourceRow));
      cursor = page.data.next_cursor;
    } while (cursor);
    $("resources-empty").hidden = rows.rows.length > 0;
  }

  function resourceRow(r) {
    const cells = [r.name, r.kind, r.tier, r.status].map((value) => el("td", value ?? ""));
    const row = el("tr", ...cells, el("td", when(r.expires_at)));
    row.dataset.id = r.id;
    return row;
  }

  async function logout() {
    const resp = await call("POST", "/auth/logout");
    if (!resp.ok) return show("dashboard-error", errorText(resp));
    location.assign("/login");
  }

  async function cliApprove() {
    const session = params.get("session");
    if (!session) {
      hide("approve-loading");
      return show("approve-error", "This link has no session. Run the CLI sign-in again and open the link it prints.");
    }
    const me = await signedIn(location.pathname + location.search);
    if (!me) return;
    hide("approve-loading");
    if (!me.ok) return show("approve-error", errorText(me));
    $("approve-user").textContent = me.data.user.email;
    show("approve-form");
    $("user-code").focus();
    // The code is typed, never taken from the link: a link someone else sent approves nothing.
    onSubmit("approve-form", "approve", async () => {
      hide("approve-error");
      const path = `/auth/cli/${encodeURIComponent(session)}/approve`;
      const resp = await call("POST", path, { user_code: $("user-code").value });
      if (resp.ok) {
        hide("approve-form");
        return show("approved");
      }
      // A wrong code may be typed again while attempts are left; any other refusal is final.
      const retry = resp.data.error === "invalid_user_code" && resp.data.attempts_left > 0;
      if (!retry) hide("approve-form");
      show("approve-error", errorText(resp));
    });
  }

  const pages = { claim, login, dashboard, "cli-approve": cliApprove };
  pages[document.body.dataset.page]();
})();
