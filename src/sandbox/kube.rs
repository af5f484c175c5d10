//! The Kubernetes backend: one Pod per sandbox, through the API server (kube-rs).
//!
//! It owns the cluster side of a sandbox's life: creating its Pod, Secret and NetworkPolicy
//! ([`manifest`]) and waiting until the Pod is ready or has failed for a reason a person can act on
//! ([`status`]); deleting all three; listing managed Pods by label so a restarted `lap serve` adopts
//! them; claiming a warm Pod the pool handed out with one label patch carrying a `resourceVersion`
//! precondition (a Pod that changed since it was read — failed, or taken by another claimer — is
//! never claimed by a stale decision: 409, read again, look afresh); late binding
//! of a session's credentials into the Pod's vault sidecar (the Secret, then the sidecar's
//! authenticated `PUT /binding`); byte streams to ports inside the Pod ([`Reach`]: through the API
//! server's port-forward, which needs no NodePort and works from a laptop against any cluster, or
//! straight to the pod IP from inside the cluster); over such a stream, after the pod's harness
//! token, the harness protocol's `start`, `wait`, `exec` and `attach` ([`harness`]); and a pod
//! watcher ([`Kube::pod_states`]) whose failures and deletions feed the reconciler
//! ([`Sandbox::events`]). Each session's workspace is a PersistentVolumeClaim that outlives its Pod,
//! snapshotted as a CSI VolumeSnapshot ([`workspace`]).
//!
//! What it deliberately does not own: session state (the reconciler writes that, from
//! [`status::pod_state`]), and the vault itself. In sidecar mode ([`KubeVault::Sidecar`], the
//! default) the vault runs in the Pod (`lap vault sidecar`), so [`Sandbox::proxy_listener`] is
//! refused: no egress of the sandbox passes `lap serve`. The backend says so once
//! ([`VaultPlacement::InSandbox`]); the control plane then binds a session through
//! [`Sandbox::bind_vault`] and pulls the sidecar's records (`GET /interceptions`) through
//! [`Sandbox::vault_records`]. In gateway mode ([`KubeVault::Gateway`]) the Pod holds only the
//! harness and `lap serve`'s vault serves it ([`VaultPlacement::Served`]): the sandbox's proxy
//! listener is its route through `lap serve`'s gateway ([`crate::vault::gateway`]), honouring its
//! proxy credential from its pod IP only, and the proxy variables of its environment name the
//! gateway with that credential ([`Kube::pod_env`]).
//!
//! Trust: the API credentials are the user's kubeconfig (or the in-cluster service account, which
//! needs only the namespaced rights in `kind/rbac.yaml`). Real credential values leave this process
//! only in the Secret's `binding.json` and in the body of `PUT /binding`, both bound for the vault
//! container; neither is logged (gateway mode: neither exists, the values stay in `lap serve`). In
//! sidecar mode each Pod's vault signs with a CA made for that Pod alone when its
//! Secret is made ([`pod_ca`]; warm Pods too): its harness trusts the system roots and that CA, so a
//! key taken from one Pod (a node or container escape) signs for no other sandbox, and `lap serve`'s
//! own CA (the local backend's) never enters the cluster. Nothing after creation needs the Pod's CA:
//! a claim, late binding, the records and adoption by a restarted `lap serve` use the Secret's tokens. Each pod's harness and admin endpoint want that pod's own random
//! tokens (from its Secret), so reaching one pod's ports opens nothing of another's.

pub mod harness;
pub mod manifest;
pub mod status;
pub mod workspace;

use std::time::Duration;

use async_trait::async_trait;
use k8s_openapi::api::core::v1::{Pod, Secret};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;

use self::manifest::{PodPlan, Resources, SecretData};
pub use self::manifest::{Reach, VaultMode};
use self::status::PodState;
use super::{
    AgentStart, ExecChunk, ExecSpec, KeptWorkspace, Sandbox, SandboxChange, SandboxError, SandboxEvent, SandboxInfo,
    SandboxSpec, TtyChannel, VaultPlacement, WorkspaceSource,
};
pub use super::{BoundCredential, VaultBinding};

/// How often a Pod coming up is looked at.
pub const READY_POLL: Duration = Duration::from_millis(500);
/// How long a Pod may take to become ready by default (an image pull on a cold node is slow).
pub const READY_TIMEOUT: Duration = Duration::from_secs(180);
/// How long a connection to a pod's IP may take before it is given up.
const POD_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How often a claim reads a warm Pod again after it changed under the claim.
const CLAIM_ATTEMPTS: usize = 3;
/// Largest response the vault's admin endpoint may send back (its kept records, a few MB at most).
const MAX_ADMIN_RESPONSE: usize = 8 * 1024 * 1024;

