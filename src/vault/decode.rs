//! Compressed HTTP bodies, decoded as they stream, so the vault can read what it passes on.
//!
//! A body compressed with `gzip` (`x-gzip`), `deflate` (zlib, or raw deflate as some servers send),
//! `br` or `zstd` — named in `Content-Encoding` and/or, before `chunked`, in `Transfer-Encoding` — is
//! wrapped in a [`DecodedBody`]: its bytes come out decoded, in the order the codings are undone, and
//! the caller passes them on decoded (with [`strip_codings`] applied to the head). Any other coding is
//! an [`DecodeError::Unsupported`]: the caller refuses the body, never passes it on compressed.
//!
//! Bounded: memory is the decoders' windows (32 KiB deflate, at most 16 MiB brotli,
//! [`MAX_ZSTD_WINDOW`] zstd) plus [`CHANNEL_DEPTH`] chunks of at most [`CHUNK`] bytes each way,
//! whatever the body's size. A decompression bomb is cut: past [`MAX_DECODED_BYTES`] in all, or once
//! [`RATIO_FLOOR`] bytes are out, past [`MAX_RATIO`] decoded bytes per encoded byte, the body ends
//! with [`DecodeError::Bomb`] (a clear error on the stream; nothing after it is sent). At most
//! [`MAX_CODINGS`] layers are undone, and at most [`MAX_CONCURRENT_DECODERS`] bodies decode at once
//! (more wait their turn).
//!
//! The decoders (`flate2` on its pure-Rust backend, `brotli-decompressor`, `ruzstd`) read, so each
//! body's decoding runs on the blocking pool, fed from the async body through a bounded channel; the
//! task and the thread end when either side is dropped.

use std::io::{BufRead, BufReader, Read};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use hyper::HeaderMap;
use hyper::body::{Body, Bytes, Frame, SizeHint};
use hyper::header;
use tokio::sync::{Semaphore, mpsc};

/// Decoded bytes read (and sent on) at a time.
pub const CHUNK: usize = 16 * 1024;
/// Chunks queued between the async body and the decoding thread, each way.
pub const CHANNEL_DEPTH: usize = 4;
/// Decoded bytes one body may produce in all.
pub const MAX_DECODED_BYTES: u64 = 1 << 30;
/// Decoded bytes per encoded byte allowed once [`RATIO_FLOOR`] bytes are out: text and JSON compress
/// 3-20×, very repetitive logs about 100×; a bomb, near the formats' limits (about 1000× deflate).
pub const MAX_RATIO: u64 = 200;
/// Decoded bytes before the ratio is checked (small bodies compress far better than large ones).
pub const RATIO_FLOOR: u64 = 1 << 20;
/// The largest zstd window accepted (RFC 9659: 8 MiB for HTTP content coding).
pub const MAX_ZSTD_WINDOW: u64 = 8 << 20;
/// Codings one body may be layered with.
pub const MAX_CODINGS: usize = 3;
/// Bodies decoding at once, across the process.
pub const MAX_CONCURRENT_DECODERS: usize = 64;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Why a body cannot be decoded.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("the `{0}` content coding is not one lap can decode (gzip, deflate, br and zstd are)")]
    Unsupported(String),
    #[error("the body is layered with more than {MAX_CODINGS} codings")]
    TooManyCodings,
    #[error(
        "the decoded body passed the decompression limit ({0}); it was cut here\nhint: a response this large or this compressible looks like a decompression bomb"
    )]
    Bomb(&'static str),
    #[error("the `{coding}` body is corrupt: {source}")]
    Corrupt { coding: String, source: std::io::Error },
    #[error("reading the body failed: {0}")]
    Read(String),
}

/// One content coding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Coding {
    Gzip,
    /// `deflate`: zlib (RFC 1950) as the standard says, or raw deflate, told apart by its header.
    Deflate,
    Brotli,
    Zstd,
}

impl Coding {
    /// The coding a header token names; `None` for `identity` (and `chunked`, which hyper undoes).
    pub fn parse(token: &str) -> Result<Option<Coding>, DecodeError> {
        match token.trim().to_ascii_lowercase().as_str() {
            "" | "identity" | "chunked" => Ok(None),
            "gzip" | "x-gzip" => Ok(Some(Coding::Gzip)),
            "deflate" => Ok(Some(Coding::Deflate)),
            "br" => Ok(Some(Coding::Brotli)),
            "zstd" => Ok(Some(Coding::Zstd)),
            other => Err(DecodeError::Unsupported(other.to_owned())),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Coding::Gzip => "gzip",
            Coding::Deflate => "deflate",
            Coding::Brotli => "br",
            Coding::Zstd => "zstd",
        }
    }
}

