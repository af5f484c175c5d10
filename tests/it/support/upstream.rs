//! A fake HTTPS upstream and a curl-through-a-proxy helper, for the vault tests.
//!
//! The upstream serves TLS from its own CA (trusted by the vault as `--vault-upstream-ca` would make
//! it), on 127.0.0.1 only, records what reaches it and echoes the request's `Authorization` and body
//! back, so a real value that got through would come back in the response.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use lap::vault::ca::CertificateAuthority;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

/// What the upstream saw of one request.
#[derive(Debug, Clone)]
pub struct Seen {
    pub host: String,
    pub version: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Seen {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }
}

#[derive(Debug)]
pub struct BySni(pub Arc<CertificateAuthority>);

impl ResolvesServerCert for BySni {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.0.leaf(hello.server_name()?).ok()
    }
}

/// An upstream that records each request and echoes its `Authorization` and body back, so a real
/// value that reaches it comes back in the response (the reflection the vault must scrub).
pub async fn upstream(ca: Arc<CertificateAuthority>, seen: Arc<Mutex<Vec<Seen>>>, tls: bool) -> u16 {
    let (listener, port, acceptor) = tls_listener(ca, &[b"h2", b"http/1.1"]).await;
    tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            let (acceptor, seen) = (acceptor.clone(), seen.clone());
            tokio::spawn(async move {
                let service = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let seen = seen.clone();
                    async move {
                        let (parts, body) = req.into_parts();
                        let body = body.collect().await.unwrap().to_bytes().to_vec();
                        let host = parts
                            .uri
                            .authority()
                            .map(|a| a.to_string())
                            .or_else(|| parts.headers.get("host").map(|h| h.to_str().unwrap().to_owned()))
                            .unwrap_or_default();
                        let headers: Vec<(String, String)> = parts
                            .headers
                            .iter()
                            .map(|(n, v)| (n.to_string(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
                            .collect();
                        let auth = parts
                            .headers
                            .get("authorization")
                            .map(|v| v.to_str().unwrap().to_owned());
                        let echo = format!(
                            "auth={} body={}",
                            auth.clone().unwrap_or_default(),
                            String::from_utf8_lossy(&body)
                        );
                        seen.lock().unwrap().push(Seen {
                            host,
                            version: format!("{:?}", parts.version),
                            path: parts.uri.path_and_query().map(|p| p.to_string()).unwrap_or_default(),
                            headers,
                            body,
                        });
                        let mut response = hyper::Response::new(Full::new(Bytes::from(echo)));
                        if let Some(auth) = auth {
                            response.headers_mut().insert("x-echo-auth", auth.parse().unwrap());
                        }
                        Ok::<_, std::convert::Infallible>(response)
                    }
                });
                let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                if tls {
                    let Ok(stream) = acceptor.accept(tcp).await else { return };
                    let _ = builder.serve_connection(TokioIo::new(stream), service).await;
                } else {
                    let _ = builder.serve_connection(TokioIo::new(tcp), service).await;
                }
            });
        }
    });
    port
}

/// A listener on 127.0.0.1 (any port) and a TLS acceptor serving leaves of `ca` by SNI, offering
/// `alpn` (none: no ALPN).
pub async fn tls_listener(
    ca: Arc<CertificateAuthority>,
    alpn: &[&[u8]],
) -> (tokio::net::TcpListener, u16, tokio_rustls::TlsAcceptor) {
    tls_listener_at(ca, alpn, "127.0.0.1:0").await
}

/// [`tls_listener`] on `addr` (a loopback address; port 0 for any).
pub async fn tls_listener_at(
    ca: Arc<CertificateAuthority>,
    alpn: &[&[u8]],
    addr: &str,
) -> (tokio::net::TcpListener, u16, tokio_rustls::TlsAcceptor) {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .unwrap_or_else(|e| panic!("cannot listen on {addr}: {e}"));
    let port = listener.local_addr().unwrap().port();
    let mut config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(BySni(ca)));
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    (listener, port, tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

/// curl through the HTTP proxy at `proxy`, trusting `ca`; returns (HTTP status, what curl printed:
/// response heads and body, then its stderr).
pub async fn curl(proxy: SocketAddr, ca: &Path, args: &[&str]) -> (u16, String) {
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "-i", "--proxy", &format!("http://{proxy}"), "--cacert"]);
    cmd.arg(ca).args(["-w", "\n%{http_code}"]).args(args);
    for name in ["HTTPS_PROXY", "https_proxy", "NO_PROXY", "no_proxy"] {
        cmd.env_remove(name);
    }
    let out = tokio::task::spawn_blocking(move || cmd.output())
        .await
        .unwrap()
        .expect("curl (scripts/test.sh installs it)");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (
        code.trim().parse().unwrap_or(0),
        format!("{body}{}", String::from_utf8_lossy(&out.stderr)),
    )
}

