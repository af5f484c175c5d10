//! A session's ports: connections to its sandbox's own `127.0.0.1:PORT` (port-forward, the HTTP
//! proxy path, previews), the ports it listens on, and signed preview URLs.
//!
//! Connections go through the backend's harness ([`crate::sandbox::Sandbox::connect_port`]), at
//! most [`MAX_TUNNELS_PER_SESSION`] open at once per session, so one sandbox cannot exhaust
//! `lap serve`'s descriptors (invariant 8); a [`Tunnel`] holds its place until dropped.
//!
//! Preview tokens ([`Previews`]) grant one session's one port until they expire: `v1.SESSION.PORT.
//! ISSUED_MS.EXPIRES_S` in base64url, a dot, and its HMAC-SHA-256 (ring) under a 256-bit key kept
//! in the data dir (`preview.key`, mode 0600), compared in constant time. Revocation is a watermark
//! per session and port in the store: a token issued at or before it is void. A token is never
//! stored and carries nothing secret; it is checked on every request it is used for, so a revoked or
//! expired token stops working at once, also for a browser that holds it in a cookie.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};
use uuid::Uuid;

use super::{Control, ControlError};
use crate::sandbox::local::ports::PortStream;
use crate::store::Store;
use crate::wire::ports::ListeningPort;

/// Connections to one session's ports open at once (port-forward and proxied requests together).
pub const MAX_TUNNELS_PER_SESSION: usize = 256;
/// The preview key's file in the data dir.
pub const PREVIEW_KEY_FILE: &str = "preview.key";
/// Bytes of the preview key.
const KEY_LEN: usize = 32;
/// The version tag every token starts with.
const TOKEN_VERSION: &str = "v1";

/// Least time between two `last_seen_at` writes for one session's port connections.
pub const TOUCH_INTERVAL: std::time::Duration = std::time::Duration::from_secs(60);

/// Open connections per session, and when each session's activity was last recorded.
#[derive(Default)]
pub struct Tunnels(Mutex<HashMap<Uuid, usize>>, Mutex<HashMap<Uuid, std::time::Instant>>);

/// One open connection's place, given back when dropped.
pub struct Tunnel {
    tunnels: Arc<Tunnels>,
    session: Uuid,
}

impl Drop for Tunnel {
    fn drop(&mut self) {
        let mut open = self.tunnels.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = open.get_mut(&self.session) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                open.remove(&self.session);
            }
        }
    }
}

impl Tunnels {
    /// Takes a place for `session`, or refuses when it has [`MAX_TUNNELS_PER_SESSION`] open.
    pub fn take(self: &Arc<Self>, session: Uuid) -> Result<Tunnel, ControlError> {
        let mut open = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let n = open.entry(session).or_default();
        if *n >= MAX_TUNNELS_PER_SESSION {
            return Err(ControlError::Conflict(format!(
                "session {session} has {MAX_TUNNELS_PER_SESSION} connections to its ports open already"
            )));
        }
        *n += 1;
        Ok(Tunnel {
            tunnels: self.clone(),
            session,
        })
    }

    /// Whether `session`'s activity is due to be recorded (at most once per [`TOUCH_INTERVAL`]).
    fn touch_due(&self, session: Uuid) -> bool {
        let mut touched = self.1.lock().unwrap_or_else(|p| p.into_inner());
        let now = std::time::Instant::now();
        touched.retain(|_, at| now.duration_since(*at) < TOUCH_INTERVAL);
        if touched.contains_key(&session) {
            return false;
        }
        touched.insert(session, now);
        true
    }
}

/// A connection to a sandbox port, with its place among the session's tunnels.
pub struct PortConnection {
    pub stream: Box<dyn PortStream>,
    pub tunnel: Tunnel,
}

