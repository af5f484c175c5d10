//! Authentication and roles. A request acts as a [`Principal`]: the master key (`Authorization:
//! Bearer <master key>`, compared in constant time) acts as the bootstrap admin; an API key
//! (`Bearer lap_key_…`, looked up by its SHA-256 digest) acts as its user with its role, and is
//! refused once revoked, expired, or its user disabled. The web UI's session cookie (see
//! [`super::ui`] for the cookie and its CSRF rule) acts as what it was signed in with: the master
//! key, an API key, or the key an OIDC sign-in made ([`super::oidc`]). Then [`super::roles`] says whether that role may call the route,
//! [`super::owners`] whether a member may reach its object, and every action but a read is kept in
//! the audit log ([`crate::store::Store::record_audit`]). What an API key opens (an event stream,
//! through [`Principal::ended`] a terminal or a port-forward) ends when the key does.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::Extension;
use axum::body::Body;
use axum::extract::{ConnectInfo, FromRequestParts, MatchedPath, RawPathParams, Request};
use axum::http::header::AUTHORIZATION;
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use utoipa::Modify;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use uuid::Uuid;

use crate::secret::Secret;
use crate::store::Store;
use crate::store::teams::{KeyOwner, NewAuditEntry, Owned, Scope};
use crate::wire::teams::{KEY_PREFIX, Role};

use super::roles::{self, Access};
use super::{ApiError, ui};

/// Who a request acts as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// The master key, or the web UI's cookie of a sign-in with it: the bootstrap admin.
    Master,
    /// An API key of a user.
    Key {
        key_id: Uuid,
        user_id: Uuid,
        user: String,
        role: Role,
        /// When the key expires (as stored), if it does.
        expires_at: Option<String>,
    },
}

impl Principal {
    pub fn role(&self) -> Role {
        match self {
            Self::Master => Role::Admin,
            Self::Key { role, .. } => *role,
        }
    }

    /// Who this is, for messages and the audit log: `master` or the user's name.
    pub fn name(&self) -> &str {
        match self {
            Self::Master => "master",
            Self::Key { user, .. } => user,
        }
    }

    /// The API key, if one.
    pub fn key_id(&self) -> Option<Uuid> {
        match self {
            Self::Master => None,
            Self::Key { key_id, .. } => Some(*key_id),
        }
    }

    /// The user whose key this is.
    pub fn user_id(&self) -> Option<Uuid> {
        match self {
            Self::Master => None,
            Self::Key { user_id, .. } => Some(*user_id),
        }
    }

    /// What this principal's listings show: a member's own (and the team's agents); everything for
    /// a viewer, an admin and the master key.
    pub fn scope(&self) -> Scope {
        match self {
            Self::Key {
                user_id,
                role: Role::Member,
                ..
            } => Scope::Member(*user_id),
            _ => Scope::All,
        }
    }

    /// Resolves when this principal stops being let in: an API key revoked, expired or its user
    /// disabled; never for the master key. What it opened (a terminal, an event stream, a
    /// port-forward) ends then.
    pub fn ended(&self, store: &Store) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        match self {
            Self::Master => Box::pin(std::future::pending()),
            Self::Key { key_id, expires_at, .. } => Box::pin(store.key_ended(*key_id, expires_at.as_deref())),
        }
    }

    /// Records this principal's user as the owner of what it just made (the master key's belong to
    /// the team); the owner's name, as the API shows it.
    pub async fn owns(&self, store: &Store, kind: Owned, id: Uuid) -> Result<Option<String>, ApiError> {
        match self {
            Self::Master => Ok(None),
            Self::Key { user_id, user, .. } => {
                store.set_owner(kind, id, *user_id).await?;
                Ok(Some(user.clone()))
            }
        }
    }
}

/// The master key, an API key, or the web UI's cookie; then the route's role (the API's routes).
pub async fn authenticate(
    Extension(key): Extension<Arc<Secret>>,
    Extension(sessions): Extension<Arc<ui::Sessions>>,
    Extension(store): Extension<Store>,
    req: Request,
    next: Next,
) -> Response {
    let principal = match bearer(req.headers(), &key, &store).await {
        Ok(Some(principal)) => principal,
        Ok(None) => match ui::cookie_auth(&sessions, req.method(), req.headers()).await {
            ui::CookieAuth::Ok(principal) => principal,
            ui::CookieAuth::MissingCsrfHeader => return ui::csrf_refused().into_response(),
            ui::CookieAuth::Refused(refused) => return refused.into_response(),
            ui::CookieAuth::None => return unauthorized_api().into_response(),
        },
        Err(refused) => return refused.into_response(),
    };
    admit(principal, &store, req, next).await
}

