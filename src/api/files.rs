//! File routes: `…/sessions/{id}/files` — list, stat, download (streamed, `Range`), upload
//! (streamed, size-limited) and delete, in a ready session's sandbox, behind the master key (or the
//! UI's cookie) like every session route.
//!
//! The work is the harness's ([`crate::sandbox::local::files`]): it runs as the sandbox user and
//! reaches `/work` and `/tmp` only; these handlers add HTTP. Bodies stream both ways one frame at a
//! time, so `lap serve`'s memory does not grow with a file's size. What a sandbox holds is hostile
//! content: a download is always `application/octet-stream` (or `application/x-tar`) as an
//! attachment, `nosniff`, under a `sandbox` CSP, so a browser never renders it on this origin
//! (DESIGN §5, invariant 8). An upload larger than `lap serve --max-upload-bytes` is refused with
//! 413: at once when its `Content-Length` says so, else when the limit is crossed; before answering,
//! up to 8 MiB more of the body is read and thrown away, so a client still sending reads the 413
//! rather than a reset connection (one that sent `Expect: 100-continue` has sent nothing yet).

use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use futures_util::StreamExt;
use serde::Deserialize;
use utoipa::IntoParams;
use uuid::Uuid;

use crate::sandbox::SandboxError;
use crate::sandbox::files::{self as ops, FilesError};
use crate::wire::api::{ErrorBody, SessionStatus};
use crate::wire::files::{
    DEFAULT_MAX_UPLOAD_BYTES, Deleted, FileEntry, FileError, FileErrorCode, FileList, Uploaded, parse_mode,
};
use crate::wire::harness::files::{ByteRange, DeleteRequest, ReadRequest, WriteRequest};

use super::json::ApiQuery;
use super::{ApiError, AppState};

/// How long a listing, a stat, a delete or the start of a download may take in the sandbox.
const FILE_OP_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);
/// How much of an upload refused as too large is still read (and thrown away), within
/// [`DRAIN_DEADLINE`], before the 413: a client still sending its body then reads the answer
/// instead of a reset connection. Past it the connection is closed.
const DRAIN_REFUSED: usize = 8 * 1024 * 1024;
const DRAIN_DEADLINE: std::time::Duration = std::time::Duration::from_secs(5);

/// Runs a file operation (not a transfer's body) under [`FILE_OP_TIMEOUT`].
async fn bounded<T>(what: &str, op: impl std::future::Future<Output = T>) -> Result<T, ApiError> {
    tokio::time::timeout(FILE_OP_TIMEOUT, op).await.map_err(|_| {
        ApiError::new(
            StatusCode::GATEWAY_TIMEOUT,
            format!(
                "the sandbox did not finish the {what} within {}s",
                FILE_OP_TIMEOUT.as_secs()
            ),
        )
        .hint("the sandbox may be overloaded or frozen; `lap sessions show` says whether it is ready")
    })
}

/// How `lap serve` limits uploads (an extension of the router; absent: the defaults).
#[derive(Debug, Clone, Copy)]
pub struct FileLimits {
    /// Largest upload accepted, in bytes.
    pub max_upload_bytes: u64,
}

