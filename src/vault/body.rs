//! Bodies through the vault: rewritten whole when small and sized, streamed otherwise.
//!
//! Owns [`rewrite_body`] and the streaming [`RewriteBody`]. A body is rewritten with one
//! [`Substitutions`] set (stubs → real values going up, real values → stubs coming down). Going up
//! it is also checked against a [`Guard`]: stubs that may not be in this body at all (a stub not
//! bound to the host, or a bound one whose credential may not go in the body), and every stub in
//! its trailers, which are never an injection point. Coming down, trailers are scrubbed like
//! headers.
//!
//! Invariants: memory stays bounded by [`MAX_BUFFERED_BODY`] for sized bodies and by the longest
//! needle for streamed ones. A guarded needle ends the body with an error before any byte of it is
//! passed on — a tail that could begin one is held back until the next chunk decides it — and
//! which needle it was is left in the guard ([`Guard::tripped`]) for the refusal. What a body
//! rewrote is known when it ends: [`OnEnd`] is called once, at its end or when it is dropped before
//! it, with the bytes passed on, so its record is written then.
//!
//! It does not decide what goes where ([`super::plan`] does) and does not touch sockets.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Body, Bytes, Frame, Incoming, SizeHint};
use hyper::header::{self, HeaderMap, HeaderValue};

use super::encodings;
use super::plan::rewrite_headers;
use super::rewrite::{NeedleSet, Substitutions};

/// Bodies up to this size with a known length are rewritten whole, keeping an exact length.
pub const MAX_BUFFERED_BODY: usize = 8 * 1024 * 1024;
/// How long the vault reads a refused request's body before answering anyway.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
pub type ProxyBody = BoxBody<Bytes, BoxError>;

/// Called once when a body ends (or is dropped before its end) with the bytes it passed on.
pub type OnEnd = Box<dyn FnOnce(u64) + Send + Sync>;

/// Where a guarded needle was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trip {
    /// In the body: the index of the needle in the guard's body needles.
    Body(usize),
    /// In a trailer (named): the index of the needle in the guard's trailer needles.
    Trailer(String, usize),
}

/// What a request body may not carry.
#[derive(Clone)]
pub struct Guard {
    body: Option<Arc<Needles>>,
    trailers: Option<Arc<Needles>>,
    tripped: Arc<Mutex<Option<Trip>>>,
}

/// The stubs a guard looks for, each in every routine encoded form ([`encodings::forms`]): a stub
/// sent percent-, JSON- or base64-encoded is the same stub. Each form's group is the index of the
/// stub it is a form of.
pub struct Needles(NeedleSet);

impl Needles {
    fn new(stubs: Vec<Vec<u8>>) -> Option<Arc<Self>> {
        let forms = stubs.iter().enumerate().flat_map(|(i, stub)| {
            encodings::forms(stub)
                .into_iter()
                .map(move |form| (i, form, Vec::new()))
        });
        let set = NeedleSet::grouped(forms);
        (!set.is_empty()).then(|| Arc::new(Self(set)))
    }

    /// The index of the stub found in `input`, in any of its forms.
    fn find(&self, input: &[u8]) -> Option<usize> {
        self.0.find_group(input)
    }

    /// The length of the longest tail of `buf` that could begin a needle.
    fn pending_tail(&self, buf: &[u8]) -> usize {
        self.0.pending_tail(buf)
    }
}

/// The needles of each set of stubs a sandbox's guards have used, built once per set: a sandbox
/// sees a handful of sets (one per host it talks to), and building one is far dearer than a request.
#[derive(Default)]
pub struct GuardCache(Mutex<HashMap<Stubs, Option<Arc<Needles>>>>);

/// A set of stubs, the key of [`GuardCache`].
type Stubs = Vec<Vec<u8>>;

impl GuardCache {
    /// [`Guard::new`], with needles built at most once per set of stubs.
    pub fn guard(&self, body: Vec<Vec<u8>>, trailers: Vec<Vec<u8>>) -> Guard {
        Guard {
            body: self.needles(body),
            trailers: self.needles(trailers),
            tripped: Arc::default(),
        }
    }

    fn needles(&self, stubs: Vec<Vec<u8>>) -> Option<Arc<Needles>> {
        let mut sets = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(needles) = sets.get(&stubs) {
            return needles.clone();
        }
        let needles = Needles::new(stubs.clone());
        sets.insert(stubs, needles.clone());
        needles
    }
}

impl Guard {
    /// A guard refusing `body` needles in the body and `trailers` needles in trailers.
    pub fn new(body: Vec<Vec<u8>>, trailers: Vec<Vec<u8>>) -> Self {
        Self {
            body: Needles::new(body),
            trailers: Needles::new(trailers),
            tripped: Arc::default(),
        }
    }

