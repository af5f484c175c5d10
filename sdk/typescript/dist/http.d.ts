/**
 * The transport: one HTTP(S) request to `lap serve` over `node:http` / `node:https` (no runtime
 * dependency; `fetch` cannot take the CLI's `ca_cert` in Node 18), its answer checked and either
 * decoded whole or handed over as a stream of bytes.
 *
 * What it keeps: every request has a deadline, the longest silence allowed (`idleTimeoutMs`, reset
 * by every byte either way; `null` only where the caller asked for none), after which it fails with
 * `LapTimeoutError`; a non-2xx answer becomes the `LapError` of lap's error envelope; a server that
 * cannot be reached is a `LapConnectionError` naming the URL. A streamed answer is read in
 * constant memory, and closing it (leaving a `for await` early) closes the connection, which is
 * how the server learns to stop (an exec's command is killed).
 */
import * as http from "node:http";
import type { Settings } from "./config.js";
/** The SDK's version, sent as its `User-Agent`. */
export declare const VERSION = "0.1.0";
/** What may be uploaded: text (UTF-8), bytes, or chunks of bytes, sync or async. */
export type Body = string | Uint8Array | Iterable<Uint8Array> | AsyncIterable<Uint8Array>;
/** Query values; `undefined` and `null` leave the parameter out. */
export type Query = Record<string, string | number | boolean | undefined | null>;
export interface Request {
    method: string;
    /** The path under the server's URL, segments already escaped. */
    path: string;
    query?: Query | undefined;
    /** A JSON body (sent with `Content-Type: application/json`). */
    json?: unknown;
    /** A raw body, streamed as it is (takes precedence over `json`). */
    body?: Body | undefined;
    headers?: Record<string, string> | undefined;
    /** The longest silence allowed; `null`: none. */
    idleTimeoutMs?: number | null | undefined;
    signal?: AbortSignal | undefined;
}
/** A 2xx answer whose body has not been read yet. */
export declare class Response {
    readonly status: number;
    readonly headers: http.IncomingHttpHeaders;
    private readonly message;
    private readonly request;
    private readonly origin;
    /** Why the client ended the request (its deadline, or the caller's abort), if it did. */
    private readonly ended;
    constructor(status: number, headers: http.IncomingHttpHeaders, message: http.IncomingMessage, request: http.ClientRequest, origin: string, 
    /** Why the client ended the request (its deadline, or the caller's abort), if it did. */
    ended: () => unknown);
    /** The body's chunks as they arrive; a broken connection or a silence past the deadline throws. */
    chunks(): AsyncGenerator<Buffer, void, undefined>;
    /** The body's lines (without their `\n` or `\r\n`), as they arrive. */
    lines(): AsyncGenerator<string, void, undefined>;
    /** The whole body. */
    bytes(): Promise<Buffer>;
    /** Stops reading: the connection is closed (the server sees the client go). */
    close(): void;
}
export declare class Transport {
    readonly settings: Settings;
    /** The deadline of a plain call: the longest silence, in milliseconds. */
    readonly timeoutMs: number;
    readonly base: URL;
    private readonly agent;
    private readonly headers;
    constructor(settings: Settings, 
    /** The deadline of a plain call: the longest silence, in milliseconds. */
    timeoutMs: number);
    /** The absolute URL of `path` with `query`. */
    url(path: string, query?: Query): URL;
    /** Sends `request` and waits for the answer's head; a non-2xx answer throws its `LapError`. */
    open(request: Request): Promise<Response>;
    /** Sends `request` and reads the whole answer, whatever its status. */
    raw(request: Request): Promise<{
        status: number;
        headers: http.IncomingHttpHeaders;
        body: Buffer;
    }>;
    private start;
    /** Sends `request` and decodes its JSON answer (`undefined` for an empty one). */
    call<T>(request: Request): Promise<T>;
    /** Closes the kept-alive connections. */
    close(): void;
}