impl Default for FileLimits {
    fn default() -> Self {
        Self {
            max_upload_bytes: DEFAULT_MAX_UPLOAD_BYTES,
        }
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PathQuery {
    /// A path in the sandbox: absolute under `/work` or `/tmp`, or relative to `/work/home`.
    path: String,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DeleteQuery {
    /// A path in the sandbox: absolute under `/work` or `/tmp`, or relative to `/work/home`.
    path: String,
    /// Delete a directory with everything in it (default: only an empty one).
    #[serde(default)]
    recursive: bool,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ContentQuery {
    /// A path in the sandbox: absolute under `/work` or `/tmp`, or relative to `/work/home`.
    path: String,
    /// A directory as a tar stream of its contents: download it so, or upload one into it
    /// (created when missing). Modes and times are kept; links stay links.
    #[serde(default)]
    archive: bool,
    /// Upload only: the file's permission bits in octal, `0644`, `755` or `0o600` (default: those of
    /// the file replaced, else 0644).
    #[param(pattern = r"^(0o)?[0-7]{1,4}$")]
    mode: Option<String>,
}

/// The session's sandbox, when the session is ready; a clear 404/409 otherwise.
async fn sandbox_of(state: &AppState, id: &str) -> Result<String, ApiError> {
    let not_found = || {
        ApiError::not_found(format!("session `{id}` not found"))
            .hint("`lap sessions list` shows the sessions that exist")
    };
    let uuid = Uuid::parse_str(id).map_err(|_| not_found())?;
    let row = state.store.get_session(uuid).await?.ok_or_else(not_found)?;
    match (&row.status, row.sandbox_id) {
        (SessionStatus::Ready, Some(sandbox)) => {
            let _ = state.store.touch_session(uuid).await;
            Ok(sandbox)
        }
        (status, _) if status.is_terminal() => Err(ApiError::new(
            StatusCode::CONFLICT,
            format!("session `{id}` is {}: its sandbox and files are gone", status.as_str()),
        )
        .hint(format!(
            "`lap sessions restart {id}` gives it a fresh sandbox; files are reached in ready sessions only"
        ))),
        (status, _) => Err(ApiError::new(
            StatusCode::CONFLICT,
            format!("session `{id}` is {}, not ready", status.as_str()),
        )
        .hint("wait until `lap sessions show` says ready")),
    }
}

/// A connection to the sandbox's harness for one operation.
async fn connect(state: &AppState, sandbox: &str) -> Result<ops::Conn, ApiError> {
    state.control.files_connection(sandbox).await.map_err(|err| match err {
        crate::control::ControlError::Sandbox(err) => failed(FilesError::Sandbox(err)),
        other => other.into(),
    })
}

/// The HTTP answer to a failed file operation.
fn expects_continue(headers: &HeaderMap) -> bool {
    headers
        .get(header::EXPECT)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"))
}

/// Reads and throws away what is left of a refused upload, at most [`DRAIN_REFUSED`] bytes within
/// [`DRAIN_DEADLINE`].
async fn drain(body: &mut axum::body::BodyDataStream) {
    let deadline = tokio::time::Instant::now() + DRAIN_DEADLINE;
    let mut left = DRAIN_REFUSED;
    while left > 0 {
        match tokio::time::timeout_at(deadline, body.next()).await {
            Ok(Some(Ok(chunk))) => left = left.saturating_sub(chunk.len()),
            _ => return,
        }
    }
}

fn failed(err: FilesError) -> ApiError {
    match err {
        FilesError::File(error) | FilesError::Unsatisfiable { error, .. } => file_error(error),
        FilesError::Sandbox(SandboxError::NotFound(_)) => {
            ApiError::new(StatusCode::CONFLICT, "the session's sandbox is gone")
                .hint("`lap sessions show` says what happened to the session")
        }
        FilesError::Sandbox(err @ SandboxError::Unavailable { .. }) => {
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, err.to_string())
        }
        FilesError::Sandbox(err) => ApiError::new(StatusCode::BAD_GATEWAY, err.to_string()),
        FilesError::Harness(err) => ApiError::new(StatusCode::BAD_GATEWAY, format!("the sandbox's harness: {err}"))
            .hint("the sandbox may have stopped; `lap sessions show` says whether it is ready"),
    }
}

fn file_error(error: FileError) -> ApiError {
    use FileErrorCode as C;
    let (status, hint) = match error.code {
        C::NotFound => (StatusCode::NOT_FOUND, Some("`lap ls SESSION:DIR` shows what is there")),
        C::Forbidden => (
            StatusCode::FORBIDDEN,
            Some("the file API reaches /work and /tmp only: no `..`, no symlink that leads out"),
        ),
        C::PermissionDenied => (
            StatusCode::FORBIDDEN,
            Some("files are read and written as the sandbox user"),
        ),
        C::IsDirectory => (
            StatusCode::BAD_REQUEST,
            Some("a directory goes as a tar stream: add `archive=true`"),
        ),
        C::NotDirectory => (StatusCode::BAD_REQUEST, None),
        C::Conflict => (
            StatusCode::CONFLICT,
            Some("delete a directory with its contents with `recursive=true`"),
        ),
        C::TooLarge => (
            StatusCode::PAYLOAD_TOO_LARGE,
            Some("raise the limit with `lap serve --max-upload-bytes`, or split the upload"),
        ),
        C::RangeNotSatisfiable => (StatusCode::RANGE_NOT_SATISFIABLE, None),
        C::Invalid => (StatusCode::BAD_REQUEST, None),
        C::Io => (StatusCode::INTERNAL_SERVER_ERROR, None),
    };
    let api = ApiError::new(status, error.message);
    match hint {
        Some(hint) => api.hint(hint),
        None => api,
    }
}

/// List a directory in a session's sandbox (a file: that file alone). Entries are sorted by name,
/// at most 10000; symlinks are shown as links with their target.
#[utoipa::path(get, path = "/api/v1/managed_agents/sessions/{id}/files", tag = "files",
    params(("id" = String, Path, description = "session UUID"), PathQuery), security(("master_key" = [])),
    responses((status = 200, body = FileList), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody)))]
