// An app-style flow through a client generated from the served OpenAPI document: types by
// openapi-typescript (./schema.d.ts), calls by openapi-fetch. Written as app code is, with no
// casts (`as`, `!`, `any`): `tsc --noEmit --strict` must accept it as it stands.
//
// Usage: node dist/flow.js http://127.0.0.1:PORT

import createClient from "openapi-fetch";
import type { components, paths } from "./schema.js";

type User = components["schemas"]["User"];
type Book = components["schemas"]["Book"];
type ErrorCode = components["schemas"]["Error"]["error"]["code"];

const baseUrl = (process.argv[2] ?? "http://127.0.0.1:8000").replace(/\/$/, "");
const client = createClient<paths>({ baseUrl });
let step = 0;

function check(condition: unknown, message: string): asserts condition {
  if (!condition) {
    throw new Error(`step ${step}: ${message}`);
  }
}

function done(what: string): void {
  step += 1;
  console.log(`ok ${step} - ${what}`);
}

function bearer(token: string): { Authorization: string } {
  return { Authorization: `Bearer ${token}` };
}

/** A field's messages from a 422, as a form shows them: `details` maps names to strings. */
function fieldMessages(details: { [field: string]: string }): string[] {
  return Object.entries(details).map(([field, message]) => `${field} ${message.trim()}`);
}

/** The target of `rel` in an RFC 8288 Link header, if any. */
function linkTarget(header: string | null, rel: string): URL | undefined {
  for (const part of (header ?? "").split(",")) {
    const match = /<([^>]+)>\s*;\s*rel="([^"]+)"/.exec(part);
    if (match?.[2] === rel && match[1] !== undefined) {
      return new URL(match[1]);
    }
  }
  return undefined;
}

/** A timestamp as the API writes it: what `Date` writes back, to the millisecond. */
function checkTimestamp(value: string): void {
  check(new Date(value).toISOString() === value, `${value} is not ECMAScript's date format`);
}

