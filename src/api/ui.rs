//! The web UI: its embedded assets at `/`, and its cookie sign-in under `/api/ui`.
//!
//! Pages. `GET /` and the UI's own paths (`/sign-in`, `/agents…`, `/sessions…`) answer the single
//! page (`index.html`); `GET /ui/{file}` answers the other embedded files (ES modules, CSS, xterm.js),
//! built into the binary by `build.rs` from `web/`. The page uses only the public REST and terminal
//! WebSocket API; other unknown paths keep the JSON 404.
//!
//! Sign-in. `POST /api/ui/auth/cookie` with `Authorization: Bearer <master key or API key>` mints a
//! random session token (256 bits) and sets it as the cookie [`COOKIE`]: `HttpOnly`,
//! `SameSite=Strict`, `Path=/`, `Max-Age` [`COOKIE_TTL`], `Secure` when served over TLS or behind a
//! proxy that says `X-Forwarded-Proto: https`. An OIDC sign-in ([`super::oidc`]) mints one the same
//! way, acting as the key it made. A key is never the cookie's value, and the page never stores it.
//! The server keeps only the tokens' SHA-256 digests with their expiry and whom they act as
//! ([`SignedIn`]), in memory and in the store (at most [`MAX_SESSIONS`]; the one expiring first is
//! dropped for a new one), so a restart of `lap serve` keeps browsers signed in. `GET` says whether
//! the request is signed in (204, else 401); `DELETE` signs the cookie's session out (revoking the
//! key an OIDC sign-in made for it) and clears the cookie. `GET /api/ui/config` (signed in) tells the
//! page who is signed in, the harness catalog and the credential presets.
//!
//! Cookie auth and CSRF. Every route that takes a key also takes a live session cookie, acting as
//! what signed in (a key revoked, expired or of a disabled user ends it). Besides
//! `SameSite=Strict` (no cross-site request carries it), a cookie-authenticated request whose
//! method is not `GET`/`HEAD` must carry [`CSRF_HEADER`]: a custom header no cross-origin form can
//! send, and no cross-origin script can without a CORS preflight this server never grants. The
//! page's responses carry a CSP that allows only this origin, and `frame-ancestors 'none'`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE, ETAG, IF_NONE_MATCH, SET_COOKIE};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Router};
use ring::rand::{SecureRandom, SystemRandom};
use serde::Serialize;
use uuid::Uuid;

use super::{ApiError, AppState, auth};

mod assets {
    include!(concat!(env!("OUT_DIR"), "/ui_assets.rs"));
}

pub use assets::BUILT;

/// The session cookie's name.
pub const COOKIE: &str = "lap_ui_session";
/// How long a cookie session lives after sign-in.
pub const COOKIE_TTL: Duration = Duration::from_secs(12 * 60 * 60);
/// Most live cookie sessions kept.
pub const MAX_SESSIONS: usize = 1024;
/// The header a cookie-authenticated request must carry unless it is a `GET` or `HEAD`.
pub const CSRF_HEADER: &str = "x-lap-ui";

/// Whom a cookie session acts as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignedIn {
    /// The master key: the bootstrap admin.
    Master,
    /// The API key the person signed in with; it is let in as long as the key is.
    Key(Uuid),
    /// An API key made for this session by an OIDC sign-in; signing out revokes it.
    OwnKey(Uuid),
}

impl SignedIn {
    fn key(self) -> Option<Uuid> {
        match self {
            Self::Master => None,
            Self::Key(key) | Self::OwnKey(key) => Some(key),
        }
    }
}

/// A live cookie session.
#[derive(Debug, Clone, Copy)]
struct Live {
    /// Unix seconds.
    expires: i64,
    signed_in: SignedIn,
}

/// Live cookie sessions: SHA-256 of the token → when it expires and whom it acts as, kept in the
/// store too when there is one (read once, at the first use).
#[derive(Default)]
pub struct Sessions {
    live: Mutex<HashMap<[u8; 32], Live>>,
    store: Option<crate::store::Store>,
    loaded: tokio::sync::OnceCell<()>,
}

impl Sessions {
    /// Sessions kept in `store` as well, so they outlive a restart.
    pub fn persistent(store: crate::store::Store) -> Self {
        Self {
            store: Some(store),
            ..Self::default()
        }
    }