pub async fn list(
    State(state): State<AppState>,
    Path(id): Path<String>,
    ApiQuery(query): ApiQuery<PathQuery>,
) -> Result<Json<FileList>, ApiError> {
    let sandbox = sandbox_of(&state, &id).await?;
    let conn = connect(&state, &sandbox).await?;
    Ok(Json(
        bounded("listing", ops::list(conn, &query.path))
            .await?
            .map_err(failed)?,
    ))
}

/// What is at a path in a session's sandbox (symlinks that stay inside followed).
#[utoipa::path(get, path = "/api/v1/managed_agents/sessions/{id}/files/stat", tag = "files",
    params(("id" = String, Path, description = "session UUID"), PathQuery), security(("master_key" = [])),
    responses((status = 200, body = FileEntry), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody)))]
pub async fn stat(
    State(state): State<AppState>,
    Path(id): Path<String>,
    ApiQuery(query): ApiQuery<PathQuery>,
) -> Result<Json<FileEntry>, ApiError> {
    let sandbox = sandbox_of(&state, &id).await?;
    let conn = connect(&state, &sandbox).await?;
    Ok(Json(
        bounded("stat", ops::stat(conn, &query.path)).await?.map_err(failed)?,
    ))
}

/// Delete a file, a link or an empty directory (a whole tree with `recursive=true`) in a session's
/// sandbox. A link is removed, never followed.
#[utoipa::path(delete, path = "/api/v1/managed_agents/sessions/{id}/files", tag = "files",
    params(("id" = String, Path, description = "session UUID"), DeleteQuery), security(("master_key" = [])),
    responses((status = 200, body = Deleted), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody)))]
pub async fn delete(
    State(state): State<AppState>,
    Path(id): Path<String>,
    ApiQuery(query): ApiQuery<DeleteQuery>,
) -> Result<Json<Deleted>, ApiError> {
    let sandbox = sandbox_of(&state, &id).await?;
    let conn = connect(&state, &sandbox).await?;
    let request = DeleteRequest {
        path: query.path,
        recursive: query.recursive,
    };
    let path = request.path.clone();
    let summary = bounded("delete", ops::delete(conn, request)).await?.map_err(failed)?;
    Ok(Json(Deleted {
        path,
        entries: summary.entries,
    }))
}