/// The master key or an API key, never the cookie (the port-forward and the proxy path); then the
/// route's role.
pub async fn require_bearer(
    Extension(key): Extension<Arc<Secret>>,
    Extension(store): Extension<Store>,
    req: Request,
    next: Next,
) -> Response {
    match bearer(req.headers(), &key, &store).await {
        Ok(Some(principal)) => admit(principal, &store, req, next).await,
        Ok(None) => ApiError::unauthorized()
            .hint(
                "send `Authorization: Bearer <master key or API key>` (the web UI's cookie is not accepted here; for a \
                 browser, use a preview URL: `lap sessions url ID PORT`)",
            )
            .into_response(),
        Err(refused) => refused.into_response(),
    }
}

/// Lets `principal` through when the matched route's rule allows its role and, for a member, the
/// object is theirs ([`super::owners`]); records the action in the audit log when it is one.
async fn admit(principal: Principal, store: &Store, req: Request, next: Next) -> Response {
    let (mut parts, body) = req.into_parts();
    let matched = parts
        .extensions
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_owned())
        .unwrap_or_default();
    let params: Vec<(String, String)> = RawPathParams::from_request_parts(&mut parts, &())
        .await
        .map(|params| params.iter().map(|(k, v)| (k.to_owned(), v.to_owned())).collect())
        .unwrap_or_default();
    let audit = audited(&parts.method, &matched).then(|| NewAuditEntry {
        actor: principal.name().to_owned(),
        key_id: principal.key_id(),
        peer: parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(peer)| peer.to_string()),
        action: format!("{} {matched}", parts.method),
        target: (!params.is_empty()).then(|| {
            params
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(" ")
        }),
        status: 0,
    });
    let response = respond(principal, store, parts, body, &matched, &params, next).await;
    if let Some(entry) = audit {
        let entry = NewAuditEntry {
            status: response.status().as_u16(),
            ..entry
        };
        if let Err(err) = store.record_audit(entry).await {
            tracing::error!(error = %err, "cannot record an action in the audit log");
        }
    }
    response
}

/// Whether a request is an action the audit log keeps: anything but a read, and a port-forward
/// opened; not the requests an app in the sandbox gets through the proxy path.
fn audited(method: &axum::http::Method, matched: &str) -> bool {
    if matched.contains("/ports/{port}") {
        return false;
    }
    !matches!(*method, axum::http::Method::GET | axum::http::Method::HEAD) || matched.ends_with("/portforward/{port}")
}

async fn respond(
    principal: Principal,
    store: &Store,
    mut parts: axum::http::request::Parts,
    body: Body,
    matched: &str,
    params: &[(String, String)],
    next: Next,
) -> Response {
    let needed = match roles::access(&parts.method, matched) {
        Some(Access::Role(role)) => role,
        // Open, metrics and terminal routes are not behind this layer; a route without a rule is refused.
        other => {
            tracing::error!(route = %matched, method = %parts.method, rule = ?other, "a route behind authentication has no role rule");
            return ApiError::new(
                StatusCode::FORBIDDEN,
                format!("{} {matched} has no access rule", parts.method),
            )
            .hint("this is a bug of lap: every route needs a row in src/api/roles.rs")
            .into_response();
        }
    };
    if principal.role() < needed {
        let (user, role) = (principal.name(), principal.role());
        return ApiError::new(
            StatusCode::FORBIDDEN,
            format!(
                "`{user}`'s key has the role `{role}`; {} {matched} needs `{needed}`",
                parts.method
            ),
        )
        .hint(format!(
            "ask an admin for a key with that role: `lap keys create --user {user} --role {needed}`"
        ))
        .into_response();
    }
    if let Principal::Key {
        user_id,
        role: Role::Member,
        ..
    } = &principal
    {
        match super::owners::refusal(store, &parts.method, matched, params, *user_id).await {
            Ok(None) => {}
            Ok(Some(refused)) | Err(refused) => return refused.into_response(),
        }
    }
    let ended = matches!(principal, Principal::Key { .. }).then(|| principal.ended(store));
    parts.extensions.insert(principal);
    let response = next.run(Request::from_parts(parts, body)).await;
    // A streamed answer (an event stream) ends when the key does.
    match ended {
        Some(ended) => response.map(|body| Body::new(UntilEnded { body, ended })),
        None => response,
    }
}

