//! Workspaces that outlive their sandbox: each session's `/work` (its repo, the agent's home, the
//! tool's transcripts), pause, hibernate and resume, snapshots and forks.
//!
//! A session's workspace is the directory `<data-dir>/workspaces/<session id>`; the local backend
//! mounts it as the sandbox's `/work` ([`crate::sandbox::SandboxSpec::workspace`], or
//! [`crate::sandbox::Sandbox::keep_workspace`] for a claimed warm sandbox). It survives a restart of
//! the session, a crash of its sandbox, a hibernation, an idle reap short of the last step and a
//! restart of `lap serve`; it is deleted with the session (`DELETE`, or the reaper's last step, or
//! once a dead session has been idle for the idle TTL). Snapshots are copies under
//! `<data-dir>/snapshots/<id>`, made with reflinks (`FICLONE`) where the filesystem shares extents,
//! a plain copy elsewhere; a fork or a session `--from` a snapshot starts on such a copy.
//!
//! Invariants: a copy never follows a symlink (an agent's `ln -s /etc/shadow x` is copied as a
//! link, never as the file), skips what is not a file, directory or link, and appears under its
//! final name only once complete (a temporary sibling, then a rename), so a failed copy (a full
//! disk) leaves nothing half-made and loses nothing of the source.
//!
//! A backend that keeps workspaces itself ([`crate::sandbox::Sandbox::keeps_workspaces`]: the
//! Kubernetes backend's PersistentVolumeClaims and CSI VolumeSnapshots) is asked instead of the data
//! dir ([`Workspaces::Backend`]): the same states, refusals and sweep, with the copying done by the
//! storage. Its sandboxes are not frozen for a copy: the storage copies a volume, crash-consistent,
//! and no walk of `lap serve`'s can be led astray by a symlink. Nothing here reads a real
//! credential: a workspace only ever held what the sandbox could write, stubs included, never a
//! real value (DESIGN invariant 1). A session's state changes go through the store's conditional
//! updates, like every other transition (`control.rs`).

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use uuid::Uuid;

use super::{BringUpError, Claim, Control, ControlError, End, idle_for};
use crate::platform;
use crate::store::SessionRow;
use crate::store::SessionUpdate;
use crate::store::snapshots::SnapshotRow;
use crate::wire::api::{Agent, SessionStatus};

/// Directory under the data dir that holds one workspace per session.
pub const WORKSPACES_DIR: &str = "workspaces";
/// Directory under the data dir that holds one copy per snapshot.
pub const SNAPSHOTS_DIR: &str = "snapshots";
/// How long a wake (attach, message, exec on a paused or hibernated session) or a resume waits for
/// the session to be `ready`.
pub const WAKE_TIMEOUT: Duration = Duration::from_secs(60);
/// Interval between reads of a waking session's state.
const WAKE_POLL: Duration = Duration::from_millis(5);
/// Longest snapshot name.
pub const MAX_SNAPSHOT_NAME: usize = 64;

/// Where workspaces and snapshots live, when they are kept.
#[derive(Debug, Clone)]
pub enum Workspaces {
    /// Directories under the data dir, mounted by the local backend; agent volumes
    /// (`control/volumes.rs`) beside them.
    Host {
        workspaces: PathBuf,
        snapshots: PathBuf,
        volumes: PathBuf,
    },
    /// Kept by the sandbox backend itself (Kubernetes: claims and VolumeSnapshots).
    Backend,
}

impl Workspaces {
    pub fn new(data_dir: &Path) -> Self {
        let data_dir = std::path::absolute(data_dir).unwrap_or_else(|_| data_dir.to_owned());
        Self::Host {
            workspaces: data_dir.join(WORKSPACES_DIR),
            snapshots: data_dir.join(SNAPSHOTS_DIR),
            volumes: data_dir.join(super::volumes::VOLUMES_DIR),
        }
    }

    /// The workspace of session `session`, when it is a host directory.
    pub fn path(&self, session: Uuid) -> Option<PathBuf> {
        match self {
            Self::Host { workspaces, .. } => Some(workspaces.join(session.to_string())),
            Self::Backend => None,
        }
    }

    /// The directory of agent `agent`'s volumes (`control/volumes.rs`), when they are kept on the host.
    pub fn volumes_of(&self, agent: Uuid) -> Option<PathBuf> {
        match self {
            Self::Host { volumes, .. } => Some(volumes.join(agent.to_string())),
            Self::Backend => None,
        }
    }

    /// The copy of snapshot `id`, when it is a host directory.
    pub fn snapshot_path(&self, id: Uuid) -> Option<PathBuf> {
        match self {
            Self::Host { snapshots, .. } => Some(snapshots.join(id.to_string())),
            Self::Backend => None,
        }
    }
}

