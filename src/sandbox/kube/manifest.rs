//! The objects one Kubernetes sandbox is made of, as pure functions of its [`PodPlan`].
//!
//! Per sandbox: a Pod (in sidecar mode an init container that installs the egress fence, the
//! harness container, the `lap vault sidecar` container; in gateway mode the harness container
//! alone, see [`VaultMode`]), a Secret and a NetworkPolicy; per session, when workspaces are
//! kept, a PersistentVolumeClaim mounted at `/work` ([`workspace_claim`]) and its CSI
//! VolumeSnapshots ([`volume_snapshot`]). Nothing here talks to a cluster; the golden tests
//! (`tests/it/kube_manifests.rs`) pin the exact JSON and were reviewed by hand.
//!
//! Invariants this module keeps:
//! - **Real values stay in the vault container.** The Secret holds the binding (real credential
//!   values), the key of this sandbox's own vault CA (made for it alone: it signs for no other
//!   sandbox) and the admin token; only the vault container mounts those keys. The harness
//!   container's view of the Secret is two volumes projecting one key each, `ca-bundle.pem` (the
//!   system roots and this sandbox's CA) and its own `harness-token` (which opens only this
//!   sandbox's harness); its environment carries stubs.
//! - **Only the vault's UID reaches the network.** The init container (the only one with any
//!   capability: `NET_ADMIN` and `NET_RAW`, as root, because iptables needs both) lets loopback,
//!   replies to inbound connections and the vault's UID out, and rejects the rest, for IPv4 and IPv6.
//!   The NetworkPolicy is the second fence: no private, link-local or metadata address, DNS only to
//!   the cluster's DNS, ingress only from `lap serve` pods to the harness port.
//! - **Every other container is locked down**: non-root, no privilege escalation, all capabilities
//!   dropped, `RuntimeDefault` seccomp, no service-account token.
//! - **A gateway-mode Pod holds no vault and no CA key**: the harness alone, Pod Security
//!   `restricted`; its Secret holds the CA bundle (public: system roots and `lap serve`'s CA
//!   certificate) and its harness token only; its NetworkPolicy is its one fence: egress to the
//!   gateway's port on `lap serve` pods and to the cluster DNS, nothing else.
//! - **Everything is findable and collected**: each object carries [`MANAGED_BY`], [`SANDBOX`] (and
//!   [`SESSION`] once bound, [`WARM`] while in the pool); the Secret and NetworkPolicy are owned by the
//!   Pod, so deleting the Pod deletes them.
//! - **A session's workspace claim is owned by nothing**, so deleting the Pod (a hibernation, a
//!   restart) keeps it; it carries [`SESSION`] and `app.kubernetes.io/name: lap-workspace`, by which
//!   the backend finds it and deletes it with the session. A warm Pod's claim is owned by the Pod
//!   until a session adopts it ([`adopt_claim_patch`]), so a warm Pod the pool drops takes it along.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod, Secret};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use serde_json::{Value, json};

use crate::sandbox::LimitOverrides;

/// `app.kubernetes.io/managed-by`: every object lap creates carries it, with [`MANAGER`].
pub const MANAGED_BY: &str = "app.kubernetes.io/managed-by";
pub const MANAGER: &str = "lap";
/// `app.kubernetes.io/name` of sandbox objects.
pub const NAME: &str = "app.kubernetes.io/name";
pub const SANDBOX_APP: &str = "lap-sandbox";
/// `app.kubernetes.io/name` of `lap serve` pods, the only ones the NetworkPolicy lets reach a harness.
pub const SERVE_APP: &str = "lap-serve";
/// The sandbox id (which is also the Pod's name).
pub const SANDBOX: &str = "lap.dev/sandbox";
/// The session a sandbox belongs to; absent while warm.
pub const SESSION: &str = "lap.dev/session";
/// `"true"` while the sandbox is in the warm pool, `"false"` once claimed.
pub const WARM: &str = "lap.dev/warm";
/// The harness the sandbox runs.
pub const HARNESS: &str = "lap.dev/harness";
/// `app.kubernetes.io/name` of a session's workspace claim.
pub const WORKSPACE_APP: &str = "lap-workspace";
/// `app.kubernetes.io/name` of a snapshot of a workspace.
pub const SNAPSHOT_APP: &str = "lap-snapshot";
/// The CSI snapshot API: its group and version.
pub const SNAPSHOT_GROUP: &str = "snapshot.storage.k8s.io";
pub const SNAPSHOT_VERSION: &str = "v1";
/// Annotation: the harness-wide process limit asked for (Kubernetes sets pid limits per node).
pub const PIDS_ANNOTATION: &str = "lap.dev/pids-limit";

