//! Whether a harness's tool is installed where the local backend's sandboxes see it.
//!
//! Local sandboxes run the host's programs: `/usr`, `/bin`, `/sbin` and the `lib` dirs are
//! bind-mounted read-only, and commands get a fixed `PATH` ([`SANDBOX_PATH`]). So a tool is present
//! for a sandbox exactly when it is an executable file in one of those directories on the host
//! (npm's global prefix is `/usr` or `/usr/local`, both inside). `lap doctor` lists them; creating a
//! session of a harness whose tool is missing fails with its install hint.
//!
//! Version drift: `scripts/tool-versions` (compiled in, so `lap doctor` needs no checkout) lists the
//! versions the test suite proved; [`version`] asks a tool for its own (`TOOL --version`,
//! with a deadline, since a tool may hang or call home) so the doctor can say whether it is one.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::{Harness, Package};

/// `scripts/tool-versions`: `REGISTRY PACKAGE VERSION` lines, `#` comments.
pub const PROVEN_VERSIONS: &str = include_str!("../../scripts/tool-versions");
/// How long a tool may take to print its version.
pub const VERSION_DEADLINE: Duration = Duration::from_secs(15);
/// How often a running `--version` is checked for having ended.
const VERSION_POLL: Duration = Duration::from_millis(20);

/// The version of `package` the suite proved, if it proved one.
pub fn proven(package: &Package) -> Option<&'static str> {
    PROVEN_VERSIONS
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            Some((words.next()?, words.next()?, words.next()?))
        })
        .find(|(registry, name, _)| *registry == package.registry && *name == package.name)
        .map(|(_, _, version)| version)
}

/// Why a tool's version could not be told.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum VersionError {
    #[error("cannot run `{program} --version`: {reason}")]
    Spawn { program: String, reason: String },
    #[error("`{program} --version` did not answer within {}s", VERSION_DEADLINE.as_secs())]
    Timeout { program: String },
    #[error("`{program} --version` printed no version: {output}")]
    Unreadable { program: String, output: String },
}

/// Runs `path --version` (stdin closed, `PATH` the sandboxes') and returns the first version
/// number it prints (`1.2.3`, a leading `v` dropped); killed after `deadline`.
pub fn version(path: &Path, deadline: Duration) -> Result<String, VersionError> {
    let program = path.display().to_string();
    let mut child = Command::new(path)
        .arg("--version")
        .env("PATH", SANDBOX_PATH)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| VersionError::Spawn {
            program: program.clone(),
            reason: e.to_string(),
        })?;
    // Read on a thread of its own: a tool may leave a child behind that holds its stdout open.
    let (tx, rx) = std::sync::mpsc::channel();
    if let Some(mut stdout) = child.stdout.take() {
        std::thread::spawn(move || {
            use std::io::Read;
            let mut output = String::new();
            let _ = stdout.read_to_string(&mut output);
            let _ = tx.send(output);
        });
    }
    let until = Instant::now() + deadline;
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if Instant::now() < until => std::thread::sleep(VERSION_POLL),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(VersionError::Timeout { program });
            }
            Err(e) => {
                return Err(VersionError::Spawn {
                    program,
                    reason: e.to_string(),
                });
            }
        }
    }
    let output = rx
        .recv_timeout(until.saturating_duration_since(Instant::now()))
        .map_err(|_| VersionError::Timeout {
            program: program.clone(),
        })?;
    version_in(&output).ok_or_else(|| VersionError::Unreadable {
        program,
        output: output.lines().next().unwrap_or("").chars().take(80).collect(),
    })
}

