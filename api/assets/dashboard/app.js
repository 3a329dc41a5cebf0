// durable-jobs dashboard: plain JavaScript, no build step, no third-party code.
//
// Data flow: REST (`/v1/queues`, `/v1/jobs`, `/v1/jobs/{id}`, `/v1/jobs/{id}/events`) gives the
// state; the WebSocket `/v1/events` gives every change after that. While the socket is down the
// page polls REST every second and keeps reconnecting with backoff, resuming with
// `since=<last event id>`; after a `gap` message it reloads everything over REST.
//
// Ordering: a REST answer can be older than an event that arrived while it was in flight. Each
// event bumps `state.seq`, and each job remembers the seq of its last event; a REST answer
// requested at seq N never overwrites the status of a job that has seen an event after N.
// Events arrive in order, so the table converges on the latest state.
//
// Everything the server sends is inserted as text (never as HTML).
"use strict";

(() => {
  const TOKEN_KEY = "durable-jobs.token";
  const PAGE_SIZE = 50;
  const MAX_ROWS = 200;
  const MAX_FEED = 100;
  const POLL_MS = 1000;
  const QUEUES_MIN_INTERVAL_MS = 1000;
  const QUEUES_IDLE_REFRESH_MS = 10000;
  const RECONNECT_BASE_MS = 500;
  const RECONNECT_MAX_MS = 15000;
  const STATUSES = ["queued", "scheduled", "running", "retrying", "succeeded", "failed", "cancelled"];
  const RETRYABLE = new Set(["failed", "cancelled"]);
  const CANCELLABLE = new Set(["queued", "scheduled", "retrying", "running"]);
  const TEMPLATES = {
    sleep: { ms: 300 },
    noop: {},
    fail: { times: 1, permanent: false },
    "email.send": { to: "ada@example.org", subject: "Hello", text: "Sent from the dashboard" },
  };

  const $ = (id) => document.getElementById(id);

  const state = {
    token: null,
    claims: null,
    /** id → { record, seq, row } */
    jobs: new Map(),
    seq: 0,
    lastEventId: null,
    /** Recent event ids: an event delivered twice (a replay overlapping the live stream) counts once. */
    seenEvents: new Set(),
    cursor: null,
    trimmed: false,
    filter: "",
    detailId: null,
    /** Events for the open job, so a history fetched meanwhile misses none. */
    detailLive: [],
    ws: null,
    live: false,
    failures: 0,
    timers: { reconnect: 0, poll: 0, expiry: 0, queues: 0, queuesIdle: 0, fetch: 0, banner: 0 },
    queuesAt: 0,
    queuesBusy: false,
    pendingFetch: new Set(),
    opener: null,
  };

  // ---------------------------------------------------------------- helpers

  /** Builds an element: h("td", {class: "num"}, "3"). */
  function h(tag, attrs, ...children) {
    const el = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === undefined || value === null || value === false) continue;
      if (key === "class") el.className = value;
      else if (key.startsWith("data-") || key.startsWith("aria-") || key === "title" || key === "type" || key === "role") {
        el.setAttribute(key, String(value));
      } else el[key] = value;
    }
    for (const child of children.flat()) {
      if (child === null || child === undefined || child === false) continue;
      el.append(child instanceof Node ? child : String(child));
    }
    return el;
  }

  const short = (id) => (id || "").slice(-12);
  const pad = (n, w = 2) => String(n).padStart(w, "0");

  function clock(at, withMs) {
    const d = new Date(at);
    if (Number.isNaN(d.getTime())) return "";
    const time = `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
    return withMs ? `${time}.${pad(d.getMilliseconds(), 3)}` : time;
  }

  function when(at) {
    if (!at) return "—";
    const d = new Date(at);
    if (Number.isNaN(d.getTime())) return String(at);
    const today = new Date().toDateString() === d.toDateString();
    return today ? clock(at) : `${d.toLocaleDateString()} ${clock(at)}`;
  }

  function duration(ms) {
    if (!ms) return "0";
    if (ms < 1000) return `${ms} ms`;
    if (ms < 60000) return `${(ms / 1000).toFixed(1)} s`;
    if (ms < 3600000) return `${Math.round(ms / 60000)} min`;
    return `${(ms / 3600000).toFixed(1)} h`;
  }

  function badge(status) {
    return h("span", { class: "badge", "data-status": status, "data-field": "status" }, status);
  }

  function showBanner(text, kind = "error") {
    $("banner-text").textContent = text;
    $("banner").dataset.kind = kind;
    $("banner").hidden = false;
    clearTimeout(state.timers.banner);
    if (kind === "info") state.timers.banner = setTimeout(hideBanner, 6000);
  }

  function hideBanner() {
    $("banner").hidden = true;
  }

  // ---------------------------------------------------------------- REST

  class ApiError extends Error {
    constructor(status, code, message, field) {
      super(message);
      this.status = status;
      this.code = code;
      this.field = field;
    }
  }

  /** "message (field payload.ms) [validation_failed, 422]" */
  function describe(err) {
    if (!(err instanceof ApiError)) return String((err && err.message) || err);
    const field = err.field ? ` (field ${err.field})` : "";
    const code = err.status ? ` [${err.code}, ${err.status}]` : "";
    if (err.status === 403) return `Not allowed: ${err.message}${code}`;
    return `${err.message}${field}${code}`;
  }

  /** `quiet401`: the caller handles a 401 itself (signing in) instead of being signed out. */
  async function api(method, path, body, { quiet401 = false } = {}) {
    const headers = { Accept: "application/json", Authorization: `Bearer ${state.token}` };
    const init = { method, headers, cache: "no-store" };
    if (body !== undefined) {
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    let response;
    try {
      response = await fetch(path, init);
    } catch (err) {
      throw new ApiError(0, "network", `Cannot reach the API (${err.message}).`);
    }
    const text = await response.text();
    let data = null;
    try {
      data = text ? JSON.parse(text) : null;
    } catch {
      data = null;
    }
    if (!response.ok) {
      const err = new ApiError(
        response.status,
        (data && data.code) || `http_${response.status}`,
        (data && data.message) || response.statusText || `HTTP ${response.status}`,
        data && data.field,
      );
      if (response.status === 401 && state.token && !quiet401) {
        signOut(`The API refused the token: ${err.message}. Sign in again.`);
      }
      throw err;
    }
    return data;
  }

  // ---------------------------------------------------------------- session

  function decodeClaims(token) {
    const parts = token.split(".");
    if (parts.length !== 3) throw new Error("This is not a JWT: it should have three parts separated by dots.");
    const b64 = parts[1].replace(/-/g, "+").replace(/_/g, "/");
    const padded = b64 + "===".slice((b64.length + 3) % 4);
    const bytes = Uint8Array.from(atob(padded), (c) => c.charCodeAt(0));
    const claims = JSON.parse(new TextDecoder().decode(bytes));
    if (!claims || typeof claims !== "object") throw new Error("The token's payload is not a JSON object.");
    return claims;
  }

  async function signIn(raw) {
    const token = raw.trim().replace(/^Bearer\s+/i, "");
    const error = $("signin-error");
    error.hidden = true;
    let claims;
    try {
      if (!token) throw new Error("Paste a token first.");
      claims = decodeClaims(token);
    } catch (err) {
      showSignIn(err.message.startsWith("This") || err.message.startsWith("Paste")
        ? err.message : `This token cannot be read: ${err.message}`);
      return;
    }
    if (typeof claims.exp === "number" && claims.exp * 1000 <= Date.now()) {
      showSignIn(`This token expired at ${new Date(claims.exp * 1000).toLocaleString()}. Mint a fresh one.`);
      return;
    }
    state.token = token;
    $("sign-in").disabled = true;
    let forbidden = null;
    try {
      await api("GET", "/v1/queues", undefined, { quiet401: true });
    } catch (err) {
      if (err.status === 403) {
        forbidden = err;
      } else {
        state.token = null;
        $("sign-in").disabled = false;
        const why = err.status === 401 ? `The API refused this token (401): ${err.message}` : describe(err);
        showSignIn(why);
        return;
      }
    }
    $("sign-in").disabled = false;
    state.claims = claims;
    sessionStorage.setItem(TOKEN_KEY, token);
    showApp();
    if (forbidden) showBanner(`This token cannot read jobs: ${forbidden.message}. Lists stay empty.`);
  }

  function signOut(message) {
    const ws = state.ws;
    state.token = null;
    state.claims = null;
    state.ws = null;
    if (ws) ws.close(1000, "signed out");
    for (const key of Object.keys(state.timers)) {
      clearTimeout(state.timers[key]);
      clearInterval(state.timers[key]);
      state.timers[key] = 0;
    }
    sessionStorage.removeItem(TOKEN_KEY);
    closeDetail();
    resetData();
    setConnection("offline");
    showSignIn(message);
  }

  function resetData() {
    state.jobs.clear();
    state.seq = 0;
    state.lastEventId = null;
    state.seenEvents.clear();
    state.cursor = null;
    state.trimmed = false;
    state.failures = 0;
    state.live = false;
    state.pendingFetch.clear();
    $("jobs-body").replaceChildren();
    $("queues-body").replaceChildren();
    $("feed").replaceChildren();
    $("feed-empty").hidden = false;
  }

  function showSignIn(message) {
    $("app-view").hidden = true;
    $("session").hidden = true;
    $("signin-view").hidden = false;
    hideBanner();
    const error = $("signin-error");
    error.textContent = message || "";
    error.hidden = !message;
    $("token-input").value = "";
    $("token-input").focus();
  }

  function showApp() {
    const claims = state.claims;
    $("signin-view").hidden = true;
    $("app-view").hidden = false;
    $("session").hidden = false;
    $("session-tenant").textContent = claims.tenant || "?";
    const scopes = String(claims.scope || "").split(/\s+/).filter(Boolean);
    $("session-scopes").replaceChildren(...scopes.map((s) => h("span", { class: "scope" }, s)));
    $("session-scopes").title = claims.sub ? `subject ${claims.sub}` : "";
    if (typeof claims.exp === "number") {
      const left = Math.min(claims.exp * 1000 - Date.now(), 2 ** 31 - 1);
      state.timers.expiry = setTimeout(() => signOut("Your token expired. Sign in again with a fresh one."), left);
    }
    fillTemplate();
    resync();
    connect();
    state.timers.queuesIdle = setInterval(scheduleQueues, QUEUES_IDLE_REFRESH_MS);
  }

  // ---------------------------------------------------------------- live events

  function setConnection(mode) {
    const text = { live: "live", connecting: "connecting…", polling: "polling every 1 s", offline: "offline" }[mode];
    $("connection").dataset.state = mode;
    $("connection-text").textContent = text;
  }

  function connect() {
    clearTimeout(state.timers.reconnect);
    if (!state.token) return;
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    const resume = state.lastEventId;
    const url = `${scheme}//${location.host}/v1/events${resume ? `?since=${encodeURIComponent(resume)}` : ""}`;
    if (!state.live) setConnection(state.timers.poll ? "polling" : "connecting");
    let ws;
    try {
      // The token travels as a subprotocol: browsers cannot set headers on a WebSocket.
      ws = new WebSocket(url, ["bearer", state.token]);
    } catch {
      disconnected(null, 1006);
      return;
    }
    state.ws = ws;
    ws.onopen = () => {
      if (state.ws !== ws) return;
      state.live = true;
      state.failures = 0;
      stopPolling();
      setConnection("live");
      // Without `since` the socket starts now: load what happened before it.
      if (!resume) resync();
      else {
        addNotice("Reconnected; resuming after the last event seen.");
        scheduleQueues();
      }
    };
    ws.onmessage = (message) => {
      if (state.ws !== ws) return;
      let msg;
      try {
        msg = JSON.parse(message.data);
      } catch {
        return;
      }
      handleMessage(msg);
    };
    ws.onclose = (event) => disconnected(ws, event.code);
  }

  function disconnected(ws, code) {
    if (ws && state.ws !== ws) return;
    const wasLive = state.live;
    state.ws = null;
    state.live = false;
    if (!state.token) return;
    if (wasLive && code !== 1008) addNotice(`Live connection closed (${code}); polling while reconnecting.`);
    if (code === 1008) {
      signOut("Your session ended (token expired or revoked). Sign in again.");
      return;
    }
    startPolling();
    state.failures += 1;
    const backoff = Math.min(RECONNECT_MAX_MS, RECONNECT_BASE_MS * 2 ** Math.min(state.failures - 1, 10));
    // 1013: the server dropped a slow reader; come back at once and resume.
    const delay = code === 1013 ? 250 : backoff / 2 + Math.random() * (backoff / 2);
    state.timers.reconnect = setTimeout(connect, delay);
  }

  function handleMessage(msg) {
    switch (msg.op) {
      case "event":
        onEvent(msg);
        break;
      case "snapshot":
        if (msg.job) {
          state.seq += 1;
          if (msg.id) state.lastEventId = msg.id;
          applyRecord(msg.job, { live: true });
        }
        break;
      case "gap":
        addNotice("Some events were missed (trimmed on the server); reloading.");
        if (msg.oldest) state.lastEventId = null;
        resync();
        break;
      case "error":
        showBanner(`Live updates: ${msg.message || msg.code}`);
        break;
      default:
        break;
    }
  }

  function onEvent(ev) {
    if (ev.id) {
      if (state.seenEvents.has(ev.id)) return;
      state.seenEvents.add(ev.id);
      if (state.seenEvents.size > 2000) state.seenEvents.delete(state.seenEvents.values().next().value);
    }
    state.seq += 1;
    if (ev.id) state.lastEventId = ev.id;
    addFeed(ev);
    const entry = state.jobs.get(ev.job_id);
    if (entry) {
      const record = { ...entry.record, status: ev.status };
      if (typeof ev.attempt === "number") record.attempts = ev.attempt;
      if (ev.error) record.last_error = ev.error;
      if (ev.status === "running") record.started_at = ev.at;
      if (["succeeded", "failed", "cancelled"].includes(ev.status)) record.finished_at = ev.at;
      if (ev.status === "queued" && ev.attempt === 0) record.finished_at = null;
      entry.record = record;
      entry.seq = state.seq;
      renderRow(entry);
    } else if (!state.filter || state.filter === ev.status) {
      const record = {
        id: ev.job_id, type: ev.type, queue: ev.queue, status: ev.status, attempts: ev.attempt,
        created_at: ev.at, last_error: ev.error || null,
      };
      insertJob(record, state.seq);
      fetchSoon(ev.job_id);
    }
    if (state.detailId === ev.job_id) {
      state.detailLive.push({ seq: state.seq, entry: { status: ev.status, attempt: ev.attempt, at: ev.at, error: ev.error } });
      const live = state.jobs.get(ev.job_id);
      if (live) renderDetailRecord(live.record);
      else if (detailRecord) renderDetailRecord({ ...detailRecord, status: ev.status, attempts: ev.attempt });
      renderHistory(mergeHistory(currentHistory, 0));
    }
    scheduleQueues();
  }

  // ---------------------------------------------------------------- polling fallback

  function startPolling() {
    if (state.timers.poll) return;
    setConnection("polling");
    state.timers.poll = setInterval(poll, POLL_MS);
  }

  function stopPolling() {
    clearInterval(state.timers.poll);
    state.timers.poll = 0;
  }

  async function poll() {
    if (!state.token || state.live) return;
    try {
      await Promise.all([mergeFirstPage(true), refreshQueues(), state.detailId ? loadDetail() : null]);
    } catch (err) {
      if (err.status !== 401) setConnection("polling");
    }
  }

  // ---------------------------------------------------------------- jobs table

  function resync() {
    loadJobs(true).catch(reportLoad);
    refreshQueues().catch(reportLoad);
    if (state.detailId) loadDetail().catch(() => {});
  }

  function reportLoad(err) {
    if (err.status === 401) return;
    showBanner(`Could not load: ${describe(err)}`);
  }

  async function loadJobs(reset) {
    const seq0 = state.seq;
    const params = new URLSearchParams({ limit: String(PAGE_SIZE) });
    if (state.filter) params.set("status", state.filter);
    if (!reset && state.cursor) params.set("cursor", state.cursor);
    const page = await api("GET", `/v1/jobs?${params}`);
    if (reset) {
      const ids = new Set(page.jobs.map((job) => job.id));
      for (const [id, entry] of state.jobs) {
        if (!ids.has(id) && entry.seq <= seq0) removeJob(id);
      }
      state.trimmed = false;
    }
    for (const record of page.jobs) applyRecord(record, { since: seq0 });
    state.cursor = page.next_cursor;
    updateJobsChrome();
  }

  /** Polling: the newest page merged into the table; changes go to the feed too. */
  async function mergeFirstPage(report) {
    const seq0 = state.seq;
    const params = new URLSearchParams({ limit: String(PAGE_SIZE) });
    if (state.filter) params.set("status", state.filter);
    const page = await api("GET", `/v1/jobs?${params}`);
    for (const record of page.jobs) {
      const before = state.jobs.get(record.id);
      const changed = !before || before.record.status !== record.status || before.record.attempts !== record.attempts;
      applyRecord(record, { since: seq0 });
      if (report && changed) {
        addFeed({ job_id: record.id, type: record.type, queue: record.queue, status: record.status,
          attempt: record.attempts, at: new Date().toISOString(), error: record.status === "failed" ? record.last_error : null,
          polled: true });
      }
    }
    if (!state.cursor) state.cursor = page.next_cursor;
    updateJobsChrome();
  }

  /**
   * Puts a REST record into the table. `since`: the event seq when the request left; events seen
   * after it win over this answer's status. `live`: the record comes from the socket itself.
   */
  function applyRecord(record, { since = Infinity, live = false } = {}) {
    if (!state.token) return; // an answer that arrived after signing out
    let entry = state.jobs.get(record.id);
    if (!entry) {
      if (state.filter && state.filter !== record.status && !live) return;
      insertJob(record, live ? state.seq : 0);
      return;
    }
    const merged = { ...entry.record, ...record };
    if (!live && entry.seq > since) {
      merged.status = entry.record.status;
      merged.attempts = entry.record.attempts;
    }
    entry.record = merged;
    if (live) entry.seq = state.seq;
    renderRow(entry);
    if (state.detailId === record.id) renderDetailRecord(merged);
  }

  function insertJob(record, seq) {
    const row = h("tr", { "data-job-id": record.id });
    const entry = { record, seq, row };
    state.jobs.set(record.id, entry);
    renderRow(entry);
    // UUIDv7 ids sort by creation time: keep the table newest first.
    const body = $("jobs-body");
    let before = null;
    for (const other of body.children) {
      if (other.dataset.jobId < record.id) {
        before = other;
        break;
      }
    }
    body.insertBefore(row, before);
    while (body.children.length > MAX_ROWS) {
      removeJob(body.lastElementChild.dataset.jobId);
      state.trimmed = true;
    }
    updateJobsChrome();
  }

  function removeJob(id) {
    const entry = state.jobs.get(id);
    if (!entry) return;
    entry.row.remove();
    state.jobs.delete(id);
  }

  function updateJobsChrome() {
    $("jobs-empty").hidden = state.jobs.size > 0;
    $("jobs-more").hidden = !state.cursor || state.trimmed;
  }

  function renderRow(entry) {
    const { record, row } = entry;
    if (row.dataset.status !== record.status) {
      row.dataset.status = record.status;
      row.classList.add("flash");
      requestAnimationFrame(() => requestAnimationFrame(() => row.classList.remove("flash")));
    }
    const attempts = record.max_attempts ? `${record.attempts ?? 0} / ${record.max_attempts}` : `${record.attempts ?? 0}`;
    const actions = h("div", { class: "actions" });
    if (RETRYABLE.has(record.status)) {
      actions.append(h("button", { type: "button", class: "btn btn-sm", "data-action": "retry",
        "aria-label": `Retry job ${record.id}` }, "Retry"));
    }
    if (CANCELLABLE.has(record.status) && !record.cancel_requested) {
      actions.append(h("button", { type: "button", class: "btn btn-sm btn-danger", "data-action": "cancel",
        "aria-label": `Cancel job ${record.id}` }, "Cancel"));
    }
    row.replaceChildren(
      h("td", {}, h("button", { type: "button", class: "job-link", "data-action": "open", title: record.id,
        "aria-label": `Open job ${record.id}` }, short(record.id))),
      h("td", {}, record.type || ""),
      h("td", {}, record.queue || ""),
      h("td", {}, badge(record.status)),
      h("td", { class: "num", "data-field": "attempts" }, attempts),
      h("td", { title: record.created_at || "" }, when(record.created_at)),
      h("td", {}, actions),
    );
  }

  /** Full records for jobs first seen in an event; batched, so a burst costs few requests. */
  function fetchSoon(id) {
    state.pendingFetch.add(id);
    if (state.timers.fetch) return;
    state.timers.fetch = setTimeout(() => {
      state.timers.fetch = 0;
      const ids = [...state.pendingFetch].slice(0, 20);
      state.pendingFetch.clear();
      for (const jobId of ids) {
        const seq0 = state.seq;
        api("GET", `/v1/jobs/${encodeURIComponent(jobId)}`)
          .then((record) => state.jobs.has(jobId) && applyRecord(record, { since: seq0 }))
          .catch(() => {});
      }
    }, 200);
  }

  async function act(action, id, button) {
    if (button) button.disabled = true;
    const seq0 = state.seq;
    try {
      const record = await api("POST", `/v1/jobs/${encodeURIComponent(id)}/${action}`);
      applyRecord(record, { since: seq0 });
      if (state.detailId === id) loadDetail().catch(() => {});
      const what = action === "retry" ? "queued again" : record.status === "cancelled" ? "cancelled"
        : "asked to stop (it is running; it will not be retried)";
      showBanner(`Job ${short(id)} ${what}.`, "info");
      scheduleQueues();
    } catch (err) {
      if (err.status !== 401) showBanner(`Could not ${action} job ${short(id)}: ${describe(err)}`);
    } finally {
      if (button) button.disabled = false;
    }
  }

  // ---------------------------------------------------------------- queues

  function scheduleQueues() {
    if (state.timers.queues || !state.token) return;
    const wait = Math.max(0, state.queuesAt + QUEUES_MIN_INTERVAL_MS - Date.now());
    state.timers.queues = setTimeout(() => {
      state.timers.queues = 0;
      refreshQueues().catch(() => {});
    }, wait);
  }

  async function refreshQueues() {
    if (state.queuesBusy) return;
    state.queuesBusy = true;
    state.queuesAt = Date.now();
    try {
      renderQueues(await api("GET", "/v1/queues"));
    } finally {
      state.queuesBusy = false;
    }
  }

  function renderQueues(overview) {
    if (!state.token) return;
    const queues = (overview && overview.queues) || [];
    const cell = (q, status, cls) =>
      h("td", { class: `num ${q[status] === 0 ? "zero" : cls || ""}`, "data-count": status }, String(q[status]));
    $("queues-body").replaceChildren(...queues.map((q) => h("tr", { "data-queue": q.name },
      h("th", { scope: "row" }, q.name),
      cell(q, "queued", "hot"),
      cell(q, "scheduled"),
      cell(q, "running", "hot"),
      cell(q, "retrying"),
      cell(q, "succeeded", "good"),
      cell(q, "failed", "bad"),
      cell(q, "cancelled"),
      // Latency and workers are operators' views: only `admin` tokens get them.
      h("td", { class: `num ${q.latency_ms ? "" : "zero"}` }, q.latency_ms === undefined ? "–" : duration(q.latency_ms)),
    )));
    $("queues-empty").hidden = queues.length > 0;
    if (!overview || !overview.workers) {
      $("workers-summary").textContent = "workers: admin only";
      return;
    }
    const workers = overview.workers.length;
    $("workers-summary").textContent = workers === 0 ? "no live workers" : `${workers} live worker${workers === 1 ? "" : "s"}`;
  }

  // ---------------------------------------------------------------- feed

  function addFeed(ev) {
    const li = h("li", { "data-job-id": ev.job_id, "data-status": ev.status, "data-event-id": ev.id },
      h("span", { class: "ev-status" }, badge(ev.status)),
      h("button", { type: "button", class: "job-link ev-job", "data-action": "open", title: ev.job_id,
        "aria-label": `Open job ${ev.job_id}` }, short(ev.job_id)),
      h("span", { class: "ev-meta" }, `${ev.type || ""} · ${ev.queue || ""} · attempt ${ev.attempt ?? 0}${ev.polled ? " · polled" : ""}`),
      h("span", { class: "ev-time", title: ev.at || "" }, clock(ev.at, true)),
      ev.error ? h("span", { class: "ev-error" }, ev.error) : null,
    );
    pushFeed(li);
  }

  function addNotice(text) {
    pushFeed(h("li", { class: "notice" }, h("span", {}, text), h("span", { class: "ev-time" }, clock(Date.now(), true))));
  }

  function pushFeed(li) {
    const feed = $("feed");
    feed.prepend(li);
    while (feed.children.length > MAX_FEED) feed.lastElementChild.remove();
    $("feed-empty").hidden = true;
  }

  // ---------------------------------------------------------------- detail

  let currentHistory = [];
  /** The record the detail view shows. */
  let detailRecord = null;

  function openDetail(id, opener) {
    state.detailId = id;
    state.detailLive = [];
    state.opener = opener || document.activeElement;
    currentHistory = [];
    detailRecord = null;
    $("detail-id").textContent = id;
    $("detail-title").textContent = "Job";
    $("detail-fields").replaceChildren();
    $("job-history").replaceChildren();
    $("detail-payload").textContent = "";
    $("detail-error").hidden = true;
    $("job-detail").dataset.jobId = id;
    $("job-detail").hidden = false;
    $("detail-backdrop").hidden = false;
    $("detail-close").focus();
    const known = state.jobs.get(id);
    if (known) renderDetailRecord(known.record);
    loadDetail().catch((err) => {
      $("detail-error").textContent = `Could not load this job: ${describe(err)}`;
      $("detail-error").hidden = false;
    });
  }

  function closeDetail() {
    if (!state.detailId) return;
    state.detailId = null;
    state.detailLive = [];
    $("job-detail").hidden = true;
    $("detail-backdrop").hidden = true;
    if (state.opener && state.opener.isConnected) state.opener.focus();
  }

  async function loadDetail() {
    const id = state.detailId;
    if (!id) return;
    const seq0 = state.seq;
    const path = `/v1/jobs/${encodeURIComponent(id)}`;
    const [record, history] = await Promise.all([api("GET", path), api("GET", `${path}/events`)]);
    if (state.detailId !== id) return;
    applyRecord(record, { since: seq0 });
    const entry = state.jobs.get(id);
    renderDetailRecord(entry && entry.seq > seq0 ? { ...record, status: entry.record.status } : record);
    currentHistory = history.events || [];
    renderHistory(mergeHistory(currentHistory, seq0));
  }

  /** The fetched history plus events that arrived after the request left and it may lack. */
  function mergeHistory(fetched, seq0) {
    const key = (e) => `${e.status}|${e.attempt}|${Date.parse(e.at)}`;
    const seen = new Set(fetched.map(key));
    const extra = state.detailLive.filter((l) => l.seq > seq0 && !seen.has(key(l.entry))).map((l) => l.entry);
    return [...fetched, ...extra];
  }

  function renderDetailRecord(record) {
    detailRecord = record;
    $("detail-title").textContent = record.type ? `${record.type} job` : "Job";
    $("detail-status").replaceChildren(badge(record.status));
    $("detail-retry").hidden = !RETRYABLE.has(record.status);
    $("detail-cancel").hidden = !CANCELLABLE.has(record.status) || record.cancel_requested;
    const rows = [
      ["Queue", record.queue],
      ["Attempts", record.max_attempts ? `${record.attempts} of ${record.max_attempts}` : record.attempts],
      ["Created", record.created_at && `${when(record.created_at)}`],
      ["Due", record.scheduled_at && when(record.scheduled_at)],
      ["Started", record.started_at && when(record.started_at)],
      ["Finished", record.finished_at && when(record.finished_at)],
      ["Timeout", record.timeout_ms && duration(record.timeout_ms)],
      ["Cancel requested", record.cancel_requested ? "yes" : null],
    ].filter(([, v]) => v !== undefined && v !== null && v !== "");
    $("detail-fields").replaceChildren(...rows.flatMap(([k, v]) => [h("dt", {}, k), h("dd", {}, String(v))]));
    if (record.payload !== undefined) $("detail-payload").textContent = JSON.stringify(record.payload, null, 2);
    const hasResult = record.result !== undefined && record.result !== null;
    $("detail-result-wrap").hidden = !hasResult;
    $("detail-result").textContent = hasResult ? JSON.stringify(record.result, null, 2) : "";
    $("detail-last-error-wrap").hidden = !record.last_error;
    $("detail-last-error").textContent = record.last_error || "";
  }

  function renderHistory(events) {
    $("job-history").replaceChildren(...events.map((e) => h("li", { "data-status": e.status },
      badge(e.status),
      h("span", { class: "when", title: e.at }, `attempt ${e.attempt ?? 0} · ${when(e.at)}.${pad(new Date(e.at).getMilliseconds(), 3)}`),
      e.error ? h("span", { class: "err" }, e.error) : null,
    )));
  }

  // ---------------------------------------------------------------- submit form

  function fillTemplate() {
    const type = $("job-type").value;
    $("job-payload").value = JSON.stringify(TEMPLATES[type] || {}, null, 2);
  }

  async function submitJob(event) {
    event.preventDefault();
    const result = $("submit-result");
    const show = (text, kind, id) => {
      result.textContent = text;
      result.dataset.kind = kind;
      if (id) result.dataset.jobId = id;
      else delete result.dataset.jobId;
    };
    let payload;
    try {
      const text = $("job-payload").value.trim();
      payload = text ? JSON.parse(text) : {};
    } catch (err) {
      show(`The payload is not valid JSON: ${err.message}`, "error");
      $("job-payload").focus();
      return;
    }
    const body = { type: $("job-type").value, payload };
    const queue = $("job-queue").value.trim();
    if (queue) body.queue = queue;
    const delay = $("job-delay").value.trim();
    if (delay) body.delay_ms = Number(delay);
    const button = $("submit-job");
    button.disabled = true;
    const seq0 = state.seq;
    try {
      const record = await api("POST", "/v1/jobs", body);
      if (!state.jobs.has(record.id) && state.filter && state.filter !== record.status) {
        show(`Submitted ${record.id} (${record.status}); hidden by the status filter.`, "ok", record.id);
      } else {
        show(`Submitted ${record.type} job ${record.id}.`, "ok", record.id);
      }
      applyRecord(record, { since: seq0 });
      scheduleQueues();
    } catch (err) {
      if (err.status !== 401) show(`Rejected: ${describe(err)}`, "error");
    } finally {
      button.disabled = false;
    }
  }

  // ---------------------------------------------------------------- wiring

  function onTableClick(event) {
    const button = event.target.closest("button[data-action]");
    if (!button) return;
    const holder = button.closest("[data-job-id]");
    if (!holder) return;
    const id = holder.dataset.jobId;
    if (button.dataset.action === "open") openDetail(id, button);
    else act(button.dataset.action, id, button);
  }

  function init() {
    const select = $("jobs-filter-status");
    if (select.options.length !== STATUSES.length + 1) throw new Error("status filter out of date");
    $("signin-form").addEventListener("submit", (e) => {
      e.preventDefault();
      signIn($("token-input").value);
    });
    $("sign-out").addEventListener("click", () => signOut());
    $("banner-close").addEventListener("click", hideBanner);
    $("job-type").addEventListener("change", fillTemplate);
    $("submit-form").addEventListener("submit", submitJob);
    $("jobs-body").addEventListener("click", onTableClick);
    $("feed").addEventListener("click", onTableClick);
    $("jobs-refresh").addEventListener("click", () => resync());
    $("jobs-more").addEventListener("click", () => loadJobs(false).catch(reportLoad));
    select.addEventListener("change", () => {
      state.filter = select.value;
      state.cursor = null;
      loadJobs(true).catch(reportLoad);
    });
    $("feed-clear").addEventListener("click", () => {
      $("feed").replaceChildren();
      $("feed-empty").hidden = false;
    });
    $("detail-close").addEventListener("click", closeDetail);
    $("detail-backdrop").addEventListener("click", closeDetail);
    $("detail-retry").addEventListener("click", (e) => act("retry", state.detailId, e.currentTarget));
    $("detail-cancel").addEventListener("click", (e) => act("cancel", state.detailId, e.currentTarget));
    document.addEventListener("keydown", (e) => {
      if (e.key === "Escape") closeDetail();
    });

    const saved = sessionStorage.getItem(TOKEN_KEY);
    if (saved) signIn(saved);
    else showSignIn();
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init);
  else init();
})();
