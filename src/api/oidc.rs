//! OIDC sign-in, for the web UI and for `lap login --oidc`, with any OpenID provider
//! (`lap serve --oidc-issuer …`): the authorization code flow with PKCE and a nonce, the ID token
//! checked by the `openidconnect` crate (signature against the provider's published keys, issuer,
//! audience, expiry, nonce), then the provider's userinfo for the email and `groups` claims.
//!
//! Who may sign in. A verified email names the user. A user signed in before is found by the
//! provider's issuer and `sub`; a user an admin made ahead under that email (`lap users create
//! ada@example.com`) is bound to them at the first sign-in; anyone else is made a user on the spot
//! only when their email's domain is in `--oidc-allow-domain` or one of their groups in
//! `--oidc-allow-group`. Everyone else, a disabled user, and an unverified email are refused with
//! a page that says why. A sign-in acts through an API key made for it, with the role
//! `--oidc-role` (`admin` for a member of an `--oidc-admin-group`): revoking it, disabling the
//! user or the key's expiry end it like any key.
//!
//! Each sign-in is tied to the browser that started it: `GET /auth/oidc/login` sets the cookie
//! [`FLOW_COOKIE`] (`HttpOnly`, `SameSite=Lax` so the provider's redirect back carries it, path
//! `/auth/oidc`, 10 minutes), and the callback is refused from a browser without it, so nobody can
//! sign a victim's browser in as themselves with a code of their own (login CSRF).
//!
//! The web UI. `GET /auth/oidc/login?next=/path` sends the browser to the provider; the provider
//! sends it back to `GET /auth/oidc/callback`, which makes a key lasting as long as the UI's cookie
//! ([`super::ui::COOKIE_TTL`]), a cookie session acting as it (signing out revokes the key), and
//! sends the browser on to `next`.
//!
//! The CLI. `POST /auth/oidc/cli` starts a sign-in: a poll secret for the CLI, a URL for the
//! browser, and a code both show. After the provider, the page asks the person to approve the
//! sign-in of the terminal showing that code (`POST /auth/oidc/approve`), so that a link someone
//! else started cannot be used to sign their terminal in as you; then the CLI's poll
//! (`POST /auth/oidc/cli/poll`) gets a key lasting `--oidc-cli-key-ttl`, this once.
//!
//! Sign-ins under way are kept in memory, at most [`MAX_PENDING`] of each kind, for
//! [`PENDING_TTL`]; a restart of `lap serve` forgets them (the person starts again). The provider's
//! discovery document and keys are fetched at the first sign-in and again after
//! [`DISCOVERY_TTL`]; a provider that is down gives a page (or, to the CLI, an error) that names it,
//! and changes nothing.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, Query};
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE, LOCATION, SET_COOKIE};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Form, Json, Router};
use openidconnect::core::{CoreAuthenticationFlow, CoreClient, CoreGenderClaim, CoreProviderMetadata};
use openidconnect::{
    AdditionalClaims, AsyncHttpClient, AuthorizationCode, ClientId, ClientSecret, CsrfToken, HttpRequest, HttpResponse,
    IssuerUrl, Nonce, OAuth2TokenResponse, PkceCodeChallenge, PkceCodeVerifier, RedirectUrl, Scope, TokenResponse,
    UserInfoClaims,
};
use ring::rand::{SecureRandom, SystemRandom};
use serde::{Deserialize, Serialize};

use super::json::ApiJson;
use super::ui::{self, SignedIn};
use super::{ApiError, AppState};
use crate::secret::Secret;
use crate::store::Store;
use crate::store::teams::{NewAuditEntry, OidcMatch};
use crate::wire::teams::{OIDC_CLI_PATH, OIDC_POLL_PATH, OidcIssued, OidcPoll, OidcStart, Role, User, check_user_name};

/// How long a sign-in may take, from its start to the provider's answer (and, for the CLI, to its
/// approval).
pub const PENDING_TTL: Duration = Duration::from_secs(10 * 60);
/// Most sign-ins under way kept, of each kind; the oldest is dropped for a new one.
pub const MAX_PENDING: usize = 256;
/// How long the provider's discovery document and keys are used before they are fetched again.
pub const DISCOVERY_TTL: Duration = Duration::from_secs(5 * 60);
/// The longest one request to the provider may take.
const PROVIDER_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest answer read from the provider.
const PROVIDER_MAX_BYTES: usize = 1 << 20;
/// The cookie that ties a sign-in to the browser that started it.
const FLOW_COOKIE: &str = "lap_oidc_flow";
/// How long one CLI poll waits for the sign-in before it answers "not yet".
const POLL_WAIT: Duration = Duration::from_secs(20);

/// `lap serve`'s OIDC settings.
#[derive(Debug, Clone)]
pub struct OidcConfig {
    /// The provider's issuer URL (its discovery document is under it).
    pub issuer: String,
    pub client_id: String,
    pub client_secret: Secret,
    /// This server's base URL as browsers reach it: the redirect URI is its `/auth/oidc/callback`.
    pub public_url: String,
    /// Scopes asked for besides `openid`.
    pub scopes: Vec<String>,
    /// Email domains whose people become users at their first sign-in.
    pub allow_domains: Vec<String>,
    /// Groups whose members become users at their first sign-in.
    pub allow_groups: Vec<String>,
    /// The role of a signed-in user's key.
    pub role: Role,
    /// Groups whose members sign in as admins.
    pub admin_groups: Vec<String>,
    /// How long the key of `lap login --oidc` lasts.
    pub cli_key_ttl: Duration,
}