/// The codings of a message's body in the order they were applied: `Content-Encoding`, then
/// `Transfer-Encoding` (all but `chunked`). Empty when the body is not encoded.
pub fn codings(headers: &HeaderMap) -> Result<Vec<Coding>, DecodeError> {
    let mut out = Vec::new();
    for name in [header::CONTENT_ENCODING, header::TRANSFER_ENCODING] {
        for value in headers.get_all(&name) {
            let value = value
                .to_str()
                .map_err(|_| DecodeError::Unsupported(String::from_utf8_lossy(value.as_bytes()).into_owned()))?;
            for token in value.split(',') {
                if let Some(coding) = Coding::parse(token)? {
                    out.push(coding);
                }
            }
        }
    }
    if out.len() > MAX_CODINGS {
        return Err(DecodeError::TooManyCodings);
    }
    Ok(out)
}

/// The head of a message whose body is passed on decoded: no `Content-Encoding`, no length (the
/// decoded body streams) and no `Transfer-Encoding` (hyper frames what it sends itself).
pub fn strip_codings(headers: &mut HeaderMap) {
    headers.remove(header::CONTENT_ENCODING);
    headers.remove(header::CONTENT_LENGTH);
    headers.remove(header::TRANSFER_ENCODING);
}

/// A reader that undoes `codings` (applied in that order) from `source`.
pub fn reader<'a>(source: impl Read + Send + 'a, codings: &[Coding]) -> Result<Box<dyn Read + Send + 'a>, DecodeError> {
    let mut reader: Box<dyn Read + Send + 'a> = Box::new(source);
    for &coding in codings.iter().rev() {
        reader = match coding {
            Coding::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(BufReader::new(reader))),
            Coding::Deflate => Box::new(Deflate::new(reader)),
            Coding::Brotli => Box::new(brotli_decompressor::Decompressor::new(reader, CHUNK)),
            Coding::Zstd => Box::new(Zstd::new(reader)),
        };
    }
    Ok(reader)
}

/// The source of a `deflate` body, with the two bytes read to tell zlib from raw put back.
type Peeked<R> = BufReader<std::io::Chain<std::io::Cursor<Vec<u8>>, R>>;

/// `deflate`: zlib or raw, decided by the first two bytes.
enum Deflate<R: Read> {
    Undecided(Option<R>),
    Zlib(flate2::bufread::ZlibDecoder<Peeked<R>>),
    Raw(flate2::bufread::DeflateDecoder<Peeked<R>>),
}

impl<R: Read> Deflate<R> {
    fn new(source: R) -> Self {
        Deflate::Undecided(Some(source))
    }
}

impl<R: Read> Read for Deflate<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        loop {
            match self {
                Deflate::Zlib(d) => return d.read(buf),
                Deflate::Raw(d) => return d.read(buf),
                Deflate::Undecided(source) => {
                    let Some(mut source) = source.take() else {
                        return Ok(0);
                    };
                    let mut head = Vec::with_capacity(2);
                    while head.len() < 2 {
                        let mut byte = [0u8; 1];
                        match source.read(&mut byte) {
                            Ok(0) => break,
                            Ok(_) => head.push(byte[0]),
                            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                            Err(e) => return Err(e),
                        }
                    }
                    // RFC 1950: CM = 8 (deflate), and the 16-bit header is a multiple of 31.
                    let zlib = head.len() == 2
                        && head[0] & 0x0f == 8
                        && (u16::from(head[0]) << 8 | u16::from(head[1])) % 31 == 0;
                    let peeked = BufReader::new(std::io::Cursor::new(head).chain(source));
                    *self = if zlib {
                        Deflate::Zlib(flate2::bufread::ZlibDecoder::new(peeked))
                    } else {
                        Deflate::Raw(flate2::bufread::DeflateDecoder::new(peeked))
                    };
                }
            }
        }
    }
}

/// zstd: one frame after another (RFC 8878 §3), with the window bounded.
struct Zstd<R: Read> {
    source: Option<BufReader<R>>,
    frame: Option<ruzstd::decoding::StreamingDecoder<BufReader<R>, ruzstd::decoding::FrameDecoder>>,
}

impl<R: Read> Zstd<R> {
    fn new(source: R) -> Self {
        Self {
            source: Some(BufReader::new(source)),
            frame: None,
        }
    }
}

