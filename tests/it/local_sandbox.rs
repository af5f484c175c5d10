//! The local sandbox backend with real namespaces and real processes (CI runs as root).
//!
//! Each test drives [`Local`] as `lap serve` would, runs commands inside the sandbox through its
//! harness, and checks what they could see or do. Network isolation is proven only against listeners
//! this test opens on the host's loopback, never by sending traffic anywhere else.

use std::collections::BTreeSet;
use std::io::ErrorKind;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::time::Duration;

use lap::sandbox::harness::ExecOutput;
use lap::sandbox::local::Local;
use lap::sandbox::{Sandbox, SandboxInfo, SandboxSpec};

/// The uid and gid the unprivileged test runs as when the tests run as root.
const NOBODY: u32 = 65534;
/// Tells the re-executed test binary where its data dir is.
const UNPRIVILEGED_DATA_DIR: &str = "LAP_TEST_UNPRIVILEGED_DATA_DIR";

/// How long a test waits for a condition it polls.
const WAIT: Duration = Duration::from_secs(10);

fn backend(data_dir: &Path) -> Local {
    Local::new(data_dir).with_program(env!("CARGO_BIN_EXE_lap"))
}

fn spec() -> SandboxSpec {
    SandboxSpec {
        harness_id: "shell".into(),
        session_id: Some("session-1".into()),
        ..SandboxSpec::default()
    }
}

/// A data dir and a backend on it; sandboxes still listed are deleted on drop.
struct Fixture {
    dir: tempfile::TempDir,
    local: Local,
}

impl Fixture {
    async fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let local = backend(dir.path());
        local.check().await.expect("namespaces can be created here");
        Self { dir, local }
    }

    async fn create(&self) -> SandboxInfo {
        self.local.create(&spec()).await.expect("sandbox created")
    }

    /// Runs a shell script in a sandbox.
    async fn sh(&self, id: &str, script: &str) -> ExecOutput {
        self.local
            .exec_output(id, &["/bin/sh", "-c", script])
            .await
            .expect("exec")
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        delete_all(self.dir.path());
    }
}

/// Deletes every sandbox under `data_dir`, also when a test failed half-way.
fn delete_all(data_dir: &Path) {
    let dir = data_dir.to_owned();
    // A fresh runtime: this may run outside (or at the end of) the test's runtime.
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let local = backend(&dir);
            for sandbox in local.list().await.unwrap_or_default() {
                let _ = local.delete(&sandbox.id).await;
            }
        });
    })
    .join()
    .unwrap();
}

#[tokio::test]
async fn a_sandbox_runs_commands_as_an_unprivileged_user_in_its_own_namespaces() {
    let fx = Fixture::new().await;
    let sandbox = fx.create().await;
    let out = fx
        .sh(
            &sandbox.id,
            "id -un; id -gn; hostname; echo $HOME; pwd; cat /proc/1/cmdline | tr '\\0' ' '; echo; id -u; id -g",
        )
        .await;
    assert_eq!(out.code, 0, "stderr: {}", out.stderr_str());
    let lines: Vec<_> = out.stdout_str().lines().map(str::to_owned).collect();
    assert_eq!(lines[0], "lap");
    assert_eq!(lines[1], "lap");
    // As root, the sandbox's own leased host uid (and gid); else the user namespace's 1000.
    let uid: u32 = lines[6].parse().unwrap();
    if nix::unistd::Uid::effective().is_root() {
        use lap::sandbox::local::uids;
        assert!((uids::FIRST..uids::FIRST + uids::COUNT).contains(&uid), "{uid}");
    } else {
        assert_eq!(uid, 1000);
    }
    assert_eq!(lines[7], lines[6]);
    assert_eq!(lines[2], format!("lap-{}", &sandbox.id[..8]));
    assert_eq!(lines[3], "/work/home");
    assert_eq!(lines[4], "/work/home");
    assert_eq!(
        lines[5], "lap harness --config config.json ",
        "PID 1 is the harness, naming no host path"
    );
    if nix::unistd::Uid::effective().is_root() {
        let run = fx.sh(&sandbox.id, "ls /run/lap").await;
        assert!(
            run.stderr_str().contains("Permission denied"),
            "only the harness reaches its socket: {run:?}"
        );
    }

    let status = fx
        .sh(
            &sandbox.id,
            "grep -E '^(Cap(Inh|Prm|Eff|Bnd|Amb)|NoNewPrivs):' /proc/self/status",
        )
        .await;
    for line in status.stdout_str().lines() {
        let value = line.split_whitespace().nth(1).unwrap();
        if line.starts_with("NoNewPrivs") {
            assert_eq!(value, "1", "{line}");
        } else {
            assert!(value.chars().all(|c| c == '0'), "no capability: {line}");
        }
    }
    assert_eq!(status.stdout_str().lines().count(), 6);

    let exit = fx.sh(&sandbox.id, "echo out; echo err >&2; exit 7").await;
    assert_eq!(
        (exit.code, exit.stdout_str().as_str(), exit.stderr_str().as_str()),
        (7, "out\n", "err\n")
    );
}

