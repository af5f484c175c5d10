//! lap's message API, driven through the real `claude` CLI on the `claude-agent-sdk` harness, in
//! real local sandboxes, against the echoing fake Anthropic API of `tests/it/support/anthropic.rs`
//! (through the vault, as a new user's `claude` would reach `api.anthropic.com`): replies over
//! `lap send` (plain, `--json`, `--stream`) and LAP's own CLI route, history in the store that
//! survives a kill -9 of `lap serve` with the conversation resumed (`--resume` with the tool's own
//! id), the event invariants (sequence numbers without gaps, items started before their deltas,
//! exactly one `turn.completed` per `turn.started`, also when a turn is aborted), one turn at a
//! time, a fresh sandbox given the conversation so far, a message waking a paused or hibernated
//! session with the conversation going on, `lap chat` in a terminal, and a tool's retries shown by
//! `lap send` on a terminal only. And the 4xx answers, on the fake backend.
//!
//! Failures are injected into the real tools where that can be done from outside: a `claude`
//! killed mid-turn, a `codex app-server` whose saved thread is deleted. Stand-in tools remain only
//! for what cannot, each named at its test: an `opencode serve` that refuses a prompt
//! (`tests/fake_opencode.py`), a tool that never answers its handshake.

use std::time::Duration;

use serde_json::{Value, json};

use crate::support;
use crate::support::anthropic::{self, CLAUDE_WAIT, HANG, HANG_FIRST, MODEL, OVERLOADED, RUN_PWD, echo};
use crate::support::tmux::Tmux;
use crate::support::vendor::send_until;
use crate::support::{Home, TestServer, delete_local_sandboxes, fake_openai, lap, python_command, wait_within};

const PREFIX: &str = "/api/v1/managed_agents";
/// The stand-in `opencode serve` that refuses a prompt (`tests/fake_opencode.py`).
const FAKE_OPENCODE: &str = include_str!("../fake_opencode.py");
/// Longest wait for a stream frame.
const FRAME_WAIT: Duration = Duration::from_secs(60);

fn http() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::new()
}

/// The REST client of a test: calls, SSE streams read frame by frame.
struct Api {
    http: reqwest::Client,
    rt: tokio::runtime::Runtime,
}

impl Api {
    fn new() -> Self {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        Self { http: http(), rt }
    }

    /// A fresh client after a restart of `lap serve` (the pooled connection went with it).
    fn reconnect(&mut self) {
        self.http = http();
    }

    fn call(&self, server: &TestServer, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        call(&self.rt, &self.http, server, method, path, body)
    }

    /// Frames of an SSE response until `stop` says so (it sees each frame).
    fn frames(&self, response: reqwest::Response, stop: impl FnMut(&Value) -> bool) -> Vec<Value> {
        self.rt.block_on(read_frames(response, stop))
    }

    fn open_stream(&self, server: &TestServer, path: &str, body: Option<Value>) -> reqwest::Response {
        self.rt.block_on(open_stream(&self.http, server, path, body))
    }

    /// The session's events, from the first, until `turns` turns completed.
    fn all_events(&self, server: &TestServer, session: &str, turns: usize) -> Vec<Value> {
        let response = self.open_stream(server, &format!("{PREFIX}/sessions/{session}/events?after=0"), None);
        let mut completed = 0;
        let frames = self.frames(response, |frame| {
            if event_type(frame) == Some("turn.completed") {
                completed += 1;
            }
            completed == turns
        });
        assert_eq!(frames[0], json!({"type": "ready"}));
        frames[1..].iter().map(|f| f["event"].clone()).collect()
    }
}

async fn open_stream(
    http: &reqwest::Client,
    server: &TestServer,
    path: &str,
    body: Option<Value>,
) -> reqwest::Response {
    let url = format!("{}{path}", server.url);
    let request = match body {
        Some(body) => http.post(url).json(&body),
        None => http.get(url),
    };
    let response = request.bearer_auth(server.master_key()).send().await.unwrap();
    assert_eq!(response.status(), 200);
    response
}

async fn call_async(
    http: &reqwest::Client,
    server: &TestServer,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut request = http
        .request(method, format!("{}{path}", server.url))
        .bearer_auth(server.master_key());
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

fn call(
    rt: &tokio::runtime::Runtime,
    http: &reqwest::Client,
    server: &TestServer,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    rt.block_on(call_async(http, server, method, path, body))
}

async fn read_frames(mut response: reqwest::Response, mut stop: impl FnMut(&Value) -> bool) -> Vec<Value> {
    let mut frames = Vec::new();
    let mut buf = Vec::new();
    loop {
        while let Some(end) = buf.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = buf.drain(..=end).collect();
            let line = String::from_utf8(line).unwrap();
            if let Some(data) = line.trim_end().strip_prefix("data: ") {
                let frame: Value = serde_json::from_str(data).unwrap();
                let done = stop(&frame);
                frames.push(frame);
                if done {
                    return frames;
                }
            }
        }
        let chunk = tokio::time::timeout(FRAME_WAIT, response.chunk())
            .await
            .unwrap_or_else(|_| panic!("no frame within {FRAME_WAIT:?}; so far: {frames:#?}"))
            .unwrap();
        match chunk {
            Some(bytes) => buf.extend_from_slice(&bytes),
            None => return frames,
        }
    }
}

fn event_type(frame: &Value) -> Option<&str> {
    frame["event"]["type"].as_str()
}

/// The invariants of a turn-complete event log: sequence numbers without gaps, every delta's item
/// started before it, and one `turn.completed` per `turn.started`, in order.
fn assert_invariants(events: &[Value]) {
    let mut started_items = std::collections::HashSet::new();
    let mut open_turn: Option<String> = None;
    for pair in events.windows(2) {
        assert_eq!(
            pair[1]["seq"].as_u64().unwrap(),
            pair[0]["seq"].as_u64().unwrap() + 1,
            "a gap in the sequence: {pair:#?}"
        );
    }
    for event in events {
        let turn = event["turn_id"].as_str().map(str::to_owned);
        match event["type"].as_str().unwrap() {
            "turn.started" => {
                assert!(open_turn.is_none(), "a turn started inside another: {event}");
                open_turn = turn;
            }
            "turn.completed" => {
                assert_eq!(open_turn.take(), turn, "a closing event for another turn: {event}");
            }
            "item.started" => {
                started_items.insert(event["data"]["item"]["id"].as_str().unwrap().to_owned());
            }
            "item.delta" => assert!(
                started_items.contains(event["data"]["item_id"].as_str().unwrap()),
                "a delta before its item started: {event}"
            ),
            _ => {}
        }
    }
    assert!(open_turn.is_none(), "a turn never completed");
}

