//! Landlock: the agent's filesystem access, restricted by path where the kernel has Landlock.
//!
//! Invariant: where the kernel supports Landlock, every process the harness starts for the agent can
//! only read and execute the system directories ([`READ_EXEC`]), only read `/proc`, and write only
//! under `/work`, `/tmp` and `/dev` (its device nodes, `/dev/pts` and `/dev/shm`); every directory
//! may be listed, so `ls /` works. Anything else in the sandbox, such as `/run/lap` (the harness
//! socket) and the root tmpfs, can be neither read nor written even where file modes would allow it
//! (as in a user namespace, where the sandbox user owns `/run/lap`). This is a second wall behind
//! the mount namespace, not the first: the host's files are not in the sandbox at all.
//!
//! The ruleset is built (with the `landlock` crate) by the harness server inside the sandbox's root,
//! before any fork; [`restrict`] only makes the one system call that enforces it, so it is safe
//! between `fork` and `exec`. Where the kernel has no Landlock, [`Ruleset::build`] returns no ruleset
//! and the harness says so in `harness.log`; `lap serve` logs the kernel's Landlock ABI when it
//! checks the backend ([`status`]).

use std::os::fd::{AsRawFd, OwnedFd};

use landlock::{ABI, Access, AccessFs, Ruleset as LlRuleset, RulesetAttr, RulesetCreatedAttr, path_beneath_rules};

/// The ABI whose access rights lap asks for; older kernels enforce what they know (best effort).
const TARGET: ABI = ABI::V5;
/// Read and execute only.
pub const READ_EXEC: &[&str] = &["/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc"];
/// Read only.
pub const READ: &[&str] = &["/proc"];
/// Everything.
pub const READ_WRITE: &[&str] = &["/work", "/tmp", "/dev"];

/// The Landlock ABI of the running kernel (`None`: no Landlock, or disabled at boot).
pub fn kernel_abi() -> Option<i32> {
    const LANDLOCK_CREATE_RULESET_VERSION: libc::c_uint = 1;
    // SAFETY: landlock_create_ruleset with a null attribute and the VERSION flag only returns a
    // number; no memory is read or written.
    let version = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<libc::c_void>(),
            0usize,
            LANDLOCK_CREATE_RULESET_VERSION,
        )
    };
    (version > 0).then_some(version as i32)
}

/// One line saying whether sandboxes get Landlock here, for logs.
pub fn status() -> String {
    match kernel_abi() {
        Some(abi) => format!("Landlock ABI {abi}: the agent's filesystem access is restricted by path"),
        None => "Landlock is not available on this kernel: sandboxes rely on their mount namespace, \
                 seccomp and file modes alone"
            .to_owned(),
    }
}

/// Which paths get which access.
#[derive(Debug, Clone, Copy)]
pub struct Policy<'a> {
    pub read_exec: &'a [&'a str],
    pub read: &'a [&'a str],
    pub read_write: &'a [&'a str],
    /// Where every directory may be listed (`/` in a sandbox).
    pub list: &'a str,
}

/// The policy of a sandbox's agent.
pub const SANDBOX: Policy<'static> = Policy {
    read_exec: READ_EXEC,
    read: READ,
    read_write: READ_WRITE,
    list: "/",
};

/// A built ruleset, ready to enforce.
#[derive(Debug)]
pub struct Ruleset {
    fd: OwnedFd,
}

impl Ruleset {
    /// Builds the ruleset of `policy` (paths that do not exist are left out). `Ok(None)`: the
    /// kernel has no Landlock.
    pub fn build(policy: &Policy) -> Result<Option<Self>, landlock::RulesetError> {
        if kernel_abi().is_none() {
            return Ok(None);
        }
        let created = LlRuleset::default()
            .handle_access(AccessFs::from_all(TARGET))?
            .create()?
            .add_rules(path_beneath_rules([policy.list], AccessFs::ReadDir))?
            .add_rules(path_beneath_rules(policy.read_exec, AccessFs::from_read(TARGET)))?
            .add_rules(path_beneath_rules(policy.read, AccessFs::ReadFile | AccessFs::ReadDir))?
            .add_rules(path_beneath_rules(policy.read_write, AccessFs::from_all(TARGET)))?;
        let fd: Option<OwnedFd> = created.into();
        Ok(fd.map(|fd| Self { fd }))
    }

    /// Enforces the ruleset on the calling thread and what it execs. Needs `no_new_privs` (or
    /// `CAP_SYS_ADMIN`). Async-signal-safe.
    pub fn restrict(&self) -> std::io::Result<()> {
        // SAFETY: landlock_restrict_self with an open ruleset descriptor and no flags.
        if unsafe { libc::syscall(libc::SYS_landlock_restrict_self, self.fd.as_raw_fd(), 0u32) } < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }
}
