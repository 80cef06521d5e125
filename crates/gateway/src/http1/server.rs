//! The user role's own HTTP/1.1 server, for the requests that carry the stack's load.
//!
//! hyper's server builds a `HeaderMap` of every request, arms and boxes a header-read timer per
//! request, and encodes every response from a second `HeaderMap`; on the user gateway that was
//! more work than the proxying itself, and it kept the gateway below nginx's throughput. Here a
//! request head is parsed with httparse (hyper's own parser) and handed to the [`Handler`] as a
//! [`RawRequest`] that borrows the read buffer; an upstream's response head comes back already
//! encoded for the client (see [`super::codec::encode_client_head`]); one timer per connection
//! guards the head reads.
//!
//! Only plain requests take this path (see [`Plain`]). At the first request that is anything
//! else, or that httparse cannot parse, the connection, with every byte read from it, is handed
//! to hyper, which serves the rest of it exactly as it serves every request of the other roles
//! (and answers the malformed ones with its 4xx).

use std::convert::Infallible;
use std::future::{Future, poll_fn};
use std::io;
use std::pin::{Pin, pin};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use bytes::{Buf, Bytes};
use http::Method;
use http::header::{HeaderMap, HeaderName, HeaderValue};
use http_body_util::BodyExt;
use hyper::body::{Body as _, Incoming};
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::Instant;

use super::client::UpstreamBody;
use super::codec::{MAX_BODY, MAX_FIELDS, Plain, encode_local_head};
use super::conn::Conn;
use super::timer::LazyTimer;

/// Largest request head served here (hyper's read buffer takes larger ones).
const MAX_HEAD: usize = 64 * 1024;

/// A request as this server parsed it; its parts borrow the connection's read buffer.
pub struct RawRequest<'a> {
    pub method: Method,
    /// Origin-form target: the path and query exactly as the client sent them.
    pub target: &'a str,
    pub fields: &'a [httparse::Header<'a>],
    /// The whole body (its `Content-Length` is among `fields`).
    pub body: &'a [u8],
    /// The client asked for the connection to close after this exchange.
    pub close: bool,
}

impl RawRequest<'_> {
    /// The path, without the query.
    pub fn path(&self) -> &str {
        self.target.split_once('?').map_or(self.target, |(path, _)| path)
    }

    /// The value of the first field named `name` (lowercase).
    pub fn field(&self, name: &str) -> Option<&[u8]> {
        self.fields.iter().find(|f| f.name.eq_ignore_ascii_case(name)).map(|f| f.value)
    }

    /// The fields as a `HeaderMap`, for the few readers that need one (trace propagation
    /// when spans are exported); fields a `HeaderMap` cannot hold are left out.
    pub fn header_map(&self) -> HeaderMap {
        let mut headers = HeaderMap::with_capacity(self.fields.len());
        for field in self.fields {
            if let (Ok(name), Ok(value)) =
                (HeaderName::from_bytes(field.name.as_bytes()), HeaderValue::from_bytes(field.value))
            {
                headers.append(name, value);
            }
        }
        headers
    }
}

/// What answers a request: a response made here, or an upstream's, whose head is already
/// encoded for the client.
pub enum Reply<G> {
    Local(Body),
    Upstream {
        head: Vec<u8>,
        body: UpstreamBody,
        /// The body is sent chunked (the head says so).
        chunked: bool,
        /// Held until the body has been relayed (the upstream pool slot).
        guard: G,
    },
}

/// What serves the requests of one client connection: the plain ones as this server parsed
/// them, the rest as hyper parsed them. Cloned for each request hyper serves.
pub trait Handler: Clone + Send + Sync + 'static {
    /// Held while an upstream body is relayed.
    type Guard: Send + 'static;

    /// Answers a plain request; `timer` is the connection's, for the upstream budget.
    fn serve(
        &self,
        req: &RawRequest<'_>,
        timer: &mut LazyTimer,
    ) -> impl Future<Output = http::Response<Reply<Self::Guard>>> + Send;

    /// Answers a request hyper parsed, once the connection is hyper's.
    fn serve_hyper(&self, req: http::Request<Incoming>) -> impl Future<Output = axum::response::Response> + Send;
}

/// Serves one accepted client connection on its own task: here while its requests are plain,
/// then by hyper. Holds `live` while it runs (see `service_kit::server::wait_for_drain`).
pub fn spawn<H: Handler>(
    stream: TcpStream,
    handler: H,
    settings: Settings,
    stop: &watch::Receiver<bool>,
    live: &watch::Receiver<()>,
) {
    let mut stop = stop.clone();
    let live = live.clone();
    tokio::spawn(async move {
        let _live = live;
        serve_connection(stream, handler, &settings, &mut stop).await;
    });
}

