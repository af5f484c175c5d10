//! `GET /api/v1/admin/stats` (master key): what the warm pool holds and how fast claims were.
//!
//! Counts are read from the store at request time; hits, misses, claims and latencies are those of
//! this run of `lap serve` (they start at zero after a restart).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

/// The path of the stats route.
pub const STATS_PATH: &str = "/api/v1/admin/stats";

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AdminStats {
    pub warm_pool: WarmPoolStats,
    /// Sessions by status.
    pub sessions: BTreeMap<String, u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct WarmPoolStats {
    /// `--warm-pool-size` (`WARM_POOL_SIZE`); 0: the pool is off.
    pub configured_size: u32,
    /// `--warm-pool-recent-agent-hours` (`WARM_POOL_RECENT_AGENT_HOURS`).
    pub recent_agent_hours: u64,
    /// `--warm-pool-max-age`, in seconds: older warm sandboxes are recycled.
    pub max_age_seconds: u64,
    /// Warm sandboxes being made.
    pub warming: u32,
    /// Warm sandboxes ready to be claimed.
    pub ready: u32,
    /// Claims since start that found a warm sandbox.
    pub hits: u64,
    /// Claims since start that found none (a cold start instead).
    pub misses: u64,
    /// Per agent (a warm sandbox with the agent's repo cloned) or per harness (any agent of it).
    pub groups: Vec<WarmGroup>,
    /// The most recent warm claims, newest first.
    pub recent_claims: Vec<ClaimSample>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct WarmGroup {
    pub harness_id: String,
    /// `None`: made for any agent of the harness.
    pub agent_id: Option<Uuid>,
    pub agent_name: Option<String>,
    /// How many the pool plans to keep for this group now.
    pub target: u32,
    pub warming: u32,
    pub ready: u32,
    /// Sandboxes of this group claimed since start.
    pub claimed: u64,
    /// The backend ids of its warm sandboxes (warming and ready).
    pub sandboxes: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ClaimSample {
    pub session_id: Uuid,
    pub agent_name: String,
    pub harness_id: String,
    pub at: String,
    /// From the create request to the session being ready, in milliseconds.
    pub latency_ms: f64,
    /// Whether the sandbox was made for this agent (repo already cloned).
    pub agent_warm: bool,
}
