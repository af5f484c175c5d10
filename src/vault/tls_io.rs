//! How the vault's two TLS legs meet their sockets, shaped for bulk transfers.
//!
//! Left alone, rustls asks its socket for 4 KiB at a time (a quarter of a full record) and
//! tokio-rustls hands its reader one decrypted record per read. The vault relays every byte twice,
//! so both multiply its per-chunk costs: system calls, a hop between the two connections' tasks,
//! a chunk header and a write per 16 KiB. Here:
//! - [`transport`] puts a [`TLS_READ_BUFFER`] under the TLS stream, so one read takes several
//!   records off the socket;
//! - [`Coalesce`] keeps reading decrypted records into the caller's buffer while more are ready
//!   without waiting, so hyper sees (and passes on) chunks as large as its buffer;
//! - [`TLS_WRITE_BUFFER`] lets one write take a whole chunk with its framing: at rustls's default
//!   (64 KiB) a 64 KiB chunk's last bytes and trailing CRLF went out as a second, tiny record and a
//!   second system call.
//!
//! Neither changes what is read, only how much per call; an error met after some bytes were read is
//! kept for the next call, never dropped.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, BufReader, ReadBuf};

/// How much of a TLS peer's bytes one read takes off a socket: four full records.
pub const TLS_READ_BUFFER: usize = 64 * 1024;

/// How much encrypted data may wait to be sent on one TLS connection (rustls's buffer limit): the
/// most a slow reader makes the vault hold per connection.
pub const TLS_WRITE_BUFFER: usize = 256 * 1024;

/// A TLS connection's transport: `io` read through [`TLS_READ_BUFFER`] (writes go straight through).
pub fn transport<T: AsyncRead>(io: T) -> BufReader<T> {
    BufReader::with_capacity(TLS_READ_BUFFER, io)
}

/// A stream whose reads fill the caller's buffer with everything already readable.
pub struct Coalesce<S> {
    inner: S,
    /// An error met after a read had bytes to return: returned by the next read.
    deferred: Option<io::Error>,
}

impl<S> Coalesce<S> {
    pub fn new(inner: S) -> Self {
        Self { inner, deferred: None }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Coalesce<S> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Some(err) = this.deferred.take() {
            return Poll::Ready(Err(err));
        }
        let start = buf.filled().len();
        loop {
            let before = buf.filled().len();
            match Pin::new(&mut this.inner).poll_read(cx, buf) {
                Poll::Ready(Ok(())) if buf.filled().len() == before => return Poll::Ready(Ok(())),
                Poll::Ready(Ok(())) if buf.remaining() == 0 => return Poll::Ready(Ok(())),
                Poll::Ready(Ok(())) => continue,
                Poll::Ready(Err(err)) if buf.filled().len() == start => return Poll::Ready(Err(err)),
                Poll::Ready(Err(err)) => {
                    this.deferred = Some(err);
                    return Poll::Ready(Ok(()));
                }
                // Pending with bytes in hand: they go now (the waker stays registered, so the next
                // arrival is not missed).
                Poll::Pending if buf.filled().len() > start => return Poll::Ready(Ok(())),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Coalesce<S> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A reader that yields one piece per read, an empty piece being one `Pending` (nothing more
    /// until the peer sends), and an error where the list has one: what a TLS stream looks like
    /// to its reader.
    struct Pieces {
        pieces: std::collections::VecDeque<Result<Vec<u8>, io::ErrorKind>>,
    }

    impl AsyncRead for Pieces {
        fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
            match self.pieces.pop_front() {
                None => Poll::Ready(Ok(())),
                Some(Err(kind)) => Poll::Ready(Err(kind.into())),
                Some(Ok(piece)) if piece.is_empty() => {
                    cx.waker().wake_by_ref();
                    Poll::Pending
                }
                Some(Ok(piece)) => {
                    let n = piece.len().min(buf.remaining());
                    buf.put_slice(&piece[..n]);
                    if n < piece.len() {
                        self.pieces.push_front(Ok(piece[n..].to_vec()));
                    }
                    Poll::Ready(Ok(()))
                }
            }
        }
    }

    fn pieces(list: Vec<Result<&[u8], io::ErrorKind>>) -> Coalesce<Pieces> {
        Coalesce::new(Pieces {
            pieces: list.into_iter().map(|p| p.map(<[u8]>::to_vec)).collect(),
        })
    }

    async fn read(stream: &mut Coalesce<Pieces>, size: usize) -> io::Result<Vec<u8>> {
        let mut buf = vec![0; size];
        let n = stream.read(&mut buf).await?;
        buf.truncate(n);
        Ok(buf)
    }

    #[tokio::test]
    async fn a_read_takes_every_piece_ready_up_to_a_wait() {
        let mut stream = pieces(vec![Ok(b"one "), Ok(b"two "), Ok(b""), Ok(b"three")]);
        assert_eq!(read(&mut stream, 64).await.unwrap(), b"one two ");
        assert_eq!(read(&mut stream, 64).await.unwrap(), b"three");
        assert_eq!(read(&mut stream, 64).await.unwrap(), b"");
    }

    #[tokio::test]
    async fn a_read_stops_when_the_buffer_is_full() {
        let mut stream = pieces(vec![Ok(b"abcd"), Ok(b"efgh")]);
        assert_eq!(read(&mut stream, 6).await.unwrap(), b"abcdef");
        assert_eq!(read(&mut stream, 6).await.unwrap(), b"gh");
    }

    #[tokio::test]
    async fn an_error_after_some_bytes_comes_with_the_next_read() {
        let mut stream = pieces(vec![
            Ok(b"last words"),
            Err(io::ErrorKind::ConnectionReset),
            Ok(b"never"),
        ]);
        assert_eq!(read(&mut stream, 64).await.unwrap(), b"last words");
        let err = read(&mut stream, 64).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::ConnectionReset);
    }

    #[tokio::test]
    async fn an_error_first_is_returned_at_once() {
        let mut stream = pieces(vec![Err(io::ErrorKind::BrokenPipe)]);
        assert_eq!(
            read(&mut stream, 64).await.unwrap_err().kind(),
            io::ErrorKind::BrokenPipe
        );
    }

    #[tokio::test]
    async fn writes_go_straight_through() {
        let (a, mut b) = tokio::io::duplex(64);
        let mut a = Coalesce::new(transport(a));
        a.write_all(b"hello").await.unwrap();
        a.flush().await.unwrap();
        let mut got = [0; 5];
        b.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"hello");
    }
}
