//! First-run files: what each tool finds under `HOME` so it starts straight into the agent.
//!
//! A coding CLI started for the first time stops on screens meant for a person setting it up on
//! their own machine: onboarding, "do you trust this folder?", "use this API key?", a warning
//! before permission prompts are skipped, a sign-in chooser. In a sandbox those questions are
//! answered already — the folder is the sandbox's, the key is a stub the vault swaps, and our
//! sandbox is the isolation — so the harness writes the tool's own settings files to answer them
//! before the agent starts, and turns the tool's inner sandbox off where ours already isolates it.
//! `reference/harness-protocols.md` records, per tool, which fields do this.
//!
//! This module only computes the files ([`files`], a pure function of the harness, the session's
//! environment and the working directory); the backend writes them inside the sandbox as the
//! sandbox user, never over a file that is already there (the tool may have changed it since).
//! Stubs appear in them (Claude Code approves a key by its last 20 characters); real values never
//! do, since the session's environment holds none.

use serde_json::{Value, json};

/// Which tool's first-run files a harness needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FirstRun {
    /// Nothing to answer.
    None,
    /// Claude Code's TUI: `~/.claude.json` and `~/.claude/settings.json`.
    ClaudeCode,
    /// Codex (its TUI and `codex app-server`): `~/.codex/config.toml` (the model, approvals and its own
    /// sandbox off, the folders trusted) and, with an API key, `~/.codex/auth.json` signing in with
    /// it (codex's built-in `openai` provider does not read `OPENAI_API_KEY` from the environment).
    Codex,
    /// Gemini CLI: `~/.gemini/settings.json` and `~/.gemini/trustedFolders.json`.
    Gemini,
    /// Hermes Agent: `~/.hermes/config.yaml`, an OpenAI-compatible provider whose key is read from
    /// `OPENAI_API_KEY` (written only when the session has that variable).
    Hermes,
}

impl FirstRun {
    /// The files this writes, relative to `HOME`, for documentation (`lap doctor --harnesses`).
    pub fn paths(self) -> &'static [&'static str] {
        match self {
            FirstRun::None => &[],
            FirstRun::ClaudeCode => &[".claude.json", ".claude/settings.json"],
            FirstRun::Codex => &[".codex/config.toml", ".codex/auth.json"],
            FirstRun::Gemini => &[".gemini/settings.json", ".gemini/trustedFolders.json"],
            FirstRun::Hermes => &[HERMES_CONFIG],
        }
    }
}

/// Hermes's settings file, relative to `HOME`.
const HERMES_CONFIG: &str = ".hermes/config.yaml";
/// The name of the provider lap writes into Hermes's settings.
const HERMES_PROVIDER: &str = "lap";
/// Where Hermes sends chat completions unless the session sets `OPENAI_BASE_URL`.
const OPENAI_BASE_URL: &str = "https://api.openai.com/v1";

/// One file to write inside the sandbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct File {
    /// Relative to the sandbox user's `HOME`.
    pub path: &'static str,
    pub contents: String,
}

/// How many trailing characters of its key Claude Code remembers as approved.
const CLAUDE_KEY_TAIL: usize = 20;

