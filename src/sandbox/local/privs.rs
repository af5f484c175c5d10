//! Dropping privileges for the processes the harness starts for the agent.
//!
//! Invariant: a process started in a sandbox runs as the sandbox user ([`super::rootfs::USER_ID`]),
//! with an empty capability bounding set, no effective, permitted, inheritable or ambient
//! capabilities, and `no_new_privs` set, so neither setuid binaries nor file capabilities can give
//! any back, and under the seccomp filters of [`super::seccomp`]. [`Drop::apply`] runs between `fork`
//! and `exec` of a multi-threaded process, so it makes only raw system calls and does not allocate.

use std::io;

use super::rootfs::USER_ID;
use super::seccomp::{Filters, SeccompError};

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

/// Everything [`Drop::apply`] needs, computed before the fork.
#[derive(Debug, Clone)]
pub struct Drop {
    last_cap: u32,
    seccomp: Filters,
    /// Whether supplementary groups can be set (not in a user namespace, where `setgroups` is denied).
    set_groups: bool,
}

impl Drop {
    pub fn prepare(user_namespace: bool) -> Result<Self, SeccompError> {
        let last_cap = std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(FALLBACK_LAST_CAP);
        Ok(Self {
            last_cap,
            seccomp: Filters::build()?,
            set_groups: !user_namespace,
        })
    }

    /// Becomes the sandbox user with no capabilities, in a session of its own. Async-signal-safe.
    pub fn apply(&self) -> io::Result<()> {
        nix::unistd::setsid()?;
        self.apply_in_session()
    }

    /// [`Drop::apply`] for a process that already leads its session (e.g. one that took a PTY as
    /// its controlling terminal). Async-signal-safe.
    pub fn apply_in_session(&self) -> io::Result<()> {
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
        let id = nix::unistd::Gid::from_raw(USER_ID);
        if self.set_groups {
            nix::unistd::setgroups(&[id])?;
        }
        nix::unistd::setresgid(id, id, id)?;
        let uid = nix::unistd::Uid::from_raw(USER_ID);
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
        // Last: the filter refuses some of the calls above.
        self.seccomp.apply()
    }
}
