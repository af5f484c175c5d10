//! The terminal as people use it: `lap serve --backend local`, real sandboxes, `lap <agent>` and
//! `lap attach` through the WebSocket, and a person's terminal simulated by tmux.
//!
//! Conditions are polled (screen contents, `capture-pane`) with a deadline, never slept for.

use std::process::{Command, Output, Stdio};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use lap::client::{Client, tty_url};
use lap::wire::api::Session;
use lap::wire::tty::{Control, ServerMessage};
use tokio_tungstenite::tungstenite::Message;

use crate::support;
use crate::support::tmux::Tmux;

/// How long a test waits for a condition it polls.
const WAIT: Duration = Duration::from_secs(15);

/// `lap serve` with the local backend on a temporary data dir and home; killed on drop, with its
/// sandboxes.
struct Server {
    child: std::process::Child,
    url: String,
    home: tempfile::TempDir,
    data: tempfile::TempDir,
}

impl Server {
    fn start() -> Self {
        let server = Self::start_on(
            tempfile::tempdir().unwrap(),
            tempfile::tempdir().unwrap(),
            "127.0.0.1:0",
        );
        server.json(&["agents", "create", "demo", "--harness", "shell"]);
        server
    }

    /// Kills the server with SIGKILL and starts a new one on the same port and data dir.
    fn kill_and_restart(mut self) -> Self {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
        let listen = self.url.trim_start_matches("http://").to_owned();
        let home = std::mem::replace(&mut self.home, tempfile::tempdir().unwrap());
        let data = std::mem::replace(&mut self.data, tempfile::tempdir().unwrap());
        Self::start_on(home, data, &listen)
    }

    fn start_on(home: tempfile::TempDir, data: tempfile::TempDir, listen: &str) -> Self {
        use std::io::BufRead;
        let mut child = Command::new(env!("CARGO_BIN_EXE_lap"))
            .args(["serve", "--listen", listen, "--data-dir"])
            .arg(data.path())
            .env_clear()
            .env("HOME", home.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = std::io::BufReader::new(child.stderr.take().unwrap()).lines();
        let url = loop {
            let line = lines.next().expect("lap serve exited before listening").unwrap();
            if let Some(rest) = line.split("listening on ").nth(1) {
                break rest.split_whitespace().next().unwrap().to_owned();
            }
        };
        std::thread::spawn(move || lines.for_each(drop));
        Self { child, url, home, data }
    }

    /// The `lap` client against this server, as a command to complete.
    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_lap"));
        command
            .args(["--server", &self.url])
            .args(args)
            .env_clear()
            .env("HOME", self.home.path());
        command
    }

    fn lap(&self, args: &[&str], stdin: &[u8]) -> Output {
        piped(self.command(args), stdin)
    }

    fn json(&self, args: &[&str]) -> serde_json::Value {
        let mut full = vec!["--json"];
        full.extend_from_slice(args);
        let out = self.lap(&full, b"");
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// A ready session of `demo`.
    fn session(&self) -> Session {
        serde_json::from_value(self.json(&["sessions", "create", "demo"])).unwrap()
    }

    fn client(&self) -> Client {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let key = std::fs::read_to_string(self.data.path().join("master.key")).unwrap();
        Client::new(&self.url, Some(lap::secret::Secret::new(key.trim())), None).unwrap()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // Whatever the session delete left behind (a test that failed half-way).
        support::delete_local_sandboxes(self.data.path());
    }
}

/// One viewer over the WebSocket, with its own emulated screen.
struct Viewer {
    socket: lap::client::TtySocket,
    screen: vt100::Parser,
    viewers: u32,
}

impl Viewer {
    async fn attach(server: &Server, session: &Session) -> Self {
        let url = tty_url(&server.url, session).expect("a terminal");
        let token = session.tty_token.clone().unwrap();
        let mut socket = server.client().connect_tty(&url, &token).await.expect("attach");
        assert!(socket.typed, "the server speaks lap.tty.v1");
        socket
            .socket
            .send(Message::Text(Control::resize(80, 24).to_text().into()))
            .await
            .unwrap();
        Self {
            socket,
            screen: vt100::Parser::new(24, 80, 0),
            viewers: 0,
        }
    }

    async fn send(&mut self, keys: &str) {
        self.socket
            .socket
            .send(Message::Binary(keys.as_bytes().to_vec().into()))
            .await
            .unwrap();
    }

