// Auto top-up in the console (`<credits-packages auto-top-up>`) in real headless Chromium,
// with a READ+PURCHASE client session: no card and the server's refusal, a card saved
// with a purchase, the switch on and off (checked over GraphQL as the admin), a declined
// top-up pausing it. Run by tests/api/browser.rs, which starts the server against the
// fake Stripe (off-session payments declined) and passes it all in CREDITS_BROWSER
// (JSON). Requests are watched as in browser.mjs (chromium.mjs).
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { check, checkoutPayer, graphql, startRun } from "./chromium.mjs";

const config = JSON.parse(process.env.CREDITS_BROWSER);
const { base, token, apiKey, adminToken, organizationId, screenshots } = config;
const CHECKOUT = "https://checkout.stripe.com/";
const gql = graphql(base);
const pay = checkoutPayer({ ...config, bearer: apiKey });
const { step, context, run } = await startRun({ secrets: [token, apiKey, adminToken] });
const spaces = (text) => String(text).replace(/\s+/g, " ").trim();

/** The organization's auto top-up, as the admin reads it. */
const settings = async () =>
  (await gql(adminToken, `query($o: ID!) { organization(id: $o) { autoTopUp {
    enabled threshold packageId pausedReason paymentMethod { brand last4 expMonth expYear } } } }`, { o: organizationId }))
    .organization.autoTopUp;

