//! The one place where `lap` behaves differently per operating system.
//!
//! `lap` is a Linux program at heart (the local sandbox backend and `lap harness` use namespaces,
//! seccomp, Landlock and `/proc`), but its client — `lap <agent>`, `lap attach`, `lap login`, … — and
//! `lap serve --backend kube` are portable, and run on macOS and Windows too. Everything that differs
//! is chosen here, once, and the rest of the code calls these functions without a `cfg` of its own:
//!
//! - [`keyring_store`]: the OS keyring behind `keyring-core` (Secret Service on Linux, the Keychain
//!   on macOS, Credential Manager on Windows), and [`keyring_expected`]: whether `auto` tries it
//!   (`settings` falls back to its 0600 file when none answers);
//! - [`TerminalSignals`] and [`shutdown_signal`]: window changes and the signals that end `lap
//!   attach` or `lap serve` (Unix signals; a Windows build needs console events here);
//! - [`local_sandbox`]: the local sandbox backend, or a [`Unsupported`] error that names the ways
//!   forward (`--backend kube`, or a Linux host) on any other system, and [`harness_unsupported`]
//!   for `lap harness` there (`cli.rs` compiles `cli/harness_unsupported.rs` in its place);
//! - files: owner-only files and directories ([`create_private_file`], [`create_private_dir`],
//!   [`restrict_dir`]), permission bits ([`mode`], [`set_mode`], [`is_executable`]), [`symlink`],
//!   [`reflink`], and the open-files limit ([`raise_descriptor_limit`]).
//!
//! Linux-only modules are declared under `cfg(all(target_os = "linux", not(lap_portable)))`. The
//! `lap_portable` cfg (`RUSTFLAGS="--cfg lap_portable"`) compiles on Linux exactly the set a macOS
//! build compiles, so a non-Linux compile error cannot hide in code this machine never compiles
//! (`scripts/test.sh` runs that check; tests/it/portable.rs checks each target's dependency tree).
//! Unix APIs (file modes, signals, rlimits) are used only here, under `cfg(all(unix,
//! not(lap_windows)))`; `--cfg lap_windows` (with `lap_portable`) compiles on Linux the branches a
//! Windows build takes instead, and `scripts/test.sh` runs clippy on that set with
//! `scripts/clippy-windows/clippy.toml`, which refuses every Unix-only API by name, so one used
//! outside this file fails there. The branches taken elsewhere use only portable `std`, `tokio` and
//! `crossterm`: what this machine can check of a Windows build without Windows' standard library.

use std::fs::{File, Metadata};
use std::io;
use std::path::Path;
use std::sync::Arc;

use crate::sandbox::Sandbox;

