//! `lap vault sidecar` as a plain process, as the Kubernetes backend runs it beside a harness: it
//! swaps with the binding it was started with, takes a new binding (late binding) only with the
//! admin token, and hands its records to whoever holds the token. Upstreams are on 127.0.0.1.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::process::{Child, Command};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use lap::vault::ca::CertificateAuthority;
use serde_json::json;

use crate::support;
use crate::support::upstream::{curl, upstream};

const TOKEN: &str = "sidecar-admin-token-0123456789";
const GH_STUB: &str = "stub_github_token_00112233aabbccdd";
const GH_REAL: &str = "ghp_SidecarRealValue42";
const AI_STUB: &str = "stub_openai_api_key_99887766ffeeddcc";
const AI_REAL: &str = "sk-SidecarLateBound77";

struct Sidecar {
    child: Child,
    proxy: SocketAddr,
    admin: SocketAddr,
    vault_ca: std::path::PathBuf,
    upstream_port: u16,
    seen: Arc<Mutex<Vec<support::upstream::Seen>>>,
    _dir: tempfile::TempDir,
}

impl Drop for Sidecar {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Sidecar {
    async fn start() -> Self {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let dir = tempfile::tempdir().unwrap();
        let public_ca = Arc::new(CertificateAuthority::load_or_create(&dir.path().join("public-ca")).unwrap());
        let upstream_ca = dir.path().join("upstream-ca.pem");
        std::fs::write(&upstream_ca, public_ca.cert_pem()).unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let upstream_port = upstream(public_ca, seen.clone(), true).await;
        let ca_dir = dir.path().join("vault");
        let vault_ca = {
            let ca = CertificateAuthority::load_or_create(&ca_dir).unwrap();
            let path = dir.path().join("vault-ca.pem");
            std::fs::write(&path, ca.cert_pem()).unwrap();
            path
        };
        let binding = dir.path().join("binding.json");
        let file = json!({"credentials": [
            {"name": "GITHUB_TOKEN", "stub": GH_STUB, "value": GH_REAL, "hosts": ["api.github.test"]}
        ]});
        std::fs::write(&binding, file.to_string()).unwrap();
        let token = dir.path().join("admin-token");
        std::fs::write(&token, format!("{TOKEN}\n")).unwrap();
        let mut command = Command::new(env!("CARGO_BIN_EXE_lap"));
        command
            .args(["vault", "sidecar", "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0"])
            .arg("--ca-dir")
            .arg(&ca_dir)
            .arg("--binding")
            .arg(&binding)
            .arg("--admin-token-file")
            .arg(&token)
            .arg("--vault-upstream-ca")
            .arg(&upstream_ca)
            .args(["--vault-resolve", &format!("api.github.test:{upstream_port}:127.0.0.1")])
            .args(["--vault-resolve", &format!("api.openai.test:{upstream_port}:127.0.0.1")])
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default());
        // "lap vault sidecar: proxy on ADDR, admin on ADDR"
        let (child, line) = support::spawn_first_line(command);
        let (proxy, admin) = (
            support::addr_after(&line, "proxy on "),
            support::addr_after(&line, "admin on "),
        );
        Self {
            child,
            proxy,
            admin,
            vault_ca,
            upstream_port,
            seen,
            _dir: dir,
        }
    }

    fn url(&self, host: &str) -> String {
        format!("https://{host}:{}/", self.upstream_port)
    }

    /// A raw HTTP/1.1 request to the admin endpoint: (status, body).
    fn admin(&self, method: &str, path: &str, token: Option<&str>, body: &str) -> (u16, String) {
        let mut stream = std::net::TcpStream::connect(self.admin).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let auth = token
            .map(|t| format!("Authorization: Bearer {t}\r\n"))
            .unwrap_or_default();
        write!(
            stream,
            "{method} {path} HTTP/1.1\r\nHost: admin\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let mut raw = String::new();
        stream.read_to_string(&mut raw).unwrap();
        let status = raw.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
        (
            status,
            raw.split_once("\r\n\r\n")
                .map(|(_, b)| b.to_owned())
                .unwrap_or_default(),
        )
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_sidecar_swaps_with_its_mounted_binding_and_takes_late_binding_only_with_the_token() {
    let sidecar = Sidecar::start().await;
    let gh = format!("Authorization: Bearer {GH_STUB}");
    let (status, output) = curl(
        sidecar.proxy,
        &sidecar.vault_ca,
        &["-H", &gh, &sidecar.url("api.github.test")],
    )
    .await;
    assert_eq!(status, 200, "{output}");
    assert!(!output.contains(GH_REAL), "{output}");
    assert_eq!(
        sidecar.seen.lock().unwrap()[0].header("authorization"),
        Some(format!("Bearer {GH_REAL}").as_str())
    );

    let late = json!({"credentials": [
        {"name": "OPENAI_API_KEY", "stub": AI_STUB, "value": AI_REAL, "hosts": ["api.openai.test"]}
    ]})
    .to_string();
    assert_eq!(sidecar.admin("PUT", "/binding", None, &late).0, 401);
    assert_eq!(sidecar.admin("PUT", "/binding", Some("wrong-token"), &late).0, 401);
    assert_eq!(sidecar.admin("PUT", "/binding", Some(TOKEN), "{not json").0, 400);
    assert_eq!(sidecar.admin("PUT", "/binding", Some(TOKEN), &late).0, 204);

    let ai = format!("Authorization: Bearer {AI_STUB}");
    let (status, output) = curl(
        sidecar.proxy,
        &sidecar.vault_ca,
        &["-H", &ai, &sidecar.url("api.openai.test")],
    )
    .await;
    assert_eq!(status, 200, "{output}");
    assert_eq!(
        sidecar.seen.lock().unwrap()[1].header("authorization"),
        Some(format!("Bearer {AI_REAL}").as_str())
    );
    // The old binding is gone: its stub is now just a string, swapped nowhere.
    let (status, _) = curl(
        sidecar.proxy,
        &sidecar.vault_ca,
        &["-H", &gh, &sidecar.url("api.github.test")],
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        sidecar.seen.lock().unwrap()[2].header("authorization"),
        Some(format!("Bearer {GH_STUB}").as_str())
    );

    assert_eq!(sidecar.admin("GET", "/interceptions", None, "").0, 401);
    let records = support::wait_until_async("three interception records", Duration::from_secs(10), || async {
        let (status, body) = sidecar.admin("GET", "/interceptions", Some(TOKEN), "");
        assert_eq!(status, 200, "{body}");
        let records: Vec<serde_json::Value> = serde_json::from_str(&body).unwrap();
        if records.len() >= 3 { Ok(records) } else { Err(body) }
    })
    .await;
    assert_eq!(records.len(), 3);
    assert_eq!(records[0]["swapped"], json!(["GITHUB_TOKEN"]));
    assert_eq!(records[1]["swapped"], json!(["OPENAI_API_KEY"]));
    let text = serde_json::to_string(&records).unwrap();
    assert!(
        !text.contains(GH_REAL) && !text.contains(AI_REAL),
        "records hold no real value"
    );
    let first = records[0]["id"].as_u64().unwrap();
    let (_, rest) = sidecar.admin("GET", &format!("/interceptions?after={first}"), Some(TOKEN), "");
    assert_eq!(serde_json::from_str::<Vec<serde_json::Value>>(&rest).unwrap().len(), 2);
    assert_eq!(sidecar.admin("GET", "/health", None, "").0, 200);
}
