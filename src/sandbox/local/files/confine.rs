//! Confinement of the harness's file operations ([`super`]): the walls that keep an operation
//! inside `/work` and `/tmp` and inside what the sandbox user may do. [`resolve`] checks a path as
//! text (wall 1); [`beneath`] opens it below its root with `openat2(RESOLVE_BENEATH |
//! RESOLVE_NO_MAGICLINKS)`, or [`walk`]s it with `O_NOFOLLOW` where the kernel has no `openat2`
//! (wall 2); [`become_user`] makes the operation's thread the sandbox user, without capabilities
//! (wall 3), and restricts it with Landlock to the two roots (wall 4).

use std::ffi::OsStr;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Component, Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::Mode;

use super::errno;
use crate::wire::files::{FileError, FileErrorCode, ROOTS};

/// Times `openat2` is retried when the kernel saw a rename race (`EAGAIN`).
const OPEN_RETRIES: usize = 16;

/// Makes the calling thread the sandbox user (see the module doc, walls 3 and 4). The system calls
/// are made raw: glibc's wrappers would change the credentials of every thread of the harness.
pub fn become_user(uid: Option<u32>) -> io::Result<()> {
    if let Some(uid) = uid {
        let gid = uid as libc::gid_t;
        let groups = [gid];
        // SAFETY: setgroups reads `groups` (one gid, alive for the call); it changes this thread's
        // groups only. A user namespace denies it (EPERM): there the groups are not ours to set.
        if unsafe { libc::syscall(libc::SYS_setgroups, 1usize, groups.as_ptr()) } < 0 {
            let err = io::Error::last_os_error();
            if err.raw_os_error() != Some(libc::EPERM) {
                return Err(err);
            }
        }
        // SAFETY: integer arguments only; this thread's credentials change, no memory is touched.
        if unsafe { libc::syscall(libc::SYS_setresgid, gid, gid, gid) } < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: as above.
        if unsafe { libc::syscall(libc::SYS_setresuid, uid, uid, uid) } < 0 {
            return Err(io::Error::last_os_error());
        }
        drop_capabilities()?;
    }
    nix::sys::prctl::set_no_new_privs()?;
    let policy = crate::sandbox::local::landlock::Policy {
        read_exec: &[],
        read: &[],
        read_write: ROOTS,
        list: ROOTS[0],
    };
    if let Ok(Some(ruleset)) = crate::sandbox::local::landlock::Ruleset::build(&policy) {
        ruleset.restrict()?;
    }
    Ok(())
}