/// What this build of `lap` cannot do on this operating system.
#[derive(Debug, thiserror::Error)]
pub enum Unsupported {
    #[error("the local sandbox backend runs only on Linux (this `lap` is built for {os})")]
    LocalBackend { os: &'static str },
    #[error("`lap harness` runs only on Linux, inside a sandbox (this `lap` is built for {os})")]
    Harness { os: &'static str },
}

impl Unsupported {
    /// The ways forward, for the `hint:` line.
    pub fn hint(&self) -> &'static str {
        match self {
            Self::LocalBackend { .. } => {
                "run `lap serve --backend kube` against a Kubernetes cluster (`scripts/kind-up.sh` makes a kind \
                 cluster on Docker Desktop), or run `lap serve` on a Linux host and point this `lap` at it with \
                 `lap login`"
            }
            Self::Harness { .. } => {
                "`lap serve` starts it inside each sandbox; on this system use `lap serve --backend kube`, or a \
                 Linux host"
            }
        }
    }
}

/// The local sandbox backend keeping its sandboxes under `data_dir`.
#[cfg(all(target_os = "linux", not(lap_portable)))]
pub fn local_sandbox(data_dir: &Path, cgroups: bool) -> Result<Arc<dyn Sandbox>, Unsupported> {
    Ok(Arc::new(
        crate::sandbox::local::Local::new(data_dir).with_cgroups(cgroups),
    ))
}

/// The local sandbox backend: not on this system.
#[cfg(not(all(target_os = "linux", not(lap_portable))))]
pub fn local_sandbox(_data_dir: &Path, _cgroups: bool) -> Result<Arc<dyn Sandbox>, Unsupported> {
    Err(Unsupported::LocalBackend {
        os: std::env::consts::OS,
    })
}

/// `lap harness` on a system without it.
pub fn harness_unsupported() -> Unsupported {
    Unsupported::Harness {
        os: std::env::consts::OS,
    }
}

/// The OS keyring store of this system: the Secret Service (D-Bus) on Linux.
#[cfg(all(target_os = "linux", not(lap_portable)))]
pub fn keyring_store() -> Result<Arc<keyring_core::CredentialStore>, keyring_core::Error> {
    zbus_secret_service_keyring_store::Store::new().map(|store| store as Arc<keyring_core::CredentialStore>)
}

/// The OS keyring store of this system: the login Keychain on macOS.
#[cfg(target_os = "macos")]
pub fn keyring_store() -> Result<Arc<keyring_core::CredentialStore>, keyring_core::Error> {
    apple_native_keyring_store::keychain::Store::new().map(|store| store as Arc<keyring_core::CredentialStore>)
}

/// The OS keyring store of this system: Credential Manager on Windows.
#[cfg(target_os = "windows")]
pub fn keyring_store() -> Result<Arc<keyring_core::CredentialStore>, keyring_core::Error> {
    windows_native_keyring_store::Store::new().map(|store| store as Arc<keyring_core::CredentialStore>)
}

/// No OS keyring store is built in for this system (the credentials file is used).
#[cfg(not(any(
    all(target_os = "linux", not(lap_portable)),
    target_os = "macos",
    target_os = "windows"
)))]
pub fn keyring_store() -> Result<Arc<keyring_core::CredentialStore>, keyring_core::Error> {
    Err(keyring_core::Error::NoDefaultStore)
}

/// Whether `LAP_CREDENTIAL_STORE=auto` should try the OS keyring before the credentials file: on
/// Linux only with a D-Bus session bus (`DBUS_SESSION_BUS_ADDRESS` set, or the user's bus socket),
/// where the Secret Service lives; the Keychain and Credential Manager are always there.
pub fn keyring_expected(session_bus_address_set: bool) -> bool {
    #[cfg(all(target_os = "linux", not(lap_portable)))]
    let expected = session_bus_address_set || Path::new(&format!("/run/user/{}/bus", nix::unistd::getuid())).exists();
    #[cfg(any(target_os = "macos", target_os = "windows"))]
    let expected = {
        let _ = session_bus_address_set;
        true
    };
    #[cfg(not(any(
        all(target_os = "linux", not(lap_portable)),
        target_os = "macos",
        target_os = "windows"
    )))]
    let expected = {
        let _ = session_bus_address_set;
        false
    };
    expected
}

/// What the terminal of `lap attach` reports besides its input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TerminalSignal {
    /// The window changed size: read the new size and send it.
    Resize,
    /// A signal that ends the attachment; the process exits with 128 + this number.
    End(i32),
}

/// The window-change and ending signals of the local terminal, watched from creation on.
#[cfg(all(unix, not(lap_windows)))]
pub struct TerminalSignals {
    winch: tokio::signal::unix::Signal,
    term: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

#[cfg(all(unix, not(lap_windows)))]
impl TerminalSignals {
    pub fn new() -> io::Result<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Self {
            winch: signal(SignalKind::window_change())?,
            term: signal(SignalKind::terminate())?,
            hup: signal(SignalKind::hangup())?,
            int: signal(SignalKind::interrupt())?,
        })
    }

    /// The next signal (cancel-safe, for `select!`).
    pub async fn recv(&mut self) -> TerminalSignal {
        tokio::select! {
            _ = self.winch.recv() => TerminalSignal::Resize,
            _ = self.term.recv() => TerminalSignal::End(libc::SIGTERM),
            _ = self.hup.recv() => TerminalSignal::End(libc::SIGHUP),
            _ = self.int.recv() => TerminalSignal::End(libc::SIGINT),
        }
    }
}

/// How often the console's size is read where no signal says it changed.
#[cfg(not(all(unix, not(lap_windows))))]
const CONSOLE_SIZE_POLL: std::time::Duration = std::time::Duration::from_millis(250);

