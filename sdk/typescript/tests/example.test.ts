// The README's example runs as a program against the real server, importing the package by its
// name (`lap-sdk`, the committed dist/), as a user's program would.

import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { join } from "node:path";
import { after, before, test } from "node:test";

import { Client } from "../src/index.js";
import { SDK_DIR, shellAgent } from "./helpers.js";

const EXAMPLE = join(SDK_DIR, "examples", "run-and-read.mjs");
const lap = new Client();
let agent: string;

before(async () => {
  agent = await shellAgent(lap, "sdk-ts-example");
});

after(async () => {
  await lap.agents.delete(agent);
  lap.close();
});

function example(...args: string[]) {
  return spawnSync(process.execPath, [EXAMPLE, ...args], { cwd: SDK_DIR, encoding: "utf8", timeout: 300_000 });
}

test("the example runs a command and reads its file", () => {
  const done = example(agent);
  assert.equal(done.status, 0, done.stderr);
  assert.equal(done.stdout, "exit 0: wrote it\nthe file says: Linux\n");
});

test("the example reports an unknown agent with the hint", () => {
  const done = example("no-such-agent");
  assert.equal(done.status, 1, done.stdout + done.stderr);
  assert.ok(done.stderr.startsWith("error: "), done.stderr);
  assert.ok(done.stderr.includes("hint: "), done.stderr);
});
