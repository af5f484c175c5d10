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
/** Where `lap serve` listens by default, and so where the client looks by default. */
export declare const DEFAULT_URL = "http://127.0.0.1:3000";
/** The effective settings: where the server is, the master key, extra CA roots. */
export declare class Settings {
    readonly url: string;
    readonly masterKey: string | undefined;
    /** A PEM file of extra CA roots for a server with its own certificate. */
    readonly caCert: string | undefined;
    /** Where the URL came from: `option`, `env LAP_URL`, a file's path or `default`. */
    readonly urlSource: string;
    /** Where the key came from: `option`, `env LAP_MASTER_KEY`, a file's path; none: undefined. */
    readonly keySource: string | undefined;
    constructor(url: string, masterKey: string | undefined, 
    /** A PEM file of extra CA roots for a server with its own certificate. */
    caCert?: string | undefined, 
    /** Where the URL came from: `option`, `env LAP_URL`, a file's path or `default`. */
    urlSource?: string, 
    /** Where the key came from: `option`, `env LAP_MASTER_KEY`, a file's path; none: undefined. */
    keySource?: string | undefined);
    /** Never the key: `JSON.stringify` and `console.log` show whether one is set, not its value. */
    toJSON(): Record<string, unknown>;
}
/** What `resolve` reads besides its options; the process's own by default. */
export interface ResolveContext {
    env?: Record<string, string | undefined>;
    /** The config dir to read instead of the CLI's. */
    configDir?: string;
    /** The platform whose config dir rules apply (`process.platform` by default). */
    platform?: string;
}
/** The `lap` CLI's config dir on this platform (the `directories` crate's rules). */
export declare function configDir(env?: Record<string, string | undefined>, platform?: string): string;
/** Merges the options, the environment, the CLI's config file and its credentials file. */
export declare function resolve(options?: {
    url?: string | undefined;
    masterKey?: string | undefined;
}, context?: ResolveContext): Settings;
