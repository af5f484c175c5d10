/**
 * Client settings, resolved as the `lap` CLI resolves them (src/settings.rs in lap).
 *
 * Sources, strongest first: the options given to the client, the environment (`LAP_URL`,
 * `LAP_MASTER_KEY`), the CLI's config file (`config.toml` in its config dir: `url`, `ca_cert`,
 * `key_store`), the `credentials` file beside it (`master_key`, which `lap login` writes when no
 * OS keyring is reachable or `LAP_CREDENTIAL_STORE=file` asks), the default URL
 * `http://127.0.0.1:3000`. A key the CLI put in the OS keyring (`key_store = "keyring"`) is not
 * read: the resolver refuses it with a hint.
 *
 * The config dir is `$XDG_CONFIG_HOME/lap` (`~/.config/lap`) on Linux,
 * `~/Library/Application Support/dev.lap.lap` on macOS and `%APPDATA%\lap\lap\config` on Windows.
 * Both files are the flat TOML the CLI writes (`key = "value"` lines); `toml.ts` reads that much.
 */
import { readFileSync } from "node:fs";
import { homedir } from "node:os";
import * as path from "node:path";
import { ConfigError } from "./errors.js";
import { parseFlatToml } from "./toml.js";
/** Where `lap serve` listens by default, and so where the client looks by default. */
export const DEFAULT_URL = "http://127.0.0.1:3000";
/** The effective settings: where the server is, the master key, extra CA roots. */
export class Settings {
    url;
    masterKey;
    caCert;
    urlSource;
    keySource;
    constructor(url, masterKey, 
    /** A PEM file of extra CA roots for a server with its own certificate. */
    caCert = undefined, 
    /** Where the URL came from: `option`, `env LAP_URL`, a file's path or `default`. */
    urlSource = "default", 
    /** Where the key came from: `option`, `env LAP_MASTER_KEY`, a file's path; none: undefined. */
    keySource = undefined) {
        this.url = url;
        this.masterKey = masterKey;
        this.caCert = caCert;
        this.urlSource = urlSource;
        this.keySource = keySource;
    }
    /** Never the key: `JSON.stringify` and `console.log` show whether one is set, not its value. */
    toJSON() {
        const { url, caCert, urlSource, keySource } = this;
        return { url, masterKey: this.masterKey ? "<set>" : "<none>", caCert, urlSource, keySource };
    }
    [Symbol.for("nodejs.util.inspect.custom")]() {
        return `Settings ${JSON.stringify(this.toJSON())}`;
    }
}
/** The `lap` CLI's config dir on this platform (the `directories` crate's rules). */
export function configDir(env = process.env, platform = process.platform) {
    const home = env.HOME || homedir();
    if (platform === "darwin")
        return path.join(home, "Library", "Application Support", "dev.lap.lap");
    if (platform === "win32") {
        const appdata = env.APPDATA || path.join(home, "AppData", "Roaming");
        return path.join(appdata, "lap", "lap", "config");
    }
    const xdg = env.XDG_CONFIG_HOME;
    const base = xdg && path.isAbsolute(xdg) ? xdg : path.join(home, ".config");
    return path.join(base, "lap");
}
function readToml(file) {
    let text;
    try {
        text = readFileSync(file, "utf8");
    }
    catch (err) {
        if (err.code === "ENOENT")
            return {};
        throw new ConfigError(`cannot read \`${file}\`: ${err.message}`, {
            hint: "fix its permissions or delete it; `lap config` shows the effective settings",
            cause: err,
        });
    }
    try {
        return parseFlatToml(text);
    }
    catch (err) {
        throw new ConfigError(`cannot read \`${file}\`: ${err.message}`, {
            hint: "fix or delete the file; `lap config` shows the effective settings",
            cause: err,
        });
    }
}
/** Merges the options, the environment, the CLI's config file and its credentials file. */
export function resolve(options = {}, context = {}) {
    const env = context.env ?? process.env;
    const directory = context.configDir ?? configDir(env, context.platform);
    const configFile = path.join(directory, "config.toml");
    const config = readToml(configFile);
    let url;
    let urlSource;
    if (options.url)
        [url, urlSource] = [options.url, "option"];
    else if (env.LAP_URL)
        [url, urlSource] = [env.LAP_URL, "env LAP_URL"];
    else if (typeof config.url === "string")
        [url, urlSource] = [config.url, configFile];
    else
        [url, urlSource] = [DEFAULT_URL, "default"];
    url = url.replace(/\/+$/, "");
    let masterKey;
    let keySource;
    if (options.masterKey)
        [masterKey, keySource] = [options.masterKey, "option"];
    else if (env.LAP_MASTER_KEY)
        [masterKey, keySource] = [env.LAP_MASTER_KEY, "env LAP_MASTER_KEY"];
    else if (config.key_store === "keyring") {
        throw new ConfigError(`\`${configFile}\` says the master key is in the OS keyring, which this SDK does not read`, {
            hint: "set `LAP_MASTER_KEY`, pass `masterKey`, or log in with `LAP_CREDENTIAL_STORE=file lap login`",
        });
    }
    else {
        const credentials = path.join(directory, "credentials");
        const stored = readToml(credentials).master_key;
        if (typeof stored === "string" && stored)
            [masterKey, keySource] = [stored, credentials];
    }
    const caCert = typeof config.ca_cert === "string" && config.ca_cert ? config.ca_cert : undefined;
    return new Settings(url, masterKey, caCert, urlSource, keySource);
}
