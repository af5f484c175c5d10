//! Workspaces that outlive their sandbox, with real sandboxes on the local backend: a file written
//! in `/work` is there after a pause, a hibernation, a restart and a crash of the sandbox and a
//! `kill -9` of `lap serve`; a paused process keeps its memory; a fork sees its parent's files and
//! its writes stay its own; an attach or an exec wakes a hibernated session; the reaper walks its
//! policy in order; delete frees the disk; bad requests are refused with a hint and lose nothing;
//! and a snapshot never holds a real credential.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::support;
use crate::support::{Home, Run, TestServer, lap};

/// How long a test waits for a session to reach a state.
const SETTLE: Duration = Duration::from_secs(60);

/// A local server; its sandboxes are deleted on drop, even after a failure half-way.
struct Fixture {
    home: Home,
    server: TestServer,
}

impl Fixture {
    fn new(extra_args: &[&str]) -> Self {
        let home = Home::new();
        let server = TestServer::start_local_with(&home, extra_args.iter().copied());
        lap(&home, ["agents", "create", "ws", "--harness", "shell"]).success();
        Self { home, server }
    }

    fn lap<const N: usize>(&self, args: [&str; N]) -> Run {
        lap(&self.home, args)
    }

    fn session(&self) -> String {
        self.lap(["sessions", "create", "ws"]).success().out().trim().to_owned()
    }

    fn show(&self, id: &str) -> serde_json::Value {
        self.lap(["sessions", "show", id, "--json"]).success().json()
    }

    fn status(&self, id: &str) -> String {
        self.show(id)["status"].as_str().unwrap_or_default().to_owned()
    }

    fn workspace(&self, id: &str) -> PathBuf {
        PathBuf::from(self.show(id)["workspace"]["path"].as_str().expect("a workspace path"))
    }

    /// Runs `sh -c SCRIPT` in session `id` and returns its stdout.
    fn sh(&self, id: &str, script: &str) -> String {
        self.lap(["exec", id, "--", "sh", "-c", script]).success().stdout
    }

    #[track_caller]
    fn wait_status(&self, id: &str, want: &str) {
        let waited = support::try_wait_until(SETTLE, || {
            let now = self.status(id);
            if now == want { Ok(()) } else { Err(now) }
        });
        if let Err(now) = waited {
            panic!(
                "session {id} is {now}, not {want}, after {SETTLE:?}; server log:\n{}",
                self.server.log()
            );
        }
    }

    /// Host PID of the PID 1 of session `id`'s sandbox.
    fn sandbox_pid(&self, id: &str) -> i32 {
        let dir = self.server.data_dir().join("sandboxes");
        for entry in std::fs::read_dir(&dir).expect("sandboxes dir").flatten() {
            let Ok(state) = std::fs::read(entry.path().join("state.json")) else {
                continue;
            };
            let state: serde_json::Value = serde_json::from_slice(&state).expect("state.json");
            if state["session_id"] == id {
                return state["pid"].as_i64().expect("pid") as i32;
            }
        }
        panic!("no sandbox of session {id} under {}", dir.display())
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        self.server.kill9();
        support::delete_local_sandboxes(self.server.data_dir());
    }
}

#[track_caller]
fn refused(run: &Run, message: &str) {
    assert_ne!(run.code, 0, "{run}");
    assert!(run.stderr.contains(message), "expected {message:?}: {run}");
    assert!(run.stderr.contains("hint:"), "no hint: {run}");
}

/// Whether process `pid` runs (a zombie waiting for its reaper does not).
fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            stat.rsplit_once(')')
                .map(|(_, rest)| rest.trim_start().starts_with('Z'))
        })
        .is_some_and(|zombie| !zombie)
}

fn read_counter(path: &Path) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

