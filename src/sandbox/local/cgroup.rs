//! Resource limits of a sandbox: memory, process count and CPU, through cgroup v1 or v2.
//!
//! Invariant: a runaway sandbox (a fork bomb, a memory hog, a busy loop) stays inside its limits and
//! cannot starve the host or `lap serve`. The launcher creates one cgroup per controller
//! (`memory`, `pids`, `cpu`), nested under its own cgroup as `/proc/self/cgroup` and
//! `/proc/self/mountinfo` give them, writes the limits, and moves itself in before it creates the
//! sandbox's namespaces, so every process of the sandbox is born inside (and the sandbox's cgroup
//! namespace is rooted there). `delete` removes the directories once the sandbox is dead.
//! Each controller is taken from its v1 hierarchy when one is mounted (this project's machines), else
//! from the unified v2 hierarchy (most laptops: `memory.max`, `pids.max`, `cpu.max`), enabling it in
//! the parent's `cgroup.subtree_control` when it must. Where neither is writable, the sandbox's agent gets
//! an rlimit instead ([`super::rlimit`]) and the launcher says so in `harness.log`.
//!
//! The sandbox is also put in a `freezer` cgroup (v1), or uses its v2 cgroup's `cgroup.freeze`, so
//! [`freeze`] can stop every process of it at once with its memory intact (a pause) and thaw it
//! later. The freezer limits nothing, so it never counts as a limit in [`Entered::limited`].

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The controllers lap limits, and the freezer (which limits nothing; it pauses).
const CONTROLLERS: &[&str] = &["memory", "pids", "cpu", FREEZER];
/// The v1 freezer controller.
const FREEZER: &str = "freezer";
/// How long [`freeze`] waits for the kernel to report the sandbox frozen or thawed.
pub const FREEZE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
/// Interval between reads of the freezer's state while waiting.
const FREEZE_POLL: std::time::Duration = std::time::Duration::from_millis(1);
/// The CFS period the CPU quota is a share of.
const CPU_PERIOD_US: u64 = 100_000;

/// A sandbox's limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// Memory (including its tmpfs pages), in bytes.
    pub memory_bytes: u64,
    /// Processes and threads.
    pub pids: u64,
    /// CPU time, in thousandths of one CPU.
    pub cpu_millis: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            memory_bytes: 4 * 1024 * 1024 * 1024,
            pids: 1024,
            cpu_millis: 2000,
        }
    }
}

/// What [`enter`] made: the directories (to remove on delete) and the controllers they limit.
#[derive(Debug, Clone, Default)]
pub struct Entered {
    pub dirs: Vec<PathBuf>,
    pub limited: Vec<&'static str>,
}

/// Creates the sandbox's cgroups with `limits` and moves this process into them. Controllers that
/// are absent or not writable are skipped, with a line in `log` (the caller falls back to rlimits,
/// [`super::rlimit`]).
pub fn enter(name: &str, limits: &Limits, log: &mut impl io::Write) -> Entered {
    let mounts = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let own = fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    let mut made = Entered::default();
    let unified = unified_dir(&mounts, &own);
    let mut v2_missing = Vec::new();
    for controller in CONTROLLERS {
        let Some(parent) = controller_dir(&mounts, &own, controller) else {
            v2_missing.push(*controller);
            continue;
        };
        let dir = parent.join(name);
        match create(&dir, controller, limits) {
            Ok(()) => {
                made.dirs.push(dir);
                if *controller != FREEZER {
                    made.limited.push(controller);
                }
            }
            Err(err) => {
                let _ = writeln!(
                    log,
                    "lap harness: cannot limit {controller} in `{}`: {err}",
                    dir.display()
                );
                let _ = fs::remove_dir(&dir);
            }
        }
    }
    // v2 has no freezer controller: every non-root v2 cgroup has `cgroup.freeze`.
    v2_missing.retain(|c| *c != FREEZER);
    if v2_missing.is_empty() {
        return made;
    }
    let Some(parent) = unified else {
        let _ = writeln!(
            log,
            "lap harness: no cgroup hierarchy has {}; no such limit",
            v2_missing.join(", ")
        );
        return made;
    };
    let dir = parent.join(name);
    match create_v2(&parent, &dir, &v2_missing, limits, log) {
        Ok(limited) => {
            made.dirs.push(dir);
            made.limited.extend(limited);
        }
        Err(err) => {
            let _ = writeln!(
                log,
                "lap harness: cannot use the cgroup v2 dir `{}`: {err}",
                dir.display()
            );
            let _ = fs::remove_dir(&dir);
        }
    }
    made
}