/// Serves one client connection, over any transport, until it ends.
pub async fn serve_connection<S, H>(stream: S, handler: H, settings: &Settings, stop: &mut watch::Receiver<bool>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    H: Handler,
{
    let client = Conn::with_limit(stream, MAX_HEAD + MAX_BODY);
    let End::HandOff(client) = serve(client, &handler, settings, stop).await else { return };
    let (stream, unread) = client.into_parts();
    let service = hyper::service::service_fn(move |req: http::Request<Incoming>| {
        let handler = handler.clone();
        async move { Ok::<_, Infallible>(handler.serve_hyper(req).await) }
    });
    let connection = settings.hyper.serve_connection(TokioIo::new(Rewind { unread, stream }), service).with_upgrades();
    service_kit::server::drive_connection(connection, stop).await;
}

/// How the connections of one listener are served.
#[derive(Clone)]
pub struct Settings {
    /// A client that sends no complete request head within this (counted from the end of the
    /// previous exchange) is disconnected, as hyper's `header_read_timeout` does.
    pub header_read_timeout: Duration,
    /// hyper's server, for the connections handed over.
    pub hyper: http1::Builder,
}

enum End<S> {
    Closed,
    HandOff(Conn<S>),
}

/// What became of the request at the front of the buffer.
// Returned once per request and taken apart at once: boxing the answer would allocate.
#[allow(clippy::large_enum_variant)]
enum Step<G> {
    /// Its head is not complete yet.
    Partial,
    /// Its head is complete, not all of its body has arrived.
    NeedBody,
    /// Not a plain request: hyper serves it.
    Unfit,
    Answered {
        consumed: usize,
        resp: http::Response<Reply<G>>,
        head_only: bool,
        close: bool,
    },
}

async fn serve<S: AsyncRead + AsyncWrite + Unpin, H: Handler>(
    mut client: Conn<S>,
    handler: &H,
    settings: &Settings,
    stop: &mut watch::Receiver<bool>,
) -> End<S> {
    let stop_seen = stop.clone();
    let mut stopping = pin!(service_kit::server::stopped(stop));
    let mut timer = HeadTimer { timer: LazyTimer::default(), since: None, timeout: settings.header_read_timeout };
    let mut upstream_timer = LazyTimer::default();
    // `stopping` takes a lock all connections share at every poll: it is polled once, to be
    // woken by a stop, and after that only once `stop_seen` (read without a lock) has changed.
    let mut stop_polled = false;
    // When the body of the request being read must have arrived whole.
    let mut body_deadline = None;
    loop {
        let step = if client.data().is_empty() {
            Step::Partial
        } else {
            next_request(&client, handler, &mut upstream_timer).await
        };
        match step {
            Step::Partial => {
                if client.is_full() {
                    return End::HandOff(client);
                }
                let stop = Stop { future: stopping.as_mut(), seen: &stop_seen, polled: &mut stop_polled };
                match wait_for_head(&mut client, stop, &mut timer).await {
                    Waited::Data => {}
                    Waited::Closed => return End::Closed,
                }
            }
            Step::NeedBody => {
                // As the head: a body that has not arrived whole in time ends the connection.
                let deadline = *body_deadline.get_or_insert_with(|| Instant::now() + settings.header_read_timeout);
                match tokio::time::timeout_at(deadline, Box::pin(client.fill())).await {
                    Ok(Ok(n)) if n > 0 => {}
                    _ => return End::Closed,
                }
            }
            Step::Unfit => return End::HandOff(client),
            Step::Answered { consumed, resp, head_only, close } => {
                client.consume(consumed);
                timer.since = None;
                body_deadline = None;
                match write_reply(&mut client.stream, resp, head_only, close).await {
                    Ok(()) if !close => {}
                    Ok(()) | Err(_) => return End::Closed,
                }
            }
        }
    }
}

enum Waited {
    Data,
    Closed,
}

/// Reads more of a request head; closes on end of stream, error, shutdown (only between
/// requests) or when the head takes longer than the header-read timeout.
async fn wait_for_head<S: AsyncRead + Unpin, F: Future>(
    client: &mut Conn<S>,
    mut stop: Stop<'_, '_, F>,
    timer: &mut HeadTimer,
) -> Waited {
    poll_fn(|cx| {
        // Between requests, a shutdown closes the connection as hyper's graceful shutdown does.
        if client.data().is_empty() && stop.poll_stopped(cx) {
            return Poll::Ready(Waited::Closed);
        }
        match client.poll_fill(cx) {
            Poll::Ready(Ok(n)) if n > 0 => return Poll::Ready(Waited::Data),
            Poll::Ready(_) => return Poll::Ready(Waited::Closed),
            Poll::Pending => {}
        }
        if timer.poll_expired(cx) {
            tracing::debug!("client sent no complete request head in time; closing");
            return Poll::Ready(Waited::Closed);
        }
        Poll::Pending
    })
    .await
}

/// The process's stop signal as one connection watches it.
struct Stop<'a, 'b, F> {
    /// Resolves at the stop.
    future: Pin<&'a mut F>,
    /// A receiver of the same signal, to see a change without taking a lock.
    seen: &'b watch::Receiver<bool>,
    /// `future` was polled once already: it will wake the task at the stop.
    polled: &'b mut bool,
}

impl<F: Future> Stop<'_, '_, F> {
    fn poll_stopped(&mut self, cx: &mut Context<'_>) -> bool {
        // A closed channel counts as a change: the sender is gone, as at a stop.
        if *self.polled && !self.seen.has_changed().unwrap_or(true) {
            return false;
        }
        *self.polled = true;
        self.future.as_mut().poll(cx).is_ready()
    }
}

/// The header-read timeout of one connection.
struct HeadTimer {
    timer: LazyTimer,
    /// When the head being read was first waited for.
    since: Option<Instant>,
    timeout: Duration,
}

impl HeadTimer {
    fn poll_expired(&mut self, cx: &mut Context<'_>) -> bool {
        let deadline = *self.since.get_or_insert_with(Instant::now) + self.timeout;
        self.timer.poll_passed(cx, deadline)
    }
}

/// Parses the request at the front of `client`'s buffer and, when it is plain and whole,
/// answers it.
async fn next_request<S: AsyncRead + Unpin, H: Handler>(
    client: &Conn<S>,
    handler: &H,
    timer: &mut LazyTimer,
) -> Step<H::Guard> {
    let data = client.data();
    let mut fields = [httparse::EMPTY_HEADER; MAX_FIELDS];
    let mut parsed = httparse::Request::new(&mut fields);
    let head_len = match parsed.parse(data) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Step::Partial,
        Err(_) => return Step::Unfit,
    };
    let Some(plain) = Plain::of(&parsed) else { return Step::Unfit };
    let total = head_len + plain.body_len;
    // A large head leaves less room than `MAX_BODY` for the body: a request that cannot be
    // buffered whole is hyper's, which streams its body.
    if total > client.limit() {
        return Step::Unfit;
    }
    if data.len() < total {
        return Step::NeedBody;
    }
    let (Some(method), Some(target)) = (parsed.method, parsed.path) else { return Step::Unfit };
    let Ok(method) = Method::from_bytes(method.as_bytes()) else { return Step::Unfit };
    let head_only = method == Method::HEAD;
    let req = RawRequest { method, target, fields: parsed.headers, body: &data[head_len..total], close: plain.close };
    let resp = handler.serve(&req, timer).await;
    Step::Answered { consumed: total, resp, head_only, close: plain.close }
}