    /// A guard that refuses nothing.
    pub fn none() -> Self {
        Self::new(Vec::new(), Vec::new())
    }

    fn is_empty(&self) -> bool {
        self.body.is_none() && self.trailers.is_none()
    }

    /// What tripped the guard, if anything did.
    pub fn tripped(&self) -> Option<Trip> {
        self.tripped.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn trip(&self, trip: Trip) -> BoxError {
        *self.tripped.lock().unwrap_or_else(|p| p.into_inner()) = Some(trip);
        "lap vault: a stub that may not be sent here".into()
    }

    fn in_body(&self, input: &[u8]) -> Option<usize> {
        self.body.as_ref()?.find(input)
    }

    /// The first trailer carrying a needle, in its name or value.
    fn in_trailers(&self, trailers: &HeaderMap) -> Option<Trip> {
        let needles = self.trailers.as_ref()?;
        trailers.iter().find_map(|(name, value)| {
            needles
                .find(name.as_str().as_bytes())
                .or_else(|| needles.find(value.as_bytes()))
                .map(|i| Trip::Trailer(name.as_str().to_owned(), i))
        })
    }
}

/// Which way a body goes.
pub enum Way {
    /// Sandbox → upstream: rewritten with the swaps, checked against the guard.
    Up(Guard),
    /// Upstream → sandbox: scrubbed, trailers too (a trailer whose name holds one of
    /// `names` is left out); `on_end` runs when it ends.
    Down { on_end: Option<OnEnd>, names: Vec<Vec<u8>> },
}

/// Rewrites a body with `subs`, going `way`. Sized bodies under the limit are rewritten whole with
/// an exact `Content-Length` (a guarded needle is then an error here); others stream (a guarded
/// needle then ends the stream with an error, and the guard says which).
pub async fn rewrite_body<B>(
    body: B,
    headers: &mut HeaderMap,
    subs: &Arc<Substitutions>,
    way: Way,
) -> Result<ProxyBody, BodyError>
where
    B: Body<Data = Bytes> + Send + Sync + Unpin + 'static,
    B::Error: Into<BoxError>,
{
    let known = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    match known {
        Some(len) if len <= MAX_BUFFERED_BODY => {
            let collected = Limited::new(body, MAX_BUFFERED_BODY)
                .collect()
                .await
                .map_err(BodyError::Read)?;
            let trailers = collected.trailers().cloned();
            let bytes = collected.to_bytes();
            let out = match way {
                Way::Up(guard) => {
                    if let Some(i) = guard.in_body(&bytes) {
                        let _ = guard.trip(Trip::Body(i));
                        return Err(BodyError::Refused);
                    }
                    if let Some(trip) = trailers.as_ref().and_then(|t| guard.in_trailers(t)) {
                        let _ = guard.trip(trip);
                        return Err(BodyError::Refused);
                    }
                    Bytes::from(subs.replace_all(&bytes).into_owned())
                }
                Way::Down { on_end, .. } => {
                    let out = Bytes::from(subs.replace_all(&bytes).into_owned());
                    if let Some(on_end) = on_end {
                        on_end(out.len() as u64);
                    }
                    out
                }
            };
            headers.insert(header::CONTENT_LENGTH, HeaderValue::from(out.len()));
            Ok(Full::new(out).map_err(|never| match never {}).boxed())
        }
        Some(_) | None => {
            if matches!(&way, Way::Up(guard) if guard.is_empty()) && subs.is_empty() {
                return Ok(body.map_err(Into::into).boxed());
            }
            headers.remove(header::CONTENT_LENGTH);
            Ok(RewriteBody::new(body, subs.clone(), way).boxed())
        }
    }
}

/// Why a body could not be passed on.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("a stub that may not be sent here")]
    Refused,
    #[error("{0}")]
    Read(BoxError),
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
pub struct RewriteBody<B> {
    inner: B,
    subs: Arc<Substitutions>,
    /// The rewriter's held-back tail (a possible start of a needle of `subs`).
    carry: Vec<u8>,
    guard: Guard,
    /// A held-back tail that could begin a guarded needle, not yet rewritten.
    held: Vec<u8>,
    /// Rewritten data that goes on at the next poll (the second part of a chunk).
    queued: Option<Bytes>,
    /// Down: trailers are scrubbed, and left out when their name holds one of these.
    scrub_trailers: Option<Vec<Vec<u8>>>,
    on_end: Option<OnEnd>,
    passed: u64,
    trailers: Option<HeaderMap>,
    done: bool,
}

impl<B> RewriteBody<B> {
    pub fn new(inner: B, subs: Arc<Substitutions>, way: Way) -> Self {
        let (guard, on_end, scrub_trailers) = match way {
            Way::Up(guard) => (guard, None, None),
            Way::Down { on_end, names } => (Guard::none(), on_end, Some(names)),
        };
        Self {
            inner,
            subs,
            carry: Vec::new(),
            guard,
            held: Vec::new(),
            queued: None,
            scrub_trailers,
            on_end,
            passed: 0,
            trailers: None,
            done: false,
        }
    }

