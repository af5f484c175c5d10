//! The message API from the client side: send a message and read the turn's SSE stream frame by
//! frame (the CLI reads every turn so, to show a tool's progress; the reply is its last frame); the
//! conversation; abort the running turn.

use std::time::Duration;

use reqwest::Method;

use super::{Client, ClientError, encode};
use crate::wire::api::PREFIX;
use crate::wire::messages::{AbortReply, Message, SendMessage, StreamFrame};

/// How long a reply may take (the server gives up after 30 minutes).
const MESSAGE_TIMEOUT: Duration = Duration::from_secs(31 * 60);
/// Longest SSE line read.
const MAX_SSE_LINE: usize = 64 * 1024 * 1024;

impl Client {
    /// Sends a message and returns its SSE stream.
    pub async fn message_stream(&self, id: &str, body: &SendMessage) -> Result<FrameStream, ClientError> {
        let path = format!("{PREFIX}/sessions/{}/message_stream", encode(id));
        let resp = self
            .send_within(Method::POST, &path, Some(body), true, MESSAGE_TIMEOUT)
            .await?;
        Ok(FrameStream {
            resp,
            buf: Vec::new(),
            url: self.base.clone(),
        })
    }

    /// A session's conversation, oldest first.
    pub async fn messages(&self, id: &str) -> Result<Vec<Message>, ClientError> {
        self.call::<_, ()>(Method::GET, &format!("{PREFIX}/sessions/{}/messages", encode(id)), None)
            .await
    }

    /// Interrupts a session's running turn.
    pub async fn abort(&self, id: &str) -> Result<AbortReply, ClientError> {
        self.call::<_, ()>(Method::POST, &format!("{PREFIX}/sessions/{}/abort", encode(id)), None)
            .await
    }
}

/// An SSE response read as [`StreamFrame`]s.
pub struct FrameStream {
    resp: reqwest::Response,
    buf: Vec<u8>,
    url: String,
}

impl FrameStream {
    /// The next frame; `None` when the stream ends. Comments (keep-alives) are skipped.
    pub async fn next(&mut self) -> Result<Option<StreamFrame>, ClientError> {
        loop {
            while let Some(end) = self.buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=end).collect();
                let line = String::from_utf8_lossy(&line);
                if let Some(data) = line.trim_end().strip_prefix("data:") {
                    return serde_json::from_str(data.trim_start())
                        .map(Some)
                        .map_err(|err| ClientError::Protocol {
                            url: self.url.clone(),
                            detail: format!("bad stream frame: {err}"),
                        });
                }
            }
            if self.buf.len() > MAX_SSE_LINE {
                return Err(ClientError::Protocol {
                    url: self.url.clone(),
                    detail: format!("a stream line over {MAX_SSE_LINE} bytes"),
                });
            }
            match self.resp.chunk().await.map_err(|source| ClientError::Unreachable {
                url: self.url.clone(),
                source,
            })? {
                Some(bytes) => self.buf.extend_from_slice(&bytes),
                None => return Ok(None),
            }
        }
    }
}
