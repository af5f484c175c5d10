//! Sandbox backends behind one small trait.
//!
//! A backend creates isolated places for agents to run, deletes them, and lists what it has so the
//! control plane can re-adopt or clean up after a restart. The backend is chosen once, in the
//! composition root (`cli/serve.rs`), and never re-checked below it. Implementations: [`local`]
//! (Linux namespaces), [`kube`] (Kubernetes pods), [`fake`] (in memory, for tests), and [`Unavailable`] for backends this build
//! cannot run yet, which answers every call with a clear error so session creation fails with 503
//! instead of hanging.

pub mod fake;
pub mod files;
pub mod harness;
pub mod kube;
#[cfg(all(target_os = "linux", not(lap_portable)))]
pub mod local;
/// Off Linux, only the ports' client and server of the local backend: the Kubernetes backend uses
/// the client too.
#[cfg(not(all(target_os = "linux", not(lap_portable))))]
pub mod local {
    pub mod ports;
    pub use ports::port_error;
}

use async_trait::async_trait;

/// Where, inside every sandbox, the vault's proxy listens.
pub const PROXY_ADDR: &str = "127.0.0.1:3128";
/// The sandbox user's home inside every sandbox (agent CLIs keep their settings there).
pub const AGENT_HOME: &str = "/work/home";
/// Where, inside every sandbox, the CA bundle (system roots plus the vault CA) is mounted.
pub const CA_BUNDLE_PATH: &str = "/etc/ssl/certs/ca-certificates.crt";

/// What to create.
#[derive(Debug, Clone, Default)]
pub struct SandboxSpec {
    pub harness_id: String,
    /// The session the sandbox is created for (`None` for a warm sandbox).
    pub session_id: Option<String>,
    /// The agent's whole environment: plain variables, stubs (never real values), proxy and CA
    /// variables.
    pub env: Vec<(String, String)>,
    /// Host path of the CA bundle to mount at [`CA_BUNDLE_PATH`].
    pub ca_bundle: Option<std::path::PathBuf>,
    /// The agent's command line, run under a PTY from the start (`None`: no terminal until
    /// [`Sandbox::start_agent`]). The control plane leaves it `None` and starts the agent late.
    pub command: Option<String>,
    /// Resource limits over the backend's defaults (the agent's `limits`).
    pub limits: LimitOverrides,
    /// Host directory of the session's workspace, which becomes the sandbox's `/work` and outlives
    /// it (`None`: the sandbox's own, deleted with it). Only backends that keep workspaces use it.
    pub workspace: Option<std::path::PathBuf>,
    /// The agent's volumes to mount (`control/volumes.rs`); only backends that keep workspaces get
    /// any.
    pub volumes: Vec<VolumeMount>,
}

/// One agent volume in a sandbox: the host directory (made when missing) and the absolute path
/// under `/work` it is mounted at, checked already.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct VolumeMount {
    pub host: std::path::PathBuf,
    pub path: String,
}

/// Resource limits asked for one sandbox; a `None` field takes the backend's default.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LimitOverrides {
    /// Memory, in bytes.
    pub memory_bytes: Option<u64>,
    /// Processes and threads.
    pub pids: Option<u64>,
    /// CPU time, in thousandths of one CPU.
    pub cpu_millis: Option<u64>,
}

impl From<&crate::wire::api::AgentLimits> for LimitOverrides {
    fn from(limits: &crate::wire::api::AgentLimits) -> Self {
        Self {
            memory_bytes: limits.memory_mb.map(|mb| mb.saturating_mul(1024 * 1024)),
            pids: limits.pids,
            cpu_millis: limits.cpus.map(|cpus| (cpus * 1000.0).round().max(1.0) as u64),
        }
    }
}

/// Late binding of a session to a sandbox made before it (a warm one, or one whose repo was just
/// cloned): see [`Sandbox::start_agent`].
#[derive(Debug, Clone, Default)]
pub struct AgentStart {
    /// The session's whole environment; it replaces [`SandboxSpec::env`] for the agent and for
    /// every later [`Sandbox::exec`].
    pub env: Vec<(String, String)>,
    /// The agent's command line, run under the PTY (`None`: bind the environment only).
    pub command: Option<String>,
    /// Where the agent starts (`None`: `/work/repo` when it exists, else the user's home).
    pub cwd: Option<String>,
    /// Files written under the sandbox user's home before the agent starts, each only when it is
    /// not there yet (the tool's first-run answers, [`crate::tools::first_run`]).
    pub home_files: Vec<HomeFile>,
}