#[tokio::test]
async fn the_host_filesystem_and_processes_are_invisible_and_system_dirs_are_read_only() {
    let fx = Fixture::new().await;
    std::fs::write(fx.dir.path().join("master.key"), "lapk_secret").unwrap();
    let sandbox = fx.create().await;
    let data_dir = fx.dir.path().display().to_string();

    let hidden = fx
        .sh(
            &sandbox.id,
            &format!("ls /root; ls /home; cat {data_dir}/master.key; ls {data_dir}; ls /tmp; ls /run"),
        )
        .await;
    assert!(hidden.stdout_str().trim() == "lap", "only /run/lap exists: {hidden:?}");
    let errors = hidden.stderr_str();
    for path in ["/root", "/home", "master.key"] {
        assert!(
            errors.contains(path) && errors.contains("No such file"),
            "{path} is missing: {errors}"
        );
    }

    let procs = fx.sh(&sandbox.id, "echo $$; ls /proc | grep -E '^[0-9]+$'").await;
    let mut lines = procs
        .stdout_str()
        .lines()
        .map(|l| l.parse::<u32>().unwrap())
        .collect::<Vec<_>>();
    let shell = lines.remove(0);
    let seen: BTreeSet<u32> = lines.into_iter().collect();
    // PID 1 (init), PID 2 (harness server) and this shell; `ls` and `grep` may show up too.
    assert!(
        seen.contains(&1) && seen.contains(&2) && seen.contains(&shell),
        "{seen:?}"
    );
    assert!(
        seen.len() <= 5 && seen.iter().all(|pid| *pid < 100),
        "only the sandbox's processes: {seen:?}"
    );

    let mounts = fx
        .sh(
            &sandbox.id,
            "awk '{print $5, substr($6, 1, 2)}' /proc/self/mountinfo; touch /usr/x /x /dev/x",
        )
        .await;
    let options: Vec<(String, String)> = mounts
        .stdout_str()
        .lines()
        .map(|l| {
            let (a, b) = l.split_once(' ').unwrap();
            (a.to_owned(), b.to_owned())
        })
        .collect();
    let option = |path: &str| options.iter().find(|(p, _)| p == path).map(|(_, o)| o.as_str());
    assert_eq!(option("/"), Some("ro"), "{options:?}");
    assert_eq!(option("/usr"), Some("ro"));
    assert_eq!(option("/work"), Some("rw"));
    assert_eq!(option("/tmp"), Some("rw"));
    assert_eq!(option("/dev"), Some("ro"));
    assert_ne!(mounts.code, 0);
    assert_eq!(
        mounts.stderr_str().matches("Read-only file system").count(),
        3,
        "{mounts:?}"
    );

    let writable = fx
        .sh(
            &sandbox.id,
            "echo hi > /work/home/f && echo hi > /tmp/f && cat /work/home/f /tmp/f",
        )
        .await;
    assert_eq!(writable.stdout_str(), "hi\nhi\n", "{writable:?}");

    let mount = fx.sh(&sandbox.id, "mount -t tmpfs none /tmp").await;
    assert_ne!(mount.code, 0, "mount is refused: {mount:?}");
}

#[tokio::test]
async fn the_network_has_only_loopback_and_host_listeners_are_unreachable() {
    let fx = Fixture::new().await;
    let sandbox = fx.create().await;

    let tcp4 = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let udp4 = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let tcp6 = std::net::TcpListener::bind("[::1]:0").ok();
    let udp6 = std::net::UdpSocket::bind("[::1]:0").ok();
    let mut script = format!(
        "exec 3<>/dev/tcp/127.0.0.1/{} && echo tcp4-connected; echo x > /dev/udp/127.0.0.1/{};",
        tcp4.local_addr().unwrap().port(),
        udp4.local_addr().unwrap().port()
    );
    if let (Some(tcp6), Some(udp6)) = (&tcp6, &udp6) {
        script += &format!(
            "exec 4<>/dev/tcp/::1/{} && echo tcp6-connected; echo x > /dev/udp/::1/{};",
            tcp6.local_addr().unwrap().port(),
            udp6.local_addr().unwrap().port()
        );
    }
    let out = fx
        .local
        .exec_output(&sandbox.id, &["/bin/bash", "-c", &script])
        .await
        .unwrap();
    assert!(!out.stdout_str().contains("connected"), "{out:?}");
    assert!(out.stderr_str().contains("Connection refused"), "{out:?}");

    // Loopback delivery is synchronous: anything sent would already be queued.
    for listener in [Some(&tcp4), tcp6.as_ref()].into_iter().flatten() {
        listener.set_nonblocking(true).unwrap();
        assert_eq!(listener.accept().unwrap_err().kind(), ErrorKind::WouldBlock);
    }
    for socket in [Some(&udp4), udp6.as_ref()].into_iter().flatten() {
        socket.set_nonblocking(true).unwrap();
        assert_eq!(socket.recv(&mut [0u8; 16]).unwrap_err().kind(), ErrorKind::WouldBlock);
    }

    let links = fx
        .sh(
            &sandbox.id,
            "tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' '; echo routes $(tail -n +2 /proc/net/route | wc -l)",
        )
        .await;
    assert_eq!(links.stdout_str(), "lo\nroutes 0\n", "{links:?}");

    let resolve = fx.sh(&sandbox.id, "getent hosts example.com").await;
    assert_ne!(resolve.code, 0, "no name resolves: {resolve:?}");
    let local = fx.sh(&sandbox.id, "getent hosts localhost").await;
    assert_eq!(local.code, 0, "{local:?}");
}

