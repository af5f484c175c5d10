//! The agent's terminal inside a sandbox: one PTY, its screen state, and any number of viewers.
//!
//! [`Terminal::spawn`] starts the agent command under a fresh PTY (the harness owns the master) as
//! soon as the sandbox starts, whether anyone watches or not; viewers come and go without touching
//! it. Everything the agent writes is fed to a `vt100` screen and fanned out to the viewers. A
//! viewer that attaches first gets a [`Event::Repaint`] of the current screen (escape sequences that
//! draw it on a blank terminal, never a replay of old bytes, which would make its terminal answer
//! stale queries), then the live [`Event::Output`]. Invariants: the PTY is never blocked by a viewer —
//! each viewer's queue holds at most [`VIEWER_QUEUE`] events, and one that falls behind loses its
//! queue and is resynchronised with a fresh repaint; the PTY size is the size of the viewer that
//! most recently typed or resized; when the agent exits, every viewer (and every later one) gets
//! [`Event::Exit`] with its status. This module knows nothing of sockets or wire formats.

use std::collections::HashMap;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::io::unix::AsyncFd;
use tokio::sync::mpsc;

/// Events a viewer's queue holds before it counts as behind.
pub const VIEWER_QUEUE: usize = 256;
/// The size of the PTY before any viewer has said its own.
pub const DEFAULT_SIZE: Size = Size { cols: 100, rows: 30 };
/// Bytes read from the PTY at once.
const READ_CHUNK: usize = 16 * 1024;
/// Largest accepted dimension of a terminal.
pub const MAX_DIMENSION: u16 = 1000;
/// The terminal type the agent is told it runs in.
pub const TERM: &str = "xterm-256color";

/// A terminal size in character cells.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Size {
    pub cols: u16,
    pub rows: u16,
}

impl Size {
    /// The size, with each dimension clamped to `1..=`[`MAX_DIMENSION`].
    pub fn clamped(cols: u16, rows: u16) -> Self {
        Self {
            cols: cols.clamp(1, MAX_DIMENSION),
            rows: rows.clamp(1, MAX_DIMENSION),
        }
    }
}

/// What a viewer receives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// Bytes that draw the whole current screen on a blank terminal.
    Repaint(Vec<u8>),
    /// Bytes the agent wrote, in order.
    Output(Vec<u8>),
    /// How many viewers are attached now.
    Viewers(u32),
    /// The agent exited with this code (or 128 + the signal number).
    Exit(i32),
}

