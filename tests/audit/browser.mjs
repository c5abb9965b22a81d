// Browser tests of the console, the elements and GraphiQL in real headless Chromium
// (Debian's, driven by playwright-core). Run by tests/api/browser.rs, which starts the
// server, a fake Stripe and a second origin, seeds an organization and passes it all in
// CREDITS_BROWSER (JSON). Prints one line per scenario; exits non-zero on the first failure.
//
// Every request the browser makes is recorded: anything but the server's own origin (and,
// for the embedding page, that page's origin; for Buy, the fake Checkout page, answered
// here) fails the run, as do page errors, console errors (a CSP violation is one), HTTP
// errors and a token in any request URL.
import { createHmac } from "node:crypto";
import { readFileSync, mkdirSync } from "node:fs";
import { join } from "node:path";
import { chromium } from "playwright-core";

const config = JSON.parse(process.env.CREDITS_BROWSER);
const { base, embed, token, apiKey, adminToken, organizationId, webhookSecret, fixtures, screenshots } = config;
const CHECKOUT = "https://checkout.stripe.com/";
const secrets = [token, apiKey, adminToken];

const problems = [];
const sockets = [];
const started = Date.now();
function step(name) {
  console.log(`ok ${((Date.now() - started) / 1000).toFixed(1)}s ${name}`);
}
function check(condition, message) {
  if (!condition) throw new Error(message);
}

async function gql(bearer, query, variables = {}) {
  const response = await fetch(`${base}/graphql`, {
    method: "POST",
    headers: { "content-type": "application/json", authorization: `Bearer ${bearer}` },
    body: JSON.stringify({ query, variables }),
  });
  const body = await response.json();
  if (body.errors) throw new Error(`${query}: ${JSON.stringify(body.errors)}`);
  return body.data;
}

const consume = (amount) =>
  gql(apiKey, "mutation($a: Credits!) { consumeCredits(input: { amount: $a, description: \"Batch report\" }) { balance { balance } } }", { a: amount });
const grant = (amount) =>
  gql(adminToken, "mutation($o: ID!, $a: Credits!) { grantCredits(input: { organizationId: $o, amount: $a, description: \"Top-up\" }) { balance { balance } } }", { o: organizationId, a: amount });

/** Stripe's signed `checkout.session.completed` for a purchase, as tests/api/fake_stripe.rs builds it. */
async function payWebhook(purchaseId) {
  const data = await gql(apiKey, "query($id: ID!) { node(id: $id) { ... on CreditPurchase { checkoutSessionId packageId amount currency } } }", { id: purchaseId });
  const purchase = data.node;
  const stripe = JSON.parse(readFileSync(fixtures, "utf8"));
  const session = {
    ...stripe["checkout.session"],
    id: purchase.checkoutSessionId,
    status: "complete",
    payment_status: "paid",
    amount_total: purchase.amount,
    amount_subtotal: purchase.amount,
    currency: purchase.currency,
    metadata: { organization_id: organizationId, package_id: purchase.packageId, purchase_id: purchaseId },
    client_reference_id: organizationId,
    payment_intent: `pi_browser_${purchaseId.slice(-8)}`,
  };
  const event = { ...stripe.event, id: `evt_browser_${purchaseId.slice(-8)}`, type: "checkout.session.completed", data: { object: session } };
  const body = JSON.stringify(event);
  const timestamp = Math.floor(Date.now() / 1000);
  const signature = createHmac("sha256", webhookSecret).update(`${timestamp}.${body}`).digest("hex");
  const response = await fetch(`${base}/webhooks/stripe`, {
    method: "POST",
    headers: { "content-type": "application/json", "stripe-signature": `t=${timestamp},v1=${signature}` },
    body,
  });
  check(response.ok, `webhook answered ${response.status}`);
}

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  headless: true,
  args: [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--disable-default-apps", "--disable-extensions",
  ],
});

