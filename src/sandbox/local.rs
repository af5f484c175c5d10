//! The local backend: each sandbox is a process tree in fresh Linux namespaces on this machine,
//! built by `lap` itself (no Docker, no external sandbox binary).
//!
//! `create` writes the sandbox's directory ([`layout`]) and runs `lap harness --config …` as a fresh
//! process, which enters the sandbox's cgroups ([`cgroup`]), creates the namespaces, becomes the
//! sandbox's PID 1 and builds its root ([`init`], [`rootfs`]); `create` returns once the harness
//! answers a ping on `harness.sock` ([`socket`], [`crate::wire::harness`]). Namespaces are never created in this
//! (multi-threaded) process. Commands run through the harness ([`Local::exec`], [`Sandbox::exec`]) as
//! an unprivileged user — as root, a host uid leased to this sandbox alone ([`uids`]) — under
//! seccomp, Landlock and the limits no cgroup enforces ([`privs`], [`seccomp`], [`landlock`],
//! [`rlimit`]); the egress proxy's listener is born
//! in the sandbox's network namespace and handed out by [`Local::proxy_listener`]. The sandbox is
//! not a child of `lap serve` and keeps running when it stops or is killed; `list` finds it again
//! from its `state.json`, so a restarted server can adopt it (invariant 6), and sweeps the
//! directories of sandboxes whose PID 1 has died. `delete` kills PID 1, which makes the kernel kill
//! every process of the sandbox, then removes its cgroups and directory and frees its uid. Invariants kept here: the
//! sandbox sees none of the host's files but its system directories, has only a loopback network
//! (invariant 4's "no path but the vault"), and its commands run unprivileged; the harness is
//! started with an empty environment, so nothing of `lap serve`'s (the master key included) enters a
//! sandbox (invariants 1 and 5).

mod cgroup;
pub mod files;
mod idmap;
mod init;
pub mod landlock;
pub mod layout;
pub mod ports;
pub use ports::port_error;
mod privs;
mod rlimit;
mod rootfs;
mod seccomp;
mod server;
pub mod socket;
pub mod uids;

pub use cgroup::Limits;
pub use init::{InitError, launch, probe};
pub use server::serve_tcp;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use tokio::sync::OnceCell;

use self::layout::{Config, Layout, SANDBOXES_DIR, State};
use super::harness::{self, ExecOutput};
use super::{
    AgentStart, ExecChunk, ExecSpec, ProxyListener, Sandbox, SandboxError, SandboxInfo, SandboxSpec, TtyChannel,
};
use crate::wire::harness::{ExecRequest, ProtoError, StartRequest};

/// The backend's name.
const NAME: &str = "local";
/// How long `create` waits for the launcher (its own limit is [`init::SETUP_TIMEOUT`]).
const LAUNCH_TIMEOUT: Duration = Duration::from_secs(15);
/// A sandbox directory with no state after this long belongs to a launch that will never finish.
const STALE_LAUNCH: Duration = Duration::from_secs(LAUNCH_TIMEOUT.as_secs() + 5);
/// How long `create` keeps pinging a harness that the launcher reported ready.
const PING_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the namespace probe of `check` may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long `delete` waits for a killed sandbox to disappear.
const KILL_TIMEOUT: Duration = Duration::from_secs(10);
/// Interval between checks while waiting for a harness or a killed process.
const POLL_INTERVAL: Duration = Duration::from_millis(5);
/// How the harness is told where its config is, relative to the sandbox's directory.
const CONFIG_ARG: &str = "config.json";
/// Hex characters of a sandbox id.
const ID_LEN: usize = 32;

