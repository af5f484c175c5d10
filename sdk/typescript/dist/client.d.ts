/**
 * The client: `Client`, with `agents`, `sessions`, `files`, `messages`, `ports` and `snapshots`
 * beside each other, as the API groups them.
 *
 * Every call resolves to the API's typed value (the shapes of `models.ts`, generated from the
 * OpenAPI document) or rejects with a `LapError` carrying the API's message, status and hint.
 * Every wait has a deadline: a plain call `timeoutMs` (30 s by default) of silence, waits and
 * streams their own, named where they are taken. Streams are async iterables: leaving the
 * `for await` early closes the connection (for an exec, the command is killed).
 */
import type { Writable } from "node:stream";
import { type Settings } from "./config.js";
import { Transport, type Body, type Query, type Response } from "./http.js";
import type * as m from "./models.js";
import { type Route } from "./routes.js";
/** How long `waitReady` waits by default, and how often it asks. */
export declare const READY_TIMEOUT_MS = 120000;
export declare const READY_POLL_MS = 200;
/** How often a followed egress log is asked for new records (as `lap sessions egress -f`). */
export declare const FOLLOW_INTERVAL_MS = 500;
/** Longest silence on an SSE stream: the server sends a keep-alive every 15 s. */
export declare const SSE_IDLE_TIMEOUT_MS = 60000;
/** `POST /message` waits up to 30 minutes for the reply on the server. */
export declare const MESSAGE_TIMEOUT_MS: number;
/** Longest silence of an exec's output before it is given up (the command is then killed). */
export declare const EXEC_TIMEOUT_MS = 600000;
export interface ClientOptions {
    /** The server's URL; else `LAP_URL`, else the CLI's config file, else http://127.0.0.1:3000. */
    url?: string;
    /** The master key (or a user key); else `LAP_MASTER_KEY`, else the CLI's credentials file. */
    masterKey?: string;
    /** The longest silence of a plain call, in milliseconds (30 s by default). */
    timeoutMs?: number;
    /** Settings resolved already (`resolve()`), instead of `url` and `masterKey`. */
    settings?: Settings;
}
/** A chunk of a command's output, as it wrote it. */
export interface ExecOutput {
    type: "stdout" | "stderr";
    data: Buffer;
}
/** The command ended: its exit code (128 + the signal number when it was killed). */
export interface ExecExit {
    type: "exit";
    exitCode: number;
}
/** The command could not run, or the sandbox failed mid-way. */
export interface ExecFailure {
    type: "error";
    message: string;
}
/** One event of an exec's NDJSON stream (`ExecEvent` in the OpenAPI document), decoded. */
export type ExecEvent = ExecOutput | ExecExit | ExecFailure;
/** All of a command's output and its exit code. */
export declare class ExecResult {
    readonly exitCode: number;
    readonly stdout: Buffer;
    readonly stderr: Buffer;
    constructor(exitCode: number, stdout: Buffer, stderr: Buffer);
    get stdoutText(): string;
    get stderrText(): string;
}
export interface ExecOptions {
    /** Bytes given to the command's standard input. */
    stdin?: Uint8Array | string;
    /** The working directory in the sandbox. */
    cwd?: string;
    /** The longest silence of its output (`null`: none); 10 minutes by default. */
    timeoutMs?: number | null;
    signal?: AbortSignal;
}
/** The text parts of a message, joined. */
export declare function messageText(message: m.Message): string;
/** Whether `reply` (of `messages.send`) is a TUI session's answer rather than a `Message`. */
export declare function isTuiReply(reply: m.MessageReply): reply is m.TuiReply;
/** `failed` and `dead` never change again (until a restart). */
export declare function isTerminal(status: m.SessionStatus): boolean;
/** A client of `lap serve`. */
export declare class Client {
    readonly settings: Settings;
    readonly agents: Agents;
    readonly sessions: Sessions;
    readonly files: Files;
    readonly messages: Messages;
    readonly ports: Ports;
    readonly snapshots: Snapshots;
    /** @internal */
    readonly transport: Transport;
    constructor(options?: ClientOptions);
    /** The server's URL. */
    get url(): string;
    /** The longest silence of a plain call, in milliseconds. */
    get timeoutMs(): number;
    /** `GET /api/v1/health` (needs no key). */
    health(): Promise<m.Health>;
    /** Closes the kept-alive connections (idle ones never keep the process alive anyway). */
    close(): void;
    /** @internal One call of `route`, its JSON answer decoded. */
    call<T>(route: Route, options?: CallOptions): Promise<T>;
    /** @internal One call of `route`, its answer left to stream. */
    open(route: Route, options?: CallOptions): Promise<Response>;
    private request;
}
/** @internal */
export interface CallOptions {
    segments?: Record<string, string | number>;
    query?: Query;
    json?: unknown;
    body?: Body;
    headers?: Record<string, string>;
    timeoutMs?: number | null | undefined;
    signal?: AbortSignal | undefined;
}
/** `/agents`: what a session runs (harness, repo, credentials, egress policy). */
export declare class Agents {
    private readonly c;
    constructor(c: Client);
    list(options?: {
        limit?: number;
        offset?: number;
        search?: string;
    }): Promise<m.AgentList>;
    /** Creates an agent (`harness_id` defaults to `opencode` on the server, as in LAP). */
    create(name: string, fields?: Omit<m.CreateAgent, "name">): Promise<m.Agent>;
    /** An agent by UUID or name. */
    get(agent: string): Promise<m.Agent>;
    /** Changes an agent; a field left out stays as it is (`""` clears a text field). */
    update(agent: string, fields: m.UpdateAgent): Promise<m.Agent>;
    delete(agent: string): Promise<void>;
}
/** `/sessions`: running (or resting) sandboxes of an agent. */
export declare class Sessions {
    private readonly c;
    constructor(c: Client);
    /** Starts a session of `agent` (UUID or name); it is `creating`: see `waitReady`. */
    create(agent: string, options?: {
        title?: string;
    }): Promise<m.Session>;
    get(session: string): Promise<m.Session>;
    /** Sessions, newest first; only `agent`'s when given (UUID or name). */
    list(options?: {
        agent?: string;
        limit?: number;
    }): Promise<m.Session[]>;
    /** Stops a session: its sandbox is deleted and it becomes `dead`. */
    delete(session: string): Promise<m.DeletedSession>;
    /**
     * Polls until the session is `ready`. Rejects with `SessionFailedError` when it ends `failed`
     * or `dead`, with `LapTimeoutError` when `timeoutMs` (2 minutes by default) passes first.
     */
    waitReady(session: string, options?: {
        timeoutMs?: number;
        intervalMs?: number;
        signal?: AbortSignal;
    }): Promise<m.Session>;
    /** A fresh sandbox for a `ready`, `dead` or `failed` session; resolves once it settled. */
    restart(session: string): Promise<m.Session>;
    /** Freezes the session's processes (memory kept); an exec, message or attach resumes it. */
    pause(session: string): Promise<m.Session>;
    /** Brings a `paused` or `hibernated` session back to `ready`. */
    resume(session: string): Promise<m.Session>;
    /** Stops the sandbox and keeps only the workspace. */
    hibernate(session: string): Promise<m.Session>;
    /** A new session of the same agent on a copy of this one's workspace (`creating`). */
    fork(session: string, options?: {
        title?: string;
    }): Promise<m.Session>;
    private action;
    workspace(session: string): Promise<m.Workspace>;
    /** Names of the credentials the sandbox holds stubs for. */
    vaultKeys(session: string): Promise<string[]>;
    /** The vault's log of the session's requests, oldest first (after record `after`). */
    egress(session: string, options?: {
        after?: number;
        limit?: number;
    }): Promise<m.Interception[]>;
    /**
     * The egress log as it grows: every record, asking again every `intervalMs`, until the session
     * has ended and nothing is left, or `timeoutMs` passes (none by default), or `signal` aborts.
     */
    followEgress(session: string, options?: {
        after?: number;
        intervalMs?: number;
        timeoutMs?: number;
        signal?: AbortSignal;
    }): AsyncGenerator<m.Interception, void, undefined>;
    /**
     * Runs `command` (a list of words: `["sh", "-c", script]` for a shell line) in the sandbox;
     * yields its output as the API streams it, then its exit (or an error event). Leaving the
     * loop early closes the stream, and the command is killed.
     */
    execStream(session: string, command: string[], options?: ExecOptions): AsyncGenerator<ExecEvent, void, undefined>;
    /** Runs `command` to its end: its stdout, stderr and exit code. Rejects when it could not run. */
    exec(session: string, command: string[], options?: ExecOptions): Promise<ExecResult>;
}
/** Named copies of a session's workspace. */
export declare class Snapshots {
    private readonly c;
    constructor(c: Client);
    create(session: string, options?: {
        name?: string;
    }): Promise<m.Snapshot>;
    list(): Promise<m.Snapshot[]>;
    delete(name: string): Promise<m.Snapshot>;
    /** A new session of `agent` on a copy of the snapshot (`creating`). */
    startSession(name: string, agent: string, options?: {
        title?: string;
    }): Promise<m.Session>;
}
export interface ReadOptions {
    /** From this byte (a `Range` request); negative alone: the last `-offset` bytes. */
    offset?: number;
    /** This many bytes from `offset`. */
    length?: number;
    /** Reads a directory as a tar stream. */
    archive?: boolean;
}
/** `Range` for `offset`/`length`. */
export declare function rangeHeader(offset: number | undefined, length: number | undefined): Record<string, string>;
/**
 * Files in a ready session's sandbox: paths absolute under `/work` or `/tmp`, or relative to the
 * sandbox user's home (`/work/home`).
 */
