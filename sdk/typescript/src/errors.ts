/**
 * Errors. Every failure the API reports is a `LapError` carrying its HTTP status, the API's
 * `error` message and its `hint`; the subclasses name the common statuses and the client's own
 * failures (no server, a wait past its deadline, a session that failed, unreadable settings).
 */

import type { Session } from "./models.js";

/** An error of lap or of this SDK. */
export class LapError extends Error {
  /** The HTTP status of the answer; 0 when there was none (the client's own failure). */
  readonly status: number;
  /** What to do about it, when the API (or the SDK) knows. */
  hint: string | undefined;
  /** The whole decoded error body, when there was one. */
  readonly body: unknown;

  constructor(message: string, options: { status?: number; hint?: string | undefined; body?: unknown; cause?: unknown } = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = new.target.name;
    this.status = options.status ?? 0;
    this.hint = options.hint;
    this.body = options.body;
  }

  /** The HTTP status: lap's error envelope has no code of its own. */
  get code(): number {
    return this.status;
  }

  /** The message, the status and the hint, as the `lap` CLI prints them. */
  override toString(): string {
    let text = `${this.name}: ${this.message}`;
    if (this.status) text += ` (HTTP ${this.status})`;
    if (this.hint) text += `\nhint: ${this.hint}`;
    return text;
  }
}

/** 400: the request was malformed (a typo in a field, a bad value). */
export class BadRequestError extends LapError {}

/** 401: the master key is missing or wrong. */
export class AuthenticationError extends LapError {}

/** 404: no such agent, session, file or route. */
export class NotFoundError extends LapError {}

/** 409: the thing is in the wrong state (a session that is not ready, a name that is taken). */
export class ConflictError extends LapError {}

/** The server could not be reached (nothing listening, TLS failure, connection lost). */
export class LapConnectionError extends LapError {}

/** A wait ran past its deadline (a session not ready in time, a silent stream). */
export class LapTimeoutError extends LapError {}

/** A session being waited for ended `failed` or `dead` instead of becoming ready. */
export class SessionFailedError extends LapError {
  /** The session as it was last seen. */
  readonly session: Session;

  constructor(message: string, session: Session, hint?: string) {
    super(message, { hint });
    this.session = session;
  }
}

/** The client settings cannot be resolved (an unreadable config file, a key in the keyring). */
export class ConfigError extends LapError {}

const BY_STATUS: Record<number, typeof LapError> = {
  400: BadRequestError,
  401: AuthenticationError,
  404: NotFoundError,
  409: ConflictError,
};

/** The error for a non-2xx answer, from lap's `{"error": …, "hint": …}` envelope. */
export function fromResponse(status: number, body: Uint8Array, method: string, url: string): LapError {
  let message = `${method} ${url} answered ${status}`;
  let hint: string | undefined;
  let decoded: unknown;
  const text = Buffer.from(body).toString("utf8");
  try {
    decoded = JSON.parse(text);
  } catch {
    if (text.trim()) message = `${message}: ${text.trim().slice(0, 500)}`;
  }
  if (isEnvelope(decoded)) {
    message = decoded.error;
    hint = typeof decoded.hint === "string" ? decoded.hint : undefined;
  }
  const Kind = BY_STATUS[status] ?? LapError;
  return new Kind(message, { status, hint, body: decoded });
}

function isEnvelope(value: unknown): value is { error: string; hint?: unknown } {
  return typeof value === "object" && value !== null && typeof (value as { error?: unknown }).error === "string";
}
