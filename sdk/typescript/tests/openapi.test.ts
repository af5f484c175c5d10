// Freshness: `src/models.ts` is what scripts/gen-models.mjs makes of the live server's OpenAPI
// document (`GET /api/v1/openapi.json`), every route and parameter the SDK sends is documented
// there, and the committed `dist/` is what the pinned TypeScript makes of `src/`. A change of the
// API (or of the sources) that the SDK does not follow fails here.

import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { readFileSync, readdirSync, rmSync, statSync } from "node:fs";
import { join, relative } from "node:path";
import { test } from "node:test";
import { pathToFileURL } from "node:url";

import { ROUTES } from "../src/index.js";
import { SDK_DIR } from "./helpers.js";

interface Operation {
  parameters?: { name: string; in: string }[];
}
interface Document {
  paths: Record<string, Record<string, Operation>>;
  components: { schemas: Record<string, unknown> };
}

async function liveDocument(): Promise<Document> {
  const answer = await fetch(`${process.env.LAP_URL}/api/v1/openapi.json`);
  assert.equal(answer.status, 200);
  return (await answer.json()) as Document;
}

test("src/models.ts is what the generator makes of the live document", async () => {
  const generator = (await import(pathToFileURL(join(SDK_DIR, "scripts", "gen-models.mjs")).href)) as { generate(doc: unknown): string };
  const expected = generator.generate(await liveDocument());
  const committed = readFileSync(join(SDK_DIR, "src", "models.ts"), "utf8");
  assert.ok(committed === expected, "src/models.ts is stale: run `npm run gen -- $LAP_URL` in sdk/typescript, then `npm run build`");
});

test("every route the SDK calls, and every parameter it sends, is documented", async () => {
  const doc = await liveDocument();
  for (const route of Object.values(ROUTES)) {
    const operation = doc.paths[route.path]?.[route.method.toLowerCase()];
    assert.ok(operation, `${route.method} ${route.path} is not in the document`);
    const documented = new Set((operation.parameters ?? []).filter((p) => p.in === "query" || p.in === "header").map((p) => p.name));
    for (const param of route.params) assert.ok(documented.has(param), `${route.method} ${route.path} documents no \`${param}\``);
  }
});

function files(dir: string): string[] {
  return readdirSync(dir).flatMap((name) => {
    const path = join(dir, name);
    return statSync(path).isDirectory() ? files(path) : [path];
  });
}

test("the committed dist/ is what the pinned TypeScript makes of src/", () => {
  const out = join(SDK_DIR, "build", `dist-check-${process.pid}`);
  try {
    execFileSync(process.execPath, [join(SDK_DIR, "node_modules", "typescript", "bin", "tsc"), "-p", "tsconfig.json", "--outDir", out], {
      cwd: SDK_DIR,
      stdio: "pipe",
    });
    const dist = join(SDK_DIR, "dist");
    const built = files(out).map((f) => relative(out, f)).sort();
    assert.deepEqual(files(dist).map((f) => relative(dist, f)).sort(), built, "dist/ has other files than a build: run `npm run build`");
    for (const file of built) {
      assert.ok(readFileSync(join(out, file)).equals(readFileSync(join(dist, file))), `dist/${file} is stale: run \`npm run build\` in sdk/typescript`);
    }
  } finally {
    rmSync(out, { recursive: true, force: true });
  }
});