/// What the backend needs besides a client.
#[derive(Debug, Clone)]
pub struct KubeConfig {
    pub namespace: String,
    /// The sandbox image (see `kind/Dockerfile`).
    pub image: String,
    pub defaults: Resources,
    /// The system roots, PEM: each Pod's harness trusts these plus that Pod's own vault CA, which is
    /// made with the Pod and exists nowhere else (no key of `lap serve`'s goes into a Pod).
    pub system_roots_pem: String,
    pub ready_timeout: Duration,
    /// How the pods' ports are reached.
    pub reach: Reach,
    /// Each session's workspace as a PersistentVolumeClaim of this storage (`None`: an `emptyDir`
    /// per Pod, gone with it).
    pub workspace: Option<manifest::WorkspaceStorage>,
    /// Where the pods' vault runs: a sidecar in each, or `lap serve`'s gateway.
    pub vault: KubeVault,
}

/// Where the vault of the backend's pods runs (`lap serve --kube-vault`).
#[derive(Debug, Clone)]
pub enum KubeVault {
    /// A `lap vault sidecar` in each pod, behind its iptables fence.
    Sidecar,
    /// `lap serve`'s vault, through its gateway.
    Gateway(GatewayConfig),
}

/// The vault gateway as the backend's pods see it.
#[derive(Clone)]
pub struct GatewayConfig {
    /// The routes of `lap serve`'s gateway listener.
    pub gateway: std::sync::Arc<crate::vault::gateway::Gateway>,
    /// Where pods dial it, `host:port` (the Service of `lap serve`).
    pub addr: String,
    /// The port the gateway listens on in the `lap serve` pods (what the NetworkPolicy lets out).
    pub port: u16,
    /// The certificate (never the key) of `lap serve`'s vault CA, PEM: every gateway-mode pod
    /// trusts it.
    pub ca_cert_pem: String,
}

impl std::fmt::Debug for GatewayConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GatewayConfig")
            .field("addr", &self.addr)
            .field("port", &self.port)
            .finish_non_exhaustive()
    }
}

/// Reads the user's kubeconfig (`context`: `--kube-context`, else its current one) or, when there
/// is none, the in-cluster configuration. Returns the client, the namespace to use (`namespace`, else
/// the context's, else `default`) and whether the configuration is the in-cluster one (`lap serve`
/// runs in a pod of the cluster).
pub async fn client(
    context: Option<String>,
    namespace: Option<String>,
) -> Result<(kube::Client, String, bool), SandboxError> {
    let options = kube::config::KubeConfigOptions {
        context,
        ..Default::default()
    };
    let (config, in_cluster) = match kube::Config::from_kubeconfig(&options).await {
        Ok(config) => (config, false),
        // Like `kube::Config::infer`: no kubeconfig, then the pod's service account.
        Err(kubeconfig) if options.context.is_none() => match kube::Config::incluster() {
            Ok(config) => (config, true),
            Err(incluster) => return Err(no_cluster(&format!("{kubeconfig}; {incluster}"))),
        },
        Err(err) => return Err(no_cluster(&err.to_string())),
    };
    let namespace = namespace.unwrap_or_else(|| config.default_namespace.clone());
    Ok((retrying_client(config)?, namespace, in_cluster))
}

/// How a call the API server answers 429, 503 or 504 is tried again: at most [`API_RETRIES`] more
/// times, backing off from 50 ms to at most 2 s, so a busy API server slows a call by seconds, not
/// the minutes of kube-rs's default policy (15 retries), and an overloaded or restarting one gives a
/// readable error a person or the reconciler can act on.
const API_RETRIES: u32 = 4;

/// A client of `config` with [`API_RETRIES`] in place of kube-rs's default retries.
pub fn retrying_client(mut config: kube::Config) -> Result<kube::Client, SandboxError> {
    use kube::client::retry::RetryPolicy;
    config.default_retry = false;
    let policy = RetryPolicy::new(Duration::from_millis(50), Duration::from_secs(2), API_RETRIES, false)
        .map_err(|e| no_cluster(&e.to_string()))?;
    let client = kube::client::ClientBuilder::try_from(config)
        .map_err(|e| no_cluster(&e.to_string()))?
        // Retrying clones the service, which the builder's boxed one cannot be: a buffer can.
        .with_layer(&tower::buffer::BufferLayer::new(1024))
        .with_layer(&tower::retry::RetryLayer::new(policy))
        .build();
    Ok(client)
}

fn no_cluster(cause: &str) -> SandboxError {
    SandboxError::Unavailable {
        backend: "kube",
        reason: format!("no Kubernetes cluster is configured ({cause})"),
    }
}

/// The tokens of one sandbox's Pod, from its Secret.
#[derive(Clone)]
struct Tokens {
    /// The vault's admin endpoint's bearer token.
    admin: String,
    /// What the harness asks of every connection.
    harness: String,
}

/// A byte stream to a port of a sandbox's Pod.
pub type PodStream = Box<dyn harness::HarnessStream>;

/// The Kubernetes backend.
pub struct Kube {
    client: kube::Client,
    config: KubeConfig,
    /// Each sandbox's tokens, once read from its Secret.
    tokens: std::sync::Mutex<std::collections::HashMap<String, Tokens>>,
    /// Whether the API server serves VolumeSnapshots, once asked.
    snapshot_api: std::sync::Mutex<Option<workspace::SnapshotApi>>,
}

impl Kube {
    pub fn new(client: kube::Client, config: KubeConfig) -> Self {
        Self {
            client,
            config,
            tokens: Default::default(),
            snapshot_api: Default::default(),
        }
    }

