// The client against a real `lap serve` with real sandboxes: sessions, exec, files, the egress
// log, ports, agents, forks and snapshots, and errors carrying the API's message, status and hint.

import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";

import {
  AuthenticationError,
  BadRequestError,
  Client,
  ConflictError,
  LapConnectionError,
  LapError,
  LapTimeoutError,
  NotFoundError,
  SessionFailedError,
  isTuiReply,
  type ExecEvent,
  type Session,
  type StreamFrame,
} from "../src/index.js";
import { BLOCKED_HOST, deleteQuietly, readySession, shellAgent } from "./helpers.js";

const UNKNOWN = "00000000-0000-4000-8000-000000000000";

const lap = new Client();
let agent: string;
let session: Session;

before(async () => {
  agent = await shellAgent(lap);
  session = await readySession(lap, agent);
});

after(async () => {
  await deleteQuietly(lap, session.id);
  await lap.agents.delete(agent);
  lap.close();
});

test("a new session becomes ready", async () => {
  const shown = await lap.sessions.get(session.id);
  assert.equal(shown.status, "ready");
  assert.equal(shown.id, session.id);
  assert.equal(shown.agent_name, agent);
});

test("exec returns stdout, stderr and the exit code", async () => {
  let result = await lap.sessions.exec(session.id, ["echo", "hello from the sandbox"]);
  assert.deepEqual([result.exitCode, result.stdoutText, result.stderr.length], [0, "hello from the sandbox\n", 0]);
  result = await lap.sessions.exec(session.id, ["sh", "-c", "echo out; echo err >&2; exit 7"]);
  assert.deepEqual([result.exitCode, result.stdoutText, result.stderrText], [7, "out\n", "err\n"]);
});

test("exec takes stdin as bytes and a working directory", async () => {
  const stdin = Buffer.from([0, ...Buffer.from("piped"), 0xff]);
  const result = await lap.sessions.exec(session.id, ["sh", "-c", "pwd; cat"], { stdin, cwd: "/tmp" });
  assert.equal(result.exitCode, 0);
  assert.deepEqual(result.stdout, Buffer.concat([Buffer.from("/tmp\n"), stdin]));
});

test("exec streams output in order, then the exit", async () => {
  const events: ExecEvent[] = [];
  for await (const event of lap.sessions.execStream(session.id, ["sh", "-c", "for i in 1 2 3; do echo $i; done"])) events.push(event);
  assert.deepEqual(events.at(-1), { type: "exit", exitCode: 0 });
  const stdout = Buffer.concat(events.flatMap((e) => (e.type === "stdout" ? [e.data] : [])));
  assert.equal(stdout.toString(), "1\n2\n3\n");
});

test("leaving an exec stream early kills the command in the sandbox", async () => {
  const marker = `/tmp/killed-${randomBytes(4).toString("hex")}`;
  const script = `echo started; sleep 30; touch ${marker}`;
  for await (const event of lap.sessions.execStream(session.id, ["sh", "-c", script])) {
    assert.deepEqual(event.type === "stdout" && event.data.toString(), "started\n");
    break; // closes the stream
  }
  // The command is gone: no `sleep 30` of it runs any more (pkill finds none).
  const deadline = Date.now() + 20_000;
  for (;;) {
    const ps = await lap.sessions.exec(session.id, ["sh", "-c", "ps -eo args | grep -c '^sleep 30$' || true"]);
    if (ps.stdoutText.trim() === "0") break;
    assert.ok(Date.now() < deadline, `the command still runs: ${ps.stdoutText}`);
    await new Promise((r) => setTimeout(r, 100));
  }
  await assert.rejects(lap.files.stat(session.id, marker), NotFoundError);
});

test("a silent exec past its timeout rejects with LapTimeoutError", async () => {
  const started = lap.sessions.exec(session.id, ["sleep", "20"], { timeoutMs: 500 });
  await assert.rejects(started, (err: unknown) => {
    assert.ok(err instanceof LapTimeoutError, String(err));
    assert.match(err.message, /within 500 ms/);
    assert.ok(err.hint);
    return true;
  });
});

