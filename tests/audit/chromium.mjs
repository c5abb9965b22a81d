// What the browser scenarios share (browser.mjs, usage.mjs): Debian's headless Chromium
// driven by playwright-core, with every request of every page watched. A run fails on
// the first failed check and, at the end, on any problem seen meanwhile: a request off
// the allowed origins, a page error, a console error (a CSP violation is one), an HTTP
// error, a token in a request or WebSocket URL.
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
