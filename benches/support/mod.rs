//! What the benchmarks that drive a real `lap serve` share: the server on a fresh data dir and HOME,
//! the CLI's environment, and how figures are printed.

#![allow(dead_code)] // each benchmark uses a different part of this module

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use lap::sandbox::Sandbox;

pub const LAP: &str = env!("CARGO_BIN_EXE_lap");

pub struct Server {
    pub child: Child,
    pub home: tempfile::TempDir,
    pub data: tempfile::TempDir,
}

impl Server {
    pub fn start(pool: u32) -> Self {
        let home = tempfile::tempdir().unwrap();
        let data = tempfile::tempdir().unwrap();
        let mut child = Command::new(LAP)
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(data.path())
            .args(["--warm-pool-size", &pool.to_string()])
            .env_clear()
            .envs(client_env(home.path()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn lap serve");
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        loop {
            let line = lines
                .next()
                .expect("lap serve exited before listening")
                .expect("read lap serve's stderr");
            if line.contains("listening on") {
                break;
            }
        }
        std::thread::spawn(move || lines.for_each(drop));
        Self { child, home, data }
    }

    pub fn lap(&self, args: &[&str]) -> std::process::Output {
        let out = Command::new(LAP)
            .args(args)
            .env_clear()
            .envs(client_env(self.home.path()))
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(out.status.success(), "lap {args:?}: {out:?}");
        out
    }

    pub fn warm_ready(&self) -> u64 {
        let out = self.lap(&["admin", "stats", "--json"]);
        let stats: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        stats["warm_pool"]["ready"].as_u64().unwrap_or(0)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let local = lap::sandbox::local::Local::new(self.data.path()).with_program(LAP);
            for sandbox in local.list().await.unwrap_or_default() {
                let _ = local.delete(&sandbox.id).await;
            }
        });
    }
}

pub fn client_env(home: &Path) -> Vec<(String, String)> {
    vec![
        ("HOME".into(), home.display().to_string()),
        ("PATH".into(), std::env::var("PATH").unwrap_or_default()),
        ("LAP_CREDENTIAL_STORE".into(), "file".into()),
        ("TERM".into(), "xterm-256color".into()),
    ]
}

pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

pub fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

/// One row of the figures table of `docs/benchmarks.md`: what was measured, lap's figure, its peer
/// measured in the same run, and the goal with whether it was met. Appended to the file
/// `LAP_BENCH_TABLE` names (`scripts/bench.sh all` sets it and writes the table from it); nothing
/// without it.
pub fn record(what: &str, lap: &str, peer: &str, goal: &str) {
    let Some(path) = std::env::var_os("LAP_BENCH_TABLE") else {
        return;
    };
    let cell = |text: &str| text.replace('|', "\\|").replace('\n', " ");
    let row = format!("| {} | {} | {} | {} |\n", cell(what), cell(lap), cell(peer), cell(goal));
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .unwrap_or_else(|e| panic!("open LAP_BENCH_TABLE {}: {e}", Path::new(&path).display()));
    std::io::Write::write_all(&mut file, row.as_bytes()).expect("write LAP_BENCH_TABLE");
}

/// `met` or `**not met**`, for a goal's cell.
pub fn met(ok: bool) -> &'static str {
    if ok { "met" } else { "**not met**" }
}