    /// Rewrites a chunk that passed the guard into what can go on now (the chunk itself, or a
    /// slice of it, when nothing in it changes: the common case of a large body); a second part,
    /// if any, waits in `queued` for the next poll.
    fn rewrite(&mut self, data: Bytes) -> Option<Bytes> {
        let [first, second] = self.subs.push_bytes(&mut self.carry, data);
        match (first.is_empty(), second.is_empty()) {
            (true, true) => None,
            (true, false) => Some(second),
            (false, true) => Some(first),
            (false, false) => {
                self.queued = Some(second);
                Some(first)
            }
        }
    }

    /// Checks a chunk against the guard; returns what may be rewritten and passed on now.
    fn guarded(&mut self, data: Bytes) -> Result<Bytes, BoxError> {
        let Some(needles) = self.guard.body.clone() else {
            return Ok(data);
        };
        let buf = if self.held.is_empty() {
            data
        } else {
            let mut joined = std::mem::take(&mut self.held);
            joined.extend_from_slice(&data);
            Bytes::from(joined)
        };
        if let Some(i) = needles.find(&buf) {
            return Err(self.guard.trip(Trip::Body(i)));
        }
        let keep = needles.pending_tail(&buf);
        self.held = buf[buf.len() - keep..].to_vec();
        Ok(buf.slice(..buf.len() - keep))
    }

    /// The end of the body: what is still held back, rewritten.
    fn flush(&mut self) -> Option<Bytes> {
        let mut out = Vec::new();
        let held = std::mem::take(&mut self.held);
        self.subs.push(&mut self.carry, &held, &mut out);
        self.subs.finish(&mut self.carry, &mut out);
        (!out.is_empty()).then(|| out.into())
    }

    fn end(&mut self) {
        if let Some(on_end) = self.on_end.take() {
            on_end(self.passed);
        }
    }

    fn pass(&mut self, data: Bytes) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.passed += data.len() as u64;
        Poll::Ready(Some(Ok(Frame::data(data))))
    }
}

impl<B> Drop for RewriteBody<B> {
    fn drop(&mut self) {
        self.end();
    }
}

