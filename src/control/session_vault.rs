//! Each session's vault: attached when its sandbox is bound, detached when it ends, and its records
//! kept as the session's egress log.
//!
//! For a backend whose vault runs in `lap serve` ([`VaultPlacement::Served`]) the control plane
//! serves the sandbox's egress listener with the session's [`Binding`]; for one whose sandboxes carry
//! their vault ([`VaultPlacement::InSandbox`]) it hands the same [`VaultBinding`] to that vault and
//! pulls its records. Either way one stop token per session (a child of shutdown) ends the tasks,
//! and the records reach the store in batches. The binding is the only place a real value leaves the
//! store on its way to a vault; nothing here writes one anywhere else.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::Control;
use crate::metrics::Metrics;
use crate::sandbox::{BoundCredential, ProxyListener, Sandbox, SandboxError, VaultBinding, VaultPlacement};
use crate::store::{NewCredential, Store};
use crate::vault::audit::AuditLog;
use crate::vault::intercept::{Binding, Vault};
use crate::wire::api::{Agent, Interception};

/// Vault records waiting for the store, per session, before new ones are kept in memory only.
const AUDIT_QUEUE: usize = 10_000;
/// Most vault records written in one transaction.
const AUDIT_BATCH: usize = 256;
/// How often the records of a vault that runs in its sandbox are pulled.
const RECORD_PULL: Duration = Duration::from_secs(1);

impl Control {
    /// Starts serving a sandbox's egress listener with the session's binding, until
    /// [`Self::detach_vault`] with the same `key`. The vault's records are kept as `audit`'s egress
    /// log (`None`: a warm sandbox's clone, which belongs to no session, is counted only). For a
    /// backend whose sandboxes carry their own vault ([`VaultPlacement::InSandbox`]) the binding goes
    /// to that vault instead and its records are pulled every [`RECORD_PULL`] until detached.
    pub(super) async fn attach_vault(
        &self,
        key: Uuid,
        audit: Option<Uuid>,
        sandbox_id: &str,
        agent: &Agent,
        credentials: Vec<NewCredential>,
        stubs: &[(String, String)],
    ) -> Result<(), SandboxError> {
        let binding = vault_binding(agent, credentials, stubs, self.egress_default_deny);
        if self.placement == VaultPlacement::InSandbox {
            return self.bind_in_sandbox(key, audit, sandbox_id, binding).await;
        }
        let listener = self.sandbox.proxy_listener(sandbox_id).await?;
        let (sink, records) = tokio::sync::mpsc::channel(AUDIT_QUEUE);
        let mut binding = crate::vault::proxy_binding(binding, AuditLog::with_sink(sink));
        // The sandbox's own descriptors in `lap serve` count in the vault's budget.
        binding.tunnels =
            crate::vault::limits::Tunnels::for_served_sandbox().map_err(|e| SandboxError::Unavailable {
                backend: self.sandbox.name(),
                reason: e.to_string(),
            })?;
        let binding = Arc::new(binding);
        listener.record_refusals_to(&binding);
        // Both live as long as the session. The writer ends when the last holder of the binding's
        // sink does (the session's last tunnel), or on shutdown once it stored what was queued; the
        // listener on `stop` (a child of shutdown).
        self.session_tasks.spawn(keep_audit(
            self.store.clone(),
            self.metrics.clone(),
            (audit, None),
            records,
            Some(self.shutdown.clone()),
        ));
        let stop = self.vault_stop(key);
        self.session_tasks
            .spawn(serve_egress(self.vault.clone(), listener, binding, stop));
        Ok(())
    }