/// What a new session's workspace is copied from.
#[derive(Debug, Clone, Copy)]
pub(super) enum Source {
    Session(Uuid),
    Snapshot(Uuid),
}

impl Source {
    fn id(self) -> Uuid {
        match self {
            Self::Session(id) | Self::Snapshot(id) => id,
        }
    }
}

/// A refusal of the backend that keeps workspaces, as the control plane's: an operation it cannot
/// do is a conflict with its hint, something it cannot find is not found.
fn backend_refused(err: crate::sandbox::SandboxError) -> ControlError {
    use crate::sandbox::SandboxError;
    match err {
        SandboxError::Unsupported { what, hint } => refused(Refusal::Conflict, what, hint),
        SandboxError::NotFound(what) => refused(
            Refusal::NotFound,
            format!("{what} does not exist"),
            "`lap sessions show ID` and `lap snapshots list` show what exists",
        ),
        other => other.into(),
    }
}

/// When the reaper pauses and hibernates an idle session (`lap serve --pause-after`,
/// `--hibernate-after`; `None`: never). Its last step, deleting the session with its workspace, is
/// the idle TTL.
#[derive(Debug, Clone, Default)]
pub struct Lifecycle {
    pub workspaces: Option<Workspaces>,
    pub pause_after: Option<Duration>,
    pub hibernate_after: Option<Duration>,
}

/// Why a request about a workspace was refused; the API picks the status from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    BadRequest,
    NotFound,
    Conflict,
    Gone,
    NoSpace,
}

fn refused(kind: Refusal, message: impl Into<String>, hint: impl Into<String>) -> ControlError {
    ControlError::Refused {
        kind,
        message: message.into(),
        hint: hint.into(),
    }
}

/// An I/O failure while copying `what`: a full disk is the operator's to fix, said so.
fn copy_failed(what: &str, err: io::Error) -> ControlError {
    if err.kind() == io::ErrorKind::StorageFull {
        refused(
            Refusal::NoSpace,
            format!("cannot copy {what}: the disk of the data dir is full (nothing was changed)"),
            "free space under `lap serve --data-dir` (e.g. `lap snapshots delete NAME`) and try again",
        )
    } else {
        ControlError::Conflict(format!("cannot copy {what}: {err}"))
    }
}

/// What a snapshot name may be: 1 to [`MAX_SNAPSHOT_NAME`] of `[A-Za-z0-9._-]`, not starting with `.`.
pub fn valid_snapshot_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_SNAPSHOT_NAME
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// Bytes of the regular files under `root` (symlinks not followed); 0 when it does not exist.
pub fn tree_size(root: &Path) -> io::Result<u64> {
    let mut total = 0u64;
    let mut stack = vec![root.to_owned()];
    while let Some(path) = stack.pop() {
        let meta = match std::fs::symlink_metadata(&path) {
            Ok(meta) => meta,
            Err(err) if err.kind() == io::ErrorKind::NotFound => continue,
            Err(err) => return Err(err),
        };
        if meta.is_dir() {
            // A directory deleted while it is measured (its agent runs) counts for nothing.
            let entries = match std::fs::read_dir(&path) {
                Ok(entries) => entries,
                Err(err) if err.kind() == io::ErrorKind::NotFound => continue,
                Err(err) => return Err(err),
            };
            for entry in entries.flatten() {
                stack.push(entry.path());
            }
        } else if meta.is_file() {
            total = total.saturating_add(meta.len());
        }
    }
    Ok(total)
}

/// How a copy went.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Copied {
    pub bytes: u64,
    /// Files whose extents are shared with the source (`FICLONE`).
    pub reflinked: u64,
    /// Files copied byte by byte (the filesystem cannot share extents).
    pub copied: u64,
}

/// Copies the tree at `src` to `dst` (which must not exist): into a temporary sibling, renamed to
/// `dst` once complete; on failure the sibling is removed.
pub fn copy_tree(src: &Path, dst: &Path) -> io::Result<Copied> {
    if std::fs::symlink_metadata(dst).is_ok() {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!("`{}` exists", dst.display()),
        ));
    }
    let parent = dst.parent().ok_or_else(|| io::Error::other("no parent"))?;
    std::fs::create_dir_all(parent)?;
    let tmp = parent.join(format!(".tmp-{}", Uuid::new_v4().simple()));
    let mut copied = Copied::default();
    match copy_into(src, &tmp, &mut copied).and_then(|()| std::fs::rename(&tmp, dst)) {
        Ok(()) => Ok(copied),
        Err(err) => {
            let _ = std::fs::remove_dir_all(&tmp);
            Err(err)
        }
    }
}

