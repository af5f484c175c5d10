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

import { readFileSync } from "node:fs";
import * as http from "node:http";
import * as https from "node:https";
import { Readable } from "node:stream";
import { rootCertificates } from "node:tls";

import type { Settings } from "./config.js";
import { AuthenticationError, LapConnectionError, LapError, LapTimeoutError, fromResponse } from "./errors.js";

/** The SDK's version, sent as its `User-Agent`. */
export const VERSION = "0.1.0";

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
export class Response {
  constructor(
    readonly status: number,
    readonly headers: http.IncomingHttpHeaders,
    private readonly message: http.IncomingMessage,
    private readonly request: http.ClientRequest,
    private readonly origin: string,
    /** Why the client ended the request (its deadline, or the caller's abort), if it did. */
    private readonly ended: () => unknown,
  ) {}

  /** The body's chunks as they arrive; a broken connection or a silence past the deadline throws. */
  async *chunks(): AsyncGenerator<Buffer, void, undefined> {
    try {
      for await (const chunk of this.message) yield chunk as Buffer;
    } catch (err) {
      throw this.ended() ?? asLapError(err, this.origin);
    } finally {
      this.close();
    }
  }

  /** The body's lines (without their `\n` or `\r\n`), as they arrive. */
  async *lines(): AsyncGenerator<string, void, undefined> {
    let pending: Buffer = Buffer.alloc(0);
    for await (const chunk of this.chunks()) {
      pending = pending.length ? Buffer.concat([pending, chunk]) : chunk;
      let start = 0;
      for (let end = pending.indexOf(10, start); end >= 0; end = pending.indexOf(10, start)) {
        yield stripCr(pending.subarray(start, end).toString("utf8"));
        start = end + 1;
      }
      pending = pending.subarray(start);
    }
    if (pending.length) yield stripCr(pending.toString("utf8"));
  }

  /** The whole body. */
  async bytes(): Promise<Buffer> {
    const parts: Buffer[] = [];
    for await (const chunk of this.chunks()) parts.push(chunk);
    return Buffer.concat(parts);
  }

  /** Stops reading: the connection is closed (the server sees the client go). */
  close(): void {
    if (!this.message.complete) this.request.destroy();
  }
}

function stripCr(line: string): string {
  return line.endsWith("\r") ? line.slice(0, -1) : line;
}

/** A transport error as the `LapError` that says what to do about it. */
function asLapError(err: unknown, url: string): unknown {
  if (err instanceof LapError) return err;
  if (err instanceof Error && err.name === "AbortError") return err; // the caller's own abort
  const message = err instanceof Error ? err.message : String(err);
  return new LapConnectionError(`the connection to lap at ${url} failed: ${message}`, {
    hint: "start it with `lap serve`, or point `LAP_URL` (or the `url` option) at it",
    cause: err,
  });
}

/** What an aborted `signal` rejects with: its reason, else an `AbortError`. */
function abortReason(signal: AbortSignal): unknown {
  if (signal.reason !== undefined) return signal.reason;
  const err = new Error("the operation was aborted");
  err.name = "AbortError";
  return err;
}

/** The CA roots to trust: the system's, plus the CLI's `ca_cert` when set. */
function certificateAuthorities(settings: Settings): string[] | undefined {
  if (!settings.caCert) return undefined;
  try {
    return [...rootCertificates, readFileSync(settings.caCert, "utf8")];
  } catch (err) {
    throw new LapError(`cannot load the CA certificate \`${settings.caCert}\`: ${(err as Error).message}`, {
      hint: "`ca_cert` in the CLI's config.toml must be a PEM file of the server's CA",
      cause: err,
    });
  }
}

export class Transport {
  readonly base: URL;
  private readonly agent: http.Agent;
  private readonly headers: Record<string, string>;

  constructor(
    readonly settings: Settings,
    /** The deadline of a plain call: the longest silence, in milliseconds. */
    readonly timeoutMs: number,
  ) {
    try {
      this.base = new URL(settings.url);
    } catch (err) {
      throw new LapError(`\`${settings.url}\` (from ${settings.urlSource}) is not a URL`, {
        hint: "set `LAP_URL` (or the `url` option) to the server's address, such as http://127.0.0.1:3000",
        cause: err,
      });
    }
    if (this.base.protocol !== "http:" && this.base.protocol !== "https:") {
      throw new LapError(`\`${settings.url}\` (from ${settings.urlSource}) is not an http or https URL`, {
        hint: "lap serve is reached over http:// or https://",
      });
    }
    this.agent =
      this.base.protocol === "https:"
        ? new https.Agent({ keepAlive: true, ca: certificateAuthorities(settings) })
        : new http.Agent({ keepAlive: true });
    this.headers = { "User-Agent": `lap-sdk-typescript/${VERSION}` };
    if (settings.masterKey) this.headers.Authorization = `Bearer ${settings.masterKey}`;
  }

