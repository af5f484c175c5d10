//! The harness catalog: which agent programs `lap` knows how to run, as data.
//!
//! Each built-in harness is one row: its id (the `harness_id` of LAP's API), the command it runs,
//! whether people drive it through a terminal (TUI) or programs through the message API, the
//! environment variables it needs, and how to install its tool. Nothing else in the code branches on
//! a harness id; it looks the row up here. The in-sandbox side (`lap harness`, PTY and viewers) is
//! built on top of this table: [`terminal`] runs the agent under a PTY and serves its viewers.
//!
//! The README's harness table (first-run files, environment, model flag) is rendered from this
//! catalog by [`markdown_table`] (`lap doctor --harnesses`), and `tests/generated_docs.rs` fails
//! when the committed copy differs, so the documentation cannot drift from the code.

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
    /// The flag that hands the tool the agent's `--model` (`None`: the harness passes it another
    /// way, or the tool has no model).
    pub model_flag: Option<&'static str>,
    /// Where the tool is published (`None`: part of the system), for `lap doctor`'s version check
    /// against `scripts/tool-versions`.
    pub package: Option<Package>,
}

/// A tool's package in a public registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Package {
    /// `npm` or `pypi`, as in `scripts/tool-versions`.
    pub registry: &'static str,
    pub name: &'static str,
}

const fn npm(name: &'static str) -> Option<Package> {
    Some(Package { registry: "npm", name })
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
        model_flag: Some("--model"),
        package: npm("@anthropic-ai/claude-code"),
    },
    Harness {
        id: "codex",
        command: "codex",
        mode: Mode::Tui,
        needs_env: &["OPENAI_API_KEY"],
        install_hint: "npm install -g @openai/codex",
        env: &[],
        first_run: FirstRun::Codex,
        model_flag: Some("--model"),
        package: npm("@openai/codex"),
    },
    Harness {
        id: "codex-app-server",
        command: "codex app-server",
        mode: Mode::Api,
        needs_env: &["OPENAI_API_KEY"],
        install_hint: "npm install -g @openai/codex",
        env: &[],
        first_run: FirstRun::None,
        model_flag: None,
        package: npm("@openai/codex"),
    },
    Harness {
        id: "gemini",
        command: "gemini",
        mode: Mode::Tui,
        needs_env: &["GEMINI_API_KEY"],
        install_hint: "npm install -g @google/gemini-cli",
        env: &[("GEMINI_CLI_TRUST_WORKSPACE", "true"), ("GEMINI_SANDBOX", "false")],
        first_run: FirstRun::Gemini,
        model_flag: Some("--model"),
        package: npm("@google/gemini-cli"),
    },
    Harness {
        id: "hermes",
        command: "hermes --tui",
        mode: Mode::Tui,
        needs_env: &["OPENAI_API_KEY"],
        install_hint: "pip install hermes-agent (into a venv under /usr/local, linked as /usr/local/bin/hermes)",
        env: &[("HERMES_SKIP_NODE_BOOTSTRAP", "1")],
        first_run: FirstRun::Hermes,
        model_flag: Some("--model"),
        package: Some(Package {
            registry: "pypi",
            name: "hermes-agent",
        }),
    },
    Harness {
        id: "opencode",
        command: "opencode serve",
        mode: Mode::Api,
        needs_env: &[],
        install_hint: "npm install -g opencode-ai",
        env: &[],
        first_run: FirstRun::None,
        model_flag: None,
        package: npm("opencode-ai"),
    },
    Harness {
        id: "claude-agent-sdk",
        command: "claude",
        mode: Mode::Api,
        needs_env: &["ANTHROPIC_API_KEY"],
        install_hint: "npm install -g @anthropic-ai/claude-code",
        env: &[],
        first_run: FirstRun::None,
        model_flag: Some("--model"),
        package: npm("@anthropic-ai/claude-code"),
    },
    Harness {
        id: "shell",
        command: "bash -l",
        mode: Mode::Tui,
        needs_env: &[],
        install_hint: "bash is part of every Linux system",
        env: &[],
        first_run: FirstRun::None,
        model_flag: None,
        package: None,
    },
];

/// Looks a harness up by id.
pub fn find(id: &str) -> Option<&'static Harness> {
    CATALOG.iter().find(|h| h.id == id)
}

/// The catalog as the README's Markdown table: per harness, what it runs, the credentials the
/// tool reads, the environment and first-run files lap gives it, and the flag that carries the
/// agent's `--model`. API harnesses also get [`api::QUIET_ENV`], listed once under the table.
pub fn markdown_table() -> String {
    let code = |text: &str| format!("`{text}`");
    let list = |items: Vec<String>| {
        if items.is_empty() {
            "-".to_owned()
        } else {
            items.join(", ")
        }
    };
    let mut out = String::from(
        "| Harness | Mode | Runs | Credential it reads | Environment lap sets | First-run files (in `~`) | Model flag |\n\
         |---|---|---|---|---|---|---|\n",
    );
    for h in CATALOG {
        let mode = match h.mode {
            Mode::Tui => "TUI",
            Mode::Api => "API",
        };
        let mut env: Vec<String> = h.env.iter().map(|(k, v)| code(&format!("{k}={v}"))).collect();
        if h.mode == Mode::Api {
            env.push("the API set below".to_owned());
        }
        let model = match (h.model_flag, h.mode) {
            (Some(flag), _) => code(&format!("{flag} MODEL")),
            (None, Mode::Api) => "in the protocol".to_owned(),
            (None, _) => "-".to_owned(),
        };
        out.push_str(&format!(
            "| `{}` | {mode} | `{}` | {} | {} | {} | {model} |\n",
            h.id,
            h.command,
            list(h.needs_env.iter().map(|v| code(v)).collect()),
            list(env),
            list(h.first_run.paths().iter().map(|p| code(p)).collect()),
        ));
    }
    out.push_str(&format!(
        "\nThe API set (every API harness): {}.\n",
        api::QUIET_ENV
            .iter()
            .map(|(k, v)| code(&format!("{k}={v}")))
            .collect::<Vec<_>>()
            .join(", ")
    ));
    out
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