fn copy_into(src: &Path, dst: &Path, copied: &mut Copied) -> io::Result<()> {
    let root = std::fs::symlink_metadata(src)?;
    if !root.is_dir() {
        return Err(io::Error::other(format!("`{}` is not a directory", src.display())));
    }
    // (source, destination) pairs of directories still to fill.
    let mut stack = vec![(src.to_owned(), dst.to_owned())];
    platform::create_private_dir(dst)?;
    let mut modes = vec![(dst.to_owned(), platform::mode(&root))];
    while let Some((from, to)) = stack.pop() {
        for entry in std::fs::read_dir(&from)? {
            let entry = entry?;
            let (source, target) = (entry.path(), to.join(entry.file_name()));
            let meta = std::fs::symlink_metadata(&source)?;
            let kind = meta.file_type();
            if kind.is_dir() {
                platform::create_private_dir(&target)?;
                modes.push((target.clone(), platform::mode(&meta)));
                stack.push((source, target));
            } else if kind.is_symlink() {
                platform::symlink(&std::fs::read_link(&source)?, &target)?;
            } else if kind.is_file() {
                if reflink_or_copy(&source, &target)? {
                    copied.reflinked += 1;
                } else {
                    copied.copied += 1;
                }
                if let Some(mode) = platform::mode(&meta) {
                    platform::set_mode(&target, mode)?;
                }
                copied.bytes = copied.bytes.saturating_add(meta.len());
            }
            // Sockets, FIFOs, devices: not part of a workspace's content.
        }
    }
    // Last, so a read-only directory was still writable while it was filled.
    for (dir, mode) in modes.into_iter().rev() {
        if let Some(mode) = mode {
            platform::set_mode(&dir, mode)?;
        }
    }
    Ok(())
}

/// Shares the extents of `src` with a new file `dst` (`FICLONE`, btrfs, XFS, bcachefs…), else copies
/// its bytes. Returns whether the extents are shared.
fn reflink_or_copy(src: &Path, dst: &Path) -> io::Result<bool> {
    let mut from = std::fs::File::open(src)?;
    let mut to = platform::create_private_file(dst)?;
    if platform::reflink(&from, &to) {
        return Ok(true);
    }
    io::copy(&mut from, &mut to)?;
    to.sync_all()?;
    Ok(false)
}

/// Removes a tree; one that does not exist is not an error.
pub fn remove_tree(path: &Path) -> io::Result<()> {
    match std::fs::remove_dir_all(path) {
        Err(err) if err.kind() != io::ErrorKind::NotFound => Err(err),
        _ => Ok(()),
    }
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> io::Result<T> + Send + 'static) -> io::Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|e| Err(io::Error::other(e)))
}

impl Control {
    /// This service as an `Arc`, for a task it spawns.
    fn this(&self) -> Result<Arc<Self>, ControlError> {
        self.me
            .upgrade()
            .ok_or_else(|| ControlError::Conflict("lap serve is shutting down".to_owned()))
    }

    /// [`Self::wake`] by id, for routes that take the id as given: a session that does not exist
    /// is left for the caller to report.
    pub async fn wake_id(&self, id: &str) -> Result<(), ControlError> {
        let Ok(uuid) = Uuid::parse_str(id) else { return Ok(()) };
        if let Some(row) = self.store.get_session(uuid).await? {
            self.wake(row).await?;
        }
        Ok(())
    }

    /// Where workspaces live, or why this backend has none.
    fn workspaces(&self) -> Result<&Workspaces, ControlError> {
        self.lifecycle.workspaces.as_ref().ok_or_else(|| {
            refused(
                Refusal::Conflict,
                format!("the `{}` backend keeps no workspaces of its own", self.sandbox.name()),
                "run `lap serve --backend local` (or `--backend kube` without `--kube-workspace-size none`) for \
                 workspaces, hibernate, snapshots and forks",
            )
        })
    }

    /// The workspace of a session, when it is a host directory.
    pub(super) fn workspace_of(&self, session: Uuid) -> Option<PathBuf> {
        self.lifecycle.workspaces.as_ref().and_then(|w| w.path(session))
    }

    /// Whether the backend keeps the workspaces.
    fn kept_by_backend(&self) -> bool {
        matches!(self.lifecycle.workspaces, Some(Workspaces::Backend))
    }

    /// For a bring-up of session `id`: the host directory to mount as its `/work` (`None`: none, or
    /// the backend's own), and whether the session has a workspace already (a restart, a resume
    /// from hibernation, a fork), which a new sandbox then starts on instead of a warm one.
    pub(super) async fn workspace_at_bring_up(&self, id: Uuid) -> Result<(Option<PathBuf>, bool), BringUpError> {
        if self.kept_by_backend() {
            let kept = self.sandbox.workspace(&id.to_string()).await;
            let kept = kept.map_err(BringUpError::FindWorkspace)?;
            return Ok((None, kept.is_some()));
        }
        let workspace = self.workspace_of(id);
        let resumed = workspace.as_ref().is_some_and(|w| w.exists());
        Ok((workspace, resumed))
    }