    /// Reads the stored sessions, the first time only.
    async fn load(&self) {
        let Some(store) = &self.store else { return };
        self.loaded
            .get_or_init(|| async {
                match store.ui_sessions(unix_now()).await {
                    Ok(rows) => self
                        .live
                        .lock()
                        .expect("ui sessions lock")
                        .extend(rows.into_iter().map(|row| {
                            let signed_in = match (row.key, row.own_key) {
                                (None, _) => SignedIn::Master,
                                (Some(key), false) => SignedIn::Key(key),
                                (Some(key), true) => SignedIn::OwnKey(key),
                            };
                            (
                                row.digest,
                                Live {
                                    expires: row.expires_at,
                                    signed_in,
                                },
                            )
                        })),
                    Err(err) => {
                        tracing::warn!(error = %err, "cannot read the web UI's sessions; browsers sign in again")
                    }
                }
            })
            .await;
    }

    /// A new session acting as `signed_in`, for [`COOKIE_TTL`]; returns its token (64 hex digits).
    pub async fn mint(&self, signed_in: SignedIn) -> String {
        self.load().await;
        let mut bytes = [0u8; 32];
        SystemRandom::new().fill(&mut bytes).expect("system random generator");
        let token: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        let now = unix_now();
        let expires = now + COOKIE_TTL.as_secs() as i64;
        {
            let mut live = self.live.lock().expect("ui sessions lock");
            live.retain(|_, live| live.expires > now);
            if live.len() >= MAX_SESSIONS
                && let Some(first) = live.iter().min_by_key(|(_, live)| live.expires).map(|(k, _)| *k)
            {
                live.remove(&first);
            }
            live.insert(digest(&token), Live { expires, signed_in });
        }
        if let Some(store) = &self.store {
            let row = crate::store::ui::UiSession {
                digest: digest(&token),
                expires_at: expires,
                key: signed_in.key(),
                own_key: matches!(signed_in, SignedIn::OwnKey(_)),
            };
            if let Err(err) = store.insert_ui_session(row, MAX_SESSIONS).await {
                tracing::warn!(error = %err, "cannot keep a web UI session; it ends with this server");
            }
        }
        token
    }

    /// Whom `token`'s session acts as, if it is live.
    async fn lookup(&self, token: &str) -> Option<SignedIn> {
        self.load().await;
        let live = self.live.lock().expect("ui sessions lock");
        live.get(&digest(token))
            .filter(|live| live.expires > unix_now())
            .map(|live| live.signed_in)
    }

    /// Ends `token`'s session; whom it acted as, if it was one.
    async fn end(&self, token: &str) -> Option<SignedIn> {
        self.load().await;
        let ended = self.live.lock().expect("ui sessions lock").remove(&digest(token));
        if let Some(store) = &self.store
            && let Err(err) = store.delete_ui_session(digest(token)).await
        {
            tracing::warn!(error = %err, "cannot forget a web UI session");
        }
        ended.map(|live| live.signed_in)
    }
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

fn digest(token: &str) -> [u8; 32] {
    let hash = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(hash.as_ref());
    out
}

/// The value of the session cookie in `headers`, if any.
fn cookie_token(headers: &HeaderMap) -> Option<&str> {
    cookie(headers, COOKIE)
}

/// The value of cookie `name` in `headers`, if any.
pub(super) fn cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(n, _)| *n == name)
        .map(|(_, value)| value.trim())
}

/// How a request proved itself by cookie.
pub enum CookieAuth {
    /// No cookie, or not a live session's.
    None,
    /// A live session, and the request may go on as this principal.
    Ok(auth::Principal),
    /// A live session, but an unsafe method without [`CSRF_HEADER`].
    MissingCsrfHeader,
    /// A live session whose API key is refused now (revoked, expired, its user disabled).
    Refused(ApiError),
}

