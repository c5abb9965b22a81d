// credits elements: framework-free custom elements for a credit balance, a low-balance
// warning, packages to buy (and auto top-up), the transaction history, purchases and
// usage per day.
// Hand-written, no dependencies; served by the credits server at /elements.js.
//
//   <script type="module" src="https://credits.example/elements.js"></script>
//   <credits-balance endpoint="https://credits.example/graphql" token="cst_…"></credits-balance>
//
// Every element takes `endpoint` (default: this page's origin + /graphql) and `token`
// (a client session token, never a secret API key). Elements with the same endpoint and
// token share one client: one WebSocket (graphql-transport-ws, reconnecting by itself)
// and one `creditBalanceChanged` subscription. They emit `credits:balance`,
// `credits:low-balance` and `credits:error` (bubbling, composed) and are styled with CSS
// custom properties (--credits-*) and ::part().

const KINDS = ["PURCHASE", "CONSUMPTION", "GRANT", "REFUND", "ADJUSTMENT"];

/** An enum value in words: PARTIALLY_REFUNDED → "Partially refunded". */
export function words(value) {
  const text = String(value ?? "").toLowerCase().replace(/_/g, " ");
  return text.charAt(0).toUpperCase() + text.slice(1);
}

const numbers = new Intl.NumberFormat();
const dates = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "short" });
const ZERO_DECIMAL = new Set(["bif", "clp", "djf", "gnf", "jpy", "kmf", "krw", "mga", "pyg", "rwf", "ugx", "vnd", "vuv", "xaf", "xof", "xpf"]);

function money(amount, currency) {
  const code = String(currency || "usd");
  const value = ZERO_DECIMAL.has(code.toLowerCase()) ? amount : amount / 100;
  try {
    return new Intl.NumberFormat(undefined, { style: "currency", currency: code.toUpperCase() }).format(value);
  } catch {
    return `${value} ${code.toUpperCase()}`;
  }
}

/** A GraphQL error with its `extensions.code`. */
export class CreditsError extends Error {
  constructor(message, code, extensions) {
    super(message);
    this.name = "CreditsError";
    this.code = code || "INTERNAL_SERVER_ERROR";
    this.extensions = extensions || {};
  }
}

function toError(errors) {
  const first = (Array.isArray(errors) ? errors[0] : errors) || {};
  return new CreditsError(first.message || "Request failed", first.extensions?.code, first.extensions);
}

// ---------------------------------------------------------------------------------------
// The client: HTTP for queries and mutations, one shared WebSocket for subscriptions.

const PROTOCOL = "graphql-transport-ws";
const clients = new Map();

/** The shared client of `endpoint` and `token` on this page. */
export function clientFor(endpoint, token) {
  const url = new URL(endpoint || "/graphql", location.href).href;
  const key = `${url}\n${token || ""}`;
  let client = clients.get(key);
  if (!client) {
    client = new Client(url, token || "");
    clients.set(key, client);
  }
  return client;
}

class Client {
  constructor(endpoint, token) {
    this.endpoint = endpoint;
    this.token = token;
    this.socket = null;
    this.acknowledged = false;
    this.operations = new Map(); // id → { payload, sink }
    this.nextId = 1;
    this.attempt = 0;
    this.retry = null;
    this.closeTimer = null;
    this.fatal = null;
    this.balance = null; // the shared creditBalanceChanged feed
  }

  headers() {
    const headers = { "content-type": "application/json", accept: "application/graphql-response+json, application/json" };
    if (this.token) headers.authorization = `Bearer ${this.token}`;
    return headers;
  }

  /** Runs a query or mutation over HTTP; resolves `data` or throws a CreditsError. */
  async request(query, variables = {}) {
    let response;
    try {
      response = await fetch(this.endpoint, {
        method: "POST",
        headers: this.headers(),
        body: JSON.stringify({ query, variables }),
        credentials: "omit",
        cache: "no-store",
      });
    } catch (error) {
      throw new CreditsError(`The credits server cannot be reached (${error.message})`, "NETWORK_ERROR");
    }
    let body;
    try {
      body = await response.json();
    } catch {
      throw new CreditsError(`The credits server answered ${response.status}`, response.status === 429 ? "RATE_LIMITED" : "INTERNAL_SERVER_ERROR");
    }
    if (body.errors?.length) throw toError(body.errors);
    return body.data;
  }

  /** Starts a subscription; `sink` gets next(data), error(CreditsError), complete() and
   *  started(reconnected) each time its subscribe message is sent (first, and after each
   *  reconnection). Returns a function that stops it. */
  subscribe(query, variables, sink) {
    const id = String(this.nextId++);
    this.operations.set(id, { payload: { query, variables: variables || {} }, sink });
    clearTimeout(this.closeTimer);
    if (this.fatal) {
      queueMicrotask(() => sink.error?.(this.fatal));
    } else if (this.acknowledged) {
      this.send({ id, type: "subscribe", payload: { query, variables: variables || {} } });
      sink.started?.(false);
    } else {
      this.connect();
    }
    return () => {
      if (!this.operations.delete(id)) return;
      if (this.acknowledged) this.send({ id, type: "complete" });
      if (this.operations.size === 0) {
        // Elements re-rendering (a changed attribute) resubscribe at once: keep the socket briefly.
        this.closeTimer = setTimeout(() => this.disconnect(), 1000);
      }
    };
  }

  /** The shared balance feed: one subscription per client, whatever the number of elements. */
  balanceFeed() {
    if (!this.balance) this.balance = new BalanceFeed(this);
    return this.balance;
  }

  send(message) {
    if (this.socket?.readyState === WebSocket.OPEN) this.socket.send(JSON.stringify(message));
  }

  connect() {
    if (this.socket || this.retry) return;
    const url = new URL(this.endpoint.replace(/\/$/, "") + "/ws");
    url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
    const socket = new WebSocket(url.href, PROTOCOL);
    this.socket = socket;
    socket.onopen = () => {
      socket.send(JSON.stringify({ type: "connection_init", payload: this.token ? { authorization: `Bearer ${this.token}` } : {} }));
    };
    socket.onmessage = (event) => this.receive(socket, event.data);
    socket.onclose = (event) => this.closed(socket, event.code);
  }