#[test]
fn a_file_in_the_workspace_survives_pause_hibernate_restart_a_sandbox_crash_and_kill_9_of_lap_serve() {
    let mut f = Fixture::new(&[]);
    let id = f.session();
    f.sh(
        &id,
        "echo kept > \"$HOME/note.txt\" && mkdir -p /work/repo && echo code > /work/repo/main.rs",
    );
    let workspace = f.workspace(&id);
    assert_eq!(
        std::fs::read_to_string(workspace.join("home/note.txt")).unwrap(),
        "kept\n",
        "the workspace on the host is the sandbox's /work"
    );
    let note = |f: &Fixture| f.sh(&id, "cat \"$HOME/note.txt\" /work/repo/main.rs");

    // Pause: frozen, then woken by the exec.
    f.lap(["sessions", "pause", &id]).success();
    assert_eq!(f.status(&id), "paused");
    assert_eq!(note(&f), "kept\ncode\n");
    assert_eq!(f.status(&id), "ready", "the exec woke it");

    // Hibernate: the sandbox goes, the workspace stays; the exec brings up a new sandbox on it.
    let before = f.sandbox_pid(&id);
    f.lap(["sessions", "hibernate", &id]).success();
    assert_eq!(f.status(&id), "hibernated");
    assert!(workspace.join("home/note.txt").exists());
    assert_eq!(note(&f), "kept\ncode\n");
    assert_ne!(f.sandbox_pid(&id), before, "a new sandbox");

    // Restart: a fresh sandbox on the same workspace.
    f.lap(["sessions", "restart", &id]).success();
    f.wait_status(&id, "ready");
    assert_eq!(note(&f), "kept\ncode\n");

    // A crash of the sandbox: the session dies, its workspace does not; a restart resumes on it.
    let pid = f.sandbox_pid(&id);
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL).unwrap();
    f.wait_status(&id, "dead");
    assert!(workspace.join("home/note.txt").exists(), "the crash kept the workspace");
    f.lap(["sessions", "restart", &id]).success();
    f.wait_status(&id, "ready");
    assert_eq!(note(&f), "kept\ncode\n");

    // kill -9 of lap serve, with the session hibernated: still there after the restart, and woken.
    f.lap(["sessions", "hibernate", &id]).success();
    f.server.kill9();
    f.server.restart();
    assert_eq!(f.status(&id), "hibernated");
    assert_eq!(note(&f), "kept\ncode\n");
    assert_eq!(f.status(&id), "ready");
}

#[test]
fn a_paused_process_keeps_its_memory_and_counts_on_from_where_it_stopped() {
    let f = Fixture::new(&[]);
    let id = f.session();
    // The count lives in the shell's memory; the file only shows it.
    f.sh(
        &id,
        "nohup sh -c 'i=0; while :; do i=$((i+1)); echo $i > /work/count.tmp; mv /work/count.tmp /work/count; sleep 0.05; done' \
         >/dev/null 2>&1 &",
    );
    let count = f.workspace(&id).join("count");
    support::wait_until("the counter at 5", SETTLE, || {
        read_counter(&count).is_some_and(|n| n >= 5)
    });
    f.lap(["sessions", "pause", &id]).success();
    let paused = read_counter(&count).expect("a count");
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(read_counter(&count), Some(paused), "a paused process does not run");

    // Watched from before the resume, so the first value it writes after is seen.
    let watcher = std::thread::spawn({
        let count = count.clone();
        move || {
            let deadline = Instant::now() + SETTLE;
            loop {
                match read_counter(&count) {
                    Some(n) if n != paused => return Some(n),
                    _ if Instant::now() > deadline => return None,
                    _ => std::thread::sleep(Duration::from_millis(1)),
                }
            }
        }
    });
    f.lap(["sessions", "resume", &id]).success();
    let next = watcher.join().unwrap().expect("the counter moves after the resume");
    assert_eq!(next, paused + 1, "it counts on from {paused}, not from scratch");
    assert_eq!(f.status(&id), "ready");
}

