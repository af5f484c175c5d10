//! The typed REST client of `lap serve`: the CLI's only way to the server.
//!
//! Errors say which server was asked and what to do: an unreachable server, a rejected key and an
//! API error envelope each become their own [`ClientError`] variant with a hint. The terminal's
//! WebSocket is in [`tty`].

mod files;
pub mod messages;
// Issue 17 part 1 (ports).
mod ports;
mod teams;
mod tty;
mod workspaces;

pub use ports::ForwardSocket;
pub use tty::{NoTerminal, SessionTarget, TtyLocation, TtySocket, locate_tty, session_target, tty_url};

use std::path::Path;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::secret::Secret;
use crate::wire::api::{
    Agent, AgentList, CreateAgent, CreateSession, DeletedSession, ErrorBody, ExecCommand, ExecEvent, Health,
    Interception, MAX_EXEC_LINE, PREFIX, Session, SessionStatus, UpdateAgent,
};

/// How long one request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How soon, and at most how long apart, [`Client::wait_while_creating`] polls.
const POLL_FIRST: Duration = Duration::from_millis(10);
const POLL_LONGEST: Duration = Duration::from_millis(250);
/// How long `lap exec` may run: commands are long-lived, like `kubectl exec`.
const EXEC_TIMEOUT: Duration = Duration::from_secs(7 * 24 * 60 * 60);

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot reach lap serve at `{url}`")]
    Unreachable {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("no master key is configured for `{url}`")]
    NoKey { url: String },
    #[error("`{url}` rejected the master key (401 unauthorized)")]
    Unauthorized { url: String },
    #[error("{message}")]
    Api {
        status: u16,
        message: String,
        hint: Option<String>,
    },
    #[error("unexpected answer from `{url}`: {detail}")]
    Protocol { url: String, detail: String },
    #[error("invalid server URL `{0}`")]
    BadUrl(String),
    #[error("cannot use the CA certificate `{path}`")]
    CaCert {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

impl ClientError {
    pub fn hint(&self) -> Option<String> {
        match self {
            Self::Unreachable { source, .. } if is_certificate_error(source) => Some(
                "the server's TLS certificate is not trusted here: set `ca_cert` in the config file to the PEM of its CA; `lap config` shows which file"
                    .into(),
            ),
            Self::Unreachable { .. } => Some(
                "start the server with `lap serve`, or point `--server`/`LAP_URL` at a running one; see docs/troubleshooting.md#cannot-reach-lap-serve"
                    .into(),
            ),
            Self::NoKey { .. } => Some(
                "run `lap login`, set `LAP_MASTER_KEY`, or start `lap serve` once on this machine so it writes the client config; see docs/troubleshooting.md#no-master-key"
                    .into(),
            ),
            Self::Unauthorized { .. } => {
                Some("run `lap login` with the server's master key; see docs/troubleshooting.md#master-key-rejected".into())
            }
            Self::Api { hint, .. } => hint.clone(),
            Self::BadUrl(_) => Some("URLs look like `http://127.0.0.1:3000` or `https://lap.example.com`".into()),
            Self::Protocol { .. } => Some("is that URL really a lap server? `lap config` shows which one is used".into()),
            Self::CaCert { .. } => None,
        }
    }

    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Api { status, .. } => Some(*status),
            Self::Unauthorized { .. } => Some(401),
            _ => None,
        }
    }
}

/// Whether a failed request failed because the server's certificate was not trusted.
fn is_certificate_error(err: &reqwest::Error) -> bool {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(mut e) = cause {
        // rustls errors reach us wrapped in `io::Error`s (twice), whose `source()` skips them.
        while let Some(inner) = e.downcast_ref::<std::io::Error>().and_then(|io| io.get_ref()) {
            e = inner;
        }
        if matches!(
            e.downcast_ref::<rustls::Error>(),
            Some(rustls::Error::InvalidCertificate(_))
        ) {
            return true;
        }
        cause = e.source();
    }
    false
}

/// A connection to one server.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    base: String,
    key: Option<Secret>,
    ca_cert: Option<std::path::PathBuf>,
}

impl Client {
    pub fn new(base: &str, key: Option<Secret>, ca_cert: Option<&Path>) -> Result<Self, ClientError> {
        let base = base.trim_end_matches('/').to_owned();
        if !(base.starts_with("http://") || base.starts_with("https://")) || reqwest::Url::parse(&base).is_err() {
            return Err(ClientError::BadUrl(base));
        }
        let mut builder = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .connect_timeout(CONNECT_TIMEOUT)
            .user_agent(concat!("lap/", env!("CARGO_PKG_VERSION")));
        if let Some(path) = ca_cert {
            let ca_error = |source| ClientError::CaCert {
                path: path.display().to_string(),
                source,
            };
            let pem = std::fs::read(path).map_err(ca_error)?;
            let cert = reqwest::Certificate::from_pem(&pem).map_err(|e| ca_error(std::io::Error::other(e)))?;
            builder = builder.tls_certs_merge([cert]);
        }
        let http = builder.build().map_err(|source| ClientError::Unreachable {
            url: base.clone(),
            source,
        })?;
        Ok(Self {
            http,
            base,
            key,
            ca_cert: ca_cert.map(Path::to_path_buf),
        })
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    /// This client with another key.
    pub fn with_key(&self, key: Secret) -> Self {
        Self {
            key: Some(key),
            ..self.clone()
        }
    }

    async fn send<B: Serialize + ?Sized>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
        auth: bool,
    ) -> Result<reqwest::Response, ClientError> {
        self.send_within(method, path, body, auth, REQUEST_TIMEOUT).await
    }