/// A response body that fails once `ended` resolves: an event stream opened with an API key is
/// closed when the key is revoked, expires or its user is disabled.
struct UntilEnded {
    body: Body,
    ended: Pin<Box<dyn Future<Output = ()> + Send>>,
}

impl hyper::body::Body for UntilEnded {
    type Data = axum::body::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        if self.ended.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Some(Err(axum::Error::new(
                "the API key was revoked, expired or its user disabled",
            ))));
        }
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body.size_hint()
    }
}

/// The principal of a bearer token: `Ok(None)` without one (or with a token that is neither the
/// master key nor an API key's shape), an error for an API key that is refused.
pub(super) async fn bearer(headers: &HeaderMap, key: &Secret, store: &Store) -> Result<Option<Principal>, ApiError> {
    let Some(token) = headers
        .get(AUTHORIZATION)
        .and_then(|value| value.as_bytes().strip_prefix(b"Bearer "))
    else {
        return Ok(None);
    };
    if key.ct_eq(token) {
        return Ok(Some(Principal::Master));
    }
    if !token.starts_with(KEY_PREFIX.as_bytes()) {
        // Not ours to judge here: the web UI's cookie may still let the request in.
        return Ok(None);
    }
    let owner = store
        .key_owner(super::teams::digest(token))
        .await
        .map_err(ApiError::from)?;
    let Some(owner) = owner else {
        return Err(ApiError::unauthorized().hint("this API key is unknown: an admin makes one with `lap keys create`"));
    };
    admitted(owner, store).map(Some)
}

/// The principal of a stored key, or the 401 that says why it is refused: revoked, its user
/// disabled, or expired.
pub fn admitted(owner: KeyOwner, store: &Store) -> Result<Principal, ApiError> {
    let refused = |why: String| {
        Err(ApiError::unauthorized().hint(format!(
            "{why}; ask an admin for a new one (`lap keys create --user {}`)",
            owner.user
        )))
    };
    if let Some(when) = &owner.revoked_at {
        return refused(format!("this API key of `{}` was revoked at {when}", owner.user));
    }
    if owner.user_disabled {
        return refused(format!("the user `{}` is disabled", owner.user));
    }
    if let Some(when) = &owner.expires_at
        && *when <= store.timestamp()
    {
        return refused(format!("this API key of `{}` expired at {when}", owner.user));
    }
    Ok(Principal::Key {
        key_id: owner.key_id,
        user_id: owner.user_id,
        user: owner.user,
        role: owner.role,
        expires_at: owner.expires_at,
    })
}

/// Whether `headers` carry `Authorization: Bearer <key>`, compared in constant time.
pub fn has_master_key(headers: &HeaderMap, key: &Secret) -> bool {
    headers
        .get(AUTHORIZATION)
        .and_then(|value| value.as_bytes().strip_prefix(b"Bearer "))
        .is_some_and(|token| key.ct_eq(token))
}

/// The 401 of a route that takes the master key only (the web UI's sign-in, `/metrics`).
pub fn unauthorized() -> ApiError {
    ApiError::unauthorized()
        .hint("send `Authorization: Bearer <master key>`; `lap config` shows where the CLI keeps it")
}

/// The 401 of an API route, which takes an API key too.
fn unauthorized_api() -> ApiError {
    ApiError::unauthorized()
        .hint("send `Authorization: Bearer <master key or API key>`; `lap config` shows where the CLI keeps it")
}

/// Declares the bearer scheme in the OpenAPI document.
pub struct SecurityAddon;

impl Modify for SecurityAddon {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "master_key",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "the master key, or an API key (`lap_key_…`) whose role the route allows (src/api/roles.rs)",
                    ))
                    .build(),
            ),
        );
    }
}