  receive(socket, data) {
    let message;
    try {
      message = JSON.parse(data);
    } catch {
      return;
    }
    const operation = this.operations.get(message.id);
    switch (message.type) {
      case "connection_ack": {
        const reconnected = this.attempt > 0;
        this.acknowledged = true;
        this.attempt = 0;
        for (const [id, { payload, sink }] of this.operations) {
          socket.send(JSON.stringify({ id, type: "subscribe", payload }));
          sink.started?.(reconnected);
        }
        break;
      }
      case "ping":
        socket.send(JSON.stringify({ type: "pong" }));
        break;
      case "next":
        if (operation) {
          if (message.payload?.errors?.length && !message.payload.data) operation.sink.error?.(toError(message.payload.errors));
          else operation.sink.next?.(message.payload.data, message.payload);
        }
        break;
      case "error":
        if (operation) {
          this.operations.delete(message.id);
          operation.sink.error?.(toError(message.payload));
        }
        break;
      case "complete":
        if (operation) {
          this.operations.delete(message.id);
          operation.sink.complete?.();
        }
        break;
    }
  }

  closed(socket, code) {
    if (this.socket !== socket) return;
    this.socket = null;
    this.acknowledged = false;
    if (code === 4403) {
      // The token is invalid, expired or revoked: retrying will not help.
      this.fatal = new CreditsError("The access token is not valid (expired or revoked)", "UNAUTHENTICATED");
      for (const { sink } of this.operations.values()) sink.error?.(this.fatal);
      this.operations.clear();
      return;
    }
    if (this.operations.size === 0) return;
    // Reconnect with exponential backoff and jitter: 0.5 s, 1 s, 2 s … at most 30 s.
    this.attempt += 1;
    const ceiling = Math.min(30000, 500 * 2 ** (this.attempt - 1));
    const wait = ceiling / 2 + Math.random() * (ceiling / 2);
    this.retry = setTimeout(() => {
      this.retry = null;
      if (this.operations.size > 0) this.connect();
    }, wait);
  }

  disconnect() {
    if (this.operations.size > 0) return;
    clearTimeout(this.retry);
    this.retry = null;
    const socket = this.socket;
    this.socket = null;
    this.acknowledged = false;
    this.attempt = 0;
    if (socket && socket.readyState <= WebSocket.OPEN) socket.close(1000, "Normal closure");
  }
}

const BALANCE_FIELDS = "id organizationId balance available held nextExpiration { at amount } lowBalanceThreshold isLow updatedAt";

/** The organization's balance, fetched once and then pushed; shared by a client's elements. */
class BalanceFeed {
  constructor(client) {
    this.client = client;
    this.listeners = new Set();
    this.current = null;
    this.stop = null;
  }

  /** Calls `listener(balance, error)` now (if known) and on every change. */
  listen(listener) {
    this.listeners.add(listener);
    if (this.current) listener(this.current, null);
    if (!this.stop) this.start();
    return () => {
      this.listeners.delete(listener);
      if (this.listeners.size === 0 && this.stop) {
        this.stop();
        this.stop = null;
        this.current = null;
      }
    };
  }

  start() {
    this.stop = this.client.subscribe(`subscription { creditBalanceChanged { ${BALANCE_FIELDS} } }`, {}, {
      next: (data) => this.publish(data.creditBalanceChanged),
      error: (error) => this.fail(error),
      // A change before the subscription started (after the first read below, or while
      // the socket was down) is not replayed: read the balance afresh once it has.
      started: () => this.refresh(),
    });
    this.refresh();
  }

  async refresh() {
    try {
      const data = await this.client.request(`{ creditBalance { ${BALANCE_FIELDS} } }`);
      this.publish(data.creditBalance);
    } catch (error) {
      this.fail(error);
    }
  }

  publish(balance) {
    if (!balance) return;
    // A slow HTTP answer must not overwrite a newer pushed balance.
    if (this.current && balance.updatedAt < this.current.updatedAt) return;
    this.current = balance;
    for (const listener of this.listeners) listener(balance, null);
  }

  fail(error) {
    for (const listener of this.listeners) listener(null, error);
  }
}

// ---------------------------------------------------------------------------------------
// The elements.

const BASE_CSS = `
:host { display: block; font-family: var(--credits-font-family, system-ui, sans-serif); color: var(--credits-color, #1d2433);
  font-size: var(--credits-font-size, 1rem); }
:host([hidden]) { display: none; }
* { box-sizing: border-box; }
.card { background: var(--credits-background, #fff); border: 1px solid var(--credits-border-color, #d8dde6);
  border-radius: var(--credits-radius, 8px); padding: var(--credits-padding, 1rem); }
h2, h3 { margin: 0 0 .5rem; font-size: 1.05em; }
button, select, input[type=number] { font: inherit; color: inherit; border-radius: var(--credits-radius-small, 6px); padding: .35rem .8rem;
  border: 1px solid var(--credits-border-color, #d8dde6); background: var(--credits-background, #fff); cursor: pointer; }
input[type=number] { cursor: text; width: 9em; }
button.primary { background: var(--credits-accent, #0b6e4f); border-color: var(--credits-accent, #0b6e4f); color: var(--credits-accent-text, #fff); }
button:disabled { opacity: .55; cursor: default; }
button:focus-visible, select:focus-visible, input:focus-visible, a:focus-visible { outline: 3px solid var(--credits-focus-color, #1a73e8); outline-offset: 2px; }
table { width: 100%; border-collapse: collapse; }
caption { text-align: left; font-weight: 600; margin-bottom: .5rem; }
th, td { text-align: left; padding: .4rem .5rem; border-bottom: 1px solid var(--credits-border-color, #d8dde6); vertical-align: top; }
th { font-weight: 600; font-size: .9em; color: var(--credits-muted-color, #5b6578); }
td.number, th.number { text-align: right; font-variant-numeric: tabular-nums; }
.muted { color: var(--credits-muted-color, #5b6578); }
.error { color: var(--credits-danger, #b3261e); }
.positive { color: var(--credits-positive, #0b6e4f); }
.negative { color: var(--credits-negative, #1d2433); }
.toolbar { display: flex; gap: .5rem; align-items: center; flex-wrap: wrap; margin-bottom: .5rem; }
.pager { display: flex; gap: .5rem; justify-content: flex-end; margin-top: .5rem; }
.badge { display: inline-block; padding: .05rem .5rem; border-radius: 999px; font-size: .85em;
  background: var(--credits-badge-background, #eef1f5); }
.badge[data-status="PAID"] { background: var(--credits-paid-background, #dff3e8); }
.badge[data-status="FAILED"], .badge[data-status="EXPIRED"], .badge[data-status="DISPUTED"] { background: var(--credits-failed-background, #fbe3e1); }
.switch { display: inline-flex; gap: .4rem; align-items: center; cursor: pointer; }
.switch input { width: 1.05em; height: 1.05em; margin: 0; accent-color: var(--credits-accent, #0b6e4f); }
.visually-hidden { position: absolute; width: 1px; height: 1px; overflow: hidden; clip: rect(0 0 0 0); white-space: nowrap; }
`;

