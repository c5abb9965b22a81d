// Sends graphql-js's standard introspection query, every option on, as GraphiQL's docs,
// graphql-codegen, Apollo and Postman do, and builds a client schema from the answer.
// Usage: node introspect.mjs URL [TOKEN]; prints the number of types; exit 1 on failure.
import { buildClientSchema, getIntrospectionQuery, printSchema } from 'graphql';

const [url, token] = process.argv.slice(2);
const query = getIntrospectionQuery({
  descriptions: true,
  specifiedByUrl: true,
  directiveIsRepeatable: true,
  schemaDescription: true,
  inputValueDeprecation: true,
  oneOf: true,
});
const headers = { 'content-type': 'application/json', accept: 'application/graphql-response+json' };
if (token) headers.authorization = `Bearer ${token}`;
const response = await fetch(url, { method: 'POST', headers, body: JSON.stringify({ query }) });
const body = await response.json();
if (response.status !== 200 || body.errors) {
  console.error(`introspection refused: ${response.status} ${JSON.stringify(body)}`);
  process.exit(1);
}
const schema = buildClientSchema(body.data);
const sdl = printSchema(schema);
for (const name of ['consumeCredits', 'creditBalance', 'lowBalance']) {
  if (!sdl.includes(name)) {
    console.error(`the client schema lacks ${name}`);
    process.exit(1);
  }
}
console.log(`types=${Object.keys(schema.getTypeMap()).length}`);
