//! Prometheus metrics of `lap serve`, served at `GET /metrics` in the text exposition format.
//!
//! Counters are bumped where things happen (bring-up, warm claims and misses, the reconciler, the
//! vault's records as they are stored); the session and warm-pool gauges are read from the store at
//! each scrape, so they are never stale. The
//! route is open to loopback peers and needs the master key from anywhere else.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::wire::api::Interception;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabel {
    status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: String,
}

pub struct Metrics {
    registry: Registry,
    sessions: Family<StatusLabel, Gauge>,
    pub reaped: Counter,
    pub died: Counter,
    bring_up: Histogram,
    claim: Histogram,
    reconcile: Histogram,
    warm_pool: Gauge,
    pool_misses: Counter,
    vault_requests: Counter,
    vault_swaps: Counter,
    vault_blocks: Family<ReasonLabel, Counter>,
    vault_alerts: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("lap");
        let sessions = Family::<StatusLabel, Gauge>::default();
        registry.register("sessions", "Sessions by status", sessions.clone());
        let reaped = Counter::default();
        registry.register("sessions_reaped", "Sessions reaped after the idle TTL", reaped.clone());
        let died = Counter::default();
        registry.register(
            "sessions_died",
            "Ready sessions whose sandbox stopped by itself",
            died.clone(),
        );
        // 1 ms to ~65 s.
        let bring_up = Histogram::new(exponential_buckets(0.001, 2.0, 17));
        registry.register(
            "bring_up_seconds",
            "Session bring-up, from create to ready",
            bring_up.clone(),
        );
        let claim = Histogram::new(exponential_buckets(0.001, 2.0, 17));
        registry.register(
            "warm_claim_seconds",
            "Sessions that claimed a warm sandbox, from create to ready",
            claim.clone(),
        );
        // 100 µs to ~6.5 s.
        let reconcile = Histogram::new(exponential_buckets(0.0001, 2.0, 17));
        registry.register(
            "reconcile_seconds",
            "One pass of the reconciler (every 2 s at most): the store read, the backend listed, what it did",
            reconcile.clone(),
        );
        let warm_pool = Gauge::default();
        registry.register(
            "warm_pool_ready",
            "Warm sandboxes ready to be claimed",
            warm_pool.clone(),
        );
        let pool_misses = Counter::default();
        registry.register(
            "warm_pool_misses",
            "Sessions that found no warm sandbox and created one",
            pool_misses.clone(),
        );
        let vault_requests = Counter::default();
        registry.register(
            "vault_requests",
            "Requests through the vault, blocked ones included",
            vault_requests.clone(),
        );
        let vault_swaps = Counter::default();
        registry.register(
            "vault_swaps",
            "Credentials swapped from stub to real value",
            vault_swaps.clone(),
        );
        let vault_blocks = Family::<ReasonLabel, Counter>::default();
        registry.register(
            "vault_blocks",
            "Requests the vault refused, by X-Lap-Vault-Blocked reason",
            vault_blocks.clone(),
        );
        let vault_alerts = Counter::default();
        registry.register(
            "vault_alerts",
            "Stubs headed to hosts they are not bound to",
            vault_alerts.clone(),
        );
        Self {
            registry,
            sessions,
            reaped,
            died,
            bring_up,
            claim,
            reconcile,
            warm_pool,
            pool_misses,
            vault_requests,
            vault_swaps,
            vault_blocks,
            vault_alerts,
        }
    }
}

impl Metrics {
    pub fn bring_up(&self, took: std::time::Duration) {
        self.bring_up.observe(took.as_secs_f64());
    }

    pub fn claim(&self, took: std::time::Duration) {
        self.claim.observe(took.as_secs_f64());
    }

    pub fn reconcile(&self, took: std::time::Duration) {
        self.reconcile.observe(took.as_secs_f64());
    }

    pub fn pool_miss(&self) {
        self.pool_misses.inc();
    }

    /// Counts one vault record.
    pub fn interception(&self, record: &Interception) {
        self.vault_requests.inc();
        self.vault_swaps.inc_by(record.swapped.len() as u64);
        if let Some(kind) = &record.block_kind {
            self.vault_blocks
                .get_or_create(&ReasonLabel { reason: kind.clone() })
                .inc();
        }
        if record.alert {
            self.vault_alerts.inc();
        }
    }

    /// The text exposition, with the session gauge set from `counts` (status, number) and the warm
    /// pool gauge from `warm`.
    pub fn render(&self, counts: &[(String, u64)], warm: u64) -> String {
        self.warm_pool.set(warm as i64);
        self.sessions.clear();
        for (status, count) in counts {
            self.sessions
                .get_or_create(&StatusLabel { status: status.clone() })
                .set(*count as i64);
        }
        let mut out = String::new();
        encode(&mut out, &self.registry).expect("writing to a String cannot fail");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_exposition_names_every_metric_with_its_labels() {
        let metrics = Metrics::default();
        metrics.reaped.inc();
        metrics.bring_up(std::time::Duration::from_millis(12));
        metrics.claim(std::time::Duration::from_millis(3));
        metrics.pool_miss();
        metrics.reconcile(std::time::Duration::from_micros(700));
        let text = metrics.render(&[("ready".into(), 3), ("dead".into(), 1)], 2);
        assert!(text.contains("lap_warm_claim_seconds_count 1"), "{text}");
        assert!(text.contains("lap_warm_pool_ready 2"), "{text}");
        assert!(text.contains("lap_warm_pool_misses_total 1"), "{text}");
        assert!(text.contains("lap_sessions{status=\"ready\"} 3"), "{text}");
        assert!(text.contains("lap_sessions_reaped_total 1"), "{text}");
        assert!(text.contains("lap_bring_up_seconds_count 1"), "{text}");
        assert!(text.contains("lap_reconcile_seconds_count 1"), "{text}");
        assert!(text.ends_with("# EOF\n"), "{text}");
    }
}
