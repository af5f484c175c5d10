// @ts-check
// Runs a command in a new session of an agent and reads back the file it wrote.
//
//     node examples/run-and-read.mjs AGENT
//
// Settings as the `lap` CLI's: LAP_URL and LAP_MASTER_KEY, else its config file (`lap login`).

import { Client, LapError } from "lap-sdk";

/** @param {string} agent */
async function main(agent) {
  const lap = new Client();
  try {
    const session = await lap.sessions.create(agent, { title: "sdk example" });
    try {
      await lap.sessions.waitReady(session.id, { timeoutMs: 120_000 });
      const result = await lap.sessions.exec(session.id, ["sh", "-c", "uname -s > /tmp/os.txt && echo wrote it"]);
      console.log(`exit ${result.exitCode}: ${result.stdoutText.trim()}`);
      console.log("the file says:", (await lap.files.readText(session.id, "/tmp/os.txt")).trim());
    } finally {
      await lap.sessions.delete(session.id);
    }
  } finally {
    lap.close();
  }
}

const [agent, ...rest] = process.argv.slice(2);
if (!agent || rest.length) {
  console.error("usage: run-and-read.mjs AGENT");
  process.exit(2);
}
try {
  await main(agent);
} catch (/** @type {unknown} */ err) {
  if (!(err instanceof LapError)) throw err;
  console.error(`error: ${err.message}${err.hint ? `\nhint: ${err.hint}` : ""}`);
  process.exit(1);
}