/// The files `first_run` needs, for a session whose environment is `env` (stubs, never real
/// values) and whose agent starts in `cwd`; `home` is the sandbox user's home, trusted too; `model`
/// is the agent's (Codex's default model when it names one).
pub fn files(first_run: FirstRun, env: &[(String, String)], cwd: &str, home: &str, model: Option<&str>) -> Vec<File> {
    let var = |name: &str| env.iter().rev().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
    let mut folders = vec![cwd];
    if home != cwd {
        folders.push(home);
    }
    match first_run {
        FirstRun::None => Vec::new(),
        FirstRun::ClaudeCode => {
            let projects: serde_json::Map<String, Value> = folders
                .iter()
                .map(|dir| {
                    let project = json!({"hasTrustDialogAccepted": true, "hasCompletedProjectOnboarding": true});
                    ((*dir).to_owned(), project)
                })
                .collect();
            let approved: Vec<String> = var("ANTHROPIC_API_KEY")
                .map(|key| {
                    let start = key.char_indices().rev().nth(CLAUDE_KEY_TAIL - 1).map_or(0, |(i, _)| i);
                    vec![key[start..].to_owned()]
                })
                .unwrap_or_default();
            let state = json!({
                "hasCompletedOnboarding": true,
                "bypassPermissionsModeAccepted": true,
                // Claude Code 2.1.33x: "Auto mode is now Claude Code's default permission mode",
                // a notice that waits for a key before the prompt.
                "hasSeenAutoDefaultNotice": true,
                "hasSeenAutoModeEntryWarning": true,
                "customApiKeyResponses": {"approved": approved, "rejected": []},
                "projects": projects,
            });
            let settings = json!({"skipDangerousModePermissionPrompt": true, "skipAutoPermissionPrompt": true});
            vec![
                File {
                    path: ".claude.json",
                    contents: pretty(&state),
                },
                File {
                    path: ".claude/settings.json",
                    contents: pretty(&settings),
                },
            ]
        }
        FirstRun::Codex => {
            let mut config = String::from(
                "# Written by lap: the sandbox isolates Codex, so its own sandbox and approvals are off.\n\
                 approval_policy = \"never\"\n\
                 sandbox_mode = \"danger-full-access\"\n\
                 check_for_update_on_startup = false\n\
                 \n\
                 [analytics]\n\
                 enabled = false\n",
            );
            if let Some(model) = model.map(str::trim).filter(|m| !m.is_empty()) {
                // Top-level keys go before the first table.
                config = config.replacen(
                    "approval_policy",
                    &format!("model = {}\napproval_policy", toml_string(model)),
                    1,
                );
            }
            for dir in &folders {
                config.push_str(&format!(
                    "\n[projects.{}]\ntrust_level = \"trusted\"\n",
                    toml_string(dir)
                ));
            }
            let mut out = vec![File {
                path: ".codex/config.toml",
                contents: config,
            }];
            if let Some(key) = var("OPENAI_API_KEY") {
                out.push(File {
                    path: ".codex/auth.json",
                    contents: pretty(&json!({"auth_mode": "apikey", "OPENAI_API_KEY": key})),
                });
            }
            out
        }
        FirstRun::Gemini => {
            let settings = json!({
                "security": {"auth": {"selectedType": "gemini-api-key"}},
                "privacy": {"usageStatisticsEnabled": false},
            });
            let trusted: serde_json::Map<String, Value> = folders
                .iter()
                .map(|dir| ((*dir).to_owned(), json!("TRUST_FOLDER")))
                .collect();
            vec![
                File {
                    path: ".gemini/settings.json",
                    contents: pretty(&settings),
                },
                File {
                    path: ".gemini/trustedFolders.json",
                    contents: pretty(&Value::Object(trusted)),
                },
            ]
        }
        FirstRun::Hermes => {
            if var("OPENAI_API_KEY").is_none() {
                return Vec::new();
            }
            let base_url = var("OPENAI_BASE_URL").unwrap_or(OPENAI_BASE_URL);
            // JSON strings are YAML strings: no quoting rules of our own.
            let quoted = |text: &str| serde_json::to_string(text).expect("strings serialise");
            let config = format!(
                "# Written by lap: an OpenAI-compatible provider, its key read from OPENAI_API_KEY (a stub the\n\
                 # vault swaps on the wire); the model comes from the agent's --model (`hermes -m`).\n\
                 model:\n  provider: {provider}\n{default}\
                 custom_providers:\n  - name: {provider}\n    base_url: {base_url}\n    key_env: OPENAI_API_KEY\n    api_mode: chat_completions\n",
                provider = quoted(HERMES_PROVIDER),
                default = model
                    .map(str::trim)
                    .filter(|m| !m.is_empty())
                    .map(|m| format!("  default: {}\n", quoted(m)))
                    .unwrap_or_default(),
                base_url = quoted(base_url),
            );
            vec![File {
                path: HERMES_CONFIG,
                contents: config,
            }]
        }
    }
}

fn pretty(value: &Value) -> String {
    let mut text = serde_json::to_string_pretty(value).expect("JSON values serialise");
    text.push('\n');
    text
}