/// A non-secret marker every served answer carries in its body, so a test can tell an answer that
/// arrived (scrubbed) from one the vault refused.
pub const MARKER: &str = "served-marker-41c7";

/// Every way [`store_upstream`] serves a stored value back (`GET /serve/{what}/{encoding}`).
pub const ENCODINGS: &[&str] = &[
    "literal",
    "b64-std-0",
    "b64-std-1",
    "b64-std-2",
    "b64-std-nopad-0",
    "b64-std-nopad-1",
    "b64-std-nopad-2",
    "b64-url-0",
    "b64-url-1",
    "b64-url-2",
    "b64-url-nopad-0",
    "b64-url-nopad-1",
    "b64-url-nopad-2",
    "hex",
    "HEX",
    "percent",
    "percent-lower",
    "form",
    "json-u",
    "json-slash",
    "masked",
    "gzip",
    "deflate",
    "br",
    "zstd",
    "te-gzip",
    "header-value",
    "header-b64",
    "header-name",
    "reason",
    "b64-github-0",
    "b64-github-1",
    "b64-github-2",
    "b64-pem-0",
    "b64-pem-1",
    "b64-pem-2",
    "b64-mime-0",
    "b64-mime-1",
    "b64-mime-2",
];

/// The encodings of [`ENCODINGS`] that wrap base64 across lines, as GitHub's contents API (60
/// columns, `\n` escaped in a JSON string), PEM (64, LF) and MIME (76, CRLF) do.
pub const WRAPPED: &[&str] = &[
    "b64-github-0",
    "b64-github-1",
    "b64-github-2",
    "b64-pem-0",
    "b64-pem-1",
    "b64-pem-2",
    "b64-mime-0",
    "b64-mime-1",
    "b64-mime-2",
];

/// `value` in standard base64 wrapped at `width` columns with `eol` between lines, behind filler
/// that puts it a dozen characters before the end of the first line (at `offset` in its 3-byte
/// group), so a line break splits it.
fn wrapped_b64(value: &[u8], width: usize, eol: &str, offset: usize) -> String {
    use base64::Engine;
    let mut blob = b"file: notes.txt; ".repeat(8);
    blob.truncate((width - 12) / 4 * 3 + offset);
    blob.extend_from_slice(value);
    blob.extend_from_slice(b"\nand the rest of the file after it\n");
    let encoded = base64::engine::general_purpose::STANDARD.encode(blob);
    let lines: Vec<&str> = encoded
        .as_bytes()
        .chunks(width)
        .map(|line| std::str::from_utf8(line).unwrap_or_default())
        .collect();
    lines.join(eol)
}

/// Transformations no matcher recognises: what injecting into a body re-opens (docs/security.md
/// says so): the value split across two JSON fields, and zlib-compressed inside a binary body with no
/// `Content-Encoding` (the shape of a git pack).
pub const TRANSFORMS: &[&str] = &["split", "zlib-binary"];

/// The value a store request carried in `what`: `auth` (the `Authorization` header, scheme word
/// dropped), `body`, `query` (the whole query), or `header-NAME` (that header's value).
fn stored_value(seen: &Seen, what: &str) -> Option<Vec<u8>> {
    match what {
        "auth" => {
            let value = seen.header("authorization")?;
            let token = value.split_once(' ').map_or(value, |(_, t)| t.trim());
            Some(token.as_bytes().to_vec())
        }
        "body" => Some(seen.body.clone()),
        "query" => Some(seen.path.split_once('?')?.1.as_bytes().to_vec()),
        other => Some(seen.header(other.strip_prefix("header-")?)?.as_bytes().to_vec()),
    }
}

