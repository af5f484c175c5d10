//! Idmapped mounts: an agent volume is owned on disk by one uid ([`uids::VOLUME_OWNER`]) and each
//! sandbox that mounts it sees it as its own.
//!
//! As root every sandbox has a uid of its own ([`uids`]), yet the sessions of one agent share its
//! volumes, at the same time too. A plain bind mount would leave a file made by one session
//! read-only for the next; handing the tree to each new sandbox would take it from the ones still
//! running. Instead the launcher makes a user namespace whose only mapping is
//! `VOLUME_OWNER ↔ the sandbox's uid` ([`userns`]), and PID 1 mounts each volume through it
//! ([`bind`]): the kernel shows the volume's files as the sandbox's own, and writes what the sandbox
//! creates as [`uids::VOLUME_OWNER`], so every session of the agent reads and writes everything in
//! it. Nothing runs as [`uids::VOLUME_OWNER`]; a file owned by any other uid shows as `nobody` and is
//! read-only inside.
//!
//! Needs Linux 5.12 and a filesystem with idmapped mounts (ext4, xfs, btrfs, tmpfs since 6.3); where
//! either is missing the caller falls back to handing the tree over, as before.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::path::Path;

use nix::sys::signal::{Signal, kill};
use nix::sys::wait::waitpid;
use nix::unistd::{ForkResult, fork};

use super::init::{InitError, ResultExt};
use super::uids;

/// A user namespace mapping [`uids::VOLUME_OWNER`] (uid and gid) to `uid` (and the gid of the same
/// number), as the fd an idmapped mount takes.
///
/// Must be called from a single-threaded process (the launcher) that is root in the initial user
/// namespace: a child unshares the namespace, this process writes its maps through `/proc`, opens
/// it, and kills the child.
pub fn userns(uid: u32) -> Result<OwnedFd, InitError> {
    let (ready_r, ready_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).ctx("create a pipe")?;
    let (hold_r, hold_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).ctx("create a pipe")?;
    // SAFETY: the launcher is single-threaded; the child only makes raw system calls and exits.
    match unsafe { fork() }.ctx("fork to make a user namespace")? {
        ForkResult::Child => {
            drop((ready_r, hold_w));
            // SAFETY: plain system calls on fds this process owns; `_exit` skips every destructor.
            unsafe {
                let ok = libc::unshare(libc::CLONE_NEWUSER) == 0;
                libc::write(ready_w.as_raw_fd(), [u8::from(ok)].as_ptr().cast(), 1);
                let mut byte = 0u8;
                libc::read(hold_r.as_raw_fd(), (&raw mut byte).cast(), 1);
                libc::_exit(0)
            }
        }
        ForkResult::Parent { child } => {
            drop((ready_w, hold_r));
            let made = map_and_open(child.as_raw(), uid, ready_r);
            drop(hold_w);
            let _ = kill(child, Signal::SIGKILL);
            let _ = waitpid(child, None);
            made
        }
    }
}

fn map_and_open(child: i32, uid: u32, ready: OwnedFd) -> Result<OwnedFd, InitError> {
    let mut answer = [0u8; 1];
    File::from(ready)
        .read_exact(&mut answer)
        .ctx("wait for the user namespace")?;
    if answer[0] != 1 {
        return Err(InitError::Setup(
            "cannot create a user namespace for the volumes".into(),
        ));
    }
    let owner = uids::VOLUME_OWNER;
    for map in ["uid_map", "gid_map"] {
        let path = format!("/proc/{child}/{map}");
        File::options()
            .write(true)
            .open(&path)
            .and_then(|mut f| f.write_all(format!("{owner} {uid} 1\n").as_bytes()))
            .ctx(format!("write {path}"))?;
    }
    File::open(format!("/proc/{child}/ns/user"))
        .map(OwnedFd::from)
        .ctx("open the volumes' user namespace")
}

/// Bind-mounts `source` on `target` (nosuid, nodev) through the idmapping of `userns`.
pub fn bind(source: &Path, target: &Path, userns: BorrowedFd<'_>) -> Result<(), InitError> {
    let what = || format!("mount {} on {} with an idmapping", source.display(), target.display());
    let source_c = c_path(source)?;
    let target_c = c_path(target)?;
    // SAFETY: a valid NUL-terminated path; the returned fd (if any) is owned right below.
    let tree = unsafe {
        libc::syscall(
            libc::SYS_open_tree,
            libc::AT_FDCWD,
            source_c.as_ptr(),
            libc::OPEN_TREE_CLONE | libc::OPEN_TREE_CLOEXEC,
        )
    };
    if tree < 0 {
        return Err(std::io::Error::last_os_error()).ctx(what());
    }
    // SAFETY: `open_tree` returned a new fd that nothing else owns.
    let tree = unsafe { OwnedFd::from_raw_fd(tree as i32) };
    let attr = libc::mount_attr {
        attr_set: libc::MOUNT_ATTR_IDMAP | libc::MOUNT_ATTR_NOSUID | libc::MOUNT_ATTR_NODEV,
        attr_clr: 0,
        propagation: 0,
        userns_fd: userns.as_raw_fd() as u64,
    };
    // SAFETY: `attr` outlives the call and its size is passed; the empty path names `tree` itself.
    let set = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            tree.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH,
            &raw const attr,
            size_of::<libc::mount_attr>(),
        )
    };
    if set < 0 {
        return Err(std::io::Error::last_os_error()).ctx(what());
    }
    // SAFETY: valid fds and NUL-terminated paths, all alive for the call.
    let moved = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            tree.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_FDCWD,
            target_c.as_ptr(),
            libc::MOVE_MOUNT_F_EMPTY_PATH,
        )
    };
    if moved < 0 {
        return Err(std::io::Error::last_os_error()).ctx(what());
    }
    Ok(())
}

fn c_path(path: &Path) -> Result<std::ffi::CString, InitError> {
    std::ffi::CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(|_| InitError::Setup(format!("the path {} holds a NUL byte", path.display())))
}