#[tokio::test]
async fn two_sandboxes_cannot_see_each_others_files() {
    let fx = Fixture::new().await;
    let a = fx.create().await;
    let b = fx.create().await;
    assert_ne!(a.id, b.id);
    assert_eq!(
        fx.sh(&a.id, "echo from-a > /work/marker && echo ok").await.stdout_str(),
        "ok\n"
    );
    let from_b = fx
        .sh(
            &b.id,
            &format!("cat /work/marker; ls /work; ls {}", fx.dir.path().display()),
        )
        .await;
    assert_eq!(from_b.stdout_str(), "home\n", "{from_b:?}");
    assert!(from_b.stderr_str().contains("No such file"));
    assert_eq!(
        std::fs::read_to_string(fx.dir.path().join("sandboxes").join(&a.id).join("work/marker")).unwrap(),
        "from-a\n"
    );
}

/// Host PIDs of every process in the PID namespace of `pid`.
fn processes_in_namespace_of(pid: i32) -> Vec<i32> {
    let ns = std::fs::read_link(format!("/proc/{pid}/ns/pid")).unwrap();
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|p| std::fs::read_link(format!("/proc/{p}/ns/pid")).ok().as_ref() == Some(&ns))
        .collect()
}

fn still_running(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| !s.rsplit_once(')').unwrap().1.trim_start().starts_with('Z'))
        .unwrap_or(false)
}

#[tokio::test]
async fn delete_kills_the_whole_process_tree_and_removes_the_directory() {
    let fx = Fixture::new().await;
    let sandbox = fx.create().await;
    let started = fx.sh(&sandbox.id, "sleep 1000 >/dev/null 2>&1 & echo started").await;
    assert_eq!(
        (started.stdout_str().as_str(), started.stderr_str().as_str()),
        ("started\n", "")
    );
    let init = fx.local.state(&sandbox.id).unwrap().pid;
    let tree = processes_in_namespace_of(init);
    let names: Vec<String> = tree
        .iter()
        .map(|p| {
            std::fs::read_to_string(format!("/proc/{p}/cmdline"))
                .unwrap_or_default()
                .replace('\0', " ")
        })
        .collect();
    assert!(tree.len() >= 3, "init, server and sleep: {tree:?} {names:?}");

    // Nothing of the server's environment reached the sandbox (the master key could be there).
    assert_eq!(std::fs::read(format!("/proc/{init}/environ")).unwrap(), b"");

    fx.local.delete(&sandbox.id).await.unwrap();
    assert!(tree.iter().all(|pid| !still_running(*pid)), "{tree:?}");
    assert!(!fx.dir.path().join("sandboxes").join(&sandbox.id).exists());
    assert!(fx.local.list().await.unwrap().is_empty());
    fx.local.delete(&sandbox.id).await.expect("deleting again is fine");
}

#[tokio::test]
async fn a_fresh_backend_adopts_running_sandboxes_and_sweeps_dead_ones() {
    let fx = Fixture::new().await;
    let kept = fx.create().await;
    let killed = fx.create().await;

    // As after a restart of `lap serve`: a new backend on the same data dir.
    let restarted = backend(fx.dir.path());
    let mut listed = restarted.list().await.unwrap();
    listed.sort_by(|a, b| a.id.cmp(&b.id));
    let mut expected = vec![kept.clone(), killed.clone()];
    expected.sort_by(|a, b| a.id.cmp(&b.id));
    assert_eq!(listed, expected);
    let out = restarted
        .exec_output(&kept.id, &["/bin/echo", "adopted"])
        .await
        .unwrap();
    assert_eq!(out.stdout_str(), "adopted\n");

    let pid = restarted.state(&killed.id).unwrap().pid;
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL).unwrap();
    crate::support::wait_until_async("PID 1 dead", WAIT, || async { !still_running(pid) }).await;
    assert_eq!(restarted.list().await.unwrap(), vec![kept]);
    assert!(!fx.dir.path().join("sandboxes").join(&killed.id).exists());
}

#[tokio::test]
async fn commands_get_their_stdin() {
    let fx = Fixture::new().await;
    let sandbox = fx.create().await;
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let request = lap::wire::harness::ExecRequest {
        argv: vec!["/bin/sh".into(), "-c".into(), "tr a-z A-Z; echo done >&2".into()],
        cwd: Some("/tmp".into()),
        env: Vec::new(),
    };
    let code = fx
        .local
        .exec(&sandbox.id, request, &b"hello sandbox\n"[..], &mut out, &mut err)
        .await
        .unwrap();
    assert_eq!(
        (code, out.as_slice(), err.as_slice()),
        (0, &b"HELLO SANDBOX\n"[..], &b"done\n"[..])
    );
    let missing = fx.local.exec_output(&sandbox.id, &["/no/such/program"]).await;
    assert!(missing.is_err(), "{missing:?}");
}