/// `data` embedded `offset` bytes into a blob of filler, so its encoding starts at that alignment.
fn at_offset(data: &[u8], offset: usize) -> Vec<u8> {
    let mut blob = b"pre".repeat(8);
    blob.truncate(21 + offset);
    blob.extend_from_slice(data);
    blob.extend_from_slice(b" and some more bytes after it");
    blob
}

fn run_filter(program: &str, args: &[&str], data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut child = Command::new(program)
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{program}: {e} (hint: scripts/test.sh installs it)"));
    child.stdin.take().unwrap().write_all(data).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{program} failed");
    out.stdout
}

/// zlib (`Content-Encoding: deflate`, RFC 9110 §8.4.1.2) of `data`: gzip's deflate stream, rewrapped.
fn zlib(data: &[u8]) -> Vec<u8> {
    let gz = run_filter("gzip", &["-c", "-n"], data);
    // gzip -n: a 10-byte header with no name, the raw deflate stream, CRC32 and ISIZE (8 bytes).
    let raw = &gz[10..gz.len() - 8];
    let (mut a, mut b) = (1u32, 0u32);
    for byte in data {
        a = (a + u32::from(*byte)) % 65521;
        b = (b + a) % 65521;
    }
    let mut out = vec![0x78, 0x9c];
    out.extend_from_slice(raw);
    out.extend_from_slice(&((b << 16) | a).to_be_bytes());
    out
}

/// Brotli (RFC 7932) of `data` as one uncompressed meta-block: a valid stream every decoder reads
/// (no brotli encoder is installed; what matters is that the client decodes it).
fn brotli(data: &[u8]) -> Vec<u8> {
    assert!(!data.is_empty() && data.len() <= 1 << 16);
    // Bits, least significant first: WBITS=16 (0); ISLAST=0; MNIBBLES=4 (00); MLEN-1 (16 bits);
    // ISUNCOMPRESSED=1; then zero bits to the byte boundary.
    let mlen = (data.len() - 1) as u32;
    let bits: u32 = (mlen << 4) | (1 << 20);
    let mut out = bits.to_le_bytes()[..3].to_vec();
    out.extend_from_slice(data);
    // The last meta-block: ISLAST=1, ISLASTEMPTY=1.
    out.push(0b11);
    out
}

fn percent(data: &[u8], upper: bool) -> String {
    data.iter()
        .map(|b| {
            if upper {
                format!("%{b:02X}")
            } else {
                format!("%{b:02x}")
            }
        })
        .collect()
}