    /// Reads until the screen (or viewer count) satisfies `done`; returns the exit code if one came.
    async fn until(&mut self, done: impl Fn(&str, u32) -> bool) -> Option<i32> {
        let result = tokio::time::timeout(WAIT, async {
            while !done(&self.screen.screen().contents(), self.viewers) {
                match self.socket.socket.next().await.expect("open").expect("a frame") {
                    Message::Binary(data) => self.screen.process(&data),
                    Message::Text(text) => match ServerMessage::parse(text.as_str()) {
                        Some(ServerMessage::Exit { code }) => return Some(code),
                        Some(ServerMessage::Viewers { count }) => self.viewers = count,
                        Some(ServerMessage::Repaint) => self.screen = vt100::Parser::new(24, 80, 0),
                        other => panic!("unexpected {other:?}: {text}"),
                    },
                    _ => {}
                }
            }
            None
        })
        .await;
        result.unwrap_or_else(|_| panic!("timed out; screen:\n{}", self.screen.screen().contents()))
    }
}

#[test]
fn lap_agent_runs_piped_commands_and_exits_with_the_agents_code() {
    let server = Server::start();
    let out = server.lap(&["demo"], b"echo hel''lo\nexit 3\n");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(3),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The echo (`hel''lo`) does not match; only the command's output does.
    assert!(stdout.contains("hello\r\n"), "{stdout}");
    // The agent is gone, so is the session: the next `lap demo` starts a fresh one.
    let sessions = server.json(&["sessions", "list"]);
    assert_eq!(sessions[0]["status"], "dead", "{sessions}");
    assert_eq!(sessions[0]["failure_reason"], "the agent exited with code 3");
    let again = server.lap(&["demo"], b"exit 0\n");
    assert_eq!(
        again.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    assert_eq!(server.json(&["sessions", "list"]).as_array().unwrap().len(), 2);
}

#[test]
fn the_end_of_piped_input_ends_the_shell_even_when_its_first_ctrl_d_is_swallowed() {
    use std::io::Write;
    // No `exit`: the end of input alone must end the shell. Its Ctrl-D often reaches bash while it
    // runs the command, in cooked mode, and the switch back to its line editor swallows it; `lap`
    // says it again once the shell waits quietly at its prompt.
    let server = Server::start();
    for round in 0..8 {
        let mut child = server
            .command(&["demo"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(format!("echo round-''{round}\n").as_bytes())
            .unwrap();
        let out = support::wait_within(
            child,
            WAIT,
            &format!("round {round}'s shell (it should end with its input)"),
        );
        assert_eq!(out.status.code(), Some(0), "round {round}");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            stdout.contains(&format!("round-{round}\r\n")),
            "round {round}: {stdout}"
        );
    }
}

#[test]
fn laps_spellings_agent_and_resume_by_id_or_url_open_the_same_terminal() {
    let server = Server::start();
    let out = server.lap(&["--agent", "demo"], b"echo via-''agent\nexit 0\n");
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("via-agent\r\n"));

    let session = server.json(&["sessions", "create", "demo"]);
    let id = session["id"].as_str().unwrap().to_owned();
    // The URL names the server: it wins over a `--server` that points nowhere.
    let url = format!("{}/sessions/{id}", server.url);
    let mut resume = Command::new(env!("CARGO_BIN_EXE_lap"));
    resume
        .args(["--server", "http://127.0.0.1:9", "--resume", &url])
        .env_clear()
        .env("HOME", server.home.path());
    let out = piped(resume, b"echo via-''url\nexit 0\n");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("using the server from the URL: {}", server.url)),
        "{stderr}"
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("via-url\r\n"), "{stderr}");
    // That shell has exited; `lap resume ID` (LAP's word) finds the session gone.
    let out = server.lap(&["resume", &id], b"");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains(&format!("session {id} is dead")), "{stderr}");

    let out = server.lap(&["attach", "not-a-session"], b"");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("'not-a-session' is not a session id or sessions URL"),
        "{stderr}"
    );
    let out = server.lap(&["--agent", "demo", "sessions", "list"], b"");
    assert_eq!(out.status.code(), Some(2), "{}", String::from_utf8_lossy(&out.stderr));
}

/// Runs `command` with `stdin` piped in; its whole output.
fn piped(mut command: Command, stdin: &[u8]) -> Output {
    use std::io::Write;
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    child.wait_with_output().unwrap()
}

#[test]
fn an_agent_that_exits_with_nobody_attached_ends_its_session() {
    let server = Server::start();
    server.json(&[
        "agents",
        "create",
        "brief",
        "--harness",
        "shell",
        "--command",
        "sh -c 'exit 4'",
    ]);
    let session = server.json(&["sessions", "create", "brief", "--no-wait"]);
    let id = session["id"].as_str().unwrap().to_owned();
    let session = support::wait_until("the session dead", WAIT, || {
        let session = server.json(&["sessions", "show", &id]);
        if session["status"] == "dead" {
            Ok(session)
        } else {
            Err(session)
        }
    });
    assert_eq!(session["failure_reason"], "the agent exited with code 4");
}