impl Control {
    /// Opens a connection to `port` of session `session`'s sandbox `sandbox_id`.
    pub async fn connect_port(
        &self,
        session: Uuid,
        sandbox_id: &str,
        port: u16,
    ) -> Result<PortConnection, ControlError> {
        let tunnel = self.tunnels.take(session)?;
        let stream = self.sandbox.connect_port(sandbox_id, port).await?;
        // A connection to a port is activity (idle reaping); recorded off the connection's path,
        // as the store's writes wait for the disk.
        if self.tunnels.touch_due(session) {
            let store = self.store.clone();
            self.tasks.spawn(async move {
                if let Err(err) = store.touch_session(session).await {
                    tracing::warn!(session = %session, error = %err, "cannot record port activity");
                }
            });
        }
        Ok(PortConnection { stream, tunnel })
    }

    /// The ports sandbox `sandbox_id` listens on.
    pub async fn listening_ports(&self, sandbox_id: &str) -> Result<Vec<ListeningPort>, ControlError> {
        Ok(self.sandbox.listening_ports(sandbox_id).await?)
    }
}

/// Why a preview token is not accepted. The variants are for logs and tests; a visitor only ever
/// learns that the link does not work.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("not a preview token")]
    Malformed,
    #[error("the signature does not match")]
    BadSignature,
    #[error("expired")]
    Expired,
    #[error("revoked")]
    Revoked,
}

/// What a valid token grants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grant {
    pub session: Uuid,
    pub port: u16,
    /// Unix milliseconds.
    pub issued_ms: i64,
    /// Unix seconds.
    pub expires: i64,
}

/// Mints and checks preview tokens.
pub struct Previews {
    key: hmac::Key,
    store: Store,
    /// The preview origin's base URL, e.g. `http://127.0.0.1:3001`.
    base: String,
    /// With a preview domain, each session's port is served on a host name of its own under it
    /// ([`host_label`]): an origin per session and port.
    domain: Option<String>,
}

/// The host label of one session's port under the preview domain: `p{port}-{session}`.
pub fn host_label(session: Uuid, port: u16) -> String {
    format!("p{port}-{session}")
}

#[derive(Debug, thiserror::Error)]
pub enum PreviewKeyError {
    #[error("cannot read or write the preview key `{path}`: {err}")]
    Io { path: String, err: std::io::Error },
    #[error("the preview key `{path}` is not {KEY_LEN} bytes")]
    Length { path: String },
    #[error("no randomness for the preview key")]
    Random,
}

/// Loads the preview key from `data_dir`, creating it (0600) the first time.
pub fn load_or_create_key(data_dir: &Path) -> Result<[u8; KEY_LEN], PreviewKeyError> {
    use std::io::Write;
    let path = data_dir.join(PREVIEW_KEY_FILE);
    let io = |err| PreviewKeyError::Io {
        path: path.display().to_string(),
        err,
    };
    match std::fs::read(&path) {
        Ok(bytes) => {
            return bytes.try_into().map_err(|_| PreviewKeyError::Length {
                path: path.display().to_string(),
            });
        }
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
        Err(err) => return Err(io(err)),
    }
    let mut key = [0u8; KEY_LEN];
    SystemRandom::new()
        .fill(&mut key)
        .map_err(|_| PreviewKeyError::Random)?;
    let mut file = crate::platform::create_private_file(&path).map_err(io)?;
    file.write_all(&key).map_err(io)?;
    file.sync_all().map_err(io)?;
    Ok(key)
}

fn now_ms() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp_nanos() as i64 / 1_000_000
}

impl Previews {
    pub fn new(key: &[u8], store: Store, base: String) -> Self {
        Self {
            key: hmac::Key::new(hmac::HMAC_SHA256, key),
            store,
            base: base.trim_end_matches('/').to_owned(),
            domain: None,
        }
    }

    /// Serves each session's port on a host name of its own under `domain` (`lap serve
    /// --preview-domain`).
    pub fn with_domain(mut self, domain: Option<String>) -> Self {
        self.domain = domain.map(|d| d.trim_matches('.').to_ascii_lowercase());
        self
    }

    /// The preview origin's base URL (without a preview domain, the origin of every preview).
    pub fn base(&self) -> &str {
        &self.base
    }

    /// Whether the preview origin is served over TLS (its cookie is then `Secure`).
    pub fn is_https(&self) -> bool {
        self.base.starts_with("https://")
    }