    /// The namespace sandboxes are made in.
    pub fn namespace(&self) -> &str {
        &self.config.namespace
    }

    fn pods(&self) -> Api<Pod> {
        Api::namespaced(self.client.clone(), &self.config.namespace)
    }

    fn secrets(&self) -> Api<Secret> {
        Api::namespaced(self.client.clone(), &self.config.namespace)
    }

    fn policies(&self) -> Api<NetworkPolicy> {
        Api::namespaced(self.client.clone(), &self.config.namespace)
    }

    /// The API server's version, e.g. `v1.35.0`: reachability, for `GET /api/v1/health/k8s`.
    pub async fn server_version(&self) -> Result<String, SandboxError> {
        let info = self.client.apiserver_version().await.map_err(api_error)?;
        Ok(info.git_version)
    }

    /// The plan of a new sandbox `id` for `spec`.
    pub fn plan(&self, id: &str, spec: &SandboxSpec) -> PodPlan {
        PodPlan {
            id: id.to_owned(),
            namespace: self.config.namespace.clone(),
            image: self.config.image.clone(),
            harness_id: spec.harness_id.clone(),
            session_id: spec.session_id.clone(),
            env: self.pod_env(id, spec.env.clone()),
            limits: spec.limits,
            defaults: self.config.defaults.clone(),
            reach: self.config.reach,
            workspace_claim: None,
            vault: match &self.config.vault {
                KubeVault::Sidecar => VaultMode::Sidecar,
                KubeVault::Gateway(gateway) => VaultMode::Gateway { port: gateway.port },
            },
        }
    }

    /// Sandbox `id`'s environment: in gateway mode, the proxy variables that name the sandbox's
    /// own proxy port ([`crate::sandbox::PROXY_ADDR`]) name the gateway with `id`'s proxy
    /// credential instead; in sidecar mode, as it is.
    pub fn pod_env(&self, id: &str, mut env: Vec<(String, String)>) -> Vec<(String, String)> {
        if let KubeVault::Gateway(gateway) = &self.config.vault {
            let local = format!("http://{}", crate::sandbox::PROXY_ADDR);
            let url = crate::vault::gateway::proxy_url(id, &gateway.addr);
            for (_, value) in env.iter_mut().filter(|(_, value)| *value == local) {
                value.clone_from(&url);
            }
        }
        env
    }

    /// The Secret of the Pod `owner` of sandbox `plan`: in sidecar mode with a CA of its own, its
    /// (empty) binding and its admin token; in gateway mode with `lap serve`'s CA certificate only.
    fn make_secret(
        &self,
        plan: &PodPlan,
        owner: Option<&k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference>,
    ) -> Result<Secret, SandboxError> {
        let harness_token = new_token()?;
        if let KubeVault::Gateway(gateway) = &self.config.vault {
            let bundle = crate::vault::ca::trust_bundle(&self.config.system_roots_pem, &gateway.ca_cert_pem);
            return Ok(manifest::gateway_secret(
                plan,
                owner,
                bundle.as_bytes(),
                harness_token.as_bytes(),
            ));
        }
        let token = new_token()?;
        let binding = serde_json::to_vec(&VaultBinding::default()).map_err(|e| SandboxError::Backend(e.to_string()))?;
        let ca = pod_ca(&plan.id)?;
        let bundle = crate::vault::ca::trust_bundle(&self.config.system_roots_pem, &ca.cert_pem);
        let data = SecretData {
            binding_json: &binding,
            ca_cert_pem: ca.cert_pem.as_bytes(),
            ca_key_pem: ca.key_pem.expose().as_bytes(),
            ca_bundle_pem: bundle.as_bytes(),
            admin_token: token.as_bytes(),
            harness_token: harness_token.as_bytes(),
        };
        Ok(manifest::secret(plan, owner, &data))
    }

    /// Creates sandbox `id`'s objects and waits until its Pod is ready. On failure every object made
    /// is deleted again, but for a session's workspace claim, which is the session's.
    ///
    /// With workspaces kept, a session's Pod mounts the session's claim (made now when it has none);
    /// a warm Pod gets a claim of its own, owned by it until a session adopts it.
    pub async fn create_with_id(&self, id: &str, spec: &SandboxSpec) -> Result<SandboxInfo, SandboxError> {
        let mut plan = self.plan(id, spec);
        let warm_claim = self.workspace_storage().is_some() && spec.session_id.is_none();
        plan.workspace_claim = match &spec.session_id {
            Some(session) => self.claim_for_session(session).await?,
            None if warm_claim => Some(manifest::warm_claim_name(id)),
            None => None,
        };
        let created = self
            .pods()
            .create(&PostParams::default(), &manifest::pod(&plan))
            .await
            .map_err(api_error)?;
        let made = async {
            let owner = manifest::owner(&created);
            if warm_claim {
                self.create_warm_claim(id, owner.as_ref()).await?;
            }
            let secret = self.make_secret(&plan, owner.as_ref())?;
            self.secrets()
                .create(&PostParams::default(), &secret)
                .await
                .map_err(api_error)?;
            let policy = manifest::network_policy(&plan, owner.as_ref());
            self.policies()
                .create(&PostParams::default(), &policy)
                .await
                .map_err(api_error)?;
            self.wait_ready(id).await
        };
        match made.await {
            Ok(()) => Ok(info(&created, &self.config.namespace).unwrap_or_else(|| SandboxInfo {
                id: id.to_owned(),
                url: url(&self.config.namespace, id),
                harness_id: spec.harness_id.clone(),
                session_id: spec.session_id.clone(),
            })),
            Err(err) => {
                if let Err(cleanup) = self.delete_objects(id).await {
                    tracing::warn!(sandbox = id, error = %cleanup, "cannot delete a sandbox that failed to come up");
                }
                Err(err)
            }
        }
    }

