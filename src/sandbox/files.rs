//! The control plane's side of the harness's file operations, over any connection to a harness
//! (the local backend's `harness.sock`, a pod harness's TCP port): stat, list, read as a stream of
//! chunks, write from a stream of chunks, delete. The operations, their framing and their
//! confinement to `/work` and `/tmp` are specified in [`crate::sandbox::local::files`]; this module
//! adds nothing to what the harness allows.
//!
//! Memory stays constant whatever the size: a read yields one frame (at most
//! [`proto::MAX_FRAME`] bytes) at a time, and a write sends each chunk before it takes the next.

use futures_util::{Stream, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite, BufReader, ReadHalf, WriteHalf};

use super::SandboxError;
use crate::wire::files::{FileEntry, FileError, FileErrorCode, FileList, MAX_LIST_ENTRIES};
use crate::wire::harness::files::{
    DeleteRequest, FILE_DATA, FILE_END, FILE_FAIL, PathRequest, ReadRequest, Reply, Summary, WriteRequest,
};
use crate::wire::harness::{self as proto, MAX_FRAME, ProtoError, Request};

/// A connection to a sandbox's harness, ready for one request.
pub trait HarnessConn: AsyncRead + AsyncWrite + Unpin + Send + 'static {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> HarnessConn for T {}

/// A boxed [`HarnessConn`], as [`super::Sandbox::files_connection`] hands it out.
pub type Conn = Box<dyn HarnessConn>;

