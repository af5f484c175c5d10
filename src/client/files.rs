//! The client of the file routes (`…/sessions/{id}/files…`): list, stat, download as a stream of
//! chunks, upload from a stream. Transfers may run long, so they get [`TRANSFER_TIMEOUT`] instead of
//! the usual request timeout; nothing here buffers a whole file.

use std::time::Duration;

use reqwest::{Method, StatusCode};

use super::{Client, ClientError, encode};
use crate::wire::api::{ErrorBody, PREFIX};
use crate::wire::files::{FileEntry, FileList, Uploaded};

/// How long one upload or download may take.
pub const TRANSFER_TIMEOUT: Duration = Duration::from_secs(24 * 60 * 60);

impl Client {
    fn files_url(&self, id: &str, tail: &str, query: &[(&str, &str)]) -> String {
        let query: Vec<String> = query.iter().map(|(k, v)| format!("{k}={}", encode(v))).collect();
        format!(
            "{}{PREFIX}/sessions/{}/files{tail}?{}",
            self.base,
            encode(id),
            query.join("&")
        )
    }

    /// Sends a file request; an error status becomes its [`ClientError`].
    async fn files_send(&self, request: reqwest::RequestBuilder) -> Result<reqwest::Response, ClientError> {
        let key = self
            .key
            .as_ref()
            .ok_or_else(|| ClientError::NoKey { url: self.base.clone() })?;
        let resp = request
            .bearer_auth(key.expose())
            .send()
            .await
            .map_err(|source| ClientError::Unreachable {
                url: self.base.clone(),
                source,
            })?;
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        if status == StatusCode::UNAUTHORIZED {
            return Err(ClientError::Unauthorized { url: self.base.clone() });
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

    async fn files_json<T: serde::de::DeserializeOwned>(
        &self,
        request: reqwest::RequestBuilder,
    ) -> Result<T, ClientError> {
        let resp = self.files_send(request).await?;
        self.decode(resp).await
    }

    /// A directory's entries (a file: itself alone).
    pub async fn list_files(&self, id: &str, path: &str) -> Result<FileList, ClientError> {
        let url = self.files_url(id, "", &[("path", path)]);
        self.files_json(self.http.request(Method::GET, url)).await
    }

    /// What is at `path`.
    pub async fn stat_file(&self, id: &str, path: &str) -> Result<FileEntry, ClientError> {
        let url = self.files_url(id, "/stat", &[("path", path)]);
        self.files_json(self.http.request(Method::GET, url)).await
    }

    /// Starts a download (a directory as a tar stream with `archive`); read it with
    /// [`reqwest::Response::chunk`].
    pub async fn download_file(&self, id: &str, path: &str, archive: bool) -> Result<reqwest::Response, ClientError> {
        let archive = if archive { "true" } else { "false" };
        let url = self.files_url(id, "/content", &[("path", path), ("archive", archive)]);
        self.files_send(self.http.request(Method::GET, url).timeout(TRANSFER_TIMEOUT))
            .await
    }

    /// Uploads `body` to `path` (a tar stream unpacked into a directory with `archive`).
    pub async fn upload_file(
        &self,
        id: &str,
        path: &str,
        archive: bool,
        mode: Option<u32>,
        length: Option<u64>,
        body: reqwest::Body,
    ) -> Result<Uploaded, ClientError> {
        let mode = mode.map(crate::wire::files::format_mode);
        let mut query = vec![("path", path), ("archive", if archive { "true" } else { "false" })];
        if let Some(mode) = &mode {
            query.push(("mode", mode));
        }
        let url = self.files_url(id, "/content", &query);
        let mut request = self
            .http
            .request(Method::PUT, url)
            .timeout(TRANSFER_TIMEOUT)
            .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
            .body(body);
        if let Some(length) = length {
            request = request.header(reqwest::header::CONTENT_LENGTH, length);
        }
        self.files_json(request).await
    }
}
