/**
 * Every route this SDK calls, as the OpenAPI document spells it, with the query parameters (and
 * request headers) it may send there. The client builds each request from this table only
 * (`request` refuses a parameter the table does not list), so tests/openapi.test.ts, which checks
 * the table against a live server's document, checks what the SDK really sends.
 */
import type { Query } from "./http.js";
export declare const PREFIX = "/api/v1/managed_agents";
export interface Route {
    readonly method: "GET" | "POST" | "PUT" | "PATCH" | "DELETE";
    readonly path: string;
    /** The query parameters and headers it may send. */
    readonly params: readonly string[];
}
export declare const ROUTES: {
    readonly health: Route;
    readonly listAgents: Route;
    readonly createAgent: Route;
    readonly getAgent: Route;
    readonly updateAgent: Route;
    readonly deleteAgent: Route;
    readonly createSession: Route;
    readonly listSessions: Route;
    readonly getSession: Route;
    readonly deleteSession: Route;
    readonly restart: Route;
    readonly pause: Route;
    readonly resume: Route;
    readonly hibernate: Route;
    readonly fork: Route;
    readonly workspace: Route;
    readonly vaultKeys: Route;
    readonly interceptions: Route;
    readonly exec: Route;
    readonly createSnapshot: Route;
    readonly listSnapshots: Route;
    readonly deleteSnapshot: Route;
    readonly sessionFromSnapshot: Route;
    readonly listFiles: Route;
    readonly deleteFile: Route;
    readonly statFile: Route;
    readonly readFile: Route;
    readonly writeFile: Route;
    readonly sendMessage: Route;
    readonly messageStream: Route;
    readonly history: Route;
    readonly events: Route;
    readonly abort: Route;
    readonly listPorts: Route;
    readonly createPreview: Route;
    readonly revokePreviews: Route;
    readonly portProxy: Route;
};
/** The path of `route` with its `{name}` segments filled in, each escaped; `{path}` is the
 * rest of a URL, whose slashes stay. */
export declare function fill(route: Route, segments?: Record<string, string | number>): string;
/** `query`, checked against what `route` may send (a parameter it does not list is an SDK bug). */
export declare function checkedQuery(route: Route, query: Query | undefined): Query | undefined;
