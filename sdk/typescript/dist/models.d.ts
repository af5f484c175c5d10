/** `POST /sessions/{id}/abort`. */
export interface AbortReply {
    /** Whether a turn was running and is being interrupted. */
    aborted: boolean;
    ok: boolean;
}
export interface AdminStats {
    /** Sessions by status. */
    sessions: {
        [key: string]: number;
    };
    warm_pool: WarmPoolStats;
}
/** `ApiAgent`. */
export interface Agent {
    allow_out: string[];
    branch: string;
    /** A custom agent command instead of the harness's own. */
    command?: string | null;
    created_at: string;
    credentials: CredentialInfo[];
    deny_out: string[];
    /** Plain, non-secret environment variables. */
    env: {
        [key: string]: string;
    };
    /** LAP's view of the bindings: credential name → hosts. */
    env_var_hosts: {
        [key: string]: string[];
    };
    harness_id: string;
    /** Only in list responses. */
    has_active_session?: boolean | null;
    id: string;
    /** Resource limits of the agent's sandboxes over the server's defaults (absent: none set). */
    limits?: AgentLimits;
    model?: string | null;
    name: string;
    /**
     * The user who made it with an API key; absent: the team's (made with the master key or the
     * web UI).
     */
    owner?: string | null;
    prompt?: string | null;
    repo_url?: string | null;
    /** Only in list responses. */
    session_count?: number | null;
    supports_tui: boolean;
    updated_at: string;
    /**
     * Named directories of the agent kept on the server and mounted into each of its sessions'
     * sandboxes (absent: none).
     */
    volumes?: AgentVolume[];
}
/**
 * Resource limits of an agent's sandboxes. A field left out takes the server's default (memory
 * 4096 MiB, 1024 processes and threads, 2 CPUs).
 */
export interface AgentLimits {
    /** CPUs, fractions allowed (0.01 to 1024). */
    cpus?: number | null;
    /** Memory, in MiB (16 to 1048576). */
    memory_mb?: number | null;
    /** Processes and threads (16 to 1000000). */
    pids?: number | null;
}
/** `GET /agents` response. */
export interface AgentList {
    data: Agent[];
    limit: number;
    offset: number;
    total: number;
}
/**
 * A volume of an agent: a directory kept on the server under its name, mounted at `path` in every
 * sandbox of the agent's sessions, so what one session writes there the next finds (a package
 * cache, say). Sessions running at once share it.
 */
export interface AgentVolume {
    /** 1-32 characters of a-z, 0-9, `-` and `_`, starting with a letter or digit; unique in the agent. */
    name: string;
    /**
     * Where it is mounted: an absolute path under `/work`, such as `/work/home/.cache` — not
     * `/work` itself, `/work/home` itself, nor `/work/repo` or anything in it; no `.` or `..`.
     */
    path: string;
    /** Bytes it holds on the server (only in `GET /agents/{id}`; ignored in a request body). */
    size_bytes?: number | null;
}
/** An API key as listed: never the key itself. */
export interface ApiKey {
    created_at: string;
    /** When it stops working (RFC 3339), if ever. */
    expires_at?: string | null;
    id: string;
    /** The key's first characters (`lap_key_` and 4 more), to tell keys apart. */
    prefix: string;
    /** When it was revoked, if it was. */
    revoked_at?: string | null;
    role: KeyRole;
    /** Its user's name. */
    user: string;
}
/**
 * One control-plane action, as the audit log keeps it: who, when, from where, what, on which
 * object, and how it ended. Never a request body, so never a credential value.
 */