    /// Waits until Pod `id` is ready; a failed Pod is an error with its reason.
    pub async fn wait_ready(&self, id: &str) -> Result<(), SandboxError> {
        let deadline = tokio::time::Instant::now() + self.config.ready_timeout;
        loop {
            let pod = self.pods().get_opt(id).await.map_err(api_error)?;
            let last = match pod.as_ref().map(status::pod_state).unwrap_or(PodState::Gone) {
                PodState::Ready => return Ok(()),
                PodState::Failed { reason } => return Err(SandboxError::Backend(reason)),
                PodState::Gone => return Err(SandboxError::NotFound(id.to_owned())),
                PodState::Pending { what } => what,
            };
            if tokio::time::Instant::now() >= deadline {
                return Err(SandboxError::Backend(format!(
                    "the sandbox pod `{id}` was not ready within {}s ({last})",
                    self.config.ready_timeout.as_secs()
                )));
            }
            tokio::time::sleep(READY_POLL).await;
        }
    }

    /// Every change of a managed Pod, as its sandbox id and [`PodState`], from a kube-runtime watcher
    /// (a list, then a watch from its resourceVersion, relisting when the watch expires, backing off
    /// while the API server cannot be reached). This is
    /// what lets the reconciler turn an image-pull failure, a crash loop, an eviction or an OOM kill
    /// into a `failed` or `dead` session with a readable reason, without polling every Pod. A
    /// deleted Pod comes as [`PodState::Gone`].
    pub fn pod_states(
        &self,
    ) -> impl futures_util::Stream<Item = Result<(String, PodState), SandboxError>> + Send + 'static {
        use ::kube::runtime::{WatchStreamExt, watcher};
        use futures_util::StreamExt;
        let config = watcher::Config::default().labels(&manifest::managed_selector());
        watcher::watcher(self.pods(), config)
            .default_backoff()
            .filter_map(|event| async move {
                let (pod, gone) = match event {
                    Ok(watcher::Event::Apply(pod) | watcher::Event::InitApply(pod)) => (pod, false),
                    Ok(watcher::Event::Delete(pod)) => (pod, true),
                    Ok(watcher::Event::Init | watcher::Event::InitDone) => return None,
                    Err(err) => return Some(Err(SandboxError::Backend(format!("the pod watch failed: {err}")))),
                };
                let id = pod.metadata.labels.as_ref()?.get(manifest::SANDBOX)?.clone();
                let state = if gone { PodState::Gone } else { status::pod_state(&pod) };
                Some(Ok((id, state)))
            })
    }

    /// Claims warm sandbox `id` for `session_id`: `true` when it is now labelled with the session,
    /// `false` when it is not claimable (gone, not ready, or no longer warm).
    ///
    /// The claim is one JSON merge patch of the Pod's labels that carries the `resourceVersion` the
    /// Pod was read at: the API server applies it only if nobody changed the Pod since, so a Pod
    /// that failed (its status changed) or that another claimer took is never claimed by a stale
    /// decision. A 409 means it changed: it is read again and looked at afresh.
    pub async fn claim_pod(&self, id: &str, session_id: &str) -> Result<bool, SandboxError> {
        for _ in 0..CLAIM_ATTEMPTS {
            let Some(pod) = self.pods().get_opt(id).await.map_err(api_error)? else {
                return Ok(false);
            };
            let warm = pod
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(manifest::WARM))
                .is_some_and(|w| w == "true");
            if !warm || status::pod_state(&pod) != PodState::Ready {
                return Ok(false);
            }
            let Some(version) = pod.metadata.resource_version.as_deref() else {
                return Ok(false);
            };
            let patch = claim_patch(version, session_id);
            match self
                .pods()
                .patch(id, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => return Ok(true),
                Err(kube::Error::Api(status)) if status.code == 409 => continue,
                Err(kube::Error::Api(status)) if status.code == 404 => return Ok(false),
                Err(err) => return Err(api_error(err)),
            }
        }
        Ok(false)
    }

    /// Binds a session's credentials into sandbox `id`'s vault: into its Secret (so a restarted
    /// sidecar keeps them), then live through the sidecar's admin endpoint (`PUT /binding`, with the
    /// admin token from the Secret), reached through port-forward.
    pub async fn bind(&self, id: &str, binding: &VaultBinding) -> Result<(), SandboxError> {
        use base64::Engine;
        let body = serde_json::to_vec(binding).map_err(|e| SandboxError::Backend(e.to_string()))?;
        let encoded = base64::engine::general_purpose::STANDARD.encode(&body);
        let patch = json!({"data": {manifest::keys::BINDING: encoded}});
        let secret = self
            .secrets()
            .patch(
                &manifest::secret_name(id),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await
            .map_err(api_error)?;
        let token = self.remember_tokens(id, &secret)?.admin;
        let stream = self.pod_stream(id, manifest::ADMIN_PORT).await?;
        let (status, _) = admin_request(stream, hyper::Method::PUT, "/binding", &token, body).await?;
        if status != 204 && status != 200 {
            return Err(SandboxError::Backend(format!(
                "the vault of sandbox `{id}` refused the binding (HTTP {status})"
            )));
        }
        Ok(())
    }

    /// The records of sandbox `id`'s vault after its position `after`, oldest first, from the
    /// sidecar's `GET /interceptions` (through port-forward, with the admin token of its Secret).
    pub async fn interceptions(
        &self,
        id: &str,
        after: u64,
    ) -> Result<Vec<crate::wire::api::Interception>, SandboxError> {
        let token = self.tokens(id).await?.admin;
        let stream = self.pod_stream(id, manifest::ADMIN_PORT).await?;
        let path = format!("/interceptions?after={after}");
        let (status, body) = admin_request(stream, hyper::Method::GET, &path, &token, Vec::new()).await?;
        if status != 200 {
            return Err(SandboxError::Backend(format!(
                "the vault of sandbox `{id}` refused to list its records (HTTP {status})"
            )));
        }
        serde_json::from_slice(&body)
            .map_err(|e| SandboxError::Backend(format!("the vault of sandbox `{id}` sent unreadable records: {e}")))
    }

    /// Sandbox `id`'s tokens: remembered, else read from its Secret.
    async fn tokens(&self, id: &str) -> Result<Tokens, SandboxError> {
        if let Some(tokens) = self.tokens.lock().unwrap_or_else(|p| p.into_inner()).get(id) {
            return Ok(tokens.clone());
        }
        let secret = self
            .secrets()
            .get(&manifest::secret_name(id))
            .await
            .map_err(api_error)?;
        self.remember_tokens(id, &secret)
    }

    fn remember_tokens(&self, id: &str, secret: &Secret) -> Result<Tokens, SandboxError> {
        let token = |key: &str, what: &str| {
            secret
                .data
                .as_ref()
                .and_then(|d| d.get(key))
                .map(|t| String::from_utf8_lossy(&t.0).trim().to_owned())
                .ok_or_else(|| SandboxError::Backend(format!("the secret of sandbox `{id}` has no {what}")))
        };
        let tokens = Tokens {
            // A gateway-mode pod has no vault, so no admin token.
            admin: match self.config.vault {
                KubeVault::Sidecar => token(manifest::keys::ADMIN_TOKEN, "vault admin token")?,
                KubeVault::Gateway(_) => String::new(),
            },
            harness: token(manifest::keys::HARNESS_TOKEN, "harness token")?,
        };
        self.tokens
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id.to_owned(), tokens.clone());
        Ok(tokens)
    }

    /// A byte stream to `port` inside sandbox `id`'s Pod: through the API server's port-forward,
    /// or straight to the pod's IP ([`Reach`]).
    pub async fn pod_stream(&self, id: &str, port: u16) -> Result<PodStream, SandboxError> {
        match self.config.reach {
            Reach::PortForward => {
                let mut forwarder = self.pods().portforward(id, &[port]).await.map_err(api_error)?;
                let stream = forwarder.take_stream(port).ok_or_else(|| {
                    SandboxError::Backend(format!("the port-forward to `{id}` has no stream for port {port}"))
                })?;
                Ok(Box::new(stream))
            }
            Reach::PodIp => {
                let ip = self.pod_ip(id).await?;
                let unreachable = |cause: &dyn std::fmt::Display| {
                    SandboxError::Backend(format!(
                        "cannot reach the sandbox pod `{id}` at {ip}:{port}: {cause} (pod IPs are reachable from \
                         inside the cluster; from outside it, run `lap serve --kube-reach port-forward`; see docs/troubleshooting.md#kube-pod-ip)"
                    ))
                };
                let stream = tokio::time::timeout(POD_CONNECT_TIMEOUT, tokio::net::TcpStream::connect((ip, port)))
                    .await
                    .map_err(|_| unreachable(&format!("no answer within {}s", POD_CONNECT_TIMEOUT.as_secs())))?
                    .map_err(|e| unreachable(&e))?;
                let _ = stream.set_nodelay(true);
                Ok(Box::new(stream))
            }
        }
    }

    /// Sandbox `id`'s pod IP, from its status.
    async fn pod_ip(&self, id: &str) -> Result<std::net::IpAddr, SandboxError> {
        let pod = self.pods().get_opt(id).await.map_err(api_error)?;
        let pod = pod.ok_or_else(|| SandboxError::NotFound(id.to_owned()))?;
        let ip = pod
            .status
            .as_ref()
            .and_then(|s| s.pod_ip.as_deref())
            .ok_or_else(|| SandboxError::Backend(format!("the sandbox pod `{id}` has no IP yet")))?;
        ip.parse()
            .map_err(|_| SandboxError::Backend(format!("the sandbox pod `{id}` has no usable IP (`{ip}`)")))
    }

    /// A stream to sandbox `id`'s harness, its token sent: ready for one request.
    pub async fn harness_stream(&self, id: &str) -> Result<PodStream, SandboxError> {
        let token = self.tokens(id).await?.harness;
        let mut stream = self.pod_stream(id, manifest::HARNESS_PORT).await?;
        crate::wire::harness::write_auth(&mut stream, &token)
            .await
            .map_err(|e| SandboxError::Backend(format!("cannot talk to the harness of `{id}`: {e}")))?;
        Ok(stream)
    }

    /// Deletes sandbox `id`'s Pod, Secret and NetworkPolicy; objects already gone are fine. The
    /// owner references would collect the last two anyway; deleting them here does not wait for that.
    pub async fn delete_objects(&self, id: &str) -> Result<(), SandboxError> {
        // Each is tried even when one before failed, so a refusal leaves as little behind as it can.
        let params = DeleteParams::default();
        let now = DeleteParams {
            grace_period_seconds: Some(0),
            ..params.clone()
        };
        self.tokens.lock().unwrap_or_else(|p| p.into_inner()).remove(id);
        let pod = gone_ok(self.pods().delete(id, &now).await.map(|_| ()));
        let secret = gone_ok(
            self.secrets()
                .delete(&manifest::secret_name(id), &params)
                .await
                .map(|_| ()),
        );
        let policy = gone_ok(
            self.policies()
                .delete(&manifest::policy_name(id), &params)
                .await
                .map(|_| ()),
        );
        pod.and(secret).and(policy)
    }
}

