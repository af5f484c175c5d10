//! One host uid per sandbox, when `lap serve` runs as root.
//!
//! Invariant: no two live sandboxes' agents share a host uid, so per-user limits (`RLIMIT_NPROC`)
//! and the kernel's same-user checks (`/proc/PID/root`, signals, ptrace) never join two sandboxes.
//! Each sandbox leases a uid from [`FIRST`]..[`FIRST`]` + `[`COUNT`] (its gid is the same number): a
//! lease is the file `<data-dir>/uids/<uid>` created with `O_EXCL` and holding the sandbox id, so
//! concurrent creates (and two `lap serve`s on one data dir) never get the same uid, and a restarted
//! `lap serve` finds the lease of every sandbox it adopts. `delete` frees the lease once the
//! sandbox's processes are gone; [`Leases::sweep`] frees the leases of sandboxes that no longer
//! exist. As an unprivileged user there is only one uid to give (our own, mapped in a user
//! namespace), so no lease is taken.
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
/// Directory of the leases, under the data dir.
pub const LEASES_DIR: &str = "uids";

/// The uid leases of one data dir.
#[derive(Debug)]
pub struct Leases {
    dir: PathBuf,
    /// Where the next search starts, so consecutive creates do not probe every taken uid.
    next: AtomicU32,
}

impl Leases {
    pub fn new(data_dir: &Path) -> Self {
        Self {
            dir: data_dir.join(LEASES_DIR),
            next: AtomicU32::new(0),
        }
    }

    fn path(&self, uid: u32) -> PathBuf {
        self.dir.join(uid.to_string())
    }

    /// Leases a free uid to sandbox `id`.
    pub fn lease(&self, id: &str) -> io::Result<u32> {
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
                    file.write_all(id.as_bytes())?;
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

    /// Frees `uid` if sandbox `id` holds it.
    pub fn release(&self, uid: u32, id: &str) {
        let path = self.path(uid);
        if std::fs::read_to_string(&path).is_ok_and(|holder| holder == id) {
            let _ = std::fs::remove_file(path);
        }
    }

    /// Frees every lease whose sandbox is not `alive` (its directory is gone).
    pub fn sweep(&self, alive: impl Fn(&str) -> bool) {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return;
        };
        for entry in entries.flatten() {
            let Ok(holder) = std::fs::read_to_string(entry.path()) else {
                continue;
            };
            // A lease being written has no holder yet: its create is in progress.
            if !holder.is_empty() && !alive(&holder) {
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
        let leases = Leases::new(dir.path());
        let a = leases.lease("a").unwrap();
        let b = leases.lease("b").unwrap();
        assert_ne!(a, b);
        assert!((FIRST..FIRST + COUNT).contains(&a));
        // A second `lap serve` (or a restarted one) on the same data dir skips taken uids.
        let other = Leases::new(dir.path());
        let c = other.lease("c").unwrap();
        assert!(c != a && c != b);
        // Only the holder frees a lease.
        leases.release(a, "b");
        assert!(dir.path().join(LEASES_DIR).join(a.to_string()).exists());
        leases.release(a, "a");
        assert!(!dir.path().join(LEASES_DIR).join(a.to_string()).exists());
        leases.sweep(|id| id == "c");
        assert!(!dir.path().join(LEASES_DIR).join(b.to_string()).exists());
        assert!(dir.path().join(LEASES_DIR).join(c.to_string()).exists());
    }
}