export interface AuditEntry {
    /**
     * Method and route, e.g. `POST /api/v1/managed_agents/agents/{id}/session`, or `sign-in`,
     * `attach`.
     */
    action: string;
    /** `master` (the master key or the web UI) or a user's name. */
    actor: string;
    /** RFC 3339, UTC. */
    at: string;
    /** Increasing: `?after=` the last one seen gives what came since. */
    id: number;
    /** The API key the actor used, if any. */
    key_id?: string | null;
    /** The peer address the request came from, when known. */
    peer?: string | null;
    /** The answer's HTTP status (101 for a terminal opened). */
    status: number;
    /** The route's parameters, e.g. `id=3f0c…`, when it has any. */
    target?: string | null;
}
/** `GET /api/v1/admin/audit`. */
export interface AuditLog {
    /** Oldest first. */
    entries: AuditEntry[];
}
export interface CacheTokens {
    read: number;
    write: number;
}
export interface ClaimSample {
    agent_name: string;
    /** Whether the sandbox was made for this agent (repo already cloned). */
    agent_warm: boolean;
    at: string;
    harness_id: string;
    /** From the create request to the session being ready, in milliseconds. */
    latency_ms: number;
    session_id: string;
}
/** `POST /agents` body. */
export interface CreateAgent {
    allow_out?: string[];
    /** Defaults to `main`. */
    branch?: string | null;
    command?: string | null;
    credentials?: CredentialInput[];
    deny_out?: string[];
    env?: {
        [key: string]: string;
    };
    /** LAP's form of bindings: credential name → hosts. */
    env_var_hosts?: {
        [key: string]: string[];
    };
    /**
     * Credential name → injection points (`authorization`, `header:NAME`, `query:NAME`, `body`).
     * A credential left out gets its preset's (`authorization` for a name no preset knows).
     */
    env_var_inject?: {
        [key: string]: string[];
    };
    /** Credential name → request rules (`METHODS /glob`, e.g. `GET,POST /repos/acme/**`). */
    env_var_rules?: {
        [key: string]: string[];
    };
    /** LAP's form of credentials: name → real value (vaulted, never returned). */
    env_vars?: {
        [key: string]: string;
    };
    /** Defaults to `opencode`, as in LAP. */
    harness_id?: "claude-code" | "codex" | "codex-app-server" | "gemini" | "hermes" | "opencode" | "claude-agent-sdk" | "shell" | null;
    limits?: AgentLimits;
    model?: string | null;
    /** 1-63 characters of a-z, 0-9 and `-`, starting with a letter or digit; unique, and not a UUID. */
    name: string;
    prompt?: string | null;
    repo_url?: string | null;
    /** The agent's volumes (see `AgentVolume`). */
    volumes?: AgentVolume[];
}
/** `POST …/sessions/{id}/preview_urls`. */
export interface CreatePreviewUrl {
    /** The sandbox port the URL opens (its `127.0.0.1:PORT`). */
    port: number;
    /** Seconds until the URL stops working (default 3600, at most 604800). */
    ttl_seconds?: number | null;
}
/** `POST /agents/{id}/session` body; an empty body means `{}`. */
export interface CreateSession {
    title?: string | null;
}
/** `POST /sessions/{id}/snapshots` body; an empty body means `{}`. */
export interface CreateSnapshot {
    /** Unique name, `[A-Za-z0-9._-]`, at most 64 characters, not starting with `.` (default: generated). */
    name?: string | null;
}
/** The answer to `POST /api/v1/admin/keys`: the key itself, this once. */
export type CreatedApiKey = ApiKey & {
    /** The key: send it as `Authorization: Bearer <key>`. It is not stored and not shown again. */
    key: string;
};
/** A credential as the API shows it: never the value. */
export interface CredentialInfo {
    /** A short keyed hash of the value, to tell two values apart without revealing either. */
    fingerprint: string;
    /** Host patterns the credential is bound to: `host`, `*.suffix`, optionally `:port`. */
    hosts: string[];
    /**
     * Where in a request to a bound host the vault swaps its stub: `authorization`, `header:NAME`,
     * `query:NAME`, `body`. A stub anywhere else is refused.
     */
    inject?: string[];
    name: string;
    /** Requests it may be swapped into, `METHODS /glob` (empty: any). */
    rules?: string[];
}
/** A credential as a client sends it. The value is write-only. */
export interface CredentialInput {
    hosts?: string[];
    /**
     * Injection points (`authorization`, `header:NAME`, `query:NAME`, `body`); left out: the
     * preset's for a new credential, the stored ones for an existing one.
     */
    inject?: string[] | null;
    /** An environment variable name. */
    name: string;
    /**
     * Request rules (`METHODS /glob`); left out: none for a new credential, the stored ones for an
     * existing one.
     */
    rules?: string[] | null;
    /** The real value: at most 16384 bytes, no control characters. */
    value: string;
}
/** The answer to a delete. */
export interface Deleted {
    /** Files, directories and links removed. */
    entries: number;
    path: string;
}
/** `DELETE /sessions/{id}` response, LAP's shape. */
export interface DeletedSession {
    id: string;
    /** `deleted` when this call stopped it, else the status it already had. */
    status: string;
}
export type DeltaField = "text" | "reasoning" | "tool_input";
/** The error envelope of every non-2xx response. */
export interface ErrorBody {
    error: string;
    hint?: string | null;
}
export interface ErrorData {
    message: string;
}
/** One event of a session's conversation, in our schema. */
export type Event = EventKind & {
    /** Increases by one per event of the session, across restarts of the tool and of `lap serve`. */
    seq: number;
    session_id: string;
    /** RFC 3339, UTC. */
    time: string;
    /** The turn the event belongs to: the id of its assistant message. */
    turn_id?: string | null;
};
/** What happened. Serialised as `"type"` plus `"data"`. */
export type EventKind = {
    /** The tool is up and named its own conversation id (e.g. Claude's `session_id`). */
    data: {
        cwd?: string | null;
        model?: string | null;
        native_session_id: string;
    };
    type: "session.started";
} | {
    /** A user message was handed to the tool. */
    data: {
        input: string;
        message_id: string;
    };
    type: "turn.started";
} | {
    /** A part of the reply begins (empty text, or a tool call with its input so far). */
    data: {
        item: Part;
    };
    type: "item.started";
} | {
    /** More of a part: appended to its `text` (or to the tool's input JSON, `tool_input`). */
    data: {
        delta: string;
        field: DeltaField;
        item_id: string;
    };
    type: "item.delta";
} | {
    /** A part in its final form; it replaces whatever the deltas built. */
    data: {
        item: Part;
    };
    type: "item.completed";
} | {
    /** The tool is retrying a failed model request. */
    data: {
        attempt?: number | null;
        delay_ms?: number | null;
        http_status?: number | null;
        status: string;
    };
    type: "turn.status";
} | {
    /** The turn is over: exactly one per `turn.started`. */
    data: {
        cost_usd?: number | null;
        error?: TurnError | null;
        status: TurnOutcome;
        usage?: Tokens | null;
    };
    type: "turn.completed";
} | {
    /**
     * The tool's process ended (it is started again for the next message, resuming the
     * conversation).
     */
    data: {
        exit_code?: number | null;
        reason: string;
        stderr_tail?: string | null;
    };
    type: "session.ended";
};
/** `POST /sessions/{id}/exec` body: a command to run in the session's sandbox. */
export interface ExecCommand {
    /** The program and its arguments. */
    command: string[];
    /** Working directory inside the sandbox (default: the sandbox user's home). */
    cwd?: string | null;
    /** All of the command's stdin, base64 (standard alphabet, padded); none means empty stdin. */
    stdin?: string | null;
}
/**
 * One line of the `POST /sessions/{id}/exec` response, which is newline-delimited JSON
 * (`application/x-ndjson`): `stdout` and `stderr` chunks (base64) in the order the command wrote
 * them on each stream, then exactly one `exit_code` (128 + the signal number when it was killed)
 * or one `error` (it could not run, or the sandbox failed mid-way), then the end of the body.
 */
