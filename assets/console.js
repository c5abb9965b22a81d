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