/// Empties this thread's capability sets (a uid change alone keeps them in a user namespace whose
/// owner already had that uid).
fn drop_capabilities() -> io::Result<()> {
    #[repr(C)]
    struct Header {
        version: u32,
        pid: libc::c_int,
    }
    #[repr(C)]
    #[derive(Clone, Copy)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    const VERSION_3: u32 = 0x2008_0522;
    let header = Header {
        version: VERSION_3,
        pid: 0,
    };
    let data = [Data {
        effective: 0,
        permitted: 0,
        inheritable: 0,
    }; 2];
    // SAFETY: valid version-3 capability structs (two data words) that outlive the call; capset
    // reads them and changes this thread's sets only.
    if unsafe { libc::syscall(libc::SYS_capset, &header as *const Header, data.as_ptr()) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// A checked path: its root, the rest below it (plain names only), and how to show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub root: &'static str,
    pub rel: PathBuf,
    pub display: String,
}

impl Target {
    /// The last component and the directory above it (`None` for a root itself).
    pub(super) fn split(&self) -> Option<(&Path, &OsStr)> {
        let name = self.rel.file_name()?;
        Some((self.rel.parent().unwrap_or(Path::new("")), name))
    }

    pub(super) fn name(&self) -> String {
        Path::new(&self.display)
            .file_name()
            .map_or_else(|| self.display.clone(), |n| n.to_string_lossy().into_owned())
    }
}

/// Checks a path as text (wall 1): absolute under `/work` or `/tmp`, or relative to `home`; no `..`.
pub fn resolve(path: &str, home: &str) -> Result<Target, FileError> {
    if path.is_empty() {
        return Err(FileError::new(FileErrorCode::Invalid, "the path is empty"));
    }
    if path.contains('\0') {
        return Err(FileError::new(FileErrorCode::Invalid, "the path holds a NUL byte"));
    }
    let full = if path.starts_with('/') {
        PathBuf::from(path)
    } else {
        Path::new(home).join(path)
    };
    let mut parts: Vec<&OsStr> = Vec::new();
    for component in full.components() {
        match component {
            Component::RootDir | Component::CurDir => {}
            Component::Normal(part) => parts.push(part),
            Component::ParentDir | Component::Prefix(_) => {
                return Err(FileError::new(
                    FileErrorCode::Forbidden,
                    format!("`{path}` holds `..`: give the path without it, under /work or /tmp"),
                ));
            }
        }
    }
    let root = parts
        .first()
        .and_then(|first| ROOTS.iter().find(|root| OsStr::new(&root[1..]) == *first))
        .ok_or_else(|| {
            FileError::new(
                FileErrorCode::Forbidden,
                format!("`{path}` is outside /work and /tmp, the only directories the file API reaches"),
            )
        })?;
    let rel: PathBuf = parts[1..].iter().collect();
    let display = format!(
        "/{}",
        parts.iter().map(|p| p.to_string_lossy()).collect::<Vec<_>>().join("/")
    );
    Ok(Target { root, rel, display })
}

/// Opens a root (`/work`, `/tmp`) itself.
pub(super) fn open_root(root: &str) -> Result<OwnedFd, FileError> {
    nix::fcntl::open(
        root,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| errno(e, root))
}

/// Whether this kernel (and the seccomp profile around us) has `openat2`.
fn has_openat2() -> bool {
    static HAS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *HAS.get_or_init(|| {
        let how = OpenHow::new()
            .flags(OFlag::O_PATH | OFlag::O_CLOEXEC)
            .resolve(ResolveFlag::RESOLVE_BENEATH);
        !matches!(
            nix::fcntl::openat2(nix::fcntl::AT_FDCWD, "/", how),
            Err(Errno::ENOSYS | Errno::EPERM)
        )
    })
}

/// Opens `rel` below the directory `dir` and never outside it (wall 2): `openat2` with
/// `RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS`, else [`walk`]. An empty `rel` opens `dir` itself.
pub fn beneath(dir: impl AsFd, rel: &Path, flags: OFlag, mode: Mode) -> Result<OwnedFd, Errno> {
    let rel = if rel.as_os_str().is_empty() {
        Path::new(".")
    } else {
        rel
    };
    if !has_openat2() {
        return walk(dir, rel, flags, mode);
    }
    let how = OpenHow::new()
        .flags(flags | OFlag::O_CLOEXEC)
        .mode(mode)
        .resolve(ResolveFlag::RESOLVE_BENEATH | ResolveFlag::RESOLVE_NO_MAGICLINKS);
    let mut result = Err(Errno::EAGAIN);
    for _ in 0..OPEN_RETRIES {
        result = nix::fcntl::openat2(dir.as_fd(), rel, how);
        if !matches!(result, Err(Errno::EAGAIN)) {
            break;
        }
    }
    result
}

/// [`beneath`] for kernels without `openat2`: one component at a time, each with `O_NOFOLLOW`, so
/// any symlink on the way is refused (`ELOOP`/`ENOTDIR`), whichever way it points.
pub fn walk(dir: impl AsFd, rel: &Path, flags: OFlag, mode: Mode) -> Result<OwnedFd, Errno> {
    let parts: Vec<&OsStr> = rel
        .components()
        .filter_map(|c| match c {
            Component::Normal(part) => Some(Ok(part)),
            Component::CurDir => None,
            _ => Some(Err(Errno::EXDEV)),
        })
        .collect::<Result<_, _>>()?;
    let dir_flags = OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let Some((last, above)) = parts.split_last() else {
        return nix::fcntl::openat(dir, ".", flags | OFlag::O_CLOEXEC, mode);
    };
    let mut current: Option<OwnedFd> = None;
    for part in above {
        let next = match &current {
            Some(fd) => nix::fcntl::openat(fd, *part, dir_flags, Mode::empty()),
            None => nix::fcntl::openat(dir.as_fd(), *part, dir_flags, Mode::empty()),
        }?;
        current = Some(next);
    }
    let flags = flags | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    match &current {
        Some(fd) => nix::fcntl::openat(fd, *last, flags, mode),
        None => nix::fcntl::openat(dir.as_fd(), *last, flags, mode),
    }
}