/// Checks the session cookie of a request.
pub async fn cookie_auth(sessions: &Sessions, method: &Method, headers: &HeaderMap) -> CookieAuth {
    let Some(signed_in) = (match cookie_token(headers) {
        Some(token) => sessions.lookup(token).await,
        None => None,
    }) else {
        return CookieAuth::None;
    };
    if !(matches!(*method, Method::GET | Method::HEAD) || headers.contains_key(CSRF_HEADER)) {
        return CookieAuth::MissingCsrfHeader;
    }
    let Some(key) = signed_in.key() else {
        return CookieAuth::Ok(auth::Principal::Master);
    };
    let Some(store) = &sessions.store else {
        return CookieAuth::None;
    };
    match store.key_by_id(key).await {
        Ok(Some(owner)) => match auth::admitted(owner, store) {
            Ok(principal) => CookieAuth::Ok(principal),
            Err(refused) => CookieAuth::Refused(refused),
        },
        Ok(None) => CookieAuth::None,
        Err(err) => CookieAuth::Refused(err.into()),
    }
}

/// The principal of a request signed in by the master key, an API key or the cookie; the answer
/// that refuses it otherwise.
async fn signed_in_principal(
    key: &crate::secret::Secret,
    sessions: &Sessions,
    store: &crate::store::Store,
    method: &Method,
    headers: &HeaderMap,
) -> Result<auth::Principal, ApiError> {
    if let Some(principal) = auth::bearer(headers, key, store).await? {
        return Ok(principal);
    }
    match cookie_auth(sessions, method, headers).await {
        CookieAuth::Ok(principal) => Ok(principal),
        CookieAuth::MissingCsrfHeader => Err(csrf_refused()),
        CookieAuth::Refused(refused) => Err(refused),
        CookieAuth::None => Err(auth::unauthorized()),
    }
}

/// The 403 of a cookie request without the CSRF header.
pub fn csrf_refused() -> ApiError {
    ApiError::new(
        StatusCode::FORBIDDEN,
        format!("a request signed in by cookie must carry the `{CSRF_HEADER}` header"),
    )
    .hint(format!(
        "send `{CSRF_HEADER}: 1`, as the web UI does, or use `Authorization: Bearer <master key>`"
    ))
}

/// The UI's routes: pages, assets and `/api/ui`.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(page))
        .route("/sign-in", get(page))
        .route("/agents", get(page))
        .route("/agents/{*rest}", get(page))
        .route("/sessions", get(page))
        .route("/sessions/{*rest}", get(page))
        .route("/audit", get(page))
        .route("/ui/{*file}", get(asset))
        .route("/api/ui/auth/cookie", get(signed_in).post(sign_in).delete(sign_out))
        .route("/api/ui/config", get(config))
}

async fn page(headers: HeaderMap) -> Response {
    serve("index.html", &headers)
}

async fn asset(Path(file): Path<String>, headers: HeaderMap) -> Response {
    serve(&file, &headers)
}

fn serve(file: &str, headers: &HeaderMap) -> Response {
    let Some((_, content_type, etag, bytes)) = assets::ASSETS.iter().find(|(path, ..)| *path == file) else {
        return ApiError::not_found(format!("no file `{file}` in the web UI"))
            .hint("the UI starts at /")
            .into_response();
    };
    let mut response = if headers
        .get(IF_NONE_MATCH)
        .is_some_and(|v| v.as_bytes() == etag.as_bytes())
    {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        ([(CONTENT_TYPE, *content_type)], *bytes).into_response()
    };
    let head = response.headers_mut();
    head.insert(ETAG, HeaderValue::from_static(etag));
    head.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    head.insert("x-content-type-options", HeaderValue::from_static("nosniff"));
    head.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
    head.insert(
        "content-security-policy",
        HeaderValue::from_static(
            "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; \
             connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
        ),
    );
    response
}

/// Whether the request arrived over TLS (itself, or at a proxy in front).
pub(super) fn over_tls(tls: Option<Extension<super::ServedOverTls>>, headers: &HeaderMap) -> bool {
    tls.is_some()
        || headers
            .get("x-forwarded-proto")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|p| p.eq_ignore_ascii_case("https"))
}

fn set_cookie(value: &str, max_age: u64, secure: bool) -> HeaderValue {
    let secure = if secure { "; Secure" } else { "" };
    HeaderValue::from_str(&format!(
        "{COOKIE}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age}{secure}"
    ))
    .expect("a valid cookie header")
}

