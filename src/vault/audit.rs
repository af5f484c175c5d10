//! The vault's audit log: one record per intercepted request, blocked ones included.
//!
//! Records carry what a person needs to follow an agent's egress — method, host, path, status, which
//! credentials were swapped in, and why a request was blocked — and never a real credential value:
//! paths are recorded as the sandbox sent them, with stubs. The log is a bounded ring; the oldest
//! records go first.

use std::collections::VecDeque;
use std::sync::Mutex;

use serde::Serialize;

/// How many records one log keeps.
pub const AUDIT_CAPACITY: usize = 1000;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Interception {
    pub at: String,
    pub method: String,
    pub host: String,
    pub port: u16,
    pub path: String,
    /// The upstream's status, or the vault's own when it answered itself.
    pub status: Option<u16>,
    /// Names of the credentials whose stubs were swapped for real values.
    pub swapped: Vec<String>,
    /// Names of the credentials whose real values were scrubbed from the response.
    pub scrubbed: Vec<String>,
    /// Why the vault refused the request, when it did.
    pub blocked: Option<String>,
}

#[derive(Debug, Default)]
pub struct AuditLog {
    records: Mutex<VecDeque<Interception>>,
}

impl AuditLog {
    pub fn record(&self, record: Interception) {
        if let Some(reason) = &record.blocked {
            tracing::info!(host = %record.host, path = %record.path, reason, "vault blocked a request");
        }
        let mut records = self.records.lock().unwrap_or_else(|p| p.into_inner());
        if records.len() == AUDIT_CAPACITY {
            records.pop_front();
        }
        records.push_back(record);
    }

    /// Every record kept, oldest first.
    pub fn recent(&self) -> Vec<Interception> {
        self.records
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .cloned()
            .collect()
    }
}
