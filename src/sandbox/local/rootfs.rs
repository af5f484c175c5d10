//! The sandbox's filesystem and network, built by PID 1 inside its fresh mount and network
//! namespaces, then entered with `pivot_root`.
//!
//! The root is a small tmpfs (read-only once built) holding: read-only bind mounts of the host's
//! system directories ([`SYSTEM_DIRS`]; symlinks where the host has usrmerge symlinks), the `/etc`
//! entries tools need ([`ETC_BINDS`]) beside generated `passwd`, `group`, `hosts`, `hostname` and
//! `nsswitch.conf` that name only the sandbox user, `/work` (the sandbox's `work/`, writable), a
//! private `/tmp`, a minimal `/dev` with a private devpts, `/proc` of the sandbox's PID namespace,
//! and `/run/lap` (the sandbox's `run/`, holding `harness.sock`). Nothing else of the host is
//! mounted, so the user's home, the lap data dir, other sandboxes and the host's sockets are not
//! there to be read. The network namespace gets only `lo`, brought up.

use std::ffi::CString;
use std::fs;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};

use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::sys::statvfs::{FsFlags, statvfs};
use nix::unistd::{Gid, Uid, chown, pivot_root, sethostname};

use super::init::{InitError, ResultExt};

/// Where tools look for trusted CA certificates; the vault's bundle is mounted here.
pub const CA_BUNDLE: &str = crate::sandbox::CA_BUNDLE_PATH;
/// Host directories bind-mounted read-only (or recreated as symlinks) at the same place.
pub const SYSTEM_DIRS: &[&str] = &["usr", "bin", "sbin", "lib", "lib32", "lib64", "libx32"];
/// Host `/etc` entries bind-mounted read-only when they exist (symlinks are recreated).
pub const ETC_BINDS: &[&str] = &[
    "alternatives",
    "bash.bashrc",
    "ca-certificates",
    "ca-certificates.conf",
    "environment",
    "gitconfig",
    "inputrc",
    "ld.so.cache",
    "ld.so.conf",
    "ld.so.conf.d",
    "localtime",
    "mime.types",
    "os-release",
    "profile",
    "profile.d",
    "protocols",
    "services",
    "shells",
    "ssl/certs",
    "ssl/openssl.cnf",
    "terminfo",
    "timezone",
];
/// Device nodes bind-mounted from the host's `/dev`.
pub const DEVICES: &[&str] = &["null", "zero", "full", "random", "urandom", "tty"];
/// Size limits of the tmpfs mounts.
const ROOT_TMPFS: &str = "mode=0755,size=4m";
const DEV_TMPFS: &str = "mode=0755,size=64k";
const TMP_TMPFS: &str = "mode=1777,size=1g";
const SHM_TMPFS: &str = "mode=1777,size=64m";

/// The sandbox user: its name, uid and gid inside the sandbox.
pub const USER: &str = "lap";
pub const USER_ID: u32 = 1000;
pub const HOME: &str = crate::sandbox::AGENT_HOME;

/// What PID 1 needs to build the root.
pub struct Plan<'a> {
    /// The empty host directory the root tmpfs is mounted on.
    pub root: &'a Path,
    /// The host directory that becomes `/work`.
    pub work: &'a Path,
    /// The host directory that becomes `/run/lap`.
    pub run: &'a Path,
    pub hostname: &'a str,
    /// A CA bundle to mount over `/etc/ssl/certs/ca-certificates.crt`.
    pub ca_bundle: Option<&'a Path>,
    /// Whether the sandbox runs in its own user namespace (lap is not root): then device and
    /// ownership changes are impossible and unnecessary.
    pub user_namespace: bool,
    /// The sandbox user's uid and gid ([`USER_ID`] in a user namespace).
    pub uid: u32,
    /// The agent's volumes, mounted over directories of `/work` (made when missing).
    pub volumes: &'a [crate::sandbox::VolumeMount],
    /// The user namespace the volumes are mounted through ([`super::idmap`]), as root.
    pub volume_userns: Option<std::os::fd::BorrowedFd<'a>>,
}

