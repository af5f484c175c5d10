//! One host uid per sandbox, when `lap serve` runs as root.
//!
//! Invariant: no two live sandboxes' agents share a host uid, so per-user limits (`RLIMIT_NPROC`)
//! and the kernel's same-user checks (`/proc/PID/root`, signals, ptrace) never join two sandboxes.
//! Each sandbox leases a uid from [`FIRST`]..[`FIRST`]` + `[`COUNT`] (its gid is the same number): a
//! lease is the file `<leases>/<uid>` created with `O_EXCL` and holding the sandbox's directory, so
//! concurrent creates never get the same uid, and a restarted `lap serve` finds the lease of every
//! sandbox it adopts. The leases live in [`HOST_DIR`] (a tmpfs: a reboot, which ends every sandbox,
//! ends their leases too), shared by every `lap serve` of the machine whatever its data dir, or in
//! `<data-dir>/uids` where the machine has no `/run`. `delete` frees the lease once the sandbox's
//! processes are gone; [`Leases::sweep`] frees the leases whose sandbox directory no longer exists.
//! As an unprivileged user there is only one uid to give (our own, mapped in a user namespace), so
//! no lease is taken.
//!
//! The range sits above the ids `useradd` hands out for users and `/etc/subuid` ranges (from
//! 100000) and above systemd-nspawn's container ranges (up to 0x6FFFFFFF), and below 2^31, which
//! some tools mishandle.

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

/// The first uid leased to a sandbox.
pub const FIRST: u32 = 0x7A00_0000;
/// How many uids there are to lease.
pub const COUNT: u32 = 1_000_000;
/// The uid (and gid) that owns agent volumes on disk, just past the leased range: never leased and
/// never run as; each sandbox sees it as its own uid through an idmapped mount ([`super::idmap`]).
pub const VOLUME_OWNER: u32 = FIRST + COUNT;
/// Directory of the leases of the whole machine.
pub const HOST_DIR: &str = "/run/lap/uids";
/// Directory of the leases under the data dir, where the machine has no `/run`.
pub const LEASES_DIR: &str = "uids";

/// The uid leases of one data dir.
#[derive(Debug)]
pub struct Leases {
    dir: PathBuf,
    /// Where the next search starts, so consecutive creates do not probe every taken uid.
    next: AtomicU32,
}

impl Leases {
    /// The leases in `dir`.
    pub fn new(dir: PathBuf) -> Self {
        Self {
            dir,
            next: AtomicU32::new(0),
        }
    }

    /// The machine's leases ([`HOST_DIR`]), or the data dir's where there is no `/run`.
    pub fn for_host(data_dir: &Path) -> Self {
        if Path::new("/run").is_dir() {
            Self::new(PathBuf::from(HOST_DIR))
        } else {
            Self::new(data_dir.join(LEASES_DIR))
        }
    }

    /// Where the leases are.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn path(&self, uid: u32) -> PathBuf {
        self.dir.join(uid.to_string())
    }

    /// Leases a free uid to the sandbox in directory `holder` (an absolute path).
    pub fn lease(&self, holder: &Path) -> io::Result<u32> {
        use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.dir)?;
        let start = self.next.load(Ordering::Relaxed);
        for offset in 0..COUNT {
            let slot = (start + offset) % COUNT;
            let uid = FIRST + slot;
            match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(self.path(uid))
            {
                Ok(mut file) => {
                    file.write_all(holder.as_os_str().as_encoded_bytes())?;
                    self.next.store((slot + 1) % COUNT, Ordering::Relaxed);
                    return Ok(uid);
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e),
            }
        }
        Err(io::Error::other(format!(
            "all {COUNT} sandbox uids from {FIRST} are leased"
        )))
    }

    /// Frees `uid` if the sandbox in directory `holder` holds it.
    pub fn release(&self, uid: u32, holder: &Path) {
        let path = self.path(uid);
        if std::fs::read(&path).is_ok_and(|held| held == holder.as_os_str().as_encoded_bytes()) {
            let _ = std::fs::remove_file(path);
        }
    }

    /// Which sandbox directory holds `uid`.
    pub fn holder(&self, uid: u32) -> Option<PathBuf> {
        std::fs::read_to_string(self.path(uid)).ok().map(PathBuf::from)
    }

    /// Frees every lease whose sandbox directory is gone.
    pub fn sweep(&self) {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return;
        };
        for entry in entries.flatten() {
            let Ok(holder) = std::fs::read_to_string(entry.path()) else {
                continue;
            };
            // A lease being written has no holder yet: its create is in progress. The holder's
            // directory exists before its lease is taken and is removed before it is freed.
            if !holder.is_empty() && !Path::new(&holder).exists() {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leases_are_distinct_persisted_and_freed() {
        let dir = tempfile::tempdir().unwrap();
        let sandbox = |name: &str| {
            let path = dir.path().join(name);
            std::fs::create_dir(&path).unwrap();
            path
        };
        let (sa, sb, sc) = (sandbox("a"), sandbox("b"), sandbox("c"));
        let leases = Leases::new(dir.path().join(LEASES_DIR));
        let a = leases.lease(&sa).unwrap();
        let b = leases.lease(&sb).unwrap();
        assert_ne!(a, b);
        assert!((FIRST..FIRST + COUNT).contains(&a));
        // A second `lap serve` (or a restarted one) skips taken uids.
        let other = Leases::new(dir.path().join(LEASES_DIR));
        let c = other.lease(&sc).unwrap();
        assert!(c != a && c != b);
        assert_eq!(other.holder(a), Some(sa.clone()));
        // Only the holder frees a lease.
        leases.release(a, &sb);
        assert!(leases.holder(a).is_some());
        leases.release(a, &sa);
        assert!(leases.holder(a).is_none());
        std::fs::remove_dir(&sb).unwrap();
        leases.sweep();
        assert!(leases.holder(b).is_none());
        assert_eq!(leases.holder(c), Some(sc));
    }
}