    async fn send_within<B: Serialize + ?Sized>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
        auth: bool,
        timeout: Duration,
    ) -> Result<reqwest::Response, ClientError> {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.base))
            .timeout(timeout);
        if auth {
            let key = self
                .key
                .as_ref()
                .ok_or_else(|| ClientError::NoKey { url: self.base.clone() })?;
            req = req.bearer_auth(key.expose());
        }
        if let Some(body) = body {
            req = req.json(body);
        }
        let resp = req.send().await.map_err(|source| ClientError::Unreachable {
            url: self.base.clone(),
            source,
        })?;
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        let api_key = self
            .key
            .as_ref()
            .is_some_and(|key| key.expose().starts_with(crate::wire::teams::KEY_PREFIX));
        if status == StatusCode::UNAUTHORIZED && !api_key {
            return Err(ClientError::Unauthorized { url: self.base.clone() });
        }
        if status == StatusCode::UNAUTHORIZED {
            // An API key: the server's hint says why (revoked, expired, user disabled, unknown).
            let hint = serde_json::from_str::<ErrorBody>(&resp.text().await.unwrap_or_default())
                .ok()
                .and_then(|body| body.hint);
            return Err(ClientError::Api {
                status: 401,
                message: format!("`{}` refused this API key (401 unauthorized)", self.base),
                hint,
            });
        }
        let text = resp.text().await.unwrap_or_default();
        Err(match serde_json::from_str::<ErrorBody>(&text) {
            Ok(body) => ClientError::Api {
                status: status.as_u16(),
                message: body.error,
                hint: body.hint,
            },
            Err(_) => ClientError::Protocol {
                url: self.base.clone(),
                detail: format!("{status}: {}", text.chars().take(120).collect::<String>()),
            },
        })
    }

    async fn call<T: DeserializeOwned, B: Serialize + ?Sized>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
    ) -> Result<T, ClientError> {
        let resp = self.send(method, path, body, true).await?;
        self.decode(resp).await
    }

    async fn decode<T: DeserializeOwned>(&self, resp: reqwest::Response) -> Result<T, ClientError> {
        let bytes = resp.bytes().await.map_err(|source| ClientError::Unreachable {
            url: self.base.clone(),
            source,
        })?;
        serde_json::from_slice(&bytes).map_err(|err| ClientError::Protocol {
            url: self.base.clone(),
            detail: err.to_string(),
        })
    }

    /// The vault CA certificate, PEM (an open route: certificates are public).
    pub async fn vault_ca(&self) -> Result<String, ClientError> {
        let resp = self
            .send::<()>(Method::GET, "/api/v1/vault/ca.pem", None, false)
            .await?;
        resp.text().await.map_err(|source| ClientError::Unreachable {
            url: self.base.clone(),
            source,
        })
    }

    /// The warm pool and sessions at a glance (`GET /api/v1/admin/stats`).
    pub async fn admin_stats(&self) -> Result<crate::wire::admin::AdminStats, ClientError> {
        self.call::<_, ()>(Method::GET, crate::wire::admin::STATS_PATH, None)
            .await
    }

    pub async fn health(&self) -> Result<Health, ClientError> {
        let resp = self.send::<()>(Method::GET, "/api/v1/health", None, false).await?;
        self.decode(resp).await
    }

    /// Agents matching `search`, newest first, every page.
    pub async fn list_agents(&self, search: Option<&str>) -> Result<Vec<Agent>, ClientError> {
        let mut all = Vec::new();
        loop {
            let mut path = format!("{PREFIX}/agents?limit=200&offset={}", all.len());
            if let Some(search) = search {
                path.push_str(&format!("&search={}", encode(search)));
            }
            let page: AgentList = self.call::<_, ()>(Method::GET, &path, None).await?;
            let done = page.data.is_empty() || all.len() + page.data.len() >= page.total as usize;
            all.extend(page.data);
            if done {
                return Ok(all);
            }
        }
    }

    /// Checks the key by asking for one agent.
    pub async fn verify_key(&self) -> Result<(), ClientError> {
        self.call::<AgentList, ()>(Method::GET, &format!("{PREFIX}/agents?limit=1"), None)
            .await
            .map(drop)
    }

    pub async fn get_agent(&self, id_or_name: &str) -> Result<Agent, ClientError> {
        self.call::<_, ()>(Method::GET, &format!("{PREFIX}/agents/{}", encode(id_or_name)), None)
            .await
    }

    pub async fn create_agent(&self, body: &CreateAgent) -> Result<Agent, ClientError> {
        self.call(Method::POST, &format!("{PREFIX}/agents"), Some(body)).await
    }

    pub async fn update_agent(&self, id_or_name: &str, body: &UpdateAgent) -> Result<Agent, ClientError> {
        self.call(
            Method::PATCH,
            &format!("{PREFIX}/agents/{}", encode(id_or_name)),
            Some(body),
        )
        .await
    }

    pub async fn delete_agent(&self, id_or_name: &str) -> Result<(), ClientError> {
        self.send::<()>(
            Method::DELETE,
            &format!("{PREFIX}/agents/{}", encode(id_or_name)),
            None,
            true,
        )
        .await
        .map(drop)
    }

    pub async fn create_session(&self, agent: &str, body: &CreateSession) -> Result<Session, ClientError> {
        self.call(
            Method::POST,
            &format!("{PREFIX}/agents/{}/session", encode(agent)),
            Some(body),
        )
        .await
    }

    pub async fn get_session(&self, id: &str) -> Result<Session, ClientError> {
        self.call::<_, ()>(Method::GET, &format!("{PREFIX}/sessions/{}", encode(id)), None)
            .await
    }

    /// Polls a session until it leaves `creating`: `Ok(Some)` with it then, `Ok(None)` when `wait`
    /// passed first. Polls soon (a bring-up often takes tens of milliseconds), then less often, up
    /// to [`POLL_LONGEST`]; `progress` sees each state read.
    pub async fn wait_while_creating(
        &self,
        mut session: Session,
        wait: Duration,
        mut progress: impl FnMut(&Session),
    ) -> Result<Option<Session>, ClientError> {
        let deadline = tokio::time::Instant::now() + wait;
        let mut poll = POLL_FIRST;
        while session.status == SessionStatus::Creating {
            progress(&session);
            if tokio::time::Instant::now() >= deadline {
                return Ok(None);
            }
            tokio::time::sleep(poll).await;
            poll = (poll * 2).min(POLL_LONGEST);
            session = self.get_session(&session.id.to_string()).await?;
        }
        Ok(Some(session))
    }

    pub async fn list_sessions(&self, agent: Option<&str>, limit: u32) -> Result<Vec<Session>, ClientError> {
        let mut path = format!("{PREFIX}/sessions?limit={limit}");
        if let Some(agent) = agent {
            path.push_str(&format!("&agent_id={}", encode(agent)));
        }
        self.call::<_, ()>(Method::GET, &path, None).await
    }

    /// Starts a command in a session's sandbox; read its output with [`ExecStream::next`].
    pub async fn exec(&self, id: &str, body: &ExecCommand) -> Result<ExecStream, ClientError> {
        let path = format!("{PREFIX}/sessions/{}/exec", encode(id));
        let resp = self
            .send_within(Method::POST, &path, Some(body), true, EXEC_TIMEOUT)
            .await?;
        Ok(ExecStream {
            resp,
            buf: Vec::new(),
            url: self.base.clone(),
        })
    }

    /// A session's egress log after position `after`.
    pub async fn interceptions(&self, id: &str, after: u64) -> Result<Vec<Interception>, ClientError> {
        let path = format!(
            "{PREFIX}/sessions/{}/interceptions?after={after}&limit=1000",
            encode(id)
        );
        self.call::<_, ()>(Method::GET, &path, None).await
    }

    pub async fn delete_session(&self, id: &str) -> Result<DeletedSession, ClientError> {
        self.call::<_, ()>(Method::DELETE, &format!("{PREFIX}/sessions/{}", encode(id)), None)
            .await
    }
}