/// The first `N.N.N` (more parts or a pre-release tail allowed) in `text`.
fn version_in(text: &str) -> Option<String> {
    text.split(|c: char| c.is_whitespace() || c == '(' || c == ')' || c == ',')
        .map(|word| word.strip_prefix('v').unwrap_or(word))
        .find(|word| {
            let numbers: Vec<&str> = word.split('-').next().unwrap_or("").split('.').collect();
            numbers.len() >= 3
                && numbers
                    .iter()
                    .all(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
        })
        .map(str::to_owned)
}

/// The `PATH` of every command in a local sandbox.
pub const SANDBOX_PATH: &str = "/usr/local/bin:/usr/bin:/bin:/usr/local/sbin:/usr/sbin:/sbin";

/// The program a harness runs: the first word of its command.
pub fn program(harness: &Harness) -> &'static str {
    harness.command.split_whitespace().next().unwrap_or(harness.command)
}

/// Where a local sandbox finds `program`, if it does.
pub fn find(program: &str) -> Option<PathBuf> {
    SANDBOX_PATH
        .split(':')
        .map(|dir| PathBuf::from(dir).join(program))
        .find(|path| std::fs::metadata(path).is_ok_and(|m| crate::platform::is_executable(&m)))
}

/// Why a session of `harness` cannot run here, with what to do, when its tool is missing.
pub fn missing(harness: &Harness) -> Option<(String, String)> {
    let program = program(harness);
    find(program).is_none().then(|| {
        (
            format!(
                "the `{}` harness runs `{program}`, which is not installed on the machine running lap serve",
                harness.id
            ),
            format!(
                "install it with `{}`, or give the agent its own --command; see docs/troubleshooting.md#tool-missing",
                harness.install_hint
            ),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn versions_are_read_as_the_tools_print_them() {
        assert_eq!(version_in("0.61.0\n").as_deref(), Some("0.61.0"));
        assert_eq!(version_in("2.1.332 (Claude Code)").as_deref(), Some("2.1.332"));
        assert_eq!(version_in("codex-cli 0.171.0").as_deref(), Some("0.171.0"));
        assert_eq!(
            version_in("Hermes Agent v0.19.0 (2026.7.20)\nPython: 3.11.2").as_deref(),
            Some("0.19.0")
        );
        assert_eq!(version_in("1.2.3-beta.1").as_deref(), Some("1.2.3-beta.1"));
        assert_eq!(version_in("version 12"), None);
    }

    #[test]
    fn every_published_tool_has_a_proven_version() {
        for harness in crate::tools::CATALOG {
            if let Some(package) = &harness.package {
                assert!(proven(package).is_some(), "scripts/tool-versions lacks {package:?}");
            }
        }
        let gemini = Package {
            registry: "npm",
            name: "@google/gemini-cli",
        };
        assert_eq!(proven(&gemini), Some("0.61.0"));
        assert_eq!(
            proven(&Package {
                registry: "pypi",
                name: "@google/gemini-cli"
            }),
            None
        );
    }

    #[test]
    fn a_version_that_hangs_is_cut_off_at_the_deadline() {
        let dir = tempfile::tempdir().unwrap();
        let tool = dir.path().join("slowtool");
        std::fs::write(&tool, "#!/bin/sh\nsleep 30\n").unwrap();
        std::fs::set_permissions(&tool, std::fs::Permissions::from_mode(0o755)).unwrap();
        let started = Instant::now();
        let err = version(&tool, Duration::from_millis(300)).unwrap_err();
        assert!(matches!(err, VersionError::Timeout { .. }), "{err}");
        assert!(started.elapsed() < Duration::from_secs(5));
        std::fs::write(&tool, "#!/bin/sh\necho 'mytool v4.5.6 (build 7)'\n").unwrap();
        assert_eq!(version(&tool, VERSION_DEADLINE).as_deref(), Ok("4.5.6"));
    }

    #[test]
    fn programs_are_found_on_the_sandbox_path_only() {
        let shell = crate::tools::find("shell").unwrap();
        assert_eq!(program(shell), "bash");
        assert!(find("bash").is_some());
        assert!(missing(shell).is_none());
        assert!(find("surely-no-such-program-lap").is_none());
        let hermes = crate::tools::find("hermes").unwrap();
        assert_eq!(program(hermes), "hermes");
    }
}
