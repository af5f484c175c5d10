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
import { once } from "node:events";
import { createWriteStream } from "node:fs";
import { finished } from "node:stream/promises";
import { resolve } from "./config.js";
import { LapError, LapTimeoutError, SessionFailedError } from "./errors.js";
import { Transport } from "./http.js";
import { ROUTES, checkedQuery, fill } from "./routes.js";
import { sseData } from "./sse.js";
/** How long `waitReady` waits by default, and how often it asks. */
export const READY_TIMEOUT_MS = 120_000;
export const READY_POLL_MS = 200;
/** How often a followed egress log is asked for new records (as `lap sessions egress -f`). */
export const FOLLOW_INTERVAL_MS = 500;
/** Longest silence on an SSE stream: the server sends a keep-alive every 15 s. */
export const SSE_IDLE_TIMEOUT_MS = 60_000;
/** `POST /message` waits up to 30 minutes for the reply on the server. */
export const MESSAGE_TIMEOUT_MS = 31 * 60_000;
/** Longest silence of an exec's output before it is given up (the command is then killed). */
export const EXEC_TIMEOUT_MS = 600_000;
/** The least deadline of the calls that move a workspace (restart, resume, fork, snapshots). */
const SLOW_CALL_MS = 90_000;
const COPY_CALL_MS = 300_000;
/** All of a command's output and its exit code. */
export class ExecResult {
    exitCode;
    stdout;
    stderr;
    constructor(exitCode, stdout, stderr) {
        this.exitCode = exitCode;
        this.stdout = stdout;
        this.stderr = stderr;
    }
    get stdoutText() {
        return this.stdout.toString("utf8");
    }
    get stderrText() {
        return this.stderr.toString("utf8");
    }
}
/** The text parts of a message, joined. */
export function messageText(message) {
    return message.parts.map((part) => (part.type === "text" ? part.text : "")).join("");
}
/** Whether `reply` (of `messages.send`) is a TUI session's answer rather than a `Message`. */
export function isTuiReply(reply) {
    return !("info" in reply);
}
/** `failed` and `dead` never change again (until a restart). */
export function isTerminal(status) {
    return status === "failed" || status === "dead";
}
const sleep = (ms, signal) => new Promise((resolve, reject) => {
    if (signal?.aborted) {
        reject(signal.reason);
        return;
    }
    const timer = setTimeout(() => {
        signal?.removeEventListener("abort", onAbort);
        resolve();
    }, ms);
    const onAbort = () => {
        clearTimeout(timer);
        reject(signal?.reason);
    };
    signal?.addEventListener("abort", onAbort, { once: true });
});
/** A client of `lap serve`. */
export class Client {
    settings;
    agents;
    sessions;
    files;
    messages;
    ports;
    snapshots;
    /** @internal */
    transport;
    constructor(options = {}) {
        this.settings = options.settings ?? resolve({ url: options.url, masterKey: options.masterKey });
        this.transport = new Transport(this.settings, options.timeoutMs ?? 30_000);
        this.agents = new Agents(this);
        this.sessions = new Sessions(this);
        this.files = new Files(this);
        this.messages = new Messages(this);
        this.ports = new Ports(this);
        this.snapshots = new Snapshots(this);
    }
    /** The server's URL. */
    get url() {
        return this.settings.url;
    }
    /** The longest silence of a plain call, in milliseconds. */
    get timeoutMs() {
        return this.transport.timeoutMs;
    }
    /** `GET /api/v1/health` (needs no key). */
    health() {
        return this.call(ROUTES.health);
    }
    /** Closes the kept-alive connections (idle ones never keep the process alive anyway). */
    close() {
        this.transport.close();
    }
    /** @internal One call of `route`, its JSON answer decoded. */
    call(route, options = {}) {
        return this.transport.call(this.request(route, options));
    }
    /** @internal One call of `route`, its answer left to stream. */
    open(route, options = {}) {
        return this.transport.open(this.request(route, options));
    }
    request(route, options) {
        const headers = { ...options.headers };
        for (const name of Object.keys(headers)) {
            if (!route.params.includes(name) && name !== "Accept" && name !== "Content-Type") {
                throw new Error(`lap-sdk: ${route.method} ${route.path} does not take the header \`${name}\``);
            }
        }
        return {
            method: route.method,
            path: fill(route, options.segments),
            query: checkedQuery(route, options.query),
            json: options.json,
            body: options.body,
            headers,
            idleTimeoutMs: options.timeoutMs,
            signal: options.signal,
        };
    }
}
/** A JSON body without the fields left `undefined`. */
function defined(fields) {
    return Object.fromEntries(Object.entries(fields).filter(([, v]) => v !== undefined));
}
/** `/agents`: what a session runs (harness, repo, credentials, egress policy). */
export class Agents {
    c;
    constructor(c) {
        this.c = c;
    }
    list(options = {}) {
        return this.c.call(ROUTES.listAgents, { query: { ...options } });
    }
    /** Creates an agent (`harness_id` defaults to `opencode` on the server, as in LAP). */
    create(name, fields = {}) {
        return this.c.call(ROUTES.createAgent, { json: defined({ ...fields, name }) });
    }
    /** An agent by UUID or name. */
    get(agent) {
        return this.c.call(ROUTES.getAgent, { segments: { id: agent } });
    }
    /** Changes an agent; a field left out stays as it is (`""` clears a text field). */
    update(agent, fields) {
        return this.c.call(ROUTES.updateAgent, { segments: { id: agent }, json: defined(fields) });
    }
    async delete(agent) {
        await this.c.call(ROUTES.deleteAgent, { segments: { id: agent } });
    }
}
/** `/sessions`: running (or resting) sandboxes of an agent. */
export class Sessions {
    c;
    constructor(c) {
        this.c = c;
    }
    /** Starts a session of `agent` (UUID or name); it is `creating`: see `waitReady`. */
    create(agent, options = {}) {
        return this.c.call(ROUTES.createSession, { segments: { id: agent }, json: defined({ title: options.title }) });
    }
    get(session) {
        return this.c.call(ROUTES.getSession, { segments: { id: session } });
    }
    /** Sessions, newest first; only `agent`'s when given (UUID or name). */
    list(options = {}) {
        return this.c.call(ROUTES.listSessions, { query: { agent_id: options.agent, limit: options.limit } });
    }
    /** Stops a session: its sandbox is deleted and it becomes `dead`. */
    delete(session) {
        return this.c.call(ROUTES.deleteSession, { segments: { id: session } });
    }
    /**
     * Polls until the session is `ready`. Rejects with `SessionFailedError` when it ends `failed`
     * or `dead`, with `LapTimeoutError` when `timeoutMs` (2 minutes by default) passes first.
     */
    async waitReady(session, options = {}) {
        const timeoutMs = options.timeoutMs ?? READY_TIMEOUT_MS;
        const deadline = Date.now() + timeoutMs;
        for (;;) {
            const shown = await this.get(session);
            if (shown.status === "ready")
                return shown;
            if (isTerminal(shown.status)) {
                throw new SessionFailedError(`session ${session} is ${shown.status}: ${shown.failure_reason || "no reason given"}`, shown, "`lap sessions show` and the server's log say more; `restart` gives it a fresh sandbox");
            }
            if (Date.now() >= deadline) {
                throw new LapTimeoutError(`session ${session} is still ${shown.status} after ${timeoutMs} ms`, {
                    hint: "raise `timeoutMs`, or see what it waits for in `phase` (`lap sessions show`)",
                });
            }
            await sleep(Math.min(options.intervalMs ?? READY_POLL_MS, Math.max(0, deadline - Date.now())), options.signal);
        }
    }
    /** A fresh sandbox for a `ready`, `dead` or `failed` session; resolves once it settled. */
    restart(session) {
        return this.action(ROUTES.restart, session, undefined, SLOW_CALL_MS);
    }
    /** Freezes the session's processes (memory kept); an exec, message or attach resumes it. */
    pause(session) {
        return this.action(ROUTES.pause, session);
    }
    /** Brings a `paused` or `hibernated` session back to `ready`. */
    resume(session) {
        return this.action(ROUTES.resume, session, undefined, SLOW_CALL_MS);
    }
    /** Stops the sandbox and keeps only the workspace. */
    hibernate(session) {
        return this.action(ROUTES.hibernate, session);
    }
    /** A new session of the same agent on a copy of this one's workspace (`creating`). */
    fork(session, options = {}) {
        return this.action(ROUTES.fork, session, defined({ title: options.title }), SLOW_CALL_MS);
    }
    action(route, session, json, atLeastMs = 0) {
        return this.c.call(route, { segments: { id: session }, json, timeoutMs: Math.max(this.c.timeoutMs, atLeastMs) });
    }
    workspace(session) {
        return this.c.call(ROUTES.workspace, { segments: { id: session } });
    }
    /** Names of the credentials the sandbox holds stubs for. */
    vaultKeys(session) {
        return this.c.call(ROUTES.vaultKeys, { segments: { id: session } });
    }
    /** The vault's log of the session's requests, oldest first (after record `after`). */
    egress(session, options = {}) {
        return this.c.call(ROUTES.interceptions, { segments: { id: session }, query: { after: options.after, limit: options.limit } });
    }
    /**
     * The egress log as it grows: every record, asking again every `intervalMs`, until the session
     * has ended and nothing is left, or `timeoutMs` passes (none by default), or `signal` aborts.
     */
    async *followEgress(session, options = {}) {
        let after = options.after ?? 0;
        const deadline = options.timeoutMs === undefined ? undefined : Date.now() + options.timeoutMs;
        for (;;) {
            const records = await this.egress(session, { after });
            yield* records;
            const last = records[records.length - 1];
            if (last)
                after = last.id ?? after;
            else if (isTerminal((await this.get(session)).status))
                return;
            if (deadline !== undefined && Date.now() >= deadline)
                return;
            await sleep(options.intervalMs ?? FOLLOW_INTERVAL_MS, options.signal);
        }
    }
    /**
     * Runs `command` (a list of words: `["sh", "-c", script]` for a shell line) in the sandbox;
     * yields its output as the API streams it, then its exit (or an error event). Leaving the
     * loop early closes the stream, and the command is killed.
     */
    async *execStream(session, command, options = {}) {
        if (!Array.isArray(command))
            throw new TypeError('`command` is a list of words: use ["sh", "-c", script] for a shell line');
        const stdin = options.stdin === undefined ? undefined : Buffer.from(options.stdin).toString("base64");
        const response = await this.c.open(ROUTES.exec, {
            segments: { id: session },
            json: defined({ command, stdin, cwd: options.cwd }),
            timeoutMs: options.timeoutMs === undefined ? EXEC_TIMEOUT_MS : options.timeoutMs,
            signal: options.signal,
        });
        try {
            for await (const line of response.lines()) {
                const event = execEvent(line);
                if (event)
                    yield event;
            }
        }
        finally {
            response.close();
        }
    }
    /** Runs `command` to its end: its stdout, stderr and exit code. Rejects when it could not run. */
    async exec(session, command, options = {}) {
        const out = [];
        const err = [];
        for await (const event of this.execStream(session, command, options)) {
            if (event.type === "exit")
                return new ExecResult(event.exitCode, Buffer.concat(out), Buffer.concat(err));
            if (event.type === "error")
                throw new LapError(`exec in session ${session} failed: ${event.message}`);
            (event.type === "stdout" ? out : err).push(event.data);
        }
        throw new LapError(`the exec stream of session ${session} ended without an exit code`, {
            hint: "the server or the sandbox went away mid-way; `lap sessions show` says which",
        });
    }
}
/** One NDJSON line of the exec answer; `undefined` for a blank line or a kind this SDK does not know. */
function execEvent(line) {
    if (!line.trim())
        return undefined;
    const data = JSON.parse(line);
    if ("stdout" in data)
        return { type: "stdout", data: Buffer.from(data.stdout, "base64") };
    if ("stderr" in data)
        return { type: "stderr", data: Buffer.from(data.stderr, "base64") };
    if ("exit_code" in data)
        return { type: "exit", exitCode: data.exit_code };
    if ("error" in data)
        return { type: "error", message: String(data.error) };
    return undefined;
}
/** Named copies of a session's workspace. */
export class Snapshots {
    c;
    constructor(c) {
        this.c = c;
    }
    create(session, options = {}) {
        return this.c.call(ROUTES.createSnapshot, {
            segments: { id: session },
            json: defined({ name: options.name }),
            timeoutMs: Math.max(this.c.timeoutMs, COPY_CALL_MS),
        });
    }
    list() {
        return this.c.call(ROUTES.listSnapshots);
    }
    delete(name) {
        return this.c.call(ROUTES.deleteSnapshot, { segments: { name } });
    }
    /** A new session of `agent` on a copy of the snapshot (`creating`). */
    startSession(name, agent, options = {}) {
        return this.c.call(ROUTES.sessionFromSnapshot, {
            segments: { name },
            json: defined({ agent, title: options.title }),
            timeoutMs: Math.max(this.c.timeoutMs, COPY_CALL_MS),
        });
    }
}
/** `Range` for `offset`/`length`. */
export function rangeHeader(offset, length) {
    if (offset === undefined && length === undefined)
        return {};
    if (offset !== undefined && offset < 0) {
        if (length !== undefined)
            throw new RangeError("`length` cannot go with a negative `offset` (the file's last bytes)");
        return { Range: `bytes=${offset}` };
    }
    const start = offset ?? 0;
    if (length === undefined)
        return { Range: `bytes=${start}-` };
    if (length <= 0)
        throw new RangeError("`length` must be positive");
    return { Range: `bytes=${start}-${start + length - 1}` };
}
/**
 * Files in a ready session's sandbox: paths absolute under `/work` or `/tmp`, or relative to the
 * sandbox user's home (`/work/home`).
 */