/// What a viewer sends to a sandbox's terminal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TtyInput {
    /// Keystrokes.
    Data(Vec<u8>),
    /// The viewer's terminal size, in cells.
    Resize { cols: u16, rows: u16 },
}

/// What a sandbox's terminal sends to a viewer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TtyOutput {
    /// Draws the whole current screen on a blank terminal (first, and after the viewer fell behind).
    Repaint(Vec<u8>),
    /// The PTY's output.
    Data(Vec<u8>),
    /// How many viewers are attached.
    Viewers(u32),
    /// The agent exited with this code.
    Exit(i32),
}

/// One viewer's connection to a sandbox's terminal. Dropping `input` detaches; `output` ends when
/// the connection to the sandbox is lost.
pub struct TtyChannel {
    pub input: tokio::sync::mpsc::Sender<TtyInput>,
    pub output: tokio::sync::mpsc::Receiver<TtyOutput>,
}

/// The listening end of a sandbox's egress: the vault serves every connection accepted here, and
/// knows which sandbox it belongs to by the listener alone (for the gateway, by the route the
/// connection was handed to).
pub enum ProxyListener {
    /// A TCP listener (the fake backend's, on the host's loopback).
    Tcp(tokio::net::TcpListener),
    /// The sandbox's route through the vault gateway of `lap serve` (the Kubernetes backend's
    /// gateway mode): the connections that carried its proxy credential from its pod's IP.
    Gateway(crate::vault::gateway::GatewayListener),
}

/// A connection accepted from a [`ProxyListener`].
pub trait ProxyStream: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static> ProxyStream for T {}

impl ProxyListener {
    pub async fn accept(&self) -> std::io::Result<Box<dyn ProxyStream>> {
        match self {
            Self::Tcp(listener) => {
                let (stream, _) = listener.accept().await?;
                let _ = stream.set_nodelay(true);
                Ok(Box::new(stream))
            }
            Self::Gateway(listener) => Ok(Box::new(listener.accept().await?)),
        }
    }

    /// Where refusals that only this listener sees (a gateway route's credential used from another
    /// address) are recorded: the binding it is served with.
    pub fn record_refusals_to(&self, binding: &std::sync::Arc<crate::vault::intercept::Binding>) {
        if let Self::Gateway(listener) = self {
            listener.record_refusals_to(binding);
        }
    }
}

/// A session's vault binding (the sidecar's `--binding` file and `PUT /binding` body), declared once
/// in the wire contract.
pub use crate::wire::harness::HomeFile;
pub use crate::wire::vault::{BoundCredential, VaultBinding};

/// Where the vault of a backend's sandboxes runs; each backend has one, fixed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VaultPlacement {
    /// In `lap serve`: it serves every connection of [`Sandbox::proxy_listener`] (local, fake, and
    /// Kubernetes in gateway mode).
    Served,
    /// In the sandbox itself (the Kubernetes pod's `lap vault sidecar`, sidecar mode): the control
    /// plane binds a session's credentials with [`Sandbox::bind_vault`] and pulls the vault's
    /// records with [`Sandbox::vault_records`]; no egress passes `lap serve`.
    InSandbox,
}

/// A sandbox a backend knows about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SandboxInfo {
    pub id: String,
    /// Where the control plane reaches the harness.
    pub url: String,
    pub harness_id: String,
    pub session_id: Option<String>,
}

/// Something a backend saw happen to one of its sandboxes by itself, not at the control plane's
/// request (see [`Sandbox::events`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SandboxEvent {
    pub id: String,
    pub change: SandboxChange,
}

/// What happened to a sandbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SandboxChange {
    /// It cannot run (or keep running) its agent, for `reason` (a person can act on it).
    Failed { reason: String },
    /// It is gone, or being deleted.
    Gone,
}

/// A command to run in a sandbox.
#[derive(Debug, Clone, Default)]
pub struct ExecSpec {
    pub argv: Vec<String>,
    /// Working directory inside the sandbox (`None`: the sandbox user's home).
    pub cwd: Option<String>,
    /// All of the command's stdin.
    pub stdin: Vec<u8>,
    /// Variables set for this command over the sandbox's environment.
    pub env: Vec<(String, String)>,
}

