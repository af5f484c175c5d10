//! Who may call what: every route of the API with the least [`Role`] that may call it, in one
//! table. `tests/it/teams.rs` fails when a documented route is missing here, and drives each role
//! against every row.
//!
//! A `viewer` reads; a `member` also makes agents, sessions and snapshots and drives them; an
//! `admin` (and the master key, and the web UI's cookie) does everything: users, keys and the admin
//! stats are the admin's. Which of those objects a member may reach is [`super::owners`]'s rule.

use axum::http::Method;

use crate::wire::teams::Role;

/// How a route is let in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone (health, the OpenAPI document, the vault's CA certificate).
    Open,
    /// `/metrics`: from loopback, or with the master key.
    Metrics,
    /// The terminal WebSocket: the session's own `tty_token`, never a key.
    TtyToken,
    /// A key of this role or above, the master key, or the web UI's cookie.
    Role(Role),
}

use Access::{Metrics, Open, TtyToken};
const VIEWER: Access = Access::Role(Role::Viewer);
const MEMBER: Access = Access::Role(Role::Member);
const ADMIN: Access = Access::Role(Role::Admin);

/// Every route: method (`*`: any), path as the OpenAPI document spells it, access.
pub const RULES: &[(&str, &str, Access)] = &[
    ("GET", "/api/v1/health", Open),
    ("GET", "/api/v1/health/k8s", Open),
    ("GET", "/api/v1/openapi.json", Open),
    ("GET", "/api/v1/vault/ca.pem", Open),
    ("GET", "/metrics", Metrics),
    ("GET", "/api/v1/admin/stats", ADMIN),
    ("GET", "/api/v1/admin/users", ADMIN),
    ("POST", "/api/v1/admin/users", ADMIN),
    ("PATCH", "/api/v1/admin/users/{name}", ADMIN),
    ("PUT", "/api/v1/admin/users/{name}/quota", ADMIN),
    ("GET", "/api/v1/admin/keys", ADMIN),
    ("POST", "/api/v1/admin/keys", ADMIN),
    ("DELETE", "/api/v1/admin/keys/{id}", ADMIN),
    ("GET", "/api/v1/admin/audit", ADMIN),
    ("GET", "/api/v1/managed_agents/agents", VIEWER),
    ("POST", "/api/v1/managed_agents/agents", MEMBER),
    ("GET", "/api/v1/managed_agents/agents/{id}", VIEWER),
    ("PATCH", "/api/v1/managed_agents/agents/{id}", MEMBER),
    ("DELETE", "/api/v1/managed_agents/agents/{id}", MEMBER),
    ("POST", "/api/v1/managed_agents/agents/{id}/session", MEMBER),
    ("GET", "/api/v1/managed_agents/sessions", VIEWER),
    ("GET", "/api/v1/managed_agents/sessions/{id}", VIEWER),
    ("DELETE", "/api/v1/managed_agents/sessions/{id}", MEMBER),
    ("POST", "/api/v1/managed_agents/sessions/{id}/abort", MEMBER),
    ("GET", "/api/v1/managed_agents/sessions/{id}/events", VIEWER),
    ("POST", "/api/v1/managed_agents/sessions/{id}/exec", MEMBER),
    ("GET", "/api/v1/managed_agents/sessions/{id}/files", VIEWER),
    ("DELETE", "/api/v1/managed_agents/sessions/{id}/files", MEMBER),
    ("GET", "/api/v1/managed_agents/sessions/{id}/files/content", VIEWER),
    ("PUT", "/api/v1/managed_agents/sessions/{id}/files/content", MEMBER),
    ("GET", "/api/v1/managed_agents/sessions/{id}/files/stat", VIEWER),
    ("POST", "/api/v1/managed_agents/sessions/{id}/fork", MEMBER),
    ("POST", "/api/v1/managed_agents/sessions/{id}/hibernate", MEMBER),
    ("GET", "/api/v1/managed_agents/sessions/{id}/interceptions", VIEWER),
    ("POST", "/api/v1/managed_agents/sessions/{id}/message", MEMBER),
    ("POST", "/api/v1/managed_agents/sessions/{id}/message_stream", MEMBER),
    ("GET", "/api/v1/managed_agents/sessions/{id}/messages", VIEWER),
    (
        "GET",
        "/api/v1/managed_agents/sessions/{id}/opencode/session/{hsid}/message",
        VIEWER,
    ),
    (
        "POST",
        "/api/v1/managed_agents/sessions/{id}/opencode/session/{hsid}/message",
        MEMBER,
    ),
    (
        "POST",
        "/api/v1/managed_agents/sessions/{id}/opencode/session/{hsid}/abort",
        MEMBER,
    ),
    ("POST", "/api/v1/managed_agents/sessions/{id}/pause", MEMBER),
    ("POST", "/api/v1/managed_agents/sessions/{id}/resume", MEMBER),
    ("POST", "/api/v1/managed_agents/sessions/{id}/restart", MEMBER),
    ("GET", "/api/v1/managed_agents/sessions/{id}/ports", VIEWER),
    // A port-forward and the proxy path reach into the sandbox: a member's.
    ("GET", "/api/v1/managed_agents/sessions/{id}/portforward/{port}", MEMBER),
    ("*", "/api/v1/managed_agents/sessions/{id}/ports/{port}/{path}", MEMBER),
    ("POST", "/api/v1/managed_agents/sessions/{id}/preview_urls", MEMBER),
    ("DELETE", "/api/v1/managed_agents/sessions/{id}/preview_urls", MEMBER),
    ("POST", "/api/v1/managed_agents/sessions/{id}/snapshots", MEMBER),
    ("GET", "/api/v1/managed_agents/sessions/{id}/tty", TtyToken),
    // The stubs a session's agent holds (never real values): what a viewer may see.
    ("GET", "/api/v1/managed_agents/sessions/{id}/vault-keys", VIEWER),
    ("GET", "/api/v1/managed_agents/sessions/{id}/workspace", VIEWER),
    ("GET", "/api/v1/managed_agents/snapshots", VIEWER),
    ("DELETE", "/api/v1/managed_agents/snapshots/{name}", MEMBER),
    ("POST", "/api/v1/managed_agents/snapshots/{name}/session", MEMBER),
];

/// The access rule of `method` on the route axum matched (`{*path}` and the proxy path's bare and
/// `/`-ended forms are the document's `{path}`); `None` for a route with no rule (refused).
pub fn access(method: &Method, matched: &str) -> Option<Access> {
    let mut path = matched.replace("{*path}", "{path}");
    if path.ends_with("/ports/{port}") || path.ends_with("/ports/{port}/") {
        path = format!("{}/{{path}}", path.trim_end_matches('/'));
    }
    RULES
        .iter()
        .find(|(m, p, _)| *p == path && (*m == "*" || *m == method.as_str()))
        .map(|(_, _, access)| *access)
}