    /// Makes the `/work` of warm sandbox `sandbox`, just claimed for session `id`, the session's
    /// workspace (`workspace`: the host directory it becomes), when workspaces are kept.
    pub(super) async fn keep_warm_workspace(
        &self,
        id: Uuid,
        sandbox: &str,
        workspace: Option<&Path>,
    ) -> Result<(), BringUpError> {
        let kept = match workspace {
            Some(dest) => self.sandbox.keep_workspace(sandbox, dest).await,
            None if self.kept_by_backend() => self.sandbox.adopt_workspace(sandbox, &id.to_string()).await,
            None => return Ok(()),
        };
        kept.map_err(BringUpError::KeepWorkspace)
    }

    /// Whether a resumed workspace holds the agent's repository already (then it is not cloned
    /// again): a look at the host directory, or, for a backend's own, a `test -d` in the sandbox.
    pub(super) async fn repo_in_workspace(&self, sandbox: &str, workspace: Option<&Path>) -> bool {
        if let Some(workspace) = workspace {
            return workspace.join("repo").exists();
        }
        if !self.kept_by_backend() {
            return false;
        }
        let spec = crate::sandbox::ExecSpec {
            argv: vec!["test".into(), "-d".into(), super::REPO_DIR.into()],
            ..Default::default()
        };
        let (output, _ignored) = tokio::sync::mpsc::channel(16);
        matches!(self.sandbox.exec(sandbox, spec, output).await, Ok(0))
    }

    /// A session's workspace: where it lives (a host path, or the backend's location), size in
    /// bytes, and whether it exists. `None`: no such session.
    pub async fn workspace(&self, id: Uuid) -> Result<Option<(PathBuf, u64, bool)>, ControlError> {
        if self.store.get_session(id).await?.is_none() {
            return Ok(None);
        }
        let Some(path) = self.workspaces()?.path(id) else {
            let kept = self.sandbox.workspace(&id.to_string()).await.map_err(backend_refused)?;
            return Ok(Some(match kept {
                Some(kept) => (PathBuf::from(kept.location), kept.size_bytes, true),
                None => (PathBuf::new(), 0, false),
            }));
        };
        let probe = path.clone();
        let (size, exists) = blocking(move || Ok((tree_size(&probe)?, probe.exists())))
            .await
            .map_err(|e| ControlError::Conflict(format!("cannot measure the workspace: {e}")))?;
        Ok(Some((path, size, exists)))
    }

    /// Deletes a session's workspace (with the session, or by the reaper's last step).
    pub(super) async fn remove_workspace(&self, id: Uuid) {
        if self.kept_by_backend() {
            if let Err(err) = self.sandbox.delete_workspace(&id.to_string()).await {
                tracing::warn!(session = %id, error = %err, "cannot delete a workspace");
            }
            return;
        }
        let Some(path) = self.workspace_of(id) else { return };
        let shown = path.clone();
        if let Err(err) = blocking(move || remove_tree(&path)).await {
            tracing::warn!(session = %id, path = %shown.display(), error = %err, "cannot delete a workspace");
        }
    }

    async fn session(&self, id: Uuid) -> Result<SessionRow, ControlError> {
        self.store.get_session(id).await?.ok_or_else(|| {
            refused(
                Refusal::NotFound,
                format!("session `{id}` not found"),
                "`lap sessions list` shows the sessions that exist",
            )
        })
    }

    /// Freezes a `ready` session's sandbox (memory intact); `paused` again is a no-op.
    pub async fn pause_session(&self, id: Uuid) -> Result<SessionRow, ControlError> {
        let row = self.session(id).await?;
        match (row.status, row.sandbox_id.clone()) {
            (SessionStatus::Paused, _) => Ok(row),
            (SessionStatus::Ready, Some(sandbox)) => {
                self.sandbox.pause(&sandbox).await?;
                match self.store.update_session(id, SessionUpdate::Paused).await? {
                    Some(after) if after.row.status == SessionStatus::Paused => Ok(after.row),
                    // It changed meanwhile (deleted, hibernated): do not leave its sandbox frozen.
                    _ => {
                        let _ = self.sandbox.resume(&sandbox).await;
                        Err(ControlError::Conflict(format!(
                            "session {id} changed while pausing; try again"
                        )))
                    }
                }
            }
            (status, _) => Err(not_live(id, status, "paused")),
        }
    }

    /// Stops a `ready` or `paused` session's sandbox and keeps only its workspace; `hibernated`
    /// again is a no-op.
    pub async fn hibernate_session(&self, id: Uuid) -> Result<SessionRow, ControlError> {
        let row = self.session(id).await?;
        match row.status {
            SessionStatus::Hibernated => return Ok(row),
            SessionStatus::Ready | SessionStatus::Paused => {}
            status => return Err(not_live(id, status, "hibernated")),
        }
        self.workspaces()?;
        match self.end(id, End::Hibernated).await? {
            Some(after) => Ok(after),
            // Hibernated meanwhile by another caller: done as asked.
            None => match self.store.get_session(id).await? {
                Some(after) if after.status == SessionStatus::Hibernated => Ok(after),
                _ => Err(ControlError::Conflict(format!(
                    "session {id} changed while hibernating; try again"
                ))),
            },
        }
    }