async function main(): Promise<void> {
  const email = `ts-${Date.now()}@example.com`;
  const password = "a long and uncommon passphrase";

  // Register: 201, the user, and its absolute Location.
  const registered = await client.POST("/api/v1/auth/register", {
    body: { name: "Ann", email, password },
  });
  check(registered.data, `register: ${registered.response.status}`);
  const user: User = registered.data.data;
  const role: "user" | "admin" = user.role;
  check(role === "user", "a new account has the role user");
  check(
    registered.response.headers.get("Location") === `${baseUrl}/api/v1/users/${user.id}`,
    "Location is absolute",
  );
  checkTimestamp(user.created_at);
  done("register");

  // Log in: the answer has the user (required), and a device token.
  const login = await client.POST("/api/v1/auth/login", {
    body: { email, password, device_name: "TypeScript flow" },
  });
  check(login.data, `login: ${login.response.status}`);
  const { access_token, refresh_token, user: me0, device_token } = login.data.data;
  check(me0.id === user.id && device_token.length > 0, "login answers the user");
  done("login");

  const wrong = await client.POST("/api/v1/auth/login", {
    body: { email, password: "not the password" },
  });
  check(wrong.error, "a wrong password is refused");
  const refused: ErrorCode = wrong.error.error.code;
  check(refused === "INVALID_CREDENTIALS", `wrong password: ${refused}`);
  done("wrong password: 401 INVALID_CREDENTIALS");

  const me = await client.GET("/api/v1/auth/me", { headers: bearer(access_token) });
  check(me.data, `me: ${me.response.status}`);
  check(me.data.data.email === email, "me is the user");
  done("me");

  // A form's field messages, straight from `details`.
  const invalid = await client.POST("/api/v1/books", {
    body: { title: "", author: "Frank Herbert" },
    headers: bearer(access_token),
  });
  check(invalid.error && invalid.response.status === 422, "an empty title is 422");
  const details = invalid.error.error.details;
  const titleMessage = details["title"];
  check(titleMessage?.startsWith("must be"), `the title's message: ${titleMessage}`);
  const messages = fieldMessages(details);
  check(messages.some((m) => m.startsWith("title ")), `field messages: ${messages}`);
  done("422 with field messages");

  // Create with an Idempotency-Key, then retry it: the same book, created once.
  const key = `flow-${Date.now()}`;
  const create = () =>
    client.POST("/api/v1/books", {
      params: { header: { "Idempotency-Key": key } },
      body: { title: "Dune", author: "Frank Herbert", published_year: 1965 },
      headers: bearer(access_token),
    });
  const created = await create();
  check(created.data && created.response.status === 201, `create: ${created.response.status}`);
  const book: Book = created.data.data;
  check(
    created.response.headers.get("Location") === `${baseUrl}/api/v1/books/${book.id}`,
    "Location is absolute",
  );
  checkTimestamp(book.updated_at);
  done("create with an Idempotency-Key");

  const retried = await create();
  check(retried.data && retried.response.status === 201, "the retry is a 201");
  check(retried.data.data.id === book.id, "the retry answers the same book");
  check(retried.response.headers.get("Idempotent-Replayed") === "true", "marked as a replay");
  done("retry: replayed, nothing created");

  // List, and follow Link to the next page.
  for (const title of ["Dune Messiah", "Children of Dune"]) {
    const more = await client.POST("/api/v1/books", {
      body: { title, author: "Frank Herbert" },
      headers: bearer(access_token),
    });
    check(more.data, `create ${title}: ${more.response.status}`);
  }
  const first = await client.GET("/api/v1/books", {
    params: { query: { q: "dune", per_page: 2, sort: "id" } },
  });
  check(first.data, `list: ${first.response.status}`);
  check(first.data.data.length === 2 && first.data.meta.total === 3, "two of three books");
  const next = linkTarget(first.response.headers.get("Link"), "next");
  check(next !== undefined && next.origin === new URL(baseUrl).origin, "an absolute next link");
  check(next.pathname === "/api/v1/books", "the next link is the same list");
  const page = Number(next.searchParams.get("page"));
  const second = await client.GET("/api/v1/books", {
    params: { query: { q: "dune", per_page: 2, sort: "id", page } },
  });
  check(second.data && second.data.data.length === 1, "the last book on the next page");
  check(second.data.meta.page === 2, "page 2");
  done("list and follow Link");

  // Conditional GET: 304 has no body, so openapi-fetch gives no data and an empty error.
  const fetched = await client.GET("/api/v1/books/{book_id}", {
    params: { path: { book_id: book.id } },
  });
  check(fetched.data, `get: ${fetched.response.status}`);
  const etag = fetched.response.headers.get("ETag");
  check(etag !== null, "an ETag");
  const notModified = await client.GET("/api/v1/books/{book_id}", {
    params: { path: { book_id: book.id }, header: { "If-None-Match": etag } },
  });
  check(notModified.response.status === 304, `If-None-Match: ${notModified.response.status}`);
  check(notModified.data === undefined, "a 304 has no data: keep the copy you hold");
  done("304 with If-None-Match");

  // PATCH with If-Match; then with the tag it replaced: 412.
  const patched = await client.PATCH("/api/v1/books/{book_id}", {
    params: { path: { book_id: book.id }, header: { "If-Match": etag } },
    body: { genre: "Science fiction", published_year: null },
    headers: bearer(access_token),
  });
  check(patched.data, `patch: ${patched.response.status}`);
  check(patched.data.data.genre === "Science fiction", "the genre changed");
  check(patched.data.data.published_year === null, "null restored the default");
  done("PATCH with If-Match");

  const stale = await client.PATCH("/api/v1/books/{book_id}", {
    params: { path: { book_id: book.id }, header: { "If-Match": etag } },
    body: { genre: "Fantasy" },
    headers: bearer(access_token),
  });
  check(stale.error && stale.response.status === 412, `stale If-Match: ${stale.response.status}`);
  check(stale.error.error.code === "PRECONDITION_FAILED", "412 PRECONDITION_FAILED");
  done("PATCH with a stale tag: 412");

  // Refresh: no body; a new pair, without `user`.
  const refreshed = await client.POST("/api/v1/auth/refresh", { headers: bearer(refresh_token) });
  check(refreshed.data, `refresh: ${refreshed.response.status}`);
  const tokens = refreshed.data.data;
  check(tokens.refresh_token !== refresh_token, "a new refresh token");
  check(!("user" in tokens), "a refresh answers no user");
  done("refresh");

  // Log out: the body is optional (the session's refresh token ends with it anyway).
  const loggedOut = await client.POST("/api/v1/auth/logout", {
    headers: bearer(tokens.access_token),
  });
  check(loggedOut.response.status === 204, `logout: ${loggedOut.response.status}`);
  done("logout");

  const revoked = await client.GET("/api/v1/auth/me", { headers: bearer(tokens.access_token) });
  check(revoked.error && revoked.response.status === 401, "the revoked token is refused");
  const code: ErrorCode = revoked.error.error.code;
  check(code === "TOKEN_REVOKED", `revoked: ${code}`);
  done("the revoked access token is refused");

  const spent = await client.POST("/api/v1/auth/refresh", {
    headers: bearer(tokens.refresh_token),
  });
  check(spent.error && spent.response.status === 401, "the logged-out refresh token is refused");
  done("the logged-out refresh token is refused");

  // The probes are in the document too.
  const ready = await client.GET("/health/ready");
  check(ready.data?.database === "ok", `ready: ${ready.response.status}`);
  done("health/ready");
}

main().then(
  () => console.log(`all ${step} steps passed`),
  (error: unknown) => {
    console.error(error instanceof Error ? error.message : error);
    process.exitCode = 1;
  },
);