test("a file written is read back whole and by range", async () => {
  const uploaded = await lap.files.write(session.id, "notes.txt", "0123456789", { mode: 0o600 });
  assert.deepEqual([uploaded.bytes, uploaded.entries], [10, 1]);
  assert.equal(await lap.files.readText(session.id, "notes.txt"), "0123456789");
  assert.equal(await lap.files.readText(session.id, "/work/home/notes.txt", { offset: 2, length: 3 }), "234");
  assert.equal(await lap.files.readText(session.id, "notes.txt", { offset: 7 }), "789");
  assert.equal(await lap.files.readText(session.id, "notes.txt", { offset: -2 }), "89");
  const entry = await lap.files.stat(session.id, "notes.txt");
  assert.deepEqual([entry.type, entry.size, entry.mode, entry.path], ["file", 10, "0600", "/work/home/notes.txt"]);
  // The sandbox sees what the API wrote.
  assert.equal((await lap.sessions.exec(session.id, ["cat", "notes.txt"])).stdoutText, "0123456789");
});

test("files are streamed up and down, listed and deleted", async () => {
  await lap.sessions.exec(session.id, ["mkdir", "-p", "tree/sub"]);
  const big = randomBytes(300_000);
  async function* chunks() {
    yield big.subarray(0, 100_000);
    yield big.subarray(100_000);
  }
  assert.equal((await lap.files.write(session.id, "tree/sub/big.bin", chunks())).bytes, big.length);
  const listing = await lap.files.list(session.id, "tree");
  assert.equal(listing.entry.type, "directory");
  assert.deepEqual(
    listing.entries.map((e) => [e.name, e.type]),
    [["sub", "directory"]],
  );
  const dir = mkdtempSync(join(tmpdir(), "lap-sdk-ts-"));
  try {
    const dest = join(dir, "big.bin");
    assert.equal(await lap.files.download(session.id, "tree/sub/big.bin", dest), big.length);
    assert.deepEqual(readFileSync(dest), big);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  await assert.rejects(lap.files.delete(session.id, "tree"), (err: unknown) => {
    assert.ok(err instanceof ConflictError, String(err));
    assert.equal(err.status, 409);
    assert.match(err.hint ?? "", /recursive/);
    return true;
  });
  assert.equal((await lap.files.delete(session.id, "tree", { recursive: true })).entries, 3);
  await assert.rejects(lap.files.stat(session.id, "tree"), NotFoundError);
});

test("a path outside the sandbox roots is refused with a hint", async () => {
  await assert.rejects(lap.files.read(session.id, "/etc/passwd"), (err: unknown) => {
    assert.ok(err instanceof LapError);
    assert.equal(err.status, 403);
    assert.match(err.hint ?? "", /\/work and \/tmp/);
    return true;
  });
});

test("the session list holds the session, and filters by agent", async () => {
  assert.ok((await lap.sessions.list()).some((s) => s.id === session.id));
  const mine = await lap.sessions.list({ agent });
  assert.ok(mine.some((s) => s.id === session.id));
  assert.deepEqual([...new Set(mine.map((s) => s.agent_name))], [agent]);
});

test("a blocked request shows in the egress log, and following it yields it", async () => {
  const curl = ["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", `http://${BLOCKED_HOST}/x?token=abc`];
  assert.equal((await lap.sessions.exec(session.id, curl)).stdoutText, "403");
  const records = (await lap.sessions.egress(session.id)).filter((r) => r.host === BLOCKED_HOST);
  const record = records.at(-1);
  assert.ok(record, "no record of the blocked request");
  assert.deepEqual([record.method, record.status, record.block_kind], ["GET", 403, "egress-policy"]);
  assert.ok(!record.path.includes("abc"), "query values are redacted");
  const id = record.id ?? 0;
  for await (const followed of lap.sessions.followEgress(session.id, { after: id - 1, timeoutMs: 30_000 })) {
    assert.deepEqual(followed, record);
    break;
  }
  assert.deepEqual(await lap.sessions.egress(session.id, { after: id }), []);
});

test("an unknown session rejects with the API's message, status and hint", async () => {
  await assert.rejects(lap.sessions.get(UNKNOWN), (err: unknown) => {
    assert.ok(err instanceof NotFoundError, String(err));
    assert.equal(err.status, 404);
    assert.equal(err.code, 404);
    assert.ok(err.message.includes(UNKNOWN));
    assert.match(err.hint ?? "", /lap sessions list/);
    assert.match(String(err), /\(HTTP 404\)\nhint: /);
    return true;
  });
});

test("a bad request and a wrong key reject with their own errors", async () => {
  await assert.rejects(lap.sessions.exec(session.id, []), (err: unknown) => {
    assert.ok(err instanceof BadRequestError, String(err));
    assert.match(err.message, /`command` is empty/);
    assert.ok(err.hint);
    return true;
  });
  const wrong = new Client({ url: lap.url, masterKey: "lapk_wrong" });
  try {
    await assert.rejects(wrong.sessions.list(), (err: unknown) => {
      assert.ok(err instanceof AuthenticationError, String(err));
      assert.equal(err.status, 401);
      assert.ok(err.hint);
      return true;
    });
  } finally {
    wrong.close();
  }
});

test("a terminal session answers messages as LAP does", async () => {
  const reply = await lap.messages.send(session.id, "hello");
  assert.ok(isTuiReply(reply));
  assert.match(reply.text, /TUI/);
  const frames: StreamFrame[] = [];
  for await (const frame of lap.messages.stream(session.id, "hello")) frames.push(frame);
  assert.equal(frames[0]?.type, "ready");
  const last = frames.at(-1);
  assert.ok(last?.type === "error", JSON.stringify(frames));
  assert.match(last.message, /TUI/);
  assert.ok(!frames.some((f) => f.type === "done"));
  assert.deepEqual(await lap.messages.history(session.id), []);
});

test("agents are created, listed, updated and deleted", async () => {
  const name = `sdk-ts-crud-${randomBytes(3).toString("hex")}`;
  const created = await lap.agents.create(name, { harness_id: "shell", env: { A: "1" }, allow_out: ["*.pypi.org"] });
  assert.deepEqual([created.harness_id, created.env, created.allow_out], ["shell", { A: "1" }, ["*.pypi.org"]]);
  assert.ok((await lap.agents.list({ search: name })).data.some((a) => a.name === name));
  const updated = await lap.agents.update(name, { prompt: "be brief", allow_out: [] });
  assert.deepEqual([updated.prompt, updated.allow_out, updated.id], ["be brief", [], created.id]);
  assert.equal((await lap.agents.get(created.id)).prompt, "be brief");
  await lap.agents.delete(name);
  await assert.rejects(lap.agents.get(name), NotFoundError);
});

test("a port is listed, proxied and previewed", async () => {
  await lap.files.write(session.id, "index.html", "<p>served</p>");
  await lap.sessions.exec(session.id, ["sh", "-c", "nohup python3 -m http.server 8123 >/dev/null 2>&1 &"]);
  const deadline = Date.now() + 30_000;
  while (!(await lap.ports.list(session.id)).ports.some((p) => p.port === 8123)) {
    assert.ok(Date.now() < deadline, "the server in the sandbox never listened");
    await new Promise((r) => setTimeout(r, 100));
  }
  const answer = await lap.ports.request(session.id, 8123, { path: "index.html" });
  assert.deepEqual([answer.status, answer.text], [200, "<p>served</p>"]);
  const missing = await lap.ports.request(session.id, 8123, { path: "/no/such file" });
  assert.equal(missing.status, 404, "the sandbox's own 404 comes back as it is");
  assert.ok(lap.ports.url(session.id, 8123, "x").endsWith(`/sessions/${session.id}/ports/8123/x`));
  const preview = await lap.ports.previewUrl(session.id, 8123, { ttlSeconds: 60 });
  assert.equal(preview.port, 8123);
  assert.ok(preview.url.includes("/_lap/preview/"), preview.url);
  assert.equal((await lap.ports.revokePreviews(session.id, { port: 8123 })).port, 8123);
});

test("a fork and a snapshot carry the workspace", async () => {
  const source = await readySession(lap, agent);
  await lap.files.write(source.id, "kept.txt", "state");
  const snapshot = await lap.snapshots.create(source.id, { name: `snap-${source.id.slice(0, 8)}` });
  assert.ok((await lap.snapshots.list()).some((s) => s.name === snapshot.name));
  const fork = await lap.sessions.waitReady((await lap.sessions.fork(source.id, { title: "forked" })).id);
  const restored = await lap.sessions.waitReady((await lap.snapshots.startSession(snapshot.name, agent)).id);
  for (const copy of [fork, restored]) {
    assert.notEqual(copy.id, source.id);
    assert.equal(await lap.files.readText(copy.id, "kept.txt"), "state");
    await lap.sessions.delete(copy.id);
  }
  await lap.snapshots.delete(snapshot.name);
  assert.ok((await lap.sessions.workspace(source.id)).exists);
  assert.equal((await lap.sessions.delete(source.id)).status, "deleted");
  assert.equal((await lap.sessions.get(source.id)).status, "dead");
});

test("a session pauses, hibernates, resumes and restarts", async () => {
  const s = await readySession(lap, agent);
  await lap.files.write(s.id, "survives.txt", "yes");
  assert.equal((await lap.sessions.pause(s.id)).status, "paused");
  assert.equal((await lap.sessions.resume(s.id)).status, "ready");
  assert.equal((await lap.sessions.hibernate(s.id)).status, "hibernated");
  // An exec wakes a hibernated session by itself.
  assert.equal((await lap.sessions.exec(s.id, ["cat", "survives.txt"])).stdoutText, "yes");
  assert.equal((await lap.sessions.restart(s.id)).status, "ready");
  await lap.sessions.delete(s.id);
});

test("calls run at once on one client", async () => {
  const [shown, keys, health] = await Promise.all([lap.sessions.get(session.id), lap.sessions.vaultKeys(session.id), lap.health()]);
  assert.equal(shown.id, session.id);
  assert.deepEqual(keys, []);
  assert.equal(health.ok, true);
});

test("a server that is not there rejects with a connection error and a hint", async () => {
  // A loopback port nothing listens on once closed.
  const probe = createServer();
  await new Promise<void>((resolve) => probe.listen(0, "127.0.0.1", resolve));
  const address = probe.address();
  assert.ok(address && typeof address === "object");
  await new Promise((resolve) => probe.close(resolve));
  const nowhere = new Client({ url: `http://127.0.0.1:${address.port}`, masterKey: "lapk_any" });
  await assert.rejects(nowhere.health(), (err: unknown) => {
    assert.ok(err instanceof LapConnectionError, String(err));
    assert.ok(err.message.includes(`127.0.0.1:${address.port}`));
    assert.match(err.hint ?? "", /LAP_URL/);
    return true;
  });
});

test("waiting for a session that fails rejects with its reason", async () => {
  // Its repo is on a host the agent may not reach: the clone fails, and so does the session.
  const name = `sdk-ts-unclonable-${randomBytes(3).toString("hex")}`;
  await lap.agents.create(name, { harness_id: "shell", repo_url: `https://${BLOCKED_HOST}/repo.git`, deny_out: [BLOCKED_HOST] });
  try {
    const created = await lap.sessions.create(name);
    await assert.rejects(lap.sessions.waitReady(created.id), (err: unknown) => {
      assert.ok(err instanceof SessionFailedError, String(err));
      const failed: Session = err.session;
      assert.equal(failed.status, "failed");
      assert.ok(failed.failure_reason);
      assert.ok(err.hint);
      return true;
    });
  } finally {
    await lap.agents.delete(name);
  }
});
