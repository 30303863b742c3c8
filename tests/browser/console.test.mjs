// The web console in a real browser (Debian's Chromium driven by playwright-core), against a
// running mesh: run by tests/browser/test_console.py, which starts the mesh, seeds the
// catalog and passes:
//   MESH_CONSOLE_URL    the gateway, e.g. http://127.0.0.1:8080
//   CHROMIUM            the browser executable (/usr/bin/chromium)
//   ARTIFACTS           where the screenshots go
//   RESERVE_LIMIT       reservations a user may make per minute in that mesh (its policy file)
//
// One scenario, step by step (each step logs its time; the first failure ends the run with
// exit code 1 and a screenshot of every open page):
//   sign up (a field error first, then success), sign out and in again (a wrong password
//   first), search as you type, keyset paging,
//   a product: reserve, out of stock, rate limited with the wait shown; a transparent token
//   refresh; chat between two browser contexts: rooms, history on scroll, presence, typing,
//   live messages, one context offline and back (resumes with `since`: nothing missed,
//   nothing twice, its queued message delivered once); the API docs; sign out.
// Throughout: no uncaught page error, no Content-Security-Policy violation, and no request to
// any origin but the gateway's, on any page.

import { strict as assert } from "node:assert";
import { mkdirSync, rmSync, mkdtempSync } from "node:fs";
import { createRequire } from "node:module";
import { tmpdir } from "node:os";
import { join } from "node:path";

const require = createRequire(new URL("../../web/package.json", import.meta.url));
const { chromium } = require("playwright-core");

const BASE = process.env.MESH_CONSOLE_URL;
const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";
const ARTIFACTS = process.env.ARTIFACTS || "test-artifacts/browser";
const RESERVE_LIMIT = Number(process.env.RESERVE_LIMIT || 3);
const PASSWORD = "a long enough secret";
const TIMEOUT = 15_000; // per wait; generous for a loaded CI machine
const FLAGS = [
  "--no-sandbox",
  "--disable-gpu",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
  "--no-first-run",
  "--disable-quic",
];

assert.ok(BASE, "MESH_CONSOLE_URL is required");
mkdirSync(ARTIFACTS, { recursive: true });
const started = Date.now();
const run = Math.random().toString(16).slice(2, 8);
const problems = []; // page errors and CSP violations, from every page
const pages = new Map(); // name -> page, for screenshots on failure

function log(text) {
  console.log(`[${((Date.now() - started) / 1000).toFixed(1).padStart(5)} s] ${text}`);
}

async function step(name, fn) {
  const t0 = Date.now();
  await fn();
  log(`ok  ${name} (${Date.now() - t0} ms)`);
}

async function shot(page, name) {
  await page.screenshot({ path: join(ARTIFACTS, `${name}.png`), fullPage: true });
}

function watch(page, name) {
  pages.set(name, page);
  page.setDefaultTimeout(TIMEOUT);
  page.on("pageerror", (error) => problems.push(`${name}: uncaught ${error.message}`));
  page.on("console", (message) => {
    const text = message.text();
    if (/Content[- ]Security[- ]Policy/i.test(text)) problems.push(`${name}: ${text}`);
  });
  return page;
}

/** Every request a context's pages make must go to the gateway: no CDN, no third party. */
function sameOriginOnly(context, name) {
  context.on("request", (request) => {
    const url = request.url();
    if (!url.startsWith(`${BASE}/`) && !url.startsWith("data:") && !url.startsWith("blob:")) {
      problems.push(`${name}: a request to ${url}`);
    }
  });
  return context;
}