/// The harness's UID and GID in the sandbox image.
pub const HARNESS_UID: i64 = 1000;
/// The vault's UID and GID: the only UID the egress fence lets off the pod.
pub const VAULT_UID: i64 = 10002;
/// Where the harness serves its protocol inside the pod.
pub const HARNESS_PORT: u16 = 7070;
/// Where the vault's admin endpoint listens inside the pod.
pub const ADMIN_PORT: u16 = 7071;
/// Where the vault's proxy listens inside the pod (see [`crate::sandbox::PROXY_ADDR`]).
pub const PROXY_PORT: u16 = 3128;

/// Keys of the per-sandbox Secret.
pub mod keys {
    /// The vault binding (JSON, real values): vault only.
    pub const BINDING: &str = "binding.json";
    /// This sandbox's own vault CA, certificate and key (made for it alone): vault only.
    pub const CA_CERT: &str = "ca.pem";
    pub const CA_KEY: &str = "ca.key";
    /// The admin endpoint's bearer token: vault only.
    pub const ADMIN_TOKEN: &str = "admin-token";
    /// System roots plus this sandbox's vault CA: the harness's.
    pub const CA_BUNDLE: &str = "ca-bundle.pem";
    /// The token the harness asks of every connection: the harness's (it opens this sandbox only).
    pub const HARNESS_TOKEN: &str = "harness-token";
}

/// How the control plane reaches the ports of a sandbox's Pod.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reach {
    /// Through the API server's port-forward: works from anywhere the API server is reachable (a
    /// laptop against any cluster). The harness and the vault's admin endpoint listen on the pod's
    /// loopback only.
    PortForward,
    /// Straight to the pod's IP, for a `lap serve` running in the cluster: no API-server hop. The
    /// harness and the admin endpoint listen on the pod's network, behind their tokens and the
    /// NetworkPolicy (ingress from `lap serve` pods only).
    PodIp,
}

impl Reach {
    /// The address the pod's harness and admin endpoint bind.
    pub fn bind_host(self) -> &'static str {
        match self {
            Self::PortForward => "127.0.0.1",
            Self::PodIp => "0.0.0.0",
        }
    }
}

/// Where the vault of a sandbox's Pod runs (`lap serve --kube-vault`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VaultMode {
    /// In the Pod: a `lap vault sidecar` container with a CA of the Pod's own, behind the iptables
    /// egress fence its init container installs (which needs `NET_ADMIN` and `NET_RAW`, so the
    /// namespace must admit Pod Security `privileged`). Does not depend on the CNI.
    Sidecar,
    /// In `lap serve` (the gateway, listening on `port` of the `lap serve` pods): the Pod holds
    /// only the harness, meets Pod Security `restricted`, and trusts `lap serve`'s CA certificate (no
    /// key); its NetworkPolicy lets it reach only that port and the cluster DNS, so it depends on
    /// the CNI enforcing NetworkPolicy.
    Gateway { port: u16 },
}

/// Resources of a sandbox when its agent asks for nothing, and of the vault sidecar.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resources {
    pub cpu_request: String,
    pub memory_request: String,
    pub cpu_limit: String,
    pub memory_limit: String,
}

impl Resources {
    /// The harness container's default.
    pub fn harness_default() -> Self {
        Self {
            cpu_request: "250m".into(),
            memory_request: "512Mi".into(),
            cpu_limit: "2".into(),
            memory_limit: "2Gi".into(),
        }
    }

