//! One connection and the bytes read from it that are not consumed yet, for both hops: the
//! server's client connections and the client's upstream connections.

use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use tokio::io::{AsyncRead, ReadBuf};
use tokio::net::TcpStream;

/// Read buffer of a connection; it grows (to the connection's limit) only for a message that
/// does not fit.
const READ_BUF: usize = 8 * 1024;

/// A connection and its unconsumed bytes (`buf[start..end]`).
pub(crate) struct Conn<S = TcpStream> {
    pub(crate) stream: S,
    buf: Vec<u8>,
    start: usize,
    end: usize,
    /// Most bytes buffered at once.
    limit: usize,
}

impl<S: AsyncRead + Unpin> Conn<S> {
    /// A connection that buffers up to `limit` bytes (a head, and a body kept for a retry).
    pub(crate) fn with_limit(stream: S, limit: usize) -> Self {
        Self { stream, buf: vec![0; READ_BUF], start: 0, end: 0, limit }
    }

    pub(crate) fn data(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }

    /// The stream and the bytes read from it but not consumed.
    pub(crate) fn into_parts(self) -> (S, Bytes) {
        let unread = Bytes::copy_from_slice(self.data());
        (self.stream, unread)
    }

    pub(crate) fn consume(&mut self, n: usize) {
        self.start += n;
        if self.start >= self.end {
            self.start = 0;
            self.end = 0;
        }
    }

    /// Most bytes buffered at once.
    pub(crate) fn limit(&self) -> usize {
        self.limit
    }

    /// Whether [`Conn::poll_fill`] can read more without going over the limit.
    pub(crate) fn is_full(&self) -> bool {
        self.start == 0 && self.end == self.limit
    }

    /// Reads more bytes after those buffered; `Ok(0)` is the end of the stream.
    pub(crate) fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        if self.end == self.buf.len() {
            if self.start > 0 {
                self.buf.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
            } else if self.buf.len() < self.limit {
                let grown = (self.buf.len() * 2).min(self.limit);
                self.buf.resize(grown, 0);
            } else {
                return Poll::Ready(Err(io::Error::other("message head too large")));
            }
        }
        let mut read = ReadBuf::new(&mut self.buf[self.end..]);
        ready!(Pin::new(&mut self.stream).poll_read(cx, &mut read))?;
        let n = read.filled().len();
        self.end += n;
        Poll::Ready(Ok(n))
    }

    pub(crate) async fn fill(&mut self) -> io::Result<usize> {
        poll_fn(|cx| self.poll_fill(cx)).await
    }
}

impl Conn<TcpStream> {
    /// An idle connection is usable if the peer sent nothing since its last message: no end
    /// of stream, no stray bytes. Reads the reactor's readiness, no system call.
    pub(crate) fn is_quiet(&mut self) -> bool {
        let mut cx = Context::from_waker(std::task::Waker::noop());
        self.start == self.end && self.stream.poll_read_ready(&mut cx).is_pending()
    }
}