/// The merge patch that claims a warm Pod listed at `resource_version` for `session_id`.
pub fn claim_patch(resource_version: &str, session_id: &str) -> serde_json::Value {
    json!({
        "metadata": {
            "resourceVersion": resource_version,
            "labels": {manifest::WARM: "false", manifest::SESSION: session_id},
        }
    })
}

/// A new sandbox id: also the Pod's name.
pub fn new_id() -> String {
    let id = uuid::Uuid::new_v4().simple().to_string();
    format!("lap-{}", &id[..16])
}

/// A vault CA for sandbox `id` alone: its vault signs with it, its harness trusts it, and it is in
/// no other Pod's Secret, nor in `lap serve`'s data dir.
pub fn pod_ca(id: &str) -> Result<crate::vault::ca::CaPem, SandboxError> {
    crate::vault::ca::generate_pem(&format!("lap egress vault CA for {id}"))
        .map_err(|e| SandboxError::Backend(crate::error::chain(&e)))
}

fn new_token() -> Result<String, SandboxError> {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 32];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| SandboxError::Backend("no randomness for the vault admin token".into()))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

fn url(namespace: &str, id: &str) -> String {
    format!("kube://{namespace}/{id}")
}

/// The sandbox a managed Pod is, from its labels; `None` for a Pod being deleted or not lap's.
pub fn info(pod: &Pod, namespace: &str) -> Option<SandboxInfo> {
    if pod.metadata.deletion_timestamp.is_some() {
        return None;
    }
    let labels = pod.metadata.labels.as_ref()?;
    if labels.get(manifest::MANAGED_BY).map(String::as_str) != Some(manifest::MANAGER) {
        return None;
    }
    let id = labels.get(manifest::SANDBOX)?.clone();
    Some(SandboxInfo {
        url: url(namespace, &id),
        harness_id: labels.get(manifest::HARNESS).cloned().unwrap_or_default(),
        session_id: labels.get(manifest::SESSION).cloned(),
        id,
    })
}

