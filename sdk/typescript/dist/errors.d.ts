/**
 * Errors. Every failure the API reports is a `LapError` carrying its HTTP status, the API's
 * `error` message and its `hint`; the subclasses name the common statuses and the client's own
 * failures (no server, a wait past its deadline, a session that failed, unreadable settings).
 */
import type { Session } from "./models.js";
/** An error of lap or of this SDK. */
export declare class LapError extends Error {
    /** The HTTP status of the answer; 0 when there was none (the client's own failure). */
    readonly status: number;
    /** What to do about it, when the API (or the SDK) knows. */
    hint: string | undefined;
    /** The whole decoded error body, when there was one. */
    readonly body: unknown;
    constructor(message: string, options?: {
        status?: number;
        hint?: string | undefined;
        body?: unknown;
        cause?: unknown;
    });
    /** The HTTP status: lap's error envelope has no code of its own. */
    get code(): number;
    /** The message, the status and the hint, as the `lap` CLI prints them. */
    toString(): string;
}
/** 400: the request was malformed (a typo in a field, a bad value). */
export declare class BadRequestError extends LapError {
}
/** 401: the master key is missing or wrong. */
export declare class AuthenticationError extends LapError {
}
/** 404: no such agent, session, file or route. */
export declare class NotFoundError extends LapError {
}
/** 409: the thing is in the wrong state (a session that is not ready, a name that is taken). */
export declare class ConflictError extends LapError {
}
/** The server could not be reached (nothing listening, TLS failure, connection lost). */
export declare class LapConnectionError extends LapError {
}
/** A wait ran past its deadline (a session not ready in time, a silent stream). */
export declare class LapTimeoutError extends LapError {
}
/** A session being waited for ended `failed` or `dead` instead of becoming ready. */
export declare class SessionFailedError extends LapError {
    /** The session as it was last seen. */
    readonly session: Session;
    constructor(message: string, session: Session, hint?: string);
}
/** The client settings cannot be resolved (an unreadable config file, a key in the keyring). */
export declare class ConfigError extends LapError {
}
/** The error for a non-2xx answer, from lap's `{"error": …, "hint": …}` envelope. */
export declare function fromResponse(status: number, body: Uint8Array, method: string, url: string): LapError;