/// What a form or URL encoder does: unreserved characters stay, everything else is `%XX`.
fn form(data: &[u8]) -> String {
    data.iter()
        .map(|&b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// One served answer: status, reason phrase, headers, body, trailers.
pub struct Served {
    pub status: u16,
    pub reason: Option<String>,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub trailers: Vec<(String, String)>,
}

/// `value` served in `encoding` (one of [`ENCODINGS`], [`TRANSFORMS`] or `trailer`).
pub fn serve(encoding: &str, value: &[u8]) -> Served {
    use base64::Engine;
    use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
    let text = String::from_utf8_lossy(value).into_owned();
    let wrap = |inner: &str| format!("{{\"note\":\"{MARKER}\",\"data\":\"{inner}\"}}\n").into_bytes();
    let mut served = Served {
        status: 200,
        reason: None,
        headers: vec![("content-type".into(), "application/json".into())],
        body: Vec::new(),
        trailers: Vec::new(),
    };
    let b64 = |engine: &base64::engine::GeneralPurpose, offset: usize| engine.encode(at_offset(value, offset));
    let offset = |e: &str| e.rsplit('-').next().and_then(|n| n.parse::<usize>().ok()).unwrap_or(0);
    let literal = wrap(&text);
    served.body = match encoding {
        "literal" => literal,
        e if e.starts_with("b64-std-nopad-") => wrap(&b64(&STANDARD_NO_PAD, offset(e))),
        e if e.starts_with("b64-std-") => wrap(&b64(&STANDARD, offset(e))),
        e if e.starts_with("b64-url-nopad-") => wrap(&b64(&URL_SAFE_NO_PAD, offset(e))),
        e if e.starts_with("b64-url-") => wrap(&b64(&URL_SAFE, offset(e))),
        "hex" => wrap(&value.iter().map(|b| format!("{b:02x}")).collect::<String>()),
        "HEX" => wrap(&value.iter().map(|b| format!("{b:02X}")).collect::<String>()),
        "percent" => wrap(&percent(value, true)),
        "percent-lower" => wrap(&percent(value, false)),
        "form" => wrap(&form(value)),
        "json-u" => wrap(&value.iter().map(|b| format!("\\u{:04x}", b)).collect::<String>()),
        "json-slash" => wrap(&text.replace('/', "\\/")),
        "masked" => {
            // OpenAI's 401: "Incorrect API key provided: sk-abcd1234****wxyz".
            let head: String = text.chars().take(12).collect();
            let tail: String = text
                .chars()
                .rev()
                .take(4)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect();
            served.status = 401;
            wrap(&format!("Incorrect API key provided: {head}****{tail}"))
        }
        "gzip" | "te-gzip" => {
            let name = if encoding == "gzip" {
                "content-encoding"
            } else {
                "transfer-encoding"
            };
            let value = if encoding == "gzip" { "gzip" } else { "gzip, chunked" };
            served.headers.push((name.into(), value.into()));
            run_filter("gzip", &["-c", "-n"], &literal)
        }
        "deflate" => {
            served.headers.push(("content-encoding".into(), "deflate".into()));
            zlib(&literal)
        }
        "br" => {
            served.headers.push(("content-encoding".into(), "br".into()));
            brotli(&literal)
        }
        "zstd" => {
            served.headers.push(("content-encoding".into(), "zstd".into()));
            run_filter("zstd", &["-c", "-q"], &literal)
        }
        "header-value" => {
            served.headers.push(("x-stored".into(), text.clone()));
            wrap("see x-stored")
        }
        "header-b64" => {
            served.headers.push(("x-stored-b64".into(), STANDARD.encode(value)));
            wrap("see x-stored-b64")
        }
        "header-name" => {
            served.headers.push((text.clone(), "1".into()));
            wrap("see the header names")
        }
        "reason" => {
            served.reason = Some(format!("OK {text}"));
            wrap("see the reason phrase")
        }
        "trailer" => {
            served.trailers.push(("grpc-message".into(), text.clone()));
            served.trailers.push(("x-stored-b64".into(), STANDARD.encode(value)));
            wrap("see the trailers")
        }
        "reversed" => wrap(&text.chars().rev().collect::<String>()),
        e if e.starts_with("b64-github-") => {
            // GET /repos/{owner}/{repo}/contents/{path}: the file in base64, 60 columns, each line
            // ending in `\n` inside the JSON string.
            let content = wrapped_b64(value, 60, "\\n", offset(e));
            format!(
                "{{\"name\":\"notes.txt\",\"path\":\"notes.txt\",\"note\":\"{MARKER}\",\"type\":\"file\",\"encoding\":\"base64\",\"content\":\"{content}\\n\"}}\n"
            )
            .into_bytes()
        }
        e if e.starts_with("b64-pem-") => {
            served.headers[0] = ("content-type".into(), "application/x-pem-file".into());
            let lines = wrapped_b64(value, 64, "\n", offset(e));
            format!("# {MARKER}\n-----BEGIN LAP NOTE-----\n{lines}\n-----END LAP NOTE-----\n").into_bytes()
        }
        e if e.starts_with("b64-mime-") => {
            served.headers[0] = ("content-type".into(), "message/rfc822".into());
            let lines = wrapped_b64(value, 76, "\r\n", offset(e));
            format!(
                "MIME-Version: 1.0\r\nX-Note: {MARKER}\r\nContent-Type: text/plain\r\nContent-Transfer-Encoding: base64\r\n\r\n{lines}\r\n"
            )
            .into_bytes()
        }
        "zlib-binary" => {
            served.headers[0] = ("content-type".into(), "application/octet-stream".into());
            let mut body = format!("PACK{MARKER}").into_bytes();
            body.extend_from_slice(&[0, 0, 0, 2]);
            body.extend_from_slice(&zlib(&literal));
            body
        }
        "split" => {
            let half = text.len() / 2;
            format!(
                "{{\"note\":\"{MARKER}\",\"a\":\"{}\",\"b\":\"{}\"}}\n",
                &text[..half],
                &text[half..]
            )
            .into_bytes()
        }
        other => panic!("no encoding {other}"),
    };
    served
}

/// A bound upstream that stores what it is sent and serves it back: every request but
/// `GET /serve/...` is recorded in `log` and answered `201 stored`. `GET /serve/{what}/{encoding}`
/// serves the last stored request's `what` ([`stored_value`]) in `encoding` ([`serve`]), a `Range`
/// honoured (206) on the result. A request carrying `Upgrade:` to `/upgrade` is answered `200`
/// (not `101`) with its own `Authorization` header in the body, as a server that does not speak
/// WebSocket would. `alpn` is what its TLS offers (`h2` for HTTP/2 with trailers, none for
/// HTTP/1.1 only, where reason phrases and `Transfer-Encoding` are kept).
pub async fn store_upstream(ca: Arc<CertificateAuthority>, log: Arc<Mutex<Vec<Seen>>>, alpn: &[&[u8]]) -> u16 {
    use http_body_util::StreamBody;
    use hyper::body::Frame;
    let (listener, port, acceptor) = tls_listener(ca, alpn).await;
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (acceptor, log) = (acceptor.clone(), log.clone());
            tokio::spawn(async move {
                let service = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let log = log.clone();
                    async move {
                        let (parts, body) = req.into_parts();
                        let body = body.collect().await.map(|b| b.to_bytes().to_vec()).unwrap_or_default();
                        let seen = Seen {
                            host: parts
                                .headers
                                .get("host")
                                .map(|h| String::from_utf8_lossy(h.as_bytes()).into_owned())
                                .unwrap_or_default(),
                            version: format!("{:?}", parts.version),
                            path: parts.uri.path_and_query().map(|p| p.to_string()).unwrap_or_default(),
                            headers: parts
                                .headers
                                .iter()
                                .map(|(n, v)| (n.to_string(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
                                .collect(),
                            body,
                        };
                        let path = parts.uri.path().to_owned();
                        let served = if parts.headers.contains_key("upgrade") && path == "/upgrade" {
                            let auth = seen.header("authorization").unwrap_or_default().to_owned();
                            log.lock().unwrap().push(seen);
                            Served {
                                status: 200,
                                reason: None,
                                headers: vec![("content-type".into(), "text/plain".into())],
                                body: format!("{MARKER} no websocket here; you sent: {auth}\n").into_bytes(),
                                trailers: Vec::new(),
                            }
                        } else if let Some(rest) = path.strip_prefix("/serve/") {
                            let (what, encoding) = rest.split_once('/').unwrap_or((rest, "literal"));
                            let last = log
                                .lock()
                                .unwrap()
                                .iter()
                                .rev()
                                .find(|s| !s.path.starts_with("/serve/"))
                                .cloned();
                            match last.as_ref().and_then(|s| stored_value(s, what)) {
                                Some(value) => serve(encoding, &value),
                                None => Served {
                                    status: 404,
                                    reason: None,
                                    headers: Vec::new(),
                                    body: b"nothing stored\n".to_vec(),
                                    trailers: Vec::new(),
                                },
                            }
                        } else {
                            log.lock().unwrap().push(seen);
                            Served {
                                status: 201,
                                reason: None,
                                headers: Vec::new(),
                                body: b"stored\n".to_vec(),
                                trailers: Vec::new(),
                            }
                        };
                        let mut served = served;
                        let range = parts
                            .headers
                            .get("range")
                            .and_then(|r| r.to_str().ok())
                            .and_then(|r| r.strip_prefix("bytes="))
                            .and_then(|r| r.split_once('-'))
                            .and_then(|(a, b)| Some((a.parse::<usize>().ok()?, b.parse::<usize>().ok()?)));
                        if let Some((from, to)) = range {
                            let to = to.min(served.body.len().saturating_sub(1));
                            let total = served.body.len();
                            served.body = served.body.get(from..=to).unwrap_or_default().to_vec();
                            served.status = 206;
                            served
                                .headers
                                .push(("content-range".into(), format!("bytes {from}-{to}/{total}")));
                        }
                        let mut frames: Vec<Result<Frame<Bytes>, std::convert::Infallible>> =
                            vec![Ok(Frame::data(Bytes::from(served.body)))];
                        if !served.trailers.is_empty() {
                            let mut map = hyper::HeaderMap::new();
                            for (name, value) in &served.trailers {
                                if let (Ok(n), Ok(v)) = (
                                    hyper::header::HeaderName::from_bytes(name.as_bytes()),
                                    hyper::header::HeaderValue::from_str(value),
                                ) {
                                    map.append(n, v);
                                }
                            }
                            frames.push(Ok(Frame::trailers(map)));
                        }
                        let mut response = hyper::Response::new(StreamBody::new(futures_util::stream::iter(frames)));
                        *response.status_mut() = hyper::StatusCode::from_u16(served.status).unwrap();
                        for (name, value) in &served.headers {
                            if let (Ok(n), Ok(v)) = (
                                hyper::header::HeaderName::from_bytes(name.as_bytes()),
                                hyper::header::HeaderValue::from_str(value),
                            ) {
                                response.headers_mut().append(n, v);
                            }
                        }
                        if let Some(reason) = served.reason
                            && let Ok(reason) = hyper::ext::ReasonPhrase::try_from(reason.into_bytes())
                        {
                            response.extensions_mut().insert(reason);
                        }
                        Ok::<_, std::convert::Infallible>(response)
                    }
                });
                let Ok(tls) = acceptor.accept(tcp).await else { return };
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    port
}

/// An unbound upstream that records every byte it is sent, before any parsing, so a test can show
/// that not one byte of a stub reached it. It answers each HTTP/1.1 request `200 ok` once the
/// request is complete (by `Content-Length` or the last chunk). TLS (HTTP/1.1 only) or plain TCP.
pub async fn tap_upstream(ca: Arc<CertificateAuthority>, bytes: Arc<Mutex<Vec<u8>>>, tls: bool) -> u16 {
    use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
    async fn serve<S: AsyncRead + AsyncWrite + Unpin>(mut io: S, bytes: Arc<Mutex<Vec<u8>>>) {
        let mut request = Vec::new();
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            let n = match io.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            bytes.lock().unwrap().extend_from_slice(&buf[..n]);
            request.extend_from_slice(&buf[..n]);
            let Some(end) = request.windows(4).position(|w| w == b"\r\n\r\n") else {
                continue;
            };
            let head = String::from_utf8_lossy(&request[..end]).to_ascii_lowercase();
            let length = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok());
            let body = &request[end + 4..];
            let complete = match length {
                Some(length) => body.len() >= length,
                None if head.contains("transfer-encoding") => body.windows(5).any(|w| w == b"0\r\n\r\n"),
                None => true,
            };
            if complete {
                request.clear();
                let _ = io
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\ncontent-type: text/plain\r\n\r\nok\n")
                    .await;
            }
        }
    }
    let (listener, port, acceptor) = tls_listener(ca, &[b"http/1.1"]).await;
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (acceptor, bytes) = (acceptor.clone(), bytes.clone());
            tokio::spawn(async move {
                if tls {
                    if let Ok(stream) = acceptor.accept(tcp).await {
                        serve(stream, bytes).await;
                    }
                } else {
                    serve(tcp, bytes).await;
                }
            });
        }
    });
    port
}

