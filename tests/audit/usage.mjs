// The usage chart and the CSV export in real headless Chromium. Run by
// tests/api/browser.rs, which seeds an organization with consumes on days of the last
// month (on the ledger's clock, moved by hand) and passes it all in CREDITS_BROWSER (JSON).
// The browser runs in `timeZone`, a zone far from UTC, so that a chart drawn by UTC days
// would not match. Requests are watched as in browser.mjs (chromium.mjs).
import { readFileSync, mkdirSync } from "node:fs";
import { join } from "node:path";
import { check, graphql, startRun } from "./chromium.mjs";

const config = JSON.parse(process.env.CREDITS_BROWSER);
const { base, embed, token, apiKey, adminToken, timeZone, range, dates, expected, screenshots } = config;
const gql = graphql(base);
const { step, context, run } = await startRun({ secrets: [token, apiKey, adminToken] });

const CSV_HEADER = "id,createdAt,kind,amount,balanceAfter,description,referenceType,referenceId,idempotencyKey,holdId,apiKeyId";
const USAGE = `query($from: DateTime!, $to: DateTime!, $timeZone: String, $groupBy: UsageGroupBy) {
  creditUsage(from: $from, to: $to, interval: DAY, timeZone: $timeZone, groupBy: $groupBy) {
    from to timeZone buckets { start group consumed } totals { consumed } } }`;
/** A day of `timeZone`'s calendar as `2026-12-01` (en-CA writes dates that way). */
const dayIn = new Intl.DateTimeFormat("en-CA", { timeZone, year: "numeric", month: "2-digit", day: "2-digit" });
const same = (a, b) => JSON.stringify(a) === JSON.stringify(b);

/** `creditUsage` over HTTP for the range the chart shows: per day (or per day and group) the
 *  credits consumed, keyed like the chart's data attributes. */
async function report(groupBy) {
  const answer = (await gql(token, USAGE, { from: range.from, to: range.to, timeZone, groupBy })).creditUsage;
  const consumed = {};
  for (const bucket of answer.buckets) {
    const key = groupBy ? `${dayIn.format(new Date(bucket.start))} ${bucket.group ?? ""}` : dayIn.format(new Date(bucket.start));
    if (groupBy && bucket.consumed === 0) continue;
    consumed[key] = (consumed[key] || 0) + bucket.consumed;
  }
  return { answer, consumed };
}

/** What the chart in `page` shows: its range, per day the credits consumed, and per day and
 *  group the stacked segments (when split). */
async function chart(page) {
  return page.locator("credits-usage").evaluate((element) => {
    const figure = element.shadowRoot.querySelector("figure");
    const days = [...figure.querySelectorAll("svg g.day")].map((day) => ({
      day: day.dataset.day,
      consumed: Number(day.dataset.consumed),
      title: day.querySelector(":scope > title")?.textContent,
    }));
    const bars = [...figure.querySelectorAll("svg rect.bar")].map((bar) => ({ ...bar.dataset }));
    const rows = [...figure.querySelectorAll("table tbody tr")].map((row) => ({
      day: row.dataset.day,
      consumed: Number(row.querySelector("td[data-consumed]").dataset.consumed),
    }));
    return {
      ...figure.dataset,
      text: figure.textContent,
      svgHidden: figure.querySelector("svg").getAttribute("aria-hidden"),
      tableClass: figure.querySelector("table").className,
      legend: [...figure.querySelectorAll(".legend li")].map((item) => ({ group: item.dataset.group, text: item.textContent })),
      days,
      bars,
      rows,
    };
  });
}

/** Waits until the chart has drawn a report with `groupBy` ("" when not split). */
async function drawn(page, groupBy) {
  await page.locator(`credits-usage figure[data-group-by="${groupBy}"]:not([aria-busy])`).waitFor({ timeout: 5000 });
  const shown = await chart(page);
  check(!/null|undefined|NaN/.test(shown.text), `the chart says: ${shown.text}`);
  return shown;
}

/** Per day, the credits the seeded organization consumed (Rust's own account of the seeds). */
const seeded = (day) => expected[day]?.total ?? 0;

