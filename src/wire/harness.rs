//! The harness protocol between `lap serve` (client) and `lap harness` (server), version 1: on a
//! local sandbox's `harness.sock`, or a Kubernetes pod's harness port.
//!
//! This module is the contract: messages, framing, limits and the one error type of a harness
//! connection. The client, one for every backend over any byte stream, is
//! [`crate::sandbox::harness`]; the server is the local backend's harness
//! (`sandbox/local/server.rs`), which a pod runs too.
//!
//! Trust boundary: the socket lives in `/run/lap`, which only the harness (and, with a user
//! namespace, the sandbox's single mapped user) can reach; the host side dials it through the
//! sandbox's `run/` directory. Nothing here ever carries a credential.
//!
//! Framing. A connection starts with one request line of JSON, at most [`MAX_REQUEST_LINE`] bytes,
//! ended by `\n`:
//! - `{"op":"ping"}`: the harness answers one line `{"pong":1}` (the protocol version) and closes.
//! - `{"op":"exec","argv":[…],"cwd":…}`: the harness runs `argv` as the sandbox user. Both sides then
//!   switch to binary frames: a kind byte, a big-endian `u32` length, then that many bytes (at most
//!   [`MAX_FRAME`]). Client → harness: [`STDIN`] frames; an empty one closes the command's stdin.
//!   Harness → client: [`STDOUT`] and [`STDERR`] frames in the order the command wrote them on each
//!   stream, then exactly one [`EXIT`] frame (a big-endian `i32`: the exit code, or 128 + the signal
//!   number) or one [`ERROR`] frame (UTF-8 text, when the command could not start), then EOF.
//!   A client that disconnects early gets the command's whole process group killed.
//! - `{"op":"proxy_listener"}`: the harness answers one byte, `L`, carrying (SCM_RIGHTS) the
//!   listening socket it bound on `127.0.0.1:`[`PROXY_PORT`] inside the sandbox's network namespace —
//!   the egress proxy's listener, served by `lap serve` (DESIGN §2). Until a client has taken it, the
//!   harness answers every connection on it with `502 Bad Gateway`.
//! - `{"op":"attach","cols":N,"rows":M}`: the client becomes a viewer of the agent's terminal
//!   ([`crate::harness::terminal`]), `N`×`M` cells. Both sides switch to the frames above. Harness →
//!   client: [`ERROR`] then EOF when the sandbox runs no agent; else first a [`REPAINT`] (bytes that
//!   draw the current screen on a blank terminal), then [`STDOUT`] (the PTY's output, in order),
//!   [`VIEWERS`] (a big-endian `u32`: viewers attached now), another [`REPAINT`] whenever the client
//!   fell behind and lost output, and [`EXIT`] once the agent has exited (the connection stays open:
//!   the last screen can still be looked at). Client → harness: [`STDIN`] (keystrokes) and
//!   [`RESIZE`] (big-endian `u16` columns then `u16` rows). Closing the connection detaches; the
//!   agent keeps running.
//! - `{"op":"wait"}`: the harness answers one [`EXIT`] frame once the agent has exited (at once if it
//!   has), or [`ERROR`] when the sandbox runs no agent, then closes. The client is not a viewer.
//! - `{"op":"start","env":[[k,v],…],"command":…,"cwd":…}` (late binding): the session's environment
//!   replaces the one the sandbox was created with, for the agent and every later `exec`; then, when
//!   `command` is given, the agent starts under the PTY in `cwd` (default `/work/repo` when it exists,
//!   else `HOME`). The harness answers one JSON line, `{}` or `{"error":"…"}`, and closes. An agent
//!   starts at most once per sandbox: a second `start` with a command is an error and changes nothing.
//!
//! - `{"op":"connect","port":N}` and `{"op":"ports"}`: a loopback connection to the sandbox's own
//!   `127.0.0.1:N`, spliced with this connection after a one-line answer, and the ports the sandbox
//!   listens on; specified in [`crate::sandbox::local::ports`].
//!
//! An `exec` request may carry `"env":[[k,v],…]`: variables set over the session's for that command
//! only (e.g. a clone before the agent starts).
//!
//! - `{"op":"fs_stat"|"fs_list"|"fs_read"|"fs_write"|"fs_delete","path":…}`: a file operation as
//!   the sandbox user, confined to `/work` and `/tmp`; its messages are [`files`], its reply, frames and limits
//!   are specified in `sandbox/local/files.rs`.
//!
//! On TCP (`lap harness --listen ADDR --token-file FILE`, a Kubernetes pod's harness), a connection
//! first sends one more line, `{"auth":"TOKEN"}`, with the pod's harness token; a wrong or missing
//! token gets one [`ERROR`] frame and the connection is closed before any request is read.

pub mod files;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};

use crate::wire::ports;

/// The egress proxy's port on the sandbox's loopback (each sandbox has its own loopback).
pub const PROXY_PORT: u16 = 3128;
/// The byte that carries the proxy listener.
pub const PROXY_LISTENER_BYTE: u8 = b'L';
/// Protocol version, answered to a ping.
pub const VERSION: u32 = 1;
/// Longest request line accepted.
pub const MAX_REQUEST_LINE: usize = 64 * 1024;
/// Longest frame payload accepted.
pub const MAX_FRAME: usize = 64 * 1024;