/// Output of a running command, in the order it was written on each stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExecChunk {
    Stdout(Vec<u8>),
    Stderr(Vec<u8>),
}

/// Errors of a backend.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("the `{backend}` sandbox backend is not available: {reason}")]
    Unavailable { backend: &'static str, reason: String },
    #[error("sandbox `{0}` does not exist")]
    NotFound(String),
    #[error("the sandbox backend failed: {0}")]
    Backend(String),
    /// The backend cannot do this at all, or not on this cluster; `hint` says what to do instead.
    #[error("{what}")]
    Unsupported { what: String, hint: String },
}

/// A session's workspace as a backend that keeps workspaces itself holds it
/// ([`Sandbox::keeps_workspaces`]), or one of its snapshots.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeptWorkspace {
    /// Where it lives, e.g. `kube://lap/persistentvolumeclaims/lap-work-…`.
    pub location: String,
    /// Its size in bytes (for a Kubernetes claim, its capacity).
    pub size_bytes: u64,
}

/// What a new workspace of a backend that keeps them starts as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkspaceSource<'a> {
    /// A copy of this session's workspace.
    Session(&'a str),
    /// A copy of this snapshot (lap's snapshot id).
    Snapshot(&'a str),
}

/// A place agents run in.
#[async_trait]
pub trait Sandbox: Send + Sync + 'static {
    /// The backend's name as `lap serve --backend` spells it.
    fn name(&self) -> &'static str;
    /// Whether the backend can create sandboxes right now.
    async fn check(&self) -> Result<(), SandboxError>;
    async fn create(&self, spec: &SandboxSpec) -> Result<SandboxInfo, SandboxError>;
    /// Stops and removes a sandbox; deleting one that is already gone is not an error.
    async fn delete(&self, id: &str) -> Result<(), SandboxError>;
    async fn list(&self) -> Result<Vec<SandboxInfo>, SandboxError>;
    /// The sandbox's egress listener, for the vault to serve. Called again after a restart of
    /// `lap serve` to re-adopt a running sandbox.
    async fn proxy_listener(&self, id: &str) -> Result<ProxyListener, SandboxError> {
        Err(SandboxError::Backend(format!(
            "the `{}` backend has no egress listener for `{id}` yet",
            self.name()
        )))
    }

    /// Where this backend's vault runs: it decides whether the control plane serves
    /// [`Self::proxy_listener`] or binds through [`Self::bind_vault`].
    fn vault_placement(&self) -> VaultPlacement {
        VaultPlacement::Served
    }

    /// Whether sandboxes run the programs installed on `lap serve`'s host (the local backend mounts
    /// its system directories), so a session of a harness whose tool is not installed there is
    /// refused before a sandbox is made. `false`: the backend's images bring their own tools.
    fn uses_host_tools(&self) -> bool {
        false
    }

    /// Binds a session's credentials and egress policy into the vault a sandbox carries
    /// ([`VaultPlacement::InSandbox`]); connections opened afterwards use them.
    async fn bind_vault(&self, id: &str, binding: &VaultBinding) -> Result<(), SandboxError> {
        let _ = binding;
        Err(SandboxError::Unavailable {
            backend: self.name(),
            reason: format!("sandbox `{id}` carries no vault of its own"),
        })
    }

    /// The records of the vault a sandbox carries after its position `after`, oldest first, each
    /// with its position in `id`.
    async fn vault_records(&self, id: &str, after: u64) -> Result<Vec<crate::wire::api::Interception>, SandboxError> {
        let _ = after;
        Err(SandboxError::Unavailable {
            backend: self.name(),
            reason: format!("sandbox `{id}` carries no vault of its own"),
        })
    }

    /// Sandboxes failing or going away as it happens (for Kubernetes, the pod watcher), for the
    /// reconciler to end their sessions with the reason at once. `None`: the backend has no such
    /// feed, and the reconciler's periodic [`Self::list`] is what finds a sandbox that stopped. The
    /// stream may yield errors (a watch that broke); it retries by itself.
    fn events(&self) -> Option<futures_util::stream::BoxStream<'static, Result<SandboxEvent, SandboxError>>> {
        None
    }

    /// Takes warm sandbox `id` for `session_id` in the backend as well, after the store handed it
    /// out. `false`: it is not claimable any more (it failed, went away, or someone else took it);
    /// the caller takes another. A backend whose sandboxes only this control plane sees has nothing
    /// to do (the store's claim is atomic already).
    async fn claim(&self, id: &str, session_id: &str) -> Result<bool, SandboxError> {
        let _ = (id, session_id);
        Ok(true)
    }

    /// Attaches a viewer of `cols`×`rows` cells to the agent's terminal in a sandbox.
    async fn attach(&self, id: &str, cols: u16, rows: u16) -> Result<TtyChannel, SandboxError> {
        let _ = (cols, rows);
        Err(SandboxError::Unavailable {
            backend: self.name(),
            reason: format!("it has no terminal for sandbox `{id}`"),
        })
    }

    /// Binds a session to a running sandbox: its environment replaces the one the sandbox was created
    /// with, then the agent starts under the PTY (when `start.command` is given; at most once per
    /// sandbox). This is what lets a warm sandbox be made before its session exists.
    async fn start_agent(&self, id: &str, start: AgentStart) -> Result<(), SandboxError> {
        let _ = start;
        Err(SandboxError::Unavailable {
            backend: self.name(),
            reason: format!("it cannot start an agent in sandbox `{id}`"),
        })
    }

    /// Waits until the agent of a sandbox exits; returns its exit code.
    async fn wait_agent(&self, id: &str) -> Result<i32, SandboxError> {
        Err(SandboxError::Unavailable {
            backend: self.name(),
            reason: format!("it cannot watch the agent of sandbox `{id}`"),
        })
    }

    // --- workspaces (issue 16) ---

    /// Freezes every process of a sandbox (memory intact) until [`Self::resume`].
    async fn pause(&self, id: &str) -> Result<(), SandboxError> {
        Err(SandboxError::Unavailable {
            backend: self.name(),
            reason: format!("it cannot pause sandbox `{id}`"),
        })
    }

    /// Thaws a sandbox frozen by [`Self::pause`]; a sandbox that is not frozen is left as it is.
    async fn resume(&self, id: &str) -> Result<(), SandboxError> {
        Err(SandboxError::Unavailable {
            backend: self.name(),
            reason: format!("it cannot resume sandbox `{id}`"),
        })
    }

    /// Makes the `/work` of running sandbox `id` (a warm one just claimed) the workspace at host
    /// path `dest`, which must not exist yet, so it outlives the sandbox.
    async fn keep_workspace(&self, id: &str, dest: &std::path::Path) -> Result<(), SandboxError> {
        let _ = dest;
        Err(SandboxError::Unavailable {
            backend: self.name(),
            reason: format!("it keeps no workspace for sandbox `{id}`"),
        })
    }

    // Workspaces a backend keeps itself (the Kubernetes backend: one PersistentVolumeClaim per
    // session). A backend that answers `false` to `keeps_workspaces` has the control plane keep them
    // as host directories ([`SandboxSpec::workspace`]), or keeps none.

    /// Whether this backend keeps each session's workspace itself: then every sandbox it makes for a
    /// session mounts that session's workspace at `/work`, making it when there is none, and it
    /// outlives the sandbox until [`Self::delete_workspace`].
    fn keeps_workspaces(&self) -> bool {
        false
    }

    /// Session `session`'s workspace, `None` when it has none.
    async fn workspace(&self, session: &str) -> Result<Option<KeptWorkspace>, SandboxError> {
        Err(self.no_workspaces(session))
    }

    /// Makes the workspace of warm sandbox `id`, just claimed for `session`, that session's, so it
    /// outlives the sandbox.
    async fn adopt_workspace(&self, id: &str, session: &str) -> Result<(), SandboxError> {
        let _ = id;
        Err(self.no_workspaces(session))
    }

    /// Makes session `session`'s workspace as a copy of `from` (a fork, a session from a snapshot).
    async fn copy_workspace(&self, from: WorkspaceSource<'_>, session: &str) -> Result<KeptWorkspace, SandboxError> {
        let _ = from;
        Err(self.no_workspaces(session))
    }

    /// Deletes session `session`'s workspace; one that is gone already is not an error.
    async fn delete_workspace(&self, session: &str) -> Result<(), SandboxError> {
        Err(self.no_workspaces(session))
    }

    /// The sessions this backend keeps a workspace of (for the sweep of those nobody will resume).
    async fn workspace_sessions(&self) -> Result<Vec<String>, SandboxError> {
        Ok(Vec::new())
    }

    /// Takes snapshot `snapshot` (lap's snapshot id) of session `session`'s workspace.
    async fn snapshot_workspace(&self, session: &str, snapshot: &str) -> Result<KeptWorkspace, SandboxError> {
        let _ = snapshot;
        Err(self.no_workspaces(session))
    }

    /// Deletes snapshot `snapshot`; one that is gone already is not an error.
    async fn delete_workspace_snapshot(&self, snapshot: &str) -> Result<(), SandboxError> {
        let _ = snapshot;
        Ok(())
    }

    /// Where snapshot `snapshot` lives (`None`: this backend keeps no snapshots).
    fn snapshot_location(&self, snapshot: &str) -> Option<String> {
        let _ = snapshot;
        None
    }

    /// The refusal of the workspace calls of a backend that keeps no workspaces itself.
    fn no_workspaces(&self, session: &str) -> SandboxError {
        SandboxError::Unavailable {
            backend: self.name(),
            reason: format!("it keeps no workspace of its own for session `{session}`"),
        }
    }

    /// Runs a command in a sandbox, sending its output to `output`, and returns its exit code.
    async fn exec(
        &self,
        id: &str,
        spec: ExecSpec,
        output: tokio::sync::mpsc::Sender<ExecChunk>,
    ) -> Result<i32, SandboxError> {
        let _ = (spec, output);
        Err(SandboxError::Unavailable {
            backend: self.name(),
            reason: format!("it cannot run commands in sandbox `{id}`"),
        })
    }

    /// Like [`Self::exec`], but the command's stdin is fed as it comes: each chunk received on
    /// `stdin` is written to it, and the channel closing closes it. Dropping the returned future
    /// kills the command. This is how the control plane drives API harnesses (a long-lived tool
    /// process inside the sandbox, spoken to over its stdin and stdout).
    async fn exec_stream(
        &self,
        id: &str,
        spec: ExecSpec,
        stdin: tokio::sync::mpsc::Receiver<Vec<u8>>,
        output: tokio::sync::mpsc::Sender<ExecChunk>,
    ) -> Result<i32, SandboxError> {
        let _ = (spec, stdin, output);
        Err(SandboxError::Unavailable {
            backend: self.name(),
            reason: format!("it cannot run commands in sandbox `{id}`"),
        })
    }

    // ---- Issue 17 part 1 (ports) ----

    /// Opens one connection to the sandbox's own `127.0.0.1:port` through its harness (the sandbox
    /// keeps having no network of its own): the bytes of the returned stream are that connection's.
    async fn connect_port(&self, id: &str, port: u16) -> Result<Box<dyn local::ports::PortStream>, SandboxError> {
        let _ = port;
        Err(SandboxError::Unavailable {
            backend: self.name(),
            reason: format!("it cannot reach the ports of sandbox `{id}`"),
        })
    }

    /// The TCP ports the sandbox listens on (those a connection to its loopback reaches).
    async fn listening_ports(&self, id: &str) -> Result<Vec<crate::wire::ports::ListeningPort>, SandboxError> {
        Err(SandboxError::Unavailable {
            backend: self.name(),
            reason: format!("it cannot list the ports of sandbox `{id}`"),
        })
    }

    // Files in and out (issue 17).
    /// A connection to the harness of sandbox `id` for one file operation ([`files`]): the harness
    /// does it as the sandbox user, confined to `/work` and `/tmp`.
    async fn files_connection(&self, id: &str) -> Result<files::Conn, SandboxError> {
        Err(SandboxError::Unavailable {
            backend: self.name(),
            reason: format!("it cannot reach the files of sandbox `{id}`"),
        })
    }
}

/// A backend this build cannot run (yet): every call fails with the reason.
pub struct Unavailable {
    pub backend: &'static str,
    pub reason: &'static str,
}

impl Unavailable {
    fn error(&self) -> SandboxError {
        SandboxError::Unavailable {
            backend: self.backend,
            reason: self.reason.to_owned(),
        }
    }
}

#[async_trait]
impl Sandbox for Unavailable {
    fn name(&self) -> &'static str {
        self.backend
    }

    async fn check(&self) -> Result<(), SandboxError> {
        Err(self.error())
    }

    async fn create(&self, _spec: &SandboxSpec) -> Result<SandboxInfo, SandboxError> {
        Err(self.error())
    }

    async fn delete(&self, _id: &str) -> Result<(), SandboxError> {
        Ok(())
    }

    async fn list(&self) -> Result<Vec<SandboxInfo>, SandboxError> {
        Ok(Vec::new())
    }
}
