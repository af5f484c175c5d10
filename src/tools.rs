//! The tool catalog: which agent programs (tools) `lap` knows how to run, as data.
//!
//! Each built-in harness is one row: its id (the `harness_id` of LAP's API), the command it runs,
//! whether people drive it through a terminal (TUI) or programs through the message API, the
//! environment variables it needs, and how to install its tool. Nothing else in the code branches on
//! a harness id; it looks the row up here. Beside the rows: the first-run files each tool finds
//! ready ([`first_run`]) and whether a tool is installed ([`installed`]). What runs the tools is
//! elsewhere: in the sandbox, [`crate::harness`] (the terminal of a TUI tool); in the control plane,
//! [`crate::drivers`] (the protocol of an API tool).
//!
//! The harness table of `docs/guide/harnesses.md` (first-run files, environment, model flag) is rendered from this
//! catalog by [`markdown_table`] (`lap doctor --harnesses`), and `tests/it/generated_docs.rs` fails
//! when the committed copy differs, so the documentation cannot drift from the code.

pub mod first_run;
pub mod installed;

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
    /// The flag that picks the model on the TUI's command line (`-m MODEL`); `None`: the agent's
    /// `model` does not reach the command line (an API harness names it in its protocol).
    pub model_flag: Option<&'static str>,
    /// What to check when the model's API answers 401 (after the credential's bound host and value,
    /// which every harness shares: [`UNAUTHORIZED_HINT`]).
    pub unauthorized_hint: Option<&'static str>,
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

/// What to check first when a model API answers 401, whatever the harness.
pub const UNAUTHORIZED_HINT: &str = "check the credential's value and the host it is bound to with \
     `lap agents show AGENT` (the vault swaps the stub for the real value only toward that host); see \
     docs/troubleshooting.md#upstream-401";

impl Harness {
    pub fn supports_tui(&self) -> bool {
        self.mode == Mode::Tui
    }

    /// The TUI's command line for `agent`: its own `command`, else the harness's, with the model
    /// flag and the agent's `model` (shell-quoted) when the harness has one and the agent names one.
    pub fn tui_command(&self, command: Option<&str>, model: Option<&str>) -> String {
        if let Some(command) = command {
            return command.to_owned();
        }
        match (self.model_flag, model.map(str::trim).filter(|m| !m.is_empty())) {
            (Some(flag), Some(model)) => format!("{} {flag} {}", self.command, shell_quote(model)),
            _ => self.command.to_owned(),
        }
    }

    /// The hint for a 401 from the model API under this harness.
    pub fn hint_for_unauthorized(&self) -> String {
        match self.unauthorized_hint {
            Some(own) => format!("{UNAUTHORIZED_HINT}; {own}"),
            None => UNAUTHORIZED_HINT.to_owned(),
        }
    }
}

/// One shell word: single-quoted, with `'` written as `'\''`.
fn shell_quote(word: &str) -> String {
    format!("'{}'", word.replace('\'', r"'\''"))
}

/// Codex's own side of a 401: it signs in with `~/.codex/auth.json` (the harness writes it with the
/// stub), not with `OPENAI_API_KEY` from the environment.
const CODEX_UNAUTHORIZED: &str = "codex signs in with `$CODEX_HOME/auth.json` (lap writes it with the stub on the \
     first run; an older sandbox may lack it) and its `openai` provider in `~/.codex/config.toml`: a custom \
     `model_provider` needs an `env_key` naming the credential's variable";

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
        unauthorized_hint: None,
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
        model_flag: Some("-m"),
        unauthorized_hint: Some(CODEX_UNAUTHORIZED),
        package: npm("@openai/codex"),
    },
    Harness {
        id: "codex-app-server",
        command: "codex app-server",
        mode: Mode::Api,
        needs_env: &["OPENAI_API_KEY"],
        install_hint: "npm install -g @openai/codex",
        env: &[],
        first_run: FirstRun::Codex,
        model_flag: None,
        unauthorized_hint: Some(CODEX_UNAUTHORIZED),
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
        unauthorized_hint: None,
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
        unauthorized_hint: None,
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
        unauthorized_hint: Some(
            "opencode's `openai` provider sends `OPENAI_API_KEY` (bound to api.openai.com); another provider \
             (`--model PROVIDER/MODEL`) needs that provider's key variable as a credential",
        ),
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
        unauthorized_hint: Some(
            "claude sends `ANTHROPIC_API_KEY` as `x-api-key` (`ANTHROPIC_AUTH_TOKEN`, when set, as \
             `Authorization: Bearer`) to `ANTHROPIC_BASE_URL`, api.anthropic.com unless set: the one it sends must \
             be a credential bound to that host",
        ),
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
        unauthorized_hint: None,
        package: None,
    },
];

/// Looks a harness up by id.
pub fn find(id: &str) -> Option<&'static Harness> {
    CATALOG.iter().find(|h| h.id == id)
}

/// The catalog as the Markdown table of `docs/guide/harnesses.md`: per harness, what it runs, the credentials the
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
        crate::drivers::QUIET_ENV
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
    fn the_codex_tui_gets_the_agents_model_on_its_command_line_and_its_own_command_wins() {
        let codex = find("codex").unwrap();
        assert_eq!(codex.tui_command(None, Some("gpt-5")), "codex -m 'gpt-5'");
        assert_eq!(codex.tui_command(None, Some("it's")), r"codex -m 'it'\''s'");
        assert_eq!(codex.tui_command(None, Some(" ")), "codex");
        assert_eq!(codex.tui_command(None, None), "codex");
        assert_eq!(codex.tui_command(Some("codex --foo"), Some("gpt-5")), "codex --foo");
        assert_eq!(find("shell").unwrap().tui_command(None, Some("m")), "bash -l");
        // codex-app-server gets codex's first-run files too (the key, the model, approvals off).
        assert_eq!(find("codex-app-server").unwrap().first_run, FirstRun::Codex);
        assert!(find("codex").unwrap().hint_for_unauthorized().contains("auth.json"));
        assert!(
            find("shell")
                .unwrap()
                .hint_for_unauthorized()
                .contains("lap agents show")
        );
    }

    #[test]
    fn ids_are_unique() {
        let mut ids: Vec<_> = CATALOG.iter().map(|h| h.id).collect();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), CATALOG.len());
    }
}
