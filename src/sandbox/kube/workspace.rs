//! Workspaces on Kubernetes: each session's `/work` is a PersistentVolumeClaim that outlives its
//! Pod, and snapshots of it are CSI VolumeSnapshots (`snapshot.storage.k8s.io/v1`).
//!
//! It owns the claims' and snapshots' life through the API server: a session's claim is made with
//! its first Pod (or adopted from the warm Pod the session claimed, [`Kube::adopt_claim`]), mounted
//! by every later Pod of the session (a hibernation deletes the Pod and keeps the claim; a resume
//! makes a Pod on it), and deleted with the session. A fork is a clone of the source's claim (the
//! claim's `dataSource` names it: CSI volume cloning), a session from a snapshot a claim whose
//! `dataSource` is the VolumeSnapshot. Claims and snapshots are found by their labels
//! ([`manifest::session_claim_selector`]), never by a name remembered elsewhere.
//!
//! What it deliberately does not own: which sessions exist (the control plane's store says, and its
//! sweep deletes the claims of sessions that are gone, from [`Kube::workspace_sessions`]), and the
//! storage itself: a cluster without the snapshot API is told so with a hint
//! ([`SandboxError::Unsupported`]), found by discovery and never guessed.

use std::time::Duration;

use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams};

use super::manifest::{self, ClaimSource, WorkspaceStorage};
use super::{Kube, api_error, gone_ok};
use crate::sandbox::{KeptWorkspace, SandboxError, WorkspaceSource};

/// How often a snapshot being taken is looked at.
const SNAPSHOT_POLL: Duration = Duration::from_millis(500);

/// What [`Kube::snapshot_api`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum SnapshotApi {
    Served,
    Missing,
}

/// The VolumeSnapshot resource.
fn snapshot_resource() -> ApiResource {
    ApiResource {
        group: manifest::SNAPSHOT_GROUP.to_owned(),
        version: manifest::SNAPSHOT_VERSION.to_owned(),
        api_version: format!("{}/{}", manifest::SNAPSHOT_GROUP, manifest::SNAPSHOT_VERSION),
        kind: "VolumeSnapshot".to_owned(),
        plural: "volumesnapshots".to_owned(),
    }
}

/// Bytes of a Kubernetes quantity (`10Gi`, `500M`, `1073741824`); `None` when it is not one.
pub fn quantity_bytes(quantity: &str) -> Option<u64> {
    let quantity = quantity.trim();
    let split = quantity
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(quantity.len());
    let (number, suffix) = quantity.split_at(split);
    let factor: f64 = match suffix {
        "" => 1.0,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "Ki" => 1024.0,
        "Mi" => 1024.0 * 1024.0,
        "Gi" => 1024.0 * 1024.0 * 1024.0,
        "Ti" => 1024.0f64.powi(4),
        "Pi" => 1024.0f64.powi(5),
        _ => return None,
    };
    let number: f64 = number.parse().ok()?;
    Some((number * factor).round() as u64)
}

/// The larger of two quantities (the first when either cannot be read).
fn larger<'a>(a: &'a str, b: &'a str) -> &'a str {
    match (quantity_bytes(a), quantity_bytes(b)) {
        (Some(x), Some(y)) if y > x => b,
        _ => a,
    }
}

/// A claim's size: its capacity once bound, else what it asks for.
fn claim_size(claim: &PersistentVolumeClaim) -> u64 {
    let capacity = claim
        .status
        .as_ref()
        .and_then(|s| s.capacity.as_ref())
        .and_then(|c| c.get("storage"));
    let requested = claim
        .spec
        .as_ref()
        .and_then(|s| s.resources.as_ref())
        .and_then(|r| r.requests.as_ref())
        .and_then(|r| r.get("storage"));
    capacity.or(requested).and_then(|q| quantity_bytes(&q.0)).unwrap_or(0)
}

fn requested(claim: &PersistentVolumeClaim) -> Option<String> {
    let requests = claim.spec.as_ref()?.resources.as_ref()?.requests.as_ref()?;
    Some(requests.get("storage")?.0.clone())
}

fn no_api_hint() -> String {
    "install the CSI snapshot CRDs and snapshot controller (kubernetes-csi/external-snapshotter) with a \
     CSI driver that supports snapshots; meanwhile `lap sessions fork ID` copies a workspace by cloning \
     its claim, without a snapshot"
        .to_owned()
}

impl Kube {
    fn claims(&self) -> Api<PersistentVolumeClaim> {
        Api::namespaced(self.client.clone(), &self.config.namespace)
    }

    fn volume_snapshots(&self) -> Api<DynamicObject> {
        Api::namespaced_with(self.client.clone(), &self.config.namespace, &snapshot_resource())
    }