#[test]
fn lap_attach_takes_a_session_id() {
    let server = Server::start();
    let session = server.session();
    let out = server.lap(&["attach", &session.id.to_string()], b"echo $((6*7))\nexit 7\n");
    assert_eq!(out.status.code(), Some(7));
    assert!(String::from_utf8_lossy(&out.stdout).contains("42\r\n"));
}

#[tokio::test]
async fn viewers_mirror_each_other_and_a_reconnect_shows_the_previous_screen() {
    let server = Server::start();
    let session = server.session();
    let mut a = Viewer::attach(&server, &session).await;
    // Attaching is activity.
    let shown = server.json(&["sessions", "show", &session.id.to_string()]);
    assert!(
        shown["last_seen_at"].as_str().unwrap() > session.last_seen_at.as_str(),
        "{shown}"
    );
    let mut b = Viewer::attach(&server, &session).await;
    a.until(|_, viewers| viewers == 2).await;
    a.send("echo mir''rored\r").await;
    b.until(|screen, _| screen.lines().any(|l| l == "mirrored")).await;
    b.send("echo from-''b\r").await;
    a.until(|screen, _| screen.lines().any(|l| l == "from-b")).await;
    drop((a, b));
    // A new viewer is repainted with the screen as it was: both lines are there at once.
    let mut c = Viewer::attach(&server, &session).await;
    c.until(|screen, _| screen.contains("mirrored") && screen.contains("from-b"))
        .await;
    c.send("exit 5\r").await;
    assert_eq!(c.until(|_, _| false).await, Some(5));
}

#[tokio::test]
async fn the_terminal_refuses_another_sessions_token_over_a_real_upgrade() {
    let server = Server::start();
    let (first, second) = (server.session(), server.session());
    let url = tty_url(&server.url, &second).unwrap();
    let err = server
        .client()
        .connect_tty(&url, first.tty_token.as_deref().unwrap())
        .await
        .err()
        .expect("refused");
    assert_eq!(err.status(), Some(401), "{err}");
}

/// Whether a line is `stty size`'s answer.
fn is_size(line: &str) -> bool {
    let words: Vec<&str> = line.split_whitespace().collect();
    words.len() == 2 && words.iter().all(|w| w.parse::<u16>().is_ok())
}

fn has_line(screen: &str, line: &str) -> bool {
    screen.lines().any(|l| l.trim_end() == line)
}

#[test]
fn a_person_in_tmux_types_resizes_detaches_and_comes_back() {
    if Command::new("tmux").arg("-V").output().is_err() {
        panic!("tmux is required for this test");
    }
    let server = Server::start();
    let lap = format!(
        "env -i HOME={} {} --server {}",
        server.home.path().display(),
        env!("CARGO_BIN_EXE_lap"),
        server.url
    );
    let tmux = Tmux::shell("person", (100, 30), "");
    tmux.keys(&format!("{lap} demo; echo LAP-EXIT=$?\n"));
    tmux.until("the sandbox's prompt", |s| s.contains("lap@lap-"));
    tmux.keys("echo hel''lo; stty size\n");
    tmux.until("hello and the pane's size", |s| {
        has_line(s, "hello") && has_line(s, "30 100")
    });
    tmux.run(&["resize-window", "-t", "t", "-x", "120", "-y", "40"]);
    tmux.until("the pane to be 120x40", |_| {
        tmux.run(&["display", "-p", "-t", "t", "#{window_width}x#{window_height}"])
            .trim()
            == "120x40"
    });
    // SIGWINCH reaches `lap`, which resizes the PTY; asynchronously, so ask until it has.
    support::wait_until("the PTY to take 40x120", WAIT, || {
        tmux.keys("clear; stty size\n");
        let screen = tmux.until("stty's answer after a clear", |s| {
            !s.contains("clear; stty size") && s.lines().any(is_size)
        });
        if has_line(&screen, "40 120") {
            Ok(())
        } else {
            Err(screen)
        }
    });
    tmux.keys("echo still-''here\n");
    tmux.until("the marker", |s| has_line(s, "still-here"));
    // Ctrl-D detaches: the outer shell is back, in cooked mode with echo.
    tmux.key("C-d");
    tmux.until("the detach", |s| s.contains("LAP-EXIT=0") && s.contains("lap attach "));
    tmux.keys("stty -a | tr ' ' '\\n' | grep -xE -- '-?(icanon|echo)' | tr '\\n' ' '; echo\n");
    tmux.until("cooked mode", |s| s.contains("icanon echo") && !s.contains("-icanon"));
    // `lap demo` again reconnects to the same session, whose screen still shows the earlier output.
    tmux.keys("clear\n");
    tmux.until("a clear pane", |s| !s.contains("still-here"));
    tmux.keys(&format!("{lap} demo; echo LAP-EXIT=$?\n"));
    tmux.until("the previous screen", |s| has_line(s, "still-here"));
    // A full-screen program draws on the alternate screen and leaves cleanly.
    tmux.keys("seq 1 1000 | less\n");
    tmux.until("less's first page", |s| {
        has_line(s, "1") && has_line(s, "39") && !s.contains("still-here")
    });
    tmux.keys("q");
    tmux.until("the shell's screen back", |s| {
        s.contains("still-here") && !has_line(s, "39")
    });
    tmux.keys("exit 3\n");
    tmux.until("lap's exit code", |s| s.contains("LAP-EXIT=3"));
}