async function api(method, path, body, token) {
  const response = await fetch(BASE + path, {
    method,
    headers: {
      "content-type": "application/json",
      ...(token ? { authorization: `Bearer ${token}` } : {}),
    },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await response.text();
  return { status: response.status, body: text ? JSON.parse(text) : null };
}

async function signUp(page, name, email) {
  await page.goto(`${BASE}/#/signup`);
  await page.getByLabel("Display name").fill(name);
  await page.getByLabel("Email").fill(email);
  await page.getByLabel(/^Password/).fill(PASSWORD);
  await page.getByRole("button", { name: "Sign up" }).click();
  await page.locator(".whoami").getByText(name).waitFor();
}

/** The seqs of the messages a page shows, in page order; asserts each is there once. */
async function seqsOf(page) {
  const seqs = (await page.locator("#messages li[data-seq]").evaluateAll((els) => els.map((el) => Number(el.dataset.seq))));
  assert.equal(new Set(seqs).size, seqs.length, `duplicate messages on the page: ${seqs}`);
  assert.deepEqual(seqs, [...seqs].sort((a, b) => a - b), "messages out of seq order");
  return seqs;
}

async function textsOf(page) {
  return page.locator("#messages li[data-seq] .text").allTextContents();
}

const profile = mkdtempSync(join(tmpdir(), "mesh-chromium-"));
const browser = await chromium.launch({
  executablePath: CHROMIUM,
  headless: true,
  args: [...FLAGS, `--disk-cache-dir=${join(profile, "cache")}`],
  timeout: 30_000,
});
log(`chromium ${browser.version()} up`);

let failed = false;
try {
  const contextA = sameOriginOnly(await browser.newContext({ viewport: { width: 1280, height: 900 } }), "a");
  const a = watch(await contextA.newPage(), "a");
  const emailA = `ada-${run}@example.org`;
  let roomId = "";

  await step("the console loads with its CSP and no inline code", async () => {
    const response = await a.goto(`${BASE}/`);
    const headers = response.headers();
    assert.match(headers["content-security-policy"], /default-src 'self'/);
    assert.match(headers["content-security-policy"], /connect-src 'self' ws: wss:/);
    assert.equal(headers["x-frame-options"], "DENY");
    await a.getByRole("heading", { name: "Catalog" }).waitFor();
    await a.locator("#results li").first().waitFor();
    await shot(a, "01-catalog");
  });

  await step("sign up: a field error from the API, then an account", async () => {
    await a.getByRole("link", { name: "Sign up" }).click();
    await a.getByLabel("Display name").fill("Ada");
    await a.getByLabel("Email").fill(emailA);
    await a.getByLabel(/^Password/).fill("too short");
    await a.getByRole("button", { name: "Sign up" }).click();
    const error = a.locator("#f-password-error");
    await error.getByText(/12 to 128 characters/).waitFor();
    assert.equal(await a.getByLabel(/^Password/).getAttribute("aria-invalid"), "true");
    await a.getByLabel(/^Password/).fill(PASSWORD);
    await shot(a, "02-sign-up");
    await a.getByRole("button", { name: "Sign up" }).click();
    await a.locator(".whoami").getByText("Ada").waitFor();
    await a.getByRole("button", { name: "Sign out" }).waitFor();
  });

  await step("search as you type, one request per pause", async () => {
    const some = (await api("GET", "/api/v1/products?pageSize=50")).body.products;
    const word = some.map((p) => p.name.split(" ").pop()).find((w) => /^[A-Za-z]{5,}$/.test(w));
    assert.ok(word, "no searchable word in the seeded names");
    const searches = [];
    a.on("request", (r) => r.url().includes("/api/v1/products?") && new URL(r.url()).searchParams.get("q") && searches.push(r.url()));
    await a.getByLabel("Search products").pressSequentially(word.toLowerCase(), { delay: 40 });
    await a.getByRole("status").filter({ hasText: `for “${word.toLowerCase()}”` }).waitFor();
    const names = await a.locator("#results li h3").allTextContents();
    assert.ok(names.length > 0, "no results");
    assert.ok(names[0].toLowerCase().includes(word.toLowerCase()), `best match ${names[0]} lacks ${word}`);
    assert.ok(searches.length < word.length, `${searches.length} searches for ${word.length} keystrokes`);
    assert.match(a.url(), new RegExp(`q=${word.toLowerCase()}`)); // the filters are in the URL
    await shot(a, "03-search");
  });

  await step("keyset paging: Show more appends the next page, nothing repeated", async () => {
    await a.getByLabel("Search products").fill("");
    await a.getByLabel("Sort by").selectOption("price");
    await a.getByRole("status").filter({ hasText: /^Showing 20 products\.$/ }).waitFor();
    await a.getByRole("button", { name: "Show more" }).click();
    await a.getByRole("status").filter({ hasText: /^Showing 40 products/ }).waitFor();
    const links = await a.locator("#results li h3 a").evaluateAll((els) => els.map((el) => el.getAttribute("href")));
    assert.equal(links.length, 40);
    assert.equal(new Set(links).size, 40, "a product shown twice");
    const prices = await a.locator("#results .price").allTextContents();
    const cents = prices.map((p) => Number(p.replace(/[^0-9]/g, "")));
    assert.deepEqual(cents, [...cents].sort((x, y) => x - y), "not in price order across pages");
    await a.getByRole("link", { name: /^books/ }).click();
    await a.getByRole("status").filter({ hasText: /in books/ }).waitFor();
    for (const category of await a.locator("#results li p.muted").allTextContents()) assert.equal(category, "books");
    await a.getByRole("status").filter({ hasText: /\(all\)\.$/ }).waitFor(); // 10 books: one page
    assert.equal(await a.getByRole("button", { name: "Show more" }).isVisible(), false);
  });

  await step("a product: reserve, out of stock, rate limited with the wait shown", async () => {
    await a.getByLabel("In stock only").check();
    await a.waitForFunction(() => location.hash.includes("inStock=true") && document.querySelector("#results").getAttribute("aria-busy") === "false");
    // A product with 2 to 999 in stock (a reservation is 1 to 1000).
    const cards = a.locator("#results li").filter({ hasText: /In stock \(([2-9]|[1-9]\d\d?)\)/ });
    await cards.first().locator("h3 a").click();
    await a.getByRole("heading", { level: 1 }).waitFor();
    const stockText = await a.locator("#stock").textContent();
    const stock = Number(stockText.match(/In stock: (\d+)/)[1]);
    assert.ok(stock >= 2, `stock ${stock}`);
    const quantity = a.getByLabel("Quantity");
    const reserve = a.getByRole("button", { name: "Reserve" });
    await quantity.fill("1");
    await reserve.click();
    await a.getByText(`Reserved 1. ${stock - 1} left in stock.`).waitFor();
    await a.locator("#stock").getByText(`In stock: ${stock - 1}`).waitFor();
    await quantity.fill(String(stock));
    await reserve.click();
    await a.getByRole("alert").getByText(`Out of stock: only ${stock - 1} left.`).waitFor();
    await shot(a, "04-out-of-stock");
    for (let used = 2; used < RESERVE_LIMIT; used += 1) {
      await quantity.fill("1");
      await reserve.click();
      await a.getByText(/^Reserved 1\./).last().waitFor();
    }
    await quantity.fill("1");
    await reserve.click();
    const limited = a.getByRole("alert").getByText(/Too many reservations: try again in (\d+) s\./);
    await limited.waitFor();
    const seconds = Number((await limited.textContent()).match(/in (\d+) s/)[1]);
    assert.ok(seconds >= 1 && seconds <= 60, `wait ${seconds}`);
    assert.ok(await reserve.isDisabled(), "Reserve is enabled while rate limited");
    await shot(a, "05-rate-limited");
  });

  await step("an expired access token is refreshed without the user noticing", async () => {
    let refused = false;
    const rooms = (url) => url.pathname === "/api/v1/chat/rooms";
    await a.route(rooms, async (route) => {
      if (refused) return route.fallback();
      refused = true;
      await route.fulfill({
        status: 401,
        contentType: "application/problem+json",
        headers: { "www-authenticate": 'Bearer error="invalid_token"' },
        body: JSON.stringify({ type: "about:blank", title: "Unauthorized", status: 401, detail: "token expired" }),
      });
    });
    const refreshed = a.waitForResponse((r) => r.url().endsWith("/api/v1/auth/refresh"));
    await a.getByRole("link", { name: "Chat", exact: true }).click();
    assert.equal((await refreshed).status(), 200);
    await a.getByRole("heading", { name: "Rooms" }).waitFor();
    await a.locator("#chat-status[data-state=online]").waitFor();
    assert.ok(refused);
    assert.equal(await a.locator(".whoami").count(), 1, "signed out by a refresh");
    await a.unroute(rooms);
  });

  const HISTORY = 40;
  await step(`a room with ${HISTORY} messages of history`, async () => {
    await a.getByLabel("New room name").fill(`Lobby ${run}`);
    await a.getByRole("button", { name: "Create room" }).click();
    await a.getByRole("heading", { name: `Lobby ${run}` }).waitFor();
    roomId = decodeURIComponent(a.url().split("#/chat/")[1]);
    await a.locator("ul.presence li").getByText("You").waitFor();
    // The history is written through a second socket of Ada's (as another device would).
    const login = await api("POST", "/api/v1/auth/login", { email: emailA, password: PASSWORD });
    const acked = await a.evaluate(
      async ({ token, room, count }) =>
        new Promise((resolve, reject) => {
          const ws = new WebSocket(`${location.origin.replace("http", "ws")}/ws/chat`, ["bearer", token]);
          let acks = 0;
          let sent = 0;
          let timer = null;
          const next = () => {
            if (sent < count) ws.send(JSON.stringify({ type: "send", room, clientMsgId: `h${sent}`, text: `history ${++sent}` }));
            else clearInterval(timer);
          };
          ws.onopen = () => {
            // Within chat's per-connection limit: bursts of 20, then 10 frames a second.
            for (let i = 0; i < 15; i += 1) next();
            timer = setInterval(next, 110);
          };
          ws.onmessage = (event) => {
            const frame = JSON.parse(event.data);
            if (frame.type === "ack" && ++acks === count) {
              ws.close(1000);
              resolve(acks);
            } else if (frame.type === "error") reject(new Error(JSON.stringify(frame)));
          };
          ws.onerror = () => reject(new Error("socket failed"));
        }),
      { token: login.body.accessToken, room: roomId, count: HISTORY },
    );
    assert.equal(acked, HISTORY);
    await a.locator("#messages li[data-seq]").filter({ hasText: `history ${HISTORY}` }).waitFor();
  });

  const contextB = sameOriginOnly(await browser.newContext({ viewport: { width: 1280, height: 900 } }), "b");
  const b = watch(await contextB.newPage(), "b");
  const socketsB = []; // the frames Grace's page sends, per WebSocket it opens
  b.on("websocket", (ws) => {
    const socket = { url: ws.url(), sent: [] };
    socketsB.push(socket);
    ws.on("framesent", (frame) => socket.sent.push(JSON.parse(frame.payload)));
  });

  await step("a second person joins: recent history, older pages on scroll, presence", async () => {
    await signUp(b, "Grace", `grace-${run}@example.org`);
    await b.goto(`${BASE}/#/chat/${encodeURIComponent(roomId)}`);
    await b.getByRole("heading", { name: `Lobby ${run}` }).waitFor();
    await b.locator("#messages li[data-seq]").filter({ hasText: `history ${HISTORY}` }).waitFor();
    const firstPage = await seqsOf(b);
    assert.ok(firstPage.length < HISTORY, `all ${firstPage.length} messages in the first page`);
    assert.equal(firstPage.at(-1), HISTORY);
    await b.locator(".log").evaluate((el) => { el.scrollTop = 0; el.dispatchEvent(new Event("scroll")); });
    await b.locator("#messages li[data-seq='1']").waitFor();
    assert.deepEqual(await seqsOf(b), Array.from({ length: HISTORY }, (_, i) => i + 1));
    await b.locator("ul.presence li").nth(1).waitFor();
    assert.equal(await b.locator("ul.presence li").first().textContent(), "You");
    await a.locator("ul.presence li").nth(1).waitFor(); // Ada sees Grace arrive
  });

  await step("typing and live messages both ways", async () => {
    await a.getByLabel("Message", { exact: true }).pressSequentially("hel", { delay: 30 });
    await b.locator("#typing").getByText(/is typing…/).waitFor();
    await a.getByLabel("Message", { exact: true }).fill("hello from Ada");
    await a.getByRole("button", { name: "Send" }).click();
    await b.locator("#messages li[data-seq]").filter({ hasText: "hello from Ada" }).waitFor();
    await b.getByLabel("Message", { exact: true }).fill("hi Ada, Grace here");
    await b.getByRole("button", { name: "Send" }).click();
    await a.locator("#messages li[data-seq]").filter({ hasText: "hi Ada, Grace here" }).waitFor();
    await b.locator("#messages li.mine[data-seq]").filter({ hasText: "hi Ada, Grace here" }).waitFor();
    await shot(a, "06-chat-ada");
  });

  await step("offline and back: the missed messages once, the queued one delivered once", async () => {
    const lastSeen = (await seqsOf(b)).at(-1);
    const socketsBefore = socketsB.length;
    await contextB.setOffline(true);
    await b.locator("#chat-status[data-state=offline]").waitFor();
    for (let i = 1; i <= 3; i += 1) {
      await a.getByLabel("Message", { exact: true }).fill(`while you were away ${i}`);
      await a.getByRole("button", { name: "Send" }).click();
      await a.locator("#messages li[data-seq]").filter({ hasText: `while you were away ${i}` }).waitFor();
    }
    await b.getByLabel("Message", { exact: true }).fill("queued while offline");
    await b.getByRole("button", { name: "Send" }).click();
    await b.locator("#messages li.pending").filter({ hasText: "queued while offline" }).waitFor();
    assert.equal(await b.locator("#messages li").filter({ hasText: "while you were away" }).count(), 0);
    await shot(b, "07-chat-grace-offline");
    await contextB.setOffline(false);
    await b.locator("#chat-status[data-state=online]").waitFor();
    const resumed = socketsB.slice(socketsBefore).findLast((socket) => socket.sent.length > 0);
    assert.ok(resumed, "no new WebSocket after coming back");
    assert.match(resumed.url, /\/ws\/chat$/);
    assert.deepEqual(resumed.sent[0], { type: "join", room: roomId, since: lastSeen }, "not resumed with since");
    for (let i = 1; i <= 3; i += 1) {
      await b.locator("#messages li[data-seq]").filter({ hasText: `while you were away ${i}` }).waitFor();
    }
    await b.locator("#messages li[data-seq]").filter({ hasText: "queued while offline" }).waitFor();
    await a.locator("#messages li[data-seq]").filter({ hasText: "queued while offline" }).waitFor();
    await b.waitForTimeout(500); // anything arriving twice would arrive by now
    const seqsA = await seqsOf(a);
    const seqsB = await seqsOf(b);
    assert.equal(await b.locator("#messages li.pending").count(), 0);
    const textsA = await textsOf(a);
    const textsB = await textsOf(b);
    for (const text of ["while you were away 1", "while you were away 2", "while you were away 3", "queued while offline", "hello from Ada"]) {
      assert.equal(textsA.filter((t) => t === text).length, 1, `Ada sees "${text}" ${textsA.filter((t) => t === text).length} times`);
      assert.equal(textsB.filter((t) => t === text).length, 1, `Grace sees "${text}" ${textsB.filter((t) => t === text).length} times`);
    }
    assert.deepEqual(seqsB.slice(-6), seqsA.slice(-6), "the two logs disagree");
    assert.deepEqual(seqsB, Array.from({ length: seqsB.length }, (_, i) => i + 1), "a gap in Grace's log");
    await shot(b, "08-chat-grace-back");
  });

  await step("the API docs render /openapi.json from the gateway's own files", async () => {
    const opened = contextA.waitForEvent("page");
    await a.getByRole("link", { name: /^API docs/ }).click(); // opens in a new tab
    const docs = watch(await opened, "docs");
    await docs.waitForURL(`${BASE}/docs`);
    await docs.locator(".opblock-summary-path").filter({ hasText: "/api/v1/products" }).first().waitFor();
    await docs.getByText("/api/v1/auth/login").first().waitFor();
    await docs.getByText("/ws/chat").first().waitFor();
    await shot(docs, "09-api-docs");
    await docs.close();
  });

  await step("sign out", async () => {
    await a.getByRole("button", { name: "Sign out" }).click();
    await a.getByRole("link", { name: "Sign in" }).first().waitFor();
    await a.getByText("to chat.").waitFor();
    await shot(a, "10-signed-out");
  });

  await step("sign in: a wrong password, then back to where we were", async () => {
    await a.getByRole("main").getByRole("link", { name: "Sign in" }).click();
    await a.getByLabel("Email").fill(emailA);
    await a.getByLabel("Password").fill("not the password at all");
    await a.getByRole("button", { name: "Sign in" }).click();
    await a.getByRole("alert").getByText("Wrong email or password.").waitFor();
    await a.getByLabel("Password").fill(PASSWORD);
    await a.getByRole("button", { name: "Sign in" }).click();
    await a.locator(".whoami").getByText("Ada").waitFor();
    await a.getByRole("heading", { name: "Rooms" }).waitFor(); // ?next= brought us back to chat
    await a.locator("#chat-status[data-state=online]").waitFor();
  });

  assert.deepEqual(problems, [], "page errors, CSP violations or requests to other origins");
  log(`all steps passed in ${((Date.now() - started) / 1000).toFixed(1)} s; screenshots in ${ARTIFACTS}`);
} catch (error) {
  failed = true;
  console.error(error);
  if (problems.length) console.error("page problems:", problems);
  for (const [name, page] of pages) {
    if (!page.isClosed()) await shot(page, `failure-${name}`).catch(() => {});
  }
} finally {
  await browser.close();
  rmSync(profile, { recursive: true, force: true });
}
process.exit(failed ? 1 : 0);