export class Files {
    c;
    constructor(c) {
        this.c = c;
    }
    list(session, path) {
        return this.c.call(ROUTES.listFiles, { segments: { id: session }, query: { path } });
    }
    stat(session, path) {
        return this.c.call(ROUTES.statFile, { segments: { id: session }, query: { path } });
    }
    /** The file's bytes (or a range of them, or a directory's tar with `archive`). */
    async read(session, path, options = {}) {
        const parts = [];
        for await (const chunk of this.readStream(session, path, options))
            parts.push(chunk);
        return Buffer.concat(parts);
    }
    async readText(session, path, options = {}) {
        return (await this.read(session, path, options)).toString("utf8");
    }
    /** `read`, streamed in chunks (constant memory whatever the size). */
    async *readStream(session, path, options = {}) {
        const response = await this.c.open(ROUTES.readFile, {
            segments: { id: session },
            query: { path, archive: options.archive ? "true" : undefined },
            headers: rangeHeader(options.offset, options.length),
        });
        yield* response.chunks();
    }
    /** Streams the file (or with `archive` a directory's tar) into `dest`, a path or a stream; resolves to the bytes. */
    async download(session, path, dest, options = {}) {
        const out = typeof dest === "string" ? createWriteStream(dest) : dest;
        let total = 0;
        try {
            for await (const chunk of this.readStream(session, path, options)) {
                total += chunk.length;
                // `once` rejects when the stream fails instead of draining.
                if (!out.write(chunk))
                    await once(out, "drain");
            }
        }
        finally {
            if (typeof dest === "string") {
                out.end();
                await finished(out);
            }
        }
        return total;
    }
    /**
     * Writes `data` (text as UTF-8, bytes, or chunks, sync or async, streamed) to `path`; `mode` as
     * `0o644` or `"0644"`. With `archive`, unpacks a tar stream into the directory `path`.
     */
    write(session, path, data, options = {}) {
        const mode = typeof options.mode === "number" ? options.mode.toString(8).padStart(4, "0") : options.mode;
        return this.c.call(ROUTES.writeFile, {
            segments: { id: session },
            query: { path, archive: options.archive ? "true" : undefined, mode },
            body: data,
            headers: { "Content-Type": "application/octet-stream" },
            timeoutMs: Math.max(this.c.timeoutMs, COPY_CALL_MS),
        });
    }
    delete(session, path, options = {}) {
        return this.c.call(ROUTES.deleteFile, {
            segments: { id: session },
            query: { path, recursive: options.recursive ? "true" : "false" },
        });
    }
}
/**
 * Messages to API harnesses (claude-agent-sdk, codex-app-server, opencode); a terminal harness
 * answers a `TuiReply` (connect to its terminal instead).
 */