#[derive(Debug, thiserror::Error)]
pub enum LocalError {
    #[error("cannot {what} `{path}`: {err}")]
    Io {
        what: &'static str,
        path: PathBuf,
        err: std::io::Error,
    },
    #[error("cannot start `{program} harness`: {err}")]
    Spawn { program: PathBuf, err: std::io::Error },
    #[error("the sandbox did not start: {0}")]
    Launch(String),
    #[error("{what} did not finish within {limit:?}")]
    Timeout { what: &'static str, limit: Duration },
    #[error(transparent)]
    Proto(#[from] ProtoError),
}

impl From<LocalError> for SandboxError {
    fn from(err: LocalError) -> Self {
        SandboxError::Backend(err.to_string())
    }
}

/// Gives a volume's tree to [`uids::VOLUME_OWNER`] unless it has it already: on first use, after a
/// session on a filesystem without idmapped mounts took it, or for a volume made before owners.
fn own_volume(tree: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let owner = uids::VOLUME_OWNER;
    let meta = std::fs::symlink_metadata(tree)?;
    if meta.uid() == owner && meta.gid() == owner {
        return Ok(());
    }
    layout::chown_tree(tree, owner)
}

fn io_err<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> LocalError + 'a {
    move |err| LocalError::Io {
        what,
        path: path.to_owned(),
        err,
    }
}

/// Sandboxes in Linux namespaces under `<data-dir>/sandboxes/`.
pub struct Local {
    data_dir: PathBuf,
    program: PathBuf,
    limits: Limits,
    cgroups: bool,
    leases: uids::Leases,
    probed: OnceCell<()>,
}

impl Local {
    /// A backend keeping its sandboxes under `data_dir`, started with this very binary.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        let data_dir = data_dir.into();
        Self {
            leases: uids::Leases::for_host(&data_dir),
            data_dir,
            program: PathBuf::from("/proc/self/exe"),
            limits: Limits::default(),
            cgroups: true,
            probed: OnceCell::new(),
        }
    }

    /// Whether sandboxes are limited by cgroups where one is writable (the default) or by rlimits
    /// only (`false`, `lap serve --sandbox-cgroups off`).
    pub fn with_cgroups(mut self, cgroups: bool) -> Self {
        self.cgroups = cgroups;
        self
    }

    /// The limits of a new sandbox: the backend's, with the sandbox's own overrides.
    fn limits_for(&self, spec: &SandboxSpec) -> Limits {
        Limits {
            memory_bytes: spec.limits.memory_bytes.unwrap_or(self.limits.memory_bytes),
            pids: spec.limits.pids.unwrap_or(self.limits.pids),
            cpu_millis: spec.limits.cpu_millis.unwrap_or(self.limits.cpu_millis),
        }
    }

    /// Uses `program` (a `lap` binary) as the harness, for callers that are not `lap` themselves.
    pub fn with_program(mut self, program: impl Into<PathBuf>) -> Self {
        self.program = program.into();
        self
    }

    /// Gives new sandboxes these resource limits instead of [`Limits::default`].
    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    fn layout(&self, id: &str) -> Result<Layout, SandboxError> {
        if id.len() == ID_LEN && id.bytes().all(|b| b.is_ascii_hexdigit()) {
            Ok(Layout::new(&self.data_dir, id))
        } else {
            Err(SandboxError::NotFound(id.to_owned()))
        }
    }

    /// Where this backend's uid leases are ([`uids`]).
    pub fn uid_leases(&self) -> &uids::Leases {
        &self.leases
    }

    /// The recorded state of a running sandbox (its PID 1), or `None`.
    pub fn state(&self, id: &str) -> Option<State> {
        let layout = self.layout(id).ok()?;
        layout::read_json::<State>(&layout.state()).ok().filter(State::is_alive)
    }

    /// Runs a command in a sandbox through its harness, streaming as [`harness::exec`] does.
    pub async fn exec<I, O, E>(
        &self,
        id: &str,
        request: ExecRequest,
        stdin: I,
        stdout: O,
        stderr: E,
    ) -> Result<i32, SandboxError>
    where
        I: tokio::io::AsyncRead + Unpin + Send + 'static,
        O: tokio::io::AsyncWrite + Unpin + Send,
        E: tokio::io::AsyncWrite + Unpin + Send,
    {
        let layout = self.layout(id)?;
        if self.state(id).is_none() {
            return Err(SandboxError::NotFound(id.to_owned()));
        }
        let stream = socket::connect(&layout.run()).await.map_err(LocalError::from)?;
        Ok(harness::exec(stream, request, stdin, &mut (stdout, stderr))
            .await
            .map_err(LocalError::from)?)
    }

    /// The egress proxy's listener inside a sandbox (`127.0.0.1:3128` in its network namespace), for
    /// the vault to serve. Can be taken again, e.g. by a restarted `lap serve`.
    pub async fn take_proxy_listener(&self, id: &str) -> Result<std::net::TcpListener, SandboxError> {
        let layout = self.layout(id)?;
        if self.state(id).is_none() {
            return Err(SandboxError::NotFound(id.to_owned()));
        }
        Ok(socket::proxy_listener(&layout.run()).await.map_err(LocalError::from)?)
    }

