//! lap's MCP server (`lap mcp` over stdio, `/mcp` on `lap serve` over streamable HTTP), driven by
//! real MCP clients against a real `lap serve` with real local sandboxes:
//!
//! - the official `mcp` Python SDK (PyPI, pinned; scripts/test.sh installs it in a venv under
//!   `${LAP_TOOLS_DIR:-~/.cache/lap-tools}/mcp-sdk`, `$LAP_MCP_PYTHON` names another python) runs
//!   tests/mcp_client.py: it lists the tools, starts a session of a shell agent, runs a command,
//!   writes and reads a file, and gets tool errors (with the API's error and hint) for an unknown
//!   session and bad input; at `/mcp` without the master key it is refused with 401;
//! - the real `claude` CLI loads `lap mcp` from `--mcp-config` and, asked by the fake Anthropic API
//!   (tests/it/support/anthropic.rs, here over plain HTTP on loopback, `ANTHROPIC_BASE_URL`), calls
//!   the `run_command` tool, whose command is then found to have run in the sandbox.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};

use crate::support;
use crate::support::anthropic::{self, CLAUDE_WAIT, LAP_MCP_TOOL, RUN_LAP_MCP};
use crate::support::require;
use crate::support::vendor::serve_plain;
use crate::support::{Home, LAP, TestServer, delete_local_sandboxes, lap, wait_within};

/// How long one run of the Python client may take (it has its own deadline inside).
const CLIENT_WAIT: Duration = Duration::from_secs(300);

/// What keeps `claude` to the model's traffic (as lap's harness runs it: src/drivers.rs).
const QUIET_ENV: &[(&str, &str)] = &[
    ("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1"),
    ("DISABLE_AUTOUPDATER", "1"),
    ("DISABLE_TELEMETRY", "1"),
    ("DISABLE_ERROR_REPORTING", "1"),
    ("DISABLE_BUG_COMMAND", "1"),
];

/// Every tool the server offers.
const TOOLS: &[&str] = &[
    "create_session",
    "delete_session",
    "egress_log",
    "list_agents",
    "list_sessions",
    "read_file",
    "run_command",
    "send_message",
    "write_file",
];

/// A local-backend server with a `shell` agent `box`; its sandboxes are deleted on drop.
struct Fixture {
    home: Home,
    server: TestServer,
}

impl Fixture {
    fn new() -> Self {
        let home = Home::new();
        let server = TestServer::start_local(&home);
        lap(&home, ["agents", "create", "box", "--harness", "shell"]).success();
        Self { home, server }
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        delete_local_sandboxes(self.server.data_dir());
    }
}

/// The python of the venv that has the `mcp` SDK; `None` (the test skipped) when it is not there
/// outside a strict run.
fn mcp_python() -> Option<PathBuf> {
    let python = match std::env::var_os("LAP_MCP_PYTHON") {
        Some(path) => PathBuf::from(path),
        None => {
            let tools = std::env::var_os("LAP_TOOLS_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").unwrap()).join(".cache/lap-tools"));
            tools.join("mcp-sdk/bin/python")
        }
    };
    if python.exists() {
        return Some(python);
    }
    support::skip(&format!(
        "no python with the `mcp` SDK at {}; scripts/test.sh installs it (ensure_mcp_sdk)",
        python.display()
    ));
    None
}