/** A fresh context (its own storage) whose requests are all watched. */
async function context(allowedOrigins) {
  const ctx = await browser.newContext({ viewport: { width: 1180, height: 900 }, locale: "en-US", timezoneId: "UTC" });
  await ctx.route("**/*", async (route) => {
    const url = route.request().url();
    if (url.startsWith(CHECKOUT)) {
      // The fake Checkout page: what Stripe would show; nothing leaves this machine.
      return route.fulfill({ status: 200, contentType: "text/html", body: "<!doctype html><title>Fake Checkout</title><h1>Fake Stripe Checkout</h1>" });
    }
    if (!allowedOrigins.includes(new URL(url).origin)) {
      problems.push(`request left the allowed origins: ${url}`);
      return route.abort("blockedbyclient");
    }
    return route.continue();
  });
  const page = await ctx.newPage();
  page.on("pageerror", (error) => problems.push(`page error on ${page.url()}: ${error.message}`));
  page.on("console", (message) => {
    if (message.type() === "error") problems.push(`console error on ${page.url()}: ${message.text()}`);
  });
  page.on("request", (request) => {
    for (const secret of secrets) {
      if (request.url().includes(secret)) problems.push(`a token appeared in a request URL: ${request.url().replace(secret, "<token>")}`);
    }
  });
  page.on("response", (response) => {
    if (response.status() >= 400) problems.push(`HTTP ${response.status()} for ${response.url()}`);
  });
  page.on("websocket", (socket) => {
    sockets.push(socket.url());
    if (secrets.some((secret) => socket.url().includes(secret))) problems.push("a token appeared in a WebSocket URL");
  });
  return { ctx, page };
}

function fail(error) {
  console.error(`FAILED: ${error.stack || error}`);
  for (const problem of problems) console.error(`  problem: ${problem.slice(0, 400)}`);
  process.exitCode = 1;
}

const balanceValue = (page) => page.locator("credits-balance output").getAttribute("data-balance");
const warning = (page) => page.locator("credits-low-balance-warning [part=warning]");

