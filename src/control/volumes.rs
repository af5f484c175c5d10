//! Agent volumes: named directories of an agent that every sandbox of its sessions mounts, so what
//! one session writes there (a package cache, `~/.npm`, `~/.cache`) the next one finds.
//!
//! A volume is a name and a path inside the sandbox; its data is the directory
//! `<data-dir>/volumes/<agent id>/<name>`, made on first use, measured for `GET /agents/{id}`, and
//! deleted with the agent (or when an edit drops the volume). The local backend bind-mounts it at the
//! path ([`crate::sandbox::SandboxSpec::volumes`]); a backend that keeps no workspaces (Kubernetes)
//! refuses a session of an agent with volumes rather than silently not mounting them.
//!
//! Invariants: a volume is mounted only inside the sandbox's writable `/work` — never over `/work`,
//! `/work/home` or the cloned repo, never through a `.` or `..` — so it can hide nothing the sandbox
//! relies on; a volume belongs to one agent, and no other agent's sandbox ever mounts it. Sessions
//! of one agent running at once share the directory, as two shells share a `~/.cache`: the last
//! writer wins.

use std::path::PathBuf;

use uuid::Uuid;

use super::workspace::{Refusal, tree_size};
use super::{Control, ControlError};
use crate::sandbox::VolumeMount;
use crate::wire::api::{Agent, AgentVolume};

/// Directory under the data dir that holds one directory per agent with volumes.
pub const VOLUMES_DIR: &str = "volumes";
/// Most volumes one agent may have.
pub const MAX_VOLUMES: usize = 8;
/// Longest volume name.
pub const MAX_NAME: usize = 32;
/// Longest mount path.
pub const MAX_PATH: usize = 256;
/// The sandbox's writable tree, under which every volume is mounted.
pub const ROOT: &str = "/work";
/// Paths a volume may not be mounted at (or, for the repo, under).
const NOT_AT: [&str; 2] = ["/work", "/work/home"];
const NOT_UNDER: &str = "/work/repo";

/// Why a set of volumes is refused: what is wrong, and what to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    pub message: String,
    pub hint: String,
}

fn invalid(message: String, hint: &str) -> Invalid {
    Invalid {
        message,
        hint: hint.to_owned(),
    }
}

/// Checks an agent's volumes and returns them as stored (no sizes).
pub fn validate(volumes: Vec<AgentVolume>) -> Result<Vec<AgentVolume>, Invalid> {
    if volumes.len() > MAX_VOLUMES {
        return Err(invalid(
            format!(
                "{} volumes given; an agent may have at most {MAX_VOLUMES}",
                volumes.len()
            ),
            "share one volume between tools, e.g. one at `/work/home/.cache`",
        ));
    }
    let mut out: Vec<AgentVolume> = Vec::with_capacity(volumes.len());
    for volume in volumes {
        let name = volume.name;
        if !valid_name(&name) {
            return Err(invalid(
                format!("invalid volume name `{name}`"),
                "use 1-32 characters of a-z, 0-9, `-` and `_`, starting with a letter or digit",
            ));
        }
        let path = volume.path.strip_suffix('/').unwrap_or(&volume.path).to_owned();
        check_path(&name, &path)?;
        if out.iter().any(|v| v.name == name) {
            return Err(invalid(
                format!("volume `{name}` is given twice"),
                "give each volume a name of its own",
            ));
        }
        if let Some(other) = out.iter().find(|v| nested(&v.path, &path) || nested(&path, &v.path)) {
            return Err(invalid(
                format!(
                    "volume `{name}` at `{path}` overlaps volume `{}` at `{}`",
                    other.name, other.path
                ),
                "mount volumes at paths apart from each other",
            ));
        }
        out.push(AgentVolume {
            name,
            path,
            size_bytes: None,
        });
    }
    Ok(out)
}

fn valid_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= MAX_NAME
        && (bytes[0].is_ascii_lowercase() || bytes[0].is_ascii_digit())
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'_'))
}

/// Whether `inner` is `outer` or lies under it.
fn nested(outer: &str, inner: &str) -> bool {
    inner == outer || inner.strip_prefix(outer).is_some_and(|rest| rest.starts_with('/'))
}

fn check_path(name: &str, path: &str) -> Result<(), Invalid> {
    const HINT: &str = "mount a volume under `/work`, e.g. `/work/home/.cache` or `/work/home/.npm` (not `/work`, \
                        `/work/home` or `/work/repo` themselves; no `.` or `..`)";
    let bad = |why: &str| invalid(format!("volume `{name}` cannot be mounted at `{path}`: {why}"), HINT);
    if path.len() > MAX_PATH {
        return Err(bad(&format!("the path is longer than {MAX_PATH} bytes")));
    }
    if !path.starts_with('/') {
        return Err(bad("the path is not absolute"));
    }
    for part in path[1..].split('/') {
        if part.is_empty() || part == "." || part == ".." {
            return Err(bad("the path has an empty, `.` or `..` component"));
        }
        if !part
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'+' | b'@'))
        {
            return Err(bad(
                "a component has a character other than a-z, A-Z, 0-9, `.`, `_`, `-`, `+`, `@`",
            ));
        }
    }
    if !nested(ROOT, path) {
        return Err(bad("only the sandbox's `/work` is writable and kept"));
    }
    if NOT_AT.contains(&path) {
        return Err(bad("it would hide the whole workspace or home"));
    }
    if nested(NOT_UNDER, path) {
        return Err(bad("the repository is cloned there"));
    }
    Ok(())
}

