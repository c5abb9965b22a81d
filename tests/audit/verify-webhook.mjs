// Verifies outgoing webhook deliveries with the Standard Webhooks reference library
// (npm `standardwebhooks`), as a receiver would. Reads one JSON document from stdin:
// {"secret": "whsec_…", "deliveries": [{"headers": {...}, "body": "…"}, …]} and prints
// one line per delivery: "ok <webhook-id>" or "bad <webhook-id> <why>". Exits 0.
import { Webhook } from "standardwebhooks";

let input = "";
for await (const chunk of process.stdin) input += chunk;
const { secret, deliveries } = JSON.parse(input);
const webhook = new Webhook(secret);
for (const delivery of deliveries) {
  const id = delivery.headers["webhook-id"];
  try {
    const payload = webhook.verify(delivery.body, delivery.headers);
    if (typeof payload !== "object" || !payload.type) throw new Error("no event type in the payload");
    console.log(`ok ${id}`);
  } catch (error) {
    console.log(`bad ${id} ${String(error.message ?? error).replace(/\s+/g, " ")}`);
  }
}