try {
  // 1. The console of a seeded organization, with the token in the fragment.
  {
    const { ctx, page } = await context([base]);
    await page.goto(`${base}/console#token=${token}`);
    await page.locator("credits-balance output").waitFor();
    check(!page.url().includes("token"), `the token stayed in the address bar: ${page.url()}`);
    const initial = Number(await balanceValue(page));
    check(initial === config.balance, `balance shown ${initial}, expected ${config.balance}`);
    await page.locator("credits-packages button[data-package=credits_starter]").waitFor();
    check((await page.locator("credits-packages li").count()) === 2, "two packages");
    check((await page.locator("credits-packages li", { hasText: "Basic" }).count()) === 1, "the Basic package is listed");
    await page.locator("credits-transactions tbody tr[data-kind]").first().waitFor();
    const rows = await page.locator("credits-transactions tbody tr[data-kind]").count();
    check(rows === 10, `a first page of 10 transactions, got ${rows}`);
    const firstRow = await page.locator("credits-transactions tbody tr").first().innerText();
    check(firstRow.includes("Consumption"), `kinds in words, newest first: ${firstRow}`);
    check(await warning(page).count() === 0, "no warning above the threshold");
    check((await page.locator("#organization").innerText()).includes("Acme"), "organization name shown");
    check(sockets.length === 1, `the elements of a page share one WebSocket, got ${sockets.length}`);
    step("console shows balance, packages and history of a seeded organization");

    // Pagination and the filter by kind.
    await page.locator("credits-transactions button[data-control=older]").click();
    await page.locator("credits-transactions button[data-control=newer]:not([disabled])").waitFor();
    await page.locator("credits-transactions select").selectOption("GRANT");
    await page.waitForFunction(() => {
      const rows = [...document.querySelector("credits-transactions").shadowRoot.querySelectorAll("tbody tr[data-kind]")];
      return rows.length > 0 && rows.every((row) => row.dataset.kind === "GRANT");
    });
    await page.locator("credits-transactions select").selectOption("");
    await page.waitForFunction(() => {
      const rows = document.querySelector("credits-transactions").shadowRoot.querySelectorAll("tbody tr[data-kind]");
      return rows.length === 10 && rows[0].dataset.kind === "CONSUMPTION";
    });
    await page.locator("credits-purchases table").waitFor();
    step("history pages and filters by kind");
    if (screenshots) {
      mkdirSync(screenshots, { recursive: true });
      await page.screenshot({ path: join(screenshots, "console.png"), fullPage: true });
    }

    // 2. Live: a consume through the API shows within a second; crossing the threshold warns.
    await page.evaluate(() => {
      window.lowEvents = [];
      document.addEventListener("credits:low-balance", (event) => window.lowEvents.push(event.detail));
    });
    const crossing = initial - config.threshold + 1;
    const after = (await consume(crossing)).consumeCredits.balance.balance;
    await page.locator(`credits-balance output[data-balance="${after}"]`).waitFor({ timeout: 1000 });
    await warning(page).waitFor({ state: "visible", timeout: 1000 });
    check((await warning(page).innerText()).includes("Low balance"), "warning text");
    await page.waitForFunction(() => window.lowEvents.length === 1 && window.lowEvents[0].transactionId, null, { timeout: 1000 });
    step(`a consume through the API shows within a second (${after}) and the crossing warns`);
    await page.locator("credits-transactions tbody tr[data-kind]").first().waitFor();
    if (screenshots) await page.screenshot({ path: join(screenshots, "console-low-balance.png"), fullPage: true });

    // 3. A grant hides the warning.
    const topped = (await grant(config.threshold * 2)).grantCredits.balance.balance;
    await page.locator(`credits-balance output[data-balance="${topped}"]`).waitFor({ timeout: 1000 });
    await warning(page).waitFor({ state: "detached", timeout: 1000 });
    step("a grant hides the warning");

    // 4. Buy: off to (fake) Stripe Checkout, back to the console, paid after the webhook.
    await page.locator("credits-packages button[data-package=credits_starter]").click();
    await page.waitForURL((url) => url.href.startsWith(`${CHECKOUT}c/pay/cs_test_`), { timeout: 5000 });
    step(`Buy sends the browser to Checkout: ${page.url()}`);
    const purchases = await gql(apiKey, "{ creditPurchases(first: 1) { edges { node { id status } } } }");
    const purchase = purchases.creditPurchases.edges[0].node;
    check(purchase.status === "PENDING", "the purchase is pending");
    // Stripe sends the buyer to the success URL, in which the server put the purchase id.
    await page.goto(`${base}/console?purchase=${purchase.id}`);
    await page.locator("#purchase-return[data-status=PENDING]").waitFor({ timeout: 5000 });
    await payWebhook(purchase.id);
    await page.locator("#purchase-return[data-status=PAID]").waitFor({ timeout: 5000 });
    check((await page.locator("#purchase-return").innerText()).includes("Paid"), "shown as Paid");
    await page.locator(`credits-balance output[data-balance="${topped + 10000}"]`).waitFor({ timeout: 3000 });
    await page.locator("credits-purchases tr[data-status=PAID]").waitFor({ timeout: 3000 });
    check((await page.locator("credits-purchases .badge", { hasText: "Paid" }).count()) === 1, "purchases list the status in words");
    step("after the signed webhook the return page shows the purchase as paid");
    await ctx.close();
  }

  // 5. An element embedded in a page on another origin (allowed by CREDITS_CORS_ORIGINS).
  {
    const { ctx, page } = await context([base, embed]);
    await page.goto(`${embed}/embed.html`);
    await page.evaluate((t) => {
      for (const element of document.querySelectorAll("[data-needs-token]")) element.setAttribute("token", t);
    }, token);
    await page.locator("credits-balance output").waitFor({ timeout: 5000 });
    const before = Number(await balanceValue(page));
    const after = (await consume(1)).consumeCredits.balance.balance;
    check(after === before - 1, "consume");
    await page.locator(`credits-balance output[data-balance="${after}"]`).waitFor({ timeout: 1000 });
    const events = await page.evaluate(() => window.balanceEvents);
    check(events >= 2, `credits:balance events reached the embedding page (${events})`);
    step("an element embedded on another origin works, live");
    await ctx.close();
  }

  // 6. GraphiQL, with no internet: loads from the server and runs a query with the token header.
  {
    const { ctx, page } = await context([base]);
    await page.goto(`${base}/graphql`);
    await page.locator(".graphiql-container").waitFor({ timeout: 15000 });
    await page.evaluate((t) => {
      const editors = [...document.querySelectorAll(".CodeMirror")].map((node) => node.CodeMirror);
      const query = document.querySelector(".graphiql-query-editor .CodeMirror").CodeMirror;
      query.setValue("{ creditBalance { balance } creditPackages { id } }");
      const headers = editors.find((editor) => editor.getValue().includes("Authorization"));
      headers.setValue(JSON.stringify({ Authorization: `Bearer ${t}` }));
    }, token);
    await page.locator(".graphiql-execute-button").click();
    await page.waitForFunction(() => {
      const result = document.querySelector(".result-window .CodeMirror")?.CodeMirror?.getValue() || "";
      return result.includes("credits_starter") && result.includes('"balance"');
    }, null, { timeout: 10000 });
    step("GraphiQL loads offline and runs a query with the token header");
    await ctx.close();
  }
} catch (error) {
  fail(error);
}

await browser.close();
if (problems.length && !process.exitCode) fail(new Error(`${problems.length} problem(s) during the run`));
if (!process.exitCode) console.log("all browser scenarios passed");