export class Messages {
    c;
    constructor(c) {
        this.c = c;
    }
    /** Sends `text` and waits for the reply (up to `timeoutMs`, 31 minutes by default). */
    send(session, text, options = {}) {
        return this.c.call(ROUTES.sendMessage, {
            segments: { id: session },
            json: { text },
            timeoutMs: options.timeoutMs ?? MESSAGE_TIMEOUT_MS,
            signal: options.signal,
        });
    }
    /**
     * Sends `text` and yields the turn as typed frames: `ready`, `harness_event`s, then `done`
     * (with the reply) or `error`, where it ends.
     */
    async *stream(session, text, options = {}) {
        const response = await this.c.open(ROUTES.messageStream, {
            segments: { id: session },
            query: { format: options.format },
            json: { text },
            headers: { Accept: "text/event-stream" },
            timeoutMs: options.idleTimeoutMs ?? SSE_IDLE_TIMEOUT_MS,
            signal: options.signal,
        });
        for await (const frame of frames(response)) {
            yield frame;
            if (frame.type === "done" || frame.type === "error")
                return;
        }
    }
    history(session) {
        return this.c.call(ROUTES.history, { segments: { id: session } });
    }
    /**
     * The session's event log as it happens (those after seq `after` first). It does not end by
     * itself: leave the loop (or abort `signal`) when you have what you need.
     */
    async *events(session, options = {}) {
        const response = await this.c.open(ROUTES.events, {
            segments: { id: session },
            query: { after: options.after, format: options.format },
            headers: { Accept: "text/event-stream" },
            timeoutMs: options.idleTimeoutMs ?? SSE_IDLE_TIMEOUT_MS,
            signal: options.signal,
        });
        yield* frames(response);
    }
    abort(session) {
        return this.c.call(ROUTES.abort, { segments: { id: session } });
    }
}
/** The `StreamFrame`s of an SSE answer (frames of a type this SDK does not know are passed on too). */
async function* frames(response) {
    try {
        for await (const data of sseData(response.lines())) {
            if (typeof data === "object" && data !== null && typeof data.type === "string") {
                yield data;
            }
        }
    }
    finally {
        response.close();
    }
}
/** What the sandbox listens on, and ways in: the proxy path and signed preview URLs. */
export class Ports {
    c;
    constructor(c) {
        this.c = c;
    }
    list(session) {
        return this.c.call(ROUTES.listPorts, { segments: { id: session } });
    }
    /** A signed, expiring URL that opens the port in a browser without the master key. */
    previewUrl(session, port, options = {}) {
        return this.c.call(ROUTES.createPreview, {
            segments: { id: session },
            json: defined({ port, ttl_seconds: options.ttlSeconds }),
        });
    }
    revokePreviews(session, options = {}) {
        return this.c.call(ROUTES.revokePreviews, { segments: { id: session }, query: { port: options.port } });
    }
    /** The proxy URL of `path` on the sandbox's `127.0.0.1:port` (takes the master key). */
    url(session, port, path = "") {
        return this.c.transport.url(this.path(session, port, path)).toString();
    }
    path(session, port, path) {
        if (!Number.isInteger(port) || port < 1 || port > 65535)
            throw new RangeError(`\`${port}\` is not a TCP port`);
        return fill(ROUTES.portProxy, { id: session, port, path });
    }
    /** An HTTP request to the sandbox's server through the proxy path; the answer as it is. */
    async request(session, port, options = {}) {
        const answer = await this.c.transport.raw({
            method: options.method ?? "GET",
            path: this.path(session, port, options.path ?? ""),
            headers: options.headers,
            body: options.body,
            idleTimeoutMs: options.timeoutMs,
        });
        return {
            status: answer.status,
            headers: answer.headers,
            body: answer.body,
            get text() {
                return answer.body.toString("utf8");
            },
        };
    }
}