    /// Runs `argv` in a sandbox with empty stdin and collects its output and exit code.
    pub async fn exec_output(&self, id: &str, argv: &[&str]) -> Result<ExecOutput, SandboxError> {
        let layout = self.layout(id)?;
        if self.state(id).is_none() {
            return Err(SandboxError::NotFound(id.to_owned()));
        }
        let request = ExecRequest {
            argv: argv.iter().map(|s| (*s).to_owned()).collect(),
            cwd: None,
            env: Vec::new(),
        };
        let stream = socket::connect(&layout.run()).await.map_err(LocalError::from)?;
        Ok(harness::exec_output(stream, request).await.map_err(LocalError::from)?)
    }

    async fn probe(&self) -> Result<(), SandboxError> {
        let output = tokio::time::timeout(
            PROBE_TIMEOUT,
            tokio::process::Command::new(&self.program)
                .arg0("lap")
                .args(["harness", "--probe"])
                .env_clear()
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .kill_on_drop(true)
                .output(),
        )
        .await;
        let reason = match output {
            Ok(Ok(output)) if output.status.success() => {
                // `lap serve` raised it at start already; a backend used on its own raises it here.
                match crate::vault::limits::raise_descriptor_limit() {
                    Ok(limit) => {
                        tracing::debug!(limit = ?limit.map(|l| l.now), "open files limit raised to the hard limit")
                    }
                    Err(err) => tracing::warn!(error = %err, "cannot raise the open files limit"),
                }
                tracing::info!(
                    cgroups = if self.cgroups {
                        "where writable, else rlimits"
                    } else {
                        "off: rlimits only"
                    },
                    uids = if nix::unistd::Uid::effective().is_root() {
                        "one host uid per sandbox"
                    } else {
                        "a user namespace"
                    },
                    "local sandboxes: {}",
                    landlock::status()
                );
                return Ok(());
            }
            Ok(Ok(output)) => String::from_utf8_lossy(&output.stderr).trim().to_owned(),
            Ok(Err(err)) => format!("cannot run `{} harness --probe`: {err}", self.program.display()),
            Err(_) => format!("the namespace probe did not finish within {PROBE_TIMEOUT:?}"),
        };
        Err(SandboxError::Unavailable {
            backend: NAME,
            reason: format!(
                "cannot create Linux namespaces ({reason}); {}; see docs/troubleshooting.md#user-namespaces",
                namespace_hint(nix::unistd::Uid::effective().is_root(), &Sysctls::read())
            ),
        })
    }

    async fn launch(&self, layout: &Layout) -> Result<State, LocalError> {
        let child = tokio::process::Command::new(&self.program)
            .arg0("lap")
            .arg("harness")
            .arg("--config")
            // Relative: PID 1's command line is readable in the sandbox and must not name host paths.
            .arg(CONFIG_ARG)
            .current_dir(layout.dir())
            .env_clear()
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            // Out of our process group: a Ctrl-C meant for `lap serve` must not reach sandboxes.
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .map_err(|err| LocalError::Spawn {
                program: self.program.clone(),
                err,
            })?;
        let output = tokio::time::timeout(LAUNCH_TIMEOUT, child.wait_with_output())
            .await
            .map_err(|_| LocalError::Timeout {
                what: "the sandbox launcher",
                limit: LAUNCH_TIMEOUT,
            })?
            .map_err(|err| LocalError::Spawn {
                program: self.program.clone(),
                err,
            })?;
        if !output.status.success() {
            let stderr = String::from_utf8_lossy(&output.stderr);
            let message = stderr.trim().strip_prefix("error: ").unwrap_or(stderr.trim());
            return Err(LocalError::Launch(if message.is_empty() {
                format!("`{} harness` exited with {}", self.program.display(), output.status)
            } else {
                message.to_owned()
            }));
        }
        let state: State = layout::read_json(&layout.state()).map_err(io_err("read", &layout.state()))?;
        let deadline = Instant::now() + PING_TIMEOUT;
        loop {
            match ping(&layout.run()).await {
                Ok(()) => return Ok(state),
                Err(_) if Instant::now() < deadline => tokio::time::sleep(POLL_INTERVAL).await,
                Err(err) => {
                    kill_and_wait(&state).await;
                    return Err(err.into());
                }
            }
        }
    }

