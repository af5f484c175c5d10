//! `lap harness`: the launcher that creates a sandbox's namespaces, and the sandbox's PID 1.
//!
//! `lap serve` runs `lap harness --config <sandbox>/config.json` as a fresh process (never unsharing
//! in its own multi-threaded one). That launcher, single-threaded, moves into the sandbox's cgroups
//! ([`super::cgroup`]), unshares new PID, network, UTS, IPC and cgroup namespaces (plus a user
//! namespace mapping the sandbox user to itself when it is not root) and forks. The child is PID 1
//! of the new PID namespace: it starts its own session, unshares a mount namespace of its own (so
//! `pivot_root` does not move the launcher), builds the root ([`super::rootfs`]), pivots into it,
//! then forks the harness server ([`super::server`], PID 2) and from then on only reaps zombies and
//! forwards SIGTERM, SIGINT, SIGHUP and SIGQUIT to every process of the sandbox; it exits when the
//! server does, which makes the kernel kill whatever is left. The launcher waits (at most
//! [`SETUP_TIMEOUT`]) until the server listens on `harness.sock`, records PID 1 in `state.json`, and
//! exits, so the sandbox is not a child of `lap serve` and outlives it, even a `kill -9` (no
//! parent-death signal is set). A setup that fails or times out kills PID 1 and removes the cgroups.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;
use std::time::{Duration, Instant};

use nix::sched::{CloneFlags, unshare};
use nix::sys::signal::{SigSet, SigmaskHow, Signal, kill, sigprocmask};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::{ForkResult, Gid, Pid, Uid, fork};

use super::layout::{self, Config, Layout, ProcStat, State};
use super::rlimit::Rlimits;
use super::{cgroup, idmap, privs, rootfs};

/// How long the launcher waits for the sandbox to be ready before killing it.
pub const SETUP_TIMEOUT: Duration = Duration::from_secs(10);
/// What the harness server writes on the readiness pipe once it listens.
pub const READY: &str = "ready";

/// Errors of the launcher and of PID 1's setup.
#[derive(Debug, thiserror::Error)]
pub enum InitError {
    #[error("cannot {what}: {err}")]
    Sys { what: String, err: std::io::Error },
    #[error("{0}")]
    Setup(String),
}

/// Adds what was being done to an OS error.
pub trait ResultExt<T> {
    fn ctx(self, what: impl Into<String>) -> Result<T, InitError>;
}

impl<T, E: Into<std::io::Error>> ResultExt<T> for Result<T, E> {
    fn ctx(self, what: impl Into<String>) -> Result<T, InitError> {
        self.map_err(|e| InitError::Sys {
            what: what.into(),
            err: e.into(),
        })
    }
}

/// The namespaces the launcher creates; a user namespace is added when not root. The mount
/// namespace is created by PID 1 alone ([`CloneFlags::CLONE_NEWNS`]): `pivot_root` moves every process
/// of a mount namespace, and the launcher must keep the host's view to record the sandbox.
fn namespaces(user_namespace: bool) -> CloneFlags {
    let flags = CloneFlags::CLONE_NEWPID
        | CloneFlags::CLONE_NEWNET
        | CloneFlags::CLONE_NEWUTS
        | CloneFlags::CLONE_NEWIPC
        | CloneFlags::CLONE_NEWCGROUP;
    if user_namespace {
        flags | CloneFlags::CLONE_NEWUSER
    } else {
        flags
    }
}

/// Unshares the namespaces (and maps the user namespace): the check behind `Sandbox::check`.
pub fn probe() -> Result<(), InitError> {
    enter_namespaces()?;
    unshare(CloneFlags::CLONE_NEWNS).ctx("create a mount namespace (unshare)")
}

fn enter_namespaces() -> Result<(), InitError> {
    let (uid, gid) = (Uid::effective(), Gid::effective());
    let user_namespace = !uid.is_root();
    unshare(namespaces(user_namespace)).ctx("create namespaces (unshare)")?;
    if user_namespace {
        // The one mapping an unprivileged process may write: the sandbox user is us.
        std::fs::write("/proc/self/setgroups", "deny").ctx("write /proc/self/setgroups")?;
        std::fs::write("/proc/self/uid_map", format!("{} {uid} 1\n", rootfs::USER_ID)).ctx("write the uid map")?;
        std::fs::write("/proc/self/gid_map", format!("{} {gid} 1\n", rootfs::USER_ID)).ctx("write the gid map")?;
    }
    Ok(())
}

