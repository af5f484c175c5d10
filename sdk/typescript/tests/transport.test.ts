// The transport against servers on loopback that misbehave as a network or a proxy might: bodies
// cut mid-way, a stream that ends without its last event, a head and then silence, an answer that
// is not lap's, and HTTPS whose certificate only the CLI's `ca_cert` makes trusted.

import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import * as http from "node:http";
import * as https from "node:https";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";

import { Client, LapConnectionError, LapError, LapTimeoutError, Settings } from "../src/index.js";

type Handler = (req: http.IncomingMessage, res: http.ServerResponse) => void;

let handler: Handler = (_req, res) => res.end();
const plain = http.createServer((req, res) => handler(req, res));
let lap: Client;

before(async () => {
  await new Promise<void>((resolve) => plain.listen(0, "127.0.0.1", resolve));
  lap = new Client({ url: `http://127.0.0.1:${(plain.address() as AddressInfo).port}`, masterKey: "lapk_test", timeoutMs: 2_000 });
});

after(async () => {
  lap.close();
  plain.closeAllConnections();
  await new Promise((resolve) => plain.close(resolve));
});

const line = (value: unknown) => `${JSON.stringify(value)}\n`;

test("an exec stream cut mid-way rejects with a connection error, not a partial result", async () => {
  handler = (_req, res) => {
    res.writeHead(200, { "Content-Type": "application/x-ndjson" });
    res.write(line({ stdout: Buffer.from("partial").toString("base64") }));
    setTimeout(() => res.socket?.destroy(), 50);
  };
  await assert.rejects(lap.sessions.exec("s", ["true"]), (err: unknown) => {
    assert.ok(err instanceof LapConnectionError, String(err));
    assert.ok(err.hint);
    return true;
  });
});

test("an exec stream that ends without its exit code rejects with a hint", async () => {
  handler = (_req, res) => {
    res.writeHead(200, { "Content-Type": "application/x-ndjson" });
    res.end(line({ stdout: Buffer.from("out").toString("base64") }));
  };
  await assert.rejects(lap.sessions.exec("s", ["true"]), (err: unknown) => {
    assert.ok(err instanceof LapError, String(err));
    assert.match(err.message, /ended without an exit code/);
    assert.ok(err.hint);
    return true;
  });
});

test("what the exec request carries: the key, the words, stdin as base64", async () => {
  let seen: { auth?: string; body?: unknown } = {};
  handler = (req, res) => {
    const parts: Buffer[] = [];
    req.on("data", (c: Buffer) => parts.push(c));
    req.on("end", () => {
      seen = { auth: req.headers.authorization, body: JSON.parse(Buffer.concat(parts).toString()) };
      res.writeHead(200, { "Content-Type": "application/x-ndjson" });
      res.end(line({ stderr: Buffer.from("e").toString("base64") }) + line({ exit_code: 3 }));
    });
  };
  const result = await lap.sessions.exec("s", ["cat"], { stdin: "in", cwd: "/tmp" });
  assert.deepEqual([result.exitCode, result.stderrText, result.stdoutText], [3, "e", ""]);
  assert.deepEqual(seen, { auth: "Bearer lapk_test", body: { command: ["cat"], stdin: "aW4=", cwd: "/tmp" } });
});

test("an SSE stream cut mid-way rejects after the frames that came", async () => {
  handler = (_req, res) => {
    res.writeHead(200, { "Content-Type": "text/event-stream" });
    res.write(`data: ${JSON.stringify({ type: "ready" })}\n\n: keep-alive\n\n`);
    setTimeout(() => res.socket?.destroy(), 50);
  };
  const seen: string[] = [];
  await assert.rejects(
    (async () => {
      for await (const frame of lap.messages.stream("s", "hi")) seen.push(frame.type);
    })(),
    LapConnectionError,
  );
  assert.deepEqual(seen, ["ready"]);
});

test("a head and then silence past the deadline rejects with LapTimeoutError", async () => {
  handler = (_req, res) => {
    res.writeHead(200, { "Content-Type": "application/json" });
    res.write("{");
  };
  await assert.rejects(lap.health(), (err: unknown) => {
    assert.ok(err instanceof LapTimeoutError, String(err));
    assert.match(err.message, /within 2000 ms/);
    return true;
  });
});

test("an answer that is not lap's is an error that says what came", async () => {
  handler = (_req, res) => {
    res.writeHead(502, { "Content-Type": "text/html" });
    res.end("<h1>Bad Gateway</h1>");
  };
  await assert.rejects(lap.health(), (err: unknown) => {
    assert.ok(err instanceof LapError, String(err));
    assert.equal(err.status, 502);
    assert.match(err.message, /answered 502: <h1>Bad Gateway<\/h1>/);
    return true;
  });
  handler = (_req, res) => {
    res.writeHead(200, { "Content-Type": "application/json" });
    res.end("not json");
  };
  await assert.rejects(lap.health(), (err: unknown) => err instanceof LapError && /does not parse/.test(err.message) && Boolean(err.hint));
});

test("HTTPS with the CLI's ca_cert is trusted, and without it refused", async () => {
  const dir = mkdtempSync(join(tmpdir(), "lap-sdk-ts-tls-"));
  const openssl = (...args: string[]) => execFileSync("openssl", args, { cwd: dir, stdio: "pipe" });
  try {
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1", "-subj", "/CN=lap test CA", "-keyout", "ca.key", "-out", "ca.pem");
    openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-subj", "/CN=127.0.0.1", "-keyout", "leaf.key", "-out", "leaf.csr");
    writeFileSync(join(dir, "ext.cnf"), "subjectAltName=IP:127.0.0.1\n");
    openssl("x509", "-req", "-in", "leaf.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-days", "1", "-extfile", "ext.cnf", "-out", "leaf.pem");
    const server = https.createServer({ key: readFileSync(join(dir, "leaf.key")), cert: readFileSync(join(dir, "leaf.pem")) }, (_req, res) => {
      res.writeHead(200, { "Content-Type": "application/json" });
      res.end(JSON.stringify({ ok: true, version: "test", backend: "fake" }));
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    const url = `https://127.0.0.1:${(server.address() as AddressInfo).port}`;
    const trusting = new Client({ settings: new Settings(url, "k", join(dir, "ca.pem")) });
    const untrusting = new Client({ settings: new Settings(url, "k", undefined) });
    try {
      assert.deepEqual(await trusting.health(), { ok: true, version: "test", backend: "fake" });
      await assert.rejects(untrusting.health(), (err: unknown) => err instanceof LapConnectionError && /certificate/i.test(err.message));
    } finally {
      trusting.close();
      untrusting.close();
      server.closeAllConnections();
      await new Promise((resolve) => server.close(resolve));
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("an aborted signal ends an open stream with the caller's AbortError", async () => {
  handler = (_req, res) => {
    res.writeHead(200, { "Content-Type": "text/event-stream" });
    res.write(`data: ${JSON.stringify({ type: "ready" })}\n\n`);
  };
  const controller = new AbortController();
  const seen: string[] = [];
  await assert.rejects(
    (async () => {
      for await (const frame of lap.messages.events("s", { signal: controller.signal, idleTimeoutMs: 10_000 })) {
        seen.push(frame.type);
        controller.abort();
      }
    })(),
    (err: unknown) => err instanceof Error && err.name === "AbortError",
  );
  assert.deepEqual(seen, ["ready"]);
});