export declare class Files {
    private readonly c;
    constructor(c: Client);
    list(session: string, path: string): Promise<m.FileList>;
    stat(session: string, path: string): Promise<m.FileEntry>;
    /** The file's bytes (or a range of them, or a directory's tar with `archive`). */
    read(session: string, path: string, options?: ReadOptions): Promise<Buffer>;
    readText(session: string, path: string, options?: ReadOptions): Promise<string>;
    /** `read`, streamed in chunks (constant memory whatever the size). */
    readStream(session: string, path: string, options?: ReadOptions): AsyncGenerator<Buffer, void, undefined>;
    /** Streams the file (or with `archive` a directory's tar) into `dest`, a path or a stream; resolves to the bytes. */
    download(session: string, path: string, dest: string | Writable, options?: {
        archive?: boolean;
    }): Promise<number>;
    /**
     * Writes `data` (text as UTF-8, bytes, or chunks, sync or async, streamed) to `path`; `mode` as
     * `0o644` or `"0644"`. With `archive`, unpacks a tar stream into the directory `path`.
     */
    write(session: string, path: string, data: Body, options?: {
        mode?: number | string;
        archive?: boolean;
    }): Promise<m.Uploaded>;
    delete(session: string, path: string, options?: {
        recursive?: boolean;
    }): Promise<m.Deleted>;
}
export interface StreamOptions {
    /** `opencode`: events in opencode's bus shape instead of lap's own. */
    format?: string;
    /** The longest silence (the server sends a keep-alive every 15 s); 60 s by default. */
    idleTimeoutMs?: number;
    signal?: AbortSignal;
}
/**
 * Messages to API harnesses (claude-agent-sdk, codex-app-server, opencode); a terminal harness
 * answers a `TuiReply` (connect to its terminal instead).
 */
