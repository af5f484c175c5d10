//! The client's calls about workspaces: pause, resume, hibernate, fork, a session's workspace, and
//! snapshots (`api/sessions.rs`, `api/snapshots.rs` serve them).

use reqwest::Method;

use super::{Client, ClientError, encode};
use crate::wire::api::{CreateSession, CreateSnapshot, PREFIX, Session, SessionFromSnapshot, Snapshot, Workspace};

impl Client {
    /// `POST /sessions/{id}/pause|resume|hibernate`.
    pub async fn session_action(&self, id: &str, action: &str) -> Result<Session, ClientError> {
        self.call::<_, ()>(
            Method::POST,
            &format!("{PREFIX}/sessions/{}/{action}", encode(id)),
            None,
        )
        .await
    }

    pub async fn fork_session(&self, id: &str, body: &CreateSession) -> Result<Session, ClientError> {
        self.call(
            Method::POST,
            &format!("{PREFIX}/sessions/{}/fork", encode(id)),
            Some(body),
        )
        .await
    }

    pub async fn workspace(&self, id: &str) -> Result<Workspace, ClientError> {
        self.call::<_, ()>(
            Method::GET,
            &format!("{PREFIX}/sessions/{}/workspace", encode(id)),
            None,
        )
        .await
    }

    pub async fn create_snapshot(&self, session: &str, body: &CreateSnapshot) -> Result<Snapshot, ClientError> {
        self.call(
            Method::POST,
            &format!("{PREFIX}/sessions/{}/snapshots", encode(session)),
            Some(body),
        )
        .await
    }

    pub async fn list_snapshots(&self) -> Result<Vec<Snapshot>, ClientError> {
        self.call::<_, ()>(Method::GET, &format!("{PREFIX}/snapshots"), None)
            .await
    }

    pub async fn delete_snapshot(&self, name: &str) -> Result<Snapshot, ClientError> {
        self.call::<_, ()>(Method::DELETE, &format!("{PREFIX}/snapshots/{}", encode(name)), None)
            .await
    }

    pub async fn session_from_snapshot(&self, name: &str, body: &SessionFromSnapshot) -> Result<Session, ClientError> {
        self.call(
            Method::POST,
            &format!("{PREFIX}/snapshots/{}/session", encode(name)),
            Some(body),
        )
        .await
    }
}
