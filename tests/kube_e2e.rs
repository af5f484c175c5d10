//! A session on `lap serve --backend kube`, end to end on one machine: the server (a real process)
//! talks by kubeconfig to the in-process fake API server of `kube_fake`, which plays the kubelet by
//! starting each pod's containers as real processes when the pod's Secret appears — the harness
//! container as `lap harness --listen`, the vault container as `lap vault sidecar` with the CA and
//! admin token from that Secret — and connects port-forwards to them. The session must reach
//! `ready`, `lap exec` must run in it, and its credential must be bound in the sidecar: the stub is
//! swapped for the real value toward its host only (a loopback HTTPS upstream; nothing leaves
//! 127.0.0.1), and the sidecar's records reach the session's egress log.

mod kube_fake;
mod support;

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use kube_fake::FakeApi;
use lap::sandbox::kube::manifest;
use lap::vault::ca::CertificateAuthority;
use serde_json::Value;
use support::upstream::upstream;
use support::{Home, TestServer};

const LAP: &str = env!("CARGO_BIN_EXE_lap");
const REAL: &str = "ghp_real_value_kube_e2e";
const WAIT: Duration = Duration::from_secs(60);

/// The processes the fake kubelet started, killed when the test ends.
#[derive(Default)]
struct Containers {
    children: Vec<Child>,
    dirs: Vec<tempfile::TempDir>,
    /// Each pod's vault proxy address, by pod name.
    proxies: Vec<(String, SocketAddr)>,
}