/// The single range of a `Range: bytes=…` header; `None` for anything else (then the whole file
/// is sent, as RFC 9110 allows).
pub fn parse_range(value: &str) -> Option<ByteRange> {
    let spec = value.trim().strip_prefix("bytes=")?;
    if spec.contains(',') {
        return None;
    }
    let (start, end) = spec.trim().split_once('-')?;
    let number = |s: &str| -> Option<Option<u64>> {
        let s = s.trim();
        if s.is_empty() {
            Some(None)
        } else if s.bytes().all(|b| b.is_ascii_digit()) {
            s.parse().ok().map(Some)
        } else {
            None
        }
    };
    let (start, end) = (number(start)?, number(end)?);
    match (start, end) {
        (None, None) => None,
        (Some(s), Some(e)) if e < s => None,
        _ => Some(ByteRange { start, end }),
    }
}

/// `attachment; filename*=UTF-8''…` for a name.
fn attachment(name: &str) -> HeaderValue {
    let encoded: String = name
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect();
    HeaderValue::from_str(&format!("attachment; filename*=UTF-8''{encoded}"))
        .unwrap_or_else(|_| HeaderValue::from_static("attachment"))
}

/// Headers every download carries: hostile content is never rendered on this origin.
fn download_headers(headers: &mut HeaderMap) {
    headers.insert("x-content-type-options", HeaderValue::from_static("nosniff"));
    headers.insert(
        "content-security-policy",
        HeaderValue::from_static("sandbox; default-src 'none'"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
}

/// Download a file from a session's sandbox, streamed; a single `Range` is honoured (206, or 416
/// past the end). A directory comes as a tar stream of its contents with `archive=true`.
#[utoipa::path(get, path = "/api/v1/managed_agents/sessions/{id}/files/content", tag = "files",
    params(("id" = String, Path, description = "session UUID"), ContentQuery,
        ("Range" = Option<String>, Header, description = "one byte range: `bytes=0-99`, `bytes=100-`, `bytes=-100`")),
    security(("master_key" = [])),
    responses(
        (status = 200, content_type = "application/octet-stream", description = "the file (or tar stream)"),
        (status = 206, content_type = "application/octet-stream", description = "the range asked for"),
        (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody), (status = 416, body = ErrorBody)))]
pub async fn download(
    State(state): State<AppState>,
    Path(id): Path<String>,
    ApiQuery(query): ApiQuery<ContentQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let range = if query.archive {
        None
    } else {
        headers
            .get(header::RANGE)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_range)
    };
    let sandbox = sandbox_of(&state, &id).await?;
    let conn = connect(&state, &sandbox).await?;
    let request = ReadRequest {
        path: query.path,
        range,
        archive: query.archive,
    };
    let reading = match bounded("download's start", ops::read(conn, request)).await? {
        Ok(reading) => reading,
        Err(FilesError::Unsatisfiable { error, size }) => {
            let mut response = file_error(error).into_response();
            if let Ok(value) = HeaderValue::from_str(&format!("bytes */{size}")) {
                response.headers_mut().insert(header::CONTENT_RANGE, value);
            }
            return Ok(response);
        }
        Err(err) => return Err(failed(err)),
    };
    let entry = reading.reply.entry.clone().ok_or_else(ApiError::internal)?;
    let (offset, length) = (reading.reply.offset, reading.reply.length);
    let body = Body::from_stream(
        reading
            .into_stream()
            .map(|chunk| chunk.map(Bytes::from).map_err(std::io::Error::other)),
    );
    let mut response = Response::new(body);
    let head = response.headers_mut();
    download_headers(head);
    head.insert(header::CONTENT_DISPOSITION, attachment(&entry.name));
    if query.archive {
        let name = format!("{}.tar", entry.name);
        head.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/x-tar"));
        head.insert(header::CONTENT_DISPOSITION, attachment(&name));
        return Ok(response);
    }
    head.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    head.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    let length = length.unwrap_or(entry.size);
    head.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
    if range.is_some() {
        let offset = offset.unwrap_or(0);
        let last = (offset + length).saturating_sub(1);
        if let Ok(value) = HeaderValue::from_str(&format!("bytes {offset}-{last}/{}", entry.size)) {
            head.insert(header::CONTENT_RANGE, value);
        }
        *response.status_mut() = StatusCode::PARTIAL_CONTENT;
    }
    Ok(response)
}

