// The pieces that need no server: the flat TOML reader, the SSE decoder, `Range` headers, the
// error envelope, and the route table's checks.

import assert from "node:assert/strict";
import { test } from "node:test";

import { AuthenticationError, ConflictError, LapError, NotFoundError, ROUTES, rangeHeader } from "../src/index.js";
import { fromResponse } from "../src/errors.js";
import { checkedQuery, fill } from "../src/routes.js";
import { sseData } from "../src/sse.js";
import { parseFlatToml } from "../src/toml.js";

test("the flat TOML the CLI writes is read, escapes and comments included", () => {
  const text = '# lap\nurl = "http://h:1" # where\nca_cert = \'C:\\certs\\ca.pem\'\n\n"key_store" = "file"\nn = 1_000\nb = true\ns = "a\\tb\\u00e9\\"q\\""\n';
  assert.deepEqual(parseFlatToml(text), { url: "http://h:1", ca_cert: "C:\\certs\\ca.pem", key_store: "file", n: 1000, b: true, s: 'a\tbé"q"' });
});

test("TOML this reader does not support is refused with its line", () => {
  for (const [text, why] of [
    ["[table]\n", /line 1: expected `key = value`/],
    ['a = "x"\nb = [1]\n', /line 2: unsupported value/],
    ['a = "x"\na = "y"\n', /line 2: `a` is set twice/],
    ['a = "open\n', /line 1: unterminated string/],
    ['a = """x"""\n', /multi-line/],
    ['a = "x" y\n', /unexpected `y`/],
    ['a = "\\q"\n', /bad escape/],
  ] as const) {
    assert.throws(() => parseFlatToml(text), why);
  }
});

async function* linesOf(text: string): AsyncGenerator<string> {
  yield* text.split("\n");
}

test("SSE events are decoded from their data lines; comments and other fields are skipped", async () => {
  const stream = ': keep-alive\n\nevent: x\nid: 3\ndata: {"type":"ready"}\n\ndata:{"a":\ndata: 1}\n\ndata: {"last":true}';
  const seen: unknown[] = [];
  for await (const data of sseData(linesOf(stream))) seen.push(data);
  assert.deepEqual(seen, [{ type: "ready" }, { a: 1 }, { last: true }]);
});

test("an SSE event that is not JSON is an error with a hint", async () => {
  await assert.rejects(
    (async () => {
      for await (const _ of sseData(linesOf("data: <html>\n\n"))) void _;
    })(),
    (err: unknown) => err instanceof LapError && err.message.includes("<html>") && Boolean(err.hint),
  );
});

test("offset and length become the Range header", () => {
  assert.deepEqual(rangeHeader(undefined, undefined), {});
  assert.deepEqual(rangeHeader(2, 3), { Range: "bytes=2-4" });
  assert.deepEqual(rangeHeader(7, undefined), { Range: "bytes=7-" });
  assert.deepEqual(rangeHeader(undefined, 4), { Range: "bytes=0-3" });
  assert.deepEqual(rangeHeader(-2, undefined), { Range: "bytes=-2" });
  assert.throws(() => rangeHeader(-2, 1), RangeError);
  assert.throws(() => rangeHeader(0, 0), RangeError);
});

test("the error envelope becomes the error of its status, with message and hint", () => {
  const body = Buffer.from(JSON.stringify({ error: "no session `x`", hint: "`lap sessions list` shows them" }));
  const err = fromResponse(404, body, "GET", "http://h/x");
  assert.ok(err instanceof NotFoundError);
  assert.deepEqual([err.message, err.hint, err.status, err.code, err.name], ["no session `x`", "`lap sessions list` shows them", 404, 404, "NotFoundError"]);
  assert.equal(String(err), "NotFoundError: no session `x` (HTTP 404)\nhint: `lap sessions list` shows them");
  assert.ok(fromResponse(401, Buffer.from("{}"), "GET", "u") instanceof AuthenticationError);
  assert.ok(fromResponse(409, Buffer.from("{}"), "GET", "u") instanceof ConflictError);
  const plain = fromResponse(502, Buffer.from("Bad Gateway"), "POST", "http://h/y");
  assert.equal(plain.constructor, LapError);
  assert.equal(plain.message, "POST http://h/y answered 502: Bad Gateway");
});

test("path segments are escaped, and a port path keeps its slashes", () => {
  assert.equal(fill(ROUTES.getAgent, { id: "a b/c" }), "/api/v1/managed_agents/agents/a%20b%2Fc");
  assert.equal(fill(ROUTES.portProxy, { id: "s", port: 80, path: "/dir/a b?.html" }), "/api/v1/managed_agents/sessions/s/ports/80/dir/a%20b%3F.html");
  assert.throws(() => fill(ROUTES.getAgent), /no value for \{id\}/);
});

test("a query parameter the route table does not list is refused", () => {
  assert.deepEqual(checkedQuery(ROUTES.listAgents, { limit: 1 }), { limit: 1 });
  assert.throws(() => checkedQuery(ROUTES.listAgents, { agent_id: "x" }), /does not take `agent_id`/);
});