    /// Freezes or thaws every process of sandbox `id` ([`cgroup::freeze`]).
    async fn freeze(&self, id: &str, frozen: bool) -> Result<(), SandboxError> {
        self.layout(id)?;
        let state = self.state(id).ok_or_else(|| SandboxError::NotFound(id.to_owned()))?;
        let dirs = state.cgroups.clone();
        tokio::task::spawn_blocking(move || cgroup::freeze(&dirs, frozen))
            .await
            .map_err(|e| SandboxError::Backend(e.to_string()))?
            .map_err(|err| match err {
                cgroup::FreezeError::NoFreezer => SandboxError::Unavailable {
                    backend: NAME,
                    reason: format!("sandbox `{id}` cannot be paused: {err} (hint: `lap serve --sandbox-cgroups on`, on a host with the v1 freezer or cgroup v2)"),
                },
                other => SandboxError::Backend(format!("cannot pause or resume sandbox `{id}`: {other}")),
            })
    }

    fn info(&self, state: &State) -> SandboxInfo {
        let layout = Layout::new(&self.data_dir, &state.id);
        SandboxInfo {
            id: state.id.clone(),
            url: format!("unix://{}", layout.run().join(layout::HARNESS_SOCKET).display()),
            harness_id: state.harness_id.clone(),
            session_id: state.session_id.clone(),
        }
    }
}

/// What [`scan_sandboxes`] found in one sandbox directory.
enum Scanned {
    Alive(State),
    /// No state, and older than any launch can take.
    Unfinished(PathBuf),
    /// Its PID 1 has died.
    Dead(State, PathBuf),
}

/// Reads the sandbox directories under `dir` (blocking): which are alive, which are dead, which
/// never finished their launch. One still being created (no state yet, and young) is left out.
fn scan_sandboxes(dir: &Path) -> Result<Vec<Scanned>, LocalError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(err) => return Err(io_err("read", dir)(err)),
    };
    let mut scanned = Vec::new();
    for entry in entries.flatten() {
        let layout = Layout::from_dir(entry.path());
        let Ok(state) = layout::read_json::<State>(&layout.state()) else {
            let stale = std::fs::metadata(layout.config())
                .or_else(|_| std::fs::metadata(layout.dir()))
                .and_then(|m| m.modified())
                .is_ok_and(|at| at.elapsed().is_ok_and(|age| age > STALE_LAUNCH));
            if stale {
                scanned.push(Scanned::Unfinished(layout.dir().to_owned()));
            }
            continue;
        };
        if state.is_alive() {
            scanned.push(Scanned::Alive(state));
        } else {
            scanned.push(Scanned::Dead(state, layout.dir().to_owned()));
        }
    }
    Ok(scanned)
}

/// Dials a sandbox's harness and pings it.
async fn ping(run_dir: &Path) -> Result<(), ProtoError> {
    harness::ping(socket::connect(run_dir).await?).await
}

/// Sends output into the channel of [`Sandbox::exec`]; a closed channel ends the command.
struct ChannelSink(tokio::sync::mpsc::Sender<ExecChunk>);

impl harness::OutputSink for ChannelSink {
    async fn output(&mut self, chunk: ExecChunk) -> Result<(), ProtoError> {
        self.0
            .send(chunk)
            .await
            .map_err(|_| ProtoError::Io(std::io::Error::from(std::io::ErrorKind::BrokenPipe)))
    }
}

/// Removes what a dead sandbox leaves: its cgroups and its directory.
async fn remove_sandbox(state: Option<&State>, dir: PathBuf) -> Result<(), LocalError> {
    if let Some(state) = state
        && let Err(err) = cgroup::remove(&state.cgroups)
    {
        tracing::warn!(sandbox = %state.id, error = %err, "cannot remove the sandbox's cgroups");
    }
    remove_dir(dir).await
}

/// Kills a sandbox's PID 1 (the kernel then kills the rest of its PID namespace) and waits until it
/// is gone.
async fn kill_and_wait(state: &State) -> bool {
    if !state.is_alive() {
        return true;
    }
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(state.pid), nix::sys::signal::Signal::SIGKILL);
    let deadline = Instant::now() + KILL_TIMEOUT;
    while state.is_alive() {
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
    true
}