let sharedSheet = null;
function baseSheet() {
  if (!sharedSheet && "adoptedStyleSheets" in Document.prototype) {
    // Constructed style sheets are not inline styles: a strict style-src CSP allows them.
    sharedSheet = new CSSStyleSheet();
    sharedSheet.replaceSync(BASE_CSS);
  }
  return sharedSheet;
}

/** Builds DOM without innerHTML (no injection from server data): h("p", {class: "x"}, "text"). */
function h(tag, attributes = {}, ...children) {
  return fill(document.createElement(tag), attributes, children);
}

const SVG_NS = "http://www.w3.org/2000/svg";

/** As `h`, for SVG: s("rect", {x: 0, width: 4}). */
function s(tag, attributes = {}, ...children) {
  return fill(document.createElementNS(SVG_NS, tag), attributes, children);
}

function fill(element, attributes, children) {
  for (const [name, value] of Object.entries(attributes)) {
    if (value === false || value == null) continue;
    if (name.startsWith("on")) element.addEventListener(name.slice(2), value);
    else element.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child == null || child === false) continue;
    element.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return element;
}

/** What every element shares: attributes, the client, events, rendering into a shadow root. */
class CreditsElement extends HTMLElement {
  static get observedAttributes() {
    return ["endpoint", "token"];
  }

  constructor() {
    super();
    this.root = this.attachShadow({ mode: "open" });
    const sheet = baseSheet();
    if (sheet) this.root.adoptedStyleSheets = [sheet];
    this.cleanups = [];
  }

  get endpoint() {
    return this.getAttribute("endpoint") || new URL("/graphql", location.origin).href;
  }

  get token() {
    return this.getAttribute("token") || "";
  }

  get client() {
    return clientFor(this.endpoint, this.token);
  }

  connectedCallback() {
    this.restart();
  }

  disconnectedCallback() {
    this.teardown();
  }

  attributeChangedCallback(_name, previous, value) {
    if (previous !== value && this.isConnected) this.restart();
  }

  restart() {
    this.teardown();
    // Several attribute changes in one task (endpoint, then token) start only once.
    if (this.scheduled) return;
    this.scheduled = true;
    queueMicrotask(() => {
      this.scheduled = false;
      if (!this.isConnected) return;
      this.teardown();
      this.start();
    });
  }

  teardown() {
    for (const cleanup of this.cleanups.splice(0)) cleanup();
  }

  /** Runs when connected or reconfigured; register cleanups with `this.cleanups.push`. */
  start() {}

  render(...children) {
    this.root.replaceChildren(...children);
  }

  emit(name, detail) {
    this.dispatchEvent(new CustomEvent(name, { detail, bubbles: true, composed: true }));
  }

  /** Reports an error as `credits:error`; returns a paragraph to show. */
  failed(error) {
    this.emit("credits:error", { code: error.code, message: error.message, element: this.localName });
    return h("p", { class: "error", role: "alert", part: "error" }, error.message);
  }

  watchBalance(listener) {
    this.cleanups.push(this.client.balanceFeed().listen(listener));
  }

  /** Calls `listener()` on every change of the balance after the first one seen, except
   *  those that only move held credits (a hold created, released or expired: no new
   *  transaction, the same balance). */
  watchLedger(listener) {
    let previous = null;
    this.watchBalance((balance) => {
      if (!balance) return;
      const heldOnly = previous && balance.balance === previous.balance && balance.held !== previous.held;
      if (previous && !heldOnly) listener();
      previous = balance;
    });
  }
}

/** "1 credit" / "2,500 credits". */
function credits(amount) {
  return `${numbers.format(amount)} ${amount === 1 ? "credit" : "credits"}`;
}

const BALANCE_CSS = `.figure { margin: .1rem 0; }
.details { font-size: .9em; color: var(--credits-muted-color, #5b6578); }
.details p { margin: .25rem 0 0; }
.details [hidden] { display: none; }`;

/** `<credits-balance>`: what is available to spend, live; below it the credits held by
 *  active holds (when any) and the next expiry (when there is one). */
class CreditsBalance extends CreditsElement {
  start() {
    const sheet = new CSSStyleSheet();
    sheet.replaceSync(BALANCE_CSS);
    this.root.adoptedStyleSheets = [baseSheet(), sheet].filter(Boolean);
    this.render(h("div", { class: "card", part: "card" }, h("span", { class: "muted" }, "Loading balance…")));
    let view = null; // built at the first balance, then updated in place (live regions stay)
    this.watchBalance((balance, error) => {
      if (error) {
        view = null;
        return this.render(h("div", { class: "card", part: "card" }, this.failed(error)));
      }
      if (!view) {
        view = {
          value: h("output", { part: "value", "aria-live": "polite", "aria-atomic": "true", "aria-labelledby": "label" }),
          unit: h("span", { class: "muted", part: "unit" }),
          held: h("p", { part: "held" }),
          expiry: h("p", { part: "expiry" }),
        };
        this.render(
          h("div", { class: "card", part: "card" },
            h("div", { class: "muted", part: "label", id: "label" }, this.getAttribute("label") || "Available credits"),
            h("div", { class: "figure" }, view.value, view.unit),
            // A live region of its own, announced apart from the figure: what is held, what expires.
            h("div", { class: "details", part: "details", "aria-live": "polite" }, view.held, view.expiry)),
        );
      }
      this.show(view, balance);
      this.emit("credits:balance", { ...balance, nextExpiration: balance.nextExpiration && { ...balance.nextExpiration } });
    });
  }

  show(view, balance) {
    const { available, held } = balance;
    const next = balance.nextExpiration;
    view.value.dataset.balance = balance.balance;
    view.value.dataset.available = available;
    view.value.dataset.held = held;
    view.value.textContent = numbers.format(available);
    view.unit.textContent = available === 1 ? " credit" : " credits";
    view.held.hidden = !(held > 0);
    view.held.dataset.held = held;
    view.held.textContent = held > 0 ? `${credits(held)} held` : "";
    view.expiry.hidden = !next;
    if (next) {
      view.expiry.dataset.at = next.at;
      view.expiry.dataset.amount = next.amount;
      view.expiry.replaceChildren(
        `${credits(next.amount)} ${next.amount === 1 ? "expires" : "expire"} on `,
        h("time", { datetime: next.at }, dates.format(new Date(next.at))));
    } else {
      delete view.expiry.dataset.at;
      delete view.expiry.dataset.amount;
      view.expiry.replaceChildren();
    }
  }
}

/** `<credits-low-balance-warning threshold="…">`: shown only while the balance is low: its
 *  available credits below `threshold`, else the organization's threshold (with neither, never). */
class CreditsLowBalanceWarning extends CreditsElement {
  static get observedAttributes() {
    return [...super.observedAttributes, "threshold"];
  }