impl<R: Read> Read for Zstd<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        loop {
            if let Some(frame) = &mut self.frame {
                let n = frame.read(buf)?;
                if n > 0 || buf.is_empty() {
                    return Ok(n);
                }
                let done = self.frame.take().expect("just read");
                self.source = Some(done.into_inner());
            }
            let Some(mut source) = self.source.take() else {
                return Ok(0);
            };
            if source.fill_buf()?.is_empty() {
                return Ok(0);
            }
            match ruzstd::decoding::StreamingDecoder::new_with_max_window_size(source, MAX_ZSTD_WINDOW) {
                Ok(frame) => self.frame = Some(frame),
                Err(err) => return Err(std::io::Error::other(err.to_string())),
            }
        }
    }
}

/// The async body's data, read by a decoder on the blocking pool.
struct ChannelReader {
    rx: mpsc::Receiver<Result<Bytes, String>>,
    current: Bytes,
    /// Encoded bytes read so far, for the ratio check.
    read: Arc<std::sync::atomic::AtomicU64>,
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.current.is_empty() {
            match self.rx.blocking_recv() {
                Some(Ok(bytes)) => self.current = bytes,
                Some(Err(err)) => return Err(std::io::Error::other(err)),
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current.split_to(n));
        self.read.fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
        Ok(n)
    }
}

static DECODERS: Semaphore = Semaphore::const_new(MAX_CONCURRENT_DECODERS);

/// A body with `codings` undone, bounded as the module doc says. Trailers of the encoded body
/// follow the decoded data.
pub struct DecodedBody {
    rx: mpsc::Receiver<Result<Bytes, DecodeError>>,
    trailers: Arc<Mutex<Option<HeaderMap>>>,
    pump: tokio::task::JoinHandle<()>,
    done: bool,
}

impl DecodedBody {
    /// Starts decoding `body` (must be called inside a tokio runtime). With no codings, the data is
    /// passed through as it is.
    pub fn new<B>(body: B, codings: Vec<Coding>) -> Self
    where
        B: Body<Data = Bytes> + Send + Unpin + 'static,
        B::Error: std::fmt::Display + Send,
    {
        let (in_tx, in_rx) = mpsc::channel::<Result<Bytes, String>>(CHANNEL_DEPTH);
        let (out_tx, out_rx) = mpsc::channel(CHANNEL_DEPTH);
        let trailers = Arc::new(Mutex::new(None));
        let kept = trailers.clone();
        let pump = tokio::spawn(async move {
            let Ok(permit) = DECODERS.acquire().await else {
                return;
            };
            let read = Arc::new(std::sync::atomic::AtomicU64::new(0));
            let source = ChannelReader {
                rx: in_rx,
                current: Bytes::new(),
                read: read.clone(),
            };
            let decoder = tokio::task::spawn_blocking(move || decode(source, &codings, read, out_tx));
            feed(body, in_tx, kept).await;
            let _ = decoder.await;
            drop(permit);
        });
        Self {
            rx: out_rx,
            trailers,
            pump,
            done: false,
        }
    }
}

/// Feeds the encoded body to the decoder; keeps its trailers.
async fn feed<B>(mut body: B, tx: mpsc::Sender<Result<Bytes, String>>, trailers: Arc<Mutex<Option<HeaderMap>>>)
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: std::fmt::Display + Send,
{
    use http_body_util::BodyExt;
    while let Some(frame) = body.frame().await {
        let sent = match frame {
            Ok(frame) => match frame.into_data() {
                Ok(data) => tx.send(Ok(data)).await,
                Err(frame) => {
                    if let Ok(t) = frame.into_trailers() {
                        *trailers.lock().unwrap_or_else(|p| p.into_inner()) = Some(t);
                    }
                    Ok(())
                }
            },
            Err(err) => {
                let _ = tx.send(Err(err.to_string())).await;
                return;
            }
        };
        if sent.is_err() {
            return;
        }
    }
}

