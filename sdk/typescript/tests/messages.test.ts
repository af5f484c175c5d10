// Messages through a real API harness: the real `claude` on the `claude-agent-sdk` harness, its
// model the echoing fake Anthropic API of the Rust suite (tests/it/support/anthropic.rs), which
// answers `echo: TEXT`. tests/it/sdk_typescript.rs makes the agent and names it in
// `LAP_SDK_CLAUDE_AGENT`.

import assert from "node:assert/strict";
import { after, before, test } from "node:test";

import { Client, isTuiReply, messageText, type Event, type Session, type StreamFrame } from "../src/index.js";
import { deleteQuietly, readySession } from "./helpers.js";

const agent = process.env.LAP_SDK_CLAUDE_AGENT;
// Without the agent every test here skips (tests/it/sdk_typescript.rs fails a run with a skip).
const needs = { skip: agent ? false : "no LAP_SDK_CLAUDE_AGENT: run through `cargo nextest run --test it sdk_typescript::`" };

const lap = new Client();
let session: Session;

before(async () => {
  if (agent) session = await readySession(lap, agent);
});

after(async () => {
  if (agent) await deleteQuietly(lap, session.id);
  lap.close();
});

async function collect(frames: AsyncIterable<StreamFrame>): Promise<StreamFrame[]> {
  const out: StreamFrame[] = [];
  for await (const frame of frames) out.push(frame);
  return out;
}

test("a message is answered with the reply", needs, async () => {
  const reply = await lap.messages.send(session.id, "hello there");
  assert.ok(!isTuiReply(reply), JSON.stringify(reply));
  assert.equal(messageText(reply), "echo: hello there");
  assert.deepEqual([reply.info.role, reply.info.finish, reply.info.harness], ["assistant", "stop", "claude-agent-sdk"]);
  assert.ok((reply.info.tokens?.output ?? 0) > 0);
  assert.ok(reply.info.sessionID && reply.info.time.created > 0);
});

test("a streamed turn comes as typed frames, ending with the reply", needs, async () => {
  const frames = await collect(lap.messages.stream(session.id, "streamed"));
  assert.equal(frames[0]?.type, "ready");
  const last = frames.at(-1);
  assert.ok(last?.type === "done" && last.message, JSON.stringify(last));
  assert.equal(messageText(last.message), "echo: streamed");
  const events: Event[] = frames.flatMap((f) => (f.type === "harness_event" ? [f.event] : []));
  const types = events.map((e) => e.type);
  assert.equal(types.filter((t) => t === "turn.started").length, 1);
  const completed = events.at(-1);
  assert.ok(completed?.type === "turn.completed", types.join(" "));
  assert.equal(completed.data.status, "completed");
  const seqs = events.map((e) => e.seq);
  assert.deepEqual(seqs, seqs.map((_, i) => (seqs[0] ?? 0) + i), "sequence numbers without gaps");
  const deltas = events.flatMap((e) => (e.type === "item.delta" && e.data.field === "text" ? [e.data.delta] : []));
  assert.equal(deltas.join(""), "echo: streamed");
});

test("the history and the event log hold both turns; an idle abort aborts nothing", needs, async () => {
  const history = await lap.messages.history(session.id);
  assert.deepEqual(history.map((m) => m.info.role), ["user", "assistant", "user", "assistant"]);
  assert.deepEqual([messageText(history[1]!), messageText(history[3]!)], ["echo: hello there", "echo: streamed"]);
  let completed = 0;
  for await (const frame of lap.messages.events(session.id, { after: 0 })) {
    if (frame.type === "harness_event" && frame.event.type === "turn.completed" && ++completed === 2) break;
  }
  assert.equal(completed, 2);
  const abort = await lap.messages.abort(session.id);
  assert.deepEqual([abort.ok, abort.aborted], [true, false]);
});