impl Control {
    /// What a new sandbox of `agent` mounts: each volume's host directory and path. `Ok(empty)` for
    /// an agent without volumes; a 409 when this backend keeps no volumes.
    pub(super) fn volume_mounts(&self, agent: &Agent) -> Result<Vec<VolumeMount>, ControlError> {
        if agent.volumes.is_empty() {
            return Ok(Vec::new());
        }
        let Some(dir) = self.lifecycle.workspaces.as_ref().and_then(|w| w.volumes_of(agent.id)) else {
            return Err(ControlError::Refused {
                kind: Refusal::Conflict,
                message: format!(
                    "agent `{}` has volumes, which the `{}` backend cannot mount",
                    agent.name,
                    self.sandbox.name()
                ),
                hint: format!(
                    "remove them (`lap agents edit {} --volume ''`) or run `lap serve --backend local`",
                    agent.name
                ),
            });
        };
        Ok(agent
            .volumes
            .iter()
            .map(|v| VolumeMount {
                host: dir.join(&v.name),
                path: v.path.clone(),
            })
            .collect())
    }

    /// `agent` with the size of each volume filled in (0 for one no session has used yet).
    pub async fn with_volume_sizes(&self, mut agent: Agent) -> Agent {
        let Some(dir) = self.lifecycle.workspaces.as_ref().and_then(|w| w.volumes_of(agent.id)) else {
            return agent;
        };
        for volume in &mut agent.volumes {
            let path = dir.join(&volume.name);
            let size = tokio::task::spawn_blocking(move || tree_size(&path)).await;
            volume.size_bytes = match size {
                Ok(Ok(bytes)) => Some(bytes),
                Ok(Err(err)) => {
                    tracing::warn!(agent = %agent.id, volume = %volume.name, error = %err, "cannot measure a volume");
                    None
                }
                Err(_) => None,
            };
        }
        agent
    }

    /// Deletes the data of agent `agent`'s volumes not named in `keep` (all of them for an empty
    /// `keep`: the agent was deleted).
    pub async fn prune_volumes(&self, agent: Uuid, keep: &[AgentVolume]) -> Result<(), ControlError> {
        let Some(dir) = self.lifecycle.workspaces.as_ref().and_then(|w| w.volumes_of(agent)) else {
            return Ok(());
        };
        let keep: Vec<String> = keep.iter().map(|v| v.name.clone()).collect();
        let pruned = tokio::task::spawn_blocking(move || prune(&dir, &keep))
            .await
            .unwrap_or_else(|e| Err(std::io::Error::other(e)));
        pruned.map_err(|err| ControlError::Conflict(format!("cannot delete the volumes of agent `{agent}`: {err}")))
    }
}

/// Removes the entries of `dir` not named in `keep`, and `dir` itself once empty.
fn prune(dir: &std::path::Path, keep: &[String]) -> std::io::Result<()> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(err) => return Err(err),
    };
    for entry in entries {
        let entry = entry?;
        if keep.iter().any(|k| entry.file_name() == k.as_str()) {
            continue;
        }
        let path: PathBuf = entry.path();
        if entry.file_type()?.is_dir() {
            std::fs::remove_dir_all(&path)?;
        } else {
            std::fs::remove_file(&path)?;
        }
    }
    if keep.is_empty() {
        match std::fs::remove_dir(dir) {
            Err(err) if err.kind() != std::io::ErrorKind::NotFound => return Err(err),
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn volume(name: &str, path: &str) -> AgentVolume {
        AgentVolume {
            name: name.to_owned(),
            path: path.to_owned(),
            size_bytes: Some(7),
        }
    }

    #[test]
    fn volumes_under_work_are_kept_without_sizes_or_a_trailing_slash() {
        let out = validate(vec![volume("cache", "/work/home/.cache/"), volume("npm", "/work/pkgs")]).unwrap();
        assert_eq!(
            out,
            vec![
                AgentVolume {
                    name: "cache".into(),
                    path: "/work/home/.cache".into(),
                    size_bytes: None
                },
                AgentVolume {
                    name: "npm".into(),
                    path: "/work/pkgs".into(),
                    size_bytes: None
                },
            ]
        );
    }

    #[test]
    fn paths_outside_work_over_it_or_through_dots_are_refused_with_a_hint() {
        for path in [
            "/usr/lib",
            "/work",
            "/work/",
            "/work/home",
            "/work/repo",
            "/work/repo/node_modules",
            "/work/home/../../etc",
            "/work/./x",
            "/work//x",
            "work/home/.cache",
            "/workx/a",
            "/work/a b",
            "/tmp/cache",
        ] {
            let err = validate(vec![volume("v", path)]).expect_err(path);
            assert!(err.message.contains("cannot be mounted"), "{path}: {}", err.message);
            assert!(err.hint.contains("/work/home/.cache"), "{path}: {}", err.hint);
        }
    }

    #[test]
    fn names_must_be_unique_valid_and_paths_apart() {
        let twice = validate(vec![volume("v", "/work/a"), volume("v", "/work/b")]).unwrap_err();
        assert_eq!(twice.message, "volume `v` is given twice");
        let nested = validate(vec![volume("a", "/work/a"), volume("b", "/work/a/b")]).unwrap_err();
        assert!(nested.message.contains("overlaps"), "{}", nested.message);
        assert!(validate(vec![volume("a", "/work/a"), volume("b", "/work/ab")]).is_ok());
        for name in ["", "Cache", "-x", "a/b", ".", &"x".repeat(33)] {
            assert!(validate(vec![volume(name, "/work/a")]).is_err(), "{name}");
        }
        let many: Vec<_> = (0..=MAX_VOLUMES)
            .map(|i| volume(&format!("v{i}"), &format!("/work/v{i}")))
            .collect();
        assert!(validate(many).unwrap_err().message.contains("at most"));
    }
}