    /// Brings a `paused` or `hibernated` session back to `ready` and returns it then; a `ready` one is
    /// returned as it is. A hibernated session gets a new sandbox on its workspace (the agent starts
    /// again in the same directory), and this waits for it up to [`WAKE_TIMEOUT`].
    pub async fn resume_session(&self, id: Uuid) -> Result<SessionRow, ControlError> {
        let row = self.session(id).await?;
        match (row.status, row.sandbox_id.clone()) {
            (SessionStatus::Ready, _) => Ok(row),
            (SessionStatus::Paused, Some(sandbox)) => {
                self.sandbox.resume(&sandbox).await?;
                match self.store.update_session(id, SessionUpdate::Thawed).await? {
                    Some(after) => Ok(after.row),
                    None => Err(refused(
                        Refusal::NotFound,
                        format!("session `{id}` not found"),
                        "it was deleted",
                    )),
                }
            }
            (SessionStatus::Hibernated, _) => {
                let agent = self
                    .store
                    .find_agent(&row.agent_id.to_string())
                    .await?
                    .ok_or_else(|| ControlError::Conflict(format!("the agent of session {id} is gone")))?;
                self.check_recovered()?;
                self.sandbox.check().await?;
                // `None`: another wake took it first; this one waits for the same bring-up.
                if let Some(restarted) = self.store.restart_session(id).await?
                    && restarted.status == SessionStatus::Creating
                {
                    self.tasks.spawn(
                        self.this()?
                            .bring_up(id, agent, Claim::Untried, std::time::Instant::now()),
                    );
                }
                self.wait_settled(id).await
            }
            (SessionStatus::Creating, _) => self.wait_settled(id).await,
            (status, _) => Err(not_live(id, status, "resumed")),
        }
    }