async fn remove_dir(dir: PathBuf) -> Result<(), LocalError> {
    let result = tokio::task::spawn_blocking({
        let dir = dir.clone();
        move || std::fs::remove_dir_all(dir)
    })
    .await
    .unwrap_or_else(|e| Err(std::io::Error::other(e)));
    match result {
        Err(err) if err.kind() != std::io::ErrorKind::NotFound => Err(io_err("remove", &dir)(err)),
        _ => Ok(()),
    }
}

fn create_dir(path: &Path, mode: u32) -> Result<(), LocalError> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(mode)
        .create(path)
        .map_err(io_err("create", path))
}

#[async_trait]
impl Sandbox for Local {
    fn name(&self) -> &'static str {
        NAME
    }

    fn uses_host_tools(&self) -> bool {
        true
    }

    async fn check(&self) -> Result<(), SandboxError> {
        self.probed.get_or_try_init(|| self.probe()).await.map(|_| ())
    }

    async fn create(&self, spec: &SandboxSpec) -> Result<SandboxInfo, SandboxError> {
        let id = uuid::Uuid::new_v4().simple().to_string();
        let layout = Layout::new(&self.data_dir, &id);
        create_dir(&self.data_dir.join(SANDBOXES_DIR), 0o700)?;
        create_dir(layout.dir(), 0o700)?;
        // As root, the agent gets a host uid of its own; unprivileged, the user namespace's one.
        let uid = if nix::unistd::Uid::effective().is_root() {
            match std::path::absolute(layout.dir()).and_then(|holder| self.leases.lease(&holder)) {
                Ok(uid) => Some(uid),
                Err(err) => {
                    let _ = remove_dir(layout.dir().to_owned()).await;
                    return Err(io_err("lease a uid in", self.leases.dir())(err).into());
                }
            }
        } else {
            None
        };
        let config = Config {
            hostname: format!("lap-{}", &id[..8]),
            id: id.clone(),
            harness_id: spec.harness_id.clone(),
            session_id: spec.session_id.clone(),
            limits: self.limits_for(spec),
            env: spec.env.clone(),
            ca_bundle: spec.ca_bundle.is_some(),
            command: spec.command.clone(),
            uid,
            no_cgroups: !self.cgroups,
            volumes: spec.volumes.clone(),
        };
        if let (Some(workspace), Some(uid)) = (&spec.workspace, uid) {
            // The workspace was another sandbox's (another uid): it becomes this agent's.
            let tree = workspace.clone();
            let chowned = tokio::task::spawn_blocking(move || {
                std::fs::create_dir_all(&tree)?;
                layout::chown_tree(&tree, uid)
            })
            .await
            .unwrap_or_else(|e| Err(std::io::Error::other(e)));
            if let Err(err) = chowned {
                let _ = remove_dir(layout.dir().to_owned()).await;
                if let Ok(holder) = std::path::absolute(layout.dir()) {
                    self.leases.release(uid, &holder);
                }
                return Err(io_err("hand over the workspace", workspace)(err).into());
            }
        }
        // The agent's volumes: made on first use and, as root, owned by the volume owner, which
        // every sandbox of the agent sees as itself through an idmapped mount (local/idmap.rs), so
        // sessions running at once all write them.
        for volume in &spec.volumes {
            let tree = volume.host.clone();
            let prepared = tokio::task::spawn_blocking(move || {
                std::fs::create_dir_all(&tree)?;
                std::fs::set_permissions(&tree, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
                match uid {
                    Some(_) => own_volume(&tree),
                    None => Ok(()),
                }
            })
            .await
            .unwrap_or_else(|e| Err(std::io::Error::other(e)));
            if let Err(err) = prepared {
                let _ = remove_dir(layout.dir().to_owned()).await;
                if let Some(uid) = uid
                    && let Ok(holder) = std::path::absolute(layout.dir())
                {
                    self.leases.release(uid, &holder);
                }
                return Err(io_err("prepare the volume", &volume.host)(err).into());
            }
        }
        let prepared = (|| {
            match &spec.workspace {
                Some(workspace) => {
                    create_dir(workspace, 0o700)?;
                    let target = std::path::absolute(workspace).map_err(io_err("resolve", workspace))?;
                    std::os::unix::fs::symlink(&target, layout.work()).map_err(io_err("link", &layout.work()))?;
                }
                None => create_dir(&layout.work(), 0o700)?,
            }
            create_dir(&layout.run(), 0o700)?;
            create_dir(&layout.root(), 0o755)?;
            if let Some(bundle) = &spec.ca_bundle {
                std::fs::copy(bundle, layout.ca_bundle()).map_err(io_err("copy", bundle))?;
            }
            layout::write_json(&layout.config(), &config).map_err(io_err("write", &layout.config()))
        })();
        let launched = match prepared {
            Ok(()) => self.launch(&layout).await,
            Err(err) => Err(err),
        };
        match launched {
            Ok(state) => Ok(self.info(&state)),
            Err(err) => {
                if let Err(cleanup) = remove_dir(layout.dir().to_owned()).await {
                    tracing::warn!(sandbox = %id, error = %cleanup, "cannot clean up a failed sandbox");
                }
                if let Some(uid) = uid
                    && let Ok(holder) = std::path::absolute(layout.dir())
                {
                    self.leases.release(uid, &holder);
                }
                Err(err.into())
            }
        }
    }

    async fn delete(&self, id: &str) -> Result<(), SandboxError> {
        let Ok(layout) = self.layout(id) else {
            return Ok(());
        };
        let state = layout::read_json::<State>(&layout.state()).ok();
        if let Some(state) = &state {
            // A frozen process dies of SIGKILL only once thawed (cgroup v1).
            let dirs = state.cgroups.clone();
            let _ = tokio::task::spawn_blocking(move || {
                if cgroup::is_frozen(&dirs) {
                    let _ = cgroup::freeze(&dirs, false);
                }
            })
            .await;
        }
        if let Some(state) = &state
            && !kill_and_wait(state).await
        {
            return Err(LocalError::Timeout {
                what: "killing the sandbox",
                limit: KILL_TIMEOUT,
            }
            .into());
        }
        let uid = layout::read_json::<Config>(&layout.config()).ok().and_then(|c| c.uid);
        remove_sandbox(state.as_ref(), layout.dir().to_owned()).await?;
        // Only now: no process of the sandbox runs as its uid any more.
        if let Some(uid) = uid
            && let Ok(holder) = std::path::absolute(layout.dir())
        {
            self.leases.release(uid, &holder);
        }
        Ok(())
    }

    async fn list(&self) -> Result<Vec<SandboxInfo>, SandboxError> {
        let dir = self.data_dir.join(SANDBOXES_DIR);
        // Every sandbox's state file and `/proc` entry is read off the runtime's threads: with
        // thousands of sandboxes that is blocking work the API must not wait behind.
        let read = dir.clone();
        let scanned = tokio::task::spawn_blocking(move || scan_sandboxes(&read))
            .await
            .map_err(|e| io_err("read", &dir)(std::io::Error::other(e)))??;
        let mut found = Vec::new();
        for entry in scanned {
            match entry {
                Scanned::Alive(state) => found.push(self.info(&state)),
                // No state for longer than any launch can take, as when `lap serve` died between
                // writing the config and starting the launcher: nothing will ever finish it.
                Scanned::Unfinished(dir) => {
                    tracing::info!(dir = %dir.display(), "removing a sandbox whose launch never finished");
                    if let Err(err) = remove_dir(dir).await {
                        tracing::warn!(error = %err, "cannot remove an unfinished sandbox");
                    }
                }
                Scanned::Dead(state, dir) => {
                    tracing::info!(sandbox = %state.id, "removing a sandbox whose PID 1 has died");
                    if let Err(err) = remove_sandbox(Some(&state), dir).await {
                        tracing::warn!(sandbox = %state.id, error = %err, "cannot remove a dead sandbox");
                    }
                }
            }
        }
        self.leases.sweep();
        found.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(found)
    }

    async fn exec(
        &self,
        id: &str,
        spec: ExecSpec,
        output: tokio::sync::mpsc::Sender<ExecChunk>,
    ) -> Result<i32, SandboxError> {
        let layout = self.layout(id)?;
        if self.state(id).is_none() {
            return Err(SandboxError::NotFound(id.to_owned()));
        }
        let request = ExecRequest {
            argv: spec.argv,
            cwd: spec.cwd,
            env: spec.env,
        };
        let stdin = std::io::Cursor::new(spec.stdin);
        let stream = socket::connect(&layout.run()).await.map_err(LocalError::from)?;
        Ok(harness::exec(stream, request, stdin, &mut ChannelSink(output))
            .await
            .map_err(LocalError::from)?)
    }

    async fn exec_stream(
        &self,
        id: &str,
        spec: ExecSpec,
        stdin: tokio::sync::mpsc::Receiver<Vec<u8>>,
        output: tokio::sync::mpsc::Sender<ExecChunk>,
    ) -> Result<i32, SandboxError> {
        let layout = self.layout(id)?;
        if self.state(id).is_none() {
            return Err(SandboxError::NotFound(id.to_owned()));
        }
        let request = ExecRequest {
            argv: spec.argv,
            cwd: spec.cwd,
            env: spec.env,
        };
        let stream = socket::connect(&layout.run()).await.map_err(LocalError::from)?;
        Ok(harness::exec_channel(stream, request, stdin, &mut ChannelSink(output))
            .await
            .map_err(LocalError::from)?)
    }

    async fn attach(&self, id: &str, cols: u16, rows: u16) -> Result<TtyChannel, SandboxError> {
        let layout = self.layout(id)?;
        if self.state(id).is_none() {
            return Err(SandboxError::NotFound(id.to_owned()));
        }
        let stream = socket::connect(&layout.run()).await.map_err(LocalError::from)?;
        Ok(harness::attach(stream, cols, rows).await.map_err(LocalError::from)?)
    }

    async fn start_agent(&self, id: &str, start: AgentStart) -> Result<(), SandboxError> {
        let layout = self.layout(id)?;
        if self.state(id).is_none() {
            return Err(SandboxError::NotFound(id.to_owned()));
        }
        let request = StartRequest {
            env: start.env,
            command: start.command,
            cwd: start.cwd,
            home_files: start.home_files,
        };
        let stream = socket::connect(&layout.run()).await.map_err(LocalError::from)?;
        Ok(harness::start_agent(stream, request).await.map_err(LocalError::from)?)
    }

    async fn wait_agent(&self, id: &str) -> Result<i32, SandboxError> {
        let layout = self.layout(id)?;
        if self.state(id).is_none() {
            return Err(SandboxError::NotFound(id.to_owned()));
        }
        let stream = socket::connect(&layout.run()).await.map_err(LocalError::from)?;
        Ok(harness::wait_agent(stream).await.map_err(LocalError::from)?)
    }

    async fn pause(&self, id: &str) -> Result<(), SandboxError> {
        self.freeze(id, true).await
    }

    async fn resume(&self, id: &str) -> Result<(), SandboxError> {
        self.freeze(id, false).await
    }

    async fn keep_workspace(&self, id: &str, dest: &Path) -> Result<(), SandboxError> {
        let layout = self.layout(id)?;
        if self.state(id).is_none() {
            return Err(SandboxError::NotFound(id.to_owned()));
        }
        let work = layout.work();
        let dest = std::path::absolute(dest).map_err(io_err("resolve", dest))?;
        if let Some(parent) = dest.parent() {
            create_dir(parent, 0o700)?;
        }
        // The sandbox's `/work` mount holds the directory, not its name: it moves under it.
        std::fs::rename(&work, &dest).map_err(io_err("move the workspace", &work))?;
        std::os::unix::fs::symlink(&dest, &work).map_err(io_err("link", &work))?;
        Ok(())
    }

    async fn connect_port(&self, id: &str, port: u16) -> Result<Box<dyn ports::PortStream>, SandboxError> {
        let layout = self.layout(id)?;
        if self.state(id).is_none() {
            return Err(SandboxError::NotFound(id.to_owned()));
        }
        let stream = socket::connect(&layout.run()).await.map_err(LocalError::from)?;
        ports::open(stream, port).await.map_err(port_error)
    }

    async fn listening_ports(&self, id: &str) -> Result<Vec<crate::wire::ports::ListeningPort>, SandboxError> {
        let layout = self.layout(id)?;
        if self.state(id).is_none() {
            return Err(SandboxError::NotFound(id.to_owned()));
        }
        let stream = socket::connect(&layout.run()).await.map_err(LocalError::from)?;
        ports::list(stream).await.map_err(port_error)
    }

    async fn files_connection(&self, id: &str) -> Result<super::files::Conn, SandboxError> {
        let layout = self.layout(id)?;
        if self.state(id).is_none() {
            return Err(SandboxError::NotFound(id.to_owned()));
        }
        Ok(Box::new(
            socket::connect(&layout.run()).await.map_err(LocalError::from)?,
        ))
    }

    async fn proxy_listener(&self, id: &str) -> Result<ProxyListener, SandboxError> {
        let listener = self.take_proxy_listener(id).await?;
        let backend = |e: std::io::Error| SandboxError::Backend(format!("the proxy listener of `{id}`: {e}"));
        listener.set_nonblocking(true).map_err(backend)?;
        Ok(ProxyListener::Tcp(
            tokio::net::TcpListener::from_std(listener).map_err(backend)?,
        ))
    }
}