export declare class Messages {
    private readonly c;
    constructor(c: Client);
    /** Sends `text` and waits for the reply (up to `timeoutMs`, 31 minutes by default). */
    send(session: string, text: string, options?: {
        timeoutMs?: number;
        signal?: AbortSignal;
    }): Promise<m.MessageReply>;
    /**
     * Sends `text` and yields the turn as typed frames: `ready`, `harness_event`s, then `done`
     * (with the reply) or `error`, where it ends.
     */
    stream(session: string, text: string, options?: StreamOptions): AsyncGenerator<m.StreamFrame, void, undefined>;
    history(session: string): Promise<m.Message[]>;
    /**
     * The session's event log as it happens (those after seq `after` first). It does not end by
     * itself: leave the loop (or abort `signal`) when you have what you need.
     */
    events(session: string, options?: StreamOptions & {
        after?: number;
    }): AsyncGenerator<m.StreamFrame, void, undefined>;
    abort(session: string): Promise<m.AbortReply>;
}
/** An answer of a sandbox's server through the proxy path: any status, it is the sandbox's. */
export interface PortAnswer {
    status: number;
    headers: Record<string, string | string[] | undefined>;
    body: Buffer;
    readonly text: string;
}
/** What the sandbox listens on, and ways in: the proxy path and signed preview URLs. */
export declare class Ports {
    private readonly c;
    constructor(c: Client);
    list(session: string): Promise<m.ListeningPorts>;
    /** A signed, expiring URL that opens the port in a browser without the master key. */
    previewUrl(session: string, port: number, options?: {
        ttlSeconds?: number;
    }): Promise<m.PreviewUrl>;
    revokePreviews(session: string, options?: {
        port?: number;
    }): Promise<m.RevokedPreviewUrls>;
    /** The proxy URL of `path` on the sandbox's `127.0.0.1:port` (takes the master key). */
    url(session: string, port: number, path?: string): string;
    private path;
    /** An HTTP request to the sandbox's server through the proxy path; the answer as it is. */
    request(session: string, port: number, options?: {
        method?: string;
        path?: string;
        headers?: Record<string, string>;
        body?: Body;
        timeoutMs?: number;
    }): Promise<PortAnswer>;
}