/// Creates a v2 cgroup limiting `controllers` and moves this process in. A controller the parent
/// does not delegate is enabled in its `cgroup.subtree_control` when possible, else left out (logged).
fn create_v2(
    parent: &Path,
    dir: &Path,
    controllers: &[&'static str],
    limits: &Limits,
    log: &mut impl io::Write,
) -> io::Result<Vec<&'static str>> {
    let delegated = fs::read_to_string(parent.join("cgroup.subtree_control")).unwrap_or_default();
    for controller in controllers {
        if !delegated.split_whitespace().any(|c| c == *controller) {
            let _ = fs::write(parent.join("cgroup.subtree_control"), format!("+{controller}"));
        }
    }
    match fs::create_dir(dir) {
        Err(e) if e.kind() != io::ErrorKind::AlreadyExists => return Err(e),
        _ => {}
    }
    let mut limited = Vec::new();
    for controller in controllers {
        let (file, value) = match *controller {
            "memory" => ("memory.max", limits.memory_bytes.to_string()),
            "pids" => ("pids.max", limits.pids.to_string()),
            "cpu" => (
                "cpu.max",
                format!(
                    "{} {CPU_PERIOD_US}",
                    (limits.cpu_millis * CPU_PERIOD_US / 1000).max(1000)
                ),
            ),
            _ => continue,
        };
        match fs::write(dir.join(file), value) {
            Ok(()) => limited.push(*controller),
            Err(err) => {
                let _ = writeln!(
                    log,
                    "lap harness: cgroup v2 does not delegate {controller} here ({err}); no {controller} cgroup limit; \
                     see docs/troubleshooting.md#cgroup-delegation"
                );
            }
        }
    }
    fs::write(dir.join("cgroup.procs"), std::process::id().to_string())?;
    Ok(limited)
}

/// The directory of this process's cgroup in the unified (v2) hierarchy, when one is mounted.
fn unified_dir(mountinfo: &str, own_cgroups: &str) -> Option<PathBuf> {
    let (mount_root, mount_point) = mountinfo.lines().find_map(|line| {
        let (left, right) = line.split_once(" - ")?;
        if right.split_whitespace().next()? != "cgroup2" {
            return None;
        }
        let mut left = left.split_whitespace();
        let root = left.nth(3)?;
        let point = left.next()?;
        Some((root.to_owned(), point.to_owned()))
    })?;
    let path = own_cgroups.lines().find_map(|line| line.strip_prefix("0::"))?;
    let relative = path.strip_prefix(mount_root.trim_end_matches('/')).unwrap_or(path);
    Some(Path::new(&mount_point).join(relative.trim_start_matches('/')))
}

fn create(dir: &Path, controller: &str, limits: &Limits) -> io::Result<()> {
    match fs::create_dir(dir) {
        Err(e) if e.kind() != io::ErrorKind::AlreadyExists => return Err(e),
        _ => {}
    }
    match controller {
        "memory" => fs::write(dir.join("memory.limit_in_bytes"), limits.memory_bytes.to_string())?,
        "pids" => fs::write(dir.join("pids.max"), limits.pids.to_string())?,
        "freezer" => {}
        "cpu" => {
            fs::write(dir.join("cpu.cfs_period_us"), CPU_PERIOD_US.to_string())?;
            let quota = (limits.cpu_millis * CPU_PERIOD_US / 1000).max(1000);
            fs::write(dir.join("cpu.cfs_quota_us"), quota.to_string())?;
        }
        _ => {}
    }
    fs::write(dir.join("cgroup.procs"), std::process::id().to_string())
}