/// Writes `resp` to the client; an error leaves the connection unusable.
async fn write_reply<S: AsyncWrite + Unpin, G>(
    stream: &mut S,
    resp: http::Response<Reply<G>>,
    head_only: bool,
    close: bool,
) -> io::Result<()> {
    let (parts, reply) = resp.into_parts();
    match reply {
        Reply::Local(body) => {
            let body = match body.collect().await {
                Ok(collected) => collected.to_bytes(),
                Err(err) => return Err(io::Error::other(err)),
            };
            let mut out = Vec::with_capacity(256 + body.len());
            encode_local_head(parts.status, &parts.headers, body.len(), close, &mut out);
            if !head_only {
                out.extend_from_slice(&body);
            }
            stream.write_all(&out).await
        }
        Reply::Upstream { mut head, mut body, chunked, guard } => {
            if body.take_buffered(&mut head) {
                drop(guard);
                return stream.write_all(&head).await;
            }
            relay(stream, head, &mut body, chunked).await?;
            drop(guard);
            Ok(())
        }
    }
}

/// Relays an upstream body that has not all arrived yet, after `out` (the head), writing
/// whatever is at hand before waiting for more.
async fn relay<S: AsyncWrite + Unpin>(
    stream: &mut S,
    mut out: Vec<u8>,
    body: &mut UpstreamBody,
    chunked: bool,
) -> io::Result<()> {
    loop {
        let frame = match poll_fn(|cx| Poll::Ready(Pin::new(&mut *body).poll_frame(cx))).await {
            Poll::Ready(frame) => frame,
            Poll::Pending => {
                stream.write_all(&out).await?;
                out.clear();
                body.frame().await
            }
        };
        let data = match frame {
            None => break,
            Some(Ok(frame)) => frame.into_data().unwrap_or_default(),
            Some(Err(err)) => {
                tracing::debug!(error = %err, "upstream body failed midway; closing the client connection");
                return Err(io::Error::other(err));
            }
        };
        if data.is_empty() {
            continue;
        }
        if chunked {
            out.extend_from_slice(format!("{:x}\r\n", data.len()).as_bytes());
            out.extend_from_slice(&data);
            out.extend_from_slice(b"\r\n");
        } else {
            out.extend_from_slice(&data);
        }
    }
    if chunked {
        out.extend_from_slice(b"0\r\n\r\n");
    }
    stream.write_all(&out).await
}

/// A client connection handed to hyper: the bytes read already come first.
struct Rewind<S> {
    unread: Bytes,
    stream: S,
}

impl<S: AsyncRead + Unpin> AsyncRead for Rewind<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        if self.unread.is_empty() {
            return Pin::new(&mut self.stream).poll_read(cx, buf);
        }
        let n = self.unread.len().min(buf.remaining());
        buf.put_slice(&self.unread[..n]);
        self.unread.advance(n);
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Rewind<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}