/// Builds the root under `plan.root`, brings up `lo`, sets the hostname and pivots into the root.
/// Must run in PID 1 of fresh mount, PID, network and UTS namespaces.
pub fn build(plan: &Plan) -> Result<(), InitError> {
    // Nothing we mount may propagate back to the host.
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .ctx("make the mount namespace private")?;
    let root = plan.root;
    mount_tmpfs(root, ROOT_TMPFS, MsFlags::MS_NOSUID | MsFlags::MS_NODEV)?;

    for name in SYSTEM_DIRS {
        mirror(Path::new("/").join(name), root.join(name))?;
    }
    populate_etc(root, plan.hostname, plan.uid)?;
    if let Some(bundle) = plan.ca_bundle {
        let target = root.join(CA_BUNDLE.trim_start_matches('/'));
        if !target.exists() {
            let parent = target.parent().expect("the bundle path has a parent");
            fs::create_dir_all(parent).ctx(format!("create {}", parent.display()))?;
            fs::write(&target, b"").ctx(format!("create {}", target.display()))?;
        }
        bind(bundle, &target, true)?;
    }

    let work = root.join("work");
    mkdir(&work)?;
    if !plan.user_namespace {
        chown(plan.work, Some(Uid::from_raw(plan.uid)), Some(Gid::from_raw(plan.uid))).ctx("chown the work dir")?;
    }
    bind(plan.work, &work, false)?;
    let home = plan.work.join("home");
    if !home.exists() {
        mkdir(&home)?;
        if !plan.user_namespace {
            chown(&home, Some(Uid::from_raw(plan.uid)), Some(Gid::from_raw(plan.uid))).ctx("chown the home dir")?;
        }
    }

    for volume in plan.volumes {
        let target = mount_point(&work, &volume.path, plan)?;
        mount_volume(&volume.host, &target, plan)?;
    }

    let tmp = root.join("tmp");
    mkdir(&tmp)?;
    mount_tmpfs(&tmp, TMP_TMPFS, MsFlags::MS_NOSUID | MsFlags::MS_NODEV)?;

    populate_dev(&root.join("dev"), plan.user_namespace)?;

    let proc = root.join("proc");
    mkdir(&proc)?;
    mount(
        Some("proc"),
        &proc,
        Some("proc"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        None::<&str>,
    )
    .ctx("mount /proc")?;

    let run = root.join("run/lap");
    fs::create_dir_all(&run).ctx("create /run/lap")?;
    bind(plan.run, &run, false)?;

    sethostname(plan.hostname).ctx("set the hostname")?;
    loopback_up()?;
    enter(root)
}

/// Pivots into `root` and detaches the host's root, then makes the root tmpfs read-only.
fn enter(root: &Path) -> Result<(), InitError> {
    nix::unistd::chdir(root).ctx("chdir to the new root")?;
    // `pivot_root(".", ".")` stacks the old root on top of the new one; detaching "." then drops it.
    pivot_root(".", ".").ctx("pivot_root")?;
    umount2(".", MntFlags::MNT_DETACH).ctx("detach the host root")?;
    nix::unistd::chdir("/").ctx("chdir to /")?;
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        None::<&str>,
    )
    .ctx("make / read-only")
}

fn populate_etc(root: &Path, hostname: &str, uid: u32) -> Result<(), InitError> {
    let etc = root.join("etc");
    mkdir(&etc)?;
    for name in ETC_BINDS {
        mirror(Path::new("/etc").join(name), etc.join(name))?;
    }
    let files: [(&str, String); 5] = [
        (
            "passwd",
            format!(
                "root:x:0:0:root:/root:/usr/sbin/nologin\n{USER}:x:{uid}:{uid}:lap sandbox user:{HOME}:/bin/bash\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"
            ),
        ),
        (
            "group",
            format!("root:x:0:\ntty:x:5:\n{USER}:x:{uid}:\nnogroup:x:65534:\n"),
        ),
        (
            "hosts",
            format!("127.0.0.1\tlocalhost {hostname}\n::1\tlocalhost ip6-localhost ip6-loopback {hostname}\n"),
        ),
        ("hostname", format!("{hostname}\n")),
        (
            "nsswitch.conf",
            "passwd: files\ngroup: files\nshadow: files\nhosts: files\n".to_owned(),
        ),
    ];
    for (name, text) in files {
        let path = etc.join(name);
        fs::write(&path, text).ctx(format!("write /etc/{name}"))?;
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).ctx(format!("chmod /etc/{name}"))?;
    }
    Ok(())
}

