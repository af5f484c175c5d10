//! Whether a harness's tool is installed where the local backend's sandboxes see it.
//!
//! Local sandboxes run the host's programs: `/usr`, `/bin`, `/sbin` and the `lib` dirs are
//! bind-mounted read-only, and commands get a fixed `PATH` ([`SANDBOX_PATH`]). So a tool is present
//! for a sandbox exactly when it is an executable file in one of those directories on the host
//! (npm's global prefix is `/usr` or `/usr/local`, both inside). `lap doctor` lists them; creating a
//! session of a harness whose tool is missing fails with its install hint.

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

use super::Harness;

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
        .find(|path| std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0))
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
                "install it with `{}`, or give the agent its own --command",
                harness.install_hint
            ),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn programs_are_found_on_the_sandbox_path_only() {
        let shell = crate::harness::find("shell").unwrap();
        assert_eq!(program(shell), "bash");
        assert!(find("bash").is_some());
        assert!(missing(shell).is_none());
        assert!(find("surely-no-such-program-lap").is_none());
        let hermes = crate::harness::find("hermes").unwrap();
        assert_eq!(program(hermes), "hermes");
    }
}
