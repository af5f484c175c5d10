//! Resource limits by `setrlimit`: the fallback for controllers no cgroup hierarchy could limit.
//!
//! Invariant: when the launcher could not put the sandbox in a cgroup for `pids` or `memory` (none
//! is mounted or writable, or `lap serve --sandbox-cgroups off`), every process the harness starts
//! for the agent still runs under a ceiling: `RLIMIT_NPROC` (processes and threads of the agent's uid
//! — one uid per sandbox when `lap serve` runs as root, see [`super::uids`]) for `pids`, and
//! `RLIMIT_DATA` (each process's heap and private writable mappings) for `memory`. `RLIMIT_AS` is
//! not used: JIT runtimes (V8, the JVM, Go) reserve address space far beyond what they touch and
//! would not start. A missing `cpu` controller has no rlimit counterpart that limits a rate
//! (`RLIMIT_CPU` kills a process after a total number of seconds, which would end a long build), so
//! the agent's processes run at a lower priority (nice [`FALLBACK_NICE`]) instead. Two limits hold
//! always, cgroups or not: `RLIMIT_NOFILE` at most [`MAX_OPEN_FILES`] and no core dumps.
//! These are per-process limits, so they bound a runaway less tightly than a cgroup does (a process
//! may use its `RLIMIT_DATA` in each of up to `RLIMIT_NPROC` processes); `harness.log` says which
//! limits are rlimits. [`Rlimits::apply`] runs between `fork` and `exec` and only makes raw system
//! calls.

use std::io;

use serde::{Deserialize, Serialize};

use super::cgroup::Limits;

/// The most open files an agent process may have.
pub const MAX_OPEN_FILES: u64 = 65_536;
/// The niceness of the agent's processes when no cgroup limits its CPU.
pub const FALLBACK_NICE: i32 = 10;

/// The rlimits the agent's processes get, computed before the fork.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rlimits {
    /// `RLIMIT_NPROC`, when no cgroup limits `pids`.
    pub nproc: Option<u64>,
    /// `RLIMIT_DATA`, in bytes, when no cgroup limits `memory`.
    pub data: Option<u64>,
    /// Whether to lower the priority, when no cgroup limits `cpu`.
    pub nice: bool,
}

impl Rlimits {
    /// The fallbacks for the controllers of `limits` not in `limited` (the controllers a cgroup
    /// limits).
    pub fn fallback(limits: &Limits, limited: &[&str]) -> Self {
        let missing = |controller: &str| !limited.contains(&controller);
        Self {
            nproc: missing("pids").then_some(limits.pids),
            data: missing("memory").then_some(limits.memory_bytes),
            nice: missing("cpu"),
        }
    }

    /// Whether any limit is an rlimit rather than a cgroup's.
    pub fn any(&self) -> bool {
        self.nproc.is_some() || self.data.is_some() || self.nice
    }

    /// Sets the limits on the calling process (inherited by what it execs). Async-signal-safe.
    pub fn apply(&self) -> io::Result<()> {
        lower(libc::RLIMIT_CORE, 0)?;
        lower(libc::RLIMIT_NOFILE, MAX_OPEN_FILES)?;
        if let Some(nproc) = self.nproc {
            lower(libc::RLIMIT_NPROC, nproc)?;
        }
        if let Some(data) = self.data {
            lower(libc::RLIMIT_DATA, data)?;
        }
        if self.nice {
            // SAFETY: setpriority with integer arguments only.
            if unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, FALLBACK_NICE) } < 0 {
                return Err(io::Error::last_os_error());
            }
        }
        Ok(())
    }
}

/// Lowers both the soft and the hard limit of `resource` to at most `max` (never raises them).
fn lower(resource: libc::__rlimit_resource_t, max: u64) -> io::Result<()> {
    let mut current = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `current` is a valid, writable rlimit struct that outlives the call.
    if unsafe { libc::getrlimit(resource, &mut current) } < 0 {
        return Err(io::Error::last_os_error());
    }
    let new = libc::rlimit {
        rlim_cur: current.rlim_cur.min(max),
        rlim_max: current.rlim_max.min(max),
    };
    // SAFETY: `new` is a valid rlimit struct that outlives the call; the kernel only reads it.
    if unsafe { libc::setrlimit(resource, &new) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_controllers_no_cgroup_limits_fall_back_to_rlimits() {
        let limits = Limits {
            memory_bytes: 64 << 20,
            pids: 32,
            cpu_millis: 500,
        };
        assert_eq!(
            Rlimits::fallback(&limits, &["memory", "pids", "cpu"]),
            Rlimits::default()
        );
        assert!(!Rlimits::default().any());
        assert_eq!(
            Rlimits::fallback(&limits, &["cpu"]),
            Rlimits {
                nproc: Some(32),
                data: Some(64 << 20),
                nice: false
            }
        );
        assert!(Rlimits::fallback(&limits, &[]).nice);
    }
}