  /** The absolute URL of `path` with `query`. */
  url(path: string, query?: Query): URL {
    const url = new URL(this.base.pathname.replace(/\/$/, "") + path, this.base);
    for (const [key, value] of Object.entries(query ?? {})) {
      if (value !== undefined && value !== null) url.searchParams.append(key, String(value));
    }
    return url;
  }

  /** Sends `request` and waits for the answer's head; a non-2xx answer throws its `LapError`. */
  async open(request: Request): Promise<Response> {
    const response = await this.start(request);
    if (response.status >= 200 && response.status < 300) return response;
    const body = await response.bytes();
    const err = fromResponse(response.status, body, request.method, this.url(request.path, request.query).toString());
    if (err instanceof AuthenticationError && !err.hint) err.hint = "set `LAP_MASTER_KEY`, pass `masterKey`, or `lap login`";
    throw err;
  }

  /** Sends `request` and reads the whole answer, whatever its status. */
  async raw(request: Request): Promise<{ status: number; headers: http.IncomingHttpHeaders; body: Buffer }> {
    const response = await this.start(request);
    return { status: response.status, headers: response.headers, body: await response.bytes() };
  }

  private async start(request: Request): Promise<Response> {
    const url = this.url(request.path, request.query);
    const headers: Record<string, string> = { ...this.headers, ...request.headers };
    let payload: Body | undefined = request.body;
    if (payload === undefined && request.json !== undefined) {
      payload = JSON.stringify(request.json);
      headers["Content-Type"] = "application/json";
    }
    const idle = request.idleTimeoutMs === undefined ? this.timeoutMs : request.idleTimeoutMs;
    const send = this.base.protocol === "https:" ? https.request : http.request;
    const req = send(url, { method: request.method, headers, agent: this.agent, signal: request.signal });
    let ended: LapError | undefined;
    if (idle !== null && idle > 0) {
      req.setTimeout(idle, () => {
        ended = new LapTimeoutError(`no answer from lap at ${this.base.origin} within ${idle} ms (${request.method} ${url.pathname})`, {
          hint: "the server may be busy or the stream silent; retry, or raise the timeout",
        });
        req.destroy(ended);
      });
    }
    const answered = new Promise<http.IncomingMessage>((resolve, reject) => {
      req.once("response", resolve);
      req.once("error", reject);
    });
    const upload = writeBody(req, payload);
    let message: http.IncomingMessage;
    try {
      message = await answered;
    } catch (err) {
      // A body source that failed is the caller's error, as it is.
      throw upload.failed ?? ended ?? asLapError(err, this.base.origin);
    }
    const signal = request.signal;
    const why = () => ended ?? (signal?.aborted ? abortReason(signal) : undefined);
    return new Response(message.statusCode ?? 0, message.headers, message, req, this.base.origin, why);
  }

  /** Sends `request` and decodes its JSON answer (`undefined` for an empty one). */
  async call<T>(request: Request): Promise<T> {
    const response = await this.open(request);
    const body = await response.bytes();
    if (response.status === 204 || body.length === 0) return undefined as T;
    const type = String(response.headers["content-type"] ?? "");
    if (!type.startsWith("application/json")) return body as T;
    try {
      return JSON.parse(body.toString("utf8")) as T;
    } catch (err) {
      throw new LapError(`lap answered ${request.method} ${request.path} with JSON that does not parse: ${(err as Error).message}`, {
        status: response.status,
        hint: "is LAP_URL a lap server? `curl $LAP_URL/api/v1/health` says",
        cause: err,
      });
    }
  }

  /** Closes the kept-alive connections. */
  close(): void {
    this.agent.destroy();
  }
}

/** Writes `payload` into `req` and ends it; a failing source destroys the request, and is kept
 * in `failed` so that the caller sees its own error rather than a broken connection. */
function writeBody(req: http.ClientRequest, payload: Body | undefined): { failed: unknown } {
  const upload: { failed: unknown } = { failed: undefined };
  if (payload === undefined) {
    req.end();
  } else if (typeof payload === "string" || payload instanceof Uint8Array) {
    req.end(payload);
  } else {
    const source = Readable.from(payload, { objectMode: false });
    source.on("error", (err) => {
      upload.failed = err;
      req.destroy(err);
    });
    source.pipe(req);
  }
  return upload;
}
