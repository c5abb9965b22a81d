// Browser tests of the console, the elements and GraphiQL in real headless Chromium
// (Debian's, driven by playwright-core). Run by tests/api/browser.rs, which starts the
// server, a fake Stripe and a second origin, seeds an organization and passes it all in
// CREDITS_BROWSER (JSON). Prints one line per scenario; exits non-zero on the first failure.
//
// Every request the browser makes is watched (chromium.mjs): anything but the server's own
// origin (and, for the embedding page, that page's origin; for Buy, the fake Checkout page,
// answered here) fails the run, as do page errors, console errors (a CSP violation is
// one), HTTP errors and a token in any request URL.
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { check, checkoutPayer, graphql, startRun } from "./chromium.mjs";

const config = JSON.parse(process.env.CREDITS_BROWSER);
const { base, embed, token, apiKey, adminToken, organizationId, screenshots } = config;
const CHECKOUT = "https://checkout.stripe.com/";
const gql = graphql(base);
const payWebhook = checkoutPayer({ ...config, bearer: apiKey });
const { sockets, step, context: watched, run } = await startRun({ secrets: [token, apiKey, adminToken] });

/** A watched context in UTC; the fake Checkout page (what Stripe would show) is answered
 *  here, so nothing leaves this machine. */
const context = (allowedOrigins) =>
  watched(allowedOrigins, {
    intercept: (url) =>
      url.startsWith(CHECKOUT)
        ? { status: 200, contentType: "text/html", body: "<!doctype html><title>Fake Checkout</title><h1>Fake Stripe Checkout</h1>" }
        : null,
  });

const BALANCE = "balance available held nextExpiration { at amount }";
const numberText = new Intl.NumberFormat("en-US");
// The browser contexts below run in en-US and UTC.
const dateText = new Intl.DateTimeFormat("en-US", { dateStyle: "medium", timeStyle: "short", timeZone: "UTC" });
const spaces = (text) => String(text).replace(/\s+/g, " ").trim();

const consume = (amount) =>
  gql(apiKey, "mutation($a: Credits!) { consumeCredits(input: { amount: $a, description: \"Batch report\" }) { balance { balance } } }", { a: amount });
const grant = (amount) =>
  gql(adminToken, "mutation($o: ID!, $a: Credits!) { grantCredits(input: { organizationId: $o, amount: $a, description: \"Top-up\" }) { balance { balance } } }", { o: organizationId, a: amount });

const grantExpiring = ({ amount, expiresAt }) =>
  gql(adminToken, `mutation($o: ID!, $a: Credits!, $e: DateTime) { grantCredits(input: { organizationId: $o, amount: $a, description: "Welcome promotion", expiresAt: $e }) { balance { ${BALANCE} } } }`,
    { o: organizationId, a: amount, e: expiresAt });
const createHold = (amount) =>
  gql(apiKey, `mutation($a: Credits!) { createHold(input: { amount: $a, description: "LLM call", ttlSeconds: 600 }) { hold { id status } balance { ${BALANCE} } } }`, { a: amount });
const releaseHold = (id) =>
  gql(apiKey, `mutation($id: ID!) { releaseHold(id: $id) { id status } } `, { id });
const currentBalance = async () => (await gql(apiKey, `{ creditBalance { ${BALANCE} } }`)).creditBalance;

/** Waits until the page's `<credits-balance>` shows `expected` (a CreditBalance as the API
 *  answered it): the available figure, the held credits (only when there are some) and the
 *  next expiry (only when there is one), in words. */
async function showsBalance(page, expected, what) {
  const element = page.locator("credits-balance");
  await element.locator(`output[data-available="${expected.available}"][data-held="${expected.held}"][data-balance="${expected.balance}"]`)
    .waitFor({ timeout: 2000 })
    .catch(async (error) => {
      throw new Error(`${what}: expected ${JSON.stringify(expected)}, the element shows ${JSON.stringify(await element.innerText().catch(() => "?"))}: ${error.message}`);
    });
  const value = spaces(await element.locator("output").innerText());
  check(value === numberText.format(expected.available), `${what}: the main figure is ${value}, not available ${expected.available}`);
  const held = element.locator("[part=held]");
  if (expected.held > 0) {
    check(await held.isVisible(), `${what}: the held credits are not shown`);
    const text = spaces(await held.innerText());
    check(text === `${numberText.format(expected.held)} credits held`, `${what}: held shown as "${text}"`);
  } else {
    check(!(await held.isVisible()), `${what}: held credits shown with none held`);
    check(spaces(await held.textContent()) === "", `${what}: held text left behind`);
  }
  const expiry = element.locator("[part=expiry]");
  const next = expected.nextExpiration;
  if (next) {
    check(await expiry.isVisible(), `${what}: the next expiry is not shown`);
    const text = spaces(await expiry.innerText());
    const wanted = spaces(`${numberText.format(next.amount)} credits expire on ${dateText.format(new Date(next.at))}`);
    check(text === wanted, `${what}: expiry shown as "${text}", expected "${wanted}"`);
    const datetime = await expiry.locator("time").getAttribute("datetime");
    check(Date.parse(datetime) === Date.parse(next.at), `${what}: <time datetime="${datetime}">, expected ${next.at}`);
  } else {
    check(!(await expiry.isVisible()), `${what}: an expiry shown with none due`);
  }
}

const balanceValue = (page) => page.locator("credits-balance output").getAttribute("data-balance");
const warning = (page) => page.locator("credits-low-balance-warning [part=warning]");

