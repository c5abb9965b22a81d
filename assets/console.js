// The console: the credits elements for one organization. The token comes from the
// form or from the fragment (`/console#token=cst_…`, which browsers never send to a
// server); it is kept in sessionStorage, so this tab still has it after a Stripe
// Checkout round trip, and it is removed from the address bar at once.
import { clientFor, words } from "/elements.js";

const STORAGE_KEY = "credits.console.token";
const $ = (id) => document.getElementById(id);

function takeTokenFromFragment() {
  const fragment = new URLSearchParams(location.hash.slice(1));
  const token = fragment.get("token");
  if (token) {
    sessionStorage.setItem(STORAGE_KEY, token.trim());
    fragment.delete("token");
    const rest = fragment.toString();
    history.replaceState(null, "", location.pathname + location.search + (rest ? `#${rest}` : ""));
  }
}

function show(token) {
  const signedIn = Boolean(token);
  $("token-form").hidden = signedIn;
  $("dashboard").hidden = !signedIn;
  $("forget").hidden = !signedIn;
  if (!signedIn) {
    $("organization").textContent = "";
    $("token").focus();
    return;
  }
  // The elements start once in the page, with their token already set.
  const dashboard = $("dashboard");
  const content = $("dashboard-template").content.cloneNode(true);
  for (const element of content.querySelectorAll("*")) {
    if (element.localName.startsWith("credits-")) element.setAttribute("token", token);
  }
  dashboard.replaceChildren(content);
  const client = clientFor(new URL("/graphql", location.href).href, token);
  client.request("{ organization { id name } }").then(
    ({ organization }) => ($("organization").textContent = `${organization.name} · ${organization.id}`),
    (error) => ($("organization").textContent = error.code === "FORBIDDEN" ? "" : error.message),
  );
  followPurchase(client);
  $("export-csv").addEventListener("click", () => exportCsv(token));
}

const EXPORT_NAME = "credits-transactions.csv";

/** Downloads the organization's transactions as CSV. A plain link cannot send the token in
 *  the `Authorization` header, and in a link's URL it would land in logs and history (the
 *  server refuses it there): the file is fetched with the header, then saved from an
 *  object URL. */
async function exportCsv(token) {
  const button = $("export-csv");
  const status = $("export-status");
  button.disabled = true;
  button.setAttribute("aria-busy", "true");
  status.hidden = false;
  status.textContent = "Preparing the export…";
  try {
    let response;
    try {
      response = await fetch(new URL("/export/transactions?format=csv", location.href), {
        headers: { authorization: `Bearer ${token}`, accept: "text/csv" },
        credentials: "omit",
        cache: "no-store",
      });
    } catch (error) {
      throw new Error(`the credits server cannot be reached (${error.message})`);
    }
    if (!response.ok) throw new Error(await refusal(response));
    const url = URL.createObjectURL(await response.blob());
    const name = attachmentName(response.headers.get("content-disposition")) || EXPORT_NAME;
    const link = Object.assign(document.createElement("a"), { href: url, download: name, hidden: true });
    document.body.append(link);
    link.click();
    link.remove();
    // The download reads the object URL after click() returns: let it go a little later.
    setTimeout(() => URL.revokeObjectURL(url), 60_000);
    status.textContent = `Downloaded ${name}.`;
  } catch (error) {
    status.textContent = `The export failed: ${error.message}`;
  } finally {
    button.disabled = false;
    button.removeAttribute("aria-busy");
  }
}

/** The file name the server suggests (`Content-Disposition: attachment; filename="…"`), if
 *  it is a plain one. */
function attachmentName(disposition) {
  const name = /filename="?([^";]+)"?/i.exec(disposition || "")?.[1];
  return name && /^[\w.-]+$/.test(name) ? name : null;
}

/** What a refused export says: the GraphQL-shaped error's message, else the status. */
async function refusal(response) {
  try {
    const body = await response.json();
    const message = body.errors?.[0]?.message || body.message;
    if (message) return message;
  } catch {
    // Not JSON: the status says enough.
  }
  return `the server answered ${response.status}`;
}

const FINAL = new Set(["PAID", "FAILED", "EXPIRED", "REFUNDED", "PARTIALLY_REFUNDED", "DISPUTED"]);

/** After a Checkout return (`?purchase=pur_…`): that purchase's status until it is paid. */
function followPurchase(client) {
  const id = new URLSearchParams(location.search).get("purchase");
  const panel = $("purchase-return");
  if (!id || !/^pur_[A-Za-z0-9_-]+$/.test(id)) return;
  panel.hidden = false;
  panel.textContent = "Checking your purchase…";
  let timer = null;
  const check = async () => {
    clearTimeout(timer);
    let purchase = null;
    try {
      const data = await client.request(
        "query($id: ID!) { node(id: $id) { ... on CreditPurchase { id packageId status credits } } }",
        { id },
      );
      purchase = data.node;
    } catch (error) {
      panel.textContent = `The purchase cannot be shown: ${error.message}`;
      return;
    }
    if (!purchase) {
      panel.textContent = "This purchase is not one of this organization's.";
      return;
    }
    panel.dataset.status = purchase.status;
    const status = words(purchase.status);
    panel.replaceChildren(
      Object.assign(document.createElement("strong"), { textContent: `Purchase ${status}` }),
      document.createTextNode(
        purchase.status === "PAID"
          ? ` — ${purchase.credits.toLocaleString()} credits (${purchase.packageId}) were added to your balance.`
          : purchase.status === "PENDING"
            ? ` — waiting for the payment to be confirmed (${purchase.packageId}).`
            : ` (${purchase.packageId}).`,
      ),
    );
    if (FINAL.has(purchase.status)) {
      $("purchases").refresh?.();
      return;
    }
    timer = setTimeout(check, 1000);
  };
  // A payment changes the balance: check at once rather than at the next tick.
  document.addEventListener("credits:balance", () => {
    if (panel.dataset.status === "PENDING" || !panel.dataset.status) check();
  });
  check();
}

takeTokenFromFragment();
$("token-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const token = $("token").value.trim();
  if (!token) return;
  sessionStorage.setItem(STORAGE_KEY, token);
  $("token").value = "";
  show(token);
});
$("forget").addEventListener("click", () => {
  sessionStorage.removeItem(STORAGE_KEY);
  location.replace(location.pathname);
});
window.addEventListener("hashchange", () => {
  takeTokenFromFragment();
  show(sessionStorage.getItem(STORAGE_KEY));
});
show(sessionStorage.getItem(STORAGE_KEY));
