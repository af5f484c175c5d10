//! The client's calls about users and API keys (`api/teams.rs` serves them; admin only).

use reqwest::Method;

use super::{Client, ClientError, encode};
use crate::wire::teams::{
    AUDIT_PATH, ApiKey, AuditLog, CreatedApiKey, KEYS_PATH, NewApiKey, NewUser, OIDC_CLI_PATH, OIDC_POLL_PATH,
    OidcIssued, OidcPoll, OidcStart, Quota, USERS_PATH, User, UserPatch,
};

/// How long one poll of an OIDC sign-in may take (the server answers within 20 s).
const OIDC_POLL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(45);

impl Client {
    /// Starts `lap login --oidc`'s sign-in (no key needed).
    pub async fn oidc_start(&self) -> Result<OidcStart, ClientError> {
        let resp = self.send::<()>(Method::POST, OIDC_CLI_PATH, None, false).await?;
        self.decode(resp).await
    }

    /// Waits for the sign-in `poll` started: its key once approved, `None` when not yet.
    pub async fn oidc_poll(&self, poll: &str) -> Result<Option<OidcIssued>, ClientError> {
        let body = OidcPoll { poll: poll.to_owned() };
        let resp = self
            .send_within(Method::POST, OIDC_POLL_PATH, Some(&body), false, OIDC_POLL_TIMEOUT)
            .await?;
        if resp.status() == reqwest::StatusCode::ACCEPTED {
            return Ok(None);
        }
        self.decode(resp).await.map(Some)
    }

    pub async fn list_users(&self) -> Result<Vec<User>, ClientError> {
        self.call::<_, ()>(Method::GET, USERS_PATH, None).await
    }

    pub async fn create_user(&self, body: &NewUser) -> Result<User, ClientError> {
        self.call(Method::POST, USERS_PATH, Some(body)).await
    }

    pub async fn update_user(&self, name: &str, body: &UserPatch) -> Result<User, ClientError> {
        self.call(Method::PATCH, &format!("{USERS_PATH}/{}", encode(name)), Some(body))
            .await
    }

    pub async fn set_quota(&self, name: &str, quota: &Quota) -> Result<User, ClientError> {
        self.call(
            Method::PUT,
            &format!("{USERS_PATH}/{}/quota", encode(name)),
            Some(quota),
        )
        .await
    }

    pub async fn list_keys(&self, user: Option<&str>) -> Result<Vec<ApiKey>, ClientError> {
        let path = match user {
            Some(user) => format!("{KEYS_PATH}?user={}", encode(user)),
            None => KEYS_PATH.to_owned(),
        };
        self.call::<_, ()>(Method::GET, &path, None).await
    }

    pub async fn create_key(&self, body: &NewApiKey) -> Result<CreatedApiKey, ClientError> {
        self.call(Method::POST, KEYS_PATH, Some(body)).await
    }

    pub async fn revoke_key(&self, id: &str) -> Result<ApiKey, ClientError> {
        self.call::<_, ()>(Method::DELETE, &format!("{KEYS_PATH}/{}", encode(id)), None)
            .await
    }

    /// Audit entries after id `after` (oldest first), or the last `limit`.
    pub async fn audit(&self, after: Option<u64>, limit: u32) -> Result<AuditLog, ClientError> {
        let path = match after {
            Some(after) => format!("{AUDIT_PATH}?after={after}&limit={limit}"),
            None => format!("{AUDIT_PATH}?limit={limit}"),
        };
        self.call::<_, ()>(Method::GET, &path, None).await
    }
}