/// Starts the sandbox described by `config_path` and returns once it is ready. Only the launcher
/// returns from here; PID 1 and the harness server exit the process when they are done.
pub fn launch(config_path: &Path) -> Result<State, InitError> {
    let config_path = &std::path::absolute(config_path).ctx("resolve the config path")?;
    let dir = config_path
        .parent()
        .ok_or_else(|| InitError::Setup("the config path has no directory".into()))?;
    let layout = Layout::from_dir(dir.to_owned());
    let config: Config = layout::read_json(config_path).ctx(format!("read {}", config_path.display()))?;
    let user_namespace = !Uid::effective().is_root();
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(layout.log())
        .ctx("open the harness log")?;
    let null = File::open("/dev/null").ctx("open /dev/null")?;
    // Before the namespaces: every process of the sandbox is born in its cgroups.
    let entered = if config.no_cgroups {
        let _ = writeln!(&log, "lap harness: cgroups are off (`--sandbox-cgroups off`)");
        cgroup::Entered::default()
    } else {
        cgroup::enter(&format!("lap-{}", config.id), &config.limits, &mut &log)
    };
    let settings = privs::Settings {
        user_namespace,
        uid: agent_uid(&config, user_namespace),
        rlimits: Rlimits::fallback(&config.limits, &entered.limited),
    };
    let cgroups = entered.dirs;
    let volume_userns = volume_userns(&config, &settings, &log);
    let launched = start(&layout, config, settings, (log, null, volume_userns), cgroups.clone());
    if launched.is_err() {
        cgroup::leave(&cgroups);
        let _ = cgroup::remove(&cgroups);
    }
    launched
}

/// As root, for an agent with volumes: the user namespace they are mounted through
/// ([`super::idmap`]). Where it cannot be made the volumes are handed to the sandbox instead.
fn volume_userns(config: &Config, settings: &privs::Settings, mut log: &File) -> Option<OwnedFd> {
    if settings.user_namespace || config.volumes.is_empty() {
        return None;
    }
    idmap::userns(settings.uid)
        .inspect_err(|err| {
            let _ = writeln!(
                log,
                "lap harness: {err}; the volumes are handed to this sandbox instead of shared"
            );
        })
        .ok()
}

/// The agent's uid: the sandbox's leased uid as root, the mapped [`rootfs::USER_ID`] in a user
/// namespace (or when no uid was leased).
fn agent_uid(config: &Config, user_namespace: bool) -> u32 {
    config.uid.filter(|_| !user_namespace).unwrap_or(rootfs::USER_ID)
}

fn start(
    layout: &Layout,
    config: Config,
    settings: privs::Settings,
    (log, null, volume_userns): (File, File, Option<OwnedFd>),
    cgroups: Vec<std::path::PathBuf>,
) -> Result<State, InitError> {
    enter_namespaces()?;
    let (ready_r, ready_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).ctx("create a pipe")?;
    // SAFETY: the launcher is single-threaded (a fresh exec that never started a runtime), so the
    // child may run arbitrary code.
    match unsafe { fork() }.ctx("fork PID 1")? {
        ForkResult::Child => {
            drop(ready_r);
            let code = pid1(layout, &config, settings, (log, null, volume_userns), ready_w);
            std::process::exit(code)
        }
        ForkResult::Parent { child } => {
            drop(ready_w);
            let recorded = wait_ready(ready_r).and_then(|()| {
                let stat = ProcStat::read(child.as_raw())
                    .ok_or_else(|| InitError::Setup("PID 1 exited right after start".into()))?;
                let state = State {
                    id: config.id,
                    harness_id: config.harness_id,
                    session_id: config.session_id,
                    pid: child.as_raw(),
                    start_time: stat.start_time,
                    cgroups,
                };
                layout::write_json(&layout.state(), &state).ctx("write state.json")?;
                Ok(state)
            });
            if recorded.is_err() {
                let _ = kill(child, Signal::SIGKILL);
                let _ = waitpid(child, None);
            }
            recorded
        }
    }
}