impl OidcConfig {
    /// The redirect URI to register at the provider.
    pub fn redirect_url(&self) -> String {
        format!("{}/auth/oidc/callback", self.public_url.trim_end_matches('/'))
    }

    /// Checks what can be checked before any sign-in: the URLs' shapes, and that the issuer is HTTPS
    /// unless it is on this machine.
    pub fn check(&self) -> Result<(), String> {
        let issuer = reqwest::Url::parse(&self.issuer).map_err(|e| format!("--oidc-issuer `{}`: {e}", self.issuer))?;
        let local = matches!(issuer.host_str(), Some("localhost" | "127.0.0.1" | "[::1]"));
        if issuer.scheme() != "https" && !(issuer.scheme() == "http" && local) {
            return Err(format!(
                "--oidc-issuer `{}` is not HTTPS: only a provider on this machine may use plain HTTP",
                self.issuer
            ));
        }
        RedirectUrl::new(self.redirect_url()).map_err(|e| format!("--public-url `{}`: {e}", self.public_url))?;
        if self.client_id.is_empty() {
            return Err("--oidc-client-id is empty".to_owned());
        }
        Ok(())
    }
}

/// OIDC sign-in: its settings, the provider as last discovered, and the sign-ins under way.
pub struct Oidc {
    config: OidcConfig,
    http: Http,
    provider: tokio::sync::Mutex<Option<(CoreProviderMetadata, Instant)>>,
    pending: Mutex<Pending>,
    /// Wakes the CLI's polls when a sign-in changes.
    changed: tokio::sync::Notify,
}

#[derive(Default)]
struct Pending {
    /// By the `state` sent to the provider.
    flows: HashMap<String, Flow>,
    /// By the handle in the browser's URL.
    cli: HashMap<String, CliSignIn>,
}

/// A browser sent to the provider.
struct Flow {
    verifier: PkceCodeVerifier,
    nonce: Nonce,
    purpose: Purpose,
    /// SHA-256 of the [`FLOW_COOKIE`] of the browser that started it: the callback must come from
    /// that browser, so that nobody can sign a victim's browser in with their own code (login CSRF).
    browser: [u8; 32],
    started: Instant,
}

enum Purpose {
    /// The web UI, to go on to `next` after.
    Web { next: String },
    /// `lap login --oidc`, by its handle.
    Cli { handle: String },
}

/// A sign-in of `lap login --oidc`.
struct CliSignIn {
    /// SHA-256 of the CLI's poll secret.
    poll: [u8; 32],
    code: String,
    started: Instant,
    state: CliState,
}

enum CliState {
    /// The browser has not come back from the provider yet.
    Waiting,
    /// Signed in at the provider; waiting for the person to approve, with this one-time token.
    Approving { token: Secret, user: User, role: Role },
    /// Approved; its key is being made.
    Minting,
    /// Approved: the key, for the next poll.
    Issued(OidcIssued),
    /// Taken by the CLI.
    Taken,
    /// Refused (at the provider, by lap, or denied by the person): why.
    Refused(String),
}

impl Pending {
    fn sweep(&mut self) {
        self.flows.retain(|_, flow| flow.started.elapsed() < PENDING_TTL);
        self.cli.retain(|_, cli| cli.started.elapsed() < PENDING_TTL);
    }
}

/// Drops the oldest entry of `map` when it is full.
fn make_room<V>(map: &mut HashMap<String, V>, started: impl Fn(&V) -> Instant) {
    if map.len() >= MAX_PENDING
        && let Some(oldest) = map.iter().min_by_key(|(_, v)| started(v)).map(|(k, _)| k.clone())
    {
        map.remove(&oldest);
    }
}

