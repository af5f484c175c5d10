//! The on-disk layout of one local sandbox, and the two small files that describe it.
//!
//! Everything a sandbox owns on the host lives under `<data-dir>/sandboxes/<id>/`, so deleting that
//! directory (after the process tree is gone) deletes the sandbox. `config.json` is written by
//! `lap serve` before the harness starts; `state.json` is written by the harness's launcher once PID 1
//! is up, atomically, so a `lap serve` that restarts (or was killed mid-create) can find every
//! sandbox that is running and nothing that is not. Neither file is visible inside the sandbox: the
//! sandbox sees only `work/` (as `/work`) and `run/` (as `/run/lap`).
//!
//! `work/` is either the sandbox's own directory (deleted with it) or a symlink to its session's
//! workspace (`<data-dir>/workspaces/<session>`, owned by `control/workspace.rs`), which outlives
//! it: deleting the sandbox directory removes the link, never what it points to.

use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::cgroup::Limits;

/// Directory under the data dir that holds one directory per sandbox.
pub const SANDBOXES_DIR: &str = "sandboxes";
/// The harness socket's name, inside `run/` on the host and `/run/lap` in the sandbox.
pub const HARNESS_SOCKET: &str = "harness.sock";

/// Paths of one sandbox on the host.
#[derive(Debug, Clone)]
pub struct Layout {
    dir: PathBuf,
}

impl Layout {
    pub fn new(data_dir: &Path, id: &str) -> Self {
        Self {
            dir: data_dir.join(SANDBOXES_DIR).join(id),
        }
    }

    pub fn from_dir(dir: PathBuf) -> Self {
        Self { dir }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// What `lap serve` asks the harness to build.
    pub fn config(&self) -> PathBuf {
        self.dir.join("config.json")
    }

    /// Where the launcher records PID 1 once the sandbox is up.
    pub fn state(&self) -> PathBuf {
        self.dir.join("state.json")
    }

    /// stdout and stderr of the harness (the agent's too, until the terminal issue gives it a PTY).
    pub fn log(&self) -> PathBuf {
        self.dir.join("harness.log")
    }

    /// The empty mount point of the sandbox's root tmpfs (mounted only in the sandbox's namespace).
    pub fn root(&self) -> PathBuf {
        self.dir.join("root")
    }

    /// The sandbox's `/work`.
    pub fn work(&self) -> PathBuf {
        self.dir.join("work")
    }

    /// The sandbox's `/run/lap`.
    pub fn run(&self) -> PathBuf {
        self.dir.join("run")
    }

    /// The CA bundle (system roots plus the vault CA) mounted over the sandbox's system bundle.
    pub fn ca_bundle(&self) -> PathBuf {
        self.dir.join("ca-bundle.pem")
    }
}

/// What the harness builds, written by `lap serve` into `config.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Config {
    pub id: String,
    pub hostname: String,
    pub harness_id: String,
    pub session_id: Option<String>,
    #[serde(default)]
    pub limits: Limits,
    /// The session's environment (stubs, never real values), over the harness's fixed base.
    #[serde(default)]
    pub env: Vec<(String, String)>,
    /// Whether `ca-bundle.pem` in the sandbox dir replaces the system CA bundle inside.
    #[serde(default)]
    pub ca_bundle: bool,
    /// The agent's command line, run under the harness's PTY (`None`: no agent).
    #[serde(default)]
    pub command: Option<String>,
    /// The host uid leased to this sandbox's agent ([`super::uids`]; `None` in a user namespace).
    #[serde(default)]
    pub uid: Option<u32>,
    /// Limits by rlimits only, no cgroups (`lap serve --sandbox-cgroups off`).
    #[serde(default)]
    pub no_cgroups: bool,
    /// The agent's volumes, bind-mounted under `/work` (host paths absolute).
    #[serde(default)]
    pub volumes: Vec<crate::sandbox::VolumeMount>,
}

/// A running sandbox, written by the launcher into `state.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    pub id: String,
    pub harness_id: String,
    pub session_id: Option<String>,
    /// Host PID of the sandbox's PID 1.
    pub pid: i32,
    /// Its start time (clock ticks after boot, `/proc/PID/stat` field 22), so a reused PID is not
    /// mistaken for the sandbox.
    pub start_time: u64,
    /// The sandbox's cgroup directories, removed with it.
    #[serde(default)]
    pub cgroups: Vec<PathBuf>,
}

/// Gives every file of the tree at `root` to `uid` (and gid `uid`), without following symlinks (a
/// link is re-owned itself, never its target): a workspace that another sandbox's agent wrote is
/// handed to the agent of the next one. Entries already owned by `uid` are left alone.
pub fn chown_tree(root: &Path, uid: u32) -> io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let mut stack = vec![root.to_owned()];
    while let Some(path) = stack.pop() {
        let meta = std::fs::symlink_metadata(&path)?;
        if meta.uid() != uid || meta.gid() != uid {
            std::os::unix::fs::lchown(&path, Some(uid), Some(uid))?;
        }
        if meta.is_dir() {
            for entry in std::fs::read_dir(&path)? {
                stack.push(entry?.path());
            }
        }
    }
    Ok(())
}

/// Reads and parses a JSON file.
pub fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> io::Result<T> {
    let bytes = std::fs::read(path)?;
    serde_json::from_slice(&bytes).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

/// Writes a JSON file atomically: a temporary sibling, then a rename.
pub fn write_json<T: Serialize>(path: &Path, value: &T) -> io::Result<()> {
    let bytes = serde_json::to_vec_pretty(value).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}

/// What `/proc/PID/stat` says about a process: its state letter and start time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcStat {
    pub state: char,
    pub start_time: u64,
}

impl ProcStat {
    /// `None` when there is no such process.
    pub fn read(pid: i32) -> Option<Self> {
        let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        Self::parse(&text)
    }

    /// Parses `/proc/PID/stat`. The command name (field 2) may hold spaces and parentheses, so
    /// fields are counted from the last `)`.
    pub fn parse(text: &str) -> Option<Self> {
        let rest = &text[text.rfind(')')? + 1..];
        let mut fields = rest.split_whitespace();
        let state = fields.next()?.chars().next()?;
        // Field 3 was the state; the start time is field 22, 19 further on.
        let start_time = fields.nth(18)?.parse().ok()?;
        Some(Self { state, start_time })
    }
}

impl State {
    /// Whether the sandbox's PID 1 still runs: the PID exists, is the same process (start time), and
    /// is not a zombie waiting for the host's init to reap it.
    pub fn is_alive(&self) -> bool {
        ProcStat::read(self.pid).is_some_and(|stat| stat.start_time == self.start_time && stat.state != 'Z')
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_stat_is_parsed_past_a_command_name_with_spaces_and_parens() {
        let line = "4242 (a (b) c) S 1 4242 4242 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 200";
        assert_eq!(
            ProcStat::parse(line),
            Some(ProcStat {
                state: 'S',
                start_time: 987654
            })
        );
        assert_eq!(ProcStat::parse("garbage"), None);
    }

    #[test]
    fn this_process_is_alive_and_a_wrong_start_time_is_not() {
        let pid = std::process::id() as i32;
        let stat = ProcStat::read(pid).unwrap();
        let mut state = State {
            id: "x".into(),
            harness_id: "shell".into(),
            session_id: None,
            pid,
            start_time: stat.start_time,
            cgroups: Vec::new(),
        };
        assert!(state.is_alive());
        state.start_time += 1;
        assert!(!state.is_alive());
    }
}