/// Reads the readiness pipe until EOF or [`SETUP_TIMEOUT`].
fn wait_ready(pipe: OwnedFd) -> Result<(), InitError> {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    let deadline = Instant::now() + SETUP_TIMEOUT;
    let mut message = Vec::new();
    let mut file = File::from(pipe);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(InitError::Setup(format!(
                "the sandbox was not ready within {SETUP_TIMEOUT:?}"
            )));
        }
        let timeout = PollTimeout::try_from(left).unwrap_or(PollTimeout::MAX);
        let mut fds = [PollFd::new(file.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, timeout) {
            Ok(0) | Err(nix::errno::Errno::EINTR) => continue,
            Ok(_) => {}
            Err(e) => return Err(e).ctx("wait for the sandbox"),
        }
        let mut buf = [0u8; 1024];
        let n = file.read(&mut buf).ctx("read the readiness pipe")?;
        if n == 0 {
            break;
        }
        message.extend_from_slice(&buf[..n]);
    }
    let message = String::from_utf8_lossy(&message);
    match message.trim() {
        READY => Ok(()),
        "" => Err(InitError::Setup("the sandbox's PID 1 exited during setup".into())),
        other => Err(InitError::Setup(other.to_owned())),
    }
}

/// PID 1: builds the sandbox, starts the harness server, then reaps and forwards signals until the
/// server exits. Returns the exit code.
fn pid1(
    layout: &Layout,
    config: &Config,
    settings: privs::Settings,
    (log, null, volume_userns): (File, File, Option<OwnedFd>),
    ready: OwnedFd,
) -> i32 {
    let mut ready = File::from(ready);
    let forwarded = [Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP, Signal::SIGQUIT];
    let mut waited = SigSet::empty();
    waited.add(Signal::SIGCHLD);
    for sig in forwarded {
        waited.add(sig);
    }
    let setup = || -> Result<SigSet, InitError> {
        nix::unistd::setsid().ctx("start a session")?;
        unshare(CloneFlags::CLONE_NEWNS).ctx("create a mount namespace (unshare)")?;
        nix::unistd::dup2_stdin(&null).ctx("redirect stdin")?;
        nix::unistd::dup2_stdout(&log).ctx("redirect stdout")?;
        nix::unistd::dup2_stderr(&log).ctx("redirect stderr")?;
        rootfs::build(&rootfs::Plan {
            root: &layout.root(),
            work: &layout.work(),
            run: &layout.run(),
            hostname: &config.hostname,
            ca_bundle: config.ca_bundle.then(|| layout.ca_bundle()).as_deref(),
            user_namespace: settings.user_namespace,
            uid: settings.uid,
            volumes: &config.volumes,
            volume_userns: volume_userns.as_ref().map(AsFd::as_fd),
        })?;
        // The harness outlives its agent when the sandbox runs out of memory (only root may lower
        // it; in a user namespace the agent raises its own instead).
        if let Err(err) = std::fs::write("/proc/self/oom_score_adj", privs::HARNESS_OOM_SCORE_ADJ)
            && !settings.user_namespace
        {
            eprintln!("lap harness: cannot lower the harness's oom_score_adj ({err}); its commands raise theirs");
        }
        let mut old = SigSet::empty();
        sigprocmask(SigmaskHow::SIG_BLOCK, Some(&waited), Some(&mut old)).ctx("block signals")?;
        Ok(old)
    };
    let old_mask = match setup() {
        Ok(mask) => mask,
        Err(err) => {
            let _ = write!(ready, "{err}");
            return 1;
        }
    };
    drop((log, null, volume_userns));
    // SAFETY: PID 1 is single-threaded (forked from the single-threaded launcher).
    let server = match unsafe { fork() } {
        Ok(ForkResult::Child) => {
            let _ = sigprocmask(SigmaskHow::SIG_SETMASK, Some(&old_mask), None);
            std::process::exit(super::server::run(
                ready,
                settings,
                config.env.clone(),
                config.command.clone(),
            ))
        }
        Ok(ForkResult::Parent { child }) => child,
        Err(err) => {
            let _ = write!(ready, "cannot fork the harness server: {err}");
            return 1;
        }
    };
    drop(ready);
    loop {
        let Ok(sig) = waited.wait() else { continue };
        if sig == Signal::SIGCHLD {
            if let Some(code) = reap(server) {
                return code;
            }
        } else {
            // -1: every process of the namespace but PID 1 itself.
            let _ = kill(Pid::from_raw(-1), sig);
        }
    }
}

/// Reaps every exited child; returns the server's exit code once it has exited.
fn reap(server: Pid) -> Option<i32> {
    loop {
        match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(pid, code)) if pid == server => return Some(code),
            Ok(WaitStatus::Signaled(pid, sig, _)) if pid == server => return Some(128 + sig as i32),
            Ok(WaitStatus::StillAlive) | Err(_) => return None,
            Ok(_) => {}
        }
    }
}
