// Drives /graphql/ws with the reference graphql-transport-ws client (npm graphql-ws).
// Usage: node ws-client.mjs WS_URL TOKEN
// Prints "refused <code>" for a client with a wrong token, then "ready" once subscribed,
// then the first creditBalanceChanged payload as JSON, and exits 0.
import { createClient } from "graphql-ws";
import WebSocket from "ws";

const [url, token] = process.argv.slice(2);

const refusedCode = await new Promise((resolve) => {
  const client = createClient({
    url,
    webSocketImpl: WebSocket,
    lazy: false,
    retryAttempts: 0,
    connectionParams: { authorization: "Bearer crk_wrong" },
    on: { closed: (event) => resolve(event.code) },
    onNonLazyError: () => {},
  });
  setTimeout(() => client.dispose(), 5000);
});
console.log(`refused ${refusedCode}`);

const client = createClient({
  url,
  webSocketImpl: WebSocket,
  connectionParams: { authorization: `Bearer ${token}` },
  on: { connected: () => setTimeout(() => console.log("ready"), 200) },
});
const subscription = client.iterate({ query: "subscription { creditBalanceChanged { balance organizationId } }" });
const timer = setTimeout(() => { console.error("no event within 20 s"); process.exit(1); }, 20000);
for await (const result of subscription) {
  console.log(JSON.stringify(result));
  break;
}
clearTimeout(timer);
await client.dispose();
process.exit(0);
