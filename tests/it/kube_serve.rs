//! `lap serve --backend kube` as a process: without a cluster it stops with a friendly error; with a
//! kubeconfig pointing at a small API server of ours on 127.0.0.1 it starts, adopts nothing, and
//! `GET /api/v1/health/k8s` reports the API server's version. Also the endpoint's answer on a server
//! that runs another backend.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::routing::get;
use axum::{Json, Router};
use serde_json::{Value, json};

use crate::support::{Home, TestServer};

const LAP: &str = env!("CARGO_BIN_EXE_lap");

fn get_json(port: u16, path: &str) -> (u16, Value) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = String::new();
    stream.read_to_string(&mut raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (status, serde_json::from_str(body).unwrap_or(Value::Null))
}

#[test]
fn serve_with_the_kube_backend_and_no_cluster_stops_with_a_hint() {
    let home = Home::new();
    let run = home
        .lap()
        .env("KUBECONFIG", home.path().join("no-such-kubeconfig"))
        .run([
            "serve",
            "--backend",
            "kube",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            home.server_data().to_str().unwrap(),
        ]);
    assert_ne!(run.code, 0, "{run}");
    assert!(run.stderr.contains("no Kubernetes cluster is configured"), "{run}");
    assert!(
        run.stderr.contains("hint:") && run.stderr.contains("scripts/kind-up.sh"),
        "{run}"
    );
}

#[test]
fn the_k8s_health_of_a_server_on_another_backend_is_503() {
    let home = Home::new();
    let server = TestServer::start(&home);
    let (status, body) = get_json(server.port, "/api/v1/health/k8s");
    assert_eq!(status, 503);
    assert_eq!(body["ok"], false);
    assert_eq!(body["backend"], "fake");
    assert_eq!(body["error"], "the server runs the `fake` backend, not `kube`");
}

/// A Kubernetes API server of the smallest kind: its version, and no pods. Returns its port and the
/// paths it was asked for.
fn api_server() -> (u16, Arc<Mutex<Vec<String>>>, std::thread::JoinHandle<()>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    let thread = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let record = move |req: axum::extract::Request, next: axum::middleware::Next| {
                let log = log.clone();
                async move {
                    log.lock().unwrap().push(format!("{} {}", req.method(), req.uri().path()));
                    next.run(req).await
                }
            };
            let app = Router::new()
                .route(
                    "/version",
                    get(|| async {
                        Json(json!({"major": "1", "minor": "35", "gitVersion": "v1.35.2", "gitCommit": "",
                            "gitTreeState": "", "buildDate": "", "goVersion": "", "compiler": "", "platform": "linux/amd64"}))
                    }),
                )
                .route(
                    "/api/v1/namespaces/{ns}/pods",
                    get(|| async {
                        Json(json!({"apiVersion": "v1", "kind": "PodList", "metadata": {"resourceVersion": "1"}, "items": []}))
                    }),
                )
                .layer(axum::middleware::from_fn(record));
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            axum::serve(listener, app).await.unwrap();
        });
    });
    (port, seen, thread)
}

struct Serve(Child);

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn serve_with_the_kube_backend_reports_the_api_server_version() {
    let home = Home::new();
    let (api_port, seen, _thread) = api_server();
    let kubeconfig = home.path().join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\ncurrent-context: test\n\
             clusters:\n- name: test\n  cluster:\n    server: http://127.0.0.1:{api_port}\n\
             contexts:\n- name: test\n  context:\n    cluster: test\n    user: test\n    namespace: lap-test\n\
             users:\n- name: test\n  user:\n    token: not-a-real-token\n"
        ),
    )
    .unwrap();
    let mut child = Command::new(LAP)
        .args([
            "serve",
            "--backend",
            "kube",
            "--listen",
            "127.0.0.1:0",
            "--warm-pool-size",
            "0",
            "--data-dir",
        ])
        .arg(home.server_data())
        .env_clear()
        .envs(home.env())
        .env("KUBECONFIG", &kubeconfig)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let _serve = Serve(child);
    let mut port = None;
    let mut printed = String::new();
    for line in BufReader::new(stderr).lines() {
        let line = line.unwrap();
        printed.push_str(&line);
        printed.push('\n');
        if let Some(rest) = line.split("listening on http://127.0.0.1:").nth(1) {
            port = rest.split(' ').next().and_then(|p| p.parse::<u16>().ok());
            break;
        }
    }
    let port = port.unwrap_or_else(|| panic!("lap serve did not start:\n{printed}"));
    assert!(printed.contains("backend: kube"), "{printed}");
    let (status, body) = get_json(port, "/api/v1/health/k8s");
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        json!({"ok": true, "backend": "kube", "namespace": "lap-test", "server_version": "v1.35.2"})
    );
    let seen = seen.lock().unwrap().clone();
    assert!(
        seen.contains(&"GET /api/v1/namespaces/lap-test/pods".to_owned()),
        "no adoption listing: {seen:?}"
    );
    assert!(seen.contains(&"GET /version".to_owned()), "{seen:?}");
}