    /// How workspace claims are made, when they are kept.
    pub fn workspace_storage(&self) -> Option<&WorkspaceStorage> {
        self.config.workspace.as_ref()
    }

    fn storage(&self, session: &str) -> Result<&WorkspaceStorage, SandboxError> {
        self.workspace_storage().ok_or_else(|| SandboxError::Unavailable {
            backend: "kube",
            reason: format!("it keeps no workspace claims (session `{session}`)"),
        })
    }

    fn claim_location(&self, name: &str) -> String {
        format!("kube://{}/persistentvolumeclaims/{name}", self.config.namespace)
    }

    /// Session `session`'s workspace claim, `None` when it has none (one being deleted counts as
    /// none). Two would be a bug; the first by name is taken.
    pub async fn session_claim(&self, session: &str) -> Result<Option<PersistentVolumeClaim>, SandboxError> {
        let list = self
            .claims()
            .list(&ListParams::default().labels(&manifest::session_claim_selector(session)))
            .await
            .map_err(api_error)?;
        let mut claims: Vec<PersistentVolumeClaim> = list
            .items
            .into_iter()
            .filter(|c| c.metadata.deletion_timestamp.is_none())
            .collect();
        claims.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
        Ok(claims.into_iter().next())
    }

    /// The claim a new Pod for `session` mounts at `/work`: the session's own, made now (empty) when
    /// it has none. `None` when workspaces are not kept.
    pub(super) async fn claim_for_session(&self, session: &str) -> Result<Option<String>, SandboxError> {
        let Some(storage) = self.workspace_storage() else {
            return Ok(None);
        };
        if let Some(claim) = self.session_claim(session).await? {
            return Ok(claim.metadata.name);
        }
        let name = manifest::session_claim_name(session);
        let claim = manifest::workspace_claim(
            &self.config.namespace,
            &name,
            manifest::claim_labels(Some(session), None),
            storage.class.as_deref(),
            &storage.size,
            ClaimSource::Empty,
            None,
        );
        self.create_claim(&claim).await?;
        Ok(Some(name))
    }

    /// Makes warm Pod `pod`'s claim, owned by it (the pool dropping the Pod drops the claim).
    pub(super) async fn create_warm_claim(
        &self,
        id: &str,
        owner: Option<&k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference>,
    ) -> Result<(), SandboxError> {
        let Some(storage) = self.workspace_storage() else {
            return Ok(());
        };
        let claim = manifest::workspace_claim(
            &self.config.namespace,
            &manifest::warm_claim_name(id),
            manifest::claim_labels(None, Some(id)),
            storage.class.as_deref(),
            &storage.size,
            ClaimSource::Empty,
            owner,
        );
        self.create_claim(&claim).await
    }