#[test]
fn a_fork_sees_its_parents_files_and_its_writes_stay_its_own() {
    let f = Fixture::new(&[]);
    let parent = f.session();
    f.sh(&parent, "echo parent > /work/shared.txt");
    let child = f.lap(["sessions", "fork", &parent]).success().out().trim().to_owned();
    assert_ne!(child, parent);
    assert_eq!(f.status(&parent), "ready", "the parent runs on after the fork");
    assert_eq!(f.sh(&child, "cat /work/shared.txt"), "parent\n");
    f.sh(&child, "echo child > /work/shared.txt; echo new > /work/only-child.txt");
    assert_eq!(f.sh(&parent, "cat /work/shared.txt"), "parent\n");
    assert_eq!(
        f.sh(&parent, "test -e /work/only-child.txt && echo yes || echo no"),
        "no\n"
    );
    assert_ne!(f.workspace(&child), f.workspace(&parent));
}

#[test]
fn an_attach_wakes_a_hibernated_session() {
    use std::io::{Read, Write};
    let f = Fixture::new(&[]);
    let id = f.session();
    f.lap(["sessions", "hibernate", &id]).success();
    let token = f.show(&id)["tty_token"].as_str().expect("tty token").to_owned();
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", f.server.port)).unwrap();
    stream.set_read_timeout(Some(SETTLE)).unwrap();
    write!(
        stream,
        "GET /api/v1/managed_agents/sessions/{id}/tty HTTP/1.1\r\nHost: 127.0.0.1:{}\r\n\
         Authorization: Bearer {token}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        f.server.port
    )
    .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        stream.read_exact(&mut byte).expect("an answer to the attach");
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head);
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    // The terminal speaks: the first frame (its screen) arrives.
    let mut frame = [0u8; 2];
    stream.read_exact(&mut frame).expect("a first terminal frame");
    assert_eq!(f.status(&id), "ready");
}

#[test]
fn the_reaper_pauses_then_hibernates_then_deletes_an_idle_session_with_its_workspace() {
    let f = Fixture::new(&["--pause-after", "2s", "--hibernate-after", "4s", "--idle-ttl", "8s"]);
    let id = f.session();
    let workspace = f.workspace(&id);
    f.sh(&id, "echo x > /work/x");
    f.wait_status(&id, "paused");
    f.wait_status(&id, "hibernated");
    assert!(workspace.join("x").exists(), "hibernation keeps the workspace");
    f.wait_status(&id, "dead");
    support::wait_until("the reaped session's workspace gone", SETTLE, || !workspace.exists());
}

#[test]
fn delete_frees_the_disk_of_the_workspace_and_of_a_snapshot() {
    let f = Fixture::new(&[]);
    let id = f.session();
    f.sh(&id, "head -c 5000000 /dev/urandom > /work/blob");
    let workspace = f.workspace(&id);
    let size = f.show(&id)["workspace"]["size_bytes"].as_u64().unwrap();
    assert!(size >= 5_000_000, "size {size}");
    let snapshot = f
        .lap(["snapshots", "create", &id, "--name", "big", "--json"])
        .success()
        .json();
    let snapshot_dir = PathBuf::from(snapshot["path"].as_str().unwrap());
    assert!(snapshot["size_bytes"].as_u64().unwrap() >= 5_000_000);
    assert!(snapshot_dir.join("blob").exists());

    // Deleted while paused: a frozen sandbox dies too (thawed for its SIGKILL).
    let pid = f.sandbox_pid(&id);
    f.lap(["sessions", "pause", &id]).success();
    f.lap(["sessions", "delete", &id]).success();
    assert!(!alive(pid), "the paused sandbox's PID 1 is gone");
    assert!(!workspace.exists(), "the workspace is deleted with the session");
    assert!(snapshot_dir.exists(), "a snapshot outlives its session");
    f.lap(["snapshots", "delete", "big"]).success();
    assert!(!snapshot_dir.exists());
    assert_eq!(
        f.lap(["snapshots", "list", "--json"]).success().json(),
        serde_json::json!([])
    );
}