/// A TOML basic string: quotes, with `"` and `\` escaped (paths have no control characters).
fn toml_string(text: &str) -> String {
    format!("\"{}\"", text.replace('\\', "\\\\").replace('"', "\\\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOME: &str = "/work/home";

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    fn json_of(files: &[File], path: &str) -> Value {
        let file = files
            .iter()
            .find(|f| f.path == path)
            .unwrap_or_else(|| panic!("no {path}"));
        serde_json::from_str(&file.contents).unwrap()
    }

    #[test]
    fn claude_code_skips_onboarding_trusts_the_folders_and_approves_the_stubs_tail() {
        let stub = "stub_anthropic_api_key_0123456789abcdef";
        let files = files(
            FirstRun::ClaudeCode,
            &env(&[("ANTHROPIC_API_KEY", stub)]),
            "/work/repo",
            HOME,
            None,
        );
        let state = json_of(&files, ".claude.json");
        assert_eq!(state["hasCompletedOnboarding"], true);
        assert_eq!(state["bypassPermissionsModeAccepted"], true);
        assert_eq!(
            state["customApiKeyResponses"]["approved"],
            json!([&stub[stub.len() - 20..]])
        );
        assert_eq!(state["projects"]["/work/repo"]["hasTrustDialogAccepted"], true);
        assert_eq!(state["projects"][HOME]["hasTrustDialogAccepted"], true);
        assert_eq!(
            json_of(&files, ".claude/settings.json")["skipDangerousModePermissionPrompt"],
            true
        );
    }

    #[test]
    fn claude_code_without_a_key_approves_nothing_and_a_short_key_whole() {
        let none = files(FirstRun::ClaudeCode, &[], HOME, HOME, None);
        assert_eq!(
            json_of(&none, ".claude.json")["customApiKeyResponses"]["approved"],
            json!([])
        );
        assert_eq!(json_of(&none, ".claude.json")["projects"].as_object().unwrap().len(), 1);
        let short = files(
            FirstRun::ClaudeCode,
            &env(&[("ANTHROPIC_API_KEY", "short")]),
            HOME,
            HOME,
            None,
        );
        assert_eq!(
            json_of(&short, ".claude.json")["customApiKeyResponses"]["approved"],
            json!(["short"])
        );
    }

    #[test]
    fn codex_runs_without_its_own_sandbox_trusts_the_folders_and_signs_in_with_the_stub() {
        let files = files(
            FirstRun::Codex,
            &env(&[("OPENAI_API_KEY", "stub_openai_api_key_42")]),
            "/work/repo",
            HOME,
            Some("gpt-x \"quoted\""),
        );
        let config: toml::Table = files[0].contents.parse().unwrap();
        assert_eq!(config["model"].as_str(), Some("gpt-x \"quoted\""));
        assert_eq!(files[0].path, ".codex/config.toml");
        assert_eq!(config["sandbox_mode"].as_str(), Some("danger-full-access"));
        assert_eq!(config["approval_policy"].as_str(), Some("never"));
        assert_eq!(config["check_for_update_on_startup"].as_bool(), Some(false));
        assert_eq!(
            config["projects"]["/work/repo"]["trust_level"].as_str(),
            Some("trusted")
        );
        assert_eq!(config["projects"][HOME]["trust_level"].as_str(), Some("trusted"));
        let auth = json_of(&files, ".codex/auth.json");
        assert_eq!(
            auth,
            json!({"auth_mode": "apikey", "OPENAI_API_KEY": "stub_openai_api_key_42"})
        );
        // Without a key there is nothing to sign in with: the chooser stays the tool's; without a
        // model, codex picks its own.
        let bare = super::files(FirstRun::Codex, &[], HOME, HOME, None);
        assert_eq!(bare.len(), 1);
        assert!(!bare[0].contents.parse::<toml::Table>().unwrap().contains_key("model"));
    }

    #[test]
    fn gemini_uses_its_api_key_sends_no_usage_statistics_and_trusts_the_folders() {
        let files = files(FirstRun::Gemini, &[], "/work/repo", HOME, None);
        let settings = json_of(&files, ".gemini/settings.json");
        assert_eq!(settings["security"]["auth"]["selectedType"], "gemini-api-key");
        assert_eq!(settings["privacy"]["usageStatisticsEnabled"], false);
        let trusted = json_of(&files, ".gemini/trustedFolders.json");
        assert_eq!(trusted, json!({"/work/repo": "TRUST_FOLDER", HOME: "TRUST_FOLDER"}));
    }

    #[test]
    fn hermes_gets_an_openai_compatible_provider_reading_the_stub_from_the_environment() {
        let files = files(
            FirstRun::Hermes,
            &env(&[
                ("OPENAI_API_KEY", "stub_1"),
                ("OPENAI_BASE_URL", "https://api.openai.com:8443/v1"),
            ]),
            "/work/repo",
            HOME,
            Some("gpt-x"),
        );
        assert_eq!(files.len(), 1);
        assert_eq!(files[0].path, ".hermes/config.yaml");
        let text = &files[0].contents;
        assert!(
            text.contains("model:\n  provider: \"lap\"\n  default: \"gpt-x\"\n"),
            "{text}"
        );
        assert!(
            text.contains("  - name: \"lap\"\n    base_url: \"https://api.openai.com:8443/v1\"\n"),
            "{text}"
        );
        assert!(
            text.contains("    key_env: OPENAI_API_KEY\n    api_mode: chat_completions\n"),
            "{text}"
        );
        assert!(!text.contains("stub_1"), "the key stays in the environment: {text}");
        let default = super::files(FirstRun::Hermes, &env(&[("OPENAI_API_KEY", "k")]), HOME, HOME, None);
        assert!(default[0].contents.contains("base_url: \"https://api.openai.com/v1\""));
        assert!(!default[0].contents.contains("default:"), "{}", default[0].contents);
        // No key: nothing to configure; Hermes's own "no provider" message stays.
        assert!(super::files(FirstRun::Hermes, &[], HOME, HOME, None).is_empty());
    }

    #[test]
    fn the_documented_paths_are_the_written_ones() {
        let env = env(&[("OPENAI_API_KEY", "k"), ("ANTHROPIC_API_KEY", "k")]);
        for first_run in [
            FirstRun::None,
            FirstRun::ClaudeCode,
            FirstRun::Codex,
            FirstRun::Gemini,
            FirstRun::Hermes,
        ] {
            let written: Vec<&str> = files(first_run, &env, HOME, HOME, None)
                .iter()
                .map(|f| f.path)
                .collect();
            assert_eq!(written, first_run.paths(), "{first_run:?}");
        }
    }

    #[test]
    fn a_shell_needs_nothing() {
        assert!(files(FirstRun::None, &env(&[("ANTHROPIC_API_KEY", "k")]), HOME, HOME, None).is_empty());
    }
}