    /// Waits until a session is no longer `creating`; an error when it did not become `ready`.
    async fn wait_settled(&self, id: Uuid) -> Result<SessionRow, ControlError> {
        let deadline = tokio::time::Instant::now() + WAKE_TIMEOUT;
        loop {
            let row = self.session(id).await?;
            match row.status {
                SessionStatus::Ready => return Ok(row),
                SessionStatus::Creating if tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(WAKE_POLL).await;
                }
                SessionStatus::Creating => {
                    return Err(ControlError::Conflict(format!(
                        "session {id} was not ready {} after its resume (phase {})",
                        humantime::format_duration(WAKE_TIMEOUT),
                        row.phase.as_deref().unwrap_or("-")
                    )));
                }
                status => {
                    return Err(refused(
                        Refusal::Conflict,
                        format!(
                            "session {id} did not come back: it is {}: {}",
                            status.as_str(),
                            row.failure_reason.as_deref().unwrap_or("no reason recorded")
                        ),
                        format!("`lap sessions show {id}` has the details"),
                    ));
                }
            }
        }
    }

    /// What an attach, a message or an exec calls first: a paused or hibernated session is resumed
    /// by itself; any other is returned as it is.
    pub async fn wake(&self, row: SessionRow) -> Result<SessionRow, ControlError> {
        match row.status {
            SessionStatus::Paused | SessionStatus::Hibernated => {
                tracing::info!(session = %row.id, status = row.status.as_str(), "waking a session");
                self.resume_session(row.id).await
            }
            _ => Ok(row),
        }
    }

    /// A new session of `id`'s agent on a copy of its workspace. A running source is paused for the
    /// copy (so it is consistent) and thawed after.
    pub async fn fork_session(&self, id: Uuid, title: Option<String>) -> Result<SessionRow, ControlError> {
        let row = self.session(id).await?;
        self.workspaces()?;
        if !self.has_workspace(id).await? {
            return Err(refused(
                Refusal::Gone,
                format!("session {id} has no workspace to fork: it was deleted with the session"),
                "fork a session that still has one (`lap sessions show ID` says), or start from a snapshot",
            ));
        }
        let agent = self.agent_of(&row).await?;
        let frozen = self.freeze_for_copy(&row).await?;
        let made = self
            .create_session_from(
                &agent,
                title,
                Source::Session(id),
                format!("the workspace of session {id}"),
            )
            .await;
        if let Some(sandbox) = frozen {
            let _ = self.sandbox.resume(&sandbox).await;
        }
        made
    }

    /// Freezes a running session for a copy of its workspace and returns its sandbox (to thaw
    /// after); `None` when nothing runs in the workspace. Copying a workspace while its agent runs
    /// would let the agent swap a directory for a symlink between two steps of the walk and have a
    /// host file copied, so a running session that cannot be frozen is refused.
    async fn freeze_for_copy(&self, row: &SessionRow) -> Result<Option<String>, ControlError> {
        match (row.status, &row.sandbox_id) {
            // The storage copies a volume: nothing to freeze, and nothing to lead astray.
            (SessionStatus::Ready, Some(_)) if self.kept_by_backend() => Ok(None),
            (SessionStatus::Ready, Some(sandbox)) => match self.sandbox.pause(sandbox).await {
                Ok(()) => Ok(Some(sandbox.clone())),
                Err(err) => Err(refused(
                    Refusal::Conflict,
                    format!("cannot freeze session {} for a consistent copy: {err}", row.id),
                    format!("`lap sessions hibernate {}` first, then copy it", row.id),
                )),
            },
            (SessionStatus::Creating, _) => Err(refused(
                Refusal::Conflict,
                format!("session {} is creating; its workspace is not settled", row.id),
                "wait until `lap sessions show` says ready",
            )),
            _ => Ok(None),
        }
    }

    async fn agent_of(&self, row: &SessionRow) -> Result<Agent, ControlError> {
        self.store
            .find_agent(&row.agent_id.to_string())
            .await?
            .ok_or_else(|| ControlError::Conflict(format!("the agent of session {} is gone", row.id)))
    }

    /// Records a new session of `agent` whose workspace starts as a copy of `source`, and starts its
    /// bring-up (never on a warm sandbox: those have a `/work` of their own).
    pub(super) async fn create_session_from(
        &self,
        agent: &Agent,
        title: Option<String>,
        source: Source,
        what: String,
    ) -> Result<SessionRow, ControlError> {
        let workspaces = self.workspaces()?.clone();
        self.check_recovered()?;
        self.sandbox.check().await?;
        self.check_tool(agent)?;
        let row = self.new_row(agent, title, super::phase::COPYING_WORKSPACE);
        let host = match source {
            Source::Session(id) => workspaces.path(id),
            Source::Snapshot(id) => workspaces.snapshot_path(id),
        };
        match (host, workspaces.path(row.id)) {
            (Some(source), Some(dest)) => {
                let copied = blocking(move || copy_tree(&source, &dest))
                    .await
                    .map_err(|e| copy_failed(&what, e))?;
                tracing::info!(session = %row.id, bytes = copied.bytes, reflinked = copied.reflinked, copied = copied.copied, "workspace copied");
            }
            _ => {
                let (session, source_id) = (row.id.to_string(), source.id().to_string());
                let from = match source {
                    Source::Session(_) => crate::sandbox::WorkspaceSource::Session(&source_id),
                    Source::Snapshot(_) => crate::sandbox::WorkspaceSource::Snapshot(&source_id),
                };
                let kept = self
                    .sandbox
                    .copy_workspace(from, &session)
                    .await
                    .map_err(backend_refused)?;
                tracing::info!(session = %row.id, location = %kept.location, "workspace copied by the backend");
            }
        }
        if let Err(err) = self.store.insert_session(row.clone()).await {
            self.remove_workspace(row.id).await;
            return Err(err.into());
        }
        let started = std::time::Instant::now();
        self.tasks.spawn(
            self.this()?
                .bring_up(row.id, agent.clone(), Claim::Tried(None), started),
        );
        Ok(self.store.get_session(row.id).await?.unwrap_or(row))
    }

    /// A new session of `agent` on a copy of snapshot `key` (name or id).
    pub async fn session_from_snapshot(
        &self,
        agent: &Agent,
        key: &str,
        title: Option<String>,
    ) -> Result<SessionRow, ControlError> {
        self.workspaces()?;
        let snapshot = self.find_snapshot(key).await?;
        let source = Source::Snapshot(snapshot.id);
        self.create_session_from(agent, title, source, format!("snapshot `{}`", snapshot.name))
            .await
    }

    async fn find_snapshot(&self, key: &str) -> Result<SnapshotRow, ControlError> {
        self.store.find_snapshot(key).await?.ok_or_else(|| {
            refused(
                Refusal::NotFound,
                format!("snapshot `{key}` not found"),
                "`lap snapshots list` shows the snapshots that exist",
            )
        })
    }

    /// Copies session `id`'s workspace into a new snapshot named `name` (default: generated). A
    /// running session is paused for the copy and thawed after (but on a backend that keeps the
    /// workspaces: its storage snapshots the volume).
    pub async fn create_snapshot(&self, id: Uuid, name: Option<String>) -> Result<SnapshotRow, ControlError> {
        if let Some(name) = &name
            && !valid_snapshot_name(name)
        {
            return Err(refused(
                Refusal::BadRequest,
                format!("`{name}` is not a valid snapshot name"),
                format!("use 1 to {MAX_SNAPSHOT_NAME} of letters, digits, `.`, `_` and `-`, not starting with `.`"),
            ));
        }
        let row = self.session(id).await?;
        let workspaces = self.workspaces()?.clone();
        if !self.has_workspace(id).await? {
            return Err(refused(
                Refusal::Gone,
                format!("session {id} has no workspace to snapshot: it was deleted with the session"),
                "snapshot a session that still has one (`lap sessions show ID` says)",
            ));
        }
        let snapshot_id = Uuid::new_v4();
        let name = name.unwrap_or_else(|| {
            format!(
                "{}-{}",
                &id.simple().to_string()[..8],
                &snapshot_id.simple().to_string()[..8]
            )
        });
        if self.store.find_snapshot(&name).await?.is_some() {
            return Err(crate::store::StoreError::SnapshotNameTaken(name).into());
        }
        let (Some(source), Some(dest)) = (workspaces.path(id), workspaces.snapshot_path(snapshot_id)) else {
            return self.snapshot_by_backend(row, snapshot_id, name).await;
        };
        let frozen = self.freeze_for_copy(&row).await?;
        let copied = blocking({
            let dest = dest.clone();
            move || copy_tree(&source, &dest)
        })
        .await;
        if let Some(sandbox) = frozen {
            let _ = self.sandbox.resume(&sandbox).await;
        }
        let copied = copied.map_err(|e| copy_failed(&format!("the workspace of session {id}"), e))?;
        let snapshot = SnapshotRow {
            id: snapshot_id,
            name,
            session_id: id,
            agent_name: row.agent_name,
            size_bytes: copied.bytes,
            created_at: self.store.timestamp(),
            owner: None,
        };
        if let Err(err) = self.store.insert_snapshot(snapshot.clone()).await {
            let _ = blocking(move || remove_tree(&dest)).await;
            return Err(err.into());
        }
        tracing::info!(snapshot = %snapshot.name, bytes = copied.bytes, reflinked = copied.reflinked, "snapshot taken");
        Ok(snapshot)
    }

    /// [`Self::create_snapshot`] by the backend that keeps the workspaces (a CSI VolumeSnapshot).
    async fn snapshot_by_backend(&self, row: SessionRow, id: Uuid, name: String) -> Result<SnapshotRow, ControlError> {
        let kept = self
            .sandbox
            .snapshot_workspace(&row.id.to_string(), &id.to_string())
            .await
            .map_err(backend_refused)?;
        let snapshot = SnapshotRow {
            id,
            name,
            session_id: row.id,
            agent_name: row.agent_name,
            size_bytes: kept.size_bytes,
            created_at: self.store.timestamp(),
            owner: None,
        };
        if let Err(err) = self.store.insert_snapshot(snapshot.clone()).await {
            if let Err(cleanup) = self.sandbox.delete_workspace_snapshot(&id.to_string()).await {
                tracing::warn!(snapshot = %id, error = %cleanup, "cannot delete a snapshot the store did not keep");
            }
            return Err(err.into());
        }
        tracing::info!(snapshot = %snapshot.name, location = %kept.location, "snapshot taken by the backend");
        Ok(snapshot)
    }

    /// Whether session `id` has a workspace (it is deleted with the session).
    async fn has_workspace(&self, id: Uuid) -> Result<bool, ControlError> {
        match self.workspaces()?.path(id) {
            Some(path) => Ok(path.exists()),
            None => Ok(self
                .sandbox
                .workspace(&id.to_string())
                .await
                .map_err(backend_refused)?
                .is_some()),
        }
    }

    /// Every snapshot in `scope`, newest first, with where its copy is.
    pub async fn snapshots(&self, scope: crate::store::Scope) -> Result<Vec<(SnapshotRow, PathBuf)>, ControlError> {
        self.workspaces()?;
        Ok(self
            .store
            .list_snapshots(scope)
            .await?
            .into_iter()
            .map(|row| {
                let path = self.snapshot_path(row.id).unwrap_or_default();
                (row, path)
            })
            .collect())
    }

    /// Where snapshot `id`'s copy is: a host path, or the backend's location.
    pub fn snapshot_path(&self, id: Uuid) -> Option<PathBuf> {
        match self.lifecycle.workspaces.as_ref()? {
            Workspaces::Host { .. } => self.lifecycle.workspaces.as_ref()?.snapshot_path(id),
            Workspaces::Backend => self.sandbox.snapshot_location(&id.to_string()).map(PathBuf::from),
        }
    }

    /// Deletes snapshot `key` (name or id) and its copy.
    pub async fn delete_snapshot(&self, key: &str) -> Result<SnapshotRow, ControlError> {
        let workspaces = self.workspaces()?.clone();
        let snapshot = self.find_snapshot(key).await?;
        let Some(path) = workspaces.snapshot_path(snapshot.id) else {
            // The backend's copy first: one it refuses to delete keeps its row, to try again.
            self.sandbox
                .delete_workspace_snapshot(&snapshot.id.to_string())
                .await
                .map_err(backend_refused)?;
            self.store.delete_snapshot(snapshot.id).await?;
            return Ok(snapshot);
        };
        self.store.delete_snapshot(snapshot.id).await?;
        blocking(move || remove_tree(&path))
            .await
            .map_err(|e| ControlError::Conflict(format!("cannot delete the copy of snapshot `{key}`: {e}")))?;
        Ok(snapshot)
    }

    /// Deletes the workspaces nobody will resume: of sessions that no longer exist, and of dead or
    /// failed sessions stopped longer than the idle TTL ago. Returns how many went.
    pub(super) async fn sweep_workspaces(&self, now: time::OffsetDateTime) -> Result<usize, ControlError> {
        let Some(workspaces) = self.lifecycle.workspaces.clone() else {
            return Ok(0);
        };
        let names = match workspaces {
            Workspaces::Host { workspaces: root, .. } => blocking(move || match std::fs::read_dir(&root) {
                Ok(entries) => Ok(entries
                    .flatten()
                    .filter_map(|e| e.file_name().to_str().and_then(|n| Uuid::parse_str(n).ok()))
                    .collect::<Vec<_>>()),
                Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
                Err(err) => Err(err),
            })
            .await
            .map_err(|e| ControlError::Conflict(format!("cannot list the workspaces: {e}")))?,
            Workspaces::Backend => self
                .sandbox
                .workspace_sessions()
                .await?
                .iter()
                .filter_map(|s| Uuid::parse_str(s).ok())
                .collect(),
        };
        // One read of the store for them all: a pass stays one query however many workspaces.
        let sessions = self.store.get_sessions(names.clone()).await?;
        let mut removed = 0;
        for id in names {
            let stale = match sessions.get(&id) {
                None => true,
                Some(row) if row.status.is_terminal() => {
                    let since = row.stopped_at.as_deref().unwrap_or(&row.last_seen_at);
                    idle_for(since, now).is_some_and(|idle| idle > self.idle_ttl)
                }
                Some(_) => false,
            };
            if stale {
                tracing::info!(session = %id, "deleting a workspace nobody will resume");
                self.remove_workspace(id).await;
                removed += 1;
            }
        }
        Ok(removed)
    }
}