    /// A fresh stop token for the vault task of `key` (a child of shutdown); the task it replaces,
    /// if any, is stopped.
    fn vault_stop(&self, key: Uuid) -> CancellationToken {
        let stop = self.shutdown.child_token();
        let previous = self
            .vaults
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key, stop.clone());
        if let Some(previous) = previous {
            previous.cancel();
        }
        stop
    }

    /// [`Self::attach_vault`] for a sandbox that carries its vault: the binding through
    /// [`Sandbox::bind_vault`], then a task pulling its records into `audit`'s egress log.
    async fn bind_in_sandbox(
        &self,
        key: Uuid,
        audit: Option<Uuid>,
        sandbox_id: &str,
        binding: VaultBinding,
    ) -> Result<(), SandboxError> {
        self.sandbox.bind_vault(sandbox_id, &binding).await?;
        let (sink, records) = tokio::sync::mpsc::channel(AUDIT_QUEUE);
        // Both end on `stop` (a child of shutdown), after a last pull: shutdown keeps those records.
        self.tasks.spawn(keep_audit(
            self.store.clone(),
            self.metrics.clone(),
            (audit, Some(sandbox_id.to_owned())),
            records,
            None,
        ));
        let stop = self.vault_stop(key);
        self.tasks.spawn(pull_records(
            self.sandbox.clone(),
            self.store.clone(),
            sandbox_id.to_owned(),
            self.pulled.clone(),
            sink,
            stop,
        ));
        Ok(())
    }

    pub(super) fn detach_vault(&self, session: Uuid) {
        if let Some(stop) = self.vaults.lock().unwrap_or_else(|p| p.into_inner()).remove(&session) {
            stop.cancel();
        }
    }
}

/// Writes a session's vault records to the store, in batches, until its vault is gone (`session`
/// `None`: a warm sandbox's clone, counted only), or `until` is cancelled: then the channel closes
/// and what it holds is stored before the task ends. Records pulled from the vault a sandbox
/// carries (`pulled_from`) are kept with their last position ([`Store::keep_pulled`]), so a
/// restarted `lap serve` pulls on after it and keeps no record twice; a warm sandbox's only move
/// the position.
async fn keep_audit(
    store: Store,
    metrics: Arc<Metrics>,
    (session, pulled_from): (Option<Uuid>, Option<String>),
    mut records: tokio::sync::mpsc::Receiver<Interception>,
    until: Option<CancellationToken>,
) {
    let mut batch = Vec::new();
    let mut until = until;
    loop {
        let received = match &until {
            Some(stop) => tokio::select! {
                received = records.recv_many(&mut batch, AUDIT_BATCH) => Some(received),
                () = stop.cancelled() => None,
            },
            None => Some(records.recv_many(&mut batch, AUDIT_BATCH).await),
        };
        let Some(received) = received else {
            // No more records come in; those queued are stored below.
            records.close();
            until = None;
            continue;
        };
        if received == 0 {
            break;
        }
        batch.iter().for_each(|record| metrics.interception(record));
        let batch = std::mem::take(&mut batch);
        let kept = match (&pulled_from, session) {
            (Some(sandbox), _) => {
                let position = batch.iter().map(|r| r.id).max().unwrap_or(0);
                store.keep_pulled(session, sandbox.clone(), position, batch).await
            }
            (None, Some(session)) => store.insert_interceptions(session, batch).await,
            (None, None) => Ok(()),
        };
        if let Err(err) = kept {
            tracing::warn!(?session, error = %err, "cannot keep vault records");
        }
    }
}

/// Pulls the records of the vault sandbox `id` carries into `sink`, every [`RECORD_PULL`] and once
/// more on `stop`, after the last position `pulled` remembers for it (at first, the position the
/// store kept, which survives restarts of `lap serve`). A pull that fails (the sandbox going away,
/// the API server busy) is tried again at the next tick.
async fn pull_records(
    sandbox: Arc<dyn Sandbox>,
    store: Store,
    id: String,
    pulled: Arc<Mutex<HashMap<String, u64>>>,
    sink: tokio::sync::mpsc::Sender<Interception>,
    stop: CancellationToken,
) {
    let mut tick = tokio::time::interval(RECORD_PULL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let last = tokio::select! {
            _ = stop.cancelled() => true,
            _ = tick.tick() => false,
        };
        let remembered = pulled.lock().unwrap_or_else(|p| p.into_inner()).get(&id).copied();
        let after = match remembered {
            Some(after) => after,
            None => match store.pulled_position(id.clone()).await {
                Ok(after) => {
                    pulled
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .entry(id.clone())
                        .or_insert(after);
                    after
                }
                Err(err) => {
                    tracing::warn!(sandbox = %id, error = %err, "cannot read where the vault's records were pulled to");
                    if last {
                        return;
                    }
                    continue;
                }
            },
        };
        match sandbox.vault_records(&id, after).await {
            Ok(records) => {
                for record in records {
                    if record.id > after {
                        pulled
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .insert(id.clone(), record.id);
                    }
                    if sink.send(record).await.is_err() {
                        return;
                    }
                }
            }
            Err(err) => tracing::debug!(sandbox = %id, error = %err, "cannot pull the vault's records"),
        }
        if last {
            return;
        }
    }
}