    async fn create_claim(&self, claim: &PersistentVolumeClaim) -> Result<(), SandboxError> {
        let name = claim.metadata.name.clone().unwrap_or_default();
        match self.claims().create(&PostParams::default(), claim).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(status)) if status.code == 409 => Err(SandboxError::Unsupported {
                what: format!("the workspace claim `{name}` exists already"),
                hint: format!(
                    "a workspace of this session is there already; `kubectl -n {} get pvc {name}` shows it",
                    self.config.namespace
                ),
            }),
            Err(err) => Err(api_error(err)),
        }
    }

    /// Session `session` adopts the claim of warm Pod `id` it claimed: the claim loses its owner (so
    /// deleting the Pod keeps it) and gets the session's labels.
    pub async fn adopt_claim(&self, id: &str, session: &str) -> Result<(), SandboxError> {
        self.storage(session)?;
        let patch = manifest::adopt_claim_patch(session);
        let name = manifest::warm_claim_name(id);
        match self
            .claims()
            .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(status)) if status.code == 404 => Err(SandboxError::Backend(format!(
                "the warm sandbox pod `{id}` has no workspace claim `{name}` (it was made before `lap serve` \
                 kept workspaces); delete it and the pool makes another"
            ))),
            Err(err) => Err(api_error(err)),
        }
    }

    /// Session `session`'s workspace.
    pub async fn session_workspace(&self, session: &str) -> Result<Option<KeptWorkspace>, SandboxError> {
        self.storage(session)?;
        Ok(self.session_claim(session).await?.map(|claim| KeptWorkspace {
            location: self.claim_location(claim.metadata.name.as_deref().unwrap_or_default()),
            size_bytes: claim_size(&claim),
        }))
    }

    /// Makes session `session`'s claim as a copy of `from`: a clone of the source session's claim,
    /// or a claim restored from a snapshot.
    pub async fn copy_claim(&self, from: WorkspaceSource<'_>, session: &str) -> Result<KeptWorkspace, SandboxError> {
        let storage = self.storage(session)?.clone();
        let name = manifest::session_claim_name(session);
        let labels = manifest::claim_labels(Some(session), None);
        let claim = match from {
            WorkspaceSource::Session(source) => {
                let Some(source_claim) = self.session_claim(source).await? else {
                    return Err(SandboxError::NotFound(format!(
                        "the workspace claim of session {source}"
                    )));
                };
                let source_name = source_claim.metadata.name.clone().unwrap_or_default();
                // A clone is of its source's class and at least its size.
                let class = source_claim.spec.as_ref().and_then(|s| s.storage_class_name.clone());
                let size = requested(&source_claim).unwrap_or_else(|| storage.size.clone());
                let size = larger(&size, &storage.size).to_owned();
                manifest::workspace_claim(
                    &self.config.namespace,
                    &name,
                    labels,
                    class.as_deref().or(storage.class.as_deref()),
                    &size,
                    ClaimSource::Claim(&source_name),
                    None,
                )
            }
            WorkspaceSource::Snapshot(snapshot) => {
                self.require_snapshot_api().await?;
                let snapshot_name = manifest::snapshot_name(snapshot);
                let Some(found) = self
                    .volume_snapshots()
                    .get_opt(&snapshot_name)
                    .await
                    .map_err(api_error)?
                else {
                    return Err(SandboxError::NotFound(format!("the VolumeSnapshot `{snapshot_name}`")));
                };
                let restore = found.data["status"]["restoreSize"].as_str().unwrap_or_default();
                let size = larger(&storage.size, restore).to_owned();
                manifest::workspace_claim(
                    &self.config.namespace,
                    &name,
                    labels,
                    storage.class.as_deref(),
                    &size,
                    ClaimSource::Snapshot(&snapshot_name),
                    None,
                )
            }
        };
        self.create_claim(&claim).await?;
        Ok(KeptWorkspace {
            location: self.claim_location(&name),
            size_bytes: claim_size(&claim),
        })
    }

    /// Deletes every workspace claim of session `session`; none is fine.
    pub async fn delete_claims(&self, session: &str) -> Result<(), SandboxError> {
        self.storage(session)?;
        let list = self
            .claims()
            .list(&ListParams::default().labels(&manifest::session_claim_selector(session)))
            .await
            .map_err(api_error)?;
        let mut result = Ok(());
        for claim in list.items {
            let name = claim.metadata.name.unwrap_or_default();
            let deleted = gone_ok(self.claims().delete(&name, &DeleteParams::default()).await.map(|_| ()));
            result = result.and(deleted);
        }
        result
    }

    /// The sessions that have a workspace claim (not one being deleted).
    pub async fn claim_sessions(&self) -> Result<Vec<String>, SandboxError> {
        if self.workspace_storage().is_none() {
            return Ok(Vec::new());
        }
        let list = self
            .claims()
            .list(&ListParams::default().labels(&manifest::claim_selector()))
            .await
            .map_err(api_error)?;
        let mut sessions: Vec<String> = list
            .items
            .iter()
            .filter(|c| c.metadata.deletion_timestamp.is_none())
            .filter_map(|c| c.metadata.labels.as_ref()?.get(manifest::SESSION).cloned())
            .collect();
        sessions.sort();
        sessions.dedup();
        Ok(sessions)
    }

    /// Whether the API server serves VolumeSnapshots (`GET /apis/snapshot.storage.k8s.io/v1`),
    /// remembered once it was answered.
    pub(super) async fn snapshot_api(&self) -> Result<SnapshotApi, SandboxError> {
        if let Some(found) = *self.snapshot_api.lock().unwrap_or_else(|p| p.into_inner()) {
            return Ok(found);
        }
        let group_version = format!("{}/{}", manifest::SNAPSHOT_GROUP, manifest::SNAPSHOT_VERSION);
        let found = match self.client.list_api_group_resources(&group_version).await {
            Ok(list) if list.resources.iter().any(|r| r.name == "volumesnapshots") => SnapshotApi::Served,
            Ok(_) => SnapshotApi::Missing,
            Err(kube::Error::Api(status)) if status.code == 404 => SnapshotApi::Missing,
            Err(err) => return Err(api_error(err)),
        };
        *self.snapshot_api.lock().unwrap_or_else(|p| p.into_inner()) = Some(found);
        Ok(found)
    }

    async fn require_snapshot_api(&self) -> Result<(), SandboxError> {
        match self.snapshot_api().await? {
            SnapshotApi::Served => Ok(()),
            SnapshotApi::Missing => Err(SandboxError::Unsupported {
                what: format!(
                    "this Kubernetes cluster serves no CSI snapshot API (`{}/{}` is not there), so it \
                     cannot snapshot a workspace claim",
                    manifest::SNAPSHOT_GROUP,
                    manifest::SNAPSHOT_VERSION
                ),
                hint: no_api_hint(),
            }),
        }
    }

    /// Takes a VolumeSnapshot of session `session`'s claim and waits until it is ready to use (one
    /// that is not ready in time is deleted again, with the controller's last error).
    pub async fn snapshot_claim(&self, session: &str, snapshot: &str) -> Result<KeptWorkspace, SandboxError> {
        let storage = self.storage(session)?.clone();
        self.require_snapshot_api().await?;
        let Some(claim) = self.session_claim(session).await? else {
            return Err(SandboxError::NotFound(format!(
                "the workspace claim of session {session}"
            )));
        };
        let claim_name = claim.metadata.name.clone().unwrap_or_default();
        let value = manifest::volume_snapshot(
            &self.config.namespace,
            snapshot,
            session,
            &claim_name,
            storage.snapshot_class.as_deref(),
        );
        let object: DynamicObject =
            serde_json::from_value(value).map_err(|e| SandboxError::Backend(format!("a VolumeSnapshot: {e}")))?;
        let name = manifest::snapshot_name(snapshot);
        self.volume_snapshots()
            .create(&PostParams::default(), &object)
            .await
            .map_err(api_error)?;
        match self.wait_snapshot(&name).await {
            Ok(restore) => Ok(KeptWorkspace {
                location: self.snapshot_place(snapshot),
                size_bytes: restore.or_else(|| Some(claim_size(&claim))).unwrap_or(0),
            }),
            Err(err) => {
                if let Err(cleanup) = self.delete_snapshot_object(snapshot).await {
                    tracing::warn!(snapshot = name, error = %cleanup, "cannot delete a snapshot that failed");
                }
                Err(err)
            }
        }
    }

    /// Waits until VolumeSnapshot `name` is ready to use; returns its restore size in bytes. An
    /// error the snapshot controller reports is not the end (it keeps retrying, and clears it on
    /// success): the last one is said when the snapshot is still not ready at the deadline.
    async fn wait_snapshot(&self, name: &str) -> Result<Option<u64>, SandboxError> {
        let deadline = tokio::time::Instant::now() + self.config.ready_timeout;
        loop {
            let Some(found) = self.volume_snapshots().get_opt(name).await.map_err(api_error)? else {
                return Err(SandboxError::NotFound(format!("the VolumeSnapshot `{name}`")));
            };
            let status = &found.data["status"];
            if status["readyToUse"].as_bool() == Some(true) {
                return Ok(status["restoreSize"].as_str().and_then(quantity_bytes));
            }
            if tokio::time::Instant::now() >= deadline {
                let why = match status["error"]["message"].as_str() {
                    Some(message) => format!("the snapshot controller says: {message}"),
                    None => format!(
                        "`kubectl -n {} describe volumesnapshot {name}` says why",
                        self.config.namespace
                    ),
                };
                return Err(SandboxError::Backend(format!(
                    "the VolumeSnapshot `{name}` was not ready within {}s ({why})",
                    self.config.ready_timeout.as_secs(),
                )));
            }
            tokio::time::sleep(SNAPSHOT_POLL).await;
        }
    }

    async fn delete_snapshot_object(&self, snapshot: &str) -> Result<(), SandboxError> {
        let name = manifest::snapshot_name(snapshot);
        gone_ok(
            self.volume_snapshots()
                .delete(&name, &DeleteParams::default())
                .await
                .map(|_| ()),
        )
    }

    /// Deletes snapshot `snapshot`'s VolumeSnapshot; gone already, or no snapshot API at all (then
    /// there was never one), is fine.
    pub async fn delete_snapshot(&self, snapshot: &str) -> Result<(), SandboxError> {
        if self.workspace_storage().is_none() || self.snapshot_api().await? == SnapshotApi::Missing {
            return Ok(());
        }
        self.delete_snapshot_object(snapshot).await
    }

    /// Where snapshot `snapshot`'s VolumeSnapshot is.
    pub fn snapshot_place(&self, snapshot: &str) -> String {
        format!(
            "kube://{}/volumesnapshots/{}",
            self.config.namespace,
            manifest::snapshot_name(snapshot)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities_are_read_as_the_api_writes_them() {
        assert_eq!(quantity_bytes("10Gi"), Some(10 << 30));
        assert_eq!(quantity_bytes("500M"), Some(500_000_000));
        assert_eq!(quantity_bytes("1073741824"), Some(1 << 30));
        assert_eq!(quantity_bytes("1.5Gi"), Some(3 << 29));
        assert_eq!(quantity_bytes("ten"), None);
        assert_eq!(quantity_bytes("5Zi"), None);
        assert_eq!(larger("10Gi", "20Gi"), "20Gi");
        assert_eq!(larger("10Gi", "1Gi"), "10Gi");
        assert_eq!(larger("10Gi", ""), "10Gi");
    }
}
