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
//!   for `lap harness` there (`cli.rs` compiles `cli/harness_unsupported.rs` in its place).
//!
//! Linux-only modules are declared under `cfg(all(target_os = "linux", not(lap_portable)))`. The
//! `lap_portable` cfg (`RUSTFLAGS="--cfg lap_portable"`) compiles on Linux exactly the set a macOS
//! build compiles, so a non-Linux compile error cannot hide in code this machine never compiles
//! (`scripts/test.sh` runs that check; tests/it/portable.rs checks each target's dependency tree).

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
#[cfg(unix)]
pub struct TerminalSignals {
    winch: tokio::signal::unix::Signal,
    term: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

#[cfg(unix)]
impl TerminalSignals {
    pub fn new() -> std::io::Result<Self> {
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

/// Resolves when `lap serve` is asked to stop (SIGTERM or SIGINT); returns the signal's name.
#[cfg(unix)]
pub async fn shutdown_signal() -> std::io::Result<&'static str> {
    use tokio::signal::unix::{SignalKind, signal};
    let (mut term, mut int) = (signal(SignalKind::terminate())?, signal(SignalKind::interrupt())?);
    Ok(tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    })
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