/** Waits until the admin reads `enabled` (the switch's request has committed). */
async function enabledIs(enabled, what) {
  const started = Date.now();
  let seen;
  while ((seen = await settings()).enabled !== enabled) {
    check(Date.now() - started < 5000, `${what}: autoTopUp is ${JSON.stringify(seen)}`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  return seen;
}

await run(async () => {
  const { ctx, page } = await context([base], {
    intercept: (url) =>
      url.startsWith(CHECKOUT)
        ? { status: 200, contentType: "text/html", body: "<!doctype html><title>Fake Checkout</title><h1>Fake Stripe Checkout</h1>" }
        : null,
  });
  const panel = page.locator("credits-packages section[part=auto-top-up]");
  /** Waits until the panel, done with its requests, shows `state` (on, off, paused). */
  const shows = (state, timeout = 5000) =>
    page.locator(`credits-packages section[part=auto-top-up][data-state="${state}"]:not([aria-busy])`).waitFor({ timeout })
      .catch(async (error) => {
        const shown = await panel.evaluate((section) => `${section.dataset.state}, busy: ${section.ariaBusy}: ${section.innerText}`);
        const topUps = await gql(adminToken, "query($o: ID) { creditTopUps(organizationId: $o, first: 3) { edges { node { status failureMessage } } } }", { o: organizationId });
        throw new Error(`the panel is not ${state}: it shows ${shown}; the server has ${JSON.stringify(await settings())}, top-ups ${JSON.stringify(topUps)}: ${error.message}`);
      });
  const toggle = page.getByRole("switch", { name: "Auto top-up" });
  const threshold = page.getByRole("spinbutton", { name: "Recharge below" });

  // 1. Off, no card: what the panel says and what assistive technology sees.
  await page.goto(`${base}/console#token=${token}`);
  await shows("off");
  let text = spaces(await panel.innerText());
  check(text.includes("No saved card"), `the panel says: ${text}`);
  check(text.includes("Off") && text.includes("0 of 4 top-ups this month"), `the panel says: ${text}`);
  check(!(await toggle.isChecked()), "the switch is off at first");
  const aria = await panel.ariaSnapshot();
  check(aria.includes('switch "Auto top-up"') && aria.includes('spinbutton "Recharge below"') && aria.includes('combobox "Package"'),
    `what assistive technology sees:\n${aria}`);
  check(await page.getByRole("checkbox", { name: "Save my card for auto top-up" }).isVisible(), "the save-card checkbox is offered");
  step("the console's auto top-up panel shows it off, without a saved card, with a labelled switch");

  // 2. On without a card: the server's refusal shows and the switch goes back off.
  await threshold.fill("1000");
  await toggle.click();
  const alert = panel.getByRole("alert");
  await alert.waitFor({ timeout: 5000 });
  const refusal = spaces(await alert.innerText());
  check(refusal.includes("needs a saved payment method"), `the refusal shown: ${refusal}`);
  await shows("off");
  check(!(await toggle.isChecked()), "the switch went back off");
  check((await settings()).enabled === false, "still off on the server");
  step(`switching it on without a saved card shows the server's refusal: "${refusal}"`);

  // 3. A purchase that keeps the card: Checkout, the signed webhook, the card shown.
  await page.getByRole("checkbox", { name: "Save my card for auto top-up" }).check();
  await page.locator("credits-packages button[data-package=credits_starter]").click();
  await page.waitForURL((url) => url.href.startsWith(`${CHECKOUT}c/pay/cs_test_`), { timeout: 5000 });
  const purchase = (await gql(apiKey, "{ creditPurchases(first: 1) { edges { node { id status } } } }")).creditPurchases.edges[0].node;
  check(purchase.status === "PENDING", "the purchase is pending");
  await page.goto(`${base}/console?purchase=${purchase.id}`);
  await page.locator("#purchase-return[data-status=PENDING]").waitFor({ timeout: 5000 });
  await pay(purchase.id, { save_for_auto_top_up: "true" });
  await page.locator("#purchase-return[data-status=PAID]").waitFor({ timeout: 5000 });
  // Paid, the balance changes: the panel reads the card without a reload.
  await panel.locator('[part=saved-card][data-last4="4242"]').waitFor({ timeout: 5000 });
  text = spaces(await panel.locator("[part=saved-card]").innerText());
  check(text === "Saved card: Visa ending in 4242, expires 08/2030", `the card shown: ${text}`);
  const saved = await settings();
  check(JSON.stringify(saved.paymentMethod) === JSON.stringify({ brand: "visa", last4: "4242", expMonth: 8, expYear: 2030 }),
    `the card saved: ${JSON.stringify(saved.paymentMethod)}`);
  step(`"Save my card for auto top-up" and Buy keep the card: ${text}`);

  // 4. On, then off with the keyboard; the admin reads each.
  await threshold.fill("1000");
  await page.getByRole("combobox", { name: "Package" }).selectOption("credits_basic");
  await toggle.click();
  await shows("on");
  const on = await enabledIs(true, "switched on");
  check(on.threshold === 1000 && on.packageId === "credits_basic" && on.pausedReason === null, `on as set: ${JSON.stringify(on)}`);
  text = spaces(await panel.locator("[part=auto-top-up-state]").innerText());
  check(text === "On: buys Basic when fewer than 1,000 credits are available.", `the state shown: ${text}`);
  check(await toggle.isChecked(), "the switch is on");
  if (screenshots) {
    mkdirSync(screenshots, { recursive: true });
    // The console's Buy credits section with a margin; the box is the viewport's, the clip the page's.
    const box = await page.locator("section", { has: page.locator("#buy-heading") }).boundingBox();
    const top = box.y + (await page.evaluate(() => window.scrollY));
    await page.screenshot({ path: join(screenshots, "console-auto-top-up.png"), fullPage: true,
      clip: { x: box.x - 12, y: top - 12, width: box.width + 24, height: box.height + 24 } });
  }
  step(`the switch turns it on: ${text}`);
  await toggle.focus();
  await page.keyboard.press("Space");
  await shows("off");
  await enabledIs(false, "switched off");
  check(await toggle.evaluate((element) => element.getRootNode().activeElement === element), "the switch keeps focus");
  step("Space on the focused switch turns it off; the admin reads enabled: false");

  // 5. On with the threshold above the balance: a top-up starts at once, the card is
  //    declined and the panel shows it paused; off again lifts the pause.
  const { available } = (await gql(token, "{ creditBalance { available } }")).creditBalance;
  await threshold.fill(String(available + 1));
  await toggle.click();
  await shows("paused", 10000);
  text = spaces(await panel.innerText());
  check(/Paused: .*declined/.test(text), `the pause shown: ${text}`);
  check(text.includes("1 of 4 top-ups this month"), `the top-ups counted: ${text}`);
  await panel.locator("[part=last-top-up][data-status=FAILED]").waitFor({ timeout: 2000 });
  const paused = await settings();
  check(paused.enabled && /declined/.test(paused.pausedReason || ""), `paused on the server: ${JSON.stringify(paused)}`);
  step(`a declined top-up shows as paused: ${spaces(await panel.locator("[part=auto-top-up-state]").innerText())}`);
  await toggle.click();
  await shows("off");
  const off = await enabledIs(false, "switched off after the pause");
  check(off.pausedReason === null, `the pause is lifted: ${JSON.stringify(off)}`);
  step("switched off again, the pause is lifted");
  await ctx.close();
});