fn gone_ok(result: Result<(), kube::Error>) -> Result<(), SandboxError> {
    match result {
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
        other => other.map_err(api_error),
    }
}

fn api_error(err: kube::Error) -> SandboxError {
    match err {
        kube::Error::Api(status) => {
            // The two refusals a new setup meets first, with what to do about them.
            let advice = match status.code {
                403 => {
                    "; the user or service account needs the Role in `kind/rbac.yaml` in this namespace; see \
                     docs/troubleshooting.md#kube-forbidden"
                }
                404 if status.message.starts_with("namespaces ") => {
                    "; create the namespace (`kubectl apply -f kind/namespace.yaml` makes `lap`) or pass \
                     `--kube-namespace`; see docs/troubleshooting.md#kube-namespace"
                }
                _ => "",
            };
            SandboxError::Backend(format!(
                "the Kubernetes API refused: {} ({}, HTTP {}){advice}",
                status.message, status.reason, status.code
            ))
        }
        other => SandboxError::Backend(format!("cannot reach the Kubernetes API: {other}")),
    }
}

/// One request to the vault's admin endpoint over `stream` (HTTP/1.1); returns the status code and
/// the body (at most [`MAX_ADMIN_RESPONSE`] bytes).
async fn admin_request<S>(
    stream: S,
    method: hyper::Method,
    path: &str,
    token: &str,
    body: Vec<u8>,
) -> Result<(u16, hyper::body::Bytes), SandboxError>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    use http_body_util::{BodyExt, Full, Limited};
    let failed = |e: &dyn std::fmt::Display| SandboxError::Backend(format!("cannot talk to the vault sidecar: {e}"));
    let (mut sender, connection) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
        .await
        .map_err(|e| failed(&e))?;
    tokio::spawn(connection);
    let request = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header(hyper::header::HOST, "127.0.0.1")
        .header(hyper::header::AUTHORIZATION, format!("Bearer {token}"))
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .body(Full::new(hyper::body::Bytes::from(body)))
        .map_err(|e| failed(&e))?;
    let response = sender.send_request(request).await.map_err(|e| failed(&e))?;
    let status = response.status().as_u16();
    let body = Limited::new(response.into_body(), MAX_ADMIN_RESPONSE)
        .collect()
        .await
        .map_err(|e| failed(&e))?
        .to_bytes();
    Ok((status, body))
}

