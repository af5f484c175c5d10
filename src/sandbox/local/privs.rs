//! Dropping privileges for the processes the harness starts for the agent.
//!
//! Invariant: a process started in a sandbox runs as the sandbox user (its own host uid when
//! `lap serve` is root, [`super::uids`]; [`super::rootfs::USER_ID`] in a user namespace), with an
//! empty capability bounding set, no effective, permitted, inheritable or ambient capabilities, and
//! `no_new_privs` set, so neither setuid binaries nor file capabilities can give any back, under the
//! rlimits of [`super::rlimit`], the Landlock ruleset of [`super::landlock`] where the kernel has
//! Landlock, and the seccomp filters of [`super::seccomp`]. It is also the OOM killer's first choice
//! ([`AGENT_OOM_SCORE_ADJ`]), so an agent that fills the sandbox's memory dies before its harness.
//! [`Drop::apply`] runs between `fork` and `exec` of a multi-threaded process, so it makes only raw
//! system calls and does not allocate.

use std::io;

use super::landlock::{self, Ruleset};
use super::rlimit::Rlimits;
use super::seccomp::{Filters, SeccompError};

/// The agent's `oom_score_adj`: above the harness's, which only raises it (never needs privileges).
pub const AGENT_OOM_SCORE_ADJ: &[u8] = b"500";
/// The harness's `oom_score_adj` when it may lower it (as root).
pub const HARNESS_OOM_SCORE_ADJ: &str = "-500";

/// Highest capability number assumed when `/proc/sys/kernel/cap_last_cap` cannot be read.
const FALLBACK_LAST_CAP: u32 = 63;
/// `_LINUX_CAPABILITY_VERSION_3`: 64-bit capability sets in two 32-bit words.
const CAPABILITY_VERSION_3: u32 = 0x2008_0522;

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: libc::c_int,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

/// Who the agent is and what limits it, as the launcher decided.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// Whether the sandbox has a user namespace (`lap serve` is not root).
    pub user_namespace: bool,
    /// The agent's uid and gid.
    pub uid: u32,
    /// Limits no cgroup enforces.
    pub rlimits: Rlimits,
}

/// Everything [`Drop::apply`] needs, computed before the fork.
#[derive(Debug)]
pub struct Drop {
    last_cap: u32,
    seccomp: Filters,
    /// Whether supplementary groups can be set (not in a user namespace, where `setgroups` is denied).
    set_groups: bool,
    uid: u32,
    rlimits: Rlimits,
    landlock: Option<Ruleset>,
}

impl Drop {
    /// Compiles the filters and builds the Landlock ruleset (in the sandbox's root). A ruleset that
    /// cannot be built is reported in `harness.log` and left out.
    pub fn prepare(settings: Settings) -> Result<Self, SeccompError> {
        let last_cap = std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(FALLBACK_LAST_CAP);
        let landlock = match Ruleset::build(&landlock::SANDBOX) {
            Ok(ruleset) => ruleset,
            Err(err) => {
                eprintln!("lap harness: cannot build the Landlock ruleset ({err}); commands run without it");
                None
            }
        };
        eprintln!("lap harness: {}", landlock::status());
        if settings.rlimits.any() {
            eprintln!(
                "lap harness: limits by rlimit instead of cgroup: {:?}",
                settings.rlimits
            );
        }
        Ok(Self {
            last_cap,
            seccomp: Filters::build()?,
            set_groups: !settings.user_namespace,
            uid: settings.uid,
            rlimits: settings.rlimits,
            landlock,
        })
    }

    /// Becomes the sandbox user with no capabilities, in a session of its own. Async-signal-safe.
    /// The agent's uid (and gid).
    pub fn uid(&self) -> u32 {
        self.uid
    }

    pub fn apply(&self) -> io::Result<()> {
        nix::unistd::setsid()?;
        self.apply_in_session()
    }

    /// [`Drop::apply`] for a process that already leads its session (e.g. one that took a PTY as
    /// its controlling terminal). Async-signal-safe.
    pub fn apply_in_session(&self) -> io::Result<()> {
        // While still privileged: once the uid changes, `/proc/self` is no longer ours to write.
        raise_oom_score_adj();
        for cap in 0..=self.last_cap {
            // SAFETY: prctl with integer arguments only; EINVAL (a capability this kernel lacks) is fine.
            if unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) } < 0 {
                let err = io::Error::last_os_error();
                if err.raw_os_error() != Some(libc::EINVAL) {
                    return Err(err);
                }
            }
        }
        // SAFETY: prctl with integer arguments only.
        if unsafe {
            libc::prctl(
                libc::PR_CAP_AMBIENT,
                libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong,
                0,
                0,
                0,
            )
        } < 0
        {
            return Err(io::Error::last_os_error());
        }
        self.rlimits.apply()?;
        let id = nix::unistd::Gid::from_raw(self.uid);
        if self.set_groups {
            nix::unistd::setgroups(&[id])?;
        }
        nix::unistd::setresgid(id, id, id)?;
        let uid = nix::unistd::Uid::from_raw(self.uid);
        nix::unistd::setresuid(uid, uid, uid)?;
        let header = CapHeader {
            version: CAPABILITY_VERSION_3,
            pid: 0,
        };
        let data = [CapData {
            effective: 0,
            permitted: 0,
            inheritable: 0,
        }; 2];
        // SAFETY: `header` and `data` are valid `repr(C)` capability structs of version 3 (two data
        // words) that outlive the call; capset only reads them.
        if unsafe { libc::syscall(libc::SYS_capset, &header as *const CapHeader, data.as_ptr()) } < 0 {
            return Err(io::Error::last_os_error());
        }
        nix::sys::prctl::set_no_new_privs()?;
        if let Some(ruleset) = &self.landlock {
            ruleset.restrict()?;
        }
        // Last: the filter refuses some of the calls above.
        self.seccomp.apply()
    }
}

/// Makes the calling process the OOM killer's first choice in its sandbox. Best effort: a sandbox
/// without it still works. Async-signal-safe.
fn raise_oom_score_adj() {
    const PATH: &std::ffi::CStr = c"/proc/self/oom_score_adj";
    // SAFETY: open/write/close on a static NUL-terminated path and a static buffer.
    unsafe {
        let fd = libc::open(PATH.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
        if fd >= 0 {
            let _ = libc::write(fd, AGENT_OOM_SCORE_ADJ.as_ptr().cast(), AGENT_OOM_SCORE_ADJ.len());
            libc::close(fd);
        }
    }
}