export type ExecEvent = {
    stdout: string;
} | {
    stderr: string;
} | {
    exit_code: number;
} | {
    error: string;
};
/** One file, directory or link inside a sandbox. */
export interface FileEntry {
    /** Permission bits, four octal digits (`"0755"`). */
    mode: string;
    /** Last modification, RFC 3339. */
    modified: string;
    /** The last component of the path (the directory itself: its own name). */
    name: string;
    /** The absolute path inside the sandbox. */
    path: string;
    /** Bytes (of a file; of a link, the length of its target). */
    size: number;
    /** Where a symlink points (as written in the link; never followed out of `/work` or `/tmp`). */
    target?: string | null;
    type: FileKind;
}
/** What a directory entry is (a symlink is reported as itself, not followed). */
export type FileKind = "file" | "directory" | "symlink" | "other";
/** A directory listing (`GET …/files?path=DIR`); listing a file lists that file alone. */
export interface FileList {
    /** Its entries, sorted by name (a file: the file alone). */
    entries: FileEntry[];
    /** The listed path itself. */
    entry: FileEntry;
    /** The path listed (absolute). */
    path: string;
    /** Entries left out past [`MAX_LIST_ENTRIES`]. */
    truncated?: number;
}
/** `GET /api/v1/health` (unauthenticated). */
export interface Health {
    backend: string;
    ok: boolean;
    version: string;
}
/**
 * One request that went through a session's vault (`GET /sessions/{id}/interceptions`): LAP's
 * fields (`timestamp`, `method`, `host`, `path`, `stubs_swapped`, `blocked`) plus ours. Never a real
 * value, nor any part of one (LAP's `real_tail` is deliberately absent).
 */