/// Where there is no `SIGWINCH` (Windows): the console's size, read every [`CONSOLE_SIZE_POLL`],
/// and Ctrl-C (which a console in raw mode delivers as input, so it seldom fires).
#[cfg(not(all(unix, not(lap_windows))))]
pub struct TerminalSignals {
    size: Option<(u16, u16)>,
    poll: tokio::time::Interval,
}

#[cfg(not(all(unix, not(lap_windows))))]
impl TerminalSignals {
    pub fn new() -> io::Result<Self> {
        let mut poll = tokio::time::interval(CONSOLE_SIZE_POLL);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        Ok(Self {
            size: crossterm::terminal::size().ok(),
            poll,
        })
    }

    /// The next change of size or Ctrl-C (cancel-safe, for `select!`).
    pub async fn recv(&mut self) -> TerminalSignal {
        /// The number a Unix shell reports for an interrupt (exit status 130).
        const INTERRUPT: i32 = 2;
        loop {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => return TerminalSignal::End(INTERRUPT),
                _ = self.poll.tick() => {
                    let size = crossterm::terminal::size().ok();
                    if size != self.size {
                        self.size = size;
                        return TerminalSignal::Resize;
                    }
                }
            }
        }
    }
}

/// Resolves when `lap serve` is asked to stop (SIGTERM or SIGINT); returns the signal's name.
#[cfg(all(unix, not(lap_windows)))]
pub async fn shutdown_signal() -> io::Result<&'static str> {
    use tokio::signal::unix::{SignalKind, signal};
    let (mut term, mut int) = (signal(SignalKind::terminate())?, signal(SignalKind::interrupt())?);
    Ok(tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    })
}

/// Resolves when `lap serve` is asked to stop (Ctrl-C, where there are no Unix signals).
#[cfg(not(all(unix, not(lap_windows))))]
pub async fn shutdown_signal() -> io::Result<&'static str> {
    tokio::signal::ctrl_c().await?;
    Ok("Ctrl-C")
}

/// Creates `path` (which must not exist) for writing, readable by its owner only from the moment it
/// exists: mode 0600 on Unix; elsewhere the directory's own access rules (a user's profile is theirs).
pub fn create_private_file(path: &Path) -> io::Result<File> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(all(unix, not(lap_windows)))]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path)
}

/// Creates the directory `path` (its parent must exist), only its owner may enter it (0700 on Unix).
pub fn create_private_dir(path: &Path) -> io::Result<()> {
    #[cfg(all(unix, not(lap_windows)))]
    let made = std::os::unix::fs::DirBuilderExt::mode(&mut std::fs::DirBuilder::new(), 0o700).create(path);
    #[cfg(not(all(unix, not(lap_windows))))]
    let made = std::fs::DirBuilder::new().create(path);
    made
}

/// Makes an existing directory its owner's only (0700 on Unix). Best effort: it may be shared.
pub fn restrict_dir(path: &Path) {
    let _ = set_mode(path, 0o700);
}

/// A file's permission bits (`0o7777`) where the system has them (Unix), else `None`.
pub fn mode(meta: &Metadata) -> Option<u32> {
    #[cfg(all(unix, not(lap_windows)))]
    let mode = Some(std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o7777);
    #[cfg(not(all(unix, not(lap_windows))))]
    let mode = {
        let _ = meta;
        None
    };
    mode
}

/// Sets a file's permission bits; a no-op where the system has none.
pub fn set_mode(path: &Path, mode: u32) -> io::Result<()> {
    #[cfg(all(unix, not(lap_windows)))]
    let set = std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(mode & 0o7777));
    #[cfg(not(all(unix, not(lap_windows))))]
    let set = {
        let _ = (path, mode);
        Ok(())
    };
    set
}

/// Whether a file may be run: an execute bit on Unix; any file elsewhere.
pub fn is_executable(meta: &Metadata) -> bool {
    meta.is_file() && mode(meta).is_none_or(|mode| mode & 0o111 != 0)
}

