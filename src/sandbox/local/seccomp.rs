//! The seccomp filter of every command the harness starts in a sandbox.
//!
//! Invariant: a sandboxed command cannot reach the kernel interfaces that let a process escape or
//! widen its sandbox, even ones its (absent) capabilities would not stop: creating namespaces
//! (`unshare`, `setns`, `clone` with a `CLONE_NEW*` flag — `clone3`, whose flags a filter cannot
//! read, answers `ENOSYS` so libc falls back to `clone`), mounting, tracing other processes, BPF,
//! kernel keyrings, module and kexec loading, io_uring, userfaultfd and perf events. Those answer
//! `EPERM`; everything else is allowed (a deny list: agents run arbitrary developer tools). The
//! filters are compiled before the fork; [`Filters::apply`] only installs them, so it is safe between
//! `fork` and `exec`.

use std::collections::BTreeMap;
use std::io;

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter, SeccompRule, TargetArch,
};

/// System calls refused outright.
const DENIED: &[i64] = &[
    libc::SYS_unshare,
    libc::SYS_setns,
    libc::SYS_mount,
    libc::SYS_umount2,
    libc::SYS_pivot_root,
    libc::SYS_fsopen,
    libc::SYS_fsconfig,
    libc::SYS_fsmount,
    libc::SYS_fspick,
    libc::SYS_move_mount,
    libc::SYS_open_tree,
    libc::SYS_mount_setattr,
    libc::SYS_ptrace,
    libc::SYS_process_vm_readv,
    libc::SYS_process_vm_writev,
    libc::SYS_bpf,
    libc::SYS_keyctl,
    libc::SYS_add_key,
    libc::SYS_request_key,
    libc::SYS_init_module,
    libc::SYS_finit_module,
    libc::SYS_delete_module,
    libc::SYS_kexec_load,
    libc::SYS_kexec_file_load,
    libc::SYS_io_uring_setup,
    libc::SYS_io_uring_enter,
    libc::SYS_io_uring_register,
    libc::SYS_userfaultfd,
    libc::SYS_perf_event_open,
    libc::SYS_open_by_handle_at,
    libc::SYS_swapon,
    libc::SYS_swapoff,
    libc::SYS_reboot,
    libc::SYS_acct,
    libc::SYS_quotactl,
    libc::SYS_syslog,
    libc::SYS_settimeofday,
    libc::SYS_clock_settime,
    libc::SYS_clock_adjtime,
    libc::SYS_adjtimex,
];
/// `clone` flags that create namespaces.
const NAMESPACE_FLAGS: &[libc::c_int] = &[
    libc::CLONE_NEWUSER,
    libc::CLONE_NEWNS,
    libc::CLONE_NEWPID,
    libc::CLONE_NEWNET,
    libc::CLONE_NEWUTS,
    libc::CLONE_NEWIPC,
    libc::CLONE_NEWCGROUP,
];

#[derive(Debug, thiserror::Error)]
#[error("cannot build the seccomp filter: {0}")]
pub struct SeccompError(#[from] seccompiler::BackendError);

/// The compiled filters, ready to install.
#[derive(Debug, Clone)]
pub struct Filters {
    deny: BpfProgram,
    clone3: BpfProgram,
}

impl Filters {
    pub fn build() -> Result<Self, SeccompError> {
        let arch = TargetArch::try_from(std::env::consts::ARCH)?;
        let mut rules: BTreeMap<i64, Vec<SeccompRule>> = DENIED.iter().map(|nr| (*nr, Vec::new())).collect();
        // The flags are clone's first argument on every architecture lap runs on.
        let clone_rules = NAMESPACE_FLAGS
            .iter()
            .map(|flag| {
                let flag = *flag as u64;
                SeccompRule::new(vec![SeccompCondition::new(
                    0,
                    SeccompCmpArgLen::Qword,
                    SeccompCmpOp::MaskedEq(flag),
                    flag,
                )?])
            })
            .collect::<Result<Vec<_>, _>>()?;
        rules.insert(libc::SYS_clone, clone_rules);
        let deny = SeccompFilter::new(
            rules,
            SeccompAction::Allow,
            SeccompAction::Errno(libc::EPERM as u32),
            arch,
        )?;
        let clone3 = SeccompFilter::new(
            BTreeMap::from([(libc::SYS_clone3, Vec::new())]),
            SeccompAction::Allow,
            SeccompAction::Errno(libc::ENOSYS as u32),
            arch,
        )?;
        Ok(Self {
            deny: deny.try_into()?,
            clone3: clone3.try_into()?,
        })
    }

    /// Installs the filters on this thread (and so on everything it execs). Sets `no_new_privs`.
    /// Async-signal-safe: no allocation, only `prctl` and `seccomp`.
    pub fn apply(&self) -> io::Result<()> {
        for filter in [&self.deny, &self.clone3] {
            seccompiler::apply_filter(filter).map_err(|_| io::Error::from_raw_os_error(libc::EPERM))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_filters_compile_for_this_architecture() {
        let filters = Filters::build().unwrap();
        assert!(!filters.deny.is_empty() && !filters.clone3.is_empty());
    }
}