/** The chart, unsplit, agrees with `creditUsage` and with the seeds, day by day. */
async function checkDays(page, what) {
  const shown = await drawn(page, "");
  check(Date.parse(shown.from) === Date.parse(range.from) && Date.parse(shown.to) === Date.parse(range.to),
    `${what}: the chart covers ${shown.from} – ${shown.to}, not the last ${dates.length} days of ${timeZone} (${range.from} – ${range.to})`);
  check(shown.timeZone === timeZone, `${what}: the chart asked for ${shown.timeZone}, the browser is in ${timeZone}`);
  check(same(shown.days.map((d) => d.day), dates), `${what}: one bar per day, oldest first: ${shown.days.map((d) => d.day)}`);
  const { answer, consumed } = await report(null);
  for (const { day, consumed: value, title } of shown.days) {
    check(value === (consumed[day] ?? 0), `${what}: ${day} shows ${value}, creditUsage says ${consumed[day]}`);
    check(value === seeded(day), `${what}: ${day} shows ${value}, ${seeded(day)} were consumed that day`);
    check(title?.includes(`${new Intl.NumberFormat("en-US").format(value)} credit`), `${what}: ${day}'s tooltip says "${title}"`);
  }
  check(shown.bars.length === dates.length && shown.bars.every((bar, at) => bar.day === dates[at] && Number(bar.consumed) === shown.days[at].consumed && bar.group === undefined),
    `${what}: one unsplit bar per day: ${JSON.stringify(shown.bars.slice(0, 3))}…`);
  check(Number(shown.total) === answer.totals.consumed, `${what}: total ${shown.total}, creditUsage says ${answer.totals.consumed}`);
  // For screen readers: the picture hidden, the same numbers in a table.
  check(shown.svgHidden === "true", `${what}: the SVG is not hidden from screen readers`);
  check(shown.tableClass.includes("visually-hidden"), `${what}: the table is not visually hidden`);
  check(same(shown.rows, shown.days.map(({ day, consumed: value }) => ({ day, consumed: value }))), `${what}: the table's numbers differ from the bars'`);
  check(shown.days.filter((d) => d.consumed > 0).length >= 6, `${what}: too few days with consumption to mean anything`);
  return shown;
}

