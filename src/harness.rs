//! The harness catalog: which agent programs `lap` knows how to run, as data.
//!
//! Each built-in harness is one row: its id (the `harness_id` of LAP's API), the command it runs,
//! whether people drive it through a terminal (TUI) or programs through the message API, the
//! environment variables it needs, and how to install its tool. Nothing else in the code branches on
//! a harness id; it looks the row up here. The in-sandbox side (`lap harness`, PTY and viewers) is
//! built on top of this table: [`terminal`] runs the agent under a PTY and serves its viewers.

pub mod api;
pub mod first_run;
pub mod terminal;
pub mod tools;

pub use first_run::FirstRun;

/// How a harness is driven.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// A person attaches a terminal (`lap <agent>`).
    Tui,
    /// Programs send messages (`POST /sessions/{id}/message`).
    Api,
}

/// One built-in harness.
#[derive(Debug, Clone, Copy)]
pub struct Harness {
    pub id: &'static str,
    pub command: &'static str,
    pub mode: Mode,
    /// Environment variables the tool reads its credentials from.
    pub needs_env: &'static [&'static str],
    pub install_hint: &'static str,
    /// Variables the tool needs to run unattended in a sandbox, under the agent's own `env`.
    pub env: &'static [(&'static str, &'static str)],
    /// The settings files that answer the tool's first-run questions ([`first_run`]).
    pub first_run: FirstRun,
}

impl Harness {
    pub fn supports_tui(&self) -> bool {
        self.mode == Mode::Tui
    }
}

/// Every harness `lap` ships with, in the order help texts list them.
pub const CATALOG: &[Harness] = &[
    Harness {
        id: "claude-code",
        command: "claude",
        mode: Mode::Tui,
        needs_env: &["ANTHROPIC_API_KEY"],
        install_hint: "npm install -g @anthropic-ai/claude-code",
        env: &[("IS_SANDBOX", "1"), ("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1")],
        first_run: FirstRun::ClaudeCode,
    },
    Harness {
        id: "codex",
        command: "codex",
        mode: Mode::Tui,
        needs_env: &["OPENAI_API_KEY"],
        install_hint: "npm install -g @openai/codex",
        env: &[],
        first_run: FirstRun::Codex,
    },
    Harness {
        id: "codex-app-server",
        command: "codex app-server",
        mode: Mode::Api,
        needs_env: &["OPENAI_API_KEY"],
        install_hint: "npm install -g @openai/codex",
        env: &[],
        first_run: FirstRun::None,
    },
    Harness {
        id: "gemini",
        command: "gemini",
        mode: Mode::Tui,
        needs_env: &["GEMINI_API_KEY"],
        install_hint: "npm install -g @google/gemini-cli",
        env: &[("GEMINI_CLI_TRUST_WORKSPACE", "true"), ("GEMINI_SANDBOX", "false")],
        first_run: FirstRun::Gemini,
    },
    Harness {
        id: "hermes",
        command: "hermes --tui",
        mode: Mode::Tui,
        needs_env: &[],
        install_hint: "pip install hermes-agent",
        env: &[],
        first_run: FirstRun::None,
    },
    Harness {
        id: "opencode",
        command: "opencode serve",
        mode: Mode::Api,
        needs_env: &[],
        install_hint: "npm install -g opencode-ai",
        env: &[],
        first_run: FirstRun::None,
    },
    Harness {
        id: "claude-agent-sdk",
        command: "claude",
        mode: Mode::Api,
        needs_env: &["ANTHROPIC_API_KEY"],
        install_hint: "npm install -g @anthropic-ai/claude-code",
        env: &[],
        first_run: FirstRun::None,
    },
    Harness {
        id: "shell",
        command: "bash -l",
        mode: Mode::Tui,
        needs_env: &[],
        install_hint: "bash is part of every Linux system",
        env: &[],
        first_run: FirstRun::None,
    },
];

/// Looks a harness up by id.
pub fn find(id: &str) -> Option<&'static Harness> {
    CATALOG.iter().find(|h| h.id == id)
}

/// The ids, comma-separated, for error messages and help.
pub fn ids() -> String {
    CATALOG.iter().map(|h| h.id).collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tui_and_api_harnesses_are_told_apart() {
        assert!(find("claude-code").unwrap().supports_tui());
        assert!(find("shell").unwrap().supports_tui());
        assert!(!find("opencode").unwrap().supports_tui());
        assert!(!find("claude-agent-sdk").unwrap().supports_tui());
        assert!(find("vim").is_none());
    }

    #[test]
    fn ids_are_unique() {
        let mut ids: Vec<_> = CATALOG.iter().map(|h| h.id).collect();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), CATALOG.len());
    }
}