/// The sysctls that decide whether unprivileged user namespaces work (`None`: absent).
#[derive(Debug, Default, Clone, Copy)]
pub struct Sysctls {
    pub max_user_namespaces: Option<u64>,
    pub unprivileged_userns_clone: Option<u64>,
    pub apparmor_restrict_unprivileged_userns: Option<u64>,
}

impl Sysctls {
    fn read() -> Self {
        let read = |path: &str| {
            std::fs::read_to_string(format!("/proc/sys/{path}"))
                .ok()
                .and_then(|s| s.trim().parse().ok())
        };
        Self {
            max_user_namespaces: read("user/max_user_namespaces"),
            unprivileged_userns_clone: read("kernel/unprivileged_userns_clone"),
            apparmor_restrict_unprivileged_userns: read("kernel/apparmor_restrict_unprivileged_userns"),
        }
    }
}

/// What to change so that namespaces can be created, naming the sysctl at fault when one is.
pub fn namespace_hint(root: bool, sysctls: &Sysctls) -> String {
    if !root && sysctls.max_user_namespaces == Some(0) {
        return "user namespaces are disabled: `user.max_user_namespaces` is 0; raise it, e.g. \
                `sysctl -w user.max_user_namespaces=10000`"
            .to_owned();
    }
    if !root && sysctls.unprivileged_userns_clone == Some(0) {
        return "unprivileged user namespaces are disabled: `kernel.unprivileged_userns_clone` is 0; \
                set it with `sysctl -w kernel.unprivileged_userns_clone=1`"
            .to_owned();
    }
    if !root && sysctls.apparmor_restrict_unprivileged_userns == Some(1) {
        return "AppArmor restricts unprivileged user namespaces: \
                `kernel.apparmor_restrict_unprivileged_userns` is 1; set it to 0 or run `lap serve` as root"
            .to_owned();
    }
    "check the sysctls `user.max_user_namespaces` and `kernel.unprivileged_userns_clone`, and whether a \
     container or seccomp profile forbids `unshare`"
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hint_names_the_sysctl_that_disables_user_namespaces() {
        let off = Sysctls {
            max_user_namespaces: Some(0),
            ..Sysctls::default()
        };
        assert!(namespace_hint(false, &off).contains("`user.max_user_namespaces` is 0"));
        let debian = Sysctls {
            max_user_namespaces: Some(1000),
            unprivileged_userns_clone: Some(0),
            ..Sysctls::default()
        };
        assert!(namespace_hint(false, &debian).contains("`kernel.unprivileged_userns_clone` is 0"));
        let ubuntu = Sysctls {
            max_user_namespaces: Some(1000),
            apparmor_restrict_unprivileged_userns: Some(1),
            ..Sysctls::default()
        };
        assert!(namespace_hint(false, &ubuntu).contains("apparmor_restrict_unprivileged_userns"));
        // Root needs no user namespace, so those sysctls are not the cause.
        assert!(namespace_hint(true, &off).contains("check the sysctls"));
    }

    #[test]
    fn ids_that_are_not_sandbox_ids_are_not_found() {
        let local = Local::new("/nonexistent");
        assert!(matches!(local.layout("../../etc"), Err(SandboxError::NotFound(_))));
        assert!(local.layout(&"a".repeat(ID_LEN)).is_ok());
    }
}