/// Runs tests/mcp_client.py with `args` in `home`'s environment; its JSON.
fn client(python: &PathBuf, home: &Home, args: &[&str]) -> Value {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/mcp_client.py");
    let child = Command::new(python)
        .arg(script)
        .args(args)
        .env_clear()
        .envs(home.env())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn the MCP client");
    let out = wait_within(child, CLIENT_WAIT, "the MCP client");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the MCP client failed ({}):\nstdout:\n{stdout}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

/// What one conversation (tests/mcp_client.py `stdio` or `http`) must show.
fn assert_conversation(out: &Value) {
    assert_eq!(out["server"], "lap");
    let tools: Vec<&str> = out["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    assert_eq!(tools, TOOLS);
    // Each tool has an input schema with its required fields.
    let run = &out["schemas"]["run_command"];
    assert_eq!(run["type"], "object");
    assert_eq!(run["required"], json!(["session_id", "command"]));
    assert!(
        run["properties"]["command"]["description"]
            .as_str()
            .unwrap()
            .contains("sh -c")
    );
    assert_eq!(
        out["schemas"]["write_file"]["required"],
        json!(["session_id", "path", "content"])
    );

    let created = &out["create_session"];
    assert_eq!(created["is_error"], false, "{created}");
    assert_eq!(created["structured"]["status"], "ready");
    assert_eq!(created["structured"]["agent"], "box");
    assert!(
        created["structured"].get("tty_token").is_none(),
        "no terminal token for the model"
    );

    // The command ran in the sandbox: its hostname is the sandbox's (`lap-…`), not this machine's.
    let ran = &out["run_command"]["structured"];
    assert_eq!(out["run_command"]["is_error"], false);
    assert_eq!(ran["exit_code"], 3);
    assert_eq!(ran["stderr"], "oops\n");
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    let stdout = ran["stdout"].as_str().unwrap();
    assert!(stdout.starts_with("hello from lap-"), "{stdout}");
    assert_ne!(stdout.trim_start_matches("hello from ").trim(), host.trim());

    assert_eq!(out["write_file"]["is_error"], false, "{}", out["write_file"]);
    assert_eq!(out["write_file"]["structured"]["bytes"], 17);
    assert_eq!(out["read_file"]["structured"]["content"], "written over MCP\n");
    assert_eq!(out["read_file"]["structured"]["encoding"], "text");
    // What was written is in the sandbox's home, where a shell sees it.
    assert_eq!(out["cat"]["structured"]["stdout"], "written over MCP\n");

    let listed = out["list_sessions"]["structured"]["sessions"].as_array().unwrap();
    assert!(listed.iter().any(|s| s["id"] == created["structured"]["id"]));
    assert_eq!(out["egress_log"]["structured"]["records"], json!([]));

    // Failures are tool errors carrying the API's error and hint, not a crash.
    let unknown = &out["unknown_session"];
    assert_eq!(unknown["is_error"], true);
    assert_eq!(unknown["structured"]["status"], 404);
    assert_eq!(
        unknown["structured"]["error"],
        "session `00000000-0000-4000-8000-000000000000` not found"
    );
    assert!(unknown["structured"]["hint"].as_str().is_some_and(|h| !h.is_empty()));
    let bad = &out["bad_input"];
    assert_eq!(bad["is_error"], true);
    assert!(
        bad["structured"]["error"].as_str().unwrap().contains("not base64"),
        "{bad}"
    );
    assert!(bad["structured"]["hint"].as_str().is_some());

    assert_eq!(out["delete_session"]["structured"]["status"], "deleted");
}

#[test]
fn the_python_mcp_sdk_drives_sessions_over_stdio_and_over_http_and_is_refused_without_the_key() {
    let Some(python) = mcp_python() else { return };
    let fx = Fixture::new();
    let home = &fx.home;

    // stdio: `lap mcp`, configured like every CLI command (here by the config file `lap serve` wrote).
    let out = client(&python, home, &["stdio", LAP, "box"]);
    assert_conversation(&out);

    // Streamable HTTP at /mcp on lap serve, with the master key.
    let url = format!("{}/mcp", fx.server.url);
    let key = fx.server.master_key();
    let out = client(&python, home, &["http", &url, &key, "box"]);
    assert_conversation(&out);

    // With a member's API key the tools act as that member (their session, their role); a viewer's
    // key reads but cannot start a session; a revoked key is refused like no key.
    lap(home, ["users", "create", "mia"]).success();
    let member = lap(home, ["keys", "create", "--user", "mia", "--role", "member", "--json"])
        .success()
        .json();
    let out = client(&python, home, &["http", &url, member["key"].as_str().unwrap(), "box"]);
    assert_conversation(&out);
    let audit = lap(home, ["audit", "--json"]).success().json();
    assert!(
        audit.as_array().unwrap().iter().any(|e| e["actor"] == "mia"
            && e["action"] == "POST /api/v1/managed_agents/agents/{id}/session"
            && e["status"] == 200),
        "the session started over /mcp is mia's: {audit}"
    );
    let viewer = lap(home, ["keys", "create", "--user", "mia", "--role", "viewer", "--json"])
        .success()
        .json();
    let out = client(&python, home, &["http", &url, viewer["key"].as_str().unwrap(), "box"]);
    assert_eq!(out["create_session"]["is_error"], true, "{out}");
    assert!(
        out["create_session"]["text"].as_str().unwrap().contains("`viewer`"),
        "the refusal names the role: {out}"
    );
    lap(home, ["keys", "revoke", member["id"].as_str().unwrap()]).success();
    let out = client(&python, home, &["refused", &url, member["key"].as_str().unwrap()]);
    assert_eq!(out["statuses"], json!([401]), "{out}");

    // Without the key, or with another, the client is refused with 401 before anything runs.
    for args in [
        vec!["refused", url.as_str()],
        vec!["refused", url.as_str(), "lapk_not-the-key"],
    ] {
        let out = client(&python, home, &args);
        assert!(out.get("initialized").is_none(), "{out}");
        assert_eq!(out["statuses"], json!([401]), "{out}");
        assert!(out["refused"].as_str().is_some(), "{out}");
    }
    // The 401 is the API's envelope, with a hint.
    let (status, body) = fx.server.http_get("/mcp", None);
    assert_eq!(status, 401);
    let body: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["error"], "unauthorized");
    assert!(body["hint"].as_str().unwrap().contains("Bearer"));
}

#[test]
fn claude_loads_lap_mcp_and_runs_a_command_in_the_sandbox_when_the_model_asks() {
    if !require("claude", "npm install -g @anthropic-ai/claude-code") {
        return;
    }
    let fx = Fixture::new();
    let home = &fx.home;
    let session = lap(home, ["sessions", "create", "box"])
        .success()
        .out()
        .trim()
        .to_owned();

    // The fake Anthropic API, on this machine's loopback over plain HTTP.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let api = rt.block_on(serve_plain(seen.clone(), anthropic::handler()));

    // `lap mcp` as `claude mcp add lap -- lap mcp` would start it, with the test home's config.
    let env: serde_json::Map<String, Value> = home
        .env()
        .into_iter()
        .map(|(k, v)| {
            (
                k.to_string_lossy().into_owned(),
                Value::from(v.to_string_lossy().into_owned()),
            )
        })
        .collect();
    let config = json!({"mcpServers": {"lap": {"type": "stdio", "command": LAP, "args": ["mcp"], "env": env}}});
    let prompt = format!("{RUN_LAP_MCP} {session} echo made-by-claude > ~/from-claude.txt && hostname");
    let workdir = tempfile::tempdir().unwrap();
    let child = Command::new("claude")
        .args([
            "-p",
            &prompt,
            "--model",
            anthropic::MODEL,
            "--strict-mcp-config",
            "--mcp-config",
        ])
        .arg(config.to_string())
        .args(["--allowedTools", LAP_MCP_TOOL])
        .current_dir(workdir.path())
        .env_clear()
        .envs(home.env())
        .env("ANTHROPIC_BASE_URL", format!("http://{api}"))
        .env("ANTHROPIC_API_KEY", anthropic::REAL_KEY)
        // Nothing but the model's traffic (the same quiet switches lap gives the tools it runs).
        .envs(QUIET_ENV.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn claude");
    let out = wait_within(child, CLAUDE_WAIT * 2, "claude -p");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let seen = seen.lock().unwrap().clone();
    let context = || {
        let requests: Vec<String> = seen
            .iter()
            .map(|s| format!("{} {} {}", s.method, s.path, anthropic::last_user_text(&s.json())))
            .collect();
        format!(
            "claude exited {}\nstdout:\n{stdout}\nstderr:\n{}\nthe fake saw: {requests:#?}\nserver log:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr),
            fx.server.log()
        )
    };
    assert!(out.status.success(), "{}", context());

    let model_requests: Vec<Value> = seen
        .iter()
        .filter(|s| s.method == "POST" && s.path.starts_with("/v1/messages"))
        .map(|s| s.json())
        .filter(|b| b["stream"] == true)
        .collect();
    // claude loaded `lap mcp` and called its tool (MCP tools reach this claude's model deferred,
    // behind its ToolSearch, so they are not in the first request's tool list by name): the result
    // that went back to the model is lap's `run_command` answer, and the reply carries it.
    let result = model_requests
        .iter()
        .find_map(anthropic::tool_result)
        .unwrap_or_else(|| panic!("no tool result reached the model\n{}", context()));
    let result: Value = serde_json::from_str(result.trim()).unwrap_or_else(|e| panic!("{e}: {result}"));
    assert_eq!(result["exit_code"], 0, "{result}");
    assert_eq!(result["stdout_truncated"], false, "{result}");
    assert!(stdout.contains("ran: "), "{}", context());

    // The command ran in the session's sandbox: the file is there, and the hostname is the sandbox's.
    let cat = lap(home, ["exec", &session, "--", "cat", "/work/home/from-claude.txt"]).success();
    assert_eq!(cat.out(), "made-by-claude");
    let hostname = lap(home, ["exec", &session, "--", "hostname"]).success();
    assert_eq!(result["stdout"].as_str().map(str::trim), Some(hostname.out()));
}