/// The directory of this process's cgroup in the v1 hierarchy that has `controller`.
fn controller_dir(mountinfo: &str, own_cgroups: &str, controller: &str) -> Option<PathBuf> {
    let (mount_root, mount_point) = mountinfo.lines().find_map(|line| {
        let (left, right) = line.split_once(" - ")?;
        let mut right = right.split_whitespace();
        if right.next()? != "cgroup" {
            return None;
        }
        let options = right.nth(1)?;
        if !options.split(',').any(|o| o == controller) {
            return None;
        }
        let mut left = left.split_whitespace();
        let root = left.nth(3)?;
        let point = left.next()?;
        Some((root.to_owned(), point.to_owned()))
    })?;
    let path = own_cgroups.lines().find_map(|line| {
        let mut fields = line.splitn(3, ':');
        let _id = fields.next()?;
        let controllers = fields.next()?;
        let path = fields.next()?;
        controllers.split(',').any(|c| c == controller).then(|| path.to_owned())
    })?;
    let relative = path.strip_prefix(mount_root.trim_end_matches('/')).unwrap_or(&path);
    Some(Path::new(&mount_point).join(relative.trim_start_matches('/')))
}

/// Moves this process back to the parents of `dirs` (so they can be removed).
pub fn leave(dirs: &[PathBuf]) {
    for dir in dirs {
        if let Some(parent) = dir.parent() {
            let _ = fs::write(parent.join("cgroup.procs"), std::process::id().to_string());
        }
    }
}