    /// The vault sidecar's (fixed).
    pub fn vault() -> Self {
        Self {
            cpu_request: "50m".into(),
            memory_request: "64Mi".into(),
            cpu_limit: "500m".into(),
            memory_limit: "256Mi".into(),
        }
    }

    /// The agent's limits over these: a limit asked for is both the request and the limit, so the
    /// scheduler reserves what the agent may use.
    pub fn with_overrides(mut self, limits: &LimitOverrides) -> Self {
        if let Some(bytes) = limits.memory_bytes {
            self.memory_request = bytes.to_string();
            self.memory_limit = bytes.to_string();
        }
        if let Some(millis) = limits.cpu_millis {
            self.cpu_request = format!("{millis}m");
            self.cpu_limit = format!("{millis}m");
        }
        self
    }

    fn json(&self) -> Value {
        json!({
            "requests": {"cpu": self.cpu_request, "memory": self.memory_request},
            "limits": {"cpu": self.cpu_limit, "memory": self.memory_limit},
        })
    }
}

/// Everything the objects of one sandbox are made from.
#[derive(Debug, Clone)]
pub struct PodPlan {
    /// The sandbox id, also the Pod's name (a DNS label).
    pub id: String,
    pub namespace: String,
    /// The sandbox image: `lap` on PATH, plus iptables, git, curl, Node and the harness tools.
    pub image: String,
    pub harness_id: String,
    /// `None` for a warm sandbox.
    pub session_id: Option<String>,
    /// The harness's environment: plain variables and stubs, never a real value.
    pub env: Vec<(String, String)>,
    pub limits: LimitOverrides,
    pub defaults: Resources,
    pub reach: Reach,
    /// The PersistentVolumeClaim mounted at `/work` (`None`: an `emptyDir`, gone with the Pod).
    pub workspace_claim: Option<String>,
    /// Where the Pod's vault runs.
    pub vault: VaultMode,
}

impl PodPlan {
    /// The labels every object of this sandbox carries.
    pub fn labels(&self) -> BTreeMap<String, String> {
        let mut labels = BTreeMap::from([
            (MANAGED_BY.to_owned(), MANAGER.to_owned()),
            (NAME.to_owned(), SANDBOX_APP.to_owned()),
            (SANDBOX.to_owned(), self.id.clone()),
            (HARNESS.to_owned(), label_value(&self.harness_id)),
            (WARM.to_owned(), self.session_id.is_none().to_string()),
        ]);
        if let Some(session) = &self.session_id {
            labels.insert(SESSION.to_owned(), session.clone());
        }
        labels
    }

    /// The Secret's name.
    pub fn secret_name(&self) -> String {
        secret_name(&self.id)
    }
}

/// The Secret's name for sandbox `id`.
pub fn secret_name(id: &str) -> String {
    format!("{id}-vault")
}

/// The NetworkPolicy's name for sandbox `id`.
pub fn policy_name(id: &str) -> String {
    format!("{id}-egress")
}

/// The label selector matching every object lap manages.
pub fn managed_selector() -> String {
    format!("{MANAGED_BY}={MANAGER},{NAME}={SANDBOX_APP}")
}

/// The label selector matching the objects of sandbox `id`.
pub fn sandbox_selector(id: &str) -> String {
    format!("{MANAGED_BY}={MANAGER},{SANDBOX}={id}")
}

/// A label value (at most 63 of `[A-Za-z0-9._-]`, alphanumeric at both ends) standing for `value`.
pub fn label_value(value: &str) -> String {
    let cleaned: String = value
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .take(63)
        .collect();
    cleaned.trim_matches(|c: char| !c.is_ascii_alphanumeric()).to_owned()
}

