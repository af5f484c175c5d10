//! The client end of the terminal WebSocket ([`crate::wire::tty`]): where to connect and how.
//!
//! [`tty_url`] turns a session's `tty_url` into an absolute `ws://`/`wss://` URL the way LAP's CLI
//! does (absolute `ws(s)` as is, `http(s)` with its scheme swapped, a relative path joined to the
//! server's base); [`locate_tty`] adds LAP's fallbacks for a session without one (its
//! `sandbox_url` when reachable, else `LAP_TTY_FALLBACK`). [`session_target`] reads `lap attach`'s
//! argument, an id or a sessions URL. [`Client::connect_tty`] dials it with the session's token both as
//! `Authorization: Bearer` and `?token=` (load balancers strip one or the other) and offers the
//! `lap.tty.v1` subprotocol. TLS is rustls with the ring provider and the system's roots plus the
//! configured CA certificate: no OpenSSL.

use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::header::{AUTHORIZATION, HeaderValue, SEC_WEBSOCKET_PROTOCOL};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use super::{CONNECT_TIMEOUT, Client, ClientError, encode};
use crate::wire::api::Session;
use crate::wire::tty::{MAX_FRAME, SUBPROTOCOL, TOKEN_PARAM};

/// A byte stream a WebSocket runs over: plain TCP or TLS.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// An open terminal connection.
pub struct TtySocket {
    pub socket: WebSocketStream<Box<dyn Io>>,
    /// Whether the server speaks `lap.tty.v1` (typed messages, the exit code).
    pub typed: bool,
}

/// The absolute WebSocket URL of a session's terminal, or `None` when it has none.
pub fn tty_url(base: &str, session: &Session) -> Option<String> {
    let url = session.tty_url.as_deref()?;
    Some(if url.starts_with("ws://") || url.starts_with("wss://") {
        url.to_owned()
    } else if let Some(rest) = url.strip_prefix("http") {
        format!("ws{rest}")
    } else {
        let base = base.trim_end_matches('/');
        let base = base
            .strip_prefix("http")
            .map_or_else(|| base.to_owned(), |rest| format!("ws{rest}"));
        format!("{base}/{}", url.trim_start_matches('/'))
    })
}

/// What marks a `sandbox_url` as in-cluster DNS, which a laptop cannot reach.
const IN_CLUSTER_SUFFIX: &str = ".svc.cluster.local";

/// Where a session's terminal is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TtyLocation {
    /// The server said (`tty_url`), or the sandbox is reachable at its `sandbox_url`.
    Url(String),
    /// `LAP_TTY_FALLBACK`, for a session whose sandbox is in-cluster.
    Fallback(String),
}

/// Why a session's terminal cannot be found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NoTerminal {
    #[error("session is in-cluster ({0}) — no LAP_TTY_FALLBACK set")]
    InCluster(String),
    #[error("the server returned neither a tty_url nor a reachable sandbox_url")]
    Nowhere,
}

/// Finds a session's terminal the way LAP's CLI does: its `tty_url`; else an `http(s)` `sandbox_url`
/// that is not in-cluster DNS, with `/tty`; else `fallback` (`LAP_TTY_FALLBACK`).
pub fn locate_tty(base: &str, session: &Session, fallback: Option<&str>) -> Result<TtyLocation, NoTerminal> {
    if let Some(url) = tty_url(base, session) {
        return Ok(TtyLocation::Url(url));
    }
    let sandbox = session.sandbox_url.as_deref().unwrap_or_default();
    let web = sandbox.starts_with("http://") || sandbox.starts_with("https://");
    if web && !sandbox.contains(IN_CLUSTER_SUFFIX) {
        let ws = format!("ws{}", &sandbox["http".len()..]);
        return Ok(TtyLocation::Url(format!("{}/tty", ws.trim_end_matches('/'))));
    }
    match fallback {
        Some(url) => Ok(TtyLocation::Fallback(url.to_owned())),
        None if web => Err(NoTerminal::InCluster(sandbox.to_owned())),
        None => Err(NoTerminal::Nowhere),
    }
}

/// `lap attach`'s argument: a session id, or a sessions URL `<server>/sessions/<id>` (what the web
/// UI's address bar and LAP's CLI show), whose server part then stands in for the configured one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionTarget {
    pub id: String,
    /// The server named by the URL (`None` for a bare id).
    pub server: Option<String>,
}