/// Sign in: the master key or an API key as bearer buys a cookie session acting as it.
async fn sign_in(
    Extension(key): Extension<Arc<crate::secret::Secret>>,
    Extension(sessions): Extension<Arc<Sessions>>,
    Extension(store): Extension<crate::store::Store>,
    peer: Option<Extension<axum::extract::ConnectInfo<std::net::SocketAddr>>>,
    tls: Option<Extension<super::ServedOverTls>>,
    headers: HeaderMap,
) -> Response {
    let principal = auth::bearer(&headers, &key, &store).await;
    let (actor, key_id, status) = match &principal {
        Ok(Some(principal)) => (principal.name().to_owned(), principal.key_id(), 204),
        Ok(None) => ("unknown".to_owned(), None, 401),
        Err(refused) => ("unknown".to_owned(), None, refused.status.as_u16()),
    };
    let entry = crate::store::teams::NewAuditEntry {
        actor,
        key_id,
        peer: peer.map(|Extension(axum::extract::ConnectInfo(peer))| peer.to_string()),
        action: "sign-in to the web UI".to_owned(),
        target: None,
        status,
    };
    if let Err(err) = store.record_audit(entry).await {
        tracing::error!(error = %err, "cannot record a sign-in in the audit log");
    }
    let signed_in = match principal {
        Ok(Some(principal)) => match principal.key_id() {
            Some(key) => SignedIn::Key(key),
            None => SignedIn::Master,
        },
        Ok(None) => {
            return ApiError::unauthorized()
                .hint("sign in with the master key or an API key (`lap keys create`)")
                .into_response();
        }
        Err(refused) => return refused.into_response(),
    };
    let token = sessions.mint(signed_in).await;
    (
        StatusCode::NO_CONTENT,
        [(SET_COOKIE, session_cookie(&token, tls, &headers))],
    )
        .into_response()
}

/// The `Set-Cookie` value of a new session's token.
pub fn session_cookie(token: &str, tls: Option<Extension<super::ServedOverTls>>, headers: &HeaderMap) -> HeaderValue {
    set_cookie(token, COOKIE_TTL.as_secs(), over_tls(tls, headers))
}

/// 204 when the request is signed in (cookie, the master key or an API key), else 401.
async fn signed_in(
    Extension(key): Extension<Arc<crate::secret::Secret>>,
    Extension(sessions): Extension<Arc<Sessions>>,
    Extension(store): Extension<crate::store::Store>,
    method: Method,
    headers: HeaderMap,
) -> Response {
    match signed_in_principal(&key, &sessions, &store, &method, &headers).await {
        Ok(_) => StatusCode::NO_CONTENT.into_response(),
        Err(refused) => refused.into_response(),
    }
}

/// Sign out: the cookie's session ends (with the key an OIDC sign-in made for it) and the cookie is
/// cleared.
async fn sign_out(
    Extension(sessions): Extension<Arc<Sessions>>,
    Extension(store): Extension<crate::store::Store>,
    tls: Option<Extension<super::ServedOverTls>>,
    method: Method,
    headers: HeaderMap,
) -> Response {
    if let CookieAuth::MissingCsrfHeader = cookie_auth(&sessions, &method, &headers).await {
        return csrf_refused().into_response();
    }
    if let Some(token) = cookie_token(&headers)
        && let Some(SignedIn::OwnKey(key)) = sessions.end(token).await
        && let Err(err) = store.revoke_key(key).await
    {
        tracing::error!(error = %err, key = %key, "cannot revoke the key of a web UI session signed out");
    }
    (
        StatusCode::NO_CONTENT,
        [(SET_COOKIE, set_cookie("", 0, over_tls(tls, &headers)))],
    )
        .into_response()
}

