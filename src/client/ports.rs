//! The client of a session's ports: what its sandbox listens on, preview URLs, and the
//! port-forward WebSocket ([`Client::connect_port_forward`]), one per forwarded connection, with
//! the master key as `Authorization: Bearer` (the server takes nothing else there). The framing is
//! `api/ports.rs`'s: binary messages are the connection's bytes, an empty one ends a direction.

use std::sync::Arc;

use reqwest::Method;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::header::{AUTHORIZATION, HeaderValue};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use super::tty::Io;
use super::{CONNECT_TIMEOUT, Client, ClientError, encode};
use crate::wire::api::PREFIX;
use crate::wire::ports::{CreatePreviewUrl, ListeningPorts, PreviewUrl, RevokedPreviewUrls};

/// Largest port-forward message, each way (the server's limit).
pub const MAX_FORWARD_MESSAGE: usize = 64 * 1024;

/// One forwarded connection's WebSocket.
pub type ForwardSocket = WebSocketStream<Box<dyn Io>>;

impl Client {
    /// The ports session `id`'s sandbox listens on.
    pub async fn list_ports(&self, id: &str) -> Result<ListeningPorts, ClientError> {
        self.call::<_, ()>(Method::GET, &format!("{PREFIX}/sessions/{}/ports", encode(id)), None)
            .await
    }

    /// A signed preview URL for `port` of session `id`.
    pub async fn create_preview_url(&self, id: &str, body: &CreatePreviewUrl) -> Result<PreviewUrl, ClientError> {
        self.call(
            Method::POST,
            &format!("{PREFIX}/sessions/{}/preview_urls", encode(id)),
            Some(body),
        )
        .await
    }

    /// Revokes the preview URLs of session `id` (`port`: of that port only).
    pub async fn revoke_preview_urls(&self, id: &str, port: Option<u16>) -> Result<RevokedPreviewUrls, ClientError> {
        let query = port.map(|p| format!("?port={p}")).unwrap_or_default();
        self.call::<_, ()>(
            Method::DELETE,
            &format!("{PREFIX}/sessions/{}/preview_urls{query}", encode(id)),
            None,
        )
        .await
    }

    /// Opens one connection to `port` of session `id`'s sandbox, carried by a WebSocket.
    pub async fn connect_port_forward(&self, id: &str, port: u16) -> Result<ForwardSocket, ClientError> {
        let base = self
            .base
            .strip_prefix("http")
            .map(|rest| format!("ws{rest}"))
            .ok_or_else(|| ClientError::BadUrl(self.base.clone()))?;
        let url = format!("{base}{PREFIX}/sessions/{}/portforward/{port}", encode(id));
        let failed = |detail: String| ClientError::Protocol {
            url: url.clone(),
            detail,
        };
        let key = self
            .key
            .as_ref()
            .ok_or_else(|| ClientError::NoKey { url: self.base.clone() })?;
        let parsed = reqwest::Url::parse(&url).map_err(|_| ClientError::BadUrl(url.clone()))?;
        let tls = parsed.scheme() == "wss";
        let host = parsed
            .host_str()
            .ok_or_else(|| ClientError::BadUrl(url.clone()))?
            .to_owned();
        let tcp_port = parsed.port_or_known_default().unwrap_or(if tls { 443 } else { 80 });
        let tcp = tokio::time::timeout(
            CONNECT_TIMEOUT,
            tokio::net::TcpStream::connect((host.as_str(), tcp_port)),
        )
        .await
        .map_err(|_| failed(format!("no connection within {CONNECT_TIMEOUT:?}")))?
        .map_err(|e| failed(format!("cannot connect: {e}")))?;
        let _ = tcp.set_nodelay(true);
        let stream: Box<dyn Io> = if tls {
            let config = self.tls_config().map_err(|e| failed(format!("TLS setup: {e}")))?;
            let name = rustls_pki_types::ServerName::try_from(host.trim_matches(['[', ']']).to_owned())
                .map_err(|_| ClientError::BadUrl(url.clone()))?;
            let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
                .connect(name, tcp)
                .await
                .map_err(|e| failed(format!("TLS handshake: {e}")))?;
            Box::new(tls)
        } else {
            Box::new(tcp)
        };
        let mut request = url.as_str().into_client_request().map_err(|e| failed(e.to_string()))?;
        if let Ok(value) = HeaderValue::from_str(&format!("Bearer {}", key.expose())) {
            request.headers_mut().insert(AUTHORIZATION, value);
        }
        let config = WebSocketConfig::default()
            .max_frame_size(Some(MAX_FORWARD_MESSAGE))
            .max_message_size(Some(MAX_FORWARD_MESSAGE));
        let (socket, _) = tokio_tungstenite::client_async_with_config(request, stream, Some(config))
            .await
            .map_err(|err| match err {
                tokio_tungstenite::tungstenite::Error::Http(response) => {
                    let status = response.status().as_u16();
                    let body = response
                        .body()
                        .as_deref()
                        .and_then(|b| serde_json::from_slice::<crate::wire::api::ErrorBody>(b).ok());
                    match body {
                        Some(body) => ClientError::Api {
                            status,
                            message: body.error,
                            hint: body.hint,
                        },
                        None if status == 401 => ClientError::Unauthorized { url: self.base.clone() },
                        None => failed(format!("the server answered {status}")),
                    }
                }
                other => failed(other.to_string()),
            })?;
        Ok(socket)
    }
}