fn not_live(id: Uuid, status: SessionStatus, wanted: &str) -> ControlError {
    let hint = match status {
        SessionStatus::Creating => "wait until `lap sessions show` says ready".to_owned(),
        SessionStatus::Dead | SessionStatus::Failed => format!(
            "its sandbox is gone; `POST /sessions/{id}/restart` brings it back on its workspace, or start a new session"
        ),
        _ => format!("`lap sessions show {id}` says what it is"),
    };
    refused(
        Refusal::Conflict,
        format!(
            "session {id} is {}; only a live session can be {wanted}",
            status.as_str()
        ),
        hint,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_copy_keeps_files_links_and_modes_and_never_follows_a_link() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        std::fs::create_dir_all(src.join("repo/sub")).unwrap();
        std::fs::write(src.join("repo/sub/a.txt"), b"hello").unwrap();
        std::fs::write(dir.path().join("outside"), b"host secret").unwrap();
        std::os::unix::fs::symlink(dir.path().join("outside"), src.join("link")).unwrap();
        std::fs::set_permissions(src.join("repo/sub/a.txt"), std::fs::Permissions::from_mode(0o640)).unwrap();
        let dst = dir.path().join("dst");
        let copied = copy_tree(&src, &dst).unwrap();
        assert_eq!(copied.bytes, 5);
        assert_eq!(copied.reflinked + copied.copied, 1);
        assert_eq!(std::fs::read(dst.join("repo/sub/a.txt")).unwrap(), b"hello");
        let mode = std::fs::metadata(dst.join("repo/sub/a.txt"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o640);
        assert!(
            std::fs::symlink_metadata(dst.join("link"))
                .unwrap()
                .file_type()
                .is_symlink()
        );
        assert_eq!(tree_size(&dst).unwrap(), 5, "the link's target is not counted");
        // A second copy onto the same name is refused, and no temporary sibling is left.
        assert!(copy_tree(&src, &dst).is_err());
        let left: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(left.len(), 3, "{left:?}");
    }

    #[test]
    fn snapshot_names_are_short_plain_words() {
        assert!(valid_snapshot_name("before-refactor_2.1"));
        assert!(!valid_snapshot_name(""));
        assert!(!valid_snapshot_name(".hidden"));
        assert!(!valid_snapshot_name("a/b"));
        assert!(!valid_snapshot_name("../x"));
        assert!(!valid_snapshot_name(&"x".repeat(MAX_SNAPSHOT_NAME + 1)));
    }
}