#[test]
fn a_session_from_a_snapshot_starts_on_its_files_and_the_snapshot_holds_no_real_credential() {
    const REAL: &str = "ghp_workspace_real_value_7c1e";
    let home = Home::new();
    let server = TestServer::start_local(&home);
    let f = Fixture { home, server };
    f.home
        .lap()
        .env("GITHUB_TOKEN", REAL)
        .run([
            "agents",
            "create",
            "cred",
            "--harness",
            "shell",
            "--credential",
            "GITHUB_TOKEN@api.github.test",
        ])
        .success();
    let id = f.lap(["sessions", "create", "cred"]).success().out().trim().to_owned();
    // Everything the agent can see of its credential goes into the workspace.
    f.sh(
        &id,
        "env > /work/env.txt; echo \"$GITHUB_TOKEN\" > \"$HOME/token\"; echo saved > /work/state",
    );
    let snapshot = f
        .lap(["snapshots", "create", &id, "--name", "cred-snap", "--json"])
        .success()
        .json();
    let dir = PathBuf::from(snapshot["path"].as_str().unwrap());
    let env = std::fs::read_to_string(dir.join("env.txt")).unwrap();
    assert!(env.contains("GITHUB_TOKEN=stub_"), "the snapshot has the stub: {env}");
    let grep = std::process::Command::new("grep")
        .args(["-rl", "--", REAL])
        .arg(&dir)
        .output()
        .unwrap();
    assert_eq!(
        grep.status.code(),
        Some(1),
        "the real value is in the snapshot: {grep:?}"
    );

    let from = f
        .lap(["sessions", "create", "cred", "--from", "cred-snap"])
        .success()
        .out()
        .trim()
        .to_owned();
    assert_eq!(f.sh(&from, "cat /work/state"), "saved\n");
}

#[test]
fn bad_requests_are_refused_with_a_hint_and_lose_nothing() {
    let f = Fixture::new(&[]);
    let id = f.session();
    f.sh(&id, "echo mine > /work/mine");
    f.lap(["snapshots", "create", &id, "--name", "taken"]).success();
    let snapshots = f.lap(["snapshots", "list", "--json"]).success().json();

    // A snapshot name that exists: 409, and the first snapshot is untouched.
    let again = f.lap(["snapshots", "create", &id, "--name", "taken"]);
    refused(&again, "a snapshot named `taken` already exists");
    assert_eq!(f.lap(["snapshots", "list", "--json"]).success().json(), snapshots);
    let bad = f.lap(["snapshots", "create", &id, "--name", "../etc"]);
    refused(&bad, "is not a valid snapshot name");

    // Pausing a dead session: 409 naming its status.
    let dead = f.session();
    f.lap(["sessions", "delete", &dead]).success();
    let pause = f.lap(["sessions", "pause", &dead]);
    refused(&pause, "is dead; only a live session can be paused");

    // Forking a deleted session: its workspace is gone, and it says so.
    let fork = f.lap(["sessions", "fork", &dead]);
    refused(&fork, "was deleted with the session");

    // An unknown snapshot.
    let from = f.lap(["sessions", "create", "ws", "--from", "nope"]);
    refused(&from, "snapshot `nope` not found");

    // Nothing of the live session was lost.
    assert_eq!(f.status(&id), "ready");
    assert_eq!(f.sh(&id, "cat /work/mine"), "mine\n");
}

/// Unmounts a test's small tmpfs (lazily: a sandbox may still hold it for a moment).
struct Unmount(PathBuf);