/// Why a file operation failed.
#[derive(Debug, thiserror::Error)]
pub enum FilesError {
    /// The harness refused or failed the operation (a path outside, nothing there, …).
    #[error(transparent)]
    File(#[from] FileError),
    /// The sandbox could not be reached.
    #[error(transparent)]
    Sandbox(#[from] SandboxError),
    /// The connection to the harness failed or carried something unexpected.
    #[error("the sandbox's harness: {0}")]
    Harness(#[from] ProtoError),
    /// A read's range lies past the end of the file, which is `size` bytes long.
    #[error("{error}")]
    Unsatisfiable { error: FileError, size: u64 },
}

fn unexpected(what: &str) -> FilesError {
    FilesError::Harness(ProtoError::Protocol(what.to_owned()))
}

/// Sends the request line and reads the [`Reply`]; its error becomes `Err`.
async fn begin(
    conn: Conn,
    request: Request,
) -> Result<(Reply, BufReader<ReadHalf<Conn>>, WriteHalf<Conn>), FilesError> {
    let (rd, mut wr) = tokio::io::split(conn);
    proto::write_request(&mut wr, &request).await?;
    let mut rd = BufReader::new(rd);
    let reply: Reply = proto::read_line_json(&mut rd).await?;
    match reply.error {
        Some(error) => Err(error.into()),
        None => Ok((reply, rd, wr)),
    }
}

/// Reads the frame that ends an operation.
async fn finish<R: AsyncRead + Unpin>(rd: &mut R) -> Result<Summary, FilesError> {
    match proto::read_frame(rd).await? {
        Some((FILE_END, payload)) => {
            serde_json::from_slice(&payload).map_err(|e| unexpected(&format!("a bad summary: {e}")))
        }
        Some((FILE_FAIL, payload)) => Err(FilesError::File(
            serde_json::from_slice(&payload).map_err(|e| unexpected(&format!("a bad error: {e}")))?,
        )),
        Some((kind, _)) => Err(unexpected(&format!("frame kind {kind} at the end"))),
        None => Err(unexpected("the harness closed before the operation ended")),
    }
}

/// `fs_stat`: what is at `path` (symlinks that stay inside followed).
pub async fn stat(conn: Conn, path: &str) -> Result<FileEntry, FilesError> {
    let request = Request::FsStat(PathRequest { path: path.to_owned() });
    let (reply, mut rd, _wr) = begin(conn, request).await?;
    finish(&mut rd).await?;
    reply.entry.ok_or_else(|| unexpected("a stat without its entry"))
}

/// `fs_list`: a directory's entries (at most [`MAX_LIST_ENTRIES`]), or a file alone.
pub async fn list(conn: Conn, path: &str) -> Result<FileList, FilesError> {
    let request = Request::FsList(PathRequest { path: path.to_owned() });
    let (reply, mut rd, _wr) = begin(conn, request).await?;
    let entry = reply.entry.ok_or_else(|| unexpected("a listing without its entry"))?;
    let mut entries = Vec::new();
    let mut pending = Vec::new();
    loop {
        match proto::read_frame(&mut rd).await? {
            Some((FILE_DATA, data)) => {
                pending.extend_from_slice(&data);
                while let Some(end) = pending.iter().position(|b| *b == b'\n') {
                    let line: Vec<u8> = pending.drain(..=end).collect();
                    if entries.len() < MAX_LIST_ENTRIES {
                        entries
                            .push(serde_json::from_slice(&line).map_err(|e| unexpected(&format!("a bad entry: {e}")))?);
                    }
                }
                if pending.len() > MAX_FRAME {
                    return Err(unexpected("a listing line over a frame"));
                }
            }
            Some((FILE_END, payload)) => {
                let summary: Summary =
                    serde_json::from_slice(&payload).map_err(|e| unexpected(&format!("a bad summary: {e}")))?;
                return Ok(FileList {
                    path: entry.path.clone(),
                    entry,
                    entries,
                    truncated: summary.truncated,
                });
            }
            Some((FILE_FAIL, payload)) => {
                return Err(FilesError::File(
                    serde_json::from_slice(&payload).map_err(|e| unexpected(&format!("a bad error: {e}")))?,
                ));
            }
            Some((kind, _)) => return Err(unexpected(&format!("frame kind {kind} in a listing"))),
            None => return Err(unexpected("the harness closed mid-listing")),
        }
    }
}

/// A read under way: its [`Reply`], and the bytes to come.
pub struct Reading {
    pub reply: Reply,
    rd: BufReader<ReadHalf<Conn>>,
    // Kept open: the harness takes a closed connection as the client leaving.
    _wr: WriteHalf<Conn>,
}

impl Reading {
    /// The next chunk; `Ok(None)` once the harness said the read is complete.
    pub async fn next_chunk(&mut self) -> Result<Option<Vec<u8>>, FilesError> {
        match proto::read_frame(&mut self.rd).await? {
            Some((FILE_DATA, data)) => Ok(Some(data)),
            Some((FILE_END, _)) => Ok(None),
            Some((FILE_FAIL, payload)) => Err(FilesError::File(
                serde_json::from_slice(&payload).map_err(|e| unexpected(&format!("a bad error: {e}")))?,
            )),
            Some((kind, _)) => Err(unexpected(&format!("frame kind {kind} in a read"))),
            None => Err(unexpected("the harness closed mid-read")),
        }
    }

    /// The chunks as a stream that ends after the last one (or at the first error).
    pub fn into_stream(self) -> impl Stream<Item = Result<Vec<u8>, FilesError>> + Send + 'static {
        futures_util::stream::unfold(Some(self), |state| async move {
            let mut reading = state?;
            match reading.next_chunk().await {
                Ok(Some(chunk)) => Some((Ok(chunk), Some(reading))),
                Ok(None) => None,
                Err(err) => Some((Err(err), None)),
            }
        })
    }
}

/// `fs_read`: starts reading a file (a range of it), or a directory as a tar stream. A range past
/// the end fails with [`FilesError::Unsatisfiable`], which carries the file's size.
pub async fn read(conn: Conn, request: ReadRequest) -> Result<Reading, FilesError> {
    let (rd, mut wr) = tokio::io::split(conn);
    proto::write_request(&mut wr, &Request::FsRead(request)).await?;
    let mut rd = BufReader::new(rd);
    let reply: Reply = proto::read_line_json(&mut rd).await?;
    match reply.error {
        Some(error) if error.code == FileErrorCode::RangeNotSatisfiable => Err(FilesError::Unsatisfiable {
            error,
            size: reply.entry.map_or(0, |e| e.size),
        }),
        Some(error) => Err(error.into()),
        None => Ok(Reading { reply, rd, _wr: wr }),
    }
}

/// `fs_write`: sends `body` (a file's bytes, or a tar stream with `archive`) and returns what was
/// written. The harness's failure (e.g. over `max_bytes`) ends the upload as soon as it is sent.
pub async fn write<S, C, E>(conn: Conn, request: WriteRequest, body: S) -> Result<Summary, FilesError>
where
    S: Stream<Item = Result<C, E>> + Send,
    C: AsRef<[u8]>,
    E: Into<FilesError>,
{
    let (_reply, mut rd, mut wr) = begin(conn, Request::FsWrite(request)).await?;
    let ending = finish(&mut rd);
    tokio::pin!(ending);
    // `Err(Ok(e))`: the client's body broke; `Err(Err(e))`: writing to the harness failed.
    let sending = async {
        let mut body = std::pin::pin!(body);
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| Ok(e.into()))?;
            for part in chunk.as_ref().chunks(MAX_FRAME) {
                proto::write_frame(&mut wr, FILE_DATA, part).await.map_err(Err)?;
            }
        }
        proto::write_frame(&mut wr, FILE_DATA, &[]).await.map_err(Err)?;
        tokio::io::AsyncWriteExt::flush(&mut wr)
            .await
            .map_err(|e| Err(ProtoError::from(e)))?;
        Ok::<_, Result<FilesError, ProtoError>>(())
    };
    tokio::select! {
        // The harness answered first: a failure (or, oddly, success) before all was sent.
        ended = &mut ending => ended,
        sent = sending => match sent {
            Ok(()) => ending.await,
            // Our side failed (the client's body broke): the harness discards the upload.
            Err(Ok(err)) => Err(err),
            // The harness stopped reading: it refused the upload (and closed) while we were still
            // sending, so its answer is waiting to be read; a harness that died has none.
            Err(Err(err)) => match tokio::time::timeout(REFUSAL_WAIT, ending).await {
                Ok(Err(FilesError::File(refused))) => Err(FilesError::File(refused)),
                _ => Err(err.into()),
            },
        },
    }
}

/// How long an upload the harness stopped reading waits for the harness's reason.
const REFUSAL_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// `fs_delete`.
pub async fn delete(conn: Conn, request: DeleteRequest) -> Result<Summary, FilesError> {
    let (_reply, mut rd, _wr) = begin(conn, Request::FsDelete(request)).await?;
    finish(&mut rd).await
}