/// The decoding thread: reads decoded chunks, checks the bomb limits, sends them on.
fn decode(
    source: ChannelReader,
    codings: &[Coding],
    read: Arc<std::sync::atomic::AtomicU64>,
    out: mpsc::Sender<Result<Bytes, DecodeError>>,
) {
    let named = codings.iter().map(|c| c.name()).collect::<Vec<_>>().join(", ");
    let mut reader = match reader(source, codings) {
        Ok(reader) => reader,
        Err(err) => {
            let _ = out.blocking_send(Err(err));
            return;
        }
    };
    let mut total: u64 = 0;
    loop {
        let mut buf = vec![0u8; CHUNK];
        let n = match reader.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => n,
            Err(err) if err.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(err) => {
                let _ = out.blocking_send(Err(DecodeError::Corrupt {
                    coding: named,
                    source: err,
                }));
                return;
            }
        };
        total += n as u64;
        let encoded = read.load(std::sync::atomic::Ordering::Relaxed).max(1);
        let verdict = if total > MAX_DECODED_BYTES {
            Err(DecodeError::Bomb("more than MAX_DECODED_BYTES decoded"))
        } else if total > RATIO_FLOOR && total / encoded > MAX_RATIO {
            Err(DecodeError::Bomb("more than MAX_RATIO decoded bytes per encoded byte"))
        } else {
            buf.truncate(n);
            Ok(Bytes::from(buf))
        };
        let stop = verdict.is_err();
        if out.blocking_send(verdict).is_err() || stop {
            return;
        }
    }
}

impl Drop for DecodedBody {
    fn drop(&mut self) {
        self.pump.abort();
    }
}

