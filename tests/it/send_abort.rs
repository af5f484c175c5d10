//! Aborting a turn from the CLI: `lap sessions abort ID`, and `lap send` turning Ctrl-C (a real
//! SIGINT to a real `lap send` process) into an abort of its turn. The agent is the real `claude`
//! (claude-agent-sdk harness) against the echoing fake Anthropic API of
//! `tests/it/support/anthropic.rs`, whose model stalls after a first word on [`HANG`]: claude honours
//! the interrupt and ends the turn as aborted; stopped (SIGSTOP) it cannot, and lap serve's grace
//! kill is what ends the turn. Real local sandboxes, real `lap serve`.

use std::io::Read;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::support;
use crate::support::anthropic::{self, HANG, HANG_FIRST};
use crate::support::{Home, LAP, lap};

/// Longest wait for a `lap send` to show a turn is running, or to exit.
const WAIT: Duration = Duration::from_secs(60);

/// The real `claude` as agent `sdk`; `None` when the test is skipped (no `claude` outside a strict
/// run).
fn claude() -> Option<support::vendor::World> {
    let world = anthropic::start()?;
    anthropic::agent(&world, "sdk");
    Some(world)
}

/// A ready session of `sdk` in `home`, by a first message.
fn session(home: &Home) -> String {
    let first = lap(home, ["send", "sdk", "hi"]);
    assert_eq!(first.code, 0, "{first}");
    assert_eq!(first.out(), "echo: hi", "{first}");
    lap(home, ["--json", "sessions", "list"]).success().json()[0]["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// A running `lap send --stream`, its stdout and stderr collected as they come.
struct Send {
    child: Child,
    stdout: Arc<Mutex<String>>,
    stderr: Arc<Mutex<String>>,
}

impl Send {
    fn start(home: &Home, args: &[&str]) -> Self {
        let mut child = Command::new(LAP)
            .args(args)
            .env_clear()
            .envs(home.env())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn lap send");
        let collect = |mut pipe: Box<dyn Read + std::marker::Send>| {
            let text = Arc::new(Mutex::new(String::new()));
            let sink = text.clone();
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                while let Ok(n) = pipe.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    sink.lock().unwrap().push_str(&String::from_utf8_lossy(&buf[..n]));
                }
            });
            text
        };
        let stdout = collect(Box::new(child.stdout.take().unwrap()));
        let stderr = collect(Box::new(child.stderr.take().unwrap()));
        Self { child, stdout, stderr }
    }

    fn until(&self, what: &str, done: impl Fn(&str, &str) -> bool) {
        support::wait_until(what, WAIT, || {
            let (out, err) = (self.stdout.lock().unwrap().clone(), self.stderr.lock().unwrap().clone());
            if done(&out, &err) {
                Ok(())
            } else {
                Err(format!("stdout:\n{out}\nstderr:\n{err}"))
            }
        });
    }

    fn interrupt(&self) {
        kill(Pid::from_raw(self.child.id() as i32), Signal::SIGINT).unwrap();
    }

    /// Waits (at most `within`) for the process to exit; its code.
    fn exit_within(&mut self, within: Duration) -> i32 {
        let Ok(status) = support::try_wait_until(within, || self.child.try_wait().unwrap()) else {
            let _ = self.child.kill();
            panic!(
                "lap send did not exit within {within:?}\nstdout:\n{}\nstderr:\n{}",
                self.stdout.lock().unwrap(),
                self.stderr.lock().unwrap()
            );
        };
        // Let the readers take the last bytes.
        std::thread::sleep(Duration::from_millis(100));
        status.code().unwrap_or(-1)
    }

    fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }
}