/// Starts `lap demo` in a fresh tmux pane and waits for the sandbox's prompt.
fn lap_demo_in_tmux(server: &Server, name: &str) -> Tmux {
    let tmux = Tmux::shell(name, (100, 30), "");
    tmux.keys(&format!(
        "env -i HOME={} {} --server {} demo; echo LAP-EXIT=$?\n",
        server.home.path().display(),
        env!("CARGO_BIN_EXE_lap"),
        server.url
    ));
    tmux.until("the sandbox's prompt", |s| s.contains("lap@lap-"));
    tmux
}

#[test]
fn sigterm_and_sighup_restore_the_terminal() {
    let server = Server::start();
    for (signal, code) in [(libc::SIGTERM, "143"), (libc::SIGHUP, "129")] {
        let tmux = lap_demo_in_tmux(&server, &format!("sig{signal}"));
        // The pane's shell runs `lap` as its only child.
        let shell = tmux.run(&["display", "-p", "-t", "t", "#{pane_pid}"]);
        let shell = shell.trim();
        let children = std::fs::read_to_string(format!("/proc/{shell}/task/{shell}/children")).unwrap();
        let lap: i32 = children.split_whitespace().next().expect("lap runs").parse().unwrap();
        // SAFETY: a plain kill(2) of the process this test started.
        assert_eq!(unsafe { libc::kill(lap, signal) }, 0);
        tmux.until("lap's exit", |s| s.contains(&format!("LAP-EXIT={code}")));
        tmux.keys("stty -a | tr ' ' '\\n' | grep -xE -- '-?(icanon|echo)' | tr '\\n' ' '; echo\n");
        tmux.until("cooked mode", |s| s.contains("icanon echo") && !s.contains("-icanon"));
    }
}

/// Collects a pipe's bytes on a thread.
fn collect(mut pipe: impl std::io::Read + Send + 'static) -> std::sync::Arc<std::sync::Mutex<Vec<u8>>> {
    let buf = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = buf.clone();
    std::thread::spawn(move || {
        let mut chunk = [0u8; 4096];
        while let Ok(n) = pipe.read(&mut chunk) {
            if n == 0 {
                break;
            }
            sink.lock().unwrap().extend_from_slice(&chunk[..n]);
        }
    });
    buf
}

fn wait_for(what: &str, buf: &std::sync::Mutex<Vec<u8>>, needle: &str) {
    support::wait_until(what, WAIT, || {
        let seen = String::from_utf8_lossy(&buf.lock().unwrap()).into_owned();
        if seen.contains(needle) { Ok(()) } else { Err(seen) }
    });
}

