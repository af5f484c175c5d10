// Settings resolve as the CLI's do: options, then LAP_URL/LAP_MASTER_KEY, then the CLI's config
// and credentials files (the real ones `lap serve` wrote on its first start, in the test's HOME).

import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { inspect } from "node:util";
import { test } from "node:test";

import { Client, ConfigError, DEFAULT_URL, configDir, resolve } from "../src/index.js";

const WITHOUT_ENV = Object.fromEntries(Object.entries(process.env).filter(([k]) => k !== "LAP_URL" && k !== "LAP_MASTER_KEY"));

function scratch(): string {
  return mkdtempSync(join(tmpdir(), "lap-sdk-ts-config-"));
}

test("the CLI's config file alone reaches the server", async () => {
  const settings = resolve({}, { env: WITHOUT_ENV });
  assert.equal(settings.url, process.env.LAP_URL);
  assert.equal(settings.masterKey, process.env.LAP_MASTER_KEY);
  assert.equal(settings.urlSource, join(configDir(WITHOUT_ENV), "config.toml"));
  assert.equal(settings.keySource, join(configDir(WITHOUT_ENV), "credentials"));
  const lap = new Client({ settings });
  try {
    assert.ok(Array.isArray(await lap.sessions.list()));
  } finally {
    lap.close();
  }
});

test("the environment beats the config file, and options beat both", () => {
  const env = { ...WITHOUT_ENV, LAP_URL: "http://127.0.0.1:1/", LAP_MASTER_KEY: "from-env" };
  let settings = resolve({}, { env });
  assert.deepEqual([settings.url, settings.masterKey, settings.urlSource], ["http://127.0.0.1:1", "from-env", "env LAP_URL"]);
  settings = resolve({ url: "http://127.0.0.1:2", masterKey: "from-option" }, { env });
  assert.deepEqual([settings.url, settings.masterKey, settings.keySource], ["http://127.0.0.1:2", "from-option", "option"]);
  // The key is never printed.
  assert.ok(!JSON.stringify(settings).includes("from-option"));
  assert.ok(!inspect(settings).includes("from-option"));
});

test("XDG_CONFIG_HOME places the config dir, and each platform has its own", () => {
  assert.equal(configDir({ HOME: "/h" }, "linux"), "/h/.config/lap");
  assert.equal(configDir({ HOME: "/h", XDG_CONFIG_HOME: "/x" }, "linux"), "/x/lap");
  assert.equal(configDir({ HOME: "/h", XDG_CONFIG_HOME: "relative" }, "linux"), "/h/.config/lap");
  assert.equal(configDir({ HOME: "/h" }, "darwin"), "/h/Library/Application Support/dev.lap.lap");
  assert.equal(configDir({ HOME: "/h", APPDATA: "/a" }, "win32"), join("/a", "lap", "lap", "config"));
});

test("nothing configured means the default URL and no key", () => {
  const dir = scratch();
  try {
    const settings = resolve({}, { env: { HOME: dir } });
    assert.deepEqual([settings.url, settings.masterKey, settings.urlSource], [DEFAULT_URL, undefined, "default"]);
  } finally {
    rmSync(dir, { recursive: true });
  }
});

test("a key in the OS keyring is refused with a hint, and LAP_MASTER_KEY is enough then", () => {
  const dir = scratch();
  try {
    writeFileSync(join(dir, "config.toml"), 'url = "http://127.0.0.1:3000"\nkey_store = "keyring"\n');
    assert.throws(() => resolve({}, { env: {}, configDir: dir }), (err: unknown) => {
      assert.ok(err instanceof ConfigError);
      assert.match(err.hint ?? "", /LAP_MASTER_KEY/);
      return true;
    });
    assert.equal(resolve({}, { env: { LAP_MASTER_KEY: "k" }, configDir: dir }).masterKey, "k");
  } finally {
    rmSync(dir, { recursive: true });
  }
});

test("a broken config file is an error naming it and the line", () => {
  const dir = scratch();
  try {
    writeFileSync(join(dir, "config.toml"), 'url = "http://x"\nurl = \n');
    assert.throws(() => resolve({}, { env: {}, configDir: dir }), (err: unknown) => {
      assert.ok(err instanceof ConfigError);
      assert.ok(err.message.includes(join(dir, "config.toml")), err.message);
      assert.match(err.message, /line 2/);
      assert.ok(err.hint);
      return true;
    });
  } finally {
    rmSync(dir, { recursive: true });
  }
});

test("ca_cert is read from the config file, and a missing one is an error naming it", () => {
  const dir = scratch();
  try {
    writeFileSync(join(dir, "config.toml"), `url = "https://127.0.0.1:1"\nca_cert = '${join(dir, "missing.pem")}'\n`);
    const settings = resolve({}, { env: { LAP_MASTER_KEY: "k" }, configDir: dir });
    assert.equal(settings.caCert, join(dir, "missing.pem"));
    assert.throws(() => new Client({ settings }), (err: unknown) => {
      assert.ok(err instanceof Error && "hint" in err);
      assert.ok(err.message.includes("missing.pem"), err.message);
      return true;
    });
  } finally {
    rmSync(dir, { recursive: true });
  }
});