/// Upload a file into a session's sandbox (the body is its bytes, streamed), or with `archive=true`
/// a tar stream unpacked into a directory. A file is written to a temporary name and renamed into
/// place once complete, so a cut upload leaves nothing. Over `lap serve --max-upload-bytes`: 413.
#[utoipa::path(put, path = "/api/v1/managed_agents/sessions/{id}/files/content", tag = "files",
    params(("id" = String, Path, description = "session UUID"), ContentQuery), security(("master_key" = [])),
    request_body(content = Vec<u8>, content_type = "application/octet-stream", description = "the file, or a tar stream"),
    responses((status = 200, body = Uploaded), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 413, body = ErrorBody)))]
pub async fn upload(
    State(state): State<AppState>,
    Path(id): Path<String>,
    limits: Option<Extension<FileLimits>>,
    ApiQuery(query): ApiQuery<ContentQuery>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Uploaded>, ApiError> {
    let limit = limits.map(|l| l.0).unwrap_or_default().max_upload_bytes;
    let too_large = |what: String| {
        file_error(FileError::new(
            FileErrorCode::TooLarge,
            format!("{what} is over the upload limit of {limit} bytes"),
        ))
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if let Some(declared) = declared.filter(|n| *n > limit) {
        // A client that waits for `100 Continue` has sent nothing yet: it gets the answer at once.
        if !expects_continue(&headers) {
            drain(&mut body.into_data_stream()).await;
        }
        return Err(too_large(format!("the upload ({declared} bytes)")));
    }
    let mode = match &query.mode {
        Some(text) => Some(parse_mode(text).ok_or_else(|| {
            ApiError::bad_request(format!("`mode` `{text}` is not octal permission bits"))
                .hint("write it like `0644` or `755`")
        })?),
        None => None,
    };
    let sandbox = sandbox_of(&state, &id).await?;
    let conn = connect(&state, &sandbox).await?;
    let request = WriteRequest {
        path: query.path,
        mode,
        archive: query.archive,
        max_bytes: limit,
    };
    let path = request.path.clone();
    let mut received = 0u64;
    let mut data = body.into_data_stream();
    let stream = (&mut data).map(move |chunk| {
        let chunk = chunk.map_err(|e| FileError::new(FileErrorCode::Io, format!("the upload broke off: {e}")))?;
        received += chunk.len() as u64;
        if received > limit {
            return Err(FileError::new(
                FileErrorCode::TooLarge,
                format!("the upload is over the upload limit of {limit} bytes"),
            ));
        }
        Ok(chunk)
    });
    let summary = match ops::write(conn, request, stream).await {
        Ok(summary) => summary,
        Err(FilesError::File(error)) if error.code == FileErrorCode::TooLarge => {
            drain(&mut data).await;
            return Err(file_error(error));
        }
        Err(err) => return Err(failed(err)),
    };
    Ok(Json(Uploaded {
        path,
        bytes: summary.bytes,
        entries: summary.entries,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_byte_range_is_understood_and_anything_else_ignored() {
        let r = |start, end| Some(ByteRange { start, end });
        assert_eq!(parse_range("bytes=0-99"), r(Some(0), Some(99)));
        assert_eq!(parse_range("bytes=100-"), r(Some(100), None));
        assert_eq!(parse_range("bytes=-5"), r(None, Some(5)));
        assert_eq!(parse_range("bytes=0-1,5-6"), None);
        assert_eq!(parse_range("bytes=5-1"), None);
        assert_eq!(parse_range("items=0-1"), None);
        assert_eq!(parse_range("bytes=-"), None);
        assert_eq!(parse_range("bytes=a-b"), None);
    }
}