  start() {
    const sheet = new CSSStyleSheet();
    sheet.replaceSync(WARNING_CSS);
    this.root.adoptedStyleSheets = [baseSheet(), sheet].filter(Boolean);
    this.low = false;
    const region = h("div", { role: "status", "aria-live": "polite", part: "region" });
    this.render(region);
    const attribute = this.getAttribute("threshold");
    const fixed = attribute !== null && attribute !== "" && Number.isFinite(Number(attribute)) ? Number(attribute) : null;
    let watching = null; // the threshold the lowBalance subscription watches
    this.watchBalance((balance, error) => {
      if (error) return region.replaceChildren(this.failed(error));
      const threshold = fixed ?? balance.lowBalanceThreshold;
      // Low compares what is available (held credits are not), as the server's isLow does.
      const low = threshold != null && balance.available < threshold;
      this.toggleAttribute("low", low);
      region.replaceChildren(
        low
          ? h("div", { class: "card warning", part: "warning" },
              h("strong", {}, "Low balance: "),
              `${credits(balance.available)} available, below ${numbers.format(threshold)}. `,
              h("slot", {}, "Buy credits to keep going."))
          : "",
      );
      this.low = low;
      // `credits:low-balance` comes from the server's lowBalance subscription: one event
      // when the balance is low at the start, then one per crossing into low.
      if (threshold != null && threshold !== watching) {
        watching = threshold;
        this.stopLowBalance?.();
        this.stopLowBalance = this.client.subscribe(
          "subscription($t: Credits) { lowBalance(threshold: $t) { organizationId balance threshold transactionId occurredAt } }",
          { t: threshold },
          { next: (data) => this.emit("credits:low-balance", { ...data.lowBalance }), error: (e) => this.failed(e) },
        );
        this.cleanups.push(() => this.stopLowBalance?.());
      }
    });
  }
}

const WARNING_CSS = `.warning { background: var(--credits-warning-background, #fff4d6); border-color: var(--credits-warning-border, #e0a800); color: var(--credits-warning-color, #4a3700); }`;

const PACKAGES_CSS = `.packages { list-style: none; padding: 0; margin: 0; display: grid; gap: .75rem;
  grid-template-columns: repeat(auto-fill, minmax(12rem, 1fr)); }
.packages p { margin: .25rem 0; }
.price { font-size: 1.2em; font-weight: 600; }
.auto { margin-top: .75rem; }
.auto[aria-busy="true"] { opacity: .8; }
.auto p { margin: .35rem 0; }
.auto .title { font-weight: 600; margin-right: auto; }
.auto .fields { display: flex; flex-wrap: wrap; gap: .5rem 1.25rem; margin: .5rem 0; }
.auto .fields label { display: inline-flex; gap: .4rem; align-items: center; }
.auto [data-state] { font-weight: 600; }
.auto [hidden] { display: none; }`;

/** What `<credits-packages auto-top-up>` reads and shows: the latest top-up, then the auto top-up. */
const LAST_TOP_UP_QUERY = "{ creditTopUps(first: 1) { edges { node { id packageId status credits createdAt failureMessage } } } }";
const AUTO_TOP_UP_QUERY = `{ organization { lowBalanceThreshold
    autoTopUp { enabled threshold packageId monthlyLimit topUpsThisMonth pausedReason paymentMethod { brand last4 expMonth expYear } } } }`;
const SET_AUTO_TOP_UP = "mutation($input: SetAutoTopUpInput!) { setAutoTopUp(input: $input) { enabled } }";
/** How often a top-up being paid is looked at again: when it fails, nothing else says so
 *  (the balance does not change). */
const TOP_UP_POLL_MS = 1000;

/** A saved card in words: "Visa ending in 4242, expires 08/2030". */
function cardText(card) {
  const expiry = card.expMonth && card.expYear ? `, expires ${String(card.expMonth).padStart(2, "0")}/${card.expYear}` : "";
  return `${words(card.brand || "card")} ending in ${card.last4 || "????"}${expiry}`;
}

/** `<credits-packages>`: the packages on sale, each with a Buy button that starts a
 *  Stripe Checkout and sends the browser there. With `auto-top-up`, also the
 *  organization's auto top-up (saved card, state, a switch, the threshold and package
 *  it uses) and a "Save my card for auto top-up" checkbox for the next purchase: the
 *  token needs READ and PURCHASE. */
class CreditsPackages extends CreditsElement {
  static get observedAttributes() {
    return [...super.observedAttributes, "success-url", "cancel-url", "auto-top-up"];
  }

  /** Back to this page, with `?purchase={PURCHASE_ID}` (filled in by the server); never
   *  with this page's fragment, which may hold a token. */
  returnUrl(attribute) {
    const explicit = this.getAttribute(attribute);
    if (explicit) return new URL(explicit, location.href).href;
    const here = new URL(location.href);
    here.hash = "";
    here.searchParams.delete("purchase");
    const base = here.href;
    return `${base}${here.search ? "&" : "?"}purchase={PURCHASE_ID}`;
  }

  async start() {
    let live = true; // false once torn down while the packages were read
    this.cleanups.push(() => (live = false));
    this.render(h("div", { class: "card", part: "card" }, h("span", { class: "muted" }, "Loading packages…")));
    let packages;
    try {
      packages = (await this.client.request("{ creditPackages { id name credits bonusCredits totalCredits priceAmount currency } }")).creditPackages;
    } catch (error) {
      if (live) this.render(h("div", { class: "card", part: "card" }, this.failed(error)));
      return;
    }
    if (!live) return;
    const autoTopUp = this.hasAttribute("auto-top-up");
    const status = h("p", { class: "muted", role: "status", "aria-live": "polite" });
    const saveCard = autoTopUp ? h("input", { type: "checkbox", "data-control": "save-card" }) : null;
    const list = h("ul", { class: "packages", part: "list" },
      packages.map((pkg) => {
        const price = money(pkg.priceAmount, pkg.currency);
        const button = h("button", { type: "button", class: "primary", part: "buy-button", "data-package": pkg.id,
          "aria-label": `Buy ${pkg.name}: ${numbers.format(pkg.totalCredits)} credits for ${price}` }, "Buy");
        button.addEventListener("click", () => this.buy(pkg, button, status, Boolean(saveCard?.checked)));
        return h("li", { class: "card", part: "package" },
          h("h3", {}, pkg.name),
          h("p", {}, h("strong", {}, numbers.format(pkg.credits)), " credits",
            pkg.bonusCredits > 0 ? h("span", { class: "positive" }, ` + ${numbers.format(pkg.bonusCredits)} bonus`) : ""),
          h("p", { class: "price" }, price),
          button);
      }));
    const style = new CSSStyleSheet();
    style.replaceSync(PACKAGES_CSS);
    this.root.adoptedStyleSheets = [baseSheet(), style].filter(Boolean);
    this.render(...[
      h("section", { "aria-label": this.getAttribute("label") || "Buy credits" },
        saveCard ? h("div", { class: "toolbar" }, h("label", { class: "switch", part: "save-card" }, saveCard, "Save my card for auto top-up")) : null,
        list, status),
      autoTopUp ? this.autoTopUpPanel(packages) : null,
    ].filter(Boolean));
  }

