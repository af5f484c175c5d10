//! The Kubernetes backend's pod side on one machine: a pod's harness container as a real `lap
//! harness --listen` process on the host's loopback, spoken to with the backend's own harness client.

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};

const LAP: &str = env!("CARGO_BIN_EXE_lap");

/// The processes a test started, killed when it ends.
#[derive(Default)]
struct Containers {
    children: Vec<Child>,
}

impl Drop for Containers {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
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
