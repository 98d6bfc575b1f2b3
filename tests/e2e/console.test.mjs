// The Tidings web console in a real browser (Debian's headless Chromium through playwright-core), against a
// running hub (started by scripts/test-e2e) and a real subscriber on 127.0.0.1 that fails at first.
//
// Environment: TIDINGS_E2E_URL (the hub's API, e.g. http://127.0.0.1:18080), TIDINGS_E2E_TOKEN (its admin
// token), TIDINGS_E2E_SCREENSHOTS (where the screenshots go; default: docs/ at the top of the repository).
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import http from "node:http";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

const hub = process.env.TIDINGS_E2E_URL;
const token = process.env.TIDINGS_E2E_TOKEN;
const here = path.dirname(fileURLToPath(import.meta.url));
const shots = process.env.TIDINGS_E2E_SCREENSHOTS || path.join(here, "..", "..", "docs");
assert.ok(hub && token, "TIDINGS_E2E_URL and TIDINGS_E2E_TOKEN are set (run scripts/test-e2e)");

// ------------------------------------------------------------------------------------------ the subscriber
// Answers verification of intent by echoing hub.challenge. Content deliveries to /hook fail with 500 until
// `failing` is switched off; /audit always accepts.
const subscriber = { failing: true, delivered: [], refused: 0 };
const server = http.createServer((req, res) => {
  const url = new URL(req.url, "http://127.0.0.1");
  if (req.method === "GET" && url.searchParams.has("hub.challenge")) {
    res.writeHead(200, { "content-type": "text/plain" });
    res.end(url.searchParams.get("hub.challenge"));
    return;
  }
  let body = "";
  req.on("data", (chunk) => (body += chunk));
  req.on("end", () => {
    if (url.pathname === "/hook" && subscriber.failing) {
      subscriber.refused += 1;
      res.writeHead(500, { "content-type": "application/json" });
      res.end(JSON.stringify({ error: "orders database is read-only for maintenance" }));
      return;
    }
    subscriber.delivered.push({ path: url.pathname, body });
    res.writeHead(204);
    res.end();
  });
});

let callbackBase;
let browser;

async function admin(pathAndQuery) {
  const res = await fetch(hub + pathAndQuery, { headers: { authorization: `Bearer ${token}` } });
  assert.equal(res.status, 200, `GET ${pathAndQuery}`);
  return res.json();
}

async function eventually(what, check, timeoutMs = 20000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await check();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

async function subscribe(topic, callback) {
  const res = await fetch(hub + "/", {
    method: "POST",
    headers: { "content-type": "application/x-www-form-urlencoded" },
    body: new URLSearchParams({ "hub.mode": "subscribe", "hub.topic": topic, "hub.callback": callback }),
  });
  assert.equal(res.status, 202, "the hub accepts the subscription request");
  await eventually(`${callback} to be active`, async () => {
    const page = await admin(`/subscriptions?topic=${encodeURIComponent(topic)}`);
    return page.subscriptions.some((s) => s.callback === callback && s.state === "active");
  });
}

async function publish(events) {
  const res = await fetch(hub + "/events", {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ events }),
  });
  assert.ok(res.ok, `publish: ${res.status}`);
}

before(async () => {
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  callbackBase = `http://127.0.0.1:${server.address().port}`;
  await subscribe("shop.orders", `${callbackBase}/hook`);
  await subscribe("shop.orders", `${callbackBase}/audit`);
  await subscribe("shop.refunds", `${callbackBase}/audit`);
  const orders = [1001, 1002, 1003].map((n) => ({
    topic: "shop.orders",
    body: { order: n, total_cents: 1999 + n, currency: "EUR" },
    tags: ["checkout"],
    group_id: "import-42",
  }));
  await publish(orders);
  await publish([{ topic: "shop.refunds", body: { order: 998, reason: "damaged" } }]);
  await eventually("the failing subscriber's deliveries to die", async () => {
    const dead = await admin("/deliveries?state=dead");
    return dead.deliveries.length === 3;
  });
  browser = await chromium.launch({ executablePath: "/usr/bin/chromium", headless: true });
});

after(async () => {
  await browser?.close();
  server.close();
});

async function newPage(viewport = { width: 1280, height: 860 }) {
  const context = await browser.newContext({ viewport, timezoneId: "Europe/Berlin", locale: "en-GB" });
  const page = await context.newPage();
  page.setDefaultTimeout(10000);
  return page;
}

async function logIn(page) {
  await page.goto(hub + "/console");
  assert.match(page.url(), /\/console\/login$/, "an anonymous visitor is sent to the login form");
  await page.getByLabel("Admin token").fill(token);
  await page.getByRole("button", { name: "Log in" }).click();
  await page.waitForURL(hub + "/console");
}

test("a wrong admin token is refused with a clear message", async () => {
  const page = await newPage();
  await page.goto(hub + "/console/login");
  await page.getByLabel("Admin token").fill("not-the-token");
  const [response] = await Promise.all([
    page.waitForResponse((r) => r.url().endsWith("/console/login") && r.request().method() === "POST"),
    page.getByRole("button", { name: "Log in" }).click(),
  ]);
  assert.equal(response.status(), 401);
  await page.getByText("That is not the admin token").waitFor();
  await page.goto(hub + "/console/deliveries");
  assert.match(page.url(), /\/console\/login$/, "no session was created");
  await page.context().close();
});

