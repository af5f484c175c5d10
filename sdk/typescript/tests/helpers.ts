// What the test files share: a client of the `lap serve` named by `LAP_URL` and `LAP_MASTER_KEY`
// (tests/it/sdk_typescript.rs starts a real one, local backend, real sandboxes), a shell agent, ready
// sessions of it, and where the SDK's own files are.

import { randomBytes } from "node:crypto";
import { existsSync, readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

import { Client, NotFoundError, type Session } from "../src/index.js";

// The host the agent's egress policy denies: a request to it is refused by the session's vault
// (and logged) without any traffic leaving the machine.
export const BLOCKED_HOST = "blocked.test";

if (!process.env.LAP_URL || !process.env.LAP_MASTER_KEY) {
  throw new Error(
    "these tests need a running `lap serve`: set LAP_URL and LAP_MASTER_KEY (`cargo nextest run --test it sdk_typescript::` starts one and does)",
  );
}

/** The SDK's directory (where package.json is), from wherever the compiled tests are. */
export const SDK_DIR = ((): string => {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (;;) {
    const manifest = join(dir, "package.json");
    if (existsSync(manifest) && (JSON.parse(readFileSync(manifest, "utf8")) as { name?: string }).name === "lap-sdk") return dir;
    const up = dirname(dir);
    if (up === dir) throw new Error("the compiled tests are not inside sdk/typescript");
    dir = up;
  }
})();

export function client(): Client {
  return new Client();
}

/** A fresh name for an agent of a test. */
export function uniqueName(prefix: string): string {
  return `${prefix}-${randomBytes(4).toString("hex")}`;
}

/** A shell agent whose egress policy denies `BLOCKED_HOST`. */
export async function shellAgent(lap: Client, prefix = "sdk-ts"): Promise<string> {
  const name = uniqueName(prefix);
  await lap.agents.create(name, { harness_id: "shell", deny_out: [BLOCKED_HOST] });
  return name;
}

export async function readySession(lap: Client, agent: string): Promise<Session> {
  return lap.sessions.waitReady((await lap.sessions.create(agent)).id);
}

/** Deletes a session that may be gone already. */
export async function deleteQuietly(lap: Client, session: string): Promise<void> {
  try {
    await lap.sessions.delete(session);
  } catch (err) {
    if (!(err instanceof NotFoundError)) throw err;
  }
}