export interface Interception {
    /** A stub was headed somewhere it is not bound to: someone tried to move a credential. */
    alert: boolean;
    /**
     * The kind of refusal, as `X-Lap-Vault-Blocked` said it: `credential-not-bound`,
     * `credential-not-injectable`, `credential-rule`, `tunnel-limit`, `egress-policy`,
     * `host-mismatch`, `sni-mismatch`, `compressed-body`, `compressed-response` or (the Kubernetes
     * gateway) `proxy-credential`.
     */
    block_kind?: string | null;
    /** Why the vault refused the request, when it did. */
    blocked?: string | null;
    /** Response body bytes, when the upstream announced them. */
    bytes_down?: number | null;
    /** Request body bytes sent upstream, when known when the response began. */
    bytes_up?: number | null;
    /** From the request to the response's head, in milliseconds. */
    duration_ms?: number | null;
    host: string;
    /** Position in the session's log, increasing; 0 until stored. `?after=` takes it. */
    id?: number;
    method: string;
    /** As the sandbox sent it (stubs, never real values), query values redacted. */
    path: string;
    port: number;
    /** Credentials whose real values were scrubbed from the response. */
    scrubbed: string[];
    /** The upstream's status, or the vault's own when it answered itself. */
    status?: number | null;
    /** The stubs that were swapped (LAP's field). */
    stubs_swapped?: string[];
    /** Credentials whose stubs were swapped for real values, by name. */
    swapped: string[];
    timestamp: string;
}
/**
 * `GET /api/v1/health/k8s` (unauthenticated): whether the Kubernetes API server of the `kube`
 * backend answers.
 */
export interface K8sHealth {
    backend: string;
    /** Why it is not reachable. */
    error?: string | null;
    /** The namespace sandboxes are made in (`kube` backend only). */
    namespace?: string | null;
    /** The API server answered. */
    ok: boolean;
    /** The API server's version, e.g. `v1.35.0`, when it answered. */
    server_version?: string | null;
}
/** What a key may do, from least to most. */
export type KeyRole = "viewer" | "member" | "admin";
/** A TCP port the sandbox listens on, reachable at its `127.0.0.1`. */
export interface ListeningPort {
    /** The address it is bound to inside the sandbox (`0.0.0.0`, `127.0.0.1`, `::`, `::1`). */
    address: string;
    port: number;
}
/** The ports a session's sandbox listens on (`GET …/sessions/{id}/ports`). */
export interface ListeningPorts {
    ports: ListeningPort[];
}
/** A message of the conversation: the user's turn or the agent's reply. */
export interface Message {
    info: MessageInfo;
    parts: Part[];
}
/** opencode's error shape: `{name, data:{message}}`. */
export interface MessageError {
    data: ErrorData;
    name: string;
}
export interface MessageInfo {
    /** This turn's cost in US dollars, as the tool reports it. */
    cost?: number | null;
    error?: MessageError | null;
    /** `stop` (completed), `interrupted`, `failed` or `max_turns`. */
    finish?: string | null;
    /** The harness that answered (assistant messages). */
    harness?: string | null;
    /** `msg_…`. */
    id: string;
    modelID?: string | null;
    role: Role;
    /** The lap session's id. */
    sessionID: string;
    time: MessageTime;
    tokens?: Tokens | null;
}
/**
 * What `POST /message` answers, for the OpenAPI document: the agent's reply, or a TUI session's
 * [`TuiReply`].
 */
export type MessageReply = Message | TuiReply;
/** Milliseconds since the Unix epoch. */
export interface MessageTime {
    completed?: number | null;
    created: number;
}
/** `POST /api/v1/admin/keys`. */
export interface NewApiKey {
    /** Seconds until the key is refused; none: it does not expire. */
    expires_in_seconds?: number | null;
    role: KeyRole;
    /** The user the key acts as (by name). */
    user: string;
}
/** `POST /api/v1/admin/users`. */
export interface NewUser {
    /** Letters, digits, `.`, `_`, `-` and `@`; 1 to 64 characters; unique. */
    name: string;
}
/** One part of a message. */
export type Part = {
    id: string;
    text: string;
    type: "text";
} | {
    id: string;
    text: string;
    type: "reasoning";
} | {
    /** The tool call's native id. */
    callID: string;
    id: string;
    state: ToolState;
    /** The tool's name, as the agent calls it (`Bash`, `Read`, …). */
    tool: string;
    type: "tool";
};
/** A signed preview URL. */
export interface PreviewUrl {
    /** RFC 3339. */
    expires_at: string;
    port: number;
    session_id: string;
    /** Open this in a browser: no master key needed, served from the preview origin only. */
    url: string;
}
/**
 * What one user's sessions may hold at once (`PUT /api/v1/admin/users/{name}/quota`); a field left
 * out is not limited. A session that is not over (creating, ready, paused, hibernated) counts as
 * live; one that holds a sandbox (all but hibernated) counts its agent's `limits.memory_mb` and
 * `limits.cpus`, or [`QUOTA_DEFAULT_MEMORY_MB`] and [`QUOTA_DEFAULT_CPUS`] when the agent sets none.
 * A session made over quota is refused with 429, naming the limit.
 */
