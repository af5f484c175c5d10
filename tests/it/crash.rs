//! Crash safety with real sandboxes: `lap serve` killed with SIGKILL in the middle of concurrent
//! creates and deletes, several times, then restarted on the same data dir.
//!
//! After each restart, once the reconciler has settled: the agent and its credential are intact; no
//! session is left `creating`; every `ready` session's sandbox answers `lap exec`; every `dead` or
//! `failed` one says why; no sandbox directory or `lap harness` process exists without a ready
//! session or a warm-pool row (`lap admin stats`); and the warm pool is back to its size. The kill
//! moments come from a fixed-seed generator, so a failure reproduces.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::support;
use crate::support::{Home, TestServer, lap};

const ROUNDS: usize = 3;
const WORKERS: usize = 3;
/// Creates a worker makes at most in one round.
const CREATES_PER_ROUND: usize = 6;
const SETTLE: Duration = Duration::from_secs(60);
/// The default `--warm-pool-size`.
const POOL_SIZE: u64 = 2;

/// xorshift64: reproducible "random" moments.
struct Moments(u64);

impl Moments {
    fn next_ms(&mut self, low: u64, high: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        low + self.0 % (high - low)
    }
}

#[test]
fn kill_9_during_create_and_delete_churn_loses_nothing_and_leaves_no_orphan() {
    let home = Home::new();
    let mut server = TestServer::start_local(&home);
    home.lap()
        .env("GITHUB_TOKEN", "ghp_crash_test_value")
        .run([
            "agents",
            "create",
            "churn",
            "--harness",
            "shell",
            "--credential",
            "GITHUB_TOKEN@api.github.test",
        ])
        .success();
    let fingerprint = lap(&home, ["agents", "show", "churn", "--json"]).json()["credentials"][0]["fingerprint"].clone();
    let mut moments = Moments(0x9e37_79b9_7f4a_7c15);

    for round in 0..ROUNDS {
        let stop = AtomicBool::new(false);
        std::thread::scope(|scope| {
            for _ in 0..WORKERS {
                scope.spawn(|| churn(&home, &stop));
            }
            // Chaos timing, not a wait for a condition: the kill lands wherever the churn is.
            std::thread::sleep(Duration::from_millis(moments.next_ms(50, 700)));
            server.kill9();
            stop.store(true, Ordering::SeqCst);
        });
        server.restart();
        let ready = settled(&home, &server, round);
        let agent = lap(&home, ["agents", "show", "churn", "--json"]).json();
        assert_eq!(
            agent["credentials"][0]["fingerprint"], fingerprint,
            "round {round}: the credential changed"
        );
        for id in &ready {
            lap(&home, ["exec", id, "--", "true"]).success();
        }
    }

    for session in sessions(&home) {
        if session["status"] == "ready" {
            lap(&home, ["sessions", "delete", session["id"].as_str().unwrap()]).success();
        }
    }
    support::wait_until(
        "only the warm pool's sandboxes left after deleting every session",
        SETTLE,
        || {
            let (ready, warm) = warm_pool(&home);
            let dirs = sandbox_dirs(&server);
            let settled = dirs == warm && harness_processes(&server).is_subset(&warm) && ready == POOL_SIZE;
            if settled {
                Ok(())
            } else {
                Err(format!("warm pool {warm:?}, sandboxes {dirs:?}"))
            }
        },
    );
}

/// The warm pool: how many are ready, and the ids of its sandboxes (warming too).
fn warm_pool(home: &Home) -> (u64, BTreeSet<String>) {
    let stats = lap(home, ["admin", "stats", "--json"]).json();
    let pool = &stats["warm_pool"];
    let sandboxes = pool["groups"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["sandboxes"].as_array().unwrap().iter())
        .map(|id| id.as_str().unwrap().to_owned())
        .collect();
    (pool["ready"].as_u64().unwrap(), sandboxes)
}

/// One worker: create sessions without waiting, delete every other one, until told to stop or the
/// server is gone (errors are expected then and ignored).
fn churn(home: &Home, stop: &AtomicBool) {
    let mut made = Vec::new();
    for n in 0..CREATES_PER_ROUND {
        if stop.load(Ordering::SeqCst) {
            return;
        }
        let run = lap(home, ["sessions", "create", "churn", "--no-wait", "--json"]);
        if run.code != 0 {
            return;
        }
        made.push(run.json()["id"].as_str().unwrap().to_owned());
        if n % 2 == 1
            && let Some(id) = made.first().cloned()
        {
            made.remove(0);
            if lap(home, ["sessions", "delete", &id]).code != 0 {
                return;
            }
        }
    }
}

fn sessions(home: &Home) -> Vec<serde_json::Value> {
    lap(
        home,
        ["sessions", "list", "--agent", "churn", "--limit", "200", "--json"],
    )
    .json()
    .as_array()
    .unwrap()
    .clone()
}

/// The sandbox id of a session of the local backend, from its `sandbox_url`.
fn sandbox_of(session: &serde_json::Value) -> Option<String> {
    let url = session["sandbox_url"].as_str()?;
    let after = url.split("/sandboxes/").nth(1)?;
    Some(after.split('/').next()?.to_owned())
}

fn sandbox_dirs(server: &TestServer) -> BTreeSet<String> {
    std::fs::read_dir(server.data_dir().join("sandboxes"))
        .map(|entries| {
            entries
                .filter_map(|e| Some(e.ok()?.file_name().to_string_lossy().into_owned()))
                .collect()
        })
        .unwrap_or_default()
}

/// Ids of sandboxes of this server that have a `lap harness` process running.
fn harness_processes(server: &TestServer) -> BTreeSet<String> {
    let marker = format!("{}/sandboxes/", server.data_dir().display());
    let mut found = BTreeSet::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if cmdline.contains("harness") && cmdline.contains(&marker) {
            let id = cmdline
                .split(&marker)
                .nth(1)
                .and_then(|rest| rest.split('/').next())
                .unwrap_or_default();
            found.insert(id.to_owned());
        }
    }
    found
}

/// Waits until the sessions and sandboxes agree, and returns the ready sessions' ids.
fn settled(home: &Home, server: &TestServer, round: usize) -> Vec<String> {
    support::wait_until(&format!("round {round} settled"), SETTLE, || {
        let sessions = sessions(home);
        let ready: Vec<&serde_json::Value> = sessions.iter().filter(|s| s["status"] == "ready").collect();
        let (warm_ready, warm) = warm_pool(home);
        let mut owned: BTreeSet<String> = ready.iter().filter_map(|s| sandbox_of(s)).collect();
        owned.extend(warm);
        let creating = sessions.iter().filter(|s| s["status"] == "creating").count();
        let orphan_dirs: Vec<String> = sandbox_dirs(server).difference(&owned).cloned().collect();
        let orphan_processes: Vec<String> = harness_processes(server).difference(&owned).cloned().collect();
        if creating == 0 && orphan_dirs.is_empty() && orphan_processes.is_empty() && warm_ready == POOL_SIZE {
            for session in &sessions {
                if session["status"] == "dead" || session["status"] == "failed" {
                    assert!(
                        session["failure_reason"].as_str().is_some_and(|r| !r.is_empty()),
                        "round {round}: a session ended without a reason: {session}"
                    );
                }
            }
            return Ok(ready.iter().map(|s| s["id"].as_str().unwrap().to_owned()).collect());
        }
        Err(format!(
            "{creating} creating, orphan dirs {orphan_dirs:?}, orphan processes {orphan_processes:?}, \
             {warm_ready} of {POOL_SIZE} warm sandboxes ready"
        ))
    })
}