  async buy(pkg, button, status, saveForAutoTopUp) {
    const buttons = this.root.querySelectorAll("button");
    buttons.forEach((b) => (b.disabled = true));
    button.setAttribute("aria-busy", "true");
    status.textContent = `Starting checkout for ${pkg.name}…`;
    try {
      const input = { packageId: pkg.id, successUrl: this.returnUrl("success-url"), cancelUrl: this.returnUrl("cancel-url") };
      if (saveForAutoTopUp) input.saveForAutoTopUp = true;
      const data = await this.client.request(
        "mutation($input: PurchasePackageInput!) { purchasePackage(input: $input) { checkoutUrl purchase { id status } } }",
        { input },
      );
      const { checkoutUrl, purchase } = data.purchasePackage;
      const proceed = this.dispatchEvent(new CustomEvent("credits:checkout", { detail: { purchase, checkoutUrl }, bubbles: true, composed: true, cancelable: true }));
      if (proceed) location.assign(checkoutUrl);
    } catch (error) {
      status.replaceChildren(this.failed(error));
      buttons.forEach((b) => (b.disabled = false));
      button.removeAttribute("aria-busy");
    }
  }

  /** The auto top-up panel, built once and then updated in place (the switch and the
   *  fields keep focus); read now, after every change of the ledger, and every second
   *  while a top-up is being paid. */
  autoTopUpPanel(packages) {
    const view = {
      ticket: 0, // the latest read; older answers are dropped
      changes: 0, // changes sent or waiting; reads are not shown meanwhile
      saving: Promise.resolve(), // the last change, which the next one waits for
      packages: new Map(packages.map((pkg) => [pkg.id, pkg])),
      toggle: h("input", { type: "checkbox", role: "switch", "data-control": "auto-top-up", part: "auto-top-up-switch" }),
      threshold: h("input", { type: "number", min: 0, step: 1, inputmode: "numeric", "data-control": "threshold", part: "threshold" }),
      package: h("select", { "data-control": "package", part: "package" },
        packages.map((pkg) => h("option", { value: pkg.id }, `${pkg.name} (${credits(pkg.totalCredits)}, ${money(pkg.priceAmount, pkg.currency)})`))),
      card: h("p", { part: "saved-card" }),
      state: h("p", { part: "auto-top-up-state", "aria-live": "polite" }),
      limit: h("p", { class: "muted", part: "monthly-limit" }),
      last: h("p", { class: "muted", part: "last-top-up", hidden: true }),
      message: h("div", { part: "auto-top-up-message" }),
    };
    view.section = h("section", { class: "card auto", part: "auto-top-up", "aria-label": "Auto top-up", "aria-busy": "true" },
      h("div", { class: "toolbar" }, h("label", { class: "switch title" }, view.toggle, "Auto top-up")),
      view.card,
      view.state,
      h("div", { class: "fields" },
        h("label", {}, "Recharge below", view.threshold, h("span", { "aria-hidden": "true" }, "credits")),
        h("label", {}, "Package", view.package)),
      view.limit,
      view.last,
      view.message);
    for (const control of [view.toggle, view.threshold, view.package]) {
      control.addEventListener("change", () => this.setAutoTopUp(view));
    }
    this.loadAutoTopUp(view);
    this.watchLedger(() => this.loadAutoTopUp(view));
    this.cleanups.push(() => clearTimeout(view.timer));
    return view.section;
  }

  /** Reads the auto top-up and the latest top-up into `view`. */
  async loadAutoTopUp(view) {
    const ticket = ++view.ticket;
    clearTimeout(view.timer);
    let creditTopUps, organization;
    try {
      // In two requests, in this order: the fields of one request are read side by side,
      // and a top-up that ended without credits commits together with the pause it brings,
      // which a read after it therefore sees.
      ({ creditTopUps } = await this.client.request(LAST_TOP_UP_QUERY));
      ({ organization } = await this.client.request(AUTO_TOP_UP_QUERY));
    } catch (error) {
      if (ticket === view.ticket) {
        view.section.removeAttribute("aria-busy");
        view.message.replaceChildren(this.failed(error));
      }
      return;
    }
    if (ticket !== view.ticket || view.changes > 0) return; // the last change reads again
    this.showAutoTopUp(view, organization.autoTopUp, organization.lowBalanceThreshold);
    const last = creditTopUps.edges[0]?.node;
    view.last.hidden = !last;
    if (last) {
      view.last.dataset.status = last.status;
      view.last.replaceChildren(
        `Last top-up: ${words(last.status)}, ${credits(last.credits)} (${view.packages.get(last.packageId)?.name || last.packageId}) on `,
        h("time", { datetime: last.createdAt }, dates.format(new Date(last.createdAt))),
        last.failureMessage ? `: ${last.failureMessage}` : "");
    }
    if (last?.status === "PENDING") view.timer = setTimeout(() => this.loadAutoTopUp(view), TOP_UP_POLL_MS);
  }

  /** Shows `settings` (an AutoTopUp); an empty threshold field takes the saved threshold,
   *  else `fallback` (the organization's low-balance threshold). */
  showAutoTopUp(view, settings, fallback) {
    const state = !settings.enabled ? "off" : settings.pausedReason ? "paused" : "on";
    view.toggle.checked = settings.enabled;
    view.section.removeAttribute("aria-busy");
    view.section.dataset.state = state;
    const card = settings.paymentMethod;
    if (card) Object.assign(view.card.dataset, { brand: card.brand || "", last4: card.last4 || "" });
    else for (const key of ["brand", "last4"]) delete view.card.dataset[key];
    view.card.replaceChildren(card
      ? `Saved card: ${cardText(card)}`
      : "No saved card: tick “Save my card for auto top-up” when you buy credits.");
    // What the user is typing stays; otherwise the fields show what the server keeps.
    const threshold = settings.threshold ?? fallback;
    if (this.root.activeElement !== view.threshold && threshold != null) view.threshold.value = String(threshold);
    if (this.root.activeElement !== view.package && settings.packageId) view.package.value = settings.packageId;
    const pkg = view.packages.get(settings.packageId);
    view.state.replaceChildren(
      h("span", { "data-state": state }, state === "paused" ? "Paused" : state === "on" ? "On" : "Off"),
      state === "paused" ? `: ${settings.pausedReason} Turn it off and on again, or save a new card, to resume.` : "",
      state === "on" && settings.threshold != null
        ? `: buys ${pkg?.name || settings.packageId} when fewer than ${credits(settings.threshold)} are available.`
        : "");
    view.limit.textContent = `${numbers.format(settings.topUpsThisMonth)} of ${numbers.format(settings.monthlyLimit)} top-ups this month.`;
  }