impl<B> Body for RewriteBody<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        loop {
            let this = &mut *self;
            if let Some(data) = this.queued.take() {
                return this.pass(data);
            }
            if let Some(trailers) = this.trailers.take() {
                this.done = true;
                this.end();
                return Poll::Ready(Some(Ok(Frame::trailers(trailers))));
            }
            if this.done {
                this.end();
                return Poll::Ready(None);
            }
            match ready!(Pin::new(&mut this.inner).poll_frame(cx)) {
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => {
                        let data = match this.guarded(data) {
                            Ok(data) => data,
                            Err(err) => {
                                this.done = true;
                                return Poll::Ready(Some(Err(err)));
                            }
                        };
                        if let Some(out) = this.rewrite(data) {
                            return this.pass(out);
                        }
                    }
                    Err(frame) => {
                        if let Ok(trailers) = frame.into_trailers() {
                            if let Some(trip) = this.guard.in_trailers(&trailers) {
                                this.done = true;
                                return Poll::Ready(Some(Err(this.guard.trip(trip))));
                            }
                            let trailers = match &this.scrub_trailers {
                                Some(names) => rewrite_headers(&trailers, &this.subs, names).headers,
                                None => trailers,
                            };
                            this.trailers = Some(trailers);
                        }
                        if let Some(out) = this.flush() {
                            return this.pass(out);
                        }
                    }
                },
                Some(Err(err)) => {
                    this.done = true;
                    return Poll::Ready(Some(Err(err.into())));
                }
                None => {
                    this.done = true;
                    if let Some(out) = this.flush() {
                        return this.pass(out);
                    }
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done && self.trailers.is_none() && self.queued.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::convert::Infallible;

    use super::*;

    /// A body that yields the given frames, one per poll.
    struct Frames(VecDeque<Frame<Bytes>>);

    impl Body for Frames {
        type Data = Bytes;
        type Error = Infallible;

        fn poll_frame(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
            Poll::Ready(self.0.pop_front().map(Ok))
        }
    }

    fn frames(chunks: &[&str], trailers: Option<(&str, &str)>) -> Frames {
        let mut out: VecDeque<Frame<Bytes>> = chunks.iter().map(|c| Frame::data(Bytes::from(c.to_string()))).collect();
        if let Some((name, value)) = trailers {
            let mut map = HeaderMap::new();
            map.insert(
                hyper::header::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
            out.push_back(Frame::trailers(map));
        }
        Frames(out)
    }

    /// Polls `body` to its end: the data passed on before it ended, its trailers, and its error.
    async fn run<B: Body<Data = Bytes, Error = BoxError> + Unpin>(
        mut body: B,
    ) -> (Vec<u8>, Option<HeaderMap>, Option<String>) {
        let (mut data, mut trailers) = (Vec::new(), None);
        while let Some(frame) = body.frame().await {
            match frame {
                Ok(frame) => match frame.into_data() {
                    Ok(chunk) => data.extend_from_slice(&chunk),
                    Err(frame) => trailers = frame.into_trailers().ok(),
                },
                Err(err) => return (data, trailers, Some(err.to_string())),
            }
        }
        (data, trailers, None)
    }

    fn no_subs() -> Arc<Substitutions> {
        Arc::new(Substitutions::new(Vec::<(&[u8], &[u8])>::new()))
    }

    #[tokio::test]
    async fn a_guarded_stub_split_across_chunks_never_has_its_first_bytes_passed_on() {
        let guard = Guard::new(vec![b"stub_x_1234".to_vec()], Vec::new());
        let body = RewriteBody::new(
            frames(&["hello stub_", "x_1234 world"], None),
            no_subs(),
            Way::Up(guard.clone()),
        );
        let (data, _, err) = run(body).await;
        assert!(err.is_some());
        assert_eq!(data, b"hello ", "a prefix of the stub went on before the refusal");
        assert_eq!(guard.tripped(), Some(Trip::Body(0)));
    }

    #[tokio::test]
    async fn a_held_back_prefix_that_is_not_a_stub_goes_on_whole_and_swaps_still_happen() {
        let subs = Arc::new(Substitutions::new([("stub_bound", "REAL")]));
        let guard = Guard::new(vec![b"stub_other".to_vec()], Vec::new());
        let body = RewriteBody::new(
            frames(&["a stub_", "bound b stub_o", "x"], None),
            subs,
            Way::Up(guard.clone()),
        );
        let (data, _, err) = run(body).await;
        assert_eq!(err, None);
        assert_eq!(String::from_utf8(data).unwrap(), "a REAL b stub_ox");
        assert_eq!(guard.tripped(), None);
    }

    #[tokio::test]
    async fn a_stub_in_a_request_trailer_ends_the_body() {
        let guard = Guard::new(Vec::new(), vec![b"stub_x_1234".to_vec()]);
        let body = RewriteBody::new(
            frames(&["ok"], Some(("x-t", "stub_x_1234"))),
            no_subs(),
            Way::Up(guard.clone()),
        );
        let (_, trailers, err) = run(body).await;
        assert!(err.is_some() && trailers.is_none());
        assert_eq!(guard.tripped(), Some(Trip::Trailer("x-t".into(), 0)));
    }

    #[tokio::test]
    async fn response_trailers_are_scrubbed_and_the_end_is_reported_once_with_the_bytes_passed() {
        let subs = Arc::new(Substitutions::new([("REAL", "stub_r")]));
        let ended = Arc::new(Mutex::new(Vec::new()));
        let on_end: OnEnd = {
            let ended = ended.clone();
            Box::new(move |bytes| ended.lock().unwrap().push(bytes))
        };
        let way = Way::Down {
            on_end: Some(on_end),
            names: vec![b"real".to_vec()],
        };
        let body = RewriteBody::new(frames(&["got RE", "AL"], Some(("grpc-message", "bad REAL"))), subs, way);
        let (data, trailers, err) = run(body).await;
        assert_eq!(err, None);
        assert_eq!(data, b"got stub_r");
        assert_eq!(trailers.unwrap()["grpc-message"], "bad stub_r");
        assert_eq!(*ended.lock().unwrap(), vec![10]);
    }

    #[tokio::test]
    async fn a_response_dropped_before_its_end_is_still_reported() {
        let ended = Arc::new(Mutex::new(Vec::new()));
        let on_end: OnEnd = {
            let ended = ended.clone();
            Box::new(move |bytes| ended.lock().unwrap().push(bytes))
        };
        let way = Way::Down {
            on_end: Some(on_end),
            names: Vec::new(),
        };
        let mut body = RewriteBody::new(frames(&["first", "second"], None), no_subs(), way);
        let _ = body.frame().await;
        drop(body);
        assert_eq!(*ended.lock().unwrap(), vec![5]);
    }
}