/// The streamed response of [`Client::exec`]: newline-delimited [`ExecEvent`]s.
pub struct ExecStream {
    resp: reqwest::Response,
    buf: Vec<u8>,
    url: String,
}

impl ExecStream {
    /// The next event; `None` at the end of the stream.
    pub async fn next(&mut self) -> Result<Option<ExecEvent>, ClientError> {
        loop {
            if let Some(end) = self.buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=end).collect();
                return serde_json::from_slice(&line)
                    .map(Some)
                    .map_err(|err| ClientError::Protocol {
                        url: self.url.clone(),
                        detail: format!("bad exec event: {err}"),
                    });
            }
            if self.buf.len() > MAX_EXEC_LINE {
                return Err(ClientError::Protocol {
                    url: self.url.clone(),
                    detail: format!("an exec event over {MAX_EXEC_LINE} bytes"),
                });
            }
            let chunk = self.resp.chunk().await.map_err(|source| ClientError::Unreachable {
                url: self.url.clone(),
                source,
            })?;
            match chunk {
                Some(bytes) => self.buf.extend_from_slice(&bytes),
                None if self.buf.is_empty() => return Ok(None),
                None => {
                    return Err(ClientError::Protocol {
                        url: self.url.clone(),
                        detail: "the exec stream ended mid-line".into(),
                    });
                }
            }
        }
    }
}

/// Percent-encodes a path segment or query value.
fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}