impl Body for DecodedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if self.done {
            return Poll::Ready(None);
        }
        match self.rx.poll_recv(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Some(Ok(data))) => Poll::Ready(Some(Ok(Frame::data(data)))),
            Poll::Ready(Some(Err(err))) => {
                self.done = true;
                Poll::Ready(Some(Err(Box::new(err))))
            }
            Poll::Ready(None) => {
                self.done = true;
                match self.trailers.lock().unwrap_or_else(|p| p.into_inner()).take() {
                    Some(trailers) => Poll::Ready(Some(Ok(Frame::trailers(trailers)))),
                    None => Poll::Ready(None),
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use http_body_util::{BodyExt, Full, StreamBody};
    use hyper::header::HeaderValue;

    use super::*;

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    fn zlib(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    fn raw_deflate(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    fn zstd(data: &[u8]) -> Vec<u8> {
        ruzstd::encoding::compress_to_vec(data, ruzstd::encoding::CompressionLevel::Fastest)
    }

    /// A valid brotli stream of uncompressed meta-blocks (RFC 7932 §9.2): no encoder needed.
    fn brotli_stored(data: &[u8]) -> Vec<u8> {
        // WBITS = 16 is the single bit 0; each meta-block header then follows bit-packed.
        let mut out = Vec::new();
        let mut first = true;
        for block in data.chunks(1 << 16) {
            // ISLAST = 0, MNIBBLES = 4 (code 0), MLEN - 1 in 16 bits, ISUNCOMPRESSED = 1.
            let header: u32 = ((block.len() as u32 - 1) << 3) | (1 << 19);
            let header = if first { header << 1 } else { header };
            let bits = if first { 21 } else { 20 };
            out.extend_from_slice(&header.to_le_bytes()[..(bits as usize).div_ceil(8)]);
            out.extend_from_slice(block);
            first = false;
        }
        // ISLAST = 1, ISLASTEMPTY = 1 (after the WBITS bit when nothing came before).
        out.push(if first { 0b110 } else { 0b11 });
        out
    }

    async fn decode_all(encoded: Vec<u8>, codings: Vec<Coding>, piece: usize) -> Result<Vec<u8>, String> {
        let chunks: Vec<Result<Frame<Bytes>, std::convert::Infallible>> = encoded
            .chunks(piece.max(1))
            .map(|c| Ok(Frame::data(Bytes::copy_from_slice(c))))
            .collect();
        let body = StreamBody::new(futures_util::stream::iter(chunks));
        let mut decoded = DecodedBody::new(body, codings);
        let mut out = Vec::new();
        while let Some(frame) = decoded.frame().await {
            match frame {
                Ok(frame) => out.extend_from_slice(&frame.into_data().unwrap_or_default()),
                Err(err) => return Err(err.to_string()),
            }
        }
        Ok(out)
    }

    fn sample() -> Vec<u8> {
        (0..20_000u32)
            .flat_map(|i| format!("line {i} token ghp_x\n").into_bytes())
            .collect()
    }

    #[tokio::test]
    async fn every_coding_is_decoded_in_any_chunking() {
        let data = sample();
        let cases = [
            (gzip(&data), Coding::Gzip),
            (zlib(&data), Coding::Deflate),
            (raw_deflate(&data), Coding::Deflate),
            (brotli_stored(&data), Coding::Brotli),
            (zstd(&data), Coding::Zstd),
        ];
        for (encoded, coding) in cases {
            for piece in [1, 7, 4096, encoded.len()] {
                if piece == 1 && encoded.len() > 100_000 {
                    continue;
                }
                let out = decode_all(encoded.clone(), vec![coding], piece).await.unwrap();
                assert!(out == data, "{coding:?} in pieces of {piece}");
            }
        }
        let small = b"{\"token\":\"sk-abcdefgh12345678\"}".to_vec();
        for (encoded, coding) in [
            (gzip(&small), Coding::Gzip),
            (zlib(&small), Coding::Deflate),
            (brotli_stored(&small), Coding::Brotli),
            (zstd(&small), Coding::Zstd),
        ] {
            assert_eq!(decode_all(encoded, vec![coding], 1).await.unwrap(), small, "{coding:?}");
        }
    }

    #[tokio::test]
    async fn layered_and_concatenated_codings_are_undone_in_reverse() {
        let data = b"hello, layered world".to_vec();
        let twice = zstd(&gzip(&data));
        assert_eq!(
            decode_all(twice, vec![Coding::Gzip, Coding::Zstd], 3).await.unwrap(),
            data
        );
        let members = [gzip(b"one "), gzip(b"two")].concat();
        assert_eq!(decode_all(members, vec![Coding::Gzip], 5).await.unwrap(), b"one two");
        let frames = [zstd(b"one "), zstd(b"two")].concat();
        assert_eq!(decode_all(frames, vec![Coding::Zstd], 5).await.unwrap(), b"one two");
    }

    #[tokio::test]
    async fn a_decompression_bomb_is_cut_with_an_error() {
        let bomb = gzip(&vec![0u8; 8 << 20]);
        assert!(
            bomb.len() < (8 << 20) / MAX_RATIO as usize,
            "the test needs a real bomb"
        );
        let err = decode_all(bomb, vec![Coding::Gzip], 64 * 1024).await.unwrap_err();
        assert!(err.contains("decompression limit"), "{err}");
    }

    #[tokio::test]
    async fn a_corrupt_body_ends_in_an_error_naming_the_coding() {
        let mut broken = gzip(&sample());
        broken.truncate(broken.len() / 2);
        let err = decode_all(broken, vec![Coding::Gzip], 1000).await.unwrap_err();
        assert!(err.contains("gzip"), "{err}");
        let err = decode_all(b"not zstd at all".to_vec(), vec![Coding::Zstd], 4)
            .await
            .unwrap_err();
        assert!(err.contains("zstd"), "{err}");
    }

    #[tokio::test]
    async fn trailers_follow_the_decoded_data() {
        let mut trailers = HeaderMap::new();
        trailers.insert("grpc-status", HeaderValue::from_static("0"));
        let frames: Vec<Result<Frame<Bytes>, std::convert::Infallible>> = vec![
            Ok(Frame::data(Bytes::from(gzip(b"data")))),
            Ok(Frame::trailers(trailers)),
        ];
        let decoded = DecodedBody::new(StreamBody::new(futures_util::stream::iter(frames)), vec![Coding::Gzip]);
        let collected = decoded.collect().await.unwrap();
        assert_eq!(collected.trailers().unwrap()["grpc-status"], "0");
        let plain = DecodedBody::new(Full::new(Bytes::from_static(b"as is")), Vec::new());
        assert_eq!(plain.collect().await.unwrap().to_bytes(), "as is");
    }

    #[test]
    fn codings_come_from_both_headers_in_the_order_applied() {
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        headers.insert(header::TRANSFER_ENCODING, HeaderValue::from_static("zstd, chunked"));
        assert_eq!(codings(&headers).unwrap(), vec![Coding::Gzip, Coding::Zstd]);
        strip_codings(&mut headers);
        assert!(headers.get(header::CONTENT_ENCODING).is_none());
        assert!(headers.get(header::TRANSFER_ENCODING).is_none());
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_ENCODING, HeaderValue::from_static("Identity"));
        assert!(codings(&headers).unwrap().is_empty());
        headers.insert(header::CONTENT_ENCODING, HeaderValue::from_static("compress"));
        assert!(matches!(codings(&headers), Err(DecodeError::Unsupported(c)) if c == "compress"));
        headers.insert(
            header::CONTENT_ENCODING,
            HeaderValue::from_static("gzip, gzip, br, zstd"),
        );
        assert!(matches!(codings(&headers), Err(DecodeError::TooManyCodings)));
    }
}
