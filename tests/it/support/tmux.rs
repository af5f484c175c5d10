//! tmux on a private socket, for tests that use a terminal program as a person does: `send-keys`
//! types, `capture-pane` reads, `resize-window` sends SIGWINCH. Killed, socket removed, on drop.

use std::process::Command;
use std::time::Duration;

/// How long a test waits for the pane to show what it expects.
const WAIT: Duration = Duration::from_secs(20);

pub struct Tmux(String);

impl Tmux {
    /// A tmux server of its own, named after the test (and this process, so runs never share one).
    pub fn new(name: &str) -> Self {
        Self(format!("lap-test-{name}-{}", std::process::id()))
    }

    /// A tmux server of its own whose one pane runs a clean bash with prompt `outer$ `, started with
    /// `env -i PATH=/usr/bin:/bin ENV… TERM=screen` (`env` may override `PATH`); returns once the
    /// prompt shows.
    pub fn shell(name: &str, (cols, rows): (u16, u16), env: &str) -> Self {
        let tmux = Self::new(name);
        let command = format!("env -i PATH=/usr/bin:/bin {env} TERM=screen PS1='outer$ ' bash --norc --noprofile");
        let (cols, rows) = (cols.to_string(), rows.to_string());
        tmux.run(&["new-session", "-d", "-s", "t", "-x", &cols, "-y", &rows, &command]);
        tmux.until("the outer shell", |s| s.contains("outer$"));
        tmux
    }

    pub fn run(&self, args: &[&str]) -> String {
        let out = Command::new("tmux")
            .args(["-L", &self.0])
            .args(args)
            .output()
            .expect("tmux runs (scripts/test.sh installs it)");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Types `keys` literally into the pane.
    pub fn keys(&self, keys: &str) {
        self.run(&["send-keys", "-t", "t", "-l", keys]);
    }

    /// Presses one named key (`Enter`, `C-d`, `Up`…).
    pub fn key(&self, key: &str) {
        self.run(&["send-keys", "-t", "t", key]);
    }

    /// The pane's text as a person sees it.
    pub fn screen(&self) -> String {
        self.run(&["capture-pane", "-p", "-t", "t"])
    }

    /// Polls the pane until `done` holds; returns its text.
    pub fn until(&self, what: &str, done: impl Fn(&str) -> bool) -> String {
        self.until_within(WAIT, what, done)
    }

    /// [`Tmux::until`] with a deadline of its own.
    pub fn until_within(&self, wait: Duration, what: &str, done: impl Fn(&str) -> bool) -> String {
        super::wait_until(what, wait, || {
            let screen = self.screen();
            if done(&screen) {
                Ok(screen)
            } else {
                Err(format!("pane:\n{screen}"))
            }
        })
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let socket = self.run(&["display", "-p", "#{socket_path}"]);
        self.run(&["kill-server"]);
        // tmux leaves its socket file behind.
        if !socket.trim().is_empty() {
            let _ = std::fs::remove_file(socket.trim());
        }
    }
}