/// Parses a session id or sessions URL; `None` when it is neither.
pub fn session_target(arg: &str) -> Option<SessionTarget> {
    let is_id = |s: &str| s.len() == 36 && s.chars().all(|c| c.is_ascii_hexdigit() || c == '-');
    if is_id(arg) {
        return Some(SessionTarget {
            id: arg.to_ascii_lowercase(),
            server: None,
        });
    }
    if !(arg.starts_with("http://") || arg.starts_with("https://")) {
        return None;
    }
    let path = arg.split(['?', '#']).next().unwrap_or_default().trim_end_matches('/');
    let (prefix, id) = path.rsplit_once("/sessions/")?;
    if !is_id(id) {
        return None;
    }
    // The API's own session URL names the server too.
    let server = prefix
        .strip_suffix("/api/v1/managed_agents")
        .or_else(|| prefix.strip_suffix("/ui"))
        .unwrap_or(prefix);
    Some(SessionTarget {
        id: id.to_ascii_lowercase(),
        server: Some(server.to_owned()),
    })
}

impl Client {
    /// Opens a terminal WebSocket at `url` with `token`.
    pub async fn connect_tty(&self, url: &str, token: &str) -> Result<TtySocket, ClientError> {
        let failed = |detail: String| ClientError::Protocol {
            url: url.to_owned(),
            detail,
        };
        let separator = if url.contains('?') { '&' } else { '?' };
        let full = format!("{url}{separator}{TOKEN_PARAM}={}", encode(token));
        let parsed = reqwest::Url::parse(&full).map_err(|_| ClientError::BadUrl(url.to_owned()))?;
        let tls = match parsed.scheme() {
            "ws" => false,
            "wss" => true,
            _ => return Err(ClientError::BadUrl(url.to_owned())),
        };
        let host = parsed
            .host_str()
            .ok_or_else(|| ClientError::BadUrl(url.to_owned()))?
            .to_owned();
        let port = parsed.port_or_known_default().unwrap_or(if tls { 443 } else { 80 });
        let tcp = tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect((host.as_str(), port)))
            .await
            .map_err(|_| failed(format!("no connection within {CONNECT_TIMEOUT:?}")))?
            .map_err(|e| failed(format!("cannot connect: {e}")))?;
        let _ = tcp.set_nodelay(true);
        let stream: Box<dyn Io> = if tls {
            let config = self.tls_config().map_err(|e| failed(format!("TLS setup: {e}")))?;
            let name = rustls_pki_types::ServerName::try_from(host.trim_matches(['[', ']']).to_owned())
                .map_err(|_| ClientError::BadUrl(url.to_owned()))?;
            let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
                .connect(name, tcp)
                .await
                .map_err(|e| failed(format!("TLS handshake: {e}")))?;
            Box::new(tls)
        } else {
            Box::new(tcp)
        };
        let mut request = full.as_str().into_client_request().map_err(|e| failed(e.to_string()))?;
        let headers = request.headers_mut();
        if let Ok(value) = HeaderValue::from_str(&format!("Bearer {token}")) {
            headers.insert(AUTHORIZATION, value);
        }
        headers.insert(SEC_WEBSOCKET_PROTOCOL, HeaderValue::from_static(SUBPROTOCOL));
        let config = WebSocketConfig::default()
            .max_frame_size(Some(MAX_FRAME))
            .max_message_size(Some(MAX_FRAME));
        let (socket, response) = tokio_tungstenite::client_async_with_config(request, stream, Some(config))
            .await
            .map_err(|err| match err {
                tokio_tungstenite::tungstenite::Error::Http(response) => {
                    let status = response.status().as_u16();
                    ClientError::Api {
                        status,
                        message: format!("the terminal refused the connection: {status}"),
                        hint: (status == 401).then(|| {
                            "the session's `tty_token` was not accepted; `lap sessions show ID` shows the session; \
                             see docs/troubleshooting.md#terminal-401"
                                .to_owned()
                        }),
                    }
                }
                other => failed(other.to_string()),
            })?;
        let typed = response
            .headers()
            .get(SEC_WEBSOCKET_PROTOCOL)
            .is_some_and(|p| p.as_bytes() == SUBPROTOCOL.as_bytes());
        Ok(TtySocket { socket, typed })
    }

    pub(super) fn tls_config(&self) -> Result<rustls::ClientConfig, String> {
        let mut roots = rustls::RootCertStore::empty();
        for cert in rustls_native_certs::load_native_certs().certs {
            let _ = roots.add(cert);
        }
        if let Some(path) = &self.ca_cert {
            use rustls_pki_types::pem::PemObject;
            let certs = rustls_pki_types::CertificateDer::pem_file_iter(path).map_err(|e| e.to_string())?;
            for cert in certs {
                roots.add(cert.map_err(|e| e.to_string())?).map_err(|e| e.to_string())?;
            }
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        Ok(rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots)
            .with_no_client_auth())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session_at(tty_url: Option<&str>, sandbox_url: Option<&str>) -> Session {
        let mut session = session(tty_url);
        session.sandbox_url = sandbox_url.map(str::to_owned);
        session
    }

    #[test]
    fn a_session_without_a_tty_url_is_reached_at_its_sandbox_or_the_fallback() {
        let base = "http://127.0.0.1:3000";
        let fallback = Some("ws://gateway:7681/tty");
        assert_eq!(
            locate_tty(
                base,
                &session_at(Some("/t"), Some("http://pod.lap.svc.cluster.local:8080")),
                fallback
            ),
            Ok(TtyLocation::Url("ws://127.0.0.1:3000/t".into()))
        );
        assert_eq!(
            locate_tty(
                base,
                &session_at(None, Some("https://10-0-0-7.nodes.example:31000/")),
                None
            ),
            Ok(TtyLocation::Url("wss://10-0-0-7.nodes.example:31000/tty".into()))
        );
        let in_cluster = session_at(None, Some("http://sbx-1.lap.svc.cluster.local:8080"));
        assert_eq!(
            locate_tty(base, &in_cluster, fallback),
            Ok(TtyLocation::Fallback("ws://gateway:7681/tty".into()))
        );
        let err = locate_tty(base, &in_cluster, None).unwrap_err();
        assert_eq!(
            err.to_string(),
            "session is in-cluster (http://sbx-1.lap.svc.cluster.local:8080) — no LAP_TTY_FALLBACK set"
        );
        assert_eq!(
            locate_tty(base, &session_at(None, Some("unix:///run/lap/harness.sock")), None),
            Err(NoTerminal::Nowhere)
        );
    }

    #[test]
    fn attach_takes_a_session_id_or_a_sessions_url_naming_its_server() {
        let id = "0b7e3a52-4c1d-4f7e-9a51-2f0c5d6e7a8b";
        assert_eq!(
            session_target(id),
            Some(SessionTarget {
                id: id.into(),
                server: None
            })
        );
        for (url, server) in [
            (
                format!("https://lap.example.com/sessions/{id}"),
                "https://lap.example.com",
            ),
            (
                format!("http://127.0.0.1:3000/ui/sessions/{id}?tab=egress#x"),
                "http://127.0.0.1:3000",
            ),
            (
                format!("https://h/prefix/api/v1/managed_agents/sessions/{id}/"),
                "https://h/prefix",
            ),
            (
                format!("https://h/platform/sessions/{}", id.to_uppercase()),
                "https://h/platform",
            ),
        ] {
            let target = session_target(&url).unwrap_or_else(|| panic!("{url}"));
            assert_eq!(target.id, id, "{url}");
            assert_eq!(target.server.as_deref(), Some(server), "{url}");
        }
        for bad in [
            "demo",
            "ftp://h/sessions/x",
            "https://h/sessions/not-an-id",
            "https://h/agents/1",
        ] {
            assert_eq!(session_target(bad), None, "{bad}");
        }
    }

    fn session(tty_url: Option<&str>) -> Session {
        let mut value = serde_json::json!({
            "id": "00000000-0000-4000-8000-000000000000",
            "agent_id": "00000000-0000-4000-8000-000000000001",
            "agent_name": "demo",
            "status": "ready",
            "supports_tui": true,
            "created_at": "",
            "last_seen_at": "",
        });
        value["tty_url"] = serde_json::json!(tty_url);
        serde_json::from_value(value).expect("a session")
    }

    #[test]
    fn tty_urls_are_made_absolute_like_laps_cli() {
        let base = "https://lap.example.com/";
        assert_eq!(
            tty_url(base, &session(Some("/api/v1/x/tty"))).as_deref(),
            Some("wss://lap.example.com/api/v1/x/tty")
        );
        assert_eq!(
            tty_url("http://127.0.0.1:3000", &session(Some("/t"))).as_deref(),
            Some("ws://127.0.0.1:3000/t")
        );
        assert_eq!(
            tty_url(base, &session(Some("http://h:1/t"))).as_deref(),
            Some("ws://h:1/t")
        );
        assert_eq!(tty_url(base, &session(Some("wss://h/t"))).as_deref(), Some("wss://h/t"));
        assert_eq!(tty_url(base, &session(None)), None);
    }
}