impl Drop for Unmount {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[test]
fn a_copy_onto_a_full_disk_is_refused_with_a_hint_and_loses_nothing() {
    if !nix::unistd::Uid::effective().is_root() {
        support::skip("mounting a small tmpfs as the data dir needs root");
        return;
    }
    let home = Home::new();
    let data = home.server_data();
    std::fs::create_dir_all(&data).unwrap();
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=48m", "tmpfs"])
        .arg(&data)
        .status()
        .unwrap();
    assert!(mounted.success(), "mount a 48 MiB tmpfs on {}", data.display());
    let _unmount = Unmount(data.clone());
    let server = TestServer::start_local(&home);
    let f = Fixture { home, server };
    f.lap(["agents", "create", "ws", "--harness", "shell"]).success();
    let id = f.session();
    f.sh(&id, "head -c 30000000 /dev/urandom > /work/blob");
    let sum = f.sh(&id, "cksum /work/blob");

    // 30 MB more does not fit in the 48 MiB the data dir has.
    let fork = f.lap(["sessions", "fork", &id]);
    refused(&fork, "the disk of the data dir is full");
    let snapshot = f.lap(["snapshots", "create", &id, "--name", "full"]);
    refused(&snapshot, "the disk of the data dir is full");

    // Nothing lost, nothing half-made.
    assert_eq!(f.status(&id), "ready", "the source was thawed after the failed copy");
    assert_eq!(f.sh(&id, "cksum /work/blob"), sum);
    let workspaces: Vec<String> = std::fs::read_dir(data.join("workspaces"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(workspaces, std::slice::from_ref(&id), "no partial copy is left");
    let leftovers = std::fs::read_dir(data.join("snapshots"))
        .map(|entries| entries.count())
        .unwrap_or(0);
    assert_eq!(leftovers, 0, "no partial snapshot is left");
    assert_eq!(
        f.lap(["snapshots", "list", "--json"]).success().json(),
        serde_json::json!([])
    );
    assert_eq!(
        f.lap(["sessions", "list", "--json"])
            .success()
            .json()
            .as_array()
            .unwrap()
            .len(),
        1,
        "no session was made for the failed fork"
    );
}

/// A session brought back on a new sandbox counts against its user's quota again: a hibernated
/// one's CPUs (it counted as a live session all along), by `resume`, `restart`, and the wake an
/// exec makes by itself.
#[test]
fn a_hibernated_session_comes_back_only_within_its_users_quota() {
    let f = Fixture::new(&[]);
    f.lap(["users", "create", "kim"]).success();
    let made = f
        .lap(["keys", "create", "--user", "kim", "--role", "member", "--json"])
        .success()
        .json();
    // `ws` sets no limits: each of its sandboxes counts 2 CPUs.
    f.lap(["users", "quota", "kim", "--cpus", "2"]).success();
    let kim = Home::new();
    kim.lap()
        .stdin(format!("{}\n", made["key"].as_str().unwrap()))
        .run(["login", "--url", &f.server.url, "--key-stdin"])
        .success();
    let first = lap(&kim, ["sessions", "create", "ws"])
        .success()
        .out()
        .trim()
        .to_owned();
    lap(&kim, ["sessions", "hibernate", &first]).success();
    let second = lap(&kim, ["sessions", "create", "ws"])
        .success()
        .out()
        .trim()
        .to_owned();
    // By hand, and by itself for an exec (as for an attach or a message).
    let by_hand = |verb: &str| lap(&kim, ["sessions", verb, &first]);
    let woken = [
        ("resume", by_hand("resume")),
        ("restart", by_hand("restart")),
        ("exec", lap(&kim, ["exec", &first, "--", "true"])),
    ];
    for (verb, refused) in woken {
        assert_ne!(refused.code, 0, "{verb}: {refused}");
        assert!(
            refused.stderr.contains("needs 2 CPUs") && refused.stderr.contains("lap users quota kim --cpus"),
            "{verb}: {refused}"
        );
        assert_eq!(f.status(&first), "hibernated", "nothing changed");
    }
    lap(&kim, ["sessions", "delete", &second]).success();
    lap(&kim, ["sessions", "resume", &first]).success();
    f.wait_status(&first, "ready");
}