/// What must hold in a sandbox created by an unprivileged user (inside a user namespace).
async fn unprivileged_checks(data_dir: &Path) {
    assert!(!nix::unistd::Uid::effective().is_root());
    let local = backend(data_dir);
    local.check().await.expect("user namespaces work for this user");
    let sandbox = local.create(&spec()).await.expect("sandbox created without root");
    let out = local
        .exec_output(
            &sandbox.id,
            &[
                "/bin/sh",
                "-c",
                "id -u; grep -E '^(CapEff|CapBnd|NoNewPrivs|Seccomp):' /proc/self/status | tr -s '\t ' ' '; \
                 tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' '; set -- /proc/[0-9]*; echo $*; \
                 echo hi > /work/home/f && cat /work/home/f; touch /usr/x",
            ],
        )
        .await
        .unwrap();
    assert_eq!(
        out.stdout_str(),
        "1000\nCapEff: 0000000000000000\nCapBnd: 0000000000000000\nNoNewPrivs: 1\nSeccomp: 2\nlo\n/proc/1 /proc/2 /proc/3\nhi\n",
        "{out:?}"
    );
    assert!(out.stderr_str().contains("Read-only file system"), "{out:?}");
    // The sandbox user owns /run/lap here (it is us); Landlock still keeps the socket from it.
    if lap::sandbox::local::landlock::kernel_abi().is_some() {
        let rm = local
            .exec_output(&sandbox.id, &["/bin/rm", "/run/lap/harness.sock"])
            .await
            .unwrap();
        assert!(rm.stderr_str().contains("Permission denied"), "{rm:?}");
        local
            .exec_output(&sandbox.id, &["true"])
            .await
            .expect("the socket is still there");
    }
    let pid = local.state(&sandbox.id).unwrap().pid;
    local.delete(&sandbox.id).await.unwrap();
    assert!(!still_running(pid));
    assert!(local.list().await.unwrap().is_empty());
}

#[test]
fn an_unprivileged_user_gets_the_same_sandbox_in_a_user_namespace() {
    let dir = tempfile::tempdir().unwrap();
    if !nix::unistd::Uid::effective().is_root() {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let checked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            rt.block_on(unprivileged_checks(dir.path()))
        }));
        delete_all(dir.path());
        return checked.unwrap();
    }
    // As root: run the checks again in this test binary, as `nobody`.
    let nobody = Some(nix::unistd::Uid::from_raw(NOBODY));
    nix::unistd::chown(dir.path(), nobody, Some(nix::unistd::Gid::from_raw(NOBODY))).unwrap();
    let output = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "local_sandbox::unprivileged_checks_as_nobody",
            "--ignored",
            "--nocapture",
        ])
        .env(UNPRIVILEGED_DATA_DIR, dir.path())
        .uid(NOBODY)
        .gid(NOBODY)
        .output()
        .unwrap();
    delete_all(dir.path());
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && stdout.contains("1 passed"),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[tokio::test]
#[ignore = "run as `nobody` by an_unprivileged_user_gets_the_same_sandbox_in_a_user_namespace"]
async fn unprivileged_checks_as_nobody() {
    let dir = std::env::var_os(UNPRIVILEGED_DATA_DIR).expect("started by the unprivileged test");
    unprivileged_checks(Path::new(&dir)).await;
}

#[tokio::test]
async fn a_sandbox_that_cannot_start_fails_with_the_reason_and_leaves_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    let broken = Local::new(dir.path()).with_program("/bin/false");
    let err = broken.create(&spec()).await.unwrap_err();
    assert!(
        err.to_string()
            .contains("the sandbox did not start: `/bin/false harness` exited"),
        "{err}"
    );
    assert_eq!(std::fs::read_dir(dir.path().join("sandboxes")).unwrap().count(), 0);
    let check = broken.check().await.unwrap_err().to_string();
    assert!(check.contains("cannot create Linux namespaces"), "{check}");
}

/// `lap serve` with the local backend on a temporary data dir and home; killed on drop.
struct Server {
    child: std::process::Child,
    url: String,
    home: tempfile::TempDir,
    data: tempfile::TempDir,
}

impl Server {
    fn start(home: tempfile::TempDir, data: tempfile::TempDir) -> Self {
        use std::io::BufRead;
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_lap"))
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(data.path())
            // Every sandbox here is a session's: the test counts them.
            .args(["--warm-pool-size", "0"])
            .env_clear()
            .env("HOME", home.path())
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = std::io::BufReader::new(child.stderr.take().unwrap()).lines();
        let url = loop {
            let line = lines.next().expect("lap serve exited before listening").unwrap();
            if let Some(rest) = line.split("listening on ").nth(1) {
                break rest.split_whitespace().next().unwrap().to_owned();
            }
        };
        // Keep draining stderr so the server never blocks on a full pipe.
        std::thread::spawn(move || lines.for_each(drop));
        Self { child, url, home, data }
    }