  /** Sends the switch and the fields, as they are now, to `setAutoTopUp`. Changes go one
   *  at a time, in order (a field left for the switch makes two); after the last, the
   *  panel reads what the server keeps: on a refusal (say, no saved card) the switch goes
   *  back, and the server's message shows. */
  setAutoTopUp(view) {
    const threshold = view.threshold.value.trim();
    const input = { enabled: view.toggle.checked, threshold: threshold === "" ? null : Number(threshold), packageId: view.package.value || null };
    view.changes += 1;
    view.section.setAttribute("aria-busy", "true");
    view.message.replaceChildren();
    view.saving = view.saving.then(async () => {
      try {
        await this.client.request(SET_AUTO_TOP_UP, { input });
      } catch (error) {
        view.message.replaceChildren(this.failed(error));
      }
      view.changes -= 1;
      // Turned on below the threshold, a top-up has started too: the read shows and follows it.
      if (view.changes === 0) this.loadAutoTopUp(view);
    });
  }
}

/** `<credits-transactions page-size="10">`: the history, newest first, paginated,
 *  filtered by kind; the first page follows the balance live. */
class CreditsTransactions extends CreditsElement {
  static get observedAttributes() {
    return [...super.observedAttributes, "page-size"];
  }

  start() {
    this.kind = "";
    this.cursors = [null]; // the `after` cursor of each page seen, for "Newer"
    this.page = 0;
    this.load();
    this.watchLedger(() => {
      // A new transaction: refresh the newest page.
      if (this.page === 0) this.load();
    });
  }

  get pageSize() {
    const size = Number(this.getAttribute("page-size") || 10);
    return Number.isInteger(size) && size > 0 && size <= 100 ? size : 10;
  }

  async load() {
    const ticket = (this.ticket = (this.ticket || 0) + 1);
    let connection;
    try {
      const data = await this.client.request(
        `query($first: Int, $after: String, $filter: CreditTransactionFilter) {
          creditTransactions(first: $first, after: $after, filter: $filter) {
            totalCount pageInfo { hasNextPage endCursor }
            edges { node { id kind amount balanceAfter description createdAt } } } }`,
        { first: this.pageSize, after: this.cursors[this.page], filter: this.kind ? { kinds: [this.kind] } : null },
      );
      connection = data.creditTransactions;
    } catch (error) {
      if (ticket === this.ticket) this.render(h("div", { class: "card", part: "card" }, this.failed(error)));
      return;
    }
    if (ticket !== this.ticket) return; // a newer load is under way
    this.show(connection);
  }

  show(connection) {
    const focused = this.root.activeElement?.dataset?.control;
    const filter = h("select", { "aria-label": "Filter by kind", "data-control": "filter", part: "filter" },
      h("option", { value: "" }, "All kinds"),
      KINDS.map((kind) => h("option", { value: kind, selected: kind === this.kind }, words(kind))));
    filter.addEventListener("change", () => {
      this.kind = filter.value;
      this.cursors = [null];
      this.page = 0;
      this.load();
    });
    const newer = h("button", { type: "button", "data-control": "newer", disabled: this.page === 0 }, "Newer");
    newer.addEventListener("click", () => {
      this.page -= 1;
      this.load();
    });
    const older = h("button", { type: "button", "data-control": "older", disabled: !connection.pageInfo.hasNextPage }, "Older");
    older.addEventListener("click", () => {
      this.cursors[this.page + 1] = connection.pageInfo.endCursor;
      this.page += 1;
      this.load();
    });
    const rows = connection.edges.map(({ node }) =>
      h("tr", { "data-id": node.id, "data-kind": node.kind },
        h("td", {}, h("time", { datetime: node.createdAt }, dates.format(new Date(node.createdAt)))),
        h("td", {}, words(node.kind)),
        h("td", {}, node.description || ""),
        h("td", { class: `number ${node.amount < 0 ? "negative" : "positive"}` }, `${node.amount > 0 ? "+" : ""}${numbers.format(node.amount)}`),
        h("td", { class: "number" }, numbers.format(node.balanceAfter))));
    const first = this.page * this.pageSize + 1;
    this.render(
      h("section", { class: "card", part: "card", "aria-label": "Credit history" },
        h("div", { class: "toolbar" }, h("label", {}, h("span", { class: "visually-hidden" }, "Kind"), filter)),
        h("table", { part: "table" },
          h("caption", {}, this.getAttribute("label") || "Credit history"),
          h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "Date"), h("th", { scope: "col" }, "Kind"),
            h("th", { scope: "col" }, "Description"), h("th", { scope: "col", class: "number" }, "Amount"),
            h("th", { scope: "col", class: "number" }, "Balance after"))),
          h("tbody", {}, rows.length ? rows : h("tr", {}, h("td", { colspan: 5, class: "muted" }, "No transactions yet.")))),
        h("nav", { class: "pager", "aria-label": "History pages" },
          h("span", { class: "muted", "aria-live": "polite" },
            connection.totalCount ? `${first}–${first + rows.length - 1} of ${numbers.format(connection.totalCount)}` : ""),
          newer, older)));
    if (focused) this.root.querySelector(`[data-control="${focused}"]`)?.focus();
  }
}

/** `<credits-purchases>`: the organization's purchases and their status, refreshed when
 *  the balance changes (a payment credits it). */
class CreditsPurchases extends CreditsElement {
  static get observedAttributes() {
    return [...super.observedAttributes, "page-size"];
  }

  start() {
    this.load();
    this.watchLedger(() => this.load());
  }

  /** Reads the purchases again (say, after a Checkout return). */
  refresh() {
    return this.load();
  }

