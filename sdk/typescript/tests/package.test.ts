// `npm install ./sdk/typescript` works from a clean checkout: the package npm packs (its `files`,
// the committed dist/) installs offline into an empty project, with no runtime dependency; a
// program there imports it by name and reaches the server, and a TypeScript program there
// type-checks against the shipped declarations.

import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";

import { SDK_DIR } from "./helpers.js";

let project: string;

function npm(args: string[], cwd: string): string {
  return execFileSync("npm", [...args, "--no-audit", "--no-fund", "--offline"], { cwd, encoding: "utf8", stdio: "pipe", timeout: 120_000 });
}

before(() => {
  project = mkdtempSync(join(tmpdir(), "lap-sdk-ts-install-"));
  writeFileSync(join(project, "package.json"), JSON.stringify({ name: "consumer", private: true, type: "module" }));
  npm(["pack", "--pack-destination", project, SDK_DIR], project);
  const tarball = readdirSync(project).find((f) => f.endsWith(".tgz"));
  assert.ok(tarball, "npm pack made no tarball");
  npm(["install", join(project, tarball)], project);
});

after(() => {
  rmSync(project, { recursive: true, force: true });
});

test("the installed package holds dist/, the README and the manifest, and nothing it would need to build", () => {
  const installed = join(project, "node_modules", "lap-sdk");
  assert.deepEqual(readdirSync(installed).sort(), ["README.md", "dist", "package.json"]);
  const manifest = JSON.parse(readFileSync(join(installed, "package.json"), "utf8")) as Record<string, unknown>;
  assert.equal(manifest.dependencies, undefined, "no runtime dependencies");
  assert.deepEqual(readdirSync(join(project, "node_modules")).filter((f) => !f.startsWith(".")), ["lap-sdk"]);
});

test("a program imports it by name and reaches the server", () => {
  writeFileSync(
    join(project, "health.mjs"),
    'import { Client, VERSION } from "lap-sdk";\nconst lap = new Client();\nconst health = await lap.health();\nconsole.log(VERSION, health.ok);\n',
  );
  const out = execFileSync(process.execPath, ["health.mjs"], { cwd: project, encoding: "utf8", timeout: 60_000 });
  assert.equal(out, "0.1.0 true\n");
});

test("a TypeScript program type-checks against the shipped declarations, and a wrong one does not", () => {
  const tsc = join(SDK_DIR, "node_modules", "typescript", "bin", "tsc");
  const options = ["--noEmit", "--strict", "--module", "NodeNext", "--moduleResolution", "NodeNext", "--target", "ES2022"];
  const types = ["--types", "node", "--typeRoots", join(SDK_DIR, "node_modules", "@types")];
  writeFileSync(
    join(project, "good.ts"),
    [
      'import { Client, NotFoundError, type Session, type StreamFrame } from "lap-sdk";',
      "const lap = new Client({ timeoutMs: 5_000 });",
      'const session: Session = await lap.sessions.waitReady((await lap.sessions.create("box", { title: "t" })).id);',
      'const result = await lap.sessions.exec(session.id, ["true"]);',
      "const code: number = result.exitCode;",
      'for await (const frame of lap.messages.stream(session.id, "hi")) { const f: StreamFrame = frame; void f; }',
      "void code; void NotFoundError;",
      "",
    ].join("\n"),
  );
  execFileSync(process.execPath, [tsc, ...options, ...types, "good.ts"], { cwd: project, stdio: "pipe" });
  writeFileSync(join(project, "bad.ts"), 'import { Client } from "lap-sdk";\nconst n: number = (await new Client().sessions.get("x")).status;\nvoid n;\n');
  assert.throws(
    () => execFileSync(process.execPath, [tsc, ...options, ...types, "bad.ts"], { cwd: project, stdio: "pipe", encoding: "utf8" }),
    (err: unknown) => String((err as { stdout?: string }).stdout).includes("is not assignable to type 'number'"),
  );
});
