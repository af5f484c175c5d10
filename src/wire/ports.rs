//! The wire contract of a sandbox's ports, shared by `lap serve`, the CLI and the harness protocol.
//!
//! What the sandbox listens on ([`ListeningPort`], read by the harness from `/proc/net/tcp{,6}` of
//! the sandbox's own network namespace), and the preview URLs minted for one session and port
//! ([`CreatePreviewUrl`], [`PreviewUrl`], [`RevokedPreviewUrls`]). Paths live under
//! [`crate::wire::api::PREFIX`]; the preview listener's own paths are [`PREVIEW_OPEN_PATH`] and
//! everything else on it (the previewed site). No credential is ever part of these shapes: a
//! preview URL's token grants one session's one port until it expires or is revoked, nothing else.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// `{"op":"connect","port":N}` of the harness protocol (specified in
/// [`crate::sandbox::local::ports`]).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct ConnectRequest {
    pub port: u16,
}

/// The one line answering `connect`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct ConnectReply {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The one line answering `ports`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct PortsReply {
    #[serde(default)]
    pub ports: Vec<ListeningPort>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Where on the preview listener a signed preview URL points: `{PREVIEW_OPEN_PATH}/{token}`.
pub const PREVIEW_OPEN_PATH: &str = "/_lap/preview";
/// The cookie, on the preview origin only, that carries a preview token once it was opened.
pub const PREVIEW_COOKIE: &str = "lap_preview";
/// Lifetime of a preview URL when none is asked for, in seconds.
pub const DEFAULT_PREVIEW_TTL_SECS: u64 = 60 * 60;
/// Longest lifetime of a preview URL, in seconds (7 days).
pub const MAX_PREVIEW_TTL_SECS: u64 = 7 * 24 * 60 * 60;

/// A TCP port the sandbox listens on, reachable at its `127.0.0.1`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, ToSchema)]
pub struct ListeningPort {
    pub port: u16,
    /// The address it is bound to inside the sandbox (`0.0.0.0`, `127.0.0.1`, `::`, `::1`).
    pub address: String,
}

/// The ports a session's sandbox listens on (`GET …/sessions/{id}/ports`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ListeningPorts {
    pub ports: Vec<ListeningPort>,
}

/// `POST …/sessions/{id}/preview_urls`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct CreatePreviewUrl {
    /// The sandbox port the URL opens (its `127.0.0.1:PORT`).
    #[schema(minimum = 1, maximum = 65535)]
    pub port: u16,
    /// Seconds until the URL stops working (default 3600, at most 604800).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 604800)]
    pub ttl_seconds: Option<u64>,
}

/// A signed preview URL.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PreviewUrl {
    /// Open this in a browser: no master key needed, served from the preview origin only.
    pub url: String,
    pub session_id: String,
    pub port: u16,
    /// RFC 3339.
    pub expires_at: String,
}

/// `DELETE …/sessions/{id}/preview_urls[?port=N]`: how many ports' URLs were revoked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RevokedPreviewUrls {
    pub session_id: String,
    /// The port whose URLs were revoked (`None`: every port of the session).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// RFC 3339: URLs issued up to this moment no longer work.
    pub revoked_before: String,
}
