// Real-browser test of the dashboard: Debian's chromium, headless, driven by playwright-core,
// against a running API and worker (worker/tests/dashboard.rs starts them and runs this).
//
//   BASE_URL    the API, e.g. http://127.0.0.1:8080 (required; must be 127.0.0.1)
//   TOKEN       a JWT with jobs:write and jobs:read (required)
//   TENANT      the tenant the token is for (optional; checked when set)
//   SCREENSHOT  where to save the PNG (default dashboard.png); the detail view goes beside it
//   CHROMIUM    the browser binary (default /usr/bin/chromium)
//   TIMEOUT_MS  the whole run's budget (default 120000)
//   ALLOW_POLLING=1  accept the REST polling fallback when the WebSocket does not connect
//
// It fails on any request to a host other than 127.0.0.1 (WebSockets included), on any console
// error or uncaught page error, and when a step does not happen in time. Exit code 0 = passed.

import { mkdtempSync, mkdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { chromium } from "playwright-core";

const env = process.env;
const BASE_URL = env.BASE_URL;
const TOKEN = env.TOKEN;
const SCREENSHOT = resolve(env.SCREENSHOT || "dashboard.png");
const DETAIL_SCREENSHOT = SCREENSHOT.replace(/(\.png)?$/i, "-detail.png");
const FAILURE_SCREENSHOT = SCREENSHOT.replace(/(\.png)?$/i, "-failure.png");
const CHROMIUM = env.CHROMIUM || "/usr/bin/chromium";
const TIMEOUT_MS = Number(env.TIMEOUT_MS || 120000);
const ALLOW_POLLING = env.ALLOW_POLLING === "1";
const ALLOWED_HOST = "127.0.0.1";

const started = Date.now();
const log = (...args) => console.log(`[dashboard +${((Date.now() - started) / 1000).toFixed(1)}s]`, ...args);

function fail(message) {
  const err = new Error(message);
  err.isTestFailure = true;
  throw err;
}

if (!BASE_URL || !TOKEN) {
  console.error("dashboard.mjs: set BASE_URL and TOKEN");
  process.exit(2);
}
if (new URL(BASE_URL).hostname !== ALLOWED_HOST) {
  console.error(`dashboard.mjs: BASE_URL must be on ${ALLOWED_HOST}, not ${BASE_URL}`);
  process.exit(2);
}

/** Polls `check` (returning a truthy value when done) until `within` ms pass. */
async function until(what, within, check) {
  const deadline = Date.now() + within;
  let last;
  for (;;) {
    try {
      const value = await check();
      if (value) return value;
    } catch (err) {
      last = err;
    }
    if (Date.now() > deadline) fail(`timed out after ${within} ms waiting for ${what}${last ? ` (${last.message})` : ""}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** Whether `needles` occur in `hay` in this order (not necessarily adjacent). */
function inOrder(hay, needles) {
  let i = 0;
  for (const item of hay) if (item === needles[i]) i += 1;
  return i === needles.length;
}

const violations = [];
const consoleErrors = [];
let expectedConsoleError = null;

function checkUrl(kind, url) {
  let parsed;
  try {
    parsed = new URL(url);
  } catch {
    violations.push(`${kind} to an unparsable URL ${url}`);
    return;
  }
  if (parsed.protocol === "data:" || parsed.protocol === "blob:" || parsed.protocol === "about:") return;
  if (parsed.hostname !== ALLOWED_HOST) violations.push(`${kind} to another host: ${url}`);
}

async function run(userDataDir) {
  const args = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
  ];
  log(`launching ${CHROMIUM}`);
  const context = await chromium.launchPersistentContext(userDataDir, {
    executablePath: CHROMIUM,
    headless: true,
    args,
    viewport: { width: 1400, height: 900 },
    timeout: 30000,
  });
  let page;
  try {
    context.on("request", (request) => checkUrl(`${request.method()} request`, request.url()));
    page = context.pages()[0] || (await context.newPage());
    page.setDefaultTimeout(15000);
    page.on("websocket", (ws) => checkUrl("WebSocket", ws.url()));
    page.on("console", (message) => {
      if (message.type() !== "error") return;
      const text = message.text();
      if (expectedConsoleError && expectedConsoleError.test(text)) return;
      // The polling fallback exists for when the socket cannot connect; the browser logs each try.
      if (ALLOW_POLLING && /^WebSocket connection to .* failed/.test(text)) return;
      consoleErrors.push(text);
    });
    page.on("pageerror", (err) => consoleErrors.push(`uncaught: ${err.message}`));
    // The event socket passes through Playwright untouched, so the test can drop it later.
    const sockets = [];
    await page.routeWebSocket(/\/v1\/events/, (ws) => {
      const server = ws.connectToServer();
      sockets.push({ url: ws.url(), page: ws, server });
    });

    // --- the page loads, and a forged token gets a clear message
    log(`opening ${BASE_URL}`);
    const response = await page.goto(BASE_URL, { waitUntil: "load" });
    if (!response || response.status() !== 200) fail(`GET / answered ${response && response.status()}`);
    if (!/default-src 'self'/.test(response.headers()["content-security-policy"] || "")) {
      fail("GET / has no Content-Security-Policy with default-src 'self'");
    }
    await page.locator("#signin-view").waitFor({ state: "visible" });

    const [head, payload, signature] = TOKEN.split(".");
    const forged = `${head}.${payload}.${signature.slice(0, -6)}${signature.endsWith("AAAAAA") ? "BBBBBB" : "AAAAAA"}`;
    expectedConsoleError = /401/;
    await page.fill("#token-input", forged);
    await page.click("#sign-in");
    await page.locator("#signin-error").waitFor({ state: "visible" });
    const refusal = await page.textContent("#signin-error");
    if (!/refused/i.test(refusal)) fail(`a forged token should be refused with a clear message, got: ${refusal}`);
    log(`forged token refused: ${refusal.trim()}`);
    expectedConsoleError = null;

    // --- sign in
    await page.fill("#token-input", TOKEN);
    await page.click("#sign-in");
    await page.locator("#app-view").waitFor({ state: "visible" });
    const tenant = (await page.textContent("#session-tenant")).trim();
    if (env.TENANT && tenant !== env.TENANT) fail(`the header shows tenant ${tenant}, expected ${env.TENANT}`);
    const scopes = (await page.$$eval("#session-scopes .scope", (els) => els.map((el) => el.textContent))).join(" ");
    if (!scopes.includes("jobs:write") || !scopes.includes("jobs:read")) fail(`scopes shown: ${scopes}`);
    log(`signed in as tenant ${tenant} (${scopes})`);

    const mode = await until("the live connection", 10000, async () => {
      const state = await page.getAttribute("#connection", "data-state");
      return state === "live" || (ALLOW_POLLING && state === "polling") ? state : null;
    });
    log(`updates: ${mode}`);

    // Every status each job row takes, in order, as the DOM shows it.
    await page.evaluate(() => {
      const seen = (window.__statuses = {});
      const note = (row) => {
        const id = row.dataset.jobId;
        const status = row.dataset.status;
        if (!id || !status) return;
        const list = (seen[id] ||= []);
        if (list[list.length - 1] !== status) list.push(status);
      };
      const body = document.getElementById("jobs-body");
      new MutationObserver((mutations) => {
        for (const m of mutations) {
          if (m.type === "attributes" && m.target.matches("tr[data-job-id]")) note(m.target);
          for (const node of m.addedNodes) if (node.nodeType === 1 && node.matches("tr[data-job-id]")) note(node);
        }
      }).observe(body, { childList: true, attributes: true, attributeFilter: ["data-status"], subtree: true });
    });
    const statuses = (id) => page.evaluate((jobId) => window.__statuses[jobId] || [], id);

    async function submit(type, payload) {
      await page.selectOption("#job-type", type);
      await page.fill("#job-payload", JSON.stringify(payload));
      const before = await page.getAttribute("#submit-result", "data-job-id");
      await page.click("#submit-job");
      const id = await until(`the ${type} job to be accepted`, 10000, async () => {
        const id = await page.getAttribute("#submit-result", "data-job-id");
        return id && id !== before ? id : null;
      });
      log(`submitted ${type} ${JSON.stringify(payload)} → ${id}`);
      return id;
    }

    // --- a sleep job goes queued → running → succeeded, live
    const sleepMs = mode === "live" ? 300 : 2500;
    const sleepId = await submit("sleep", { ms: sleepMs });
    await until("the sleep job's row to show succeeded", 20000, async () => (await statuses(sleepId)).includes("succeeded"));
    const sleepSeen = await statuses(sleepId);
    log(`sleep job row showed: ${sleepSeen.join(" → ")}`);
    if (!inOrder(sleepSeen, ["queued", "running", "succeeded"])) {
      fail(`the sleep job's row should show queued → running → succeeded, showed ${sleepSeen.join(" → ")}`);
    }
    const badge = (await page.textContent(`tr[data-job-id="${sleepId}"] [data-field="status"]`)).trim();
    if (badge !== "succeeded") fail(`the sleep job's badge reads ${badge}`);
    if (mode === "live") {
      await page.locator(`#feed li[data-job-id="${sleepId}"][data-status="succeeded"]`).waitFor();
    }

    // --- a permanently failing job ends failed; Retry queues it again and it fails again
    const failId = await submit("fail", { times: 1, permanent: true });
    await until("the fail job's row to show failed", 20000, async () => (await statuses(failId)).includes("failed"));
    const firstRun = await statuses(failId);
    log(`fail job row showed: ${firstRun.join(" → ")}`);
    const retry = page.locator(`tr[data-job-id="${failId}"] button[data-action="retry"]`);
    await retry.click();
    await until("the retried job to show queued and then failed again", 20000, async () => {
      const after = (await statuses(failId)).slice(firstRun.length);
      return inOrder(after, ["queued", "failed"]) ? after : null;
    });
    const retried = await statuses(failId);
    log(`after Retry the row showed: ${retried.slice(firstRun.length).join(" → ")}`);

    // --- the socket drops (server going away): the page reconnects on its own and resumes
    //     after the last event it saw, so nothing is missed
    if (mode === "live") {
      const before = sockets.length;
      const last = sockets[before - 1];
      await last.page.close({ code: 1001, reason: "going away" });
      await last.server.close().catch(() => {});
      const resumed = await until("a new socket resuming with since=", 10000, async () =>
        sockets.slice(before).find((s) => /[?&]since=/.test(s.url)));
      log(`socket dropped with 1001; reconnected to ${new URL(resumed.url).pathname}${new URL(resumed.url).search}`);
      await until("the page to be live again", 10000, async () =>
        (await page.getAttribute("#connection", "data-state")) === "live");
      await page.locator("#feed li.notice", { hasText: "Reconnected" }).waitFor();
      const noopId = await submit("noop", {});
      await until("the noop job to succeed after the reconnect", 20000, async () =>
        inOrder(await statuses(noopId), ["queued", "succeeded"]));
      await page.locator(`#feed li[data-job-id="${noopId}"][data-status="succeeded"]`).waitFor();
    }

    // --- the queues table counts the tenant's jobs: one failed, the others succeeded
    await until("the default queue to count one failed and the succeeded jobs", 10000, async () => {
      const count = async (status) =>
        Number(await page.textContent(`#queues-body tr[data-queue="default"] td[data-count="${status}"]`));
      return (await count("failed")) === 1 && (await count("succeeded")) >= 2;
    });

    // --- the detail view shows the record and its whole history
    await page.click(`tr[data-job-id="${failId}"] button[data-action="open"]`);
    await page.locator("#job-detail").waitFor({ state: "visible" });
    const history = await until("the job's history (two failed runs)", 10000, async () => {
      const items = await page.$$eval("#job-history li", (lis) => lis.map((li) => li.dataset.status));
      return items.filter((s) => s === "failed").length >= 2 ? items : null;
    });
    log(`detail history: ${history.join(" → ")}`);
    if (!inOrder(history, ["queued", "running", "failed", "queued", "running", "failed"])) {
      fail(`the history should show both runs, got ${history.join(" → ")}`);
    }
    const detailId = (await page.textContent("#detail-id")).trim();
    if (detailId !== failId) fail(`the detail view shows ${detailId}, expected ${failId}`);
    if (!(await page.isVisible("#detail-retry"))) fail("a failed job's detail view should offer Retry");
    if (!/permanent|fail/i.test(await page.textContent("#detail-last-error"))) fail("the detail view shows no last error");
    mkdirSync(dirname(SCREENSHOT), { recursive: true });
    await page.screenshot({ path: DETAIL_SCREENSHOT });
    await page.click("#detail-close");
    await page.locator("#job-detail").waitFor({ state: "hidden" });

    // --- the screenshot of the whole dashboard
    await page.screenshot({ path: SCREENSHOT, fullPage: true });
    log(`screenshots: ${SCREENSHOT}, ${DETAIL_SCREENSHOT}`);

    // --- sign out returns to the sign-in form and forgets the token
    await page.click("#sign-out");
    await page.locator("#signin-view").waitFor({ state: "visible" });
    const kept = await page.evaluate(() => sessionStorage.length);
    if (kept !== 0) fail("signing out left the token in session storage");

    if (violations.length) fail(`requests to other hosts:\n  ${violations.join("\n  ")}`);
    if (consoleErrors.length) fail(`console errors:\n  ${consoleErrors.join("\n  ")}`);
  } catch (err) {
    if (page) {
      mkdirSync(dirname(FAILURE_SCREENSHOT), { recursive: true });
      await page.screenshot({ path: FAILURE_SCREENSHOT, fullPage: true }).catch(() => {});
      console.error(`page at the failure: ${FAILURE_SCREENSHOT}`);
    }
    throw err;
  } finally {
    await context.close().catch(() => {});
  }
}

const userDataDir = mkdtempSync(join(tmpdir(), "dashboard-chromium-"));
const watchdog = setTimeout(() => {
  console.error(`FAIL: the dashboard test did not finish within ${TIMEOUT_MS} ms`);
  rmSync(userDataDir, { recursive: true, force: true });
  process.exit(1);
}, TIMEOUT_MS);

try {
  await run(userDataDir);
  log("PASS");
  process.exitCode = 0;
} catch (err) {
  console.error(`FAIL: ${err.isTestFailure ? err.message : err.stack || err}`);
  const reported = String(err.message);
  if (violations.length && !reported.startsWith("requests to other hosts")) {
    console.error(`requests to other hosts:\n  ${violations.join("\n  ")}`);
  }
  if (consoleErrors.length && !reported.startsWith("console errors")) {
    console.error(`console errors:\n  ${consoleErrors.join("\n  ")}`);
  }
  process.exitCode = 1;
} finally {
  clearTimeout(watchdog);
  rmSync(userDataDir, { recursive: true, force: true });
}