#[derive(Debug, thiserror::Error)]
pub enum TerminalError {
    #[error("cannot open a PTY: {0}")]
    Open(#[source] std::io::Error),
    #[error("cannot start `{command}`: {err}")]
    Spawn { command: String, err: std::io::Error },
    #[error("cannot write to the PTY: {0}")]
    Write(#[source] std::io::Error),
}

/// How to start the agent.
pub struct Command {
    /// A shell command line, run with `/bin/sh -c 'exec …'`.
    pub command: String,
    pub env: Vec<(String, String)>,
    pub cwd: String,
    /// Runs in the child between `fork` and `exec`, after it became a session leader with the PTY
    /// as its controlling terminal (dropping privileges, typically). Must be async-signal-safe.
    pub pre_exec: Box<dyn FnMut() -> std::io::Result<()> + Send + Sync>,
}

/// The agent's terminal; cheap to clone.
#[derive(Clone)]
pub struct Terminal {
    inner: Arc<Mutex<Inner>>,
    master: Arc<AsyncFd<OwnedFd>>,
    /// The agent's exit code, once it has exited.
    exited: tokio::sync::watch::Receiver<Option<i32>>,
}

struct Inner {
    parser: vt100::Parser,
    size: Size,
    viewers: HashMap<u64, Slot>,
    next_id: u64,
    exit: Option<i32>,
}

struct Slot {
    tx: mpsc::Sender<Event>,
    size: Size,
    /// Its queue overflowed: it gets nothing more until it has been repainted.
    behind: bool,
}

impl Inner {
    fn repaint(&self) -> Vec<u8> {
        let screen = self.parser.screen();
        let mut out = Vec::new();
        if screen.alternate_screen() {
            out.extend_from_slice(b"\x1b[?1049h");
        }
        out.extend_from_slice(b"\x1b[H\x1b[2J");
        out.extend_from_slice(&screen.state_formatted());
        out
    }

    /// Offers an event to every viewer that is not behind; a full queue makes it behind.
    fn broadcast(&mut self, event: &Event) {
        for slot in self.viewers.values_mut().filter(|s| !s.behind) {
            if let Err(mpsc::error::TrySendError::Full(_)) = slot.tx.try_send(event.clone()) {
                slot.behind = true;
            }
        }
    }

    fn viewer_count(&self) -> Event {
        Event::Viewers(u32::try_from(self.viewers.len()).unwrap_or(u32::MAX))
    }
}

impl Terminal {
    /// Opens a PTY and starts `command` on it; must run inside a tokio runtime.
    pub fn spawn(mut command: Command) -> Result<Self, TerminalError> {
        let winsize = winsize(DEFAULT_SIZE);
        let pty = nix::pty::openpty(Some(&winsize), None).map_err(|e| TerminalError::Open(e.into()))?;
        set_nonblocking(&pty.master).map_err(TerminalError::Open)?;
        // Neither end may leak into the agent beyond its stdio: an agent holding the master would
        // keep its own terminal from ever hanging up when the harness is gone.
        set_cloexec(&pty.master)
            .and_then(|()| set_cloexec(&pty.slave))
            .map_err(TerminalError::Open)?;
        // SAFETY: an `OwnedFd` owns its descriptor: it stays open, and the same, until dropped.
        let master = unsafe { AsyncFd::register(pty.master) }.map_err(|e| TerminalError::Open(e.into()))?;
        let stdio = |fd: &OwnedFd| fd.try_clone().map(std::process::Stdio::from);
        let spawn_err = |err| TerminalError::Spawn {
            command: command.command.clone(),
            err,
        };
        let (stdin, stdout, stderr) = match (stdio(&pty.slave), stdio(&pty.slave), stdio(&pty.slave)) {
            (Ok(a), Ok(b), Ok(c)) => (a, b, c),
            (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => return Err(TerminalError::Open(e)),
        };
        let mut child = tokio::process::Command::new("/bin/sh");
        child
            .arg("-c")
            .arg(format!("exec {}", command.command))
            .env_clear()
            .envs(command.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env("TERM", TERM)
            .current_dir(&command.cwd)
            .stdin(stdin)
            .stdout(stdout)
            .stderr(stderr)
            .kill_on_drop(false);
        let mut pre_exec = std::mem::replace(&mut command.pre_exec, Box::new(|| Ok(())));
        // SAFETY: between fork and exec only raw system calls run: setsid, the TIOCSCTTY ioctl on
        // stdin (the PTY's slave, already dup'ed there), and the caller's async-signal-safe hook.
        unsafe {
            child.pre_exec(move || {
                nix::unistd::setsid()?;
                if libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                pre_exec()
            })
        };
        let mut child = child.spawn().map_err(spawn_err)?;
        // Only the child keeps the slave open, so reading the master ends when it exits.
        drop(pty.slave);
        let (exit_tx, exited) = tokio::sync::watch::channel(None);
        let terminal = Self {
            exited,
            inner: Arc::new(Mutex::new(Inner {
                parser: vt100::Parser::new(DEFAULT_SIZE.rows, DEFAULT_SIZE.cols, 0),
                size: DEFAULT_SIZE,
                viewers: HashMap::new(),
                next_id: 0,
                exit: None,
            })),
            master: Arc::new(master),
        };
        let pump = terminal.clone();
        tokio::spawn(async move {
            pump.read_until_exit().await;
            let code = match child.wait().await {
                Ok(status) => {
                    use std::os::unix::process::ExitStatusExt;
                    status.code().unwrap_or_else(|| 128 + status.signal().unwrap_or(0))
                }
                Err(err) => {
                    tracing::warn!(error = %err, "cannot wait for the agent");
                    -1
                }
            };
            let mut inner = pump.lock();
            inner.exit = Some(code);
            inner.broadcast(&Event::Exit(code));
            exit_tx.send_replace(Some(code));
        });
        Ok(terminal)
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    async fn read_until_exit(&self) {
        let mut buf = vec![0u8; READ_CHUNK];
        loop {
            let Ok(mut ready) = self.master.readable().await else {
                return;
            };
            match ready.try_io(|fd| nix::unistd::read(fd.get_ref(), &mut buf).map_err(std::io::Error::from)) {
                Ok(Ok(0)) => return,
                Ok(Ok(n)) => {
                    let mut inner = self.lock();
                    inner.parser.process(&buf[..n]);
                    inner.broadcast(&Event::Output(buf[..n].to_vec()));
                }
                // EIO: every slave descriptor is closed, i.e. the agent (and its children) are gone.
                Ok(Err(_)) => return,
                Err(_would_block) => continue,
            }
        }
    }

    /// Waits until the agent has exited; returns its exit code.
    pub async fn wait(&self) -> i32 {
        let mut exited = self.exited.clone();
        match exited.wait_for(Option::is_some).await {
            Ok(code) => code.unwrap_or(-1),
            // The pump is gone without a code: it cannot be, but never hang on it.
            Err(_) => -1,
        }
    }

    /// The current screen as text, rows joined by newlines (for tests and diagnostics).
    pub fn screen_text(&self) -> String {
        self.lock().parser.screen().contents()
    }

    /// Attaches a viewer of this size; its first event is a repaint. Attaching leaves the PTY's
    /// size alone: the viewer's size reaches the PTY when it first types or resizes (every client
    /// sends its size at once). The size given here is often a placeholder (the API's, before the
    /// client has said its own), and resizing to it would make a full-screen agent redraw at a
    /// size nobody has — a TUI that draws its history once (hermes) loses it from the screen.
    pub fn attach(&self, size: Size) -> Viewer {
        let (tx, rx) = mpsc::channel(VIEWER_QUEUE);
        let mut inner = self.lock();
        let id = inner.next_id;
        inner.next_id += 1;
        inner.viewers.insert(id, Slot { tx, size, behind: true });
        let count = inner.viewer_count();
        inner.broadcast(&count);
        drop(inner);
        Viewer {
            id,
            terminal: self.clone(),
            rx,
        }
    }

    fn apply_size(&self, inner: &mut Inner, size: Size) {
        if inner.size == size {
            return;
        }
        inner.size = size;
        inner.parser.screen_mut().set_size(size.rows, size.cols);
        let ws = winsize(size);
        // SAFETY: TIOCSWINSZ reads one `winsize` from a valid pointer to a live local value.
        let rc = unsafe { libc::ioctl(self.master.get_ref().as_raw_fd(), libc::TIOCSWINSZ, &ws) };
        if rc < 0 {
            tracing::warn!(error = %std::io::Error::last_os_error(), "cannot resize the PTY");
        }
    }

    async fn write(&self, mut data: &[u8]) -> Result<(), TerminalError> {
        while !data.is_empty() {
            let mut ready = self.master.writable().await.map_err(TerminalError::Write)?;
            match ready.try_io(|fd| nix::unistd::write(fd.get_ref(), data).map_err(std::io::Error::from)) {
                Ok(Ok(n)) => data = &data[n..],
                Ok(Err(err)) => return Err(TerminalError::Write(err)),
                Err(_would_block) => continue,
            }
        }
        Ok(())
    }
}

/// One viewer of a [`Terminal`]; detaches when dropped.
pub struct Viewer {
    id: u64,
    terminal: Terminal,
    rx: mpsc::Receiver<Event>,
}

impl Viewer {
    /// The next event: a repaint first (and again after falling behind), then output, viewer
    /// counts and finally the exit. Never ends: after the exit, nothing more comes.
    pub async fn recv(&mut self) -> Event {
        {
            let mut inner = self.terminal.lock();
            let exit = inner.exit;
            let repaint = inner.repaint();
            let count = inner.viewer_count();
            if let Some(slot) = inner.viewers.get_mut(&self.id)
                && slot.behind
            {
                while self.rx.try_recv().is_ok() {}
                slot.behind = false;
                let _ = slot.tx.try_send(count);
                if let Some(code) = exit {
                    let _ = slot.tx.try_send(Event::Exit(code));
                }
                return Event::Repaint(repaint);
            }
        }
        match self.rx.recv().await {
            Some(event) => event,
            None => std::future::pending().await,
        }
    }

    /// Types into the PTY; this viewer becomes the most recently active one.
    pub async fn input(&self, data: &[u8]) -> Result<(), TerminalError> {
        self.activate(None);
        self.terminal.write(data).await
    }

    /// Records this viewer's new size and gives it to the PTY.
    pub fn resize(&self, size: Size) {
        self.activate(Some(size));
    }

    fn activate(&self, new_size: Option<Size>) {
        let mut inner = self.terminal.lock();
        let Some(slot) = inner.viewers.get_mut(&self.id) else {
            return;
        };
        if let Some(size) = new_size {
            slot.size = size;
        }
        let size = slot.size;
        self.terminal.apply_size(&mut inner, size);
    }
}

impl Drop for Viewer {
    fn drop(&mut self) {
        let mut inner = self.terminal.lock();
        inner.viewers.remove(&self.id);
        let count = inner.viewer_count();
        inner.broadcast(&count);
    }
}

fn winsize(size: Size) -> nix::pty::Winsize {
    nix::pty::Winsize {
        ws_row: size.rows,
        ws_col: size.cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    }
}

fn set_nonblocking(fd: &OwnedFd) -> std::io::Result<()> {
    use nix::fcntl::{FcntlArg, OFlag, fcntl};
    let flags = OFlag::from_bits_truncate(fcntl(fd, FcntlArg::F_GETFL)?);
    fcntl(fd, FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK))?;
    Ok(())
}

fn set_cloexec(fd: &OwnedFd) -> std::io::Result<()> {
    use nix::fcntl::{FcntlArg, FdFlag, fcntl};
    fcntl(fd, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const WAIT: Duration = Duration::from_secs(10);

    fn shell() -> Terminal {
        Terminal::spawn(Command {
            command: "bash --norc --noprofile -i".into(),
            env: vec![("PATH".into(), "/usr/bin:/bin".into()), ("PS1".into(), "$ ".into())],
            cwd: "/".into(),
            pre_exec: Box::new(|| Ok(())),
        })
        .expect("bash starts under a PTY")
    }

    /// Collects a viewer's events until the screen text satisfies `done`.
    async fn until(terminal: &Terminal, viewer: &mut Viewer, done: impl Fn(&str) -> bool) -> Vec<Event> {
        let mut seen = Vec::new();
        tokio::time::timeout(WAIT, async {
            while !done(&terminal.screen_text()) {
                seen.push(viewer.recv().await);
            }
        })
        .await
        .unwrap_or_else(|_| panic!("timed out; screen:\n{}", terminal.screen_text()));
        seen
    }

    #[tokio::test]
    async fn the_agent_holds_its_terminal_only_as_stdio() {
        let terminal = Terminal::spawn(Command {
            command: "ls -l /proc/self/fd".into(),
            env: vec![("PATH".into(), "/usr/bin:/bin".into())],
            cwd: "/".into(),
            pre_exec: Box::new(|| Ok(())),
        })
        .unwrap();
        let mut viewer = terminal.attach(Size::clamped(120, 24));
        until(&terminal, &mut viewer, |s| s.contains(" 2 -> /dev/pts/")).await;
        let screen = terminal.screen_text();
        assert!(
            !screen.contains("ptmx"),
            "the PTY master leaked into the agent:\n{screen}"
        );
        let ptys = screen.lines().filter(|l| l.contains("-> /dev/pts/")).count();
        assert_eq!(ptys, 3, "only stdin, stdout and stderr are the PTY:\n{screen}");
    }

    #[tokio::test]
    async fn a_viewer_gets_a_repaint_first_then_live_output_and_the_exit_code() {
        let terminal = shell();
        let mut viewer = terminal.attach(Size::clamped(80, 24));
        assert!(matches!(viewer.recv().await, Event::Repaint(_)));
        assert_eq!(viewer.recv().await, Event::Viewers(1), "then how many watch");
        viewer.input(b"echo he''llo\r").await.unwrap();
        until(&terminal, &mut viewer, |s| s.lines().any(|l| l == "hello")).await;
        viewer.input(b"exit 3\r").await.unwrap();
        let exit = tokio::time::timeout(WAIT, async {
            loop {
                if let Event::Exit(code) = viewer.recv().await {
                    return code;
                }
            }
        })
        .await
        .unwrap();
        assert_eq!(exit, 3);
        assert_eq!(terminal.wait().await, 3);
        // A viewer attaching after the exit sees the last screen and the exit status.
        let mut late = terminal.attach(Size::clamped(80, 24));
        let Event::Repaint(repaint) = late.recv().await else {
            panic!("no repaint first")
        };
        let mut screen = vt100::Parser::new(24, 80, 0);
        screen.process(&repaint);
        assert!(screen.screen().contents().contains("hello"));
        loop {
            if let Event::Exit(code) = late.recv().await {
                assert_eq!(code, 3);
                break;
            }
        }
    }

    #[tokio::test]
    async fn the_pty_takes_the_size_of_the_most_recently_active_viewer() {
        let terminal = shell();
        let mut a = terminal.attach(Size::clamped(80, 24));
        let b = terminal.attach(Size::clamped(120, 40));
        a.input(b"stty size\r").await.unwrap();
        until(&terminal, &mut a, |s| s.contains("24 80")).await;
        b.input(b"stty size\r").await.unwrap();
        until(&terminal, &mut a, |s| s.contains("40 120")).await;
        b.resize(Size::clamped(90, 20));
        b.input(b"stty size\r").await.unwrap();
        until(&terminal, &mut a, |s| s.contains("20 90")).await;
    }

    #[tokio::test]
    async fn attaching_does_not_resize_the_pty_until_the_viewer_says_its_size() {
        // The agent prints each SIGWINCH it gets, with the size it then sees.
        let terminal = Terminal::spawn(Command {
            command: "sh -c 'trap \"echo WINCH \\$(stty size)\" WINCH; echo ready; while :; do sleep 0.05; done'"
                .into(),
            env: vec![("PATH".into(), "/usr/bin:/bin".into())],
            cwd: "/".into(),
            pre_exec: Box::new(|| Ok(())),
        })
        .unwrap();
        let mut first = terminal.attach(Size::clamped(80, 24));
        until(&terminal, &mut first, |s| s.contains("ready")).await;
        first.resize(Size::clamped(120, 40));
        until(&terminal, &mut first, |s| s.contains("WINCH 40 120")).await;
        drop(first);
        // A viewer comes back through the API, which attaches at the placeholder size before the
        // client sends its own (the same as before), then resizes its window.
        let mut again = terminal.attach(Size::clamped(100, 30));
        assert_eq!(
            terminal.lock().size,
            Size::clamped(120, 40),
            "attaching resized the PTY"
        );
        assert!(matches!(again.recv().await, Event::Repaint(_)));
        again.resize(Size::clamped(120, 40));
        again.resize(Size::clamped(90, 20));
        until(&terminal, &mut again, |s| s.contains("WINCH 20 90")).await;
        let winches: Vec<String> = terminal
            .screen_text()
            .lines()
            .filter(|l| l.starts_with("WINCH"))
            .map(str::to_owned)
            .collect();
        assert_eq!(winches, ["WINCH 40 120", "WINCH 20 90"]);
    }

    #[tokio::test]
    async fn a_viewer_that_falls_behind_is_repainted_and_never_blocks_the_others() {
        let terminal = shell();
        let mut slow = terminal.attach(Size::clamped(80, 24));
        assert!(
            matches!(slow.recv().await, Event::Repaint(_)),
            "first, the initial repaint"
        );
        let mut fast = terminal.attach(Size::clamped(80, 24));
        // Far more output chunks than a queue holds, while `slow` reads nothing.
        fast.input(b"seq 1 300000; echo do''ne\r").await.unwrap();
        until(&terminal, &mut fast, |s| s.lines().any(|l| l == "done")).await;
        // Its queue overflowed: what is left is dropped for a repaint of the current screen.
        let Event::Repaint(repaint) = slow.recv().await else {
            panic!("a viewer that fell behind is repainted");
        };
        let mut screen = vt100::Parser::new(24, 80, 0);
        screen.process(&repaint);
        assert!(screen.screen().contents().lines().any(|l| l == "done"));
    }
}