#[test]
fn a_dropped_connection_is_retried_visibly_and_the_session_carries_on() {
    use std::io::Write;
    let server = Server::start();
    let session = server.session();
    let mut lap = server
        .command(&["attach", &session.id.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = lap.stdin.take().unwrap();
    let stdout = collect(lap.stdout.take().unwrap());
    let stderr = collect(lap.stderr.take().unwrap());
    stdin.write_all(b"echo be''fore\n").unwrap();
    wait_for("the first output", &stdout, "before\r\n");
    // The server dies under the attached client, and comes back on the same address.
    let server = server.kill_and_restart();
    wait_for("the retry", &stderr, "reconnecting in");
    stdin.write_all(b"echo after''wards\nexit 3\n").unwrap();
    drop(stdin);
    let status = lap.wait().unwrap();
    let (out, err) = (
        String::from_utf8_lossy(&stdout.lock().unwrap()).into_owned(),
        String::from_utf8_lossy(&stderr.lock().unwrap()).into_owned(),
    );
    assert_eq!(status.code(), Some(3), "{out}\n{err}");
    // Its reader may still be taking the last bytes from the pipe.
    wait_for("the output after the reconnect", &stdout, "afterwards\r\n");
    drop(server);
}

#[test]
fn two_people_on_one_agent_see_the_same_terminal() {
    let server = Server::start();
    let first = lap_demo_in_tmux(&server, "first");
    // The second `lap demo` reconnects to the agent's live session instead of starting one.
    let second = lap_demo_in_tmux(&server, "second");
    assert_eq!(server.json(&["sessions", "list"]).as_array().unwrap().len(), 1);
    first.keys("echo from-''first\n");
    second.until("the first person's output", |s| has_line(s, "from-first"));
    second.keys("echo from-''second\n");
    first.until("the second person's output", |s| has_line(s, "from-second"));
}

#[tokio::test]
async fn laps_own_cli_framing_works_unchanged() {
    let server = Server::start();
    let session = server.session();
    // As LAP's CLI does it: the token in the query, no subprotocol, keystrokes as text frames.
    let url = format!(
        "{}?token={}",
        tty_url(&server.url, &session).unwrap(),
        session.tty_token.as_deref().unwrap()
    );
    let (mut socket, response) = tokio_tungstenite::connect_async(url).await.expect("upgrade");
    assert!(response.headers().get("sec-websocket-protocol").is_none());
    socket
        .send(Message::Text(r#"{"type":"resize","cols":90,"rows":20}"#.into()))
        .await
        .unwrap();
    socket.send(Message::Text(r#"{"type":"ping"}"#.into())).await.unwrap();
    socket.send(Message::Text("stty size; exit 2\r".into())).await.unwrap();
    let mut output = Vec::new();
    let closed = tokio::time::timeout(WAIT, async {
        while let Some(Ok(message)) = socket.next().await {
            match message {
                Message::Binary(data) => output.extend_from_slice(&data),
                Message::Text(text) => output.extend_from_slice(text.as_bytes()),
                Message::Close(frame) => return frame,
                _ => {}
            }
        }
        None
    })
    .await
    .expect("the agent exits");
    let output = String::from_utf8_lossy(&output);
    assert!(output.contains("20 90\r\n"), "{output}");
    assert!(output.contains("[process exited (code=2)]"), "{output}");
    assert_eq!(closed.map(|f| u16::from(f.code)), Some(1000));
}

#[test]
fn tab_completes_agent_names_and_live_session_ids_from_the_server_and_stays_quiet_without_it() {
    let mut server = Server::start();
    server.json(&["agents", "create", "deploy-bot", "--harness", "shell"]);
    let session = server.json(&["sessions", "create", "deploy-bot"]);
    let id = session["id"].as_str().unwrap().to_owned();
    let bin = std::path::Path::new(env!("CARGO_BIN_EXE_lap")).parent().unwrap();
    let env = format!(
        "PATH={}:/usr/bin:/bin HOME={} LAP_URL={}",
        bin.display(),
        server.home.path().display(),
        server.url
    );
    let tmux = Tmux::shell("complete", (150, 20), &env);
    tmux.keys("source <(lap completions bash) && echo completion-on\n");
    tmux.until("the completion script", |s| s.contains("\ncompletion-on\nouter$"));
    tmux.keys("lap dep");
    tmux.key("Tab");
    tmux.until("the agent's name", |s| s.contains("outer$ lap deploy-bot"));
    tmux.key("C-u");
    tmux.keys(&format!("lap attach {}", &id[..4]));
    tmux.key("Tab");
    tmux.until("the live session's id", |s| {
        s.contains(&format!("outer$ lap attach {id}"))
    });
    tmux.key("C-u");

    // With the server gone, Tab completes what it can without it, and says nothing.
    server.child.kill().unwrap();
    server.child.wait().unwrap();
    tmux.keys("lap att");
    tmux.key("Tab");
    let screen = tmux.until("the subcommand", |s| s.contains("outer$ lap attach"));
    tmux.keys("x");
    tmux.key("Tab");
    // Bash reads the next key only once the completion has answered.
    tmux.keys("Z");
    let screen_after = tmux.until("the completion to answer", |s| s.contains("outer$ lap attach xZ"));
    assert!(!screen_after.contains("error"), "{screen}\n{screen_after}");
}