    /// Runs the `lap` client against this server.
    fn lap(&self, args: &[&str], stdin: &[u8]) -> std::process::Output {
        use std::io::Write;
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_lap"))
            .args(["--server", &self.url])
            .args(args)
            .env_clear()
            .env("HOME", self.home.path())
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(stdin).unwrap();
        child.wait_with_output().unwrap()
    }

    fn json(&self, args: &[&str]) -> serde_json::Value {
        let out = self.lap(args, b"");
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// Kills the server with SIGKILL and starts a new one on the same data dir.
    fn kill_and_restart(mut self) -> Self {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
        let home = std::mem::replace(&mut self.home, tempfile::tempdir().unwrap());
        let data = std::mem::replace(&mut self.data, tempfile::tempdir().unwrap());
        Self::start(home, data)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        delete_all(self.data.path());
    }
}

#[test]
fn lap_exec_runs_a_command_in_a_session_and_survives_a_killed_server() {
    let server = Server::start(tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    server.json(&["--json", "agents", "create", "demo", "--harness", "shell"]);
    let session = server.json(&["--json", "sessions", "create", "demo"]);
    let id = session["id"].as_str().unwrap().to_owned();
    crate::support::wait_until("the session ready", WAIT, || {
        server.json(&["--json", "sessions", "show", &id])["status"] == "ready"
    });

    let out = server.lap(
        &[
            "exec",
            &id,
            "--",
            "sh",
            "-c",
            "id -un; cat /proc/1/cmdline | tr '\\0' ' '; tr a-z A-Z; echo oops >&2; exit 3",
        ],
        b"hello\n",
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    assert!(stdout.starts_with("lap\nlap harness "), "{stdout}");
    assert!(stdout.ends_with("HELLO\n"), "{stdout}");
    assert_eq!(String::from_utf8_lossy(&out.stderr), "oops\n");

    // kill -9 of the server leaves the sandbox running; the next server adopts it, and deletes a
    // sandbox no session owns.
    let orphan = tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(backend(server.data.path()).create(&spec()))
        .unwrap();
    let sandboxes = server.data.path().join("sandboxes");
    assert!(sandboxes.join(&orphan.id).exists());
    let server = server.kill_and_restart();
    assert!(
        !sandboxes.join(&orphan.id).exists(),
        "the orphan sandbox was deleted at start"
    );
    assert_eq!(server.json(&["--json", "sessions", "show", &id])["status"], "ready");
    let out = server.lap(&["exec", &id, "--", "echo", "still here"], b"");
    assert_eq!(
        (out.status.code(), out.stdout.as_slice()),
        (Some(0), &b"still here\n"[..]),
        "{out:?}"
    );

    let missing = server.lap(&["exec", &id, "--", "/no/such/program"], b"");
    assert_eq!(missing.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("cannot run `/no/such/program`"));

    server.json(&["--json", "sessions", "delete", &id]);
    assert_eq!(std::fs::read_dir(&sandboxes).unwrap().count(), 0);
    let gone = server.lap(&["exec", &id, "--", "true"], b"");
    assert!(String::from_utf8_lossy(&gone.stderr).contains("not ready"), "{gone:?}");
}

#[tokio::test]
async fn namespaces_mounts_and_tracing_are_refused_by_seccomp() {
    let fx = Fixture::new().await;
    let sandbox = fx.create().await;
    let status = fx.sh(&sandbox.id, "grep '^Seccomp:' /proc/self/status").await;
    assert_eq!(status.stdout_str(), "Seccomp:\t2\n", "filter mode: {status:?}");
    for (script, what) in [
        ("unshare -r true", "a user namespace (unshare)"),
        ("unshare -n true", "a network namespace"),
        (
            "python3 -c 'import os; os.unshare(os.CLONE_NEWUSER)'",
            "a user namespace from python",
        ),
        (
            "python3 -c 'import ctypes, sys; sys.exit(ctypes.CDLL(None).syscall(101, 16, 1, 0, 0) != -1)' \
             && python3 -c 'import ctypes; l = ctypes.CDLL(None, use_errno=True); l.syscall(101, 16, 1, 0, 0); \
             exit(ctypes.get_errno() != 1)'",
            "ptrace of PID 1 (EPERM)",
        ),
    ] {
        let out = fx.sh(&sandbox.id, script).await;
        let refused = if what.starts_with("ptrace") {
            out.code == 0
        } else {
            out.code != 0
        };
        assert!(refused, "{what} must be refused: {out:?}");
    }
    // Ordinary work still runs: processes, threads (clone3 falls back to clone), pipes.
    let work = fx
        .sh(&sandbox.id, "python3 -c 'import threading; t = threading.Thread(target=print, args=(\"thread\",)); t.start(); t.join()' | cat")
        .await;
    assert_eq!((work.code, work.stdout_str().as_str()), (0, "thread\n"), "{work:?}");
}

#[tokio::test]
async fn a_fork_bomb_and_a_memory_hog_stay_inside_their_limits() {
    let dir = tempfile::tempdir().unwrap();
    let limits = lap::sandbox::local::Limits {
        memory_bytes: 64 * 1024 * 1024,
        pids: 32,
        cpu_millis: 500,
    };
    let fx = Fixture {
        local: backend(dir.path()).with_limits(limits),
        dir,
    };
    let sandbox = fx.create().await;
    let cgroups = fx.local.state(&sandbox.id).unwrap().cgroups;
    assert!(
        cgroups.iter().any(|c| c.to_string_lossy().contains("/pids/")),
        "{cgroups:?}"
    );

    // A bounded bomb: 100 forks (harmless if the limit failed), of which at most 32 may succeed;
    // the children are killed and reaped before it exits, so the sandbox can run commands again.
    let bomb_script = "import os, time
kids = []
for _ in range(100):
    try:
        pid = os.fork()
    except OSError as e:
        print('refused', e.errno)
        break
    if pid == 0:
        time.sleep(60)
        os._exit(0)
    kids.append(pid)
print(len(kids))
for kid in kids:
    os.kill(kid, 9)
    os.waitpid(kid, 0)
";
    let bomb = fx
        .local
        .exec_output(&sandbox.id, &["/usr/bin/python3", "-c", bomb_script])
        .await
        .unwrap();
    let lines: Vec<String> = bomb.stdout_str().lines().map(str::to_owned).collect();
    assert_eq!(
        lines.first().map(String::as_str),
        Some("refused 11"),
        "EAGAIN: {bomb:?}"
    );
    let forked: u32 = lines[1].parse().unwrap();
    assert!(forked < 32, "{forked} forks succeeded");

    // 200 MiB written (harmless if the limit failed) against a 64 MiB limit: the OOM killer ends it.
    let hog = fx
        .sh(
            &sandbox.id,
            "python3 -c 'b = b\"x\" * (200 * 1024 * 1024); print(len(b))'",
        )
        .await;
    assert_eq!(hog.code, 128 + 9, "killed by SIGKILL: {hog:?}");
    let after = fx.sh(&sandbox.id, "echo still answering").await;
    assert_eq!(after.stdout_str(), "still answering\n");

    fx.local.delete(&sandbox.id).await.unwrap();
    assert!(cgroups.iter().all(|c| !c.exists()), "cgroups removed: {cgroups:?}");
}

#[tokio::test]
async fn the_proxy_listener_is_born_in_the_sandbox_and_served_from_the_host() {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
    let fx = Fixture::new().await;
    let sandbox = fx.create().await;
    let request = "exec 3<>/dev/tcp/127.0.0.1/3128 && echo hello >&3 && head -1 <&3; echo $HTTPS_PROXY";

    // Until the host takes the listener, the harness answers for it.
    let before = fx
        .local
        .exec_output(&sandbox.id, &["/bin/bash", "-c", request])
        .await
        .unwrap();
    assert_eq!(
        before.stdout_str(),
        "HTTP/1.1 502 Bad Gateway\r\nhttp://127.0.0.1:3128\n",
        "{before:?}"
    );

    let listener = fx.local.take_proxy_listener(&sandbox.id).await.unwrap();
    assert_eq!(listener.local_addr().unwrap().to_string(), "127.0.0.1:3128");
    listener.set_nonblocking(true).unwrap();
    let listener = tokio::net::TcpListener::from_std(listener).unwrap();
    let proxy = tokio::spawn(async move {
        let (conn, _) = listener.accept().await.unwrap();
        let (rd, mut wr) = conn.into_split();
        let mut line = String::new();
        tokio::io::BufReader::new(rd).read_line(&mut line).await.unwrap();
        wr.write_all(b"proxy-ok\n").await.unwrap();
        line
    });
    let through = fx
        .local
        .exec_output(&sandbox.id, &["/bin/bash", "-c", request])
        .await
        .unwrap();
    assert_eq!(through.stdout_str(), "proxy-ok\nhttp://127.0.0.1:3128\n", "{through:?}");
    assert_eq!(proxy.await.unwrap(), "hello\n");

    // A restarted server takes it again.
    let again = backend(fx.dir.path()).take_proxy_listener(&sandbox.id).await.unwrap();
    assert_eq!(again.local_addr().unwrap().port(), 3128);
}

#[tokio::test]
async fn pid_1_reaps_orphans_and_sigterm_stops_the_sandbox() {
    let fx = Fixture::new().await;
    let sandbox = fx.create().await;
    // The background sleep outlives its shell, is re-parented to PID 1, and exits there.
    let orphan = fx.sh(&sandbox.id, "sleep 0.01 >/dev/null 2>&1 & echo $!").await;
    let orphan_pid = orphan.stdout_str().trim().to_owned();
    crate::support::wait_until_async("the orphan reaped", WAIT, || async {
        let stat = fx
            .sh(&sandbox.id, &format!("cat /proc/{orphan_pid}/stat 2>/dev/null; true"))
            .await;
        if stat.stdout_str().is_empty() {
            Ok(())
        } else {
            Err(stat.stdout_str().to_owned())
        }
    })
    .await;

    let pid = fx.local.state(&sandbox.id).unwrap().pid;
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGTERM).unwrap();
    crate::support::wait_until_async("the sandbox stopped by SIGTERM", WAIT, || async { !still_running(pid) }).await;
    assert!(fx.local.list().await.unwrap().is_empty());
}

/// Reads a terminal's output until its screen satisfies `done`; returns the exit code if one came.
async fn watch(
    tty: &mut lap::sandbox::TtyChannel,
    screen: &mut vt100::Parser,
    done: impl Fn(&str) -> bool,
) -> Option<i32> {
    use lap::sandbox::TtyOutput;
    tokio::time::timeout(WAIT, async {
        while !done(&screen.screen().contents()) {
            match tty.output.recv().await.expect("the terminal stays connected") {
                TtyOutput::Repaint(bytes) => {
                    *screen = vt100::Parser::new(24, 80, 0);
                    screen.process(&bytes);
                }
                TtyOutput::Data(bytes) => screen.process(&bytes),
                TtyOutput::Viewers(_) => {}
                TtyOutput::Exit(code) => return Some(code),
            }
        }
        None
    })
    .await
    .unwrap_or_else(|_| panic!("timed out; screen:\n{}", screen.screen().contents()))
}

#[tokio::test]
async fn the_agent_runs_under_a_pty_as_the_sandbox_user_and_survives_its_viewers() {
    use lap::sandbox::TtyInput;
    let fixture = Fixture::new().await;
    let info = fixture
        .local
        .create(&SandboxSpec {
            command: Some("bash --norc --noprofile -i".into()),
            ..spec()
        })
        .await
        .expect("sandbox created");
    let mut tty = fixture.local.attach(&info.id, 80, 24).await.expect("attach");
    let mut screen = vt100::Parser::new(24, 80, 0);
    tty.input
        .send(TtyInput::Data(b"echo \"$(id -un) $PWD $TERM $(stty size)\"\r".to_vec()))
        .await
        .unwrap();
    watch(&mut tty, &mut screen, |s| {
        s.contains("lap /work/home xterm-256color 24 80")
    })
    .await;
    tty.input
        .send(TtyInput::Data(b"echo mar''ker\r".to_vec()))
        .await
        .unwrap();
    watch(&mut tty, &mut screen, |s| s.contains("marker")).await;
    drop(tty);
    // Detached; a new viewer is repainted with the screen as it was, and the shell still runs.
    let mut tty = fixture.local.attach(&info.id, 80, 24).await.expect("attach again");
    let mut screen = vt100::Parser::new(24, 80, 0);
    watch(&mut tty, &mut screen, |s| s.contains("marker")).await;
    tty.input.send(TtyInput::Data(b"exit 3\r".to_vec())).await.unwrap();
    let code = watch(&mut tty, &mut screen, |_| false).await;
    assert_eq!(code, Some(3));
}

#[tokio::test]
async fn a_sandbox_without_an_agent_command_has_no_terminal() {
    let fixture = Fixture::new().await;
    let info = fixture.create().await;
    let err = fixture.local.attach(&info.id, 80, 24).await.err().expect("no terminal");
    assert!(err.to_string().contains("runs no agent"), "{err}");
}

/// Host PID and uid of each process of a sandbox that does not run as root (its agent's).
fn agent_processes(pid1: i32) -> Vec<(i32, u32)> {
    processes_in_namespace_of(pid1)
        .into_iter()
        .filter_map(|pid| {
            let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
            let uid = status
                .lines()
                .find_map(|l| l.strip_prefix("Uid:"))?
                .split_whitespace()
                .next()?;
            let uid: u32 = uid.parse().ok()?;
            (uid != 0).then_some((pid, uid))
        })
        .collect()
}

#[tokio::test]
async fn as_root_each_sandbox_agent_has_its_own_host_uid_and_cannot_reach_the_others_work() {
    if !nix::unistd::Uid::effective().is_root() {
        crate::support::skip("one host uid per sandbox needs `lap serve` as root (CI runs as root)");
        return;
    }
    let fx = Fixture::new().await;
    let agent = || SandboxSpec {
        command: Some("sleep 600".into()),
        ..spec()
    };
    let a = fx.local.create(&agent()).await.unwrap();
    let b = fx.local.create(&agent()).await.unwrap();
    for (sandbox, text) in [(&a, "from a"), (&b, "from b")] {
        let out = fx.sh(&sandbox.id, &format!("echo '{text}' > /work/home/note")).await;
        assert_eq!(out.code, 0, "{out:?}");
    }
    // The agents, seen from the host: each runs as its own uid.
    let find = |id: &str| {
        let pid1 = fx.local.state(id).unwrap().pid;
        crate::support::wait_until(&format!("an agent process in sandbox {id}"), WAIT, || {
            agent_processes(pid1).first().copied()
        })
    };
    let (pid_a, uid_a) = find(&a.id);
    let (pid_b, uid_b) = find(&b.id);
    assert_ne!(uid_a, uid_b, "two sandboxes' agents share host uid {uid_a}");
    let leases = fx.local.uid_leases();
    let dir_a = fx.dir.path().join("sandboxes").join(&a.id);
    assert_eq!(leases.holder(uid_a), Some(dir_a));

    // A process of A's uid on the host reaches A's /work through its agent, and not B's: with one
    // shared uid it would read both.
    let read_as_a = |path: String| {
        std::process::Command::new("cat")
            .arg(path)
            .uid(uid_a)
            .gid(uid_a)
            .output()
            .unwrap()
    };
    let own = read_as_a(format!("/proc/{pid_a}/root/work/home/note"));
    assert_eq!(String::from_utf8_lossy(&own.stdout), "from a\n", "{own:?}");
    let other = read_as_a(format!("/proc/{pid_b}/root/work/home/note"));
    assert!(!other.status.success(), "{other:?}");
    assert!(
        String::from_utf8_lossy(&other.stderr).contains("Permission denied"),
        "{other:?}"
    );

    // A restarted backend keeps the lease; delete frees it.
    let again = backend(fx.dir.path());
    assert_eq!(again.list().await.unwrap().len(), 2);
    assert!(leases.holder(uid_a).is_some());
    again.delete(&a.id).await.unwrap();
    assert!(leases.holder(uid_a).is_none());
    assert!(leases.holder(uid_b).is_some());
}

#[tokio::test]
async fn landlock_confines_the_agents_writes_and_the_agent_dies_first_on_oom() {
    let fx = Fixture::new().await;
    let sandbox = fx.create().await;
    let log = std::fs::read_to_string(fx.dir.path().join("sandboxes").join(&sandbox.id).join("harness.log")).unwrap();
    // The OOM killer's order: commands first (500), the harness never before them (-500 as root).
    let adj = fx.sh(&sandbox.id, "cat /proc/self/oom_score_adj").await;
    assert_eq!(adj.stdout_str(), "500\n", "{adj:?}");
    let pid1 = fx.local.state(&sandbox.id).unwrap().pid;
    let harness_adj = std::fs::read_to_string(format!("/proc/{pid1}/oom_score_adj")).unwrap();
    // -500 where lap may lower it (root with CAP_SYS_RESOURCE), else the default 0: below 500.
    let harness_adj: i32 = harness_adj.trim().parse().unwrap();
    assert!(harness_adj == -500 || harness_adj == 0, "{harness_adj}; {log}");

    let Some(abi) = lap::sandbox::local::landlock::kernel_abi() else {
        assert!(log.contains("Landlock is not available"), "{log}");
        crate::support::skip("this kernel has no Landlock: the Landlock part of this test did not run");
        return;
    };
    assert!(log.contains(&format!("Landlock ABI {abi}")), "{log}");
    // The file mode lets a process raise its own oom_score_adj; only Landlock (read-only /proc)
    // refuses it.
    let raise = fx.sh(&sandbox.id, "echo 600 > /proc/self/oom_score_adj").await;
    assert_ne!(raise.code, 0, "{raise:?}");
    assert!(raise.stderr_str().contains("Permission denied"), "{raise:?}");
    // What agents need still works: listing anything, writing /work, /tmp and /dev/null, running
    // system tools.
    let work = fx
        .sh(
            &sandbox.id,
            "ls / >/dev/null && echo w > /work/home/f && echo t > /tmp/f && cat /work/home/f /tmp/f \
             && python3 -c 'print(1)' && mkdir /work/home/d && mv /work/home/f /work/home/d/ && echo ok",
        )
        .await;
    assert_eq!(work.stdout_str(), "w\nt\n1\nok\n", "{work:?}");
}

#[tokio::test]
async fn a_late_start_binds_the_sessions_environment_and_starts_the_agent_once_where_asked() {
    use lap::sandbox::{AgentStart, TtyInput};
    let fixture = Fixture::new().await;
    // Made like a warm sandbox: no session, no agent, an environment of its own.
    let info = fixture
        .local
        .create(&SandboxSpec {
            session_id: None,
            env: vec![("WHO".into(), "warm".into())],
            ..spec()
        })
        .await
        .expect("sandbox created");
    assert_eq!(fixture.sh(&info.id, "echo $WHO").await.stdout_str(), "warm\n");
    let err = fixture.local.wait_agent(&info.id).await.expect_err("no agent yet");
    assert!(err.to_string().contains("runs no agent"), "{err}");

    fixture.sh(&info.id, "mkdir -p /work/place").await;
    let start = AgentStart {
        env: vec![("WHO".into(), "session".into())],
        command: Some("bash --norc --noprofile -i".into()),
        cwd: Some("/work/place".into()),
        home_files: Vec::new(),
    };
    fixture
        .local
        .start_agent(&info.id, start.clone())
        .await
        .expect("started");
    let out = fixture.sh(&info.id, "echo $WHO").await.stdout_str();
    assert_eq!(out, "session\n", "later commands get the session's environment");
    let mut tty = fixture.local.attach(&info.id, 80, 24).await.expect("attach");
    let mut screen = vt100::Parser::new(24, 80, 0);
    tty.input
        .send(TtyInput::Data(b"echo \"$WHO at $PWD\"\r".to_vec()))
        .await
        .unwrap();
    watch(&mut tty, &mut screen, |s| s.contains("session at /work/place")).await;

    let again = fixture
        .local
        .start_agent(&info.id, start)
        .await
        .expect_err("one agent only");
    assert!(again.to_string().contains("already started"), "{again}");
    tty.input.send(TtyInput::Data(b"exit 4\r".to_vec())).await.unwrap();
    assert_eq!(fixture.local.wait_agent(&info.id).await.unwrap(), 4);
}
