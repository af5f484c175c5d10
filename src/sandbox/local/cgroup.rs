//! Resource limits of a sandbox: memory, process count and CPU, through cgroup v1.
//!
//! Invariant: a runaway sandbox (a fork bomb, a memory hog, a busy loop) stays inside its limits and
//! cannot starve the host or `lap serve`. The launcher creates one cgroup per controller
//! (`memory`, `pids`, `cpu`), nested under its own cgroup as `/proc/self/cgroup` and
//! `/proc/self/mountinfo` give them, writes the limits, and moves itself in before it creates the
//! sandbox's namespaces, so every process of the sandbox is born inside (and the sandbox's cgroup
//! namespace is rooted there). `delete` removes the directories once the sandbox is dead.
//! Not here yet: the unified (v2) hierarchy and rlimit fallbacks; where no v1 controller is
//! writable, the sandbox runs without limits and the launcher says so in `harness.log`.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The controllers lap limits.
const CONTROLLERS: &[&str] = &["memory", "pids", "cpu"];
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

/// Creates the sandbox's cgroups with `limits` and moves this process into them. Returns the
/// directories made (to remove on delete); controllers that are absent or not writable are skipped,
/// with a line in `log`.
pub fn enter(name: &str, limits: &Limits, log: &mut impl io::Write) -> Vec<PathBuf> {
    let mounts = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let own = fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    let mut made = Vec::new();
    for controller in CONTROLLERS {
        let Some(parent) = controller_dir(&mounts, &own, controller) else {
            let _ = writeln!(
                log,
                "lap harness: no cgroup v1 `{controller}` hierarchy; no {controller} limit"
            );
            continue;
        };
        let dir = parent.join(name);
        match create(&dir, controller, limits) {
            Ok(()) => made.push(dir),
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
    made
}

fn create(dir: &Path, controller: &str, limits: &Limits) -> io::Result<()> {
    match fs::create_dir(dir) {
        Err(e) if e.kind() != io::ErrorKind::AlreadyExists => return Err(e),
        _ => {}
    }
    match controller {
        "memory" => fs::write(dir.join("memory.limit_in_bytes"), limits.memory_bytes.to_string())?,
        "pids" => fs::write(dir.join("pids.max"), limits.pids.to_string())?,
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