    /// The base URL of `session`'s `port` previews: the base, or with a preview domain the base
    /// with its host replaced by `p{port}-{session}.{domain}`.
    pub fn origin_of(&self, session: Uuid, port: u16) -> String {
        let Some(domain) = &self.domain else {
            return self.base.clone();
        };
        let (scheme, rest) = self.base.split_once("://").unwrap_or(("http", &self.base));
        let authority = rest.split('/').next().unwrap_or_default();
        // The port after the host, an IPv6 literal's brackets included.
        let port_part = match authority.rfind(':') {
            Some(i) if !authority[i..].contains(']') => &authority[i..],
            _ => "",
        };
        format!("{scheme}://{}.{domain}{port_part}", host_label(session, port))
    }

    /// Whether a request's `Host` may be served for `grant`: any host without a preview domain,
    /// else only that session's port's own host name.
    pub fn host_allowed(&self, host: Option<&str>, grant: &Grant) -> bool {
        let Some(domain) = &self.domain else {
            return true;
        };
        let Some(host) = host else {
            return false;
        };
        let name = host.rsplit_once(':').map_or(host, |(name, port)| {
            if port.chars().all(|c| c.is_ascii_digit()) {
                name
            } else {
                host
            }
        });
        name.eq_ignore_ascii_case(&format!("{}.{domain}", host_label(grant.session, grant.port)))
    }

