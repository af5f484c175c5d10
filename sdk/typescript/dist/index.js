/**
 * TypeScript SDK of lap: `Client` for `lap serve`'s REST API, for Node 18 and newer, without
 * runtime dependencies.
 *
 *     import { Client } from "lap-sdk";
 *
 *     const lap = new Client(); // LAP_URL / LAP_MASTER_KEY, else the `lap` CLI's config
 *     const session = await lap.sessions.waitReady((await lap.sessions.create("box")).id);
 *     console.log((await lap.sessions.exec(session.id, ["echo", "hi"])).stdoutText);
 */
export { Agents, Client, EXEC_TIMEOUT_MS, ExecResult, Files, FOLLOW_INTERVAL_MS, MESSAGE_TIMEOUT_MS, Messages, Ports, READY_POLL_MS, READY_TIMEOUT_MS, SSE_IDLE_TIMEOUT_MS, Sessions, Snapshots, isTerminal, isTuiReply, messageText, rangeHeader, } from "./client.js";
export { DEFAULT_URL, Settings, configDir, resolve } from "./config.js";
export { AuthenticationError, BadRequestError, ConfigError, ConflictError, LapConnectionError, LapError, LapTimeoutError, NotFoundError, SessionFailedError, } from "./errors.js";
export { VERSION } from "./http.js";
export { PREFIX, ROUTES } from "./routes.js";