await run(async () => {
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
    // The name arrives with its own request: wait for it (a loaded CI machine answers it
    // after the elements above), then check.
    await page.locator("#organization", { hasText: "Acme" }).waitFor({ timeout: 5000 }).catch(() => {});
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

  // 5. Holds and expiring credits, live in the console and in an element on another origin:
  //    an expiring grant and a hold made over HTTP show at once, a release takes the held
  //    figure away, a hold can make the balance low; no page reloads meanwhile.
  {
    const consoleTab = await context([base]);
    const shopTab = await context([base, embed]);
    await consoleTab.page.goto(`${base}/console#token=${token}`);
    await shopTab.page.goto(`${embed}/embed.html`);
    await shopTab.page.evaluate((t) => {
      for (const element of document.querySelectorAll("[data-needs-token]")) element.setAttribute("token", t);
    }, token);
    const tabs = [["console", consoleTab.page], ["embedded element", shopTab.page]];
    for (const [, page] of tabs) {
      await page.locator("credits-balance output").waitFor({ timeout: 5000 });
      await page.evaluate(() => {
        window.notReloaded = true; // a reload would drop it
        window.balanceDetails = [];
        document.addEventListener("credits:balance", (event) => window.balanceDetails.push(event.detail));
      });
    }
    const start = await currentBalance();
    check(start.held === 0 && start.nextExpiration === null, `no holds, no expiry yet: ${JSON.stringify(start)}`);
    for (const [name, page] of tabs) await showsBalance(page, start, `${name} at the start`);
    check(spaces(await consoleTab.page.locator("credits-balance [part=label]").innerText()) === "Available credits", "the label says available");

    // An expiring grant: the next expiry appears.
    const granted = (await grantExpiring(config.expiringGrant)).grantCredits.balance;
    check(granted.nextExpiration?.amount === config.expiringGrant.amount, `the grant expires next: ${JSON.stringify(granted)}`);
    check(Date.parse(granted.nextExpiration.at) === Date.parse(config.expiringGrant.expiresAt), "at the grant's expiresAt");
    for (const [name, page] of tabs) await showsBalance(page, granted, `${name} after an expiring grant`);
    step(`an expiring grant shows live: ${granted.nextExpiration.amount} credits expire on ${granted.nextExpiration.at}`);

    // A hold: available falls by it, held appears; it draws first on the expiring credits.
    const created = (await createHold(config.hold)).createHold;
    const held = created.balance;
    check(created.hold.status === "ACTIVE", "the hold is active");
    check(held.held === config.hold && held.balance === granted.balance, `a hold reserves without spending: ${JSON.stringify(held)}`);
    check(held.available === granted.available - config.hold, "available falls by the hold");
    check(held.nextExpiration?.amount === config.expiringGrant.amount - config.hold, `the hold drew on the expiring lot first: ${JSON.stringify(held)}`);
    for (const [name, page] of tabs) await showsBalance(page, held, `${name} after createHold`);
    step(`a hold over HTTP shows live: ${held.available} available, ${held.held} held, ${held.nextExpiration.amount} expiring`);
    for (const [name, page] of tabs) {
      const detail = await page.evaluate(() => window.balanceDetails.at(-1));
      check(detail?.available === held.available && detail.held === held.held && detail.balance === held.balance,
        `${name}: credits:balance carries available and held: ${JSON.stringify(detail)}`);
      check(detail.nextExpiration?.amount === held.nextExpiration.amount && detail.nextExpiration.at === held.nextExpiration.at,
        `${name}: credits:balance carries nextExpiration: ${JSON.stringify(detail)}`);
    }
    if (screenshots) {
      await consoleTab.page.locator("credits-transactions tbody tr[data-kind]").first().waitFor();
      await consoleTab.page.locator("credits-purchases table").waitFor();
      await consoleTab.page.screenshot({ path: join(screenshots, "console-held.png"), fullPage: true });
    }

    // Released: the held figure goes, available and the expiring amount come back.
    const released = await releaseHold(created.hold.id);
    check(released.releaseHold.status === "RELEASED", "the hold is released");
    const after = await currentBalance();
    check(after.held === 0 && after.available === granted.available, `all available again: ${JSON.stringify(after)}`);
    for (const [name, page] of tabs) await showsBalance(page, after, `${name} after releaseHold`);
    step("after releaseHold the held figure goes away, live");

    // A hold can make the balance low (available below the threshold): the warning follows.
    const { page } = consoleTab;
    check(await warning(page).count() === 0, "no warning before");
    const low = (await createHold(after.available - config.threshold + 1)).createHold;
    await showsBalance(page, low.balance, "console after a hold that makes it low");
    await warning(page).waitFor({ state: "visible", timeout: 2000 });
    const text = spaces(await warning(page).innerText());
    check(text.includes(`${numberText.format(low.balance.available)} credits available`), `the warning counts what is available: ${text}`);
    await releaseHold(low.hold.id);
    await showsBalance(page, await currentBalance(), "console after releasing it");
    await warning(page).waitFor({ state: "detached", timeout: 2000 });
    step("a hold that takes available below the threshold warns; its release clears the warning");

    for (const [name, page] of tabs) {
      check(await page.evaluate(() => window.notReloaded === true), `${name} was reloaded`);
    }
    await consoleTab.ctx.close();
    await shopTab.ctx.close();
  }

  // 6. An element embedded in a page on another origin (allowed by CREDITS_CORS_ORIGINS).
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

  // 7. GraphiQL, with no internet: loads from the server and runs a query with the token header.
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
});