/// The init container's script: the egress fence, for both address families.
pub fn fence_script() -> String {
    format!(
        "set -eu\n\
         for t in iptables ip6tables; do\n\
         \x20 $t -w -P OUTPUT ACCEPT\n\
         \x20 $t -w -F OUTPUT\n\
         \x20 $t -w -A OUTPUT -o lo -j ACCEPT\n\
         \x20 $t -w -A OUTPUT -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT\n\
         \x20 $t -w -A OUTPUT -m owner --uid-owner {VAULT_UID} -j ACCEPT\n\
         \x20 $t -w -A OUTPUT -j REJECT\n\
         done\n"
    )
}

/// The security context of a container running as `uid`: Pod Security `restricted`.
fn locked(uid: i64, read_only_root: bool) -> Value {
    json!({
        "runAsNonRoot": true,
        "runAsUser": uid,
        "runAsGroup": uid,
        "allowPrivilegeEscalation": false,
        "privileged": false,
        "readOnlyRootFilesystem": read_only_root,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    })
}

/// The harness container: the agent's only home, stubs in its environment, the CA bundle and its
/// own token from the Secret.
fn harness_container(plan: &PodPlan) -> Value {
    let env: Vec<Value> = plan
        .env
        .iter()
        .map(|(name, value)| json!({"name": name, "value": value}))
        .collect();
    json!({
        "name": "harness",
        "image": plan.image,
        "imagePullPolicy": "IfNotPresent",
        "command": [
            "lap", "harness",
            "--listen", format!("{}:{HARNESS_PORT}", plan.reach.bind_host()),
            "--token-file", format!("/var/run/lap/harness/{}", keys::HARNESS_TOKEN),
        ],
        "workingDir": "/work",
        "env": env,
        "ports": [{"name": "harness", "containerPort": HARNESS_PORT, "protocol": "TCP"}],
        "securityContext": locked(HARNESS_UID, false),
        "resources": plan.defaults.clone().with_overrides(&plan.limits).json(),
        "volumeMounts": [
            {"name": "work", "mountPath": "/work"},
            {"name": "tmp", "mountPath": "/tmp"},
            {"name": "ca-bundle", "mountPath": crate::sandbox::CA_BUNDLE_PATH,
             "subPath": keys::CA_BUNDLE, "readOnly": true},
            {"name": "harness-token", "mountPath": "/var/run/lap/harness", "readOnly": true},
        ],
    })
}

/// The volumes the harness container mounts, but for its token ([`harness_token_volume`]).
fn harness_volumes(plan: &PodPlan) -> Vec<Value> {
    vec![
        work_volume(plan.workspace_claim.as_deref()),
        json!({"name": "tmp", "emptyDir": {"medium": "Memory", "sizeLimit": "256Mi"}}),
        json!({"name": "ca-bundle", "secret": {"secretName": plan.secret_name(), "defaultMode": 0o444,
            "items": [{"key": keys::CA_BUNDLE, "path": keys::CA_BUNDLE}]}}),
    ]
}

fn harness_token_volume(plan: &PodPlan) -> Value {
    json!({"name": "harness-token", "secret": {"secretName": plan.secret_name(), "defaultMode": 0o444,
        "items": [{"key": keys::HARNESS_TOKEN, "path": keys::HARNESS_TOKEN}]}})
}

/// The Pod: with its vault sidecar and egress fence, or (gateway mode) the harness alone.
pub fn pod(plan: &PodPlan) -> Pod {
    let mut annotations = serde_json::Map::new();
    if let Some(pids) = plan.limits.pids {
        annotations.insert(PIDS_ANNOTATION.to_owned(), json!(pids.to_string()));
    }
    let spec = match plan.vault {
        VaultMode::Sidecar => sidecar_pod_spec(plan),
        VaultMode::Gateway { .. } => gateway_pod_spec(plan),
    };
    let mut value = json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": plan.id,
            "namespace": plan.namespace,
            "labels": plan.labels(),
            "annotations": annotations,
        },
        "spec": {
            "restartPolicy": "Never",
            "automountServiceAccountToken": false,
            "enableServiceLinks": false,
            "hostNetwork": false,
            "hostPID": false,
            "hostIPC": false,
            "terminationGracePeriodSeconds": 5,
        },
    });
    if let (Some(base), Value::Object(extra)) = (value["spec"].as_object_mut(), spec) {
        base.extend(extra);
    }
    serde_json::from_value(value).expect("the Pod manifest has the Pod schema (pinned by the golden tests)")
}

