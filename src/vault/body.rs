//! Bodies through the vault: rewritten whole when small and sized, streamed otherwise.
//!
//! Owns [`rewrite_body`] and the streaming [`RewriteBody`]: a body is rewritten with one
//! [`Substitutions`] set (stubs → real values going up, real values → stubs coming down) and, going
//! up, checked against a second set whose needles may not pass at all (stray stubs). Invariants:
//! memory stays bounded by [`MAX_BUFFERED_BODY`] for sized bodies and by the longest needle for
//! streamed ones, and a forbidden needle ends the body with an error.
//!
//! It does not decide what goes where ([`super::plan`] does) and does not touch sockets.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Body, Bytes, Frame, Incoming, SizeHint};
use hyper::header::{self, HeaderMap, HeaderValue};

use super::rewrite::Substitutions;

/// Bodies up to this size with a known length are rewritten whole, keeping an exact length.
pub const MAX_BUFFERED_BODY: usize = 8 * 1024 * 1024;
/// How long the vault reads a refused request's body before answering anyway.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
pub type ProxyBody = BoxBody<Bytes, BoxError>;

/// Why a body could not be passed on.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("a stub headed to a host it is not bound to")]
    Stray,
    #[error("{0}")]
    Read(BoxError),
}

/// Rewrites a body with `subs`, refusing it when `stray` finds anything. Sized bodies under the limit
/// are rewritten whole with an exact `Content-Length`; others stream. `stray_hit` is set when a
/// streamed body is cut for a stray stub.
pub async fn rewrite_body(
    body: Incoming,
    headers: &mut HeaderMap,
    subs: &Arc<Substitutions>,
    stray: Option<&Arc<Substitutions>>,
    stray_hit: &Arc<AtomicBool>,
) -> Result<ProxyBody, BodyError> {
    let known = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    let nothing_to_do = subs.is_empty() && stray.is_none_or(|s| s.is_empty());
    if nothing_to_do {
        return Ok(body.map_err(BoxError::from).boxed());
    }
    match known {
        Some(len) if len <= MAX_BUFFERED_BODY => {
            let bytes = Limited::new(body, MAX_BUFFERED_BODY)
                .collect()
                .await
                .map_err(BodyError::Read)?
                .to_bytes();
            if stray.is_some_and(|s| s.finds_any(&bytes)) {
                stray_hit.store(true, Ordering::SeqCst);
                return Err(BodyError::Stray);
            }
            let out = Bytes::from(subs.replace_all(&bytes).into_owned());
            headers.insert(header::CONTENT_LENGTH, HeaderValue::from(out.len()));
            Ok(Full::new(out).map_err(|never| match never {}).boxed())
        }
        Some(_) | None => {
            headers.remove(header::CONTENT_LENGTH);
            Ok(RewriteBody {
                inner: body,
                subs: subs.clone(),
                stray: stray.cloned(),
                stray_hit: stray_hit.clone(),
                carry: Vec::new(),
                tail: Vec::new(),
                trailers: None,
                done: false,
            }
            .boxed())
        }
    }
}

/// Reads and discards a request body the vault refuses, up to [`MAX_BUFFERED_BODY`] bytes and
/// [`DRAIN_TIMEOUT`]; a longer one is cut off.
pub async fn drain(mut body: Incoming) {
    let mut left = MAX_BUFFERED_BODY;
    let read = async {
        while let Some(Ok(frame)) = body.frame().await {
            let len = frame.data_ref().map_or(0, Bytes::len);
            if len >= left {
                return;
            }
            left -= len;
        }
    };
    let _ = tokio::time::timeout(DRAIN_TIMEOUT, read).await;
}

/// A body rewritten as it streams, in memory bounded by the longest needle.
pub struct RewriteBody {
    inner: Incoming,
    subs: Arc<Substitutions>,
    stray: Option<Arc<Substitutions>>,
    stray_hit: Arc<AtomicBool>,
    carry: Vec<u8>,
    /// The end of the previous chunk, so a stray stub split across chunks is still seen.
    tail: Vec<u8>,
    trailers: Option<HeaderMap>,
    done: bool,
}

impl Body for RewriteBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        loop {
            if let Some(trailers) = self.trailers.take() {
                self.done = true;
                return Poll::Ready(Some(Ok(Frame::trailers(trailers))));
            }
            if self.done {
                return Poll::Ready(None);
            }
            let this = &mut *self;
            match ready!(Pin::new(&mut this.inner).poll_frame(cx)) {
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => {
                        if let Some(stray) = &this.stray {
                            // The chunk itself, then the seam with the previous one (a stub split
                            // across it): no copy of the whole chunk.
                            let reach = stray.longest().saturating_sub(1);
                            let mut seam = std::mem::take(&mut this.tail);
                            seam.extend_from_slice(&data[..reach.min(data.len())]);
                            if stray.finds_any(&data) || stray.finds_any(&seam) {
                                this.stray_hit.store(true, Ordering::SeqCst);
                                this.done = true;
                                return Poll::Ready(Some(Err(
                                    "lap vault: a stub headed to a host it is not bound to".into()
                                )));
                            }
                            let from = if data.len() >= reach {
                                &data[data.len() - reach..]
                            } else {
                                &seam[..]
                            };
                            let keep = reach.min(from.len());
                            this.tail = from[from.len() - keep..].to_vec();
                        }
                        // Nothing held back and nothing in this chunk to rewrite or wait for: pass it on
                        // as it is, without a copy (the common case of a large body).
                        if this.carry.is_empty() && this.subs.passes_through(&data) {
                            return Poll::Ready(Some(Ok(Frame::data(data))));
                        }
                        let mut out = Vec::with_capacity(data.len());
                        this.subs.push(&mut this.carry, &data, &mut out);
                        if !out.is_empty() {
                            return Poll::Ready(Some(Ok(Frame::data(out.into()))));
                        }
                    }
                    Err(frame) => {
                        this.trailers = frame.into_trailers().ok();
                        let mut out = Vec::new();
                        this.subs.finish(&mut this.carry, &mut out);
                        if !out.is_empty() {
                            return Poll::Ready(Some(Ok(Frame::data(out.into()))));
                        }
                    }
                },
                Some(Err(err)) => return Poll::Ready(Some(Err(err.into()))),
                None => {
                    this.done = true;
                    let mut out = Vec::new();
                    this.subs.finish(&mut this.carry, &mut out);
                    if !out.is_empty() {
                        return Poll::Ready(Some(Ok(Frame::data(out.into()))));
                    }
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done && self.trailers.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}