pub const STDIN: u8 = 0;
pub const STDOUT: u8 = 1;
pub const STDERR: u8 = 2;
pub const EXIT: u8 = 3;
pub const ERROR: u8 = 4;
pub const RESIZE: u8 = 5;
pub const REPAINT: u8 = 6;
pub const VIEWERS: u8 = 7;

/// The line a TCP connection starts with when the harness requires a token.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Auth {
    pub auth: String,
}

/// Sends the [`Auth`] line.
pub async fn write_auth<W: AsyncWrite + Unpin>(w: &mut W, token: &str) -> Result<(), ProtoError> {
    let mut line =
        serde_json::to_vec(&Auth { auth: token.to_owned() }).map_err(|e| ProtoError::Protocol(e.to_string()))?;
    line.push(b'\n');
    w.write_all(&line).await?;
    Ok(())
}

/// A request line.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "op", rename_all = "lowercase")]
pub enum Request {
    Ping,
    Exec(ExecRequest),
    #[serde(rename = "proxy_listener")]
    ProxyListener,
    Attach(AttachRequest),
    Wait,
    Start(StartRequest),
    // Issue 17 part 1 (ports): see `crate::sandbox::local::ports`.
    Connect(ports::ConnectRequest),
    Ports,
    // File operations (issue 17): see `sandbox/local/files.rs`.
    #[serde(rename = "fs_stat")]
    FsStat(files::PathRequest),
    #[serde(rename = "fs_list")]
    FsList(files::PathRequest),
    #[serde(rename = "fs_read")]
    FsRead(files::ReadRequest),
    #[serde(rename = "fs_write")]
    FsWrite(files::WriteRequest),
    #[serde(rename = "fs_delete")]
    FsDelete(files::DeleteRequest),
}

/// Binds the session to a (possibly warm) sandbox and starts its agent: see the module doc.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct StartRequest {
    /// The session's whole environment (plain variables, stubs, proxy and CA variables).
    #[serde(default)]
    pub env: Vec<(String, String)>,
    /// The agent's command line, run under the PTY (`None`: only bind the environment).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
    /// Where the agent starts (default: `/work/repo` when it exists, else the user's home).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cwd: Option<String>,
    /// Files for the sandbox user's home, written before the agent starts unless already there.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub home_files: Vec<HomeFile>,
}

/// A file for the sandbox user's home: a path relative to it, and the contents.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HomeFile {
    pub path: String,
    pub contents: String,
}

/// The harness's answer to a [`Request::Start`].
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct StartReply {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// A viewer's terminal size, in cells.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct AttachRequest {
    pub cols: u16,
    pub rows: u16,
}

/// The payload of a [`RESIZE`] frame.
pub fn resize_payload(cols: u16, rows: u16) -> [u8; 4] {
    let [c0, c1] = cols.to_be_bytes();
    let [r0, r1] = rows.to_be_bytes();
    [c0, c1, r0, r1]
}

/// Columns and rows of a [`RESIZE`] frame's payload.
pub fn parse_resize(payload: &[u8]) -> Option<(u16, u16)> {
    let [c0, c1, r0, r1]: [u8; 4] = payload.try_into().ok()?;
    Some((u16::from_be_bytes([c0, c1]), u16::from_be_bytes([r0, r1])))
}

/// A command to run inside the sandbox.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ExecRequest {
    pub argv: Vec<String>,
    /// Working directory inside the sandbox (default: the sandbox user's home).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cwd: Option<String>,
    /// Variables set for this command over the session's environment.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<(String, String)>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Pong {
    pub pong: u32,
}