fn populate_dev(dev: &Path, user_namespace: bool) -> Result<(), InitError> {
    mkdir(dev)?;
    mount_tmpfs(dev, DEV_TMPFS, MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC)?;
    for name in DEVICES {
        let host = Path::new("/dev").join(name);
        if !host.exists() {
            continue;
        }
        let target = dev.join(name);
        fs::write(&target, b"").ctx(format!("create /dev/{name}"))?;
        bind_device(&host, &target)?;
    }
    let pts = dev.join("pts");
    mkdir(&pts)?;
    // The tty group (5) exists only without a user namespace; inside one it is unmapped.
    let options = if user_namespace {
        "newinstance,ptmxmode=0666,mode=0620"
    } else {
        "newinstance,ptmxmode=0666,mode=0620,gid=5"
    };
    mount(
        Some("devpts"),
        &pts,
        Some("devpts"),
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        Some(options),
    )
    .ctx("mount /dev/pts")?;
    let shm = dev.join("shm");
    mkdir(&shm)?;
    mount_tmpfs(&shm, SHM_TMPFS, MsFlags::MS_NOSUID | MsFlags::MS_NODEV)?;
    for (link, target) in [
        ("ptmx", "pts/ptmx"),
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ] {
        symlink(target, dev.join(link)).ctx(format!("link /dev/{link}"))?;
    }
    mount(
        None::<&str>,
        dev,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        None::<&str>,
    )
    .ctx("make /dev read-only")
}

/// Recreates a host path in the new root: a symlink as the same symlink, a directory or file as a
/// read-only bind mount; a missing one is skipped.
fn mirror(host: PathBuf, target: PathBuf) -> Result<(), InitError> {
    let Ok(meta) = fs::symlink_metadata(&host) else {
        return Ok(());
    };
    if let Some(parent) = target.parent() {
        fs::create_dir_all(parent).ctx(format!("create {}", parent.display()))?;
    }
    if meta.file_type().is_symlink() {
        let to = fs::read_link(&host).ctx(format!("read the link {}", host.display()))?;
        symlink(&to, &target).ctx(format!("link {}", target.display()))
    } else {
        if meta.is_dir() {
            mkdir(&target)?;
        } else {
            fs::write(&target, b"").ctx(format!("create {}", target.display()))?;
        }
        bind(&host, &target, true)
    }
}

/// Bind-mounts `source` on `target` (recursively), then remounts it nosuid and nodev — and read-only
/// when asked — keeping the flags the kernel locks in a user namespace (noexec, atime).
fn bind(source: &Path, target: &Path, read_only: bool) -> Result<(), InitError> {
    bind_with(source, target, read_only, MsFlags::MS_NOSUID | MsFlags::MS_NODEV)
}

/// Bind-mounts a device node: nosuid and noexec, but of course not nodev.
fn bind_device(source: &Path, target: &Path) -> Result<(), InitError> {
    bind_with(source, target, false, MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC)
}