/// Errors of [`freeze`].
#[derive(Debug, thiserror::Error)]
pub enum FreezeError {
    #[error("the sandbox has no freezer cgroup (it runs without cgroups, or was made before lap could pause)")]
    NoFreezer,
    #[error("cannot write `{}`: {err}", path.display())]
    Write { path: PathBuf, err: io::Error },
    #[error("the kernel did not report the sandbox {want} within {FREEZE_TIMEOUT:?}")]
    Timeout { want: &'static str },
}

/// How a sandbox's cgroups freeze.
enum Freezer {
    /// v1: `freezer.state` takes `FROZEN` / `THAWED` and reads `FREEZING` until done.
    V1(PathBuf),
    /// v2: `cgroup.freeze` takes 1 / 0; `cgroup.events` says `frozen 1` once done.
    V2(PathBuf),
}

fn freezer(dirs: &[PathBuf]) -> Option<Freezer> {
    dirs.iter().find_map(|dir| {
        if dir.join("freezer.state").exists() {
            Some(Freezer::V1(dir.clone()))
        } else if dir.join("cgroup.freeze").exists() {
            Some(Freezer::V2(dir.clone()))
        } else {
            None
        }
    })
}

/// Whether a sandbox with cgroups `dirs` is frozen now.
pub fn is_frozen(dirs: &[PathBuf]) -> bool {
    match freezer(dirs) {
        Some(Freezer::V1(dir)) => fs::read_to_string(dir.join("freezer.state")).is_ok_and(|s| s.trim() == "FROZEN"),
        Some(Freezer::V2(dir)) => v2_frozen(&dir) == Some(true),
        None => false,
    }
}

fn v2_frozen(dir: &Path) -> Option<bool> {
    let events = fs::read_to_string(dir.join("cgroup.events")).ok()?;
    events
        .lines()
        .find_map(|line| line.strip_prefix("frozen "))
        .map(|v| v.trim() == "1")
}

/// Freezes (`frozen`) or thaws every process of the sandbox whose cgroups are `dirs`, and waits
/// until the kernel says it is done. Blocking (short polls); call it off the async runtime.
pub fn freeze(dirs: &[PathBuf], frozen: bool) -> Result<(), FreezeError> {
    let freezer = freezer(dirs).ok_or(FreezeError::NoFreezer)?;
    let want = if frozen { "frozen" } else { "thawed" };
    let (path, value) = match &freezer {
        Freezer::V1(dir) => (dir.join("freezer.state"), if frozen { "FROZEN" } else { "THAWED" }),
        Freezer::V2(dir) => (dir.join("cgroup.freeze"), if frozen { "1" } else { "0" }),
    };
    fs::write(&path, value).map_err(|err| FreezeError::Write { path, err })?;
    let deadline = std::time::Instant::now() + FREEZE_TIMEOUT;
    loop {
        let done = match &freezer {
            Freezer::V1(dir) => fs::read_to_string(dir.join("freezer.state"))
                .is_ok_and(|s| s.trim() == if frozen { "FROZEN" } else { "THAWED" }),
            Freezer::V2(dir) => v2_frozen(dir) == Some(frozen),
        };
        if done {
            return Ok(());
        }
        if std::time::Instant::now() >= deadline {
            return Err(FreezeError::Timeout { want });
        }
        std::thread::sleep(FREEZE_POLL);
    }
}

/// Removes a dead sandbox's cgroups (they must be empty).
pub fn remove(dirs: &[PathBuf]) -> io::Result<()> {
    for dir in dirs {
        match fs::remove_dir(dir) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const MOUNTINFO: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";
    const OWN: &str = "8:pids:/\n4:memory:/process_api/abc\n1:cpu,cpuacct:/user.slice\n0::/\n";

    #[test]
    fn the_unified_dir_is_found_from_mountinfo_and_the_0_line() {
        const V2: &str = "30 23 0:27 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n";
        let own = "0::/user.slice/user-1000.slice/session-2.scope\n";
        assert_eq!(
            unified_dir(V2, own),
            Some(PathBuf::from(
                "/sys/fs/cgroup/user.slice/user-1000.slice/session-2.scope"
            ))
        );
        assert_eq!(
            unified_dir(MOUNTINFO, OWN),
            Some(PathBuf::from("/sys/fs/cgroup/unified"))
        );
        assert_eq!(
            unified_dir("31 23 0:28 / /sys/fs/cgroup rw - tmpfs tmpfs rw\n", OWN),
            None
        );
    }

    #[test]
    fn v2_limits_are_written_in_the_unified_format_and_delegation_is_requested() {
        // A stand-in cgroupfs: the kernel would make the files; here the writes create them.
        let root = tempfile::tempdir().unwrap();
        fs::write(root.path().join("cgroup.subtree_control"), "cpu\n").unwrap();
        let dir = root.path().join("lap-x");
        let limits = Limits {
            memory_bytes: 64 << 20,
            pids: 50,
            cpu_millis: 500,
        };
        let mut log = Vec::new();
        let limited = create_v2(root.path(), &dir, &["memory", "pids", "cpu"], &limits, &mut log).unwrap();
        assert_eq!(limited, ["memory", "pids", "cpu"]);
        let read = |f: &str| fs::read_to_string(dir.join(f)).unwrap();
        assert_eq!(read("memory.max"), (64u64 << 20).to_string());
        assert_eq!(read("pids.max"), "50");
        assert_eq!(read("cpu.max"), "50000 100000");
        assert_eq!(read("cgroup.procs"), std::process::id().to_string());
        // On a plain directory the last `+controller` write is what is left to see.
        assert_eq!(
            fs::read_to_string(root.path().join("cgroup.subtree_control")).unwrap(),
            "+pids"
        );
    }

    #[test]
    fn the_cgroup_dir_nests_under_this_process_cgroup_in_the_hierarchy_of_the_controller() {
        assert_eq!(
            controller_dir(MOUNTINFO, OWN, "memory"),
            Some(PathBuf::from("/sys/fs/cgroup/memory/process_api/abc"))
        );
        assert_eq!(
            controller_dir(MOUNTINFO, OWN, "cpu"),
            Some(PathBuf::from("/sys/fs/cgroup/cpu,cpuacct/user.slice"))
        );
        // No v1 hierarchy has `pids` mounted.
        assert_eq!(controller_dir(MOUNTINFO, OWN, "pids"), None);
    }
}
