//! Per-agent resource limits, end to end with `lap serve`: validated and stored by the API, set with
//! `lap agents create/edit`, and enforced in the agent's sandboxes — by cgroups where they are
//! writable, and by rlimits when `lap serve --sandbox-cgroups off` (or the machine) leaves none.

use std::time::Duration;

use crate::support;
use crate::support::{Home, TestServer, lap};

const WAIT: Duration = Duration::from_secs(20);

/// A ready session of `agent`; returns its id.
fn ready_session(home: &Home, agent: &str) -> String {
    let session = lap(home, ["--json", "sessions", "create", agent]).success().json();
    let id = session["id"].as_str().unwrap().to_owned();
    support::wait_until(&format!("session {id} ready"), WAIT, || {
        let shown = lap(home, ["--json", "sessions", "show", &id]).success().json();
        match shown["status"].as_str() {
            Some("ready") => Ok(()),
            Some("creating") => Err(shown),
            other => panic!("session {id} is {other:?}: {shown}"),
        }
    });
    id
}

/// The sandbox of a session: its directory under the server's data dir.
fn sandbox_dir(home: &Home, server: &TestServer, session: &str) -> std::path::PathBuf {
    let shown = lap(home, ["--json", "sessions", "show", session]).success().json();
    // unix://<data-dir>/sandboxes/<id>/run/harness.sock
    let url = shown["sandbox_url"].as_str().expect("a sandbox url");
    let socket = std::path::Path::new(url.strip_prefix("unix://").unwrap());
    let dir = socket.parent().unwrap().parent().unwrap().to_owned();
    assert!(dir.starts_with(server.data_dir().join("sandboxes")), "{url}");
    dir
}

#[test]
fn limits_are_validated_stored_and_changed_one_at_a_time() {
    let home = Home::new();
    let _server = TestServer::start(&home);
    let created = lap(
        &home,
        [
            "--json",
            "agents",
            "create",
            "small",
            "--harness",
            "shell",
            "--memory-mb",
            "256",
            "--pids",
            "64",
            "--cpus",
            "0.5",
        ],
    )
    .success()
    .json();
    assert_eq!(
        created["limits"],
        serde_json::json!({"memory_mb": 256, "pids": 64, "cpus": 0.5})
    );
    // Only the flags given change; 0 returns a limit to the server's default.
    let edited = lap(
        &home,
        ["--json", "agents", "edit", "small", "--pids", "0", "--cpus", "1"],
    )
    .success()
    .json();
    assert_eq!(edited["limits"], serde_json::json!({"memory_mb": 256, "cpus": 1.0}));
    let shown = lap(&home, ["agents", "show", "small"]).success();
    assert!(
        shown.out().contains("memory 256 MiB, pids default, cpus 1"),
        "{}",
        shown.out()
    );

    for (flag, value, message) in [
        (
            "--memory-mb",
            "8",
            "invalid limits.memory_mb `8`: it must be 16 to 1048576 (MiB)",
        ),
        ("--pids", "2", "invalid limits.pids `2`: it must be 16 to 1000000"),
        ("--cpus", "2000", "invalid limits.cpus `2000`: it must be 0.01 to 1024"),
    ] {
        let refused = lap(&home, ["agents", "edit", "small", flag, value]);
        assert_ne!(refused.code, 0, "{flag} {value}");
        assert!(refused.stderr.contains(message), "{flag} {value}: {}", refused.stderr);
        assert!(refused.stderr.contains("hint:"), "{}", refused.stderr);
    }
}

#[test]
fn an_agents_limits_reach_its_sandboxes_cgroups() {
    let home = Home::new();
    let server = TestServer::start_local(&home);
    let cleanup = support::LocalSandboxes(server.data_dir().to_owned());
    lap(
        &home,
        [
            "agents",
            "create",
            "capped",
            "--harness",
            "shell",
            "--memory-mb",
            "96",
            "--pids",
            "48",
            "--cpus",
            "0.25",
        ],
    )
    .success();
    let session = ready_session(&home, "capped");
    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(sandbox_dir(&home, &server, &session).join("state.json")).unwrap())
            .unwrap();
    let cgroups: Vec<std::path::PathBuf> = serde_json::from_value(state["cgroups"].clone()).unwrap();
    if cgroups.is_empty() {
        support::skip("no cgroup hierarchy is writable here (the rlimit test covers this machine)");
        return;
    }
    let read = |file: &str| {
        cgroups
            .iter()
            .find_map(|dir| std::fs::read_to_string(dir.join(file)).ok())
            .map(|s| s.trim().to_owned())
    };
    let mut checked = 0;
    if let Some(memory) = read("memory.limit_in_bytes").or_else(|| read("memory.max")) {
        assert_eq!(memory, (96u64 << 20).to_string());
        checked += 1;
    }
    if let Some(pids) = read("pids.max") {
        assert_eq!(pids, "48");
        checked += 1;
    }
    if let Some(quota) = read("cpu.cfs_quota_us") {
        assert_eq!(quota, "25000");
        checked += 1;
    } else if let Some(max) = read("cpu.max") {
        assert_eq!(max, "25000 100000");
        checked += 1;
    }
    assert!(checked > 0, "no limit file in {cgroups:?}");
    lap(&home, ["sessions", "delete", &session]).success();
    drop(cleanup);
}

#[test]
fn without_cgroups_rlimits_contain_a_fork_bomb_and_a_memory_hog_and_lap_serve_keeps_answering() {
    let home = Home::new();
    let server = TestServer::start_local_env(&home, vec![("LAP_SANDBOX_CGROUPS", "off")]);
    let _cleanup = support::LocalSandboxes(server.data_dir().to_owned());
    lap(
        &home,
        [
            "agents",
            "create",
            "bomber",
            "--harness",
            "shell",
            "--memory-mb",
            "64",
            "--pids",
            "32",
        ],
    )
    .success();
    let session = ready_session(&home, "bomber");
    let dir = sandbox_dir(&home, &server, &session);
    let state = std::fs::read_to_string(dir.join("state.json")).unwrap();
    assert!(state.contains("\"cgroups\": []"), "no cgroup was made: {state}");
    let log = std::fs::read_to_string(dir.join("harness.log")).unwrap();
    assert!(log.contains("limits by rlimit instead of cgroup"), "{log}");

    // A bounded bomb: 100 forks (harmless if the limit failed), of which fewer than 32 may succeed.
    let bomb = "import os, time
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
    let out = lap(&home, ["exec", &session, "--", "python3", "-c", bomb]).success();
    let lines: Vec<&str> = out.out().lines().collect();
    assert_eq!(lines.first(), Some(&"refused 11"), "EAGAIN: {}", out.out());
    let forked: u32 = lines[1].parse().unwrap();
    assert!(forked < 32, "{forked} forks succeeded");
    let (status, _) = server.http_get("/api/v1/health", None);
    assert_eq!(status, 200, "lap serve answers after the bomb");

    // 200 MiB (harmless if the limit failed) against RLIMIT_DATA of 64 MiB: the allocation fails.
    let hog = lap(
        &home,
        [
            "exec",
            &session,
            "--",
            "python3",
            "-c",
            "b = b'x' * (200 * 1024 * 1024); print(len(b))",
        ],
    );
    assert_eq!(hog.code, 1, "{hog}");
    assert!(hog.stderr.contains("MemoryError"), "{}", hog.stderr);
    let (status, _) = server.http_get("/api/v1/health", None);
    assert_eq!(status, 200, "lap serve answers after the hog");
    lap(&home, ["exec", &session, "--", "echo", "still answering"]).success();
    lap(&home, ["sessions", "delete", &session]).success();
}