fn bind_with(source: &Path, target: &Path, read_only: bool, restrict: MsFlags) -> Result<(), InitError> {
    mount(
        Some(source),
        target,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .ctx(format!("bind {} on {}", source.display(), target.display()))?;
    let current = statvfs(target).ctx(format!("statvfs {}", target.display()))?.flags();
    let mut flags = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | restrict;
    for (have, keep) in [
        (FsFlags::ST_NOEXEC, MsFlags::MS_NOEXEC),
        (FsFlags::ST_NOATIME, MsFlags::MS_NOATIME),
        (FsFlags::ST_NODIRATIME, MsFlags::MS_NODIRATIME),
        (FsFlags::ST_RELATIME, MsFlags::MS_RELATIME),
        (FsFlags::ST_RDONLY, MsFlags::MS_RDONLY),
    ] {
        if current.contains(have) {
            flags |= keep;
        }
    }
    if read_only {
        flags |= MsFlags::MS_RDONLY;
    }
    mount(None::<&str>, target, None::<&str>, flags, None::<&str>)
        .ctx(format!("remount {} with restricted flags", target.display()))
}

fn mount_tmpfs(target: &Path, options: &str, flags: MsFlags) -> Result<(), InitError> {
    mount(Some("tmpfs"), target, Some("tmpfs"), flags, Some(options))
        .ctx(format!("mount a tmpfs on {}", target.display()))
}

/// Mounts a volume on `target`: through the idmapping when there is one, so the sandbox shares the
/// volume with the agent's other sessions; else, where the filesystem has no idmapped mounts, by
/// handing the tree to this sandbox (the sessions still running keep reading it).
fn mount_volume(host: &Path, target: &Path, plan: &Plan) -> Result<(), InitError> {
    if let Some(userns) = plan.volume_userns {
        match super::idmap::bind(host, target, userns) {
            Ok(()) => return Ok(()),
            Err(err) => eprintln!("lap harness: {err}; the volume is handed to this sandbox instead of shared"),
        }
        super::layout::chown_tree(host, plan.uid).ctx(format!("hand over {}", host.display()))?;
    }
    bind(host, target, false)
}

/// The directory under `work` (the sandbox's `/work`, mounted) that a volume at `path` (`/work/…`,
/// checked by the control plane) is mounted on, made as the sandbox user where missing. The
/// workspace is the agent's to write, so a component that is a symlink (or not a directory) is
/// refused, never followed: a volume lands only inside `/work`.
fn mount_point(work: &Path, path: &str, plan: &Plan) -> Result<PathBuf, InitError> {
    let rest = path.strip_prefix("/work/").unwrap_or(path);
    let mut dir = work.to_owned();
    let mut inside = String::from("/work");
    for part in rest.split('/') {
        if part.is_empty() || part == "." || part == ".." {
            return Err(InitError::Setup(format!(
                "the volume path `{path}` is not a plain path under /work"
            )));
        }
        dir.push(part);
        inside.push('/');
        inside.push_str(part);
        match fs::symlink_metadata(&dir) {
            Ok(meta) if meta.is_dir() => {}
            Ok(_) => {
                return Err(InitError::Setup(format!(
                    "cannot mount a volume at `{path}`: `{inside}` is not a directory (a symlink or a file); \
                     hint: remove it in the session's workspace, or mount the volume elsewhere"
                )));
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                mkdir(&dir)?;
                if !plan.user_namespace {
                    chown(&dir, Some(Uid::from_raw(plan.uid)), Some(Gid::from_raw(plan.uid)))
                        .ctx(format!("chown {}", dir.display()))?;
                }
            }
            Err(e) => return Err(e).ctx(format!("inspect {}", dir.display())),
        }
    }
    Ok(dir)
}

fn mkdir(path: &Path) -> Result<(), InitError> {
    match fs::create_dir(path) {
        Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => Err(e).ctx(format!("create {}", path.display())),
        _ => Ok(()),
    }
}

/// Brings up `lo`, the only interface of a fresh network namespace.
fn loopback_up() -> Result<(), InitError> {
    use nix::sys::socket::{AddressFamily, SockFlag, SockType, socket};
    let sock = socket(AddressFamily::Inet, SockType::Datagram, SockFlag::SOCK_CLOEXEC, None).ctx("open a socket")?;
    let name = CString::new("lo").ctx("name lo")?;
    // SAFETY: `ifreq` is plain old data; all-zero is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(name.as_bytes_with_nul()) {
        *dst = *src as libc::c_char;
    }
    let fd = std::os::fd::AsRawFd::as_raw_fd(&sock);
    // SAFETY: `fd` is an open socket and `req` a valid, NUL-terminated `ifreq` that outlives the call.
    if unsafe { libc::ioctl(fd, libc::SIOCGIFFLAGS, &mut req) } < 0 {
        return Err(std::io::Error::last_os_error()).ctx("read the flags of lo");
    }
    // SAFETY: SIOCGIFFLAGS filled the `ifru_flags` member of the union.
    unsafe { req.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short };
    // SAFETY: as above; the kernel only reads `req`.
    if unsafe { libc::ioctl(fd, libc::SIOCSIFFLAGS, &req) } < 0 {
        return Err(std::io::Error::last_os_error()).ctx("bring lo up");
    }
    Ok(())
}