/// What went wrong on a harness connection, for either peer. Each backend turns it into its
/// [`crate::sandbox::SandboxError`] in one place.
#[derive(Debug, thiserror::Error)]
pub enum ProtoError {
    #[error("cannot reach the harness socket: {0}")]
    Connect(#[source] std::io::Error),
    #[error("the harness connection failed: {0}")]
    Io(#[from] std::io::Error),
    #[error("the harness sent something unexpected: {0}")]
    Protocol(String),
    /// An `exec`'s command could not start (its [`ERROR`] frame).
    #[error("the command could not start: {0}")]
    Start(String),
    /// A `wait` or an `attach` was refused (its [`ERROR`] frame: e.g. the sandbox runs no agent).
    /// Worded as [`Self::Start`], as the local backend has always reported it.
    #[error("the command could not start: {0}")]
    Refused(String),
    /// A `start` was refused (the `error` of its [`StartReply`]). Worded as [`Self::Start`], as the
    /// local backend has always reported it.
    #[error("the command could not start: {0}")]
    AgentStart(String),
}

/// Sends one request line.
pub async fn write_request<W: AsyncWrite + Unpin>(w: &mut W, request: &Request) -> Result<(), ProtoError> {
    let mut line = serde_json::to_vec(request).map_err(|e| ProtoError::Protocol(e.to_string()))?;
    line.push(b'\n');
    w.write_all(&line).await?;
    Ok(())
}

/// Reads one line of at most [`MAX_REQUEST_LINE`] bytes and parses it as JSON.
pub async fn read_line_json<T: for<'de> Deserialize<'de>, R: AsyncRead + Unpin>(
    r: &mut BufReader<R>,
) -> Result<T, ProtoError> {
    let mut line = Vec::new();
    let n = (&mut *r)
        .take(MAX_REQUEST_LINE as u64 + 1)
        .read_until(b'\n', &mut line)
        .await?;
    if n == 0 {
        return Err(ProtoError::Protocol("the connection closed before a line".into()));
    }
    if line.last() != Some(&b'\n') {
        return Err(ProtoError::Protocol("line too long or unterminated".into()));
    }
    serde_json::from_slice(&line).map_err(|e| ProtoError::Protocol(e.to_string()))
}

pub async fn write_frame<W: AsyncWrite + Unpin>(w: &mut W, kind: u8, payload: &[u8]) -> Result<(), ProtoError> {
    if payload.len() > MAX_FRAME {
        return Err(ProtoError::Protocol(format!("frame of {} bytes", payload.len())));
    }
    let mut header = [0u8; 5];
    header[0] = kind;
    header[1..].copy_from_slice(&(payload.len() as u32).to_be_bytes());
    if payload.len() <= SMALL_FRAME {
        // One write, so the reader wakes once for the whole frame (a keystroke, its echo).
        let mut frame = [0u8; 5 + SMALL_FRAME];
        frame[..5].copy_from_slice(&header);
        frame[5..5 + payload.len()].copy_from_slice(payload);
        w.write_all(&frame[..5 + payload.len()]).await?;
    } else {
        w.write_all(&header).await?;
        w.write_all(payload).await?;
    }
    Ok(())
}

/// Frames up to this size are written with one write.
const SMALL_FRAME: usize = 4096;

/// Reads one frame; `None` at a clean EOF before its first byte.
pub async fn read_frame<R: AsyncRead + Unpin>(r: &mut R) -> Result<Option<(u8, Vec<u8>)>, ProtoError> {
    let mut header = [0u8; 5];
    match r.read_exact(&mut header[..1]).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    r.read_exact(&mut header[1..]).await?;
    let len = u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize;
    if len > MAX_FRAME {
        return Err(ProtoError::Protocol(format!("frame of {len} bytes")));
    }
    let mut payload = vec![0u8; len];
    r.read_exact(&mut payload).await?;
    Ok(Some((header[0], payload)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_one_tagged_json_object() {
        let exec = Request::Exec(ExecRequest {
            argv: vec!["id".into()],
            cwd: None,
            env: Vec::new(),
        });
        assert_eq!(serde_json::to_string(&exec).unwrap(), r#"{"op":"exec","argv":["id"]}"#);
        assert_eq!(serde_json::to_string(&Request::Ping).unwrap(), r#"{"op":"ping"}"#);
        let attach = Request::Attach(AttachRequest { cols: 80, rows: 24 });
        assert_eq!(
            serde_json::to_string(&attach).unwrap(),
            r#"{"op":"attach","cols":80,"rows":24}"#
        );
        assert_eq!(parse_resize(&resize_payload(132, 43)), Some((132, 43)));
        let start = Request::Start(StartRequest {
            env: vec![("K".into(), "v".into())],
            command: Some("bash".into()),
            cwd: None,
            home_files: Vec::new(),
        });
        assert_eq!(
            serde_json::to_string(&start).unwrap(),
            r#"{"op":"start","env":[["K","v"]],"command":"bash"}"#
        );
        assert_eq!(parse_resize(b"abc"), None);
    }

    #[tokio::test]
    async fn frames_round_trip_and_oversized_frames_are_refused() {
        let mut buf = Vec::new();
        write_frame(&mut buf, STDOUT, b"hello").await.unwrap();
        write_frame(&mut buf, STDIN, b"").await.unwrap();
        let mut r = &buf[..];
        assert_eq!(read_frame(&mut r).await.unwrap(), Some((STDOUT, b"hello".to_vec())));
        assert_eq!(read_frame(&mut r).await.unwrap(), Some((STDIN, Vec::new())));
        assert_eq!(read_frame(&mut r).await.unwrap(), None);

        let big = vec![0u8; MAX_FRAME + 1];
        assert!(write_frame(&mut Vec::new(), STDOUT, &big).await.is_err());
        let mut forged = vec![STDOUT];
        forged.extend_from_slice(&((MAX_FRAME as u32) + 1).to_be_bytes());
        assert!(read_frame(&mut &forged[..]).await.is_err());
    }

    #[tokio::test]
    async fn an_overlong_request_line_is_refused() {
        let line = vec![b'x'; MAX_REQUEST_LINE + 10];
        let mut r = BufReader::new(&line[..]);
        assert!(read_line_json::<Request, _>(&mut r).await.is_err());
    }
}