impl Drop for Containers {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn secret_file(secret: &Value, key: &str) -> Vec<u8> {
    let data = secret["data"][key]
        .as_str()
        .unwrap_or_else(|| panic!("the secret has no `{key}`"));
    base64::engine::general_purpose::STANDARD.decode(data).unwrap()
}

/// Spawns `command` with its stderr piped; returns it and its first stderr line, and drains the rest.
fn spawn_reporting(mut command: Command) -> (Child, String) {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn a container");
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    stderr.read_line(&mut line).unwrap();
    std::thread::spawn(move || {
        let mut rest = Vec::new();
        let _ = stderr.read_to_end(&mut rest);
    });
    (child, line)
}

fn addr_after(line: &str, after: &str) -> SocketAddr {
    line.split(after)
        .nth(1)
        .unwrap_or_else(|| panic!("no `{after}` in: {line}"))
        .split(|c: char| c == ',' || c.is_whitespace())
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

/// What the fake kubelet needs to run a pod: where upstream HTTPS is and whom it trusts.
struct Upstream {
    port: u16,
    ca_pem: PathBuf,
}

/// Starts one pod's harness and vault containers; returns where its harness and admin ports are.
fn run_pod(pod: &Value, secret: &Value, upstream: &Upstream, containers: &Mutex<Containers>) -> Vec<(u16, SocketAddr)> {
    let dir = tempfile::tempdir().unwrap();
    let ca_dir = dir.path().join("ca");
    std::fs::create_dir_all(&ca_dir).unwrap();
    for key in [manifest::keys::CA_CERT, manifest::keys::CA_KEY] {
        std::fs::write(ca_dir.join(key), secret_file(secret, key)).unwrap();
    }
    let binding = dir.path().join(manifest::keys::BINDING);
    std::fs::write(&binding, secret_file(secret, manifest::keys::BINDING)).unwrap();
    let token = dir.path().join(manifest::keys::ADMIN_TOKEN);
    std::fs::write(&token, secret_file(secret, manifest::keys::ADMIN_TOKEN)).unwrap();
    let path = std::env::var_os("PATH").unwrap_or_default();

    let mut vault = Command::new(LAP);
    vault
        .args([
            "vault",
            "sidecar",
            "--listen",
            "127.0.0.1:0",
            "--admin",
            "127.0.0.1:0",
            "--ca-dir",
        ])
        .arg(&ca_dir)
        .arg("--binding")
        .arg(&binding)
        .arg("--admin-token-file")
        .arg(&token)
        .arg("--vault-upstream-ca")
        .arg(&upstream.ca_pem)
        .args([
            "--vault-resolve",
            &format!("api.github.test:{}:127.0.0.1", upstream.port),
        ])
        .args([
            "--vault-resolve",
            &format!("api.other.test:{}:127.0.0.1", upstream.port),
        ])
        .env_clear()
        .env("PATH", &path);
    let (vault, line) = spawn_reporting(vault);
    let (proxy, admin) = (addr_after(&line, "proxy on "), addr_after(&line, "admin on "));

    // The harness container: the pod's command, but on a port of the host's loopback and with a
    // home of its own (a pod has `/work/home` to itself).
    let command = pod["spec"]["containers"][0]["command"].as_array().unwrap();
    assert_eq!(command[..3], ["lap", "harness", "--listen"], "{command:?}");
    let mut harness = Command::new(LAP);
    harness
        .args(["harness", "--listen", "127.0.0.1:0", "--home"])
        .arg(dir.path().join("home"))
        .env_clear()
        .env("PATH", &path);
    let (harness, line) = spawn_reporting(harness);
    let harness_addr = addr_after(&line, "listening on ");

    let name = pod["metadata"]["name"].as_str().unwrap().to_owned();
    let mut containers = containers.lock().unwrap();
    containers.children.extend([vault, harness]);
    containers.dirs.push(dir);
    containers.proxies.push((name, proxy));
    vec![(manifest::HARNESS_PORT, harness_addr), (manifest::ADMIN_PORT, admin)]
}

fn kubeconfig(dir: &Path, api_url: &str) -> PathBuf {
    let path = dir.join("kubeconfig");
    std::fs::write(
        &path,
        format!(
            "apiVersion: v1\nkind: Config\ncurrent-context: fake\n\
             clusters:\n- name: fake\n  cluster:\n    server: {api_url}\n\
             contexts:\n- name: fake\n  context:\n    cluster: fake\n    user: fake\n    namespace: lap\n\
             users:\n- name: fake\n  user:\n    token: not-a-real-token\n"
        ),
    )
    .unwrap();
    path
}

fn lap_json(home: &Home, args: &[&str]) -> Value {
    home.lap().env("GITHUB_TOKEN", REAL).run(args).success().json()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_session_on_the_kube_backend_becomes_ready_runs_commands_and_swaps_its_credential_in_the_sidecar() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().unwrap();
    let public_ca = Arc::new(CertificateAuthority::load_or_create(&dir.path().join("public-ca")).unwrap());
    let ca_pem = dir.path().join("upstream-ca.pem");
    std::fs::write(&ca_pem, public_ca.cert_pem()).unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let upstream_port = upstream(public_ca, seen.clone(), true).await;
    let upstream = Upstream {
        port: upstream_port,
        ca_pem,
    };
    let (api, api_url) = FakeApi::start().await;
    let containers = Arc::new(Mutex::new(Containers::default()));
    let kubelet = containers.clone();
    api.run_pods_with(move |pod, secret| run_pod(pod, secret, &upstream, &kubelet));

    let home = Home::new();
    let config = kubeconfig(dir.path(), &api_url);
    // Blocking calls on this worker are fine: the fake API server answers on the others.
    let server = TestServer::start_kube(&home, &config, ["--warm-pool-size", "0"]);

    lap_json(
        &home,
        &[
            "--json",
            "agents",
            "create",
            "coder",
            "--harness",
            "shell",
            "--credential",
            "GITHUB_TOKEN@api.github.test",
        ],
    );
    let session = lap_json(&home, &["--json", "sessions", "create", "coder"]);
    let id = session["id"].as_str().unwrap().to_owned();
    let deadline = Instant::now() + WAIT;
    let shown = loop {
        let shown = lap_json(&home, &["--json", "sessions", "show", &id]);
        if shown["status"] != "creating" {
            break shown;
        }
        assert!(Instant::now() < deadline, "the session is still creating: {shown}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(shown["status"], "ready", "{shown}\n{}", server.log());
    let url = shown["sandbox_url"].as_str().unwrap();
    let pod = url
        .strip_prefix("kube://lap/")
        .unwrap_or_else(|| panic!("{shown}"))
        .to_owned();
    assert!(api.names("pods").contains(&pod), "{:?}", api.names("pods"));

    // `lap exec` runs in the pod's harness, with the session's environment: the stub, never the value.
    let out = home.lap().run([
        "exec",
        &id,
        "--",
        "sh",
        "-c",
        "printf '%s\\n' \"$GITHUB_TOKEN\"; echo oops >&2; exit 3",
    ]);
    assert_eq!(out.code, 3, "{out}");
    let stub = out.stdout.trim().to_owned();
    assert!(stub.starts_with("stub_") && !stub.contains(REAL), "{out}");
    assert_eq!(out.stderr, "oops\n", "{out}");

    // The binding went into the pod's Secret and, live, into its sidecar.
    let secret = api.get("secrets", &format!("{pod}-vault")).unwrap();
    let binding: Value = serde_json::from_slice(&secret_file(&secret, manifest::keys::BINDING)).unwrap();
    assert_eq!(binding["credentials"][0]["stub"], stub.as_str());
    assert_eq!(binding["credentials"][0]["value"], REAL);

    // Through the sidecar's proxy: swapped toward the bound host; toward another the stub is
    // refused by the vault and reaches nothing.
    let (proxy, vault_ca) = {
        let containers = containers.lock().unwrap();
        let proxy = containers.proxies.iter().find(|(name, _)| *name == pod).unwrap().1;
        (
            proxy,
            containers
                .dirs
                .last()
                .unwrap()
                .path()
                .join("ca")
                .join(manifest::keys::CA_CERT),
        )
    };
    let status_of = |host: &str| {
        let curl = format!(
            "curl -sS -o /dev/null -w '%{{http_code}}' --proxy http://{proxy} --cacert {} \
             -H \"Authorization: Bearer $GITHUB_TOKEN\" https://{host}:{upstream_port}/user",
            vault_ca.display(),
        );
        let out = home.lap().run(["exec", &id, "--", "sh", "-c", &curl]);
        assert_eq!(out.code, 0, "{out}");
        out.stdout
    };
    assert_eq!(status_of("api.github.test"), "200");
    assert_eq!(status_of("api.other.test"), "403");
    {
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 1, "api.other.test must receive nothing: {seen:?}");
        assert!(seen[0].host.starts_with("api.github.test"), "{seen:?}");
        assert_eq!(seen[0].header("authorization"), Some(format!("Bearer {REAL}").as_str()));
    }

    // The sidecar's records reach the session's egress log.
    let deadline = Instant::now() + WAIT;
    let records = loop {
        let records = lap_json(&home, &["--json", "sessions", "egress", &id]);
        if records.as_array().is_some_and(|r| r.len() >= 2) {
            break records;
        }
        assert!(Instant::now() < deadline, "the egress log stayed short: {records}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let records = records.as_array().unwrap();
    assert_eq!(records.len(), 2, "{records:?}");
    assert_eq!(
        (records[0]["host"].as_str(), &records[0]["swapped"]),
        (Some("api.github.test"), &serde_json::json!(["GITHUB_TOKEN"]))
    );
    assert_eq!(records[1]["host"], "api.other.test");
    assert!(
        records[1]["blocked"].as_str().unwrap().contains("not bound"),
        "{}",
        records[1]
    );
    assert!(!serde_json::to_string(&records).unwrap().contains(REAL));
    drop(server);
}

/// A real `lap harness --listen` on the host's loopback, with its home in `home`.
fn pod_harness(home: &Path) -> (Child, SocketAddr) {
    let mut harness = Command::new(LAP);
    harness
        .args(["harness", "--listen", "127.0.0.1:0", "--home"])
        .arg(home)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default());
    let (child, line) = spawn_reporting(harness);
    (child, addr_after(&line, "listening on "))
}

async fn exec(addr: SocketAddr, argv: &[&str]) -> (Result<i32, String>, String) {
    use lap::sandbox::ExecChunk;
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = lap::sandbox::local::proto::ExecRequest {
        argv: argv.iter().map(|a| (*a).to_owned()).collect(),
        cwd: None,
        env: Vec::new(),
    };
    let (_stdin, stdin) = tokio::sync::mpsc::channel(1);
    let (output, mut chunks) = tokio::sync::mpsc::channel(16);
    let collect = async move {
        let mut text = String::new();
        while let Some(ExecChunk::Stdout(data) | ExecChunk::Stderr(data)) = chunks.recv().await {
            text.push_str(&String::from_utf8_lossy(&data));
        }
        text
    };
    let (code, text) = tokio::join!(
        async move {
            let code = lap::sandbox::kube::harness::exec(stream, request, stdin, output).await;
            code.map_err(|e| e.to_string())
        },
        collect
    );
    (code, text)
}

#[tokio::test]
async fn the_pod_harness_serves_the_protocol_on_tcp_in_its_home_and_holds_no_proxy_port() {
    use lap::sandbox::local::proto::{self, Request, StartRequest};
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let (child, addr) = pod_harness(&home);
    let mut harness = Containers::default();
    harness.children.push(child);
    assert!(home.is_dir(), "the home is made at start");

    // Before `start` the session has no environment; after it, commands get it, in the home.
    let (code, text) = exec(addr, &["sh", "-c", "echo \"[$TOKEN]\" \"$HOME\" \"$(pwd)\""]).await;
    assert_eq!(code, Ok(0));
    assert_eq!(text, format!("[] {0} {0}\n", home.display()));
    let start = StartRequest {
        env: vec![("TOKEN".into(), "stub_token_1".into())],
        ..Default::default()
    };
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    lap::sandbox::kube::harness::start_agent(stream, start).await.unwrap();
    let (code, text) = exec(addr, &["sh", "-c", "echo \"[$TOKEN]\"; exit 4"]).await;
    assert_eq!((code, text.as_str()), (Ok(4), "[stub_token_1]\n"));

    // The pod's vault sidecar owns the proxy port: asking the harness for it is a readable refusal.
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    proto::write_request(&mut stream, &Request::ProxyListener)
        .await
        .unwrap();
    let (kind, message) = proto::read_frame(&mut stream).await.unwrap().unwrap();
    assert_eq!(kind, proto::ERROR);
    assert_eq!(
        String::from_utf8_lossy(&message),
        "this harness holds no proxy port: the sandbox's vault runs beside it"
    );
    // No agent was started, and `wait` says so.
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let err = lap::sandbox::kube::harness::wait_agent(stream).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "the sandbox backend failed: this sandbox runs no agent"
    );
}