impl Oidc {
    pub fn new(config: OidcConfig) -> Result<Self, String> {
        config.check()?;
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(PROVIDER_TIMEOUT)
            .connect_timeout(PROVIDER_TIMEOUT)
            .user_agent(concat!("lap/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("cannot make the HTTP client of OIDC sign-in: {e}"))?;
        Ok(Self {
            config,
            http: Http(http),
            provider: tokio::sync::Mutex::new(None),
            pending: Mutex::new(Pending::default()),
            changed: tokio::sync::Notify::new(),
        })
    }

    /// The provider's discovery document and keys, fetched when older than [`DISCOVERY_TTL`].
    async fn provider(&self) -> Result<CoreProviderMetadata, Refusal> {
        let mut cached = self.provider.lock().await;
        if let Some((metadata, at)) = &*cached
            && at.elapsed() < DISCOVERY_TTL
        {
            return Ok(metadata.clone());
        }
        let issuer = IssuerUrl::new(self.config.issuer.clone()).map_err(|e| self.provider_down(&e))?;
        let metadata = match tokio::time::timeout(
            PROVIDER_TIMEOUT,
            CoreProviderMetadata::discover_async(issuer, &self.http),
        )
        .await
        {
            Ok(Ok(metadata)) => metadata,
            Ok(Err(err)) => return Err(self.provider_down(&err)),
            Err(_) => return Err(self.provider_down(&Timeout)),
        };
        *cached = Some((metadata.clone(), Instant::now()));
        Ok(metadata)
    }

    fn provider_down(&self, err: &(dyn std::error::Error + 'static)) -> Refusal {
        Refusal::new(
            StatusCode::BAD_GATEWAY,
            format!(
                "cannot reach the OpenID provider `{}`: {}",
                self.config.issuer,
                causes(err)
            ),
            "check that the provider is up and that `lap serve --oidc-issuer` names it; then sign in again",
        )
    }

    fn client(
        &self,
        metadata: CoreProviderMetadata,
    ) -> Result<
        CoreClient<
            openidconnect::EndpointSet,
            openidconnect::EndpointNotSet,
            openidconnect::EndpointNotSet,
            openidconnect::EndpointNotSet,
            openidconnect::EndpointMaybeSet,
            openidconnect::EndpointMaybeSet,
        >,
        Refusal,
    > {
        let redirect = RedirectUrl::new(self.config.redirect_url()).map_err(|e| {
            Refusal::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("the redirect URI is not a URL: {e}"),
                "set `lap serve --public-url` to this server's URL as browsers reach it",
            )
        })?;
        Ok(CoreClient::from_provider_metadata(
            metadata,
            ClientId::new(self.config.client_id.clone()),
            Some(ClientSecret::new(self.config.client_secret.expose().to_owned())),
        )
        .set_redirect_uri(redirect))
    }

    /// Sends the browser to the provider, for `purpose`.
    async fn start(&self, purpose: Purpose, browser: &str, secure: bool) -> Result<Response, Refusal> {
        let client = self.client(self.provider().await?)?;
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let mut request = client
            .authorize_url(
                CoreAuthenticationFlow::AuthorizationCode,
                CsrfToken::new_random,
                Nonce::new_random,
            )
            .set_pkce_challenge(challenge);
        for scope in &self.config.scopes {
            request = request.add_scope(Scope::new(scope.clone()));
        }
        let (url, state, nonce) = request.url();
        {
            let mut pending = self.pending.lock().expect("oidc lock");
            pending.sweep();
            make_room(&mut pending.flows, |flow| flow.started);
            pending.flows.insert(
                state.secret().clone(),
                Flow {
                    verifier,
                    nonce,
                    purpose,
                    browser: super::teams::digest(browser.as_bytes()),
                    started: Instant::now(),
                },
            );
        }
        let mut response = redirect(url.as_str());
        let secure = if secure { "; Secure" } else { "" };
        // `Lax`: the provider's redirect back is a cross-site navigation, which must carry it.
        let cookie = format!(
            "{FLOW_COOKIE}={browser}; Path=/auth/oidc; HttpOnly; SameSite=Lax; Max-Age={}{secure}",
            PENDING_TTL.as_secs()
        );
        if let Ok(cookie) = HeaderValue::from_str(&cookie) {
            response.headers_mut().insert(SET_COOKIE, cookie);
        }
        Ok(response)
    }

    /// The provider's answer: the code exchanged and the ID token checked; the user it signs in.
    async fn finish(&self, verifier: PkceCodeVerifier, nonce: Nonce, code: String) -> Result<Identity, Refusal> {
        let client = self.client(self.provider().await?)?;
        let refused = |what: &str, err: &(dyn std::error::Error + 'static)| {
            Refusal::new(
                StatusCode::BAD_GATEWAY,
                format!("the OpenID provider's {what} failed: {}", causes(err)),
                "sign in again; if it fails again, check the client id and secret `lap serve` was given",
            )
        };
        let exchange = client
            .exchange_code(AuthorizationCode::new(code))
            .map_err(|e| refused("token endpoint", &e))?
            .set_pkce_verifier(verifier);
        let token = match tokio::time::timeout(PROVIDER_TIMEOUT, exchange.request_async(&self.http)).await {
            Ok(Ok(token)) => token,
            Ok(Err(err)) => return Err(refused("code exchange", &err)),
            Err(_) => return Err(refused("code exchange", &Timeout)),
        };
        let id_token = token.id_token().ok_or_else(|| {
            Refusal::new(
                StatusCode::BAD_GATEWAY,
                "the OpenID provider answered without an ID token",
                "make sure the client asks for the `openid` scope and the provider is an OpenID provider",
            )
        })?;
        let verifier = client.id_token_verifier();
        let claims = id_token.claims(&verifier, &nonce).map_err(|e| {
            Refusal::new(
                StatusCode::FORBIDDEN,
                format!("the ID token was refused: {}", causes(&e)),
                "sign in again; a clock far off on this server or the provider also causes this",
            )
        })?;
        let mut identity = Identity {
            subject: format!("{} {}", claims.issuer().as_str(), claims.subject().as_str()),
            email: claims.email().map(|e| e.as_str().to_owned()),
            email_verified: claims.email_verified().unwrap_or(false),
            groups: Vec::new(),
        };
        if let Ok(request) = client.user_info(token.access_token().clone(), Some(claims.subject().clone())) {
            let info: UserInfoClaims<GroupsClaim, CoreGenderClaim> =
                match tokio::time::timeout(PROVIDER_TIMEOUT, request.request_async(&self.http)).await {
                    Ok(Ok(info)) => info,
                    Ok(Err(err)) => return Err(refused("userinfo endpoint", &err)),
                    Err(_) => return Err(refused("userinfo endpoint", &Timeout)),
                };
            if let Some(email) = info.email() {
                identity.email = Some(email.as_str().to_owned());
                identity.email_verified = info.email_verified().unwrap_or(false);
            }
            identity.groups = info.additional_claims().groups.clone();
        }
        Ok(identity)
    }

    /// Whom `identity` signs in as, and with which role; or why not.
    async fn admit(&self, store: &Store, identity: &Identity) -> Result<(User, Role), Refusal> {
        let hint_admin = "ask an admin of this lap server to let you in";
        let (Some(email), true) = (&identity.email, identity.email_verified) else {
            return Err(Refusal::new(
                StatusCode::FORBIDDEN,
                "the OpenID provider gave no verified email, and lap names users by it",
                "ask the `email` scope of the provider (`lap serve --oidc-scope email`), and verify your email there",
            ));
        };
        let name = email.to_ascii_lowercase();
        if let Err(why) = check_user_name(&name) {
            return Err(Refusal::new(
                StatusCode::FORBIDDEN,
                format!("the email `{name}` cannot name a user: {why}"),
                hint_admin,
            ));
        }
        let domain = name.rsplit_once('@').map_or("", |(_, domain)| domain);
        let allowed = self.config.allow_domains.iter().any(|d| d.eq_ignore_ascii_case(domain))
            || identity.groups.iter().any(|g| self.config.allow_groups.contains(g));
        let user = match store.oidc_user(identity.subject.clone(), name.clone(), allowed).await? {
            OidcMatch::User(user) => user,
            OidcMatch::Created(user) => {
                tracing::info!(user = %user.name, "user made at their first OIDC sign-in");
                user
            }
            OidcMatch::NameBound => {
                return Err(Refusal::new(
                    StatusCode::FORBIDDEN,
                    format!("the user `{name}` signs in with another identity of the provider"),
                    hint_admin,
                ));
            }
            OidcMatch::NotAllowed => {
                return Err(Refusal::new(
                    StatusCode::FORBIDDEN,
                    format!("`{name}` is not a user of this lap server, and its domain and groups are not let in"),
                    format!("{hint_admin}: `lap users create {name}`, or `lap serve --oidc-allow-domain {domain}`"),
                ));
            }
        };
        if user.disabled {
            return Err(Refusal::new(
                StatusCode::FORBIDDEN,
                format!("the user `{}` is disabled", user.name),
                format!("ask an admin to enable them: `lap users enable {}`", user.name),
            ));
        }
        let role = if identity.groups.iter().any(|g| self.config.admin_groups.contains(g)) {
            Role::Admin
        } else {
            self.config.role
        };
        Ok((user, role))
    }
}

/// Who the provider says signed in.
#[derive(Debug, Clone)]
struct Identity {
    /// The issuer and `sub`, one space between.
    subject: String,
    email: Option<String>,
    email_verified: bool,
    groups: Vec<String>,
}

/// The `groups` claim of userinfo, when the provider gives one.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct GroupsClaim {
    #[serde(default)]
    groups: Vec<String>,
}

impl AdditionalClaims for GroupsClaim {}

/// The HTTP client the `openidconnect` crate calls the provider through: no redirects followed,
/// each answer at most [`PROVIDER_MAX_BYTES`].
struct Http(reqwest::Client);

#[derive(Debug, thiserror::Error)]
enum HttpError {
    #[error(transparent)]
    Request(#[from] reqwest::Error),
    #[error("the answer is larger than {PROVIDER_MAX_BYTES} bytes")]
    TooLarge,
    #[error(transparent)]
    Http(#[from] openidconnect::http::Error),
}

impl<'c> AsyncHttpClient<'c> for Http {
    type Error = HttpError;
    type Future = Pin<Box<dyn Future<Output = Result<HttpResponse, HttpError>> + Send + 'c>>;

    fn call(&'c self, request: HttpRequest) -> Self::Future {
        Box::pin(async move {
            let mut response = self.0.execute(reqwest::Request::try_from(request)?).await?;
            let mut answer = openidconnect::http::Response::builder().status(response.status());
            for (name, value) in response.headers() {
                answer = answer.header(name, value);
            }
            let mut body = Vec::new();
            while let Some(chunk) = response.chunk().await? {
                if body.len() + chunk.len() > PROVIDER_MAX_BYTES {
                    return Err(HttpError::TooLarge);
                }
                body.extend_from_slice(&chunk);
            }
            Ok(answer.body(body)?)
        })
    }
}

/// A deadline passed, as an error.
#[derive(Debug, thiserror::Error)]
#[error("no answer within {} s", PROVIDER_TIMEOUT.as_secs())]
struct Timeout;

/// An error and its causes, one line.
fn causes(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut cause = err.source();
    while let Some(inner) = cause {
        let more = inner.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        cause = inner.source();
    }
    text
}

/// Why a sign-in stops: a page for a browser, an error envelope for the CLI.
#[derive(Debug)]
struct Refusal {
    status: StatusCode,
    error: String,
    hint: String,
}

impl Refusal {
    fn new(status: StatusCode, error: impl Into<String>, hint: impl Into<String>) -> Self {
        Self {
            status,
            error: error.into(),
            hint: hint.into(),
        }
    }

    fn page(&self) -> Response {
        page(
            self.status,
            "Sign-in failed",
            &[
                format!("<p class=\"error\" id=\"oidc-error\">{}</p>", escape(&self.error)),
                format!("<p class=\"muted\">{}</p>", escape(&self.hint)),
                "<p><a href=\"/sign-in\">Back to the sign-in page</a></p>".to_owned(),
            ],
        )
    }

    fn api(self) -> ApiError {
        ApiError::new(self.status, self.error).hint(self.hint)
    }
}

impl From<crate::store::StoreError> for Refusal {
    fn from(err: crate::store::StoreError) -> Self {
        ApiError::from(err).into()
    }
}

impl From<ApiError> for Refusal {
    fn from(err: ApiError) -> Self {
        Refusal::new(err.status, err.body.error, err.body.hint.unwrap_or_default())
    }
}

/// The routes of OIDC sign-in, under `/auth/oidc`, and whether the sign-in page offers it.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/auth/oidc/login", get(login))
        .route("/auth/oidc/callback", get(callback))
        .route("/auth/oidc/approve", post(approve))
        .route(OIDC_CLI_PATH, post(cli_start))
        .route(OIDC_POLL_PATH, post(cli_poll))
        .route("/api/ui/auth/methods", get(methods))
}

/// What the sign-in page offers.
#[derive(Serialize)]
struct Methods {
    oidc: bool,
}

async fn methods(Extension(oidc): Extension<Option<Arc<Oidc>>>) -> Json<Methods> {
    Json(Methods { oidc: oidc.is_some() })
}

fn not_set_up() -> Refusal {
    Refusal::new(
        StatusCode::NOT_FOUND,
        "OIDC sign-in is not set up on this lap server",
        "start it with `lap serve --oidc-issuer URL --oidc-client-id ID` and `LAP_OIDC_CLIENT_SECRET` \
         (docs/operating/teams.md), or sign in with a key",
    )
}

#[derive(Deserialize)]
struct LoginQuery {
    next: Option<String>,
    cli: Option<String>,
}

/// `GET /auth/oidc/login`: to the provider.
async fn login(
    Extension(oidc): Extension<Option<Arc<Oidc>>>,
    tls: Option<Extension<super::ServedOverTls>>,
    headers: HeaderMap,
    Query(query): Query<LoginQuery>,
) -> Response {
    let Some(oidc) = oidc else {
        return not_set_up().page();
    };
    let purpose = match query.cli {
        Some(handle) => {
            let waiting = oidc
                .pending
                .lock()
                .expect("oidc lock")
                .cli
                .get(&handle)
                .is_some_and(|cli| matches!(cli.state, CliState::Waiting) && cli.started.elapsed() < PENDING_TTL);
            if !waiting {
                return Refusal::new(
                    StatusCode::NOT_FOUND,
                    "this sign-in of `lap login --oidc` is over, or was never started",
                    "run `lap login --oidc` again and open the link it prints",
                )
                .page();
            }
            Purpose::Cli { handle }
        }
        None => Purpose::Web {
            next: query
                .next
                .filter(|next| is_local_path(next))
                .unwrap_or_else(|| "/agents".to_owned()),
        },
    };
    // One token per browser, kept across its sign-ins (two tabs signing in at once both work).
    let browser = ui::cookie(&headers, FLOW_COOKIE)
        .filter(|token| {
            token.len() == 43
                && token
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
        .map_or_else(random_token, str::to_owned);
    oidc.start(purpose, &browser, ui::over_tls(tls, &headers))
        .await
        .unwrap_or_else(|refused| refused.page())
}

/// Whether `path` stays on this origin: `/…`, not `//host` or `/\host`.
fn is_local_path(path: &str) -> bool {
    path.starts_with('/') && !path.starts_with("//") && !path.starts_with("/\\")
}

#[derive(Deserialize)]
struct CallbackQuery {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
}

/// `GET /auth/oidc/callback`: the provider's answer.
async fn callback(
    Extension(oidc): Extension<Option<Arc<Oidc>>>,
    Extension(store): Extension<Store>,
    Extension(sessions): Extension<Arc<ui::Sessions>>,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    tls: Option<Extension<super::ServedOverTls>>,
    headers: HeaderMap,
    Query(query): Query<CallbackQuery>,
) -> Response {
    let Some(oidc) = oidc else {
        return not_set_up().page();
    };
    let peer = peer.map(|Extension(ConnectInfo(peer))| peer.to_string());
    let flow = query.state.as_ref().and_then(|state| {
        let mut pending = oidc.pending.lock().expect("oidc lock");
        pending.sweep();
        pending.flows.remove(state)
    });
    let Some(Flow {
        verifier,
        nonce,
        purpose,
        browser,
        ..
    }) = flow
    else {
        return Refusal::new(
            StatusCode::BAD_REQUEST,
            "this sign-in is unknown: it took longer than 10 minutes, was already used, or lap serve restarted",
            "start again from the sign-in page (or `lap login --oidc`)",
        )
        .page();
    };
    let same_browser =
        ui::cookie(&headers, FLOW_COOKIE).is_some_and(|token| super::teams::digest(token.as_bytes()) == browser);
    if !same_browser {
        audit(
            &store,
            "unknown",
            None,
            peer,
            "sign-in with OIDC from another browser",
            StatusCode::BAD_REQUEST,
        )
        .await;
        return Refusal::new(
            StatusCode::BAD_REQUEST,
            "this sign-in was started in another browser",
            "start it again from the sign-in page of this browser (or `lap login --oidc`)",
        )
        .page();
    }
    let action = match purpose {
        Purpose::Cli { .. } => "sign-in with OIDC (lap login)",
        Purpose::Web { .. } => "sign-in with OIDC to the web UI",
    };
    let admitted = match (query.error, query.code) {
        (Some(error), _) => Err(Refusal::new(
            StatusCode::FORBIDDEN,
            format!(
                "the OpenID provider refused the sign-in: {error}{}",
                query.error_description.map(|d| format!(" ({d})")).unwrap_or_default()
            ),
            "sign in again, and accept what the provider asks",
        )),
        (None, None) => Err(Refusal::new(
            StatusCode::BAD_REQUEST,
            "the OpenID provider's answer has no code",
            "start again from the sign-in page",
        )),
        (None, Some(code)) => match oidc.finish(verifier, nonce, code).await {
            Ok(identity) => oidc.admit(&store, &identity).await,
            Err(refused) => Err(refused),
        },
    };
    let (user, role) = match admitted {
        Ok(admitted) => admitted,
        Err(refused) => {
            audit(&store, "unknown", None, peer, action, refused.status).await;
            if let Purpose::Cli { handle } = &purpose {
                oidc.settle(handle, CliState::Refused(refused.error.clone()));
            }
            return refused.page();
        }
    };
    match purpose {
        Purpose::Cli { handle } => oidc.ask_approval(&handle, user, role),
        Purpose::Web { next } => {
            let expires_at = crate::store::format_timestamp(
                store.now_utc() + time::Duration::seconds(ui::COOKIE_TTL.as_secs() as i64),
            );
            let created = match super::teams::mint_key(&store, &user, role, Some(expires_at)).await {
                Ok(created) => created,
                Err(err) => return Refusal::from(err).page(),
            };
            audit(
                &store,
                &user.name,
                Some(created.info.id),
                peer,
                action,
                StatusCode::SEE_OTHER,
            )
            .await;
            let token = sessions.mint(SignedIn::OwnKey(created.info.id)).await;
            let mut response = redirect(&next);
            response
                .headers_mut()
                .insert(SET_COOKIE, ui::session_cookie(&token, tls, &headers));
            response
        }
    }
}

impl Oidc {
    /// Ends the CLI sign-in `handle` as `state`, and wakes its poll.
    fn settle(&self, handle: &str, state: CliState) {
        if let Some(cli) = self.pending.lock().expect("oidc lock").cli.get_mut(handle) {
            cli.state = state;
        }
        self.changed.notify_waiters();
    }

    /// The page that asks the person to approve the CLI sign-in `handle` as `user`.
    fn ask_approval(&self, handle: &str, user: User, role: Role) -> Response {
        let token = random_token();
        let code = {
            let mut pending = self.pending.lock().expect("oidc lock");
            match pending.cli.get_mut(handle) {
                Some(cli) if matches!(cli.state, CliState::Waiting) => {
                    let code = cli.code.clone();
                    cli.state = CliState::Approving {
                        token: Secret::new(token.clone()),
                        user: user.clone(),
                        role,
                    };
                    Some(code)
                }
                _ => None,
            }
        };
        let Some(code) = code else {
            return Refusal::new(
                StatusCode::NOT_FOUND,
                "this sign-in of `lap login --oidc` is over",
                "run `lap login --oidc` again",
            )
            .page();
        };
        page(
            StatusCode::OK,
            "Sign in your terminal?",
            &[
                format!(
                    "<p>You are signed in as <strong id=\"oidc-user\">{}</strong> ({role}).</p>",
                    escape(&user.name)
                ),
                format!(
                    "<p>Approve only if your terminal runs <code>lap login --oidc</code> and shows the code \
                     <strong id=\"oidc-code\">{}</strong>. If you did not start this, deny it.</p>",
                    escape(&code)
                ),
                format!(
                    "<form method=\"post\" action=\"/auth/oidc/approve\">\
                     <input type=\"hidden\" name=\"token\" value=\"{token}\">\
                     <button type=\"submit\" name=\"decision\" value=\"approve\" class=\"primary\" id=\"approve\">Approve</button> \
                     <button type=\"submit\" name=\"decision\" value=\"deny\" id=\"deny\">Deny</button></form>"
                ),
            ],
        )
    }
}

#[derive(Deserialize)]
struct Approval {
    token: String,
    decision: String,
}

/// `POST /auth/oidc/approve`: the person approves (or denies) the CLI's sign-in.
async fn approve(
    Extension(oidc): Extension<Option<Arc<Oidc>>>,
    Extension(store): Extension<Store>,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    Form(form): Form<Approval>,
) -> Response {
    let Some(oidc) = oidc else {
        return not_set_up().page();
    };
    let peer = peer.map(|Extension(ConnectInfo(peer))| peer.to_string());
    let found = {
        let mut pending = oidc.pending.lock().expect("oidc lock");
        pending.sweep();
        pending.cli.iter_mut().find_map(|(handle, cli)| match &cli.state {
            CliState::Approving { token, user, role } if token.ct_eq(form.token.as_bytes()) => {
                let found = (handle.clone(), user.clone(), *role);
                // One use: a second submit finds nothing.
                cli.state = CliState::Minting;
                Some(found)
            }
            _ => None,
        })
    };
    let Some((handle, user, role)) = found else {
        return Refusal::new(
            StatusCode::NOT_FOUND,
            "this sign-in of `lap login --oidc` is over, or was already approved or denied",
            "run `lap login --oidc` again",
        )
        .page();
    };
    let action = "sign-in with OIDC (lap login)";
    if form.decision != "approve" {
        oidc.settle(
            &handle,
            CliState::Refused("the sign-in was denied in the browser".to_owned()),
        );
        audit(&store, &user.name, None, peer, action, StatusCode::FORBIDDEN).await;
        return page(
            StatusCode::OK,
            "Sign-in denied",
            &["<p id=\"oidc-denied\">The terminal was not signed in. You can close this page.</p>".to_owned()],
        );
    }
    let expires_at = crate::store::format_timestamp(
        store.now_utc() + time::Duration::seconds(oidc.config.cli_key_ttl.as_secs().min(i64::MAX as u64) as i64),
    );
    let created = match super::teams::mint_key(&store, &user, role, Some(expires_at)).await {
        Ok(created) => created,
        Err(err) => {
            oidc.settle(&handle, CliState::Refused(err.body.error.clone()));
            return Refusal::from(err).page();
        }
    };
    audit(&store, &user.name, Some(created.info.id), peer, action, StatusCode::OK).await;
    oidc.settle(
        &handle,
        CliState::Issued(OidcIssued {
            key: created.key,
            user: user.name.clone(),
            role,
            expires_at: created.info.expires_at,
        }),
    );
    page(
        StatusCode::OK,
        "Signed in",
        &[format!(
            "<p id=\"oidc-approved\">Your terminal is signed in as <strong>{}</strong>. You can close this page.</p>",
            escape(&user.name)
        )],
    )
}

/// `POST /auth/oidc/cli`: starts a sign-in of `lap login --oidc`.
async fn cli_start(Extension(oidc): Extension<Option<Arc<Oidc>>>) -> Result<Json<OidcStart>, ApiError> {
    let oidc = oidc.ok_or_else(|| not_set_up().api())?;
    // The provider is asked now, so that one that is down fails the CLI at once.
    oidc.provider().await.map_err(Refusal::api)?;
    let (poll, handle) = (random_token(), random_token());
    let code = user_code();
    {
        let mut pending = oidc.pending.lock().expect("oidc lock");
        pending.sweep();
        make_room(&mut pending.cli, |cli| cli.started);
        pending.cli.insert(
            handle.clone(),
            CliSignIn {
                poll: super::teams::digest(poll.as_bytes()),
                code: code.clone(),
                started: Instant::now(),
                state: CliState::Waiting,
            },
        );
    }
    Ok(Json(OidcStart {
        poll,
        url: format!(
            "{}/auth/oidc/login?cli={handle}",
            oidc.config.public_url.trim_end_matches('/')
        ),
        code,
        expires_in_seconds: PENDING_TTL.as_secs(),
    }))
}

/// `POST /auth/oidc/cli/poll`: the key once the sign-in is approved (200), else 202 after
/// [`POLL_WAIT`]; 403 when it was refused, 404 when it is unknown or over.
async fn cli_poll(
    Extension(oidc): Extension<Option<Arc<Oidc>>>,
    ApiJson(body): ApiJson<OidcPoll>,
) -> Result<Response, ApiError> {
    let oidc = oidc.ok_or_else(|| not_set_up().api())?;
    let digest = super::teams::digest(body.poll.as_bytes());
    let deadline = tokio::time::Instant::now() + POLL_WAIT;
    loop {
        let changed = oidc.changed.notified();
        tokio::pin!(changed);
        changed.as_mut().enable();
        {
            let mut pending = oidc.pending.lock().expect("oidc lock");
            pending.sweep();
            let Some(cli) = pending.cli.values_mut().find(|cli| cli.poll == digest) else {
                return Err(ApiError::not_found(
                    "this sign-in is unknown or over: it took longer than 10 minutes, or lap serve restarted",
                )
                .hint("run `lap login --oidc` again"));
            };
            match std::mem::replace(&mut cli.state, CliState::Taken) {
                CliState::Issued(issued) => return Ok(Json(issued).into_response()),
                CliState::Refused(why) => {
                    let err = ApiError::new(StatusCode::FORBIDDEN, why.clone())
                        .hint("run `lap login --oidc` again, or sign in with a key (`lap login`)");
                    cli.state = CliState::Refused(why);
                    return Err(err);
                }
                CliState::Taken => {
                    return Err(ApiError::not_found("this sign-in's key was already handed out")
                        .hint("run `lap login --oidc` again"));
                }
                other => cli.state = other,
            }
        }
        if tokio::time::timeout_at(deadline, changed).await.is_err() {
            return Ok((StatusCode::ACCEPTED, Json(serde_json::json!({ "status": "pending" }))).into_response());
        }
    }
}

async fn audit(
    store: &Store,
    actor: &str,
    key_id: Option<uuid::Uuid>,
    peer: Option<String>,
    action: &str,
    status: StatusCode,
) {
    let entry = NewAuditEntry {
        actor: actor.to_owned(),
        key_id,
        peer,
        action: action.to_owned(),
        target: None,
        status: status.as_u16(),
    };
    if let Err(err) = store.record_audit(entry).await {
        tracing::error!(error = %err, "cannot record a sign-in in the audit log");
    }
}

/// 256 random bits, URL-safe.
fn random_token() -> String {
    use base64::Engine;
    let mut bytes = [0u8; 32];
    SystemRandom::new().fill(&mut bytes).expect("system random generator");
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// A code to read and compare: `XXXX-XXXX` of letters without look-alikes.
fn user_code() -> String {
    const LETTERS: &[u8] = b"BCDFGHJKLMNPQRSTVWXZ";
    let mut bytes = [0u8; 8];
    SystemRandom::new().fill(&mut bytes).expect("system random generator");
    let letters: String = bytes
        .iter()
        .map(|b| LETTERS[*b as usize % LETTERS.len()] as char)
        .collect();
    format!("{}-{}", &letters[..4], &letters[4..])
}

/// A 303 to `location`, not cached.
fn redirect(location: &str) -> Response {
    match HeaderValue::from_str(location) {
        Ok(value) => (
            StatusCode::SEE_OTHER,
            [(LOCATION, value), (CACHE_CONTROL, HeaderValue::from_static("no-store"))],
        )
            .into_response(),
        Err(_) => Refusal::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the sign-in's address is not a valid header",
            "start again from the sign-in page",
        )
        .page(),
    }
}

/// A small page of the sign-in (no script), in the web UI's style.
fn page(status: StatusCode, title: &str, body: &[String]) -> Response {
    let html = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{title} · lap</title><link rel=\"stylesheet\" href=\"/ui/style.css\"></head>\
         <body><main><div class=\"card sign-in\"><h1>{title}</h1>{}</div></main></body></html>",
        body.concat()
    );
    (
        status,
        [
            (CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8")),
            (CACHE_CONTROL, HeaderValue::from_static("no-store")),
            (
                axum::http::HeaderName::from_static("content-security-policy"),
                HeaderValue::from_static(
                    "default-src 'none'; style-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
                ),
            ),
            (
                axum::http::HeaderName::from_static("referrer-policy"),
                HeaderValue::from_static("no-referrer"),
            ),
        ],
        html,
    )
        .into_response()
}

/// `text` made safe inside HTML.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_paths_of_this_origin_are_followed_after_sign_in() {
        assert!(is_local_path("/sessions/abc"));
        assert!(!is_local_path("//evil.test/x"));
        assert!(!is_local_path("/\\evil.test"));
        assert!(!is_local_path("https://evil.test"));
    }

    #[test]
    fn codes_are_two_groups_of_four_letters() {
        let code = user_code();
        assert_eq!(code.len(), 9);
        assert_eq!(&code[4..5], "-");
        assert_ne!(user_code(), code);
    }

    #[test]
    fn html_is_escaped() {
        assert_eq!(
            escape("<a href=\"x\">'&'</a>"),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
    }

    #[test]
    fn a_plain_http_issuer_must_be_on_this_machine() {
        let config = |issuer: &str| OidcConfig {
            issuer: issuer.to_owned(),
            client_id: "lap".to_owned(),
            client_secret: Secret::new("s"),
            public_url: "http://127.0.0.1:3000".to_owned(),
            scopes: vec!["email".to_owned()],
            allow_domains: vec![],
            allow_groups: vec![],
            role: Role::Member,
            admin_groups: vec![],
            cli_key_ttl: Duration::from_secs(60),
        };
        assert!(config("https://accounts.example.com").check().is_ok());
        assert!(config("http://localhost:9000").check().is_ok());
        assert!(config("http://127.0.0.1:9000").check().is_ok());
        let refused = config("http://idp.example.com").check().unwrap_err();
        assert!(refused.contains("not HTTPS"), "{refused}");
        assert_eq!(
            config("http://127.0.0.1:9000").redirect_url(),
            "http://127.0.0.1:3000/auth/oidc/callback"
        );
    }
}