export interface Quota {
    /** CPUs of their sandboxes together. */
    cpus?: number | null;
    /** Memory of their sandboxes together, in MiB. */
    memory_mb?: number | null;
    /** Live sessions. */
    sessions?: number | null;
}
/** `DELETE …/sessions/{id}/preview_urls[?port=N]`: how many ports' URLs were revoked. */
export interface RevokedPreviewUrls {
    /** The port whose URLs were revoked (`None`: every port of the session). */
    port?: number | null;
    /** RFC 3339: URLs issued up to this moment no longer work. */
    revoked_before: string;
    session_id: string;
}
export type Role = "user" | "assistant";
/** The user's turn: a non-blank `text`, or `parts` of type `text` (each non-blank), or both (joined by a blank line); at most 262144 characters in all. */
export type SendMessage = {
    parts?: {
        text: string;
        type: "text";
    }[] | null;
    text: string;
} | {
    parts: {
        text: string;
        type: "text";
    }[];
    text?: string | null;
};
/** `ApiSession`. */
export interface Session {
    agent_id: string;
    agent_name: string;
    created_at: string;
    failure_reason?: string | null;
    harness_session_id?: string | null;
    id: string;
    idle_timeout_ms?: number | null;
    last_seen_at: string;
    /**
     * The user who made it with an API key; absent: the team's (made with the master key or the
     * web UI).
     */
    owner?: string | null;
    phase?: string | null;
    phase_detail?: string | null;
    sandbox_url?: string | null;
    status: SessionStatus;
    stopped_at?: string | null;
    supports_tui: boolean;
    title_preview?: string | null;
    /** The bearer token that opens this session's terminal and no other. */
    tty_token?: string | null;
    /** Relative path of the terminal WebSocket; set for TUI harnesses once `ready`. */
    tty_url?: string | null;
}
/** `POST /snapshots/{name}/session` body: a new session of `agent` on a copy of the snapshot. */
export interface SessionFromSnapshot {
    /** Agent name or id. */
    agent: string;
    title?: string | null;
}
/**
 * Lifecycle of a session: `creating → ready → dead`, or `creating → failed`; a ready session may be
 * `paused` (its processes frozen, memory kept) or `hibernated` (no sandbox, only its workspace) and
 * comes back to `ready` on a resume.
 */
export type SessionStatus = "creating" | "ready" | "failed" | "dead" | "paused" | "hibernated";
/** A named copy of a session's workspace (`lap snapshots …`). */
export interface Snapshot {
    agent_name: string;
    created_at: string;
    id: string;
    name: string;
    /**
     * The user who took it with an API key; absent: the team's (taken with the master key or the
     * web UI).
     */
    owner?: string | null;
    /**
     * Where the copy is: a host path, or, on the Kubernetes backend,
     * `kube://NAMESPACE/volumesnapshots/NAME`.
     */
    path: string;
    /** The session it was taken from. */
    session_id: string;
    size_bytes: number;
}
/** One frame of `message_stream` and `events` (SSE `data:` lines), LAP's framing. */
export type StreamFrame = {
    type: "ready";
} | {
    event: Event;
    type: "harness_event";
} | {
    message?: Message | null;
    type: "done";
} | {
    message: string;
    type: "error";
};
export interface Tokens {
    cache?: CacheTokens;
    input: number;
    output: number;
    reasoning?: number;
}
export interface ToolState {
    error?: string | null;
    input: {
        [key: string]: unknown;
    };
    output?: string | null;
    status: ToolStatus;
}
export type ToolStatus = "pending" | "running" | "completed" | "error";
/** What a TUI session answers on `POST /message`, as LAP's TUI harnesses do. */
export interface TuiReply {
    text: string;
}
export interface TurnError {
    http_status?: number | null;
    /** `api_error`, `agent_exited`, `aborted`, `max_turns`, … */
    kind: string;
    message: string;
}
export type TurnOutcome = "completed" | "interrupted" | "failed" | "max_turns";
/**
 * `PATCH /agents/{id}` body. A field left out is left alone; an empty string clears an optional
 * text field; `env`, `allow_out` and `deny_out` replace the stored value; credentials are upserted
 * by name and removed with `remove_credentials`.
 */
