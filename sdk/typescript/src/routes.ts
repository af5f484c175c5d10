/**
 * Every route this SDK calls, as the OpenAPI document spells it, with the query parameters (and
 * request headers) it may send there. The client builds each request from this table only
 * (`request` refuses a parameter the table does not list), so tests/openapi.test.ts, which checks
 * the table against a live server's document, checks what the SDK really sends.
 */

import type { Query } from "./http.js";

export const PREFIX = "/api/v1/managed_agents";

export interface Route {
  readonly method: "GET" | "POST" | "PUT" | "PATCH" | "DELETE";
  readonly path: string;
  /** The query parameters and headers it may send. */
  readonly params: readonly string[];
}

function route(method: Route["method"], path: string, params: readonly string[] = []): Route {
  return { method, path, params };
}

const S = `${PREFIX}/sessions/{id}`;

export const ROUTES = {
  health: route("GET", "/api/v1/health"),
  listAgents: route("GET", `${PREFIX}/agents`, ["limit", "offset", "search"]),
  createAgent: route("POST", `${PREFIX}/agents`),
  getAgent: route("GET", `${PREFIX}/agents/{id}`),
  updateAgent: route("PATCH", `${PREFIX}/agents/{id}`),
  deleteAgent: route("DELETE", `${PREFIX}/agents/{id}`),
  createSession: route("POST", `${PREFIX}/agents/{id}/session`),
  listSessions: route("GET", `${PREFIX}/sessions`, ["agent_id", "limit"]),
  getSession: route("GET", S),
  deleteSession: route("DELETE", S),
  restart: route("POST", `${S}/restart`),
  pause: route("POST", `${S}/pause`),
  resume: route("POST", `${S}/resume`),
  hibernate: route("POST", `${S}/hibernate`),
  fork: route("POST", `${S}/fork`),
  workspace: route("GET", `${S}/workspace`),
  vaultKeys: route("GET", `${S}/vault-keys`),
  interceptions: route("GET", `${S}/interceptions`, ["after", "limit"]),
  exec: route("POST", `${S}/exec`),
  createSnapshot: route("POST", `${S}/snapshots`),
  listSnapshots: route("GET", `${PREFIX}/snapshots`),
  deleteSnapshot: route("DELETE", `${PREFIX}/snapshots/{name}`),
  sessionFromSnapshot: route("POST", `${PREFIX}/snapshots/{name}/session`),
  listFiles: route("GET", `${S}/files`, ["path"]),
  deleteFile: route("DELETE", `${S}/files`, ["path", "recursive"]),
  statFile: route("GET", `${S}/files/stat`, ["path"]),
  readFile: route("GET", `${S}/files/content`, ["path", "archive", "Range"]),
  writeFile: route("PUT", `${S}/files/content`, ["path", "archive", "mode"]),
  sendMessage: route("POST", `${S}/message`),
  messageStream: route("POST", `${S}/message_stream`, ["format"]),
  history: route("GET", `${S}/messages`),
  events: route("GET", `${S}/events`, ["after", "format"]),
  abort: route("POST", `${S}/abort`),
  listPorts: route("GET", `${S}/ports`),
  createPreview: route("POST", `${S}/preview_urls`),
  revokePreviews: route("DELETE", `${S}/preview_urls`, ["port"]),
  portProxy: route("GET", `${S}/ports/{port}/{path}`),
} as const satisfies Record<string, Route>;

/** The path of `route` with its `{name}` segments filled in, each escaped; `{path}` is the
 * rest of a URL, whose slashes stay. */
export function fill(route: Route, segments: Record<string, string | number> = {}): string {
  return route.path.replace(/\{([a-z_]+)\}/g, (_, name: string) => {
    const value = segments[name];
    if (value === undefined) throw new Error(`lap-sdk: no value for {${name}} of ${route.path}`);
    if (name === "path") return String(value).replace(/^\/+/, "").split("/").map(encodeURIComponent).join("/");
    return encodeURIComponent(String(value));
  });
}

/** `query`, checked against what `route` may send (a parameter it does not list is an SDK bug). */
export function checkedQuery(route: Route, query: Query | undefined): Query | undefined {
  for (const name of Object.keys(query ?? {})) {
    if (!route.params.includes(name)) throw new Error(`lap-sdk: ${route.method} ${route.path} does not take \`${name}\``);
  }
  return query;
}
