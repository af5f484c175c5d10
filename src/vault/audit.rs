//! The vault's audit log: one record per intercepted request, blocked ones included.
//!
//! Records carry what a person needs to follow an agent's egress — method, host, path, status, which
//! credentials were swapped in, and why a request was blocked — and never a real credential value:
//! paths are recorded as the sandbox sent them, with stubs. The log is a bounded ring; the oldest
//! records go first.

use std::collections::VecDeque;
use std::sync::Mutex;

pub use crate::wire::api::Interception;

use super::plan::Why;

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

/// The record of a request the vault refused for `why`.
pub fn blocked_record(method: &str, host: &str, port: u16, path: &str, why: Why, reason: &str) -> Interception {
    Interception {
        status: (why != Why::SniMismatch).then(|| why.status().as_u16()),
        blocked: Some(reason.to_owned()),
        block_kind: why.kind().map(str::to_owned),
        alert: why.is_alert(),
        ..record(method, host, port, path)
    }
}

/// A record of a request to `host:port`, stamped now, its query values redacted.
pub fn record(method: &str, host: &str, port: u16, path: &str) -> Interception {
    Interception {
        id: 0,
        timestamp: crate::store::now(),
        method: method.to_owned(),
        host: host.to_owned(),
        port,
        path: redact_query(path),
        status: None,
        swapped: Vec::new(),
        stubs_swapped: Vec::new(),
        scrubbed: Vec::new(),
        bytes_up: None,
        bytes_down: None,
        duration_ms: None,
        blocked: None,
        block_kind: None,
        alert: false,
    }
}

/// `path?a=1&b` → `path?a=…&b`: parameter names stay, values go (they may be tokens or personal).
fn redact_query(path: &str) -> String {
    let Some((base, query)) = path.split_once('?') else {
        return path.to_owned();
    };
    let redacted: Vec<String> = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((name, _)) => format!("{name}=…"),
            None => pair.to_owned(),
        })
        .collect();
    format!("{base}?{}", redacted.join("&"))
}