export interface UpdateAgent {
    allow_out?: string[] | null;
    branch?: string | null;
    command?: string | null;
    credentials?: CredentialInput[];
    deny_out?: string[] | null;
    env?: {
        [key: string]: string;
    } | null;
    env_var_hosts?: {
        [key: string]: string[];
    };
    /** Credential name → injection points; replaces that credential's set. */
    env_var_inject?: {
        [key: string]: string[];
    };
    /** Credential name → request rules; replaces that credential's set (`[]`: any request). */
    env_var_rules?: {
        [key: string]: string[];
    };
    env_vars?: {
        [key: string]: string;
    };
    harness_id?: "claude-code" | "codex" | "codex-app-server" | "gemini" | "hermes" | "opencode" | "claude-agent-sdk" | "shell" | null;
    limits?: AgentLimits | null;
    model?: string | null;
    /**
     * A new name: 1-63 characters of a-z, 0-9 and `-`, starting with a letter or digit; unique, and
     * not a UUID.
     */
    name?: string | null;
    prompt?: string | null;
    remove_credentials?: string[];
    repo_url?: string | null;
    /**
     * Replaces the agent's volumes (`[]`: none); the data of a volume left out is deleted, that of
     * one kept (by name) stays, even when its path changes.
     */
    volumes?: AgentVolume[] | null;
}
/** The answer to an upload. */
export interface Uploaded {
    /** Bytes received (of the file, or of the tar archive). */
    bytes: number;
    /** Files, directories and links written (1 for a plain file). */
    entries: number;
    /** Where it was written (absolute). */
    path: string;
}
/** A user. */
export interface User {
    created_at: string;
    /** A disabled user's keys are refused. */
    disabled: boolean;
    id: string;
    name: string;
    /** What their sessions may hold at once. */
    quota?: Quota;
}
/** `PATCH /api/v1/admin/users/{name}`. */
export interface UserPatch {
    /** `true` refuses every key of the user at once; `false` lets them in again. */
    disabled: boolean;
}
export interface WarmGroup {
    /** `None`: made for any agent of the harness. */
    agent_id?: string | null;
    agent_name?: string | null;
    /** Sandboxes of this group claimed since start. */
    claimed: number;
    harness_id: string;
    ready: number;
    /** The backend ids of its warm sandboxes (warming and ready). */
    sandboxes: string[];
    /** How many the pool plans to keep for this group now. */
    target: number;
    warming: number;
}
export interface WarmPoolStats {
    /** `--warm-pool-size` (`WARM_POOL_SIZE`); 0: the pool is off. */
    configured_size: number;
    /** Per agent (a warm sandbox with the agent's repo cloned) or per harness (any agent of it). */
    groups: WarmGroup[];
    /** Claims since start that found a warm sandbox. */
    hits: number;
    /** `--warm-pool-max-age`, in seconds: older warm sandboxes are recycled. */
    max_age_seconds: number;
    /** Claims since start that found none (a cold start instead). */
    misses: number;
    /** Warm sandboxes ready to be claimed. */
    ready: number;
    /** `--warm-pool-recent-agent-hours` (`WARM_POOL_RECENT_AGENT_HOURS`). */
    recent_agent_hours: number;
    /** The most recent warm claims, newest first. */
    recent_claims: ClaimSample[];
    /** Warm sandboxes being made. */
    warming: number;
}
/**
 * `GET /sessions/{id}/workspace`: where a session's workspace (its `/work`: the repo, the agent's
 * home, the tool's transcripts) lives on the server, and how much it holds. It outlives the
 * session's sandbox and is deleted with the session.
 */
export interface Workspace {
    /** Whether it exists (`false` once deleted with its session). */
    exists: boolean;
    /**
     * Where it lives: the host path of the workspace directory, or, on the Kubernetes backend,
     * `kube://NAMESPACE/persistentvolumeclaims/NAME` (empty once deleted there).
     */
    path: string;
    session_id: string;
    /**
     * Bytes of its files (apparent sizes; shared reflinked extents are counted in full); on the
     * Kubernetes backend, the claim's capacity.
     */
    size_bytes: number;
}