/// A TCP connection through the proxy at `proxy` to `host:port`, by `CONNECT`, once the proxy has
/// answered 200 (panics with its answer otherwise).
pub async fn connect_through(proxy: SocketAddr, host: &str, port: u16) -> tokio::net::TcpStream {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(proxy).await.unwrap();
    let target = format!("{host}:{port}");
    tcp.write_all(format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        head.push(tcp.read_u8().await.unwrap());
    }
    assert!(head.starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&head));
    tcp
}

/// A TLS client that trusts only the CA certificate in file `ca` and offers `alpn`.
pub fn client_trusting(ca: &Path, alpn: &[&[u8]]) -> tokio_rustls::TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    let pem = std::fs::read(ca).unwrap();
    roots
        .add(rustls_pki_types::pem::PemObject::from_pem_slice(&pem).unwrap())
        .unwrap();
    let mut config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

/// A TLS connection through the proxy at `proxy` to `host:port` (`CONNECT`, then TLS naming `host`,
/// trusting only the CA in file `ca`, offering `alpn`).
pub async fn tunnel(
    proxy: SocketAddr,
    ca: &Path,
    host: &str,
    port: u16,
    alpn: &[&[u8]],
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let tcp = connect_through(proxy, host, port).await;
    let name = rustls_pki_types::ServerName::try_from(host.to_owned()).unwrap();
    client_trusting(ca, alpn).connect(name, tcp).await.unwrap()
}
