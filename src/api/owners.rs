//! Whose objects a member may reach. Agents, sessions and snapshots made through an API key belong
//! to its user ([`super::auth::Principal::owns`]); the master key's belong to the team. A member
//! reaches their own sessions and snapshots only, and their own agents and the team's (which only an
//! admin changes); anything else answers as if it did not exist. A viewer reads everything; an admin
//! does anything. Checked once per request, after the role ([`super::auth`]), from the route's
//! parameters; listings filter by [`crate::store::Scope`] in their handlers.

use axum::http::{Method, StatusCode};
use uuid::Uuid;

use crate::store::Store;
use crate::store::teams::Owned;
use crate::wire::api::{Agent, PREFIX};
use crate::wire::teams::Role;

use super::ApiError;
use super::auth::Principal;

/// Why member `user` may not call `method` on the route `matched` with `params`, if they may not.
pub async fn refusal(
    store: &Store,
    method: &Method,
    matched: &str,
    params: &[(String, String)],
    user: Uuid,
) -> Result<Option<ApiError>, ApiError> {
    let param = |name: &str| params.iter().find(|(n, _)| n == name).map(|(_, v)| v.to_owned());
    let Some(rest) = matched.strip_prefix(PREFIX) else {
        return Ok(None);
    };
    if rest.starts_with("/sessions/{id}") {
        let id = param("id").unwrap_or_default();
        // A malformed id is the handler's to refuse.
        let Ok(uuid) = Uuid::parse_str(&id) else {
            return Ok(None);
        };
        if store.owner_of(Owned::Session, uuid).await? != Some(user) {
            return Ok(Some(super::sessions::not_found(&id)));
        }
    } else if rest.starts_with("/agents/{id}") {
        let id = param("id").unwrap_or_default();
        let Some(agent) = store.find_agent(&id).await? else {
            return Ok(None);
        };
        match store.owner_of(Owned::Agent, agent.id).await? {
            Some(owner) if owner == user => {}
            Some(_) => return Ok(Some(super::agents::agent_not_found(&id))),
            // The team's: a member uses it (reads it, starts sessions of it) but does not change it.
            None if *method == Method::GET || rest.ends_with("/session") => {}
            None => {
                return Ok(Some(
                    ApiError::new(
                        StatusCode::FORBIDDEN,
                        format!("`{}` is the team's agent: only an admin changes it", agent.name),
                    )
                    .hint("make an agent of your own with `lap agents create`, or ask an admin"),
                ));
            }
        }
    } else if rest.starts_with("/snapshots/{name}") {
        let name = param("name").unwrap_or_default();
        let Some(snapshot) = store.find_snapshot(&name).await? else {
            return Ok(None);
        };
        if store.owner_of(Owned::Snapshot, snapshot.id).await? != Some(user) {
            return Ok(Some(
                ApiError::not_found(format!("snapshot `{name}` not found"))
                    .hint("`lap snapshots list` shows the snapshots that exist"),
            ));
        }
    }
    Ok(None)
}

/// Whether `principal` may start a session of `agent` (named `key` in the request): a member only
/// of their own agents and the team's.
pub async fn may_use_agent(store: &Store, principal: &Principal, agent: &Agent, key: &str) -> Result<(), ApiError> {
    let Principal::Key {
        user_id,
        role: Role::Member,
        ..
    } = principal
    else {
        return Ok(());
    };
    match store.owner_of(Owned::Agent, agent.id).await? {
        Some(owner) if owner != *user_id => Err(super::agents::agent_not_found(key)),
        _ => Ok(()),
    }
}