test("an operator finds a failed delivery, reads its attempts, redelivers it and sees it delivered", async () => {
  const page = await newPage();
  await logIn(page);

  // The overview, its charts drawn by the server, its times in the viewer's zone.
  await page.getByRole("heading", { name: "Overview" }).waitFor();
  assert.ok((await page.locator("svg.chart rect.bar").count()) > 0, "the charts are drawn");
  await page.screenshot({ path: path.join(shots, "console-overview.png"), fullPage: true });

  // Keyboard: the first Tab reaches the skip link, and it moves focus to the content.
  await page.keyboard.press("Tab");
  assert.equal(await page.evaluate(() => document.activeElement.textContent), "Skip to content");

  // Find a failed delivery.
  await page.getByRole("link", { name: "Deliveries", exact: true }).click();
  await page.getByLabel("State").selectOption("dead");
  await page.getByRole("button", { name: "Filter" }).click();
  await page.waitForURL(/state=dead/);
  const rows = page.locator("tbody tr");
  assert.equal(await rows.count(), 3, "the three dead deliveries are listed");
  await rows.first().getByRole("link").first().click();
  await page.waitForURL(/\/console\/deliveries\/\d+$/);
  const shown = await page.locator("main time").first().textContent();
  assert.ok(shown && !shown.includes("UTC"), `times are shown in the viewer's zone: ${shown}`);

  // Its attempts: status, duration, error, response excerpt.
  const attempts = page.locator("table.attempts tbody tr");
  assert.equal(await attempts.count(), 3, "every attempt is listed");
  assert.match(await attempts.first().textContent(), /500/);
  assert.match(await attempts.first().textContent(), /read-only for maintenance/);
  assert.match(await page.locator("[data-state]").textContent(), /dead/);

  // The subscriber recovers; redeliver.
  subscriber.failing = false;
  await page.getByRole("button", { name: "Redeliver" }).click();
  await page.getByText("The delivery is back in the queue").waitFor();
  await eventually("the delivery page to show it delivered", async () => {
    await page.reload();
    return /delivered/.test(await page.locator("[data-state]").textContent());
  });
  assert.equal(await attempts.count(), 4, "the new attempt joins the old ones");
  assert.ok(subscriber.delivered.some((d) => d.path === "/hook"), "the subscriber received it");
  await page.goto(hub + new URL(page.url()).pathname);
  await page.screenshot({ path: path.join(shots, "console-delivery.png"), fullPage: true });
  await page.context().close();
});

test("the console is readable at phone width", async () => {
  const page = await newPage({ width: 390, height: 844 });
  await logIn(page);
  for (const where of ["/console", "/console/deliveries", "/console/subscriptions", "/console/events"]) {
    await page.goto(hub + where);
    const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
    assert.ok(overflow <= 0, `${where} does not scroll sideways (${overflow}px too wide)`);
  }
  await page.context().close();
});

test("a subscriber opens its portal link, sees only its own deliveries and redelivers its dead ones", async () => {
  const subscriptions = await admin(`/subscriptions?topic=shop.orders`);
  const hook = subscriptions.subscriptions.find((s) => s.callback === `${callbackBase}/hook`);
  const issued = await fetch(`${hub}/subscriptions/${hook.id}/portal-link`, {
    method: "POST",
    headers: { authorization: `Bearer ${token}` },
  });
  assert.equal(issued.status, 201, "the operator issues a link");
  const link = await issued.json();

  // No console session: the link alone opens the page, at phone width.
  const page = await newPage({ width: 390, height: 844 });
  await page.goto(link.url);
  await page.getByRole("heading", { name: `Deliveries to ${callbackBase}/hook` }).waitFor();
  assert.equal(await page.getByRole("link", { name: "Deliveries", exact: true }).count(), 0, "no console navigation");
  const main = await page.locator("main").textContent();
  assert.ok(!main.includes(`${callbackBase}/audit`) && !main.includes("shop.refunds"), "only its own subscription");
  assert.match(main, /read-only for maintenance/, "the attempts show what the subscriber answered");
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  assert.ok(overflow <= 0, `the portal does not scroll sideways (${overflow}px too wide)`);

  const dead = () => page.locator("details > summary", { hasText: "dead" }).count();
  assert.equal(await dead(), 2, "the two deliveries the operator left dead");
  await page.getByRole("button", { name: "Redeliver dead deliveries" }).click();
  await page.getByText("2 dead deliveries are back in the queue.").waitFor();
  await eventually("the portal to show nothing dead", async () => {
    await page.reload();
    return (await dead()) === 0;
  });

  // A link with one character of its signature changed opens nothing.
  const forged = link.url.replace(/.$/, (c) => (c === "A" ? "B" : "A"));
  const refused = await page.goto(forged);
  assert.equal(refused.status(), 403);
  await page.getByText("This link is not valid").waitFor();
  assert.ok(!(await page.locator("main").textContent()).includes(callbackBase), "nothing of the subscription shown");
  await page.context().close();
});