/// A gateway-mode Pod's security context, container (the harness alone) and volumes.
fn gateway_pod_spec(plan: &PodPlan) -> Value {
    let mut volumes = harness_volumes(plan);
    volumes.push(harness_token_volume(plan));
    json!({
        "securityContext": {
            "runAsNonRoot": true,
            "fsGroup": HARNESS_UID,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [harness_container(plan)],
        "volumes": volumes,
    })
}

/// A sidecar-mode Pod's security context, init container (the egress fence), containers (the
/// harness and its vault) and volumes.
fn sidecar_pod_spec(plan: &PodPlan) -> Value {
    let mut volumes = harness_volumes(plan);
    volumes.extend([
        json!({"name": "vault-ca", "secret": {"secretName": plan.secret_name(), "defaultMode": 0o440,
            "items": [{"key": keys::CA_CERT, "path": keys::CA_CERT}, {"key": keys::CA_KEY, "path": keys::CA_KEY}]}}),
        json!({"name": "vault-binding", "secret": {"secretName": plan.secret_name(), "defaultMode": 0o440,
            "items": [{"key": keys::BINDING, "path": keys::BINDING}]}}),
        json!({"name": "vault-admin", "secret": {"secretName": plan.secret_name(), "defaultMode": 0o440,
            "items": [{"key": keys::ADMIN_TOKEN, "path": keys::ADMIN_TOKEN}]}}),
        harness_token_volume(plan),
    ]);
    json!({
        "securityContext": {
            "runAsNonRoot": true,
            "fsGroup": VAULT_UID,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "initContainers": [{
            "name": "egress-fence",
            "image": plan.image,
            "imagePullPolicy": "IfNotPresent",
            "command": ["/bin/sh", "-c", fence_script()],
            "securityContext": {
                "runAsNonRoot": false,
                "runAsUser": 0,
                "allowPrivilegeEscalation": false,
                "privileged": false,
                "readOnlyRootFilesystem": true,
                "capabilities": {"drop": ["ALL"], "add": ["NET_ADMIN", "NET_RAW"]},
                "seccompProfile": {"type": "RuntimeDefault"},
            },
            "resources": {
                "requests": {"cpu": "10m", "memory": "16Mi"},
                "limits": {"cpu": "100m", "memory": "64Mi"},
            },
        }],
        "containers": [
            harness_container(plan),
            {
                "name": "vault",
                "image": plan.image,
                "imagePullPolicy": "IfNotPresent",
                "command": [
                    "lap", "vault", "sidecar",
                    "--listen", format!("127.0.0.1:{PROXY_PORT}"),
                    "--ca-dir", "/var/run/lap/ca",
                    "--binding", format!("/var/run/lap/binding/{}", keys::BINDING),
                    "--admin", format!("{}:{ADMIN_PORT}", plan.reach.bind_host()),
                    "--admin-token-file", format!("/var/run/lap/admin/{}", keys::ADMIN_TOKEN),
                ],
                "ports": [{"name": "vault-admin", "containerPort": ADMIN_PORT, "protocol": "TCP"}],
                // With port-forward the admin endpoint listens on the pod's loopback only,
                // which an httpGet probe (sent by the kubelet to the pod IP) cannot reach: ask
                // from inside.
                "readinessProbe": {
                    "exec": {"command": ["curl", "-fsS", "-o", "/dev/null", format!("http://127.0.0.1:{ADMIN_PORT}/health")]},
                    "periodSeconds": 2,
                },
                "securityContext": locked(VAULT_UID, true),
                "resources": Resources::vault().json(),
                "volumeMounts": [
                    {"name": "vault-ca", "mountPath": "/var/run/lap/ca", "readOnly": true},
                    {"name": "vault-binding", "mountPath": "/var/run/lap/binding", "readOnly": true},
                    {"name": "vault-admin", "mountPath": "/var/run/lap/admin", "readOnly": true},
                ],
            },
        ],
        "volumes": volumes,
    })
}

/// The `/work` volume: the workspace claim, else an `emptyDir`.
fn work_volume(claim: Option<&str>) -> Value {
    match claim {
        Some(claim) => json!({"name": "work", "persistentVolumeClaim": {"claimName": claim}}),
        None => json!({"name": "work", "emptyDir": {}}),
    }
}

/// Where workspace claims are provisioned and how big they are (`lap serve --kube-workspace-class`,
/// `--kube-workspace-size`, `--kube-snapshot-class`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkspaceStorage {
    /// The StorageClass of new claims (`None`: the cluster's default class).
    pub class: Option<String>,
    /// The storage each claim asks for, a Kubernetes quantity (`10Gi`).
    pub size: String,
    /// The VolumeSnapshotClass of snapshots (`None`: the cluster's default snapshot class).
    pub snapshot_class: Option<String>,
}

/// What a new workspace claim starts as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClaimSource<'a> {
    /// An empty volume.
    Empty,
    /// A clone of the claim of this name (CSI volume cloning).
    Claim(&'a str),
    /// The content of the VolumeSnapshot of this name.
    Snapshot(&'a str),
}

/// The name of the workspace claim made for session `session` (one made with a warm Pod is named
/// after the Pod: [`warm_claim_name`]; the backend finds either by its labels).
pub fn session_claim_name(session: &str) -> String {
    format!("lap-work-{}", label_value(session).to_ascii_lowercase())
}

/// The name of the workspace claim made with warm Pod `id`.
pub fn warm_claim_name(id: &str) -> String {
    format!("{id}-work")
}

/// The name of the VolumeSnapshot of lap's snapshot `snapshot` (its id).
pub fn snapshot_name(snapshot: &str) -> String {
    format!("lap-snap-{}", label_value(snapshot).to_ascii_lowercase())
}

/// The labels of a workspace claim: of session `session`, or, while warm, of Pod `sandbox`.
pub fn claim_labels(session: Option<&str>, sandbox: Option<&str>) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::from([
        (MANAGED_BY.to_owned(), MANAGER.to_owned()),
        (NAME.to_owned(), WORKSPACE_APP.to_owned()),
    ]);
    if let Some(session) = session {
        labels.insert(SESSION.to_owned(), session.to_owned());
    }
    if let Some(sandbox) = sandbox {
        labels.insert(SANDBOX.to_owned(), sandbox.to_owned());
        labels.insert(WARM.to_owned(), session.is_none().to_string());
    }
    labels
}

/// The label selector of session `session`'s workspace claims.
pub fn session_claim_selector(session: &str) -> String {
    format!("{MANAGED_BY}={MANAGER},{NAME}={WORKSPACE_APP},{SESSION}={session}")
}

/// The label selector of every workspace claim lap manages.
pub fn claim_selector() -> String {
    format!("{MANAGED_BY}={MANAGER},{NAME}={WORKSPACE_APP}")
}

/// A workspace claim `name` of `size` (a quantity) in `namespace`, labelled `labels`, owned by
/// `owner` (a warm Pod) or by nothing, starting as `source`. `class`: its StorageClass (a clone must
/// be of its source's).
pub fn workspace_claim(
    namespace: &str,
    name: &str,
    labels: BTreeMap<String, String>,
    class: Option<&str>,
    size: &str,
    source: ClaimSource<'_>,
    owner: Option<&OwnerReference>,
) -> PersistentVolumeClaim {
    let mut spec = json!({
        "accessModes": ["ReadWriteOnce"],
        "volumeMode": "Filesystem",
        "resources": {"requests": {"storage": size}},
    });
    if let Some(class) = class {
        spec["storageClassName"] = json!(class);
    }
    match source {
        ClaimSource::Empty => {}
        ClaimSource::Claim(claim) => spec["dataSource"] = json!({"kind": "PersistentVolumeClaim", "name": claim}),
        ClaimSource::Snapshot(snapshot) => {
            spec["dataSource"] = json!({"apiGroup": SNAPSHOT_GROUP, "kind": "VolumeSnapshot", "name": snapshot});
        }
    }
    let mut value = json!({
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "spec": spec,
    });
    if let Some(owner) = owner {
        value["metadata"]["ownerReferences"] = json!([owner]);
    }
    serde_json::from_value(value)
        .expect("the claim manifest has the PersistentVolumeClaim schema (pinned by the golden tests)")
}

/// The merge patch by which session `session` adopts the claim of the warm Pod it claimed: no owner
/// any more (deleting the Pod keeps it), the session's labels.
pub fn adopt_claim_patch(session: &str) -> Value {
    json!({
        "metadata": {
            "ownerReferences": null,
            "labels": {SESSION: session, WARM: "false", SANDBOX: null},
        }
    })
}

/// The CSI VolumeSnapshot `lap-snap-<snapshot>` of session `session`'s claim `claim`
/// (`snapshot.storage.k8s.io/v1`; `class`: its VolumeSnapshotClass, `None` for the default).
pub fn volume_snapshot(namespace: &str, snapshot: &str, session: &str, claim: &str, class: Option<&str>) -> Value {
    let mut spec = json!({"source": {"persistentVolumeClaimName": claim}});
    if let Some(class) = class {
        spec["volumeSnapshotClassName"] = json!(class);
    }
    json!({
        "apiVersion": format!("{SNAPSHOT_GROUP}/{SNAPSHOT_VERSION}"),
        "kind": "VolumeSnapshot",
        "metadata": {
            "name": snapshot_name(snapshot),
            "namespace": namespace,
            "labels": {MANAGED_BY: MANAGER, NAME: SNAPSHOT_APP, SESSION: session},
        },
        "spec": spec,
    })
}

/// What the Secret holds. `binding` carries real values: it is written into the Secret only.
pub struct SecretData<'a> {
    pub binding_json: &'a [u8],
    pub ca_cert_pem: &'a [u8],
    pub ca_key_pem: &'a [u8],
    pub ca_bundle_pem: &'a [u8],
    pub admin_token: &'a [u8],
    pub harness_token: &'a [u8],
}

