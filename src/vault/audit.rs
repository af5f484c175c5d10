//! The vault's audit log: one record per intercepted request, blocked ones included.
//!
//! Records carry what a person needs to follow an agent's egress — method, host, path, status, which
//! credentials were swapped in, and why a request was blocked — and never a real credential value:
//! paths are recorded as the sandbox sent them, with stubs. The log is a bounded ring; the oldest
//! records go first.

use std::collections::VecDeque;
use std::sync::Mutex;

pub use crate::wire::api::Interception;

/// How many records one log keeps.
pub const AUDIT_CAPACITY: usize = 1000;

#[derive(Debug, Default)]
pub struct AuditLog {
    records: Mutex<VecDeque<Interception>>,
    /// Where records are also sent to be kept (the store, through a writer task).
    sink: Option<tokio::sync::mpsc::Sender<Interception>>,
}

impl AuditLog {
    /// A log that also sends every record to `sink`. When the sink is full (the store fell far
    /// behind), records are still kept in memory and the loss is logged, never waited on.
    pub fn with_sink(sink: tokio::sync::mpsc::Sender<Interception>) -> Self {
        Self {
            records: Mutex::default(),
            sink: Some(sink),
        }
    }

    pub fn record(&self, record: Interception) {
        if let Some(sink) = &self.sink
            && sink.try_send(record.clone()).is_err()
        {
            tracing::warn!(host = %record.host, "the audit store is behind; a record is kept in memory only");
        }
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