    /// A token for `session`'s `port`, valid for `ttl_secs`; also its expiry (Unix seconds).
    pub fn mint(&self, session: Uuid, port: u16, ttl_secs: u64) -> (String, i64) {
        let issued_ms = now_ms();
        let expires = issued_ms / 1000 + ttl_secs as i64;
        let payload = format!("{TOKEN_VERSION}.{session}.{port}.{issued_ms}.{expires}");
        let tag = hmac::sign(&self.key, payload.as_bytes());
        let token = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(payload.as_bytes()),
            URL_SAFE_NO_PAD.encode(tag.as_ref())
        );
        (token, expires)
    }

    /// Checks a token's signature and expiry (not revocation: see [`Self::check`]).
    pub fn verify(&self, token: &str) -> Result<Grant, TokenError> {
        let (payload, tag) = token.split_once('.').ok_or(TokenError::Malformed)?;
        let payload = URL_SAFE_NO_PAD.decode(payload).map_err(|_| TokenError::Malformed)?;
        let tag = URL_SAFE_NO_PAD.decode(tag).map_err(|_| TokenError::Malformed)?;
        // Constant time (ring); nothing of the payload is trusted before this.
        hmac::verify(&self.key, &payload, &tag).map_err(|_| TokenError::BadSignature)?;
        let payload = String::from_utf8(payload).map_err(|_| TokenError::Malformed)?;
        let fields: Vec<&str> = payload.split('.').collect();
        let [TOKEN_VERSION, session, port, issued_ms, expires] = fields.as_slice() else {
            return Err(TokenError::Malformed);
        };
        let grant = Grant {
            session: Uuid::parse_str(session).map_err(|_| TokenError::Malformed)?,
            port: port.parse().map_err(|_| TokenError::Malformed)?,
            issued_ms: issued_ms.parse().map_err(|_| TokenError::Malformed)?,
            expires: expires.parse().map_err(|_| TokenError::Malformed)?,
        };
        if now_ms() / 1000 >= grant.expires {
            return Err(TokenError::Expired);
        }
        Ok(grant)
    }

    /// [`Self::verify`], then revocation.
    pub async fn check(&self, token: &str) -> Result<Grant, TokenError> {
        let grant = self.verify(token)?;
        let revoked_before = self
            .store
            .previews_revoked_before(grant.session, grant.port)
            .await
            // A store that cannot answer lets nothing through.
            .map_err(|_| TokenError::Revoked)?;
        if grant.issued_ms <= revoked_before {
            return Err(TokenError::Revoked);
        }
        Ok(grant)
    }

    /// Voids every token of `session`'s `port` (`None`: of every port) issued until now; returns
    /// that moment, in Unix milliseconds.
    pub async fn revoke(&self, session: Uuid, port: Option<u16>) -> Result<i64, ControlError> {
        let now = now_ms();
        self.store.revoke_previews(session, port.unwrap_or(0), now).await?;
        Ok(now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn previews() -> (Previews, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let key = load_or_create_key(dir.path()).unwrap();
        assert_eq!(load_or_create_key(dir.path()).unwrap(), key, "the key is kept");
        (Previews::new(&key, store, "http://127.0.0.1:3001/".into()), dir)
    }

    #[tokio::test]
    async fn a_token_grants_its_session_and_port_until_it_expires_or_is_revoked() {
        let (previews, _dir) = previews().await;
        let session = Uuid::new_v4();
        let (token, _) = previews.mint(session, 8000, 60);
        let grant = previews.check(&token).await.unwrap();
        assert_eq!((grant.session, grant.port), (session, 8000));

        let (expired, _) = previews.mint(session, 8000, 0);
        assert_eq!(previews.check(&expired).await, Err(TokenError::Expired));

        // Any change to the payload breaks the signature.
        let (payload, tag) = token.split_once('.').unwrap();
        let text = String::from_utf8(URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap();
        let forged = URL_SAFE_NO_PAD.encode(text.replace(".8000.", ".8001."));
        assert_eq!(
            previews.check(&format!("{forged}.{tag}")).await,
            Err(TokenError::BadSignature)
        );
        assert_eq!(previews.check("nonsense").await, Err(TokenError::Malformed));

        let other_key = Previews::new(&[7u8; 32], previews.store.clone(), String::new());
        assert_eq!(other_key.check(&token).await, Err(TokenError::BadSignature));

        let (other_port, _) = previews.mint(session, 9000, 60);
        previews.revoke(session, Some(8000)).await.unwrap();
        assert_eq!(previews.check(&token).await, Err(TokenError::Revoked));
        assert!(
            previews.check(&other_port).await.is_ok(),
            "another port's URL still works"
        );
        std::thread::sleep(std::time::Duration::from_millis(2));
        let (fresh, _) = previews.mint(session, 8000, 60);
        assert!(
            previews.check(&fresh).await.is_ok(),
            "a URL minted after the revocation works"
        );
        previews.revoke(session, None).await.unwrap();
        assert_eq!(previews.check(&other_port).await, Err(TokenError::Revoked));
        assert_eq!(previews.check(&fresh).await, Err(TokenError::Revoked));
    }

    #[tokio::test]
    async fn with_a_preview_domain_each_sessions_port_has_a_host_of_its_own() {
        let (previews, _dir) = previews().await;
        let previews = previews.with_domain(Some("preview.localhost".into()));
        let session = Uuid::new_v4();
        let origin = previews.origin_of(session, 8000);
        assert_eq!(origin, format!("http://p8000-{session}.preview.localhost:3001"));
        let (token, _) = previews.mint(session, 8000, 60);
        let grant = previews.check(&token).await.unwrap();
        let own = format!("p8000-{session}.preview.localhost:3001");
        assert!(previews.host_allowed(Some(&own), &grant));
        assert!(!previews.host_allowed(Some("127.0.0.1:3001"), &grant));
        let other = format!("p8000-{}.preview.localhost:3001", Uuid::new_v4());
        assert!(!previews.host_allowed(Some(&other), &grant));
        assert!(!previews.host_allowed(Some(&format!("p8001-{session}.preview.localhost")), &grant));
        assert!(!previews.host_allowed(None, &grant));
    }

    #[test]
    fn a_session_has_at_most_its_share_of_tunnels() {
        let tunnels = Arc::new(Tunnels::default());
        let session = Uuid::new_v4();
        let held: Vec<Tunnel> = (0..MAX_TUNNELS_PER_SESSION)
            .map(|_| tunnels.take(session).unwrap())
            .collect();
        assert!(tunnels.take(session).is_err());
        assert!(tunnels.take(Uuid::new_v4()).is_ok(), "other sessions are not starved");
        drop(held);
        assert!(tunnels.take(session).is_ok());
    }
}