/// The Secret, owned by the Pod `owner` (its uid comes back from creating it).
pub fn secret(plan: &PodPlan, owner: Option<&OwnerReference>, data: &SecretData<'_>) -> Secret {
    secret_of(
        plan,
        owner,
        &[
            (keys::BINDING, data.binding_json),
            (keys::CA_CERT, data.ca_cert_pem),
            (keys::CA_KEY, data.ca_key_pem),
            (keys::CA_BUNDLE, data.ca_bundle_pem),
            (keys::ADMIN_TOKEN, data.admin_token),
            (keys::HARNESS_TOKEN, data.harness_token),
        ],
    )
}

/// A gateway-mode Pod's Secret: the CA bundle (the system roots and the certificate, never the
/// key, of `lap serve`'s vault CA: public) and the harness token. No binding, no key, no admin token:
/// the Pod has no vault.
pub fn gateway_secret(
    plan: &PodPlan,
    owner: Option<&OwnerReference>,
    ca_bundle_pem: &[u8],
    harness_token: &[u8],
) -> Secret {
    secret_of(
        plan,
        owner,
        &[(keys::CA_BUNDLE, ca_bundle_pem), (keys::HARNESS_TOKEN, harness_token)],
    )
}

fn secret_of(plan: &PodPlan, owner: Option<&OwnerReference>, data: &[(&str, &[u8])]) -> Secret {
    use base64::Engine;
    let b64 = |bytes: &[u8]| base64::engine::general_purpose::STANDARD.encode(bytes);
    let data: serde_json::Map<String, Value> = data
        .iter()
        .map(|(key, bytes)| ((*key).to_owned(), json!(b64(bytes))))
        .collect();
    let value = json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": plan.secret_name(),
            "namespace": plan.namespace,
            "labels": plan.labels(),
            "ownerReferences": owner.into_iter().collect::<Vec<_>>(),
        },
        "type": "Opaque",
        "immutable": false,
        "data": data,
    });
    serde_json::from_value(value).expect("the Secret manifest has the Secret schema (pinned by the golden tests)")
}

