// Runs the GraphQL-over-HTTP spec's audit (npm graphql-http, auditServer) against a URL.
// Usage: node audit.mjs URL [TOKEN]. Exits non-zero if any MUST or SHOULD is not met.
import { auditServer } from "graphql-http";

const [url, token] = process.argv.slice(2);
const headers = token ? { authorization: `Bearer ${token}` } : {};
const results = await auditServer({
  url,
  fetchFn: (input, init = {}) => fetch(input, { ...init, headers: { ...(init.headers ?? {}), ...headers } }),
});
const failed = results.filter((r) => r.status !== "ok" && !r.name.startsWith("MAY"));
for (const r of failed) console.log(`${r.status.toUpperCase()} ${r.name}: ${r.reason}`);
console.log(`graphql-http audit: ${results.length - failed.length} of ${results.length} met (MAY items not counted)`);
process.exit(failed.length ? 1 : 0);