#[test]
fn ctrl_c_in_lap_send_aborts_its_turn_waits_for_the_end_and_leaves_the_session_usable() {
    let Some(world) = claude() else { return };
    let id = session(&world.home);
    let mut send = Send::start(&world.home, &["send", "--stream", &id, &format!("{HANG} slowly")]);
    send.until("the turn to stream its first word", |out, _| out.contains(HANG_FIRST));
    send.interrupt();
    let code = send.exit_within(WAIT);
    let stderr = send.stderr();
    assert_eq!(code, 130, "{stderr}");
    assert!(
        stderr.contains(&format!("aborting the turn of session {id}")),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("error: aborted the turn of session {id}")),
        "{stderr}"
    );

    // The turn ended as aborted, and the session takes the next message at once (no 409).
    let history = world.server.http_get(
        &format!("/api/v1/managed_agents/sessions/{id}/messages"),
        Some(&world.server.master_key()),
    );
    let history: serde_json::Value = serde_json::from_str(&history.1).unwrap();
    let last = &history.as_array().unwrap()[3];
    assert_eq!(last["info"]["error"]["name"], "aborted", "{history:#}");
    let next = lap(&world.home, ["send", &id, "again"]);
    assert_eq!(next.code, 0, "{next}");
    assert_eq!(next.out(), "echo: again", "{next}");
}

/// The tool hangs — the real `claude`, stopped (SIGSTOP) in its sandbox mid-turn, so it cannot
/// honour the interrupt and the turn goes on ending until lap serve's grace kill — while the person
/// presses Ctrl-C again: `lap send` exits at once, saying the abort may still be under way.
#[test]
fn a_second_ctrl_c_exits_at_once_while_the_turn_is_still_ending() {
    let Some(world) = claude() else { return };
    let id = session(&world.home);
    let mut send = Send::start(&world.home, &["send", "--stream", &id, &format!("{HANG} and hang")]);
    send.until("the turn to stream its first word", |out, _| out.contains(HANG_FIRST));
    let probe = lap(&world.home, ["send", &id, "probe"]);
    assert!(probe.code != 0 && probe.stderr.contains("already running"), "{probe}");
    assert!(probe.stderr.contains(&format!("lap sessions abort {id}")), "{probe}");
    assert!(anthropic::signal_claude(&world.home, &id, "STOP") >= 1);
    send.interrupt();
    send.until("the abort to be asked for", |_, err| err.contains("aborting the turn"));
    send.interrupt();
    let code = send.exit_within(WAIT);
    let stderr = send.stderr();
    assert_eq!(code, 130, "{stderr}");
    // At once: the stopped `claude` cannot end the turn, which stays open until the server kills the
    // tool (after its abort grace), so a turn still running means `lap send` did not wait for it.
    let still = lap(&world.home, ["send", &id, "probe"]);
    assert!(
        still.code != 0 && still.stderr.contains("already running"),
        "the second Ctrl-C did not exit before the turn ended: {still}\n{stderr}"
    );
    assert!(stderr.contains("stopped waiting"), "{stderr}");
    assert!(stderr.contains(&format!("lap sessions abort {id}")), "{stderr}");
}

#[test]
fn lap_sessions_abort_says_whether_a_turn_was_running() {
    let Some(world) = claude() else { return };
    let id = session(&world.home);
    let idle = lap(&world.home, ["sessions", "abort", &id]).success();
    assert_eq!(idle.out(), format!("session {id} had no turn running"), "{idle}");
    let json = lap(&world.home, ["--json", "sessions", "abort", &id]).success().json();
    assert_eq!(json, serde_json::json!({"ok": true, "aborted": false}));

    let mut send = Send::start(&world.home, &["send", "--stream", &id, &format!("{HANG} slowly")]);
    send.until("the turn to stream its first word", |out, _| out.contains(HANG_FIRST));
    let aborted = lap(&world.home, ["--json", "sessions", "abort", &id]).success().json();
    assert_eq!(aborted, serde_json::json!({"ok": true, "aborted": true}));
    // The send sees its turn end as aborted (not by Ctrl-C: a failed turn, exit 1).
    let code = send.exit_within(WAIT);
    assert_eq!(code, 1, "{}", send.stderr());
    assert!(send.stderr().contains("(aborted)"), "{}", send.stderr());

    let missing = lap(
        &world.home,
        ["sessions", "abort", "00000000-0000-0000-0000-000000000000"],
    );
    assert_ne!(missing.code, 0, "{missing}");
    assert!(missing.stderr.contains("lap sessions list"), "{missing}");
}