/// Accepts a sandbox's egress connections and hands each to the vault, until `stop`. A connection
/// is accepted only once the vault has a place for it, or for its refusal
/// ([`crate::vault::limits::Tunnels::admit`]): a sandbox at its limit cannot make `lap serve` hold
/// more descriptors, what it opens beyond waits in the listener's backlog; a failed accept rests
/// and tries again ([`crate::vault::limits::accept_admitted`]).
async fn serve_egress(vault: Arc<Vault>, listener: ProxyListener, binding: Arc<Binding>, stop: CancellationToken) {
    let serve = |stream, admission| {
        tokio::spawn(vault.clone().serve_admitted(stream, binding.clone(), admission));
    };
    crate::vault::limits::accept_admitted(&binding.tunnels, || listener.accept(), serve, &stop).await;
}

/// The one binding a session's vault is handed, in-process or in the sandbox: each stored credential
/// that has a stub in `stubs`, with its value, hosts, injection points and rules, and the agent's
/// egress policy.
fn vault_binding(
    agent: &Agent,
    credentials: Vec<NewCredential>,
    stubs: &[(String, String)],
    egress_default_deny: bool,
) -> VaultBinding {
    let stub_of: BTreeMap<&str, &str> = stubs.iter().map(|(n, s)| (n.as_str(), s.as_str())).collect();
    VaultBinding {
        credentials: credentials
            .into_iter()
            .filter_map(|c| {
                Some(BoundCredential {
                    stub: (*stub_of.get(c.name.as_str())?).to_owned(),
                    value: c.value,
                    name: c.name,
                    hosts: c.hosts,
                    inject: c.inject,
                    rules: c.rules,
                })
            })
            .collect(),
        allow_out: agent.allow_out.clone(),
        deny_out: agent.deny_out.clone(),
        egress_default_deny,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::Secret;
    use crate::wire::vault::{Injection, RequestRule};

    #[test]
    fn the_vault_binding_carries_each_stubbed_credentials_points_rules_and_the_policy() {
        let agent: Agent = serde_json::from_value(serde_json::json!({
            "id": Uuid::nil(), "name": "a", "harness_id": "shell", "supports_tui": true, "command": null,
            "repo_url": null, "branch": "main", "prompt": null, "model": null, "env": {}, "credentials": [],
            "env_var_hosts": {}, "allow_out": ["pypi.org"], "deny_out": ["evil.test"],
            "created_at": "t", "updated_at": "t"
        }))
        .unwrap();
        let rules: Vec<RequestRule> = vec!["GET /repos/**".parse().unwrap()];
        let credential = |name: &str, inject: Vec<Injection>| NewCredential {
            name: name.into(),
            hosts: vec!["api.github.com".into()],
            value: Secret::new(format!("real-{name}")),
            inject,
            rules: rules.clone(),
        };
        let stubs = vec![("GITHUB_TOKEN".to_owned(), "stub_gh".to_owned())];
        let binding = vault_binding(
            &agent,
            vec![
                credential("GITHUB_TOKEN", vec![Injection::Header("x-token".into())]),
                credential("UNSTUBBED", vec![Injection::Authorization]),
            ],
            &stubs,
            true,
        );
        assert_eq!(binding.credentials.len(), 1, "a credential without a stub is not bound");
        let bound = &binding.credentials[0];
        assert_eq!((bound.name.as_str(), bound.stub.as_str()), ("GITHUB_TOKEN", "stub_gh"));
        assert_eq!(bound.value.expose(), "real-GITHUB_TOKEN");
        assert_eq!(bound.inject, vec![Injection::Header("x-token".into())]);
        assert_eq!(bound.rules, rules);
        assert_eq!(binding.allow_out, ["pypi.org"]);
        assert_eq!(binding.deny_out, ["evil.test"]);
        assert!(binding.egress_default_deny);
        // What the sidecar reads back is the same.
        let read: VaultBinding = serde_json::from_slice(&serde_json::to_vec(&binding).unwrap()).unwrap();
        assert_eq!(read.credentials[0].inject, bound.inject);
        assert_eq!(read.credentials[0].rules, bound.rules);
    }
}