/// The id of the only session of `home`.
fn session_of(home: &Home) -> String {
    let sessions = lap(home, ["--json", "sessions", "list"]).success().json();
    sessions[0]["id"].as_str().unwrap().to_owned()
}

/// The real `claude` as agent `sdk`, on a server whose vault reaches the fake Anthropic API; `None`
/// when the test is skipped (no `claude` outside a strict run).
fn claude() -> Option<support::vendor::World> {
    let world = anthropic::start()?;
    anthropic::agent(&world, "sdk");
    Some(world)
}

/// The `claude` processes in session `id`'s sandbox (the harness starts it with `--input-format
/// stream-json`): each one's process id and command line.
fn claude_processes(home: &Home, id: &str) -> Vec<(String, String)> {
    let found = lap(
        home,
        [
            "exec",
            id,
            "--",
            "sh",
            "-c",
            "for d in /proc/[0-9]*; do \
               if tr '\\0' ' ' < $d/cmdline 2>/dev/null | grep -q -- '--input-forma[t] stream-json'; then \
                 echo \"CLAUDE ${d#/proc/} $(tr '\\0' ' ' < $d/cmdline)\"; \
               fi; \
             done",
        ],
    )
    .success();
    found
        .stdout
        .lines()
        .filter_map(|l| l.strip_prefix("CLAUDE ")?.split_once(' '))
        .map(|(pid, cmdline)| (pid.to_owned(), cmdline.to_owned()))
        .collect()
}

/// A local-backend server with agent `sdk` running a stand-in tool (failure injection); its
/// sandboxes are deleted on drop.
struct StandIn {
    home: Home,
    server: TestServer,
}

impl StandIn {
    fn new(harness: &str, model: &str, command: &str) -> Self {
        let home = Home::new();
        let server = TestServer::start_local(&home);
        lap(
            &home,
            [
                "agents",
                "create",
                "sdk",
                "--harness",
                harness,
                "--model",
                model,
                "--command",
                command,
            ],
        )
        .success();
        Self { home, server }
    }
}

impl Drop for StandIn {
    fn drop(&mut self) {
        self.server.kill9();
        delete_local_sandboxes(self.server.data_dir());
    }
}

#[test]
fn replies_come_back_plain_as_json_and_streamed_and_the_history_survives_a_kill_of_lap_serve() {
    let Some(mut world) = claude() else { return };
    let mut api = Api::new();
    let reply = lap(&world.home, ["send", "sdk", "hello there"]);
    assert_eq!(reply.code, 0, "{reply}\n{}", anthropic::context(&world));
    assert_eq!(reply.out(), "echo: hello there");
    assert!(reply.stderr.contains("started session"), "{reply}");
    let session = session_of(&world.home);

    // A tool call: the model asks for `pwd`, claude runs it in the sandbox, the model gets its
    // output and answers with it.
    let message = lap(&world.home, ["send", "--json", "sdk", &format!("{RUN_PWD} now")]);
    assert_eq!(message.code, 0, "{message}\n{}", anthropic::context(&world));
    let message = message.json();
    assert_eq!(message["info"]["role"], "assistant");
    assert_eq!(message["info"]["finish"], "stop");
    assert_eq!(message["info"]["harness"], "claude-agent-sdk");
    assert_eq!(message["info"]["modelID"], MODEL);
    assert!(message["info"]["tokens"]["output"].as_u64().unwrap() > 0, "{message:#}");
    let parts = message["parts"].as_array().unwrap();
    assert_eq!(parts.len(), 2, "{message:#}");
    assert_eq!(parts[0]["type"], "tool");
    assert_eq!(parts[0]["tool"], "Bash");
    assert_eq!(parts[0]["callID"], "toolu_fake_pwd");
    assert_eq!(parts[0]["state"]["status"], "completed");
    assert_eq!(parts[0]["state"]["input"]["command"], "pwd", "{message:#}");
    let cwd = parts[0]["state"]["output"].as_str().unwrap().trim().to_owned();
    assert!(cwd.starts_with('/'), "{message:#}");
    assert_eq!(
        parts[1],
        json!({"type": "text", "id": parts[1]["id"], "text": format!("ran: {cwd}")})
    );

    let streamed = lap(&world.home, ["send", "--stream", &session, "streamed words"]).success();
    assert_eq!(streamed.stdout, "echo: streamed words\n");

    let events = api.all_events(&world.server, &session, 3);
    assert_invariants(&events);
    assert_eq!(events[0]["type"], "turn.started");
    let started: Vec<&Value> = events.iter().filter(|e| e["type"] == "session.started").collect();
    assert_eq!(started.len(), 1, "{events:#?}");
    assert_eq!(started[0]["data"]["model"], MODEL);
    let native = started[0]["data"]["native_session_id"].as_str().unwrap().to_owned();
    let shown = lap(&world.home, ["--json", "sessions", "show", &session])
        .success()
        .json();
    assert_eq!(shown["harness_session_id"], native.as_str());

    // The same events as the opencode bus events LAP's clients read.
    let response = api.open_stream(
        &world.server,
        &format!("{PREFIX}/sessions/{session}/events?after=0&format=opencode"),
        None,
    );
    let mut idle = 0;
    let bus: Vec<Value> = api
        .frames(response, |frame| {
            idle += usize::from(frame["event"]["type"] == "session.idle");
            idle == 3
        })
        .into_iter()
        .skip(1)
        .map(|frame| frame["event"].clone())
        .collect();
    let first_part = bus.iter().find(|e| e["type"] == "message.part.updated").unwrap();
    assert_eq!(
        first_part["properties"]["part"]["text"], "",
        "the empty part comes first: {bus:#?}"
    );
    assert_eq!(first_part["properties"]["part"]["sessionID"], session.as_str());
    let text: String = bus
        .iter()
        .filter(|e| {
            e["type"] == "message.part.delta"
                && e["properties"]["messageID"] == first_part["properties"]["part"]["messageID"]
        })
        .map(|e| e["properties"]["delta"].as_str().unwrap())
        .collect();
    assert_eq!(text, "echo: hello there");
    let finished = bus.iter().find(|e| e["type"] == "message.updated").unwrap();
    assert_eq!(finished["properties"]["info"]["finish"], "stop");
    assert!(
        finished["properties"]["info"]["tokens"]["output"].as_u64().unwrap() > 0,
        "{finished:#}"
    );

    let (status, history) = api.call(
        &world.server,
        reqwest::Method::GET,
        &format!("{PREFIX}/sessions/{session}/messages"),
        None,
    );
    assert_eq!(status, 200);
    let roles: Vec<&str> = history
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["info"]["role"].as_str().unwrap())
        .collect();
    assert_eq!(roles, ["user", "assistant", "user", "assistant", "user", "assistant"]);
    assert_eq!(history[0]["parts"][0]["text"], "hello there");
    assert_eq!(history[1]["parts"][0]["text"], "echo: hello there");

    // kill -9: the tool process goes with lap serve's connection; the sandbox, the history and the
    // event numbering stay, and the next message resumes the tool's conversation.
    world.server.restart();
    api.reconnect();
    let (_, after) = api.call(
        &world.server,
        reqwest::Method::GET,
        &format!("{PREFIX}/sessions/{session}/messages"),
        None,
    );
    assert_eq!(after, history);
    let again = lap(&world.home, ["send", "sdk", "still there?"]);
    assert_eq!(again.code, 0, "{again}\n{}", anthropic::context(&world));
    assert_eq!(again.out(), "echo: still there?");
    let resumed = anthropic::model_requests(&world)
        .into_iter()
        .rev()
        .find(|r| anthropic::last_user_text(r) == "still there?")
        .unwrap_or_else(|| panic!("{}", anthropic::context(&world)));
    assert!(
        resumed.to_string().contains("echo: streamed words"),
        "the resumed conversation reached the model: {resumed:#}"
    );
    let argv: Vec<String> = claude_processes(&world.home, &session)
        .into_iter()
        .map(|(_, cmdline)| cmdline)
        .collect();
    assert_eq!(argv.len(), 1, "{argv:#?}");
    assert!(argv[0].contains(&format!("--resume {native}")), "{argv:#?}");
    assert!(argv[0].contains(&format!("--model {MODEL}")), "{argv:#?}");
    let events = api.all_events(&world.server, &session, 4);
    assert_invariants(&events);
    // The second tool process named the same conversation: it was resumed, not started anew.
    let started: Vec<&Value> = events.iter().filter(|e| e["type"] == "session.started").collect();
    assert!(
        started
            .iter()
            .all(|e| e["data"]["native_session_id"] == native.as_str()),
        "{started:#?}"
    );
}