/// Private, link-local, metadata and unique-local ranges the NetworkPolicy never lets a pod reach.
pub const BLOCKED_V4: &[&str] = &[
    "10.0.0.0/8",
    "100.64.0.0/10",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "172.16.0.0/12",
    "192.168.0.0/16",
];
pub const BLOCKED_V6: &[&str] = &["fc00::/7", "fe80::/10", "::1/128"];

/// The NetworkPolicy around the Pod `owner`: in sidecar mode the second fence (the iptables one
/// is first); in gateway mode the only one, letting the Pod reach nothing but the gateway's port on
/// `lap serve` pods and the cluster DNS.
pub fn network_policy(plan: &PodPlan, owner: Option<&OwnerReference>) -> NetworkPolicy {
    let dns = json!({
        "to": [{
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
            "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}},
        }],
        "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}],
    });
    let (ingress_ports, out) = match plan.vault {
        VaultMode::Sidecar => (
            json!([
                {"protocol": "TCP", "port": HARNESS_PORT},
                {"protocol": "TCP", "port": ADMIN_PORT},
            ]),
            json!({
                "to": [
                    {"ipBlock": {"cidr": "0.0.0.0/0", "except": BLOCKED_V4}},
                    {"ipBlock": {"cidr": "::/0", "except": BLOCKED_V6}},
                ],
            }),
        ),
        VaultMode::Gateway { port } => (
            json!([{"protocol": "TCP", "port": HARNESS_PORT}]),
            json!({
                "to": [{"podSelector": {"matchLabels": {NAME: SERVE_APP}}}],
                "ports": [{"protocol": "TCP", "port": port}],
            }),
        ),
    };
    let value = json!({
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {
            "name": policy_name(&plan.id),
            "namespace": plan.namespace,
            "labels": plan.labels(),
            "ownerReferences": owner.into_iter().collect::<Vec<_>>(),
        },
        "spec": {
            "podSelector": {"matchLabels": {SANDBOX: plan.id}},
            "policyTypes": ["Ingress", "Egress"],
            "ingress": [{
                "from": [{"podSelector": {"matchLabels": {NAME: SERVE_APP}}}],
                "ports": ingress_ports,
            }],
            "egress": [dns, out],
        },
    });
    serde_json::from_value(value)
        .expect("the NetworkPolicy manifest has the NetworkPolicy schema (pinned by the golden tests)")
}

/// The owner reference naming a created Pod.
pub fn owner(pod: &Pod) -> Option<OwnerReference> {
    Some(OwnerReference {
        api_version: "v1".into(),
        kind: "Pod".into(),
        name: pod.metadata.name.clone()?,
        uid: pod.metadata.uid.clone()?,
        controller: Some(true),
        block_owner_deletion: Some(true),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_valid_whatever_the_harness_id() {
        assert_eq!(label_value("claude-code"), "claude-code");
        assert_eq!(label_value("my agent/v2"), "my_agent_v2");
        assert_eq!(label_value("-x-"), "x");
        assert_eq!(label_value(&"a".repeat(80)).len(), 63);
    }

    #[test]
    fn an_agent_limit_is_both_request_and_limit() {
        let limits = LimitOverrides {
            memory_bytes: Some(1 << 30),
            pids: None,
            cpu_millis: Some(1500),
        };
        let r = Resources::harness_default().with_overrides(&limits);
        assert_eq!((r.cpu_request.as_str(), r.cpu_limit.as_str()), ("1500m", "1500m"));
        assert_eq!(
            (r.memory_request.as_str(), r.memory_limit.as_str()),
            ("1073741824", "1073741824")
        );
    }
}