await run(async () => {
  // 1. The element on another origin, in the browser's zone: bars, table, split, live.
  {
    const { ctx, page } = await context([base, embed], { timezoneId: timeZone });
    await page.goto(`${embed}/usage.html`);
    await page.evaluate((t) => {
      for (const element of document.querySelectorAll("[data-needs-token]")) element.setAttribute("token", t);
    }, token);
    const shown = await checkDays(page, "embedded chart");
    const aria = await page.locator("credits-usage").ariaSnapshot();
    check(aria.includes("checkbox \"By reference type\"") && aria.includes("table \"Credits consumed per day"), `what assistive technology sees:\n${aria}`);
    check(!/^\s*- img\b/m.test(aria), `the SVG reaches assistive technology:\n${aria}`);
    step(`<credits-usage days="30"> in ${timeZone} draws creditUsage day by day (${shown.total} credits), with a table for screen readers`);

    // Split by reference type: stacked segments per day and group.
    await page.getByRole("checkbox", { name: "By reference type" }).check();
    const split = await drawn(page, "REFERENCE_TYPE");
    const { consumed: grouped } = await report("REFERENCE_TYPE");
    const segments = {};
    for (const bar of split.bars) {
      check(bar.group !== undefined, `a bar without a group when split: ${JSON.stringify(bar)}`);
      segments[`${bar.day} ${bar.group}`] = Number(bar.consumed);
    }
    check(same(Object.entries(segments).sort(), Object.entries(grouped).sort()),
      `the segments differ from creditUsage by reference type:\n${JSON.stringify(segments)}\n${JSON.stringify(grouped)}`);
    const wanted = {};
    for (const [day, { groups }] of Object.entries(expected)) {
      for (const [group, value] of Object.entries(groups)) wanted[`${day} ${group}`] = value;
    }
    check(same(Object.entries(segments).sort(), Object.entries(wanted).sort()),
      `the segments differ from the seeds:\n${JSON.stringify(segments)}\n${JSON.stringify(wanted)}`);
    check(same(split.days.map((d) => d.consumed), shown.days.map((d) => d.consumed)), "split, the days' totals changed");
    const groups = [...new Set(Object.keys(wanted).map((key) => key.split(" ")[1]))].sort((a, b) => (a === "") - (b === "") || a.localeCompare(b));
    check(same(split.legend.map((item) => item.group), groups), `legend ${JSON.stringify(split.legend)}, groups ${groups}`);
    check(split.legend.find((item) => item.group === "")?.text === "none", `no type is shown as "none": ${JSON.stringify(split.legend)}`);
    step(`the switch splits each day by reference type (${groups.map((g) => g || "none").join(", ")}), as creditUsage does`);

    // Live: a consume through the API shows in today's bar.
    const today = dates.at(-1);
    const before = split.days.at(-1).consumed;
    await gql(apiKey, "mutation { consumeCredits(input: { amount: 7, description: \"Live\", referenceType: \"ai_text\" }) { balance { balance } } }");
    await page.locator(`credits-usage g.day[data-day="${today}"][data-consumed="${before + 7}"]`).waitFor({ state: "attached", timeout: 5000 });
    await page.locator(`credits-usage rect[data-day="${today}"][data-group="ai_text"]`).waitFor({ state: "attached", timeout: 1000 });
    expected[today] = { total: before + 7, groups: { ...expected[today]?.groups, ai_text: (expected[today]?.groups?.ai_text ?? 0) + 7 } };
    step("a consume through the API shows in today's bar");

    await page.getByRole("checkbox", { name: "By reference type" }).uncheck();
    await checkDays(page, "embedded chart, unsplit again");
    step("unsplit again, one bar per day");
    await ctx.close();
  }

  // 2. The console: the usage panel, and Export CSV through the Authorization header.
  {
    const { ctx, page } = await context([base], { timezoneId: timeZone });
    await page.goto(`${base}/console#token=${token}`);
    await checkDays(page, "console chart");
    await page.locator("credits-transactions tbody tr[data-kind]").first().waitFor();
    step("the console's usage panel shows the same chart");
    if (screenshots) {
      // The panel split by reference type, with a margin around it.
      mkdirSync(screenshots, { recursive: true });
      await page.getByRole("checkbox", { name: "By reference type" }).check();
      await drawn(page, "REFERENCE_TYPE");
      const panel = await page.locator("section", { has: page.locator("#usage-heading") }).boundingBox();
      const clip = { x: panel.x - 12, y: panel.y - 12, width: panel.width + 24, height: panel.height + 24 };
      await page.screenshot({ path: join(screenshots, "console-usage.png"), clip, fullPage: true });
      await page.getByRole("checkbox", { name: "By reference type" }).uncheck();
      await drawn(page, "");
    }

    const [request, download] = await Promise.all([
      page.waitForRequest((r) => r.url().includes("/export/"), { timeout: 5000 }),
      page.waitForEvent("download", { timeout: 10000 }),
      page.getByRole("button", { name: "Export CSV" }).click(),
    ]);
    check(request.url() === `${base}/export/transactions?format=csv`, `the export was asked for at ${request.url()}`);
    const headers = await request.allHeaders();
    check(headers.authorization === `Bearer ${token}`, `the export request's Authorization header: ${headers.authorization ? "another value" : "none"}`);
    const response = await request.response();
    check(response.status() === 200, `the export answered ${response.status()}`);
    check(/^attachment/i.test((await response.allHeaders())["content-disposition"] || ""), "the export is an attachment");
    check(download.url().startsWith("blob:"), `the file was saved from ${download.url()}, not an object URL`);
    const name = download.suggestedFilename();
    check(/^credits-[\w.-]*\.csv$/.test(name), `the file is called ${name}`);
    const lines = readFileSync(await download.path(), "utf8").split(/\r?\n/).filter(Boolean);
    check(lines[0] === CSV_HEADER, `the CSV header is ${lines[0]}`);
    const history = (await gql(token, "{ creditTransactions(first: 100) { totalCount edges { node { id } } } }")).creditTransactions;
    const ids = lines.slice(1).map((line) => line.split(",")[0]).sort();
    check(same(ids, history.edges.map((edge) => edge.node.id).sort()), `the CSV has ${ids.length} rows, the history ${history.totalCount}`);
    await page.locator("#export-status", { hasText: `Downloaded ${name}` }).waitFor({ timeout: 2000 });
    step(`Export CSV downloads ${name} (${ids.length} transactions) with the token in the Authorization header, never in a URL`);
    await ctx.close();
  }
});
