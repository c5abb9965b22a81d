// What the browser scenarios share (browser.mjs, usage.mjs, topup.mjs): Debian's headless
// Chromium driven by playwright-core, with every request of every page watched. A run
// fails on the first failed check and, at the end, on any problem seen meanwhile: a
// request off the allowed origins, a page error, a console error (a CSP violation is
// one), an HTTP error, a token in a request or WebSocket URL. Also Stripe's webhook for
// a paid Checkout, signed.
import { createHmac } from "node:crypto";
import { readFileSync } from "node:fs";
import { chromium } from "playwright-core";

/** Throws `message` unless `condition`. */
export function check(condition, message) {
  if (!condition) throw new Error(message);
}

/** `gql(bearer, query, variables)` against `${base}/graphql`: the data, or a thrown error. */
export function graphql(base) {
  return async (bearer, query, variables = {}) => {
    const response = await fetch(`${base}/graphql`, {
      method: "POST",
      headers: { "content-type": "application/json", authorization: `Bearer ${bearer}` },
      body: JSON.stringify({ query, variables }),
    });
    const body = await response.json();
    if (body.errors) throw new Error(`${query}: ${JSON.stringify(body.errors)}`);
    return body.data;
  };
}

/** `pay(purchaseId, metadata)`: delivers Stripe's signed `checkout.session.completed` for a
 *  purchase of `organizationId` (read with `bearer`), as tests/api/support/fake_stripe.rs
 *  builds it from Stripe's example objects (`fixtures`); `metadata` adds to the session's
 *  (say, `save_for_auto_top_up`). */
export function checkoutPayer({ base, bearer, organizationId, fixtures, webhookSecret }) {
  const gql = graphql(base);
  return async (purchaseId, metadata = {}) => {
    const data = await gql(bearer, "query($id: ID!) { node(id: $id) { ... on CreditPurchase { checkoutSessionId packageId amount currency } } }", { id: purchaseId });
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
      metadata: { organization_id: organizationId, package_id: purchase.packageId, purchase_id: purchaseId, ...metadata },
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
  };
}

/** Starts Chromium for a run whose request URLs must never hold one of `secrets`. */
export async function startRun({ secrets }) {
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    headless: true,
    args: [
      "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
      "--disable-component-update", "--disable-sync", "--disable-default-apps", "--disable-extensions",
    ],
  });
  const problems = [];
  const sockets = [];
  const started = Date.now();

  /** Prints one line per scenario passed. */
  function step(name) {
    console.log(`ok ${((Date.now() - started) / 1000).toFixed(1)}s ${name}`);
  }

  /** A fresh context (its own storage) in en-US and `timezoneId` whose requests are all
   *  watched; `intercept(url)` may answer a request itself (Playwright fulfil options). */
  async function context(allowedOrigins, { timezoneId = "UTC", intercept = () => null } = {}) {
    const ctx = await browser.newContext({ viewport: { width: 1180, height: 900 }, locale: "en-US", timezoneId });
    await ctx.route("**/*", async (route) => {
      const url = route.request().url();
      const answer = intercept(url);
      if (answer) return route.fulfill(answer);
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

  /** Runs `scenarios`, closes the browser and says whether everything passed. */
  async function run(scenarios) {
    try {
      await scenarios();
    } catch (error) {
      fail(error);
    }
    await browser.close();
    if (problems.length && !process.exitCode) fail(new Error(`${problems.length} problem(s) during the run`));
    if (!process.exitCode) console.log("all browser scenarios passed");
  }

  return { problems, sockets, step, context, run };
}