  async load() {
    const ticket = (this.ticket = (this.ticket || 0) + 1);
    const size = Math.min(100, Math.max(1, Number(this.getAttribute("page-size")) || 10));
    let connection;
    try {
      connection = (await this.client.request(
        `query($first: Int) { creditPurchases(first: $first) { totalCount
          edges { node { id packageId status credits amount currency createdAt } } } }`,
        { first: size },
      )).creditPurchases;
    } catch (error) {
      if (ticket === this.ticket) this.render(h("div", { class: "card", part: "card" }, this.failed(error)));
      return;
    }
    if (ticket !== this.ticket) return;
    const rows = connection.edges.map(({ node }) =>
      h("tr", { "data-id": node.id, "data-status": node.status },
        h("td", {}, h("time", { datetime: node.createdAt }, dates.format(new Date(node.createdAt)))),
        h("td", {}, node.packageId),
        h("td", { class: "number" }, numbers.format(node.credits)),
        h("td", { class: "number" }, money(node.amount, node.currency)),
        h("td", {}, h("span", { class: "badge", "data-status": node.status, part: "status" }, words(node.status)))));
    this.render(
      h("section", { class: "card", part: "card", "aria-label": "Purchases" },
        h("table", { part: "table" },
          h("caption", {}, this.getAttribute("label") || "Purchases"),
          h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "Date"), h("th", { scope: "col" }, "Package"),
            h("th", { scope: "col", class: "number" }, "Credits"), h("th", { scope: "col", class: "number" }, "Amount"),
            h("th", { scope: "col" }, "Status"))),
          h("tbody", {}, rows.length ? rows : h("tr", {}, h("td", { colspan: 5, class: "muted" }, "No purchases yet."))))));
  }
}

/** The most days `<credits-usage>` draws: a year (the server answers at most 744 buckets). */
const MAX_USAGE_DAYS = 366;
/** How long a burst of ledger changes is gathered before the report is read again: a
 *  report is heavier than a page of history, and a busy organization changes every moment. */
const USAGE_REFRESH_MS = 500;

const USAGE_QUERY = `query($from: DateTime!, $to: DateTime!, $timeZone: String, $groupBy: UsageGroupBy) {
  creditUsage(from: $from, to: $to, interval: DAY, timeZone: $timeZone, groupBy: $groupBy) {
    from to timeZone buckets { start group consumed } totals { consumed } } }`;

/** Colours of the groups when split, in order; the group without a reference type is grey. */
const SERIES = ["#0b6e4f", "#1a63c9", "#c26a00", "#b0417f", "#2b8fb8", "#c23d0a", "#6f42c1", "#5d7a1f"];

const USAGE_CSS = `
.title { font-weight: 600; margin-right: auto; }
figure { margin: 0; }
figure[aria-busy="true"] svg { opacity: .6; }
svg { display: block; width: 100%; height: auto; overflow: visible; }
.axis { fill: var(--credits-muted-color, #5b6578); font-size: 11px; font-variant-numeric: tabular-nums; }
.rule { stroke: var(--credits-border-color, #d8dde6); stroke-width: 1; }
.bar { fill: var(--credits-chart-color, var(--credits-accent, #0b6e4f)); }
.hit { fill: transparent; }
.day:hover .hit { fill: var(--credits-chart-hover, rgba(29, 36, 51, .06)); }
.legend { list-style: none; display: flex; flex-wrap: wrap; gap: .25rem 1rem; padding: 0; margin: .5rem 0 0; font-size: .9em; }
.swatch { display: inline-block; width: .8em; height: .8em; border-radius: 2px; margin-right: .35em; vertical-align: -.05em; }
figcaption { margin-top: .35rem; font-size: .9em; color: var(--credits-muted-color, #5b6578); }
${SERIES.map((colour, at) => `.series-${at} { fill: var(--credits-series-${at + 1}, ${colour}); background: var(--credits-series-${at + 1}, ${colour}); }`).join("\n")}
.series-none { fill: var(--credits-series-none, #8a93a3); background: var(--credits-series-none, #8a93a3); }
`;

const dayDates = new Intl.DateTimeFormat(undefined, { dateStyle: "medium" });
const axisDates = new Intl.DateTimeFormat(undefined, { month: "short", day: "numeric" });

/** A day of this browser's calendar as `2026-12-01`. */
function localDay(date) {
  return `${date.getFullYear()}-${String(date.getMonth() + 1).padStart(2, "0")}-${String(date.getDate()).padStart(2, "0")}`;
}

/** The smallest of 1, 2, 2.5, 5 × a power of ten at or above `value` (at least 1). */
function roundedUp(value) {
  if (!(value > 1)) return 1;
  const magnitude = 10 ** Math.floor(Math.log10(value));
  return [1, 2, 2.5, 5, 10].map((step) => step * magnitude).find((top) => top >= value);
}

/** `<credits-usage days="30">`: the credits consumed per day over the last `days` days
 *  (today included) in this browser's time zone, as a bar chart, with a switch to split
 *  each day by reference type; the same numbers in a table for screen readers. Follows
 *  the ledger live. */
class CreditsUsage extends CreditsElement {
  static get observedAttributes() {
    return [...super.observedAttributes, "days", "label"];
  }

  get days() {
    const days = Number(this.getAttribute("days") || 30);
    return Number.isInteger(days) && days > 0 && days <= MAX_USAGE_DAYS ? days : 30;
  }

  start() {
    const sheet = new CSSStyleSheet();
    sheet.replaceSync(USAGE_CSS);
    this.root.adoptedStyleSheets = [baseSheet(), sheet].filter(Boolean);
    this.split = Boolean(this.split); // kept across restarts (a changed attribute)
    const toggle = h("input", { type: "checkbox", "data-control": "split", part: "split", checked: this.split });
    toggle.addEventListener("change", () => {
      this.split = toggle.checked;
      this.load();
    });
    // The chart is replaced on every read; the title and the switch stay (and keep focus).
    this.figure = h("figure", { part: "chart", "aria-busy": "true" }, h("p", { class: "muted" }, "Loading usage…"));
    this.render(
      h("section", { class: "card", part: "card", "aria-labelledby": "title" },
        h("div", { class: "toolbar" },
          h("div", { class: "title", id: "title", part: "title" }, this.getAttribute("label") || "Credits consumed per day"),
          h("label", { class: "switch" }, toggle, "By reference type")),
        this.figure));
    this.load();
    let timer = null;
    this.watchLedger(() => {
      clearTimeout(timer);
      timer = setTimeout(() => this.load(), USAGE_REFRESH_MS);
    });
    this.cleanups.push(() => clearTimeout(timer), () => clearTimeout(this.rollover));
  }

  async load() {
    const ticket = (this.ticket = (this.ticket || 0) + 1);
    const days = this.days;
    const split = this.split;
    const now = new Date();
    // Midnights of this browser's calendar: Date follows its zone, daylight saving included
    // (a day may have 23 or 25 hours), and the server is asked for the same zone.
    const dates = Array.from({ length: days + 1 }, (_, at) => new Date(now.getFullYear(), now.getMonth(), now.getDate() - days + 1 + at));
    const timeZone = Intl.DateTimeFormat().resolvedOptions().timeZone || "UTC";
    // At midnight a new day begins and the oldest leaves: read again then, changes or not.
    clearTimeout(this.rollover);
    this.rollover = setTimeout(() => this.load(), dates[days] - now + 1000);
    this.figure.setAttribute("aria-busy", "true");
    let report;
    try {
      report = (await this.client.request(USAGE_QUERY, {
        from: dates[0].toISOString(),
        to: dates[days].toISOString(),
        timeZone,
        groupBy: split ? "REFERENCE_TYPE" : null,
      })).creditUsage;
    } catch (error) {
      if (ticket === this.ticket) {
        this.figure.removeAttribute("aria-busy");
        this.figure.replaceChildren(this.failed(error));
      }
      return;
    }
    if (ticket !== this.ticket) return; // a newer read is under way
    this.show(report, dates.slice(0, days), split);
  }