/// Makes `link` a symbolic link to `target`; an `Unsupported` error where links need more than that
/// (Windows tells file links from directory links and may need a privilege).
pub fn symlink(target: &Path, link: &Path) -> io::Result<()> {
    #[cfg(all(unix, not(lap_windows)))]
    let made = std::os::unix::fs::symlink(target, link);
    #[cfg(not(all(unix, not(lap_windows))))]
    let made = Err(io::Error::new(
        io::ErrorKind::Unsupported,
        format!(
            "cannot copy the symbolic link {} -> {} on this system",
            link.display(),
            target.display()
        ),
    ));
    made
}

#[cfg(all(target_os = "linux", not(lap_portable)))]
nix::ioctl_write_int_bad!(ficlone, libc::FICLONE);

/// Makes the empty file `to` share `from`'s extents (`FICLONE`: btrfs, XFS, bcachefs… on Linux);
/// whether it did (`false` on any other file system or system: copy the bytes instead).
pub fn reflink(from: &File, to: &File) -> bool {
    #[cfg(all(target_os = "linux", not(lap_portable)))]
    let cloned = {
        use std::os::fd::AsRawFd;
        // SAFETY: both descriptors are open files the caller keeps open for the whole call, and
        // FICLONE takes the source descriptor by value; the kernel checks everything else.
        unsafe { ficlone(to.as_raw_fd(), from.as_raw_fd()) }.is_ok()
    };
    #[cfg(not(all(target_os = "linux", not(lap_portable))))]
    let cloned = {
        let _ = (from, to);
        false
    };
    cloned
}

/// The soft limit on open files before and after [`raise_descriptor_limit`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DescriptorLimit {
    pub was: u64,
    pub now: u64,
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit (what the kernel lets an unprivileged process
/// do), counting an unlimited one as `unlimited`; `None` where the system has no such limit.
#[cfg(all(unix, not(lap_windows)))]
pub fn raise_descriptor_limit(unlimited: u64) -> io::Result<Option<DescriptorLimit>> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `getrlimit` writes one `rlimit` into the struct it is given.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let count = |value: libc::rlim_t| {
        if value == libc::RLIM_INFINITY { unlimited } else { value }
    };
    let (was, hard) = (count(limit.rlim_cur), count(limit.rlim_max));
    if limit.rlim_cur != libc::RLIM_INFINITY && was < hard {
        limit.rlim_cur = hard;
        // SAFETY: `setrlimit` reads one `rlimit`; raising the soft limit up to the hard one
        // needs no privilege.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } != 0 {
            return Err(io::Error::last_os_error());
        }
        return Ok(Some(DescriptorLimit { was, now: hard }));
    }
    Ok(Some(DescriptorLimit { was, now: was }))
}

/// No open-files limit to raise here (Windows has none per process worth raising).
#[cfg(not(all(unix, not(lap_windows))))]
pub fn raise_descriptor_limit(unlimited: u64) -> io::Result<Option<DescriptorLimit>> {
    let _ = unlimited;
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_local_backend_off_linux_names_both_ways_forward() {
        let err = Unsupported::LocalBackend { os: "macos" };
        assert_eq!(
            err.to_string(),
            "the local sandbox backend runs only on Linux (this `lap` is built for macos)"
        );
        assert!(err.hint().contains("`lap serve --backend kube`"), "{}", err.hint());
        assert!(err.hint().contains("on a Linux host"), "{}", err.hint());
    }

    #[test]
    fn harness_off_linux_says_it_is_linux_only() {
        let err = Unsupported::Harness { os: "windows" };
        assert!(err.to_string().contains("runs only on Linux"), "{err}");
        assert!(err.hint().contains("--backend kube"), "{}", err.hint());
    }

    /// The backend this build picks for `--backend local`: the namespace sandbox on Linux, the
    /// error everywhere else (and under `--cfg lap_portable`).
    #[test]
    fn local_sandbox_exists_exactly_where_linux_modules_are_built() {
        let dir = tempfile::tempdir().expect("tempdir");
        let picked = local_sandbox(dir.path(), false);
        if cfg!(all(target_os = "linux", not(lap_portable))) {
            assert!(picked.is_ok(), "the local backend is missing on Linux");
        } else {
            assert!(matches!(picked, Err(Unsupported::LocalBackend { .. })));
        }
    }
}
