// GraphiQL, served by the credits server itself (no CDN). Queries and mutations go over
// HTTP; subscriptions over our WebSocket, with the Authorization header typed in the
// Headers tab sent in `connection_init` as the server expects.
import { clientFor } from "/elements.js";

const endpoint = new URL("/graphql", location.href).href;
const http = GraphiQL.createFetcher({ url: endpoint });

function authorizationOf(headers) {
  for (const [name, value] of Object.entries(headers || {})) {
    if (name.toLowerCase() === "authorization") return String(value);
  }
  return "";
}

function isSubscription(params, options) {
  const definitions = options?.documentAST?.definitions ?? [];
  const operations = definitions.filter((d) => d.kind === "OperationDefinition");
  const chosen = operations.find((d) => d.name?.value === params.operationName) ?? operations[0];
  if (chosen) return chosen.operation === "subscription";
  return /^\s*subscription\b/.test(params.query);
}

function fetcher(params, options) {
  if (!isSubscription(params, options)) return http(params, options);
  const token = authorizationOf(options?.headers).replace(/^bearer\s+/i, "");
  const client = clientFor(endpoint, token);
  return {
    subscribe(observer) {
      const stop = client.subscribe(params.query, params.variables, {
        next: (payload) => observer.next?.(payload),
        error: (error) => observer.error?.(error),
        complete: () => observer.complete?.(),
      });
      return { unsubscribe: stop };
    },
  };
}

const root = ReactDOM.createRoot(document.getElementById("graphiql"));
root.render(
  React.createElement(GraphiQL, {
    fetcher,
    defaultEditorToolsVisibility: "headers",
    defaultHeaders: '{\n  "Authorization": "Bearer "\n}',
    shouldPersistHeaders: false,
  }),
);