  /** Draws `report` over `dates` (one midnight per day). */
  show(report, dates, split) {
    // One row per day of the range, zero unless a bucket says otherwise.
    const rows = dates.map((date) => ({ day: localDay(date), date, consumed: 0, groups: new Map() }));
    const byDay = new Map(rows.map((row) => [row.day, row]));
    const groupTotals = new Map();
    for (const bucket of report.buckets) {
      const row = byDay.get(localDay(new Date(bucket.start)));
      if (!row || !(bucket.consumed > 0)) continue;
      row.consumed += bucket.consumed;
      if (split) {
        const group = bucket.group ?? null;
        row.groups.set(group, (row.groups.get(group) || 0) + bucket.consumed);
        groupTotals.set(group, (groupTotals.get(group) || 0) + bucket.consumed);
      }
    }
    // Groups by name (stable colours from one read to the next), the one without a type last.
    const groups = [...groupTotals.keys()].sort((a, b) => (a === null) - (b === null) || String(a).localeCompare(String(b)));
    const series = (group) => (group === null ? "series-none" : `series-${groups.indexOf(group) % SERIES.length}`);
    const name = (group) => group ?? "none";

    const width = 720;
    const height = 200;
    const left = 44;
    const right = 12; // room for the last date, centred under the last bar
    const top = 8;
    const bottom = 22;
    const plot = height - top - bottom;
    const slot = (width - left - right) / rows.length;
    const barWidth = Math.max(1, slot * 0.72);
    const ceiling = roundedUp(Math.max(0, ...rows.map((row) => row.consumed)));
    const y = (value) => top + plot - (value / ceiling) * plot;
    const ticks = [0, ceiling / 2, ceiling].filter((value) => Number.isInteger(value));
    const labelEvery = Math.ceil(rows.length / 7);

    const bars = rows.map((row, at) => {
      const x = left + at * slot + (slot - barWidth) / 2;
      let segments;
      if (split) {
        // Stacked bottom-up in legend order.
        let base = 0;
        segments = groups.filter((group) => row.groups.has(group)).map((group) => {
          const value = row.groups.get(group);
          const segment = s("rect", { class: `bar ${series(group)}`, x, y: y(base + value), width: barWidth, height: y(base) - y(base + value),
            "data-day": row.day, "data-group": group ?? "", "data-consumed": value },
            s("title", {}, `${dayDates.format(row.date)} · ${name(group)}: ${credits(value)} consumed`));
          base += value;
          return segment;
        });
      } else {
        segments = [s("rect", { class: "bar", x, y: y(row.consumed), width: barWidth, height: y(0) - y(row.consumed),
          "data-day": row.day, "data-consumed": row.consumed })];
      }
      return s("g", { class: "day", "data-day": row.day, "data-consumed": row.consumed },
        s("title", {}, `${dayDates.format(row.date)}: ${credits(row.consumed)} consumed`),
        // The whole column answers the pointer, so an empty day has its tooltip too.
        s("rect", { class: "hit", x: left + at * slot, y: top, width: slot, height: plot }),
        segments,
        // Dates under every few bars, counted back from the last (today), which always has one.
        (rows.length - 1 - at) % labelEvery === 0
          ? s("text", { class: "axis", x: left + at * slot + slot / 2, y: height - 6, "text-anchor": "middle" }, axisDates.format(row.date))
          : null);
    });
    const chart = s("svg", { viewBox: `0 0 ${width} ${height}`, "aria-hidden": "true" },
      ticks.map((value) => s("g", {},
        s("line", { class: "rule", x1: left, x2: width - right, y1: y(value), y2: y(value) }),
        s("text", { class: "axis", x: left - 6, y: y(value) + 4, "text-anchor": "end" }, numbers.format(value)))),
      bars);

    const period = `the last ${rows.length === 1 ? "day" : `${numbers.format(rows.length)} days`}`;
    // For screen readers, the same numbers as a table (the picture is hidden from them).
    const table = h("table", { class: "visually-hidden", part: "table" },
      h("caption", {}, `Credits consumed per day${split ? " by reference type" : ""}, ${period} (${report.timeZone})`),
      h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "Date"),
        split ? groups.map((group) => h("th", { scope: "col", class: "number" }, name(group))) : null,
        h("th", { scope: "col", class: "number" }, split ? "Total" : "Consumed"))),
      h("tbody", {}, rows.map((row) => h("tr", { "data-day": row.day },
        h("th", { scope: "row" }, h("time", { datetime: row.day }, dayDates.format(row.date))),
        split ? groups.map((group) => h("td", { class: "number" }, numbers.format(row.groups.get(group) || 0))) : null,
        h("td", { class: "number", "data-consumed": row.consumed }, numbers.format(row.consumed))))));
    const legend = split
      ? h("ul", { class: "legend", part: "legend", "aria-label": "Reference types" },
          groups.length
            ? groups.map((group) => h("li", { "data-group": group ?? "" }, h("span", { class: `swatch ${series(group)}`, "aria-hidden": "true" }), name(group)))
            : h("li", { class: "muted" }, "Nothing consumed."))
      : null;
    this.figure.removeAttribute("aria-busy");
    Object.assign(this.figure.dataset, { from: report.from, to: report.to, timeZone: report.timeZone, groupBy: split ? "REFERENCE_TYPE" : "", total: report.totals.consumed });
    this.figure.replaceChildren(
      ...[chart, legend, h("figcaption", { part: "summary" }, `${credits(report.totals.consumed)} consumed in ${period}.`), table].filter(Boolean));
  }
}

for (const [name, element] of [
  ["credits-balance", CreditsBalance],
  ["credits-low-balance-warning", CreditsLowBalanceWarning],
  ["credits-packages", CreditsPackages],
  ["credits-transactions", CreditsTransactions],
  ["credits-purchases", CreditsPurchases],
  ["credits-usage", CreditsUsage],
]) {
  if (!customElements.get(name)) customElements.define(name, element);
}

export { CreditsBalance, CreditsLowBalanceWarning, CreditsPackages, CreditsTransactions, CreditsPurchases, CreditsUsage };