/// What the UI needs to know about this server: the harnesses and the credential presets (hosts and
/// injection points, and the points of a name no preset knows).
#[derive(Serialize)]
struct UiConfig {
    version: &'static str,
    backend: String,
    /// Who is signed in: `master` or a user's name, and the role.
    signed_in_as: String,
    role: crate::wire::teams::Role,
    harnesses: Vec<UiHarness>,
    credential_presets: Vec<(&'static str, &'static [&'static str])>,
    injection_presets: Vec<(&'static str, &'static [&'static str])>,
    default_injection: &'static [&'static str],
}

#[derive(Serialize)]
struct UiHarness {
    id: &'static str,
    supports_tui: bool,
    needs_env: &'static [&'static str],
    install_hint: &'static str,
}

async fn config(
    State(state): State<AppState>,
    Extension(key): Extension<Arc<crate::secret::Secret>>,
    Extension(sessions): Extension<Arc<Sessions>>,
    method: Method,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let principal = signed_in_principal(&key, &sessions, &state.store, &method, &headers).await?;
    Ok(Json(UiConfig {
        version: env!("CARGO_PKG_VERSION"),
        backend: state.control.backend().to_owned(),
        signed_in_as: principal.name().to_owned(),
        role: principal.role(),
        harnesses: crate::tools::CATALOG
            .iter()
            .map(|h| UiHarness {
                id: h.id,
                supports_tui: h.supports_tui(),
                needs_env: h.needs_env,
                install_hint: h.install_hint,
            })
            .collect(),
        credential_presets: crate::wire::vault::CREDENTIAL_PRESETS.to_vec(),
        injection_presets: crate::wire::vault::INJECTION_PRESETS.to_vec(),
        default_injection: crate::wire::vault::FALLBACK_INJECTION,
    })
    .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_str(value).unwrap());
        }
        map
    }

    #[tokio::test]
    async fn a_minted_token_is_live_until_signed_out_and_only_it() {
        let sessions = Sessions::default();
        let token = sessions.mint(SignedIn::Master).await;
        assert_eq!(token.len(), 64);
        assert_eq!(sessions.lookup(&token).await, Some(SignedIn::Master));
        assert_eq!(sessions.lookup(&sessions_other_token(&token)).await, None);
        sessions.end(&token).await;
        assert_eq!(sessions.lookup(&token).await, None);
    }

    #[tokio::test]
    async fn stored_sessions_outlive_the_server_until_they_end_or_expire() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::Store::open(dir.path()).unwrap();
        let first = Sessions::persistent(store.clone());
        let (kept, ended) = (first.mint(SignedIn::Master).await, first.mint(SignedIn::Master).await);
        first.end(&ended).await;
        // An expired one, left by an earlier server.
        store
            .insert_ui_session(
                crate::store::ui::UiSession {
                    digest: digest("old"),
                    expires_at: unix_now() - 1,
                    key: None,
                    own_key: false,
                },
                MAX_SESSIONS,
            )
            .await
            .unwrap();
        let restarted = Sessions::persistent(store.clone());
        assert_eq!(restarted.lookup(&kept).await, Some(SignedIn::Master));
        assert_eq!(restarted.lookup(&ended).await, None);
        assert_eq!(restarted.lookup("old").await, None);
        // Only digests are stored, never a token.
        let rows = store.ui_sessions(unix_now()).await.unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].digest, digest(&kept));
    }

    fn sessions_other_token(token: &str) -> String {
        let mut other = token.to_owned();
        other.replace_range(0..1, if token.starts_with('0') { "1" } else { "0" });
        other
    }

    #[tokio::test]
    async fn cookie_requests_that_change_state_need_the_csrf_header() {
        let sessions = Sessions::default();
        let token = sessions.mint(SignedIn::Master).await;
        let cookie = format!("other=1; {COOKIE}={token}");
        let plain = headers(&[("cookie", &cookie)]);
        let marked = headers(&[("cookie", &cookie), (CSRF_HEADER, "1")]);
        assert!(matches!(
            cookie_auth(&sessions, &Method::GET, &plain).await,
            CookieAuth::Ok(auth::Principal::Master)
        ));
        assert!(matches!(
            cookie_auth(&sessions, &Method::POST, &plain).await,
            CookieAuth::MissingCsrfHeader
        ));
        assert!(matches!(
            cookie_auth(&sessions, &Method::DELETE, &marked).await,
            CookieAuth::Ok(auth::Principal::Master)
        ));
        let wrong = headers(&[("cookie", "lap_ui_session=nope"), (CSRF_HEADER, "1")]);
        assert!(matches!(
            cookie_auth(&sessions, &Method::GET, &wrong).await,
            CookieAuth::None
        ));
    }

    #[test]
    fn the_page_is_embedded() {
        assert!(assets::ASSETS.iter().any(|(path, ..)| *path == "index.html"));
    }
}
