//! End-to-end tests of the `lap` CLI: the real binary against a real `lap serve --backend fake`.
//!
//! Every test gets its own home and server. Snapshots show the whole output (exit code, stdout,
//! stderr) with ids, times, ports, paths, keys and fingerprints redacted.

use std::os::unix::fs::PermissionsExt;

use insta::assert_snapshot;

use crate::support;
use crate::support::{Home, TestServer, lap};

/// A home whose server has started once, so the client config exists, with agent `demo`.
fn home_with_demo() -> (Home, TestServer) {
    let home = Home::new();
    let server = TestServer::start(&home);
    lap(&home, ["agents", "create", "demo", "--harness", "shell"]).success();
    (home, server)
}

#[test]
fn first_start_of_serve_writes_a_client_config_so_create_needs_no_login() {
    let home = Home::new();
    let _r = home.redactions();
    let server = TestServer::start(&home);
    assert_snapshot!(server.told(), @r"
    generated a master key: [MASTER_KEY]
      it is kept in `[HOME]/server-data/master.key` (mode 0600) and not printed again
    lap serve previews on http://127.0.0.1:[PORT] (bound to 127.0.0.1:[PORT])
    wrote a client config pointing at http://127.0.0.1:[PORT] to `[HOME]/.config/lap/config.toml`
      saved the master key in `[HOME]/.config/lap/credentials` (mode 0600), as `LAP_CREDENTIAL_STORE=file` asks
    lap serve listening on http://127.0.0.1:[PORT] (backend: fake, data: [HOME]/server-data)
    ");
    assert_snapshot!(lap(&home, ["agents", "create", "demo", "--harness", "shell"]), @r"
    exit: 0
    --- stdout
    name         demo
    id           [UUID]
    harness      shell
    command      -
    repo         -
    branch       main
    prompt       -
    model        -
    env          -
    credentials  -
    allow_out    -
    deny_out     -
    limits       memory default, pids default, cpus default
    volumes      -
    created      [TIME]
    --- stderr
    created agent `demo`
    ");
}

#[test]
fn a_second_start_keeps_the_key_and_an_existing_client_config() {
    let home = Home::new();
    let _r = home.redactions();
    let mut server = TestServer::start(&home);
    let key = server.master_key();
    let config = std::fs::read_to_string(home.config_file()).unwrap();
    server.restart();
    assert_snapshot!(server.told(), @r"
    lap serve previews on http://127.0.0.1:[PORT] (bound to 127.0.0.1:[PORT])
    lap serve listening on http://127.0.0.1:[PORT] (backend: fake, data: [HOME]/server-data)
    ");
    assert_eq!(server.master_key(), key);
    assert_eq!(std::fs::read_to_string(home.config_file()).unwrap(), config);
}

#[test]
fn agents_list_prints_a_table_and_json() {
    let (home, _server) = home_with_demo();
    let _r = home.redactions();
    lap(
        &home,
        ["agents", "create", "second", "--repo", "https://example.com/r.git"],
    )
    .success();
    assert_snapshot!(lap(&home, ["agents", "list"]), @r"
    exit: 0
    --- stdout
    NAME    HARNESS   SESSIONS  REPO                       CREATED
    second  opencode  0         https://example.com/r.git  [TIME]
    demo    shell     0         -                          [TIME]
    ");
    assert_snapshot!(lap(&home, ["agents", "list", "--json"]), @r#"
    exit: 0
    --- stdout
    [
      {
        "id": "[UUID]",
        "name": "second",
        "harness_id": "opencode",
        "supports_tui": false,
        "command": null,
        "repo_url": "https://example.com/r.git",
        "branch": "main",
        "prompt": null,
        "model": null,
        "env": {},
        "credentials": [],
        "env_var_hosts": {},
        "allow_out": [],
        "deny_out": [],
        "created_at": "[TIME]",
        "updated_at": "[TIME]",
        "session_count": 0,
        "has_active_session": false
      },
      {
        "id": "[UUID]",
        "name": "demo",
        "harness_id": "shell",
        "supports_tui": true,
        "command": null,
        "repo_url": null,
        "branch": "main",
        "prompt": null,
        "model": null,
        "env": {},
        "credentials": [],
        "env_var_hosts": {},
        "allow_out": [],
        "deny_out": [],
        "created_at": "[TIME]",
        "updated_at": "[TIME]",
        "session_count": 0,
        "has_active_session": false
      }
    ]
    "#);
}

#[test]
fn agents_list_says_how_to_create_the_first_agent() {
    let home = Home::new();
    let _server = TestServer::start(&home);
    let _r = home.redactions();
    assert_snapshot!(lap(&home, ["agents", "list"]), @r"
    exit: 0
    --- stderr
    no agents yet; create one with `lap agents create NAME --harness shell`
    ");
    assert_snapshot!(lap(&home, ["agents", "list", "--json"]), @r"
    exit: 0
    --- stdout
    []
    ");
}

#[test]
fn agents_show_prints_every_field_by_name_or_id() {
    let home = Home::new();
    let _server = TestServer::start(&home);
    let _r = home.redactions();
    let created = lap(
        &home,
        [
            "agents",
            "create",
            "full",
            "--harness",
            "codex",
            "--command",
            "codex --yolo",
            "--repo",
            "https://example.com/r.git",
            "--branch",
            "dev",
            "--prompt",
            "be brief",
            "--model",
            "gpt-5",
            "--env",
            "RUST_LOG=debug",
            "--allow-out",
            "api.openai.com",
            "--deny-out",
            "evil.example.com",
        ],
    )
    .success();
    assert_snapshot!(lap(&home, ["agents", "show", "full"]), @r"
    exit: 0
    --- stdout
    name         full
    id           [UUID]
    harness      codex
    command      codex --yolo
    repo         https://example.com/r.git
    branch       dev
    prompt       be brief
    model        gpt-5
    env          RUST_LOG=debug
    credentials  -
    allow_out    api.openai.com
    deny_out     evil.example.com
    limits       memory default, pids default, cpus default
    volumes      -
    created      [TIME]
    ");
    let id = lap(&home, ["agents", "show", "full", "--json"]).json()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(lap(&home, ["agents", "show", &id]).success().stdout, created.stdout);
    assert_snapshot!(lap(&home, ["agents", "show", "full", "--json"]), @r#"
    exit: 0
    --- stdout
    {
      "id": "[UUID]",
      "name": "full",
      "harness_id": "codex",
      "supports_tui": true,
      "command": "codex --yolo",
      "repo_url": "https://example.com/r.git",
      "branch": "dev",
      "prompt": "be brief",
      "model": "gpt-5",
      "env": {
        "RUST_LOG": "debug"
      },
      "credentials": [],
      "env_var_hosts": {},
      "allow_out": [
        "api.openai.com"
      ],
      "deny_out": [
        "evil.example.com"
      ],
      "created_at": "[TIME]",
      "updated_at": "[TIME]"
    }
    "#);
}

#[test]
fn agents_edit_changes_env_name_and_credentials() {
    let (home, _server) = home_with_demo();
    let _r = home.redactions();
    assert_snapshot!(lap(&home, ["agents", "edit", "demo", "--env", "A=1", "--env", "B=two"]), @r"
    exit: 0
    --- stdout
    name         demo
    id           [UUID]
    harness      shell
    command      -
    repo         -
    branch       main
    prompt       -
    model        -
    env          A=1, B=two
    credentials  -
    allow_out    -
    deny_out     -
    limits       memory default, pids default, cpus default
    volumes      -
    created      [TIME]
    --- stderr
    updated agent `demo`
    ");
    assert_snapshot!(
        home.lap()
            .env("GITHUB_TOKEN", "ghp_real_secret_value")
            .run(["agents", "edit", "demo", "--credential", "GITHUB_TOKEN@api.github.com,github.com"]),
        @r"
        exit: 0
        --- stdout
        name         demo
        id           [UUID]
        harness      shell
        command      -
        repo         -
        branch       main
        prompt       -
        model        -
        env          A=1, B=two
        credentials  GITHUB_TOKEN → api.github.com, github.com; inject authorization (fingerprint [FP])
        allow_out    -
        deny_out     -
        limits       memory default, pids default, cpus default
        volumes      -
        created      [TIME]
        --- stderr
        updated agent `demo`
        "
    );
    let file = home.path().join("openai-key");
    std::fs::write(&file, "sk-real-secret\n").unwrap();
    let spec = format!("OPENAI_API_KEY@api.openai.com={}", file.display());
    assert_snapshot!(
        lap(&home, ["agents", "edit", "demo", "--rename", "renamed", "--credential-file", &spec]),
        @r"
        exit: 0
        --- stdout
        name         renamed
        id           [UUID]
        harness      shell
        command      -
        repo         -
        branch       main
        prompt       -
        model        -
        env          A=1, B=two
        credentials  GITHUB_TOKEN → api.github.com, github.com; inject authorization (fingerprint [FP])
                     OPENAI_API_KEY → api.openai.com; inject authorization (fingerprint [FP])
        allow_out    -
        deny_out     -
        limits       memory default, pids default, cpus default
        volumes      -
        created      [TIME]
        --- stderr
        updated agent `renamed`
        "
    );
    assert_snapshot!(lap(&home, ["agents", "edit", "renamed", "--remove-credential", "GITHUB_TOKEN"]), @r"
    exit: 0
    --- stdout
    name         renamed
    id           [UUID]
    harness      shell
    command      -
    repo         -
    branch       main
    prompt       -
    model        -
    env          A=1, B=two
    credentials  OPENAI_API_KEY → api.openai.com; inject authorization (fingerprint [FP])
    allow_out    -
    deny_out     -
    limits       memory default, pids default, cpus default
    volumes      -
    created      [TIME]
    --- stderr
    updated agent `renamed`
    ");
    let json = lap(&home, ["agents", "show", "renamed", "--json"]).success().stdout;
    assert!(
        !json.contains("ghp_real_secret_value") && !json.contains("sk-real-secret"),
        "{json}"
    );
    assert_snapshot!(lap(&home, ["agents", "show", "demo"]), @r"
    exit: 1
    --- stderr
    error: agent `demo` not found
    hint: `lap agents list` shows the agents that exist; see docs/troubleshooting.md#agent-not-found
    ");
}

#[test]
fn agents_delete_removes_the_agent() {
    let (home, _server) = home_with_demo();
    let _r = home.redactions();
    assert_snapshot!(lap(&home, ["agents", "delete", "demo"]), @r"
    exit: 0
    --- stderr
    deleted agent `demo`
    ");
    assert_snapshot!(lap(&home, ["agents", "delete", "demo"]), @r"
    exit: 1
    --- stderr
    error: agent `demo` not found
    hint: `lap agents list` shows the agents that exist; see docs/troubleshooting.md#agent-not-found
    ");
    assert_snapshot!(lap(&home, ["agents", "list", "--json"]), @r"
    exit: 0
    --- stdout
    []
    ");
}

#[test]
fn sessions_create_prints_the_id_and_json_the_whole_session() {
    let (home, _server) = home_with_demo();
    let _r = home.redactions();
    let run = lap(&home, ["sessions", "create", "demo"]);
    assert_snapshot!(run, @r"
    exit: 0
    --- stdout
    [UUID]
    ");
    let id = run.out().to_owned();
    assert!(uuid::Uuid::parse_str(&id).is_ok(), "{run}");
    assert_snapshot!(lap(&home, ["sessions", "create", "demo", "--json"]), @r#"
    exit: 0
    --- stdout
    {
      "id": "[UUID]",
      "agent_id": "[UUID]",
      "agent_name": "demo",
      "status": "ready",
      "phase": null,
      "phase_detail": null,
      "sandbox_url": "fake://[SANDBOX]",
      "tty_url": "ws://127.0.0.1:[PORT]/api/v1/managed_agents/sessions/[UUID]/tty",
      "tty_token": "[TTY_TOKEN]",
      "harness_session_id": null,
      "supports_tui": true,
      "failure_reason": null,
      "title_preview": null,
      "idle_timeout_ms": 86400000,
      "created_at": "[TIME]",
      "last_seen_at": "[TIME]",
      "stopped_at": null
    }
    "#);
}

#[test]
fn sessions_list_show_and_delete() {
    let (home, _server) = home_with_demo();
    let _r = home.redactions();
    let id = lap(&home, ["sessions", "create", "demo"]).success().out().to_owned();
    lap(&home, ["agents", "create", "other", "--harness", "shell"]).success();
    lap(&home, ["sessions", "create", "other"]).success();
    assert_snapshot!(lap(&home, ["sessions", "list"]), @r"
    exit: 0
    --- stdout
    ID                                    AGENT  STATUS  PHASE/REASON  CREATED
    [UUID]  other  ready   -             [TIME]
    [UUID]  demo   ready   -             [TIME]
    ");
    assert_snapshot!(lap(&home, ["sessions", "list", "--agent", "demo"]), @r"
    exit: 0
    --- stdout
    ID                                    AGENT  STATUS  PHASE/REASON  CREATED
    [UUID]  demo   ready   -             [TIME]
    ");
    assert_snapshot!(lap(&home, ["sessions", "show", &id]), @r"
    exit: 0
    --- stdout
    id         [UUID]
    agent      demo ([UUID])
    status     ready
    phase      -
    reason     -
    tui        yes
    tty_url    ws://127.0.0.1:[PORT]/api/v1/managed_agents/sessions/[UUID]/tty
    created    [TIME]
    last_seen  [TIME]
    stopped    -
    ");
    assert_snapshot!(lap(&home, ["sessions", "delete", &id]), @r"
    exit: 0
    --- stderr
    stopped session [UUID]
    ");
    assert_snapshot!(lap(&home, ["sessions", "show", &id]), @r"
    exit: 0
    --- stdout
    id         [UUID]
    agent      demo ([UUID])
    status     dead
    phase      -
    reason     deleted
    tui        yes
    tty_url    -
    created    [TIME]
    last_seen  [TIME]
    stopped    [TIME]
    ");
    assert_snapshot!(lap(&home, ["sessions", "delete", &id]), @r"
    exit: 0
    --- stderr
    session [UUID] was already dead
    ");
}

#[test]
fn sessions_list_says_how_to_start_the_first_session() {
    let (home, _server) = home_with_demo();
    let _r = home.redactions();
    assert_snapshot!(lap(&home, ["sessions", "list"]), @r"
    exit: 0
    --- stderr
    no sessions yet; start one with `lap sessions create AGENT`
    ");
}

#[test]
fn unknown_agent_is_an_error_with_a_hint() {
    let (home, _server) = home_with_demo();
    let _r = home.redactions();
    assert_snapshot!(lap(&home, ["agents", "show", "nope"]), @r"
    exit: 1
    --- stderr
    error: agent `nope` not found
    hint: `lap agents list` shows the agents that exist; see docs/troubleshooting.md#agent-not-found
    ");
    assert_snapshot!(lap(&home, ["sessions", "create", "nope"]), @r"
    exit: 1
    --- stderr
    error: agent `nope` not found
    hint: `lap agents list` shows the agents that exist; see docs/troubleshooting.md#agent-not-found
    ");
    assert_snapshot!(lap(&home, ["sessions", "show", "nope"]), @r"
    exit: 1
    --- stderr
    error: session `nope` not found
    hint: `lap sessions list` shows the sessions that exist
    ");
}

#[test]
fn duplicate_agent_name_is_refused() {
    let (home, _server) = home_with_demo();
    let _r = home.redactions();
    assert_snapshot!(lap(&home, ["agents", "create", "demo"]), @r"
    exit: 1
    --- stderr
    error: an agent named `demo` already exists
    hint: pick another name, or edit the existing agent
    ");
}

#[test]
fn invalid_agent_name_is_refused() {
    let (home, _server) = home_with_demo();
    let _r = home.redactions();
    assert_snapshot!(lap(&home, ["agents", "create", "Bad_Name"]), @r"
    exit: 1
    --- stderr
    error: invalid agent name `Bad_Name`
    hint: names are 1-63 characters of a-z, 0-9 and `-`, starting with a letter or digit
    ");
    assert_snapshot!(lap(&home, ["agents", "edit", "demo", "--rename=-dash-first"]), @r"
    exit: 1
    --- stderr
    error: invalid agent name `-dash-first`
    hint: names are 1-63 characters of a-z, 0-9 and `-`, starting with a letter or digit
    ");
}

#[test]
fn server_down_says_how_to_start_one() {
    let home = Home::new();
    let _r = home.redactions();
    let run =
        home.lap()
            .env("LAP_MASTER_KEY", "some-key-123456")
            .run(["--server", "http://127.0.0.1:1", "agents", "list"]);
    assert!(run.stderr.contains("\nhint: "), "{run}");
    assert_snapshot!(run, @r"
    exit: 1
    --- stderr
    error: cannot reach lap serve at `http://127.0.0.1:1`
      caused by: error sending request for url (http://127.0.0.1:1/api/v1/managed_agents/agents?limit=200&offset=0)
      caused by: client error (Connect)
      caused by: tcp connect error
      caused by: Connection refused (os error 111)
    hint: start the server with `lap serve`, or point `--server`/`LAP_URL` at a running one; see docs/troubleshooting.md#cannot-reach-lap-serve
    ");
}

#[test]
fn no_key_configured_says_how_to_get_one() {
    let home = Home::new();
    let _r = home.redactions();
    assert_snapshot!(lap(&home, ["agents", "list"]), @r"
    exit: 1
    --- stderr
    error: no master key is configured for `http://127.0.0.1:3000`
    hint: run `lap login`, set `LAP_MASTER_KEY`, or start `lap serve` once on this machine so it writes the client config; see docs/troubleshooting.md#no-master-key
    ");
}

#[test]
fn credential_from_an_unset_env_var_is_a_usage_error() {
    let (home, _server) = home_with_demo();
    let _r = home.redactions();
    assert_snapshot!(lap(&home, ["agents", "create", "x", "--credential", "NOT_SET@example.com"]), @r"
    exit: 2
    --- stderr
    error: `--credential NOT_SET@example.com` reads the value from the environment variable `NOT_SET`, which is not set
    hint: export NOT_SET=… first, or use `--credential-file NOT_SET=PATH`
    ");
    assert_eq!(
        lap(&home, ["agents", "list", "--json"])
            .json()
            .as_array()
            .unwrap()
            .len(),
        1,
        "nothing was created"
    );
}

#[test]
fn usage_errors_exit_2() {
    let home = Home::new();
    let _r = home.redactions();
    assert_snapshot!(lap(&home, ["agents", "create"]), @r"
    exit: 2
    --- stderr
    error: the following required arguments were not provided:
      <NAME>

    Usage: lap agents create <NAME>

    For more information, try '--help'.
    ");
    assert_snapshot!(lap(&home, ["agents", "create", "x", "--harness", "vim"]), @r"
    exit: 2
    --- stderr
    error: invalid value 'vim' for '--harness <HARNESS>'
      [possible values: claude-code, codex, codex-app-server, gemini, hermes, opencode, claude-agent-sdk, shell]

    For more information, try '--help'.
    ");
    assert_snapshot!(lap(&home, ["agents", "create", "x", "--env", "NOEQUALS"]), @r"
    exit: 2
    --- stderr
    error: invalid value 'NOEQUALS' for '--env <K=V>': expected K=V, got `NOEQUALS`

    For more information, try '--help'.
    ");
}

#[test]
fn opening_an_unknown_agent_lists_the_available_names() {
    let home = Home::new();
    let _r = home.redactions();
    let _server = TestServer::start(&home);
    assert_snapshot!(lap(&home, ["someagent"]), @r"
    exit: 1
    --- stderr
    error: no agent named 'someagent'
    hint: create one with `lap agents create NAME --harness shell`
    ");
    lap(&home, ["agents", "create", "demo", "--harness", "shell"]);
    assert_snapshot!(lap(&home, ["someagent"]), @r"
    exit: 1
    --- stderr
    error: no agent named 'someagent'
    hint: available: demo; see docs/troubleshooting.md#no-agent-named
    ");
    assert_snapshot!(lap(&home, ["demo", "--detach-keys", "meta-x"]), @r"
    exit: 2
    --- stderr
    error: `meta-x` is not a key; use e.g. `ctrl-d`, `ctrl-p,ctrl-q`, `x` or `none`
    hint: see `lap attach --help`
    ");
}

#[test]
fn config_shows_values_and_sources_with_the_key_masked() {
    let home = Home::new();
    let _r = home.redactions();
    assert_snapshot!(lap(&home, ["config"]), @r"
    exit: 0
    --- stdout
    SETTING      VALUE                                         SOURCE
    ca_cert      (not set)
    config_file  [HOME]/.config/lap/config.toml
    master_key   (not set)
    url          http://127.0.0.1:3000                         default
    ");
    let server = TestServer::start(&home);
    let run = lap(&home, ["config"]);
    assert!(!run.stdout.contains(&server.master_key()), "{run}");
    assert_snapshot!(run, @r"
    exit: 0
    --- stdout
    SETTING      VALUE                                         SOURCE
    ca_cert      (not set)
    config_file  [HOME]/.config/lap/config.toml
    master_key   lapk… (48 chars)                              [HOME]/.config/lap/credentials
    url          http://127.0.0.1:[PORT]                        [HOME]/.config/lap/config.toml
    ");
    assert_snapshot!(lap(&home, ["config", "--json"]), @r#"
    exit: 0
    --- stdout
    {
      "values": {
        "ca_cert": {
          "value": null,
          "source": null
        },
        "config_file": {
          "value": "[HOME]/.config/lap/config.toml",
          "source": null
        },
        "master_key": {
          "value": "lapk… (48 chars)",
          "source": {
            "kind": "credentials_file",
            "detail": "[HOME]/.config/lap/credentials"
          }
        },
        "url": {
          "value": "http://127.0.0.1:[PORT]",
          "source": {
            "kind": "config_file",
            "detail": "[HOME]/.config/lap/config.toml"
          }
        }
      }
    }
    "#);
    let run = home
        .lap()
        .env("LAP_URL", "http://127.0.0.1:9/")
        .env("LAP_MASTER_KEY", "env-key-0123456789")
        .run(["config"]);
    assert_snapshot!(run, @r"
    exit: 0
    --- stdout
    SETTING      VALUE                                         SOURCE
    ca_cert      (not set)
    config_file  [HOME]/.config/lap/config.toml
    master_key   env-… (18 chars)                              env LAP_MASTER_KEY
    url          http://127.0.0.1:9                            env LAP_URL
    ");
    assert_snapshot!(lap(&home, ["--server", "http://127.0.0.1:8", "config"]), @r"
    exit: 0
    --- stdout
    SETTING      VALUE                                         SOURCE
    ca_cert      (not set)
    config_file  [HOME]/.config/lap/config.toml
    master_key   lapk… (48 chars)                              [HOME]/.config/lap/credentials
    url          http://127.0.0.1:8                            flag
    ");
}

#[test]
fn quiet_silences_status_lines_but_not_data_or_errors() {
    let home = Home::new();
    let _server = TestServer::start(&home);
    let _r = home.redactions();
    assert_snapshot!(lap(&home, ["-q", "agents", "create", "demo", "--harness", "shell"]), @r"
    exit: 0
    --- stdout
    name         demo
    id           [UUID]
    harness      shell
    command      -
    repo         -
    branch       main
    prompt       -
    model        -
    env          -
    credentials  -
    allow_out    -
    deny_out     -
    limits       memory default, pids default, cpus default
    volumes      -
    created      [TIME]
    ");
    assert_snapshot!(lap(&home, ["--quiet", "agents", "edit", "demo", "--env", "A=1"]), @r"
    exit: 0
    --- stdout
    name         demo
    id           [UUID]
    harness      shell
    command      -
    repo         -
    branch       main
    prompt       -
    model        -
    env          A=1
    credentials  -
    allow_out    -
    deny_out     -
    limits       memory default, pids default, cpus default
    volumes      -
    created      [TIME]
    ");
    let id = lap(&home, ["-q", "sessions", "create", "demo"])
        .success()
        .out()
        .to_owned();
    assert_snapshot!(lap(&home, ["-q", "sessions", "delete", &id]), @"exit: 0");
    assert_snapshot!(lap(&home, ["-q", "agents", "delete", "demo"]), @"exit: 0");
    assert_snapshot!(lap(&home, ["-q", "agents", "list"]), @"exit: 0");
    assert_snapshot!(lap(&home, ["-q", "agents", "show", "demo"]), @r"
    exit: 1
    --- stderr
    error: agent `demo` not found
    hint: `lap agents list` shows the agents that exist; see docs/troubleshooting.md#agent-not-found
    ");
}

/// A server in its own home, and a client home that has never seen it.
fn server_and_fresh_client() -> (Home, TestServer, Home) {
    let server_home = Home::new();
    let server = TestServer::start(&server_home);
    (server_home, server, Home::new())
}

#[test]
fn login_with_the_right_key_saves_it_and_commands_work() {
    let (_server_home, server, home) = server_and_fresh_client();
    let _r = home.redactions();
    let key = server.master_key();
    let run = home
        .lap()
        .stdin(format!("{key}\n"))
        .run(["login", "--url", &server.url, "--key-stdin"]);
    assert_snapshot!(run, @r"
    exit: 0
    --- stderr
    saved the master key in `[HOME]/.config/lap/credentials` (mode 0600), as `LAP_CREDENTIAL_STORE=file` asks
    logged in to http://127.0.0.1:[PORT]
    ");
    assert_snapshot!(lap(&home, ["agents", "list"]), @r"
    exit: 0
    --- stderr
    no agents yet; create one with `lap agents create NAME --harness shell`
    ");
    assert_snapshot!(std::fs::read_to_string(home.config_file()).unwrap(), @r#"
    # lap client configuration; `lap config` shows the effective values
    url = "http://127.0.0.1:[PORT]"
    key_store = "file"
    "#);
    assert!(std::fs::read_to_string(home.credentials_file()).unwrap().contains(&key));
}

#[test]
fn login_with_a_wrong_key_fails_and_saves_nothing() {
    let (_server_home, server, home) = server_and_fresh_client();
    let _r = home.redactions();
    let run = home
        .lap()
        .stdin("not-the-key-0123456789\n")
        .run(["login", "--url", &server.url, "--key-stdin"]);
    assert_snapshot!(run, @r"
    exit: 1
    --- stderr
    error: `http://127.0.0.1:[PORT]` rejected this master key; nothing was saved
    hint: copy the key `lap serve` printed on its first start, or from `LAP_MASTER_KEY` of the server
    ");
    assert!(!home.config_dir().exists(), "login wrote {:?}", home.config_dir());
}

#[test]
fn login_without_a_tty_or_key_stdin_fails_with_a_hint() {
    let (_server_home, server, home) = server_and_fresh_client();
    let _r = home.redactions();
    assert_snapshot!(lap(&home, ["login", "--url", &server.url]), @r"
    exit: 2
    --- stderr
    error: stdin is not a terminal, so the key cannot be prompted for
    hint: pipe it in with `lap login --key-stdin`, or set `LAP_MASTER_KEY`
    ");
    assert_snapshot!(home.lap().stdin("\n").run(["login", "--url", &server.url, "--key-stdin"]), @r"
    exit: 2
    --- stderr
    error: the key is empty
    hint: paste the key `lap serve` printed on its first start, or the API key an admin made for you
    ");
    assert!(!home.config_dir().exists());
}

#[test]
fn logout_forgets_the_key_so_commands_say_how_to_log_in() {
    let (home, _server) = home_with_demo();
    let _r = home.redactions();
    assert_snapshot!(lap(&home, ["logout"]), @r"
    exit: 0
    --- stderr
    removed `[HOME]/.config/lap/credentials`
    removed the server URL in `[HOME]/.config/lap/config.toml`
    ");
    assert!(!home.credentials_file().exists());
    assert_snapshot!(lap(&home, ["agents", "list"]), @r"
    exit: 1
    --- stderr
    error: no master key is configured for `http://127.0.0.1:3000`
    hint: run `lap login`, set `LAP_MASTER_KEY`, or start `lap serve` once on this machine so it writes the client config; see docs/troubleshooting.md#no-master-key
    ");
    assert_snapshot!(lap(&home, ["logout"]), @r"
    exit: 0
    --- stderr
    nothing to forget: no saved login
    ");
}

#[test]
fn login_files_are_mode_0600() {
    let (server_home, server, home) = server_and_fresh_client();
    home.lap()
        .stdin(server.master_key())
        .run(["login", "--url", &server.url, "--key-stdin"])
        .success();
    for file in [home.config_file(), home.credentials_file()] {
        let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{} is {mode:o}", file.display());
    }
    // The files the server's first start wrote for its own user, too.
    for file in [server_home.config_file(), server_home.credentials_file()] {
        let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{} is {mode:o}", file.display());
    }
}

#[test]
fn kill_9_of_the_server_loses_nothing() {
    let home = Home::new();
    let _r = home.redactions();
    let mut server = TestServer::start(&home);
    lap(
        &home,
        ["agents", "create", "demo", "--harness", "shell", "--env", "A=1"],
    )
    .success();
    home.lap()
        .env("API_TOKEN", "real-token-value")
        .run([
            "agents",
            "create",
            "vaulted",
            "--credential",
            "API_TOKEN@api.example.com",
        ])
        .success();
    let before = lap(&home, ["agents", "show", "vaulted", "--json"]).json();
    let ready = lap(&home, ["sessions", "create", "demo"]).success().out().to_owned();
    let stopped = lap(&home, ["sessions", "create", "vaulted"]).success().out().to_owned();
    lap(&home, ["sessions", "delete", &stopped]).success();
    let agents_before = lap(&home, ["agents", "list", "--json"]).json();

    server.kill9();
    assert_eq!(lap(&home, ["agents", "list"]).code, 1, "the server is down");
    server.restart();

    let after = lap(&home, ["agents", "show", "vaulted", "--json"]).json();
    assert_eq!(
        after["credentials"], before["credentials"],
        "credential and fingerprint survive"
    );
    assert_eq!(after["id"], before["id"]);
    let agents_after = lap(&home, ["agents", "list", "--json"]).json();
    let ids = |v: &serde_json::Value| -> Vec<serde_json::Value> {
        v.as_array().unwrap().iter().map(|a| a["id"].clone()).collect()
    };
    assert_eq!(ids(&agents_after), ids(&agents_before));
    assert_snapshot!(lap(&home, ["agents", "show", "vaulted"]), @r"
    exit: 0
    --- stdout
    name         vaulted
    id           [UUID]
    harness      opencode
    command      -
    repo         -
    branch       main
    prompt       -
    model        -
    env          -
    credentials  API_TOKEN → api.example.com; inject authorization (fingerprint [FP])
    allow_out    -
    deny_out     -
    limits       memory default, pids default, cpus default
    volumes      -
    created      [TIME]
    ");
    assert_snapshot!(lap(&home, ["sessions", "list"]), @r"
    exit: 0
    --- stdout
    ID                                    AGENT    STATUS  PHASE/REASON                                   CREATED
    [UUID]  vaulted  dead    deleted                                        [TIME]
    [UUID]  demo     dead    the sandbox vanished while lap serve was down  [TIME]
    ");
    let session = lap(&home, ["sessions", "show", &ready, "--json"]).json();
    assert_eq!(session["status"], "dead", "{session}");
    assert!(
        session["failure_reason"].as_str().is_some_and(|r| !r.is_empty()),
        "{session}"
    );
    let session = lap(&home, ["sessions", "show", &stopped, "--json"]).json();
    assert_ne!(session["status"], "ready", "{session}");
    // The restarted server still serves writes.
    lap(&home, ["sessions", "create", "demo"]).success();
}

#[test]
fn rest_lists_agents_in_laps_shape_with_the_master_key() {
    let (home, server) = home_with_demo();
    let _r = home.redactions();
    let (status, body) = server.http_get("/api/v1/managed_agents/agents", None);
    assert_snapshot!(format!("{status} {body}"), @r#"401 {"error":"unauthorized","hint":"send `Authorization: Bearer <master key or API key>`; `lap config` shows where the CLI keeps it"}"#);
    let (status, body) = server.http_get("/api/v1/managed_agents/agents", Some(&server.master_key()));
    assert_eq!(status, 200, "{body}");
    let list: serde_json::Value = serde_json::from_str(&body).unwrap();
    for field in ["data", "total", "limit", "offset"] {
        assert!(list.get(field).is_some(), "no `{field}` in {list}");
    }
    let agent = &list["data"][0];
    for field in [
        "id",
        "name",
        "harness_id",
        "repo_url",
        "branch",
        "allow_out",
        "deny_out",
        "created_at",
    ] {
        assert!(agent.get(field).is_some(), "no `{field}` in {agent}");
    }
    assert_eq!(agent["name"], "demo");
    assert_snapshot!(serde_json::to_string_pretty(&list).unwrap(), @r#"
    {
      "data": [
        {
          "allow_out": [],
          "branch": "main",
          "command": null,
          "created_at": "[TIME]",
          "credentials": [],
          "deny_out": [],
          "env": {},
          "env_var_hosts": {},
          "harness_id": "shell",
          "has_active_session": false,
          "id": "[UUID]",
          "model": null,
          "name": "demo",
          "prompt": null,
          "repo_url": null,
          "session_count": 0,
          "supports_tui": true,
          "updated_at": "[TIME]"
        }
      ],
      "limit": 50,
      "offset": 0,
      "total": 1
    }
    "#);
}

#[test]
fn serve_refuses_plain_http_on_a_non_loopback_address() {
    let home = Home::new();
    let _r = home.redactions();
    let data = home.path().join("refused-data");
    let run = lap(
        &home,
        [
            "serve",
            "--backend",
            "fake",
            "--listen",
            "0.0.0.0:0",
            "--data-dir",
            data.to_str().unwrap(),
        ],
    );
    assert_snapshot!(run, @r"
    exit: 2
    --- stderr
    error: refusing to serve plain HTTP on non-loopback address 0.0.0.0:0
    hint: give --tls-cert and --tls-key, or --insecure-http if the network is trusted; see docs/troubleshooting.md#plain-http
    ");
    assert!(!data.exists(), "it refused before touching the data dir");
}

#[test]
fn serve_refuses_a_tool_deadline_that_is_not_whole_seconds() {
    let home = Home::new();
    let _r = home.redactions();
    let data = home.path().join("refused-data");
    let run = home.lap().env("LAP_TOOL_SILENCE_TIMEOUT", "30m").run([
        "serve",
        "--backend",
        "fake",
        "--listen",
        "127.0.0.1:0",
        "--data-dir",
        data.to_str().unwrap(),
    ]);
    assert_snapshot!(run, @r"
    exit: 2
    --- stderr
    error: `LAP_TOOL_SILENCE_TIMEOUT` is `30m`, not a whole number of seconds above 0
    hint: give whole seconds, e.g. `600`, or unset it for its default; see docs/reference/configuration.md
    ");
    assert!(!data.exists(), "it refused before touching the data dir");
}

/// A self-signed certificate for 127.0.0.1 and localhost, written into `home`.
fn self_signed(home: &Home) -> (std::path::PathBuf, std::path::PathBuf) {
    let cert = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned(), "localhost".to_owned()]).unwrap();
    let cert_path = home.path().join("cert.pem");
    let key_path = home.path().join("key.pem");
    std::fs::write(&cert_path, cert.cert.pem()).unwrap();
    std::fs::write(&key_path, cert.signing_key.serialize_pem()).unwrap();
    (cert_path, key_path)
}

#[test]
fn tls_serves_https_to_a_client_that_trusts_the_certificate() {
    let server_home = Home::new();
    let (cert, key) = self_signed(&server_home);
    let server = TestServer::start_with(
        &server_home,
        [
            "--tls-cert".as_ref(),
            cert.as_os_str(),
            "--tls-key".as_ref(),
            key.as_os_str(),
        ],
        vec![],
    );
    assert!(server.url.starts_with("https://127.0.0.1:"), "{}", server.url);

    // A client whose config names the certificate as its CA logs in and works over https.
    let home = Home::new();
    let _r = home.redactions();
    home.write_config(&format!("ca_cert = \"{}\"\n", cert.display()));
    home.lap()
        .stdin(server.master_key())
        .run(["login", "--url", &server.url, "--key-stdin"])
        .success();
    lap(&home, ["agents", "create", "demo", "--harness", "shell"]).success();
    assert_snapshot!(lap(&home, ["agents", "list"]), @r"
    exit: 0
    --- stdout
    NAME  HARNESS  SESSIONS  REPO  CREATED
    demo  shell    0         -     [TIME]
    ");
    let config = lap(&home, ["config", "--json"]).json();
    assert_eq!(config["values"]["ca_cert"]["value"], cert.display().to_string());

    // The server's own first-start config trusts its certificate as well.
    lap(&server_home, ["agents", "show", "demo"]).success();

    // A client without the CA refuses the connection.
    let stranger = Home::new();
    let run =
        stranger
            .lap()
            .env("LAP_MASTER_KEY", server.master_key())
            .run(["--server", &server.url, "agents", "list"]);
    assert_snapshot!(run, @r"
    exit: 1
    --- stderr
    error: cannot reach lap serve at `https://127.0.0.1:[PORT]`
      caused by: error sending request for url (https://127.0.0.1:[PORT]/api/v1/managed_agents/agents?limit=200&offset=0)
      caused by: client error (Connect)
      caused by: invalid peer certificate: UnknownIssuer
    hint: the server's TLS certificate is not trusted here: set `ca_cert` in the config file to the PEM of its CA; `lap config` shows which file
    ");
}

#[test]
fn a_credential_without_hosts_is_bound_to_its_preset_or_refused() {
    let (home, _server) = home_with_demo();
    let _r = home.redactions();
    let refused = home
        .lap()
        .env("CUSTOM_KEY", "v")
        .run(["agents", "create", "x", "--credential", "CUSTOM_KEY"]);
    assert_snapshot!(refused, @r"
    exit: 2
    --- stderr
    error: credential `CUSTOM_KEY` is bound to no host; it would never be sent anywhere
    hint: name the hosts it may be sent to: `CUSTOM_KEY@api.example.com,…`
    ");
    let created = home
        .lap()
        .env("GITHUB_TOKEN", "ghp_preset_value")
        .run([
            "agents",
            "create",
            "gh",
            "--harness",
            "shell",
            "--credential",
            "GITHUB_TOKEN",
            "--json",
        ])
        .success();
    assert!(
        created.stderr.contains(
            "binding `GITHUB_TOKEN` to its preset hosts: github.com, api.github.com, *.githubusercontent.com"
        ),
        "{}",
        created.stderr
    );
    assert_eq!(
        created.json()["env_var_hosts"]["GITHUB_TOKEN"],
        serde_json::json!(["github.com", "api.github.com", "*.githubusercontent.com"])
    );
    assert!(!created.stdout.contains("ghp_preset_value"));
}

#[test]
fn inject_and_rule_flags_say_where_a_credential_may_go_and_replace_its_set() {
    let (home, _server) = home_with_demo();
    let _r = home.redactions();
    let created = home
        .lap()
        .env("GITHUB_TOKEN", "ghp_real_value")
        .env("SEARCH_KEY", "k")
        .run([
            "agents",
            "create",
            "gh",
            "--harness",
            "shell",
            "--credential",
            "GITHUB_TOKEN",
            "--credential",
            "SEARCH_KEY@search.example.com",
            "--inject",
            "SEARCH_KEY=query:key",
            "--inject",
            "SEARCH_KEY=header:X-Search-Key",
            "--rule",
            "GITHUB_TOKEN=get,post /repos/acme/**",
            "--rule",
            "GITHUB_TOKEN=GET /user",
        ]);
    assert_snapshot!(created, @r"
    exit: 0
    --- stdout
    name         gh
    id           [UUID]
    harness      shell
    command      -
    repo         -
    branch       main
    prompt       -
    model        -
    env          -
    credentials  GITHUB_TOKEN → github.com, api.github.com, *.githubusercontent.com; inject authorization; rules GET,POST /repos/acme/**, GET /user (fingerprint [FP])
                 SEARCH_KEY → search.example.com; inject query:key, header:x-search-key (fingerprint [FP])
    allow_out    -
    deny_out     -
    limits       memory default, pids default, cpus default
    volumes      -
    created      [TIME]
    --- stderr
    binding `GITHUB_TOKEN` to its preset hosts: github.com, api.github.com, *.githubusercontent.com
    created agent `gh`
    ");
    // On edit, no value is needed: the flags replace the named credential's set and nothing else.
    lap(
        &home,
        [
            "agents",
            "edit",
            "gh",
            "--inject",
            "GITHUB_TOKEN=body",
            "--rule",
            "GITHUB_TOKEN=",
        ],
    )
    .success();
    let shown = lap(&home, ["agents", "show", "gh", "--json"]).json();
    let credentials = &shown["credentials"];
    assert_eq!(credentials[0]["name"], "GITHUB_TOKEN");
    assert_eq!(credentials[0]["inject"], serde_json::json!(["body"]));
    assert_eq!(credentials[0]["rules"], serde_json::json!([]));
    assert_eq!(
        credentials[1]["inject"],
        serde_json::json!(["query:key", "header:x-search-key"])
    );
    assert!(!shown.to_string().contains("ghp_real_value"));

    // A bad point or rule is a usage error before anything is sent.
    assert_snapshot!(lap(&home, ["agents", "edit", "gh", "--inject", "GITHUB_TOKEN=header:Authorization"]), @r"
    exit: 2
    --- stderr
    error: invalid value 'GITHUB_TOKEN=header:Authorization' for '--inject <NAME=POINT>': `header:Authorization` names the `Authorization` header; say `authorization` (it covers Bearer, token and Basic)

    For more information, try '--help'.
    ");
    assert_snapshot!(lap(&home, ["agents", "edit", "gh", "--rule", "GITHUB_TOKEN=GET /repos/../admin"]), @r"
    exit: 2
    --- stderr
    error: invalid value 'GITHUB_TOKEN=GET /repos/../admin' for '--rule <NAME=RULE>': rule `GET /repos/../admin` has an empty, `.` or `..` segment in its path; write `METHODS /glob`, e.g. `GET,POST /repos/acme/**` or `/repos/**` (any method); `*` matches within one segment, `**` any number of segments

    For more information, try '--help'.
    ");
    // A name the agent has no credential for is the server's 400.
    let unknown = lap(&home, ["agents", "edit", "gh", "--inject", "NOPE=authorization"]);
    assert_eq!(unknown.code, 1, "{unknown}");
    assert!(unknown.stderr.contains("env_var_inject names `NOPE`"), "{unknown}");
}

#[test]
fn serve_says_at_start_how_many_stored_credentials_it_migrated() {
    let home = Home::new();
    let _r = home.redactions();
    let mut server = TestServer::start(&home);
    home.lap()
        .env("ANTHROPIC_API_KEY", "sk-ant-real")
        .env("API_TOKEN", "real-token")
        .run([
            "agents",
            "create",
            "old",
            "--credential",
            "ANTHROPIC_API_KEY",
            "--credential",
            "API_TOKEN@api.example.com",
        ])
        .success();
    let before = lap(&home, ["agents", "show", "old", "--json"]).json();
    server.kill9();
    // Back to the shape a build of before injection points left: no such columns, schema 8.
    {
        let db = rusqlite::Connection::open(home.server_data().join("lap.db")).unwrap();
        db.execute_batch(
            "ALTER TABLE credentials DROP COLUMN inject_json;
             ALTER TABLE credentials DROP COLUMN rules_json;
             ALTER TABLE agents DROP COLUMN volumes_json;
             ALTER TABLE ui_sessions DROP COLUMN key_id;
             ALTER TABLE ui_sessions DROP COLUMN own_key;
             DROP INDEX users_by_oidc_subject;
             ALTER TABLE users DROP COLUMN oidc_subject;
             PRAGMA user_version = 8;",
        )
        .unwrap();
    }
    server.restart();
    assert!(
        server
            .startup
            .contains("migrated 2 stored credentials to their presets' injection points"),
        "{}",
        server.startup
    );
    let after = lap(&home, ["agents", "show", "old", "--json"]).json();
    assert_eq!(
        after["credentials"][0]["inject"],
        serde_json::json!(["authorization", "header:x-api-key"])
    );
    assert_eq!(after["credentials"][1]["inject"], serde_json::json!(["authorization"]));
    assert_eq!(
        after["credentials"][0]["fingerprint"],
        before["credentials"][0]["fingerprint"]
    );
    server.kill9();
    server.restart();
    assert!(!server.startup.contains("migrated"), "{}", server.startup);
}

#[test]
fn egress_shows_an_empty_log_plainly_and_as_json_and_names_unknown_sessions() {
    let (home, _server) = home_with_demo();
    let _r = home.redactions();
    let id = lap(&home, ["sessions", "create", "demo"])
        .success()
        .stdout
        .trim()
        .to_owned();
    assert_snapshot!(lap(&home, ["sessions", "egress", &id]), @r"
    exit: 0
    --- stderr
    nothing went through the vault of session [UUID] yet
    ");
    assert_eq!(
        lap(&home, ["sessions", "egress", &id, "--json"]).success().json(),
        serde_json::json!([])
    );
    assert_snapshot!(lap(&home, ["sessions", "egress", "00000000-0000-4000-8000-000000000000"]), @r"
    exit: 1
    --- stderr
    error: session `[UUID]` not found
    hint: `lap sessions list` shows the sessions that exist
    ");
}

#[test]
fn metrics_are_open_to_a_loopback_peer() {
    let (home, server) = home_with_demo();
    lap(&home, ["sessions", "create", "demo"]).success();
    let (status, body) = server.http_get("/metrics", None);
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("lap_sessions{status=\"ready\"} 1"), "{body}");
    assert!(body.contains("# EOF"), "{body}");
}

#[test]
fn admin_stats_show_the_warm_pool_filled_for_the_harness_in_use_and_claims() {
    let (home, _server) = home_with_demo();
    support::wait_until("the pool filled", std::time::Duration::from_secs(10), || {
        lap(&home, ["admin", "stats", "--json"]).success().json()["warm_pool"]["ready"] == 2
    });
    let id = lap(&home, ["sessions", "create", "demo"]).success().out().to_owned();
    let stats = lap(&home, ["admin", "stats", "--json"]).success().json();
    let pool = &stats["warm_pool"];
    assert_eq!(
        (pool["configured_size"].as_u64(), pool["hits"].as_u64()),
        (Some(2), Some(1)),
        "{stats}"
    );
    assert_eq!(pool["recent_claims"][0]["session_id"], id.as_str(), "{stats}");
    assert_eq!(pool["groups"][0]["harness_id"], "shell", "{stats}");

    let text = lap(&home, ["admin", "stats"]).success();
    let out = text.out();
    assert!(out.starts_with("warm pool: "), "{out}");
    assert!(
        out.contains("1 hits, 0 misses; recent agents: 24h; max age: 30m"),
        "{out}"
    );
    assert!(out.contains("HARNESS  AGENT  TARGET  READY  WARMING  CLAIMED"), "{out}");
    assert!(out.contains("CLAIMED AT"), "{out}");
    assert!(out.ends_with("sessions: 1 ready"), "{out}");
}

/// A follower of a session's event stream (SSE, which never ends by itself) does not keep `lap serve`
/// from stopping: on SIGTERM the stream is ended properly (the chunked body's last chunk, not a cut
/// connection) and the server exits.
#[test]
fn sigterm_ends_an_open_event_stream_and_stops_lap_serve() {
    use std::io::{Read, Write};
    let home = Home::new();
    let mut server = TestServer::start(&home);
    lap(&home, ["agents", "create", "sdk", "--harness", "claude-agent-sdk"]).success();
    let id = lap(&home, ["sessions", "create", "sdk"])
        .success()
        .out()
        .trim()
        .to_owned();

    let mut stream = std::net::TcpStream::connect(("127.0.0.1", server.port)).expect("connect");
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(60)))
        .unwrap();
    write!(
        stream,
        "GET /api/v1/managed_agents/sessions/{id}/events HTTP/1.1\r\nHost: 127.0.0.1\r\n\
         Authorization: Bearer {}\r\nAccept: text/event-stream\r\n\r\n",
        server.master_key()
    )
    .unwrap();
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&seen).contains(r#"{"type":"ready"}"#) {
        let n = stream.read(&mut buf).expect("the stream's first frame");
        assert!(
            n > 0,
            "the stream closed before its first frame: {}",
            String::from_utf8_lossy(&seen)
        );
        seen.extend_from_slice(&buf[..n]);
    }

    let status = server
        .terminate(std::time::Duration::from_secs(60))
        .expect("lap serve stops on SIGTERM with a stream open");
    assert!(status.success(), "lap serve exited with {status}");
    stream.read_to_end(&mut seen).expect("the rest of the stream");
    let seen = String::from_utf8_lossy(&seen);
    assert!(
        seen.ends_with("\r\n0\r\n\r\n"),
        "the stream ends with its last chunk, got {seen:?}"
    );
}