/// A message wakes a session by itself: a paused one goes on in the same `claude` process (its
/// memory kept), a hibernated one in a new sandbox on the same workspace, where the tool resumes its
/// conversation from its own transcripts. Each reply's model request carries the earlier turns.
#[test]
fn a_message_wakes_a_paused_and_a_hibernated_session_and_the_conversation_goes_on() {
    let Some(world) = claude() else { return };
    let home = &world.home;
    let first = lap(home, ["send", "sdk", "first words"]);
    assert_eq!(first.code, 0, "{first}\n{}", anthropic::context(&world));
    let session = session_of(home);
    let status = || lap(home, ["--json", "sessions", "show", &session]).success().json()["status"].clone();
    let pids = || -> Vec<String> {
        claude_processes(home, &session)
            .into_iter()
            .map(|(pid, _)| pid)
            .collect()
    };
    let asked = |said: &str| {
        anthropic::model_requests(&world)
            .into_iter()
            .rev()
            .find(|r| anthropic::last_user_text(r) == said)
            .map(|r| anthropic::conversation(&r).join("\n"))
            .unwrap_or_else(|| panic!("no model request for {said:?}\n{}", anthropic::context(&world)))
    };
    let before = pids();
    assert_eq!(before.len(), 1, "{before:?}");

    lap(home, ["sessions", "pause", &session]).success();
    assert_eq!(status(), "paused");
    let paused = lap(home, ["send", "sdk", "after a pause"]);
    assert_eq!(paused.code, 0, "{paused}\n{}", anthropic::context(&world));
    assert_eq!(paused.out(), "echo: after a pause");
    assert_eq!(status(), "ready");
    assert_eq!(pids(), before, "a pause keeps the tool's process");
    assert!(asked("after a pause").contains("echo: first words"));

    lap(home, ["sessions", "hibernate", &session]).success();
    assert_eq!(status(), "hibernated");
    let woken = lap(home, ["send", "sdk", "after hibernation"]);
    assert_eq!(woken.code, 0, "{woken}\n{}", anthropic::context(&world));
    assert_eq!(woken.out(), "echo: after hibernation");
    assert_eq!(status(), "ready");
    let conversation = asked("after hibernation");
    assert!(
        conversation.contains("echo: first words") && conversation.contains("echo: after a pause"),
        "the resumed conversation reached the model: {conversation}"
    );
}