#[async_trait]
impl Sandbox for Kube {
    fn name(&self) -> &'static str {
        "kube"
    }

    async fn check(&self) -> Result<(), SandboxError> {
        self.server_version().await.map(|_| ())
    }

    async fn create(&self, spec: &SandboxSpec) -> Result<SandboxInfo, SandboxError> {
        self.create_with_id(&new_id(), spec).await
    }

    async fn delete(&self, id: &str) -> Result<(), SandboxError> {
        self.delete_objects(id).await
    }

    async fn list(&self) -> Result<Vec<SandboxInfo>, SandboxError> {
        let pods = self
            .pods()
            .list(&ListParams::default().labels(&manifest::managed_selector()))
            .await
            .map_err(api_error)?;
        Ok(pods
            .items
            .iter()
            .filter_map(|pod| info(pod, &self.config.namespace))
            .collect())
    }

    async fn start_agent(&self, id: &str, start: AgentStart) -> Result<(), SandboxError> {
        let request = crate::wire::harness::StartRequest {
            env: self.pod_env(id, start.env),
            command: start.command,
            cwd: start.cwd,
            home_files: start.home_files,
        };
        harness::start_agent(self.harness_stream(id).await?, request).await
    }

    async fn wait_agent(&self, id: &str) -> Result<i32, SandboxError> {
        harness::wait_agent(self.harness_stream(id).await?).await
    }

    async fn attach(&self, id: &str, cols: u16, rows: u16) -> Result<TtyChannel, SandboxError> {
        harness::attach(self.harness_stream(id).await?, cols, rows).await
    }

    async fn exec(
        &self,
        id: &str,
        spec: ExecSpec,
        output: tokio::sync::mpsc::Sender<ExecChunk>,
    ) -> Result<i32, SandboxError> {
        let mut spec = spec;
        let (stdin_tx, stdin) = tokio::sync::mpsc::channel(1);
        let data = std::mem::take(&mut spec.stdin);
        if !data.is_empty() {
            let _ = stdin_tx.send(data).await;
        }
        drop(stdin_tx);
        self.exec_stream(id, spec, stdin, output).await
    }

    async fn exec_stream(
        &self,
        id: &str,
        spec: ExecSpec,
        stdin: tokio::sync::mpsc::Receiver<Vec<u8>>,
        output: tokio::sync::mpsc::Sender<ExecChunk>,
    ) -> Result<i32, SandboxError> {
        let request = crate::wire::harness::ExecRequest {
            argv: spec.argv,
            cwd: spec.cwd,
            env: self.pod_env(id, spec.env),
        };
        harness::exec(self.harness_stream(id).await?, request, stdin, output).await
    }

    // Files in and out (issue 17): the pod's harness speaks the same file operations.
    async fn files_connection(&self, id: &str) -> Result<crate::sandbox::files::Conn, SandboxError> {
        Ok(Box::new(self.harness_stream(id).await?))
    }

    fn vault_placement(&self) -> VaultPlacement {
        match self.config.vault {
            KubeVault::Sidecar => VaultPlacement::InSandbox,
            KubeVault::Gateway(_) => VaultPlacement::Served,
        }
    }

    async fn pause(&self, id: &str) -> Result<(), SandboxError> {
        Err(SandboxError::Unsupported {
            what: format!(
                "the kube backend cannot pause sandbox `{id}`: the Kubernetes API has no way to freeze a \
                 pod's processes"
            ),
            hint: "`lap sessions hibernate ID` deletes its pod and keeps its workspace claim; `lap sessions \
                   resume ID` (or an attach, a message, an exec) makes a new pod on it"
                .to_owned(),
        })
    }

    fn keeps_workspaces(&self) -> bool {
        self.workspace_storage().is_some()
    }

    async fn workspace(&self, session: &str) -> Result<Option<KeptWorkspace>, SandboxError> {
        self.session_workspace(session).await
    }

    async fn adopt_workspace(&self, id: &str, session: &str) -> Result<(), SandboxError> {
        self.adopt_claim(id, session).await
    }

    async fn copy_workspace(&self, from: WorkspaceSource<'_>, session: &str) -> Result<KeptWorkspace, SandboxError> {
        self.copy_claim(from, session).await
    }

    async fn delete_workspace(&self, session: &str) -> Result<(), SandboxError> {
        self.delete_claims(session).await
    }

    async fn workspace_sessions(&self) -> Result<Vec<String>, SandboxError> {
        self.claim_sessions().await
    }

    async fn snapshot_workspace(&self, session: &str, snapshot: &str) -> Result<KeptWorkspace, SandboxError> {
        self.snapshot_claim(session, snapshot).await
    }

    async fn delete_workspace_snapshot(&self, snapshot: &str) -> Result<(), SandboxError> {
        self.delete_snapshot(snapshot).await
    }

    fn snapshot_location(&self, snapshot: &str) -> Option<String> {
        self.workspace_storage().map(|_| self.snapshot_place(snapshot))
    }

    fn events(&self) -> Option<futures_util::stream::BoxStream<'static, Result<SandboxEvent, SandboxError>>> {
        use futures_util::StreamExt;
        let events = self.pod_states().filter_map(|state| async move {
            let (id, change) = match state {
                Ok((id, PodState::Failed { reason })) => (id, SandboxChange::Failed { reason }),
                Ok((id, PodState::Gone)) => (id, SandboxChange::Gone),
                Ok((_, PodState::Ready | PodState::Pending { .. })) => return None,
                Err(err) => return Some(Err(err)),
            };
            Some(Ok(SandboxEvent { id, change }))
        });
        Some(events.boxed())
    }

    async fn claim(&self, id: &str, session_id: &str) -> Result<bool, SandboxError> {
        self.claim_pod(id, session_id).await
    }

    async fn bind_vault(&self, id: &str, binding: &VaultBinding) -> Result<(), SandboxError> {
        self.bind(id, binding).await
    }

    async fn vault_records(&self, id: &str, after: u64) -> Result<Vec<crate::wire::api::Interception>, SandboxError> {
        self.interceptions(id, after).await
    }

    // ---- Issue 17 part 1 (ports): through the harness connection, not a Service per port ----

    async fn connect_port(
        &self,
        id: &str,
        port: u16,
    ) -> Result<Box<dyn crate::sandbox::local::ports::PortStream>, SandboxError> {
        let stream = self.harness_stream(id).await?;
        crate::sandbox::local::ports::open(stream, port)
            .await
            .map_err(crate::sandbox::local::port_error)
    }

    async fn listening_ports(&self, id: &str) -> Result<Vec<crate::wire::ports::ListeningPort>, SandboxError> {
        let stream = self.harness_stream(id).await?;
        crate::sandbox::local::ports::list(stream)
            .await
            .map_err(crate::sandbox::local::port_error)
    }

    /// In gateway mode: the sandbox's route through `lap serve`'s gateway, honouring its proxy
    /// credential from its pod IP only. In sidecar mode refused: the vault runs in the pod.
    async fn proxy_listener(&self, id: &str) -> Result<super::ProxyListener, SandboxError> {
        match &self.config.vault {
            KubeVault::Gateway(gateway) => {
                let ip = self.pod_ip(id).await?;
                Ok(super::ProxyListener::Gateway(gateway.gateway.route(id, ip)))
            }
            KubeVault::Sidecar => Err(SandboxError::Unavailable {
                backend: "kube",
                reason: format!(
                    "the vault of sandbox `{id}` runs in its pod's sidecar; bind it with the admin endpoint"
                ),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_binding_the_backend_writes_is_what_the_sidecar_reads() {
        let binding = VaultBinding {
            credentials: vec![BoundCredential {
                name: "GITHUB_TOKEN".into(),
                stub: "stub_github_token_3fa91c0d".into(),
                value: crate::secret::Secret::new("ghp_real"),
                hosts: vec!["api.github.com".into()],
                inject: vec![crate::wire::vault::Injection::Authorization],
                rules: vec!["GET /repos/**".parse().unwrap()],
            }],
            allow_out: vec!["github.com".into()],
            deny_out: vec![],
            egress_default_deny: true,
        };
        let json = serde_json::to_vec(&binding).unwrap();
        let parsed: VaultBinding = serde_json::from_slice(&json).unwrap();
        assert_eq!(parsed.credentials.len(), 1);
        assert_eq!(parsed.credentials[0].value.expose(), "ghp_real");
        assert_eq!(parsed.credentials[0].inject, binding.credentials[0].inject);
        assert_eq!(parsed.credentials[0].rules, binding.credentials[0].rules);
        assert!(parsed.egress_default_deny);
        let warm: VaultBinding =
            serde_json::from_slice(&serde_json::to_vec(&VaultBinding::default()).unwrap()).unwrap();
        assert!(warm.credentials.is_empty());
    }

    #[test]
    fn sandbox_ids_are_dns_labels() {
        let id = new_id();
        assert_eq!(id.len(), 20);
        assert!(
            id.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        );
    }

    #[test]
    fn the_claim_patch_carries_the_resource_version_precondition() {
        let patch = claim_patch("4711", "s-1");
        assert_eq!(patch["metadata"]["resourceVersion"], "4711");
        assert_eq!(patch["metadata"]["labels"][manifest::WARM], "false");
        assert_eq!(patch["metadata"]["labels"][manifest::SESSION], "s-1");
    }
}
