//! The client's calls about users and API keys (`api/teams.rs` serves them; admin only).

use reqwest::Method;

use super::{Client, ClientError, encode};
use crate::wire::teams::{
    AUDIT_PATH, ApiKey, AuditLog, CreatedApiKey, KEYS_PATH, NewApiKey, NewUser, Quota, USERS_PATH, User, UserPatch,
};

impl Client {
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