/// A tool that dies mid-turn — the real `claude`, killed (SIGKILL) in its sandbox while the model
/// is answering — fails that turn once, with its exit, and the next message starts it again,
/// resuming the conversation.
#[test]
fn a_tool_that_dies_mid_turn_fails_that_turn_once_and_the_next_message_starts_it_again() {
    let Some(world) = claude() else { return };
    let api = Api::new();
    let home = &world.home;
    let warm = lap(home, ["send", "sdk", "warm up"]);
    assert_eq!(warm.code, 0, "{warm}\n{}", anthropic::context(&world));
    let session = session_of(home);
    let (child, reader) = send_until(home, "sdk", &format!("{HANG} and die"), HANG_FIRST, CLAUDE_WAIT);
    assert!(anthropic::signal_claude(home, &session, "KILL") >= 1);
    let out = wait_within(child, CLAUDE_WAIT, "the `lap send` whose tool died");
    let printed = reader.join().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{printed}\n{stderr}");
    assert_eq!(printed, format!("{HANG_FIRST}\n"), "{stderr}");
    assert!(stderr.contains("the agent exited with code"), "{stderr}");

    let again = lap(home, ["send", "sdk", "again"]);
    assert_eq!(again.code, 0, "{again}\n{}", anthropic::context(&world));
    assert_eq!(again.out(), "echo: again");
    let resumed = anthropic::model_requests(&world)
        .into_iter()
        .rev()
        .find(|r| anthropic::last_user_text(r) == "again")
        .unwrap_or_else(|| panic!("{}", anthropic::context(&world)));
    assert!(resumed.to_string().contains("echo: warm up"), "{resumed:#}");
    let events = api.all_events(&world.server, &session, 3);
    assert_invariants(&events);
    let statuses: Vec<&str> = events
        .iter()
        .filter(|e| e["type"] == "turn.completed")
        .map(|e| e["data"]["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["completed", "failed", "completed"]);
}

#[test]
fn an_abort_closes_the_turn_once_turns_run_one_at_a_time_and_a_fresh_sandbox_gets_the_conversation() {
    let Some(world) = claude() else { return };
    let api = Api::new();
    let home = &world.home;
    let warm = lap(home, ["send", "sdk", "warm up"]);
    assert_eq!(warm.code, 0, "{warm}\n{}", anthropic::context(&world));
    let session = session_of(home);

    // A turn the model stalls in: a second message is refused while it runs; abort interrupts it.
    let response = api.open_stream(
        &world.server,
        &format!("{PREFIX}/sessions/{session}/message_stream"),
        Some(json!({"text": format!("{HANG} please")})),
    );
    let server = &world.server;
    let http = &api.http;
    let frames = api.rt.block_on(async {
        let reading = tokio::spawn(read_frames(response, |frame| frame["type"] == "done"));
        // Wait for the tool to be working on it (its first delta), through the event log.
        let events = open_stream(
            http,
            server,
            &format!("{PREFIX}/sessions/{session}/events?after=0"),
            None,
        )
        .await;
        read_frames(events, |frame| {
            event_type(frame) == Some("item.delta") && frame["event"]["data"]["delta"] == HANG_FIRST
        })
        .await;
        let path = |route: &str| format!("{PREFIX}/sessions/{session}/{route}");
        let (busy, body) = call_async(
            http,
            server,
            reqwest::Method::POST,
            &path("message"),
            Some(json!({"text": "x"})),
        )
        .await;
        assert_eq!(busy, 409, "{body}");
        assert!(body["error"].as_str().unwrap().contains("already running"), "{body}");
        let (status, body) = call_async(http, server, reqwest::Method::POST, &path("abort"), None).await;
        assert_eq!((status, body), (200, json!({"ok": true, "aborted": true})));
        tokio::time::timeout(CLAUDE_WAIT, reading)
            .await
            .expect("the aborted turn did not end")
            .unwrap()
    });
    assert_eq!(frames[0], json!({"type": "ready"}));
    let closing: Vec<&Value> = frames
        .iter()
        .filter(|f| event_type(f) == Some("turn.completed"))
        .collect();
    assert_eq!(closing.len(), 1, "{frames:#?}");
    assert_eq!(closing[0]["event"]["data"]["status"], "interrupted");
    let done = frames.last().unwrap();
    assert_eq!(done["type"], "done");
    assert_eq!(done["message"]["info"]["finish"], "interrupted");
    assert_eq!(done["message"]["parts"][0]["text"], HANG_FIRST);
    let (status, body) = api.call(
        &world.server,
        reqwest::Method::POST,
        &format!("{PREFIX}/sessions/{session}/abort"),
        None,
    );
    assert_eq!((status, body), (200, json!({"ok": true, "aborted": false})));

    let after = lap(home, ["send", "sdk", "after"]);
    assert_eq!(after.code, 0, "{after}\n{}", anthropic::context(&world));
    assert_eq!(after.out(), "echo: after");
    let events = api.all_events(&world.server, &session, 3);
    assert_invariants(&events);
    let statuses: Vec<&str> = events
        .iter()
        .filter(|e| e["type"] == "turn.completed")
        .map(|e| e["data"]["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["completed", "interrupted", "completed"]);

    // A restart gives the session a fresh sandbox on the same workspace, where the tool's
    // transcripts are: it resumes its own conversation, the earlier turns in its request.
    let restart = || {
        let (status, restarted) = api.call(
            &world.server,
            reqwest::Method::POST,
            &format!("{PREFIX}/sessions/{session}/restart"),
            None,
        );
        assert_eq!((status, &restarted["status"]), (200, &json!("ready")), "{restarted}");
    };
    restart();
    let reply = lap(home, ["send", "sdk", "remember?"]);
    assert_eq!(reply.code, 0, "{reply}\n{}", anthropic::context(&world));
    assert_eq!(reply.out(), "echo: remember?");
    let asked = anthropic::model_requests(&world);
    let said = anthropic::conversation(asked.last().unwrap());
    for earlier in ["warm up", "echo: after"] {
        assert!(said.iter().any(|t| t == earlier), "{said:#?}");
    }

    // Without its transcripts the tool cannot resume: its new conversation's first turn carries
    // the conversation so far (LAP's replay).
    let transcripts = "/work/home/.claude/projects";
    lap(home, ["exec", &session, "--", "rm", "-rf", transcripts]).success();
    restart();
    let reply = lap(home, ["send", "sdk", "again?"]);
    assert_eq!(reply.code, 0, "{reply}\n{}", anthropic::context(&world));
    let out = reply.out();
    assert!(out.starts_with("echo: <previous_session_history><msgs>["), "{reply}");
    assert!(out.contains(r#"{"role":"user","text":"warm up"}"#), "{reply}");
    assert!(
        out.contains(r#"{"role":"assistant","text":"echo: remember?"}"#),
        "{reply}"
    );
    assert!(
        !out.contains(r#""text":"again?""#),
        "the turn itself is not history: {reply}"
    );
    assert!(out.ends_with("</msgs></previous_session_history>\n\nagain?"), "{reply}");
    let (_, history) = api.call(
        &world.server,
        reqwest::Method::GET,
        &format!("{PREFIX}/sessions/{session}/messages"),
        None,
    );
    let history = history.as_array().unwrap();
    assert_eq!(history[history.len() - 2]["parts"][0]["text"], "again?");
}

#[test]
fn bad_input_gets_a_4xx_with_a_clear_error_and_a_tui_session_answers_as_lap_does() {
    let home = Home::new();
    let server = TestServer::start(&home);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let http = http();
    let post = |path: &str, body: Value| call(&rt, &http, &server, reqwest::Method::POST, path, Some(body));
    let get = |path: &str| call(&rt, &http, &server, reqwest::Method::GET, path, None);

    lap(&home, ["agents", "create", "term", "--harness", "shell"]).success();
    lap(&home, ["agents", "create", "oc", "--harness", "opencode"]).success();
    let tui = lap(&home, ["--json", "sessions", "create", "term"]).success().json();
    let tui = tui["id"].as_str().unwrap().to_owned();

    let unknown = uuid::Uuid::new_v4();
    let (status, body) = post(&format!("{PREFIX}/sessions/{unknown}/message"), json!({"text": "hi"}));
    assert_eq!(status, 404, "{body}");
    assert!(body["error"].as_str().unwrap().contains("not found"), "{body}");
    assert!(body["hint"].is_string());
    let (status, _) = post(&format!("{PREFIX}/sessions/not-a-uuid/message"), json!({"text": "hi"}));
    assert_eq!(status, 404);
    let (status, _) = get(&format!("{PREFIX}/sessions/{unknown}/messages"));
    assert_eq!(status, 404);

    for empty in [json!({}), json!({"text": "  "}), json!({"parts": []})] {
        let (status, body) = post(&format!("{PREFIX}/sessions/{tui}/message"), empty);
        assert_eq!(status, 400, "{body}");
        assert!(body["error"].as_str().unwrap().contains("empty"), "{body}");
    }
    let (status, body) = post(
        &format!("{PREFIX}/sessions/{tui}/message"),
        json!({"parts": [{"type": "image"}]}),
    );
    assert_eq!(status, 400);
    assert!(body["error"].as_str().unwrap().contains("image"), "{body}");

    // A TUI session answers the message routes as LAP's TUI harnesses do.
    let (status, body) = post(&format!("{PREFIX}/sessions/{tui}/message"), json!({"text": "hi"}));
    assert_eq!(
        (status, body),
        (200, json!({"text": "this is a TUI harness — connect to /tty"}))
    );
    let (status, body) = get(&format!("{PREFIX}/sessions/{tui}/messages"));
    assert_eq!((status, body), (200, json!([])));
    let (status, body) = post(&format!("{PREFIX}/sessions/{tui}/abort"), json!({}));
    assert_eq!((status, body), (200, json!({"ok": true, "aborted": false})));
    let sent = lap(&home, ["send", &tui, "hi"]);
    assert_eq!(sent.code, 1, "{sent}");
    assert!(sent.stderr.contains("connect to /tty"), "{sent}");

    // A session that is no longer ready.
    let oc = lap(&home, ["--json", "sessions", "create", "oc"]).success().json();
    let oc = oc["id"].as_str().unwrap().to_owned();
    lap(&home, ["sessions", "delete", &oc]).success();
    let (status, body) = post(&format!("{PREFIX}/sessions/{oc}/message"), json!({"text": "hi"}));
    assert_eq!(status, 409, "{body}");
    assert!(body["error"].as_str().unwrap().contains("dead, not ready"), "{body}");
    let (status, _) = post(&format!("{PREFIX}/sessions/{oc}/message_stream"), json!({"text": "hi"}));
    assert_eq!(status, 409);
}

#[test]
fn doctor_lists_the_harness_tools_and_a_session_whose_tool_is_missing_is_refused_with_its_install_hint() {
    let home = Home::new();
    let doctor = lap(&home, ["--json", "doctor"]).success().json();
    let tools = doctor.as_array().unwrap();
    let shell = tools.iter().find(|t| t["harness"] == "shell").unwrap();
    assert_eq!(shell["program"], "bash");
    assert!(shell["path"].as_str().unwrap().ends_with("/bash"), "{shell}");
    let hermes = tools.iter().find(|t| t["harness"] == "hermes").unwrap();
    assert!(
        hermes["install_hint"]
            .as_str()
            .unwrap()
            .starts_with("pip install hermes-agent"),
        "{hermes}"
    );
    let table = lap(&home, ["doctor"]).success();
    assert!(table.stdout.contains("HARNESS"), "{table}");

    // Where the test set-up installed hermes (scripts/test.sh does), the refusal cannot be shown.
    if !hermes["path"].is_null() {
        eprintln!("skipped the refusal: hermes is installed here");
        return;
    }
    let server = TestServer::start_local(&home);
    lap(&home, ["agents", "create", "herm", "--harness", "hermes"]).success();
    let refused = lap(&home, ["sessions", "create", "herm"]);
    assert_eq!(refused.code, 1, "{refused}");
    assert!(
        refused.stderr.contains("runs `hermes`, which is not installed"),
        "{refused}"
    );
    assert!(
        refused
            .stderr
            .contains("hint: install it with `pip install hermes-agent`"),
        "{refused}"
    );
    // With its own command, the agent is trusted to know what it runs.
    lap(&home, ["agents", "edit", "herm", "--command", "bash"]).success();
    lap(&home, ["sessions", "create", "herm"]).success();
    drop(server);
    delete_local_sandboxes(&home.server_data());
}

/// The real `codex app-server` (against the fake OpenAI API of tests/it/support/fake_openai.rs) whose
/// saved thread is gone — the failure injected by deleting its rollouts (`~/.codex/sessions`) in
/// the sandbox: after a kill -9 of `lap serve`, the new app-server cannot resume the session's
/// thread, and a new thread takes the turn instead of the turn failing. The resume that works is
/// proved in tests/it/codex_e2e.rs.
#[test]
fn codex_app_server_replaces_a_thread_it_cannot_resume() {
    const KEY: &str = "sk-proj-TheRealOpenAiKeyThatOnlyTheVaultHolds-resume-0123456789";
    let Some(mut world) = fake_openai::World::start("codex", "npm install -g @openai/codex", KEY) else {
        return;
    };
    world
        .home
        .lap()
        .env("OPENAI_API_KEY", KEY)
        .run(fake_openai::with_tool_path(&[
            "agents",
            "create",
            "cx",
            "--harness",
            "codex-app-server",
            "--model",
            "gpt-fake-1",
            "--credential",
            "OPENAI_API_KEY",
            "--allow-out",
            "api.openai.com",
        ]))
        .success();
    let mut api = Api::new();
    let reply = fake_openai::REPLY.concat();
    let first = world.lap(["send", "cx", "hello"]);
    assert_eq!(first.code, 0, "{first}\n{}", world.context());
    assert_eq!(first.out(), reply);
    let session = world.session();
    let rollouts = world.lap(["exec", &session, "--", "sh", "-c", "ls -R \"$HOME/.codex/sessions\""]);
    assert!(rollouts.stdout.contains(".jsonl"), "no rollout to delete: {rollouts}");
    world
        .lap(["exec", &session, "--", "sh", "-c", "rm -r \"$HOME/.codex/sessions\""])
        .success();
    world.server.restart();
    api.reconnect();
    let again = world.lap(["send", "cx", "still there?"]);
    assert_eq!(again.code, 0, "{again}\n{}", world.context());
    assert_eq!(again.out(), reply);
    let events = api.all_events(&world.server, &session, 2);
    assert_invariants(&events);
    let threads: Vec<&str> = events
        .iter()
        .filter(|e| e["type"] == "session.started")
        .map(|e| e["data"]["native_session_id"].as_str().unwrap())
        .collect();
    assert_eq!(threads.len(), 2, "{events:#?}");
    assert_ne!(threads[0], threads[1]);
    let shown = world.lap(["--json", "sessions", "show", &session]).success().json();
    assert_eq!(shown["harness_session_id"], threads[1]);
}

#[test]
fn laps_own_cli_chat_route_works_from_the_first_message() {
    let Some(world) = claude() else { return };
    let api = Api::new();
    let session = lap(&world.home, ["--json", "sessions", "create", "sdk"])
        .success()
        .json();
    let id = session["id"].as_str().unwrap().to_owned();
    // LAP's CLI reads harness_session_id before its first send and refuses to chat without one.
    let hsid = session["harness_session_id"].as_str().unwrap().to_owned();
    assert_eq!(hsid, id);
    // Then it posts parts, with no model, to the opencode passthrough, and prints the text parts and
    // `info.tokens.output` and `info.cost`.
    let path = format!("{PREFIX}/sessions/{id}/opencode/session/{hsid}/message");
    let (status, reply) = api.call(
        &world.server,
        reqwest::Method::POST,
        &path,
        Some(json!({"parts": [{"type": "text", "text": "from LAP's CLI"}]})),
    );
    assert_eq!(status, 200, "{reply}\n{}", anthropic::context(&world));
    assert_eq!(reply["parts"][0]["type"], "text");
    assert_eq!(reply["parts"][0]["text"], "echo: from LAP's CLI");
    assert!(reply["info"]["tokens"]["output"].as_u64().unwrap() > 0, "{reply:#}");
    assert!(reply["info"]["cost"].as_f64().is_some(), "{reply:#}");
    let (status, history) = api.call(&world.server, reqwest::Method::GET, &path, None);
    assert_eq!(status, 200);
    assert_eq!(history.as_array().unwrap().len(), 2);
    // Once the tool named its conversation, that is the session's harness_session_id.
    let shown = lap(&world.home, ["--json", "sessions", "show", &id]).success().json();
    assert_ne!(shown["harness_session_id"], id.as_str());
}

/// Failure injection with a stand-in `opencode serve` (tests/fake_opencode.py) that refuses a prompt
/// (400 to `prompt_async`, which the real one does not do on cue): the turn fails with its answer,
/// and the next prompt is answered. Replies, tool calls, streaming, abort and resume are proved with
/// the real opencode (tests/it/opencode_e2e.rs), and its bus below.
#[test]
fn an_opencode_prompt_refusal_fails_the_turn_with_its_answer() {
    let world = StandIn::new("opencode", "anthropic/claude-fake", &python_command(FAKE_OPENCODE));
    let api = Api::new();
    let home = &world.home;
    assert_eq!(
        lap(home, ["send", "sdk", "hello"]).success().out(),
        "opencode says: hello"
    );
    let session = session_of(home);
    let refused = lap(home, ["send", "sdk", "fail"]);
    assert_eq!(refused.code, 1, "{refused}");
    assert!(refused.stderr.contains("this prompt is refused"), "{refused}");
    assert_eq!(
        lap(home, ["send", "sdk", "after"]).success().out(),
        "opencode says: after"
    );

    let events = api.all_events(&world.server, &session, 3);
    assert_invariants(&events);
    let statuses: Vec<&str> = events
        .iter()
        .filter(|e| e["type"] == "turn.completed")
        .map(|e| e["data"]["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["completed", "failed", "completed"]);
}

/// The real `opencode serve` carries every session's events on one bus: another session on the same
/// server (made from inside the sandbox, as an agent could) answering while this session's turn runs
/// leaves no trace in this session's turn.
#[test]
fn another_opencode_sessions_events_on_the_bus_stay_out_of_the_running_turn() {
    const KEY: &str = "sk-proj-TheRealOpenAiKeyThatOnlyTheVaultHolds-bus-0123456789";
    /// How long the real opencode may take to start or answer.
    const OPENCODE_WAIT: Duration = Duration::from_secs(90);
    let Some(world) = fake_openai::World::start("opencode", "npm install -g opencode-ai", KEY) else {
        return;
    };
    world
        .home
        .lap()
        .env("OPENAI_API_KEY", KEY)
        .run(fake_openai::with_tool_path(&[
            "agents",
            "create",
            "oc",
            "--credential",
            "OPENAI_API_KEY",
            "--allow-out",
            "api.openai.com",
        ]))
        .success();
    let api = Api::new();
    let first = world.lap(["send", "oc", "hello"]);
    assert_eq!(first.code, 0, "{first}\n{}", world.context());
    let session = world.session();

    let (child, reader) = send_until(
        &world.home,
        "oc",
        &format!("{} please", fake_openai::SLOW),
        fake_openai::SLOW_FIRST,
        OPENCODE_WAIT,
    );
    let other = world.lap([
        "exec",
        &session,
        "--",
        "sh",
        "-c",
        "base=http://127.0.0.1:4096; \
         id=$(curl -fsS --max-time 60 -X POST -H 'content-type: application/json' --data '{}' $base/session \
              | sed -n 's/^{\"id\":\"\\(ses_[^\"]*\\)\".*/\\1/p'); \
         echo OTHER=$id; \
         curl -fsS --max-time 80 -X POST -H 'content-type: application/json' \
              --data '{\"parts\":[{\"type\":\"text\",\"text\":\"OTHER-SESSION words\"}]}' \
              $base/session/$id/message >/dev/null && echo REPLIED",
    ]);
    let other_id = other
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("OTHER=ses_"))
        .unwrap_or_else(|| panic!("no other session: {other}\n{}", world.context()))
        .to_owned();
    assert!(other.stdout.contains("REPLIED"), "{other}\n{}", world.context());
    assert!(
        world
            .api
            .turns()
            .iter()
            .any(|t| t.texts.iter().any(|x| x.contains("OTHER-SESSION words"))),
        "the other session's turn never reached the model\n{}",
        world.context()
    );
    world.lap(["sessions", "abort", &session]).success();
    let out = wait_within(child, OPENCODE_WAIT, "the aborted `lap send`");
    let printed = reader.join().unwrap();
    assert_eq!(out.status.code(), Some(1), "{printed}");

    let events = api.all_events(&world.server, &session, 2);
    assert_invariants(&events);
    let turn = events
        .iter()
        .rev()
        .find(|e| e["type"] == "turn.started")
        .and_then(|e| e["turn_id"].as_str())
        .unwrap()
        .to_owned();
    let held: Vec<&Value> = events.iter().filter(|e| e["turn_id"] == turn.as_str()).collect();
    let held_text = serde_json::to_string(&held).unwrap();
    assert!(!held_text.contains(&other_id), "{held:#?}");
    assert!(
        !held_text.contains(fake_openai::REPLY[1]),
        "the other session's reply in this session's turn: {held:#?}"
    );
    assert!(held_text.contains(fake_openai::SLOW_FIRST), "{held:#?}");
}

#[test]
fn a_person_chats_in_a_terminal_recalls_a_line_stops_a_reply_sees_retries_and_leaves() {
    let Some(world) = claude() else { return };
    let api = Api::new();
    let tmux = Tmux::shell("chat", (120, 40), "");
    let lap = format!("env -i {} TERM=screen {}", world.home.env_words(), support::LAP);
    tmux.keys(&format!("{lap} chat sdk; echo CHAT-EXIT=$?\n"));
    tmux.until_within(CLAUDE_WAIT, "the chat prompt", |s| {
        s.contains("Ctrl-D to end") && s.lines().any(|l| l.trim_end() == ">")
    });
    tmux.keys("hello there\n");
    // The reply, and the prompt back after it (a key typed before that is the terminal's, not
    // the line editor's).
    tmux.until_within(CLAUDE_WAIT, "the reply and the prompt", |s| {
        s.lines().any(|l| l == "echo: hello there")
            && s.lines().rev().find(|l| !l.trim().is_empty()).map(str::trim_end) == Some(">")
    });
    // The up arrow brings the line back.
    tmux.key("Up");
    tmux.until_within(FRAME_WAIT, "the recalled line", |s| {
        s.lines().filter(|l| *l == "> hello there").count() == 2
    });
    tmux.key("Enter");
    tmux.until_within(CLAUDE_WAIT, "the second reply", |s| {
        s.lines().filter(|l| *l == "echo: hello there").count() == 2
    });
    // Ctrl-C stops a reply that is still coming (the model stalls after a word); the chat goes on.
    tmux.keys(&format!("{HANG} now\n"));
    tmux.until_within(CLAUDE_WAIT, "the stalled reply's start", |s| s.contains(HANG_FIRST));
    tmux.key("C-c");
    tmux.until_within(FRAME_WAIT, "the abort", |s| s.contains("[aborted]"));
    tmux.keys("after\n");
    tmux.until_within(CLAUDE_WAIT, "the reply after the abort, and the prompt", |s| {
        s.lines().any(|l| l == "echo: after")
            && s.lines().rev().find(|l| !l.trim().is_empty()).map(str::trim_end) == Some(">")
    });
    // A tool's retries show as lines of their own, then the reply.
    tmux.keys(&format!("{OVERLOADED} in the chat\n"));
    let reply = echo(&format!("{OVERLOADED} in the chat"));
    let screen = tmux.until_within(CLAUDE_WAIT, "the reply after the retries, and the prompt", |s| {
        s.lines().any(|l| l == reply) && s.lines().rev().find(|l| !l.trim().is_empty()).map(str::trim_end) == Some(">")
    });
    assert!(
        screen.contains("[retrying the model request (attempt 1, HTTP 529)"),
        "{screen}"
    );
    tmux.key("C-d");
    tmux.until_within(FRAME_WAIT, "the end of the chat", |s| {
        s.contains("[chat ended]") && s.contains("CHAT-EXIT=0")
    });
    let history = std::fs::read_to_string(world.home.xdg_data().join("lap/chat_history")).unwrap();
    assert!(
        history.contains("hello there") && history.contains("after"),
        "{history}"
    );
    let session = session_of(&world.home);
    let (_, messages) = api.call(
        &world.server,
        reqwest::Method::GET,
        &format!("{PREFIX}/sessions/{session}/messages"),
        None,
    );
    let finishes: Vec<&str> = messages
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["info"]["finish"].as_str())
        .collect();
    assert_eq!(finishes, ["stop", "stop", "interrupted", "stop", "stop"]);
}

/// A tool that retries a failed model request (the real `claude`, the model overloaded: 529 twice)
/// is shown retrying by `lap send` on a terminal, with `--stream` or without — a line per retry on
/// stderr, so the wait does not look like a hang — and `lap send` stays silent about it when stderr
/// is piped or with `--quiet`.
#[test]
fn a_tools_retries_show_on_a_terminal_and_not_when_piped_or_quiet() {
    let Some(world) = claude() else { return };
    let api = Api::new();
    // Piped: the reply on stdout, and no word of the retries on stderr.
    let piped = lap(&world.home, ["send", "sdk", &format!("{OVERLOADED} piped")]);
    assert_eq!(piped.code, 0, "{piped}\n{}", anthropic::context(&world));
    assert_eq!(piped.out(), echo(&format!("{OVERLOADED} piped")));
    let session = session_of(&world.home);
    // The turn did retry (so the silence is not for want of retries).
    let events = api.all_events(&world.server, &session, 1);
    let retries: Vec<&Value> = events.iter().filter(|e| e["type"] == "turn.status").collect();
    assert_eq!(retries.len(), anthropic::OVERLOADS, "{events:#?}");
    assert_eq!(retries[0]["data"]["status"], "retrying");
    assert_eq!(retries[0]["data"]["http_status"], 529);
    assert!(!piped.stderr.contains("retrying"), "{piped}");
    assert!(!piped.stderr.contains('\x1b'), "terminal codes on a pipe: {piped}");

    // On a terminal: a line per retry, then the reply.
    let tmux = Tmux::shell("send-retries", (120, 30), "");
    let lap = format!("env -i {} TERM=screen {}", world.home.env_words(), support::LAP);
    tmux.keys(&format!(
        "{lap} send sdk '{OVERLOADED} on a terminal'; echo SEND-EXIT=$?\n"
    ));
    let exited = |s: &str| s.lines().any(|l| l.starts_with("SEND-EXIT="));
    let screen = tmux.until_within(CLAUDE_WAIT, "the reply after the retries", exited);
    assert!(screen.contains("SEND-EXIT=0"), "{screen}");
    // The spinner took down only its own line: the command line above it is still there (a long
    // one wraps across the screen's lines: read it joined).
    assert!(screen.replace('\n', "").contains("; echo SEND-EXIT=$?"), "{screen}");
    let reply = echo(&format!("{OVERLOADED} on a terminal"));
    assert!(screen.lines().any(|l| l == reply), "{screen}");
    let retried = |screen: &str| {
        for attempt in 1..=anthropic::OVERLOADS {
            assert!(
                screen.contains(&format!("[retrying the model request (attempt {attempt}, HTTP 529)")),
                "no line for retry {attempt}:\n{screen}"
            );
        }
    };
    retried(&screen);

    // Streamed, the same lines, and the reply on a line of its own.
    tmux.keys("clear\n");
    tmux.until("a clear screen", |s| !exited(s));
    tmux.keys(&format!(
        "{lap} send --stream sdk '{OVERLOADED} streamed'; echo SEND-EXIT=$?\n"
    ));
    let screen = tmux.until_within(CLAUDE_WAIT, "the streamed reply after the retries", exited);
    assert!(screen.contains("SEND-EXIT=0"), "{screen}");
    let reply = echo(&format!("{OVERLOADED} streamed"));
    assert!(screen.lines().any(|l| l == reply), "{screen}");
    retried(&screen);

    // With --quiet, on a terminal too: the reply only.
    tmux.keys("clear\n");
    tmux.until("a clear screen", |s| !exited(s));
    tmux.keys(&format!(
        "{lap} --quiet send sdk '{OVERLOADED} quietly'; echo SEND-EXIT=$?\n"
    ));
    let screen = tmux.until_within(CLAUDE_WAIT, "the quiet reply", exited);
    assert!(screen.contains("SEND-EXIT=0"), "{screen}");
    assert!(screen.contains(&echo(&format!("{OVERLOADED} quietly"))), "{screen}");
    assert!(!screen.contains("retrying"), "{screen}");
}

/// A tool that starts and then never answers (here a stand-in `codex app-server` that reads its
/// stdin and says nothing) is stopped at the start deadline: the turn fails with an error naming
/// the tool and what it waited for, with a hint, and the session takes the next message.
#[test]
fn a_tool_that_never_answers_its_handshake_is_stopped_at_its_deadline_with_a_hint() {
    let home = Home::new();
    let server = TestServer::start_local_env(&home, vec![("LAP_TOOL_START_TIMEOUT", "3")]);
    let silent = python_command("import sys\nfor line in sys.stdin:\n    pass\n");
    lap(
        &home,
        [
            "agents",
            "create",
            "mute",
            "--harness",
            "codex-app-server",
            "--command",
            &silent,
        ],
    )
    .success();
    let (tx, rx) = std::sync::mpsc::channel();
    let env = home.env();
    std::thread::spawn(move || {
        let out = std::process::Command::new(support::LAP)
            .args(["send", "mute", "hello?"])
            .env_clear()
            .envs(env)
            .stdin(std::process::Stdio::null())
            .output();
        let _ = tx.send(out);
    });
    let out = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("`lap send` still waits on a tool that never answers")
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("`codex app-server` did not start its conversation within 3 s"),
        "{stderr}"
    );
    assert!(stderr.contains("hint:"), "{stderr}");
    let again = lap(&home, ["send", "mute", "hello again?"]);
    assert_eq!(again.code, 1, "{again}");
    assert!(again.stderr.contains("did not start its conversation"), "{again}");
    drop(server);
    delete_local_sandboxes(&home.server_data());
}
