//! The user role's own HTTP/1.1 server, for the requests that carry the stack's load.
//!
//! hyper's server builds a `HeaderMap` of every request, arms and boxes a header-read timer per
//! request, and encodes every response from a second `HeaderMap`; on the user gateway that was
//! more work than the proxying itself, and it kept the gateway below nginx's throughput. Here a
//! request head is parsed with httparse (hyper's own parser) and its fields are written
//! straight into the upstream request; the upstream's response head is written straight into
//! the client's (see [`crate::upstream::encode_client_head`]); one timer per connection
//! guards the head reads.
//!
//! Only plain requests take this path: HTTP/1.1 in origin form, a body of at most
//! [`MAX_BODY`] bytes framed by a single `Content-Length`, no `Transfer-Encoding`, `Expect` or
//! `Upgrade`, a `Connection` of `keep-alive` or `close`, at most [`MAX_FIELDS`] fields. At the
//! first request that is anything else, or that httparse cannot parse, the connection, with
//! every byte read from it, is handed to hyper, which serves the rest of it exactly as it
//! served every request before (and answers the malformed ones with its 4xx).

use std::convert::Infallible;
use std::future::{Future, poll_fn};
use std::io;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use bytes::{Buf, Bytes};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, StatusCode};
use http_body_util::BodyExt;
use hyper::body::{Body as _, Incoming};
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::{Instant, Sleep};

use crate::pool::Slot;
use crate::routes::user::UserFront;
use crate::upstream::{Conn, UpstreamBody, tokens, write_field, write_status_line};

/// Largest request body served here; a larger one goes to hyper, which streams it.
pub const MAX_BODY: usize = 64 * 1024;

/// Largest request head served here (hyper's read buffer takes larger ones).
const MAX_HEAD: usize = 64 * 1024;

/// Most header fields of a request served here (hyper takes up to 100).
pub const MAX_FIELDS: usize = 32;

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
pub enum Reply {
    Local(Body),
    Upstream {
        head: Vec<u8>,
        body: UpstreamBody,
        /// The body is sent chunked (the head says so).
        chunked: bool,
        /// The upstream pool slot, held until the body has been relayed.
        slot: Slot,
    },
}

/// Serves one accepted client connection of the user role on its own task: here while its
/// requests are plain, then by hyper. Holds `live` while it runs (see
/// `service_kit::server::wait_for_drain`).
pub fn spawn(
    stream: TcpStream,
    front: Arc<UserFront>,
    peer_ip: HeaderValue,
    settings: Settings,
    stop: &watch::Receiver<bool>,
    live: &watch::Receiver<()>,
) {
    let mut stop = stop.clone();
    let live = live.clone();
    tokio::spawn(async move {
        let _live = live;
        let client = Conn::with_limit(stream, MAX_HEAD + MAX_BODY);
        let End::HandOff(client) = serve(client, &front, &peer_ip, &settings, &mut stop).await else { return };
        let (stream, unread) = client.into_parts();
        let service = hyper_service(front, peer_ip);
        let connection =
            settings.hyper.serve_connection(TokioIo::new(Rewind { unread, stream }), service).with_upgrades();
        service_kit::server::drive_connection(connection, &mut stop).await;
    });
}

/// The hyper service that serves the user role's requests this server hands over.
pub fn hyper_service(
    front: Arc<UserFront>,
    peer_ip: HeaderValue,
) -> impl hyper::service::Service<
    http::Request<Incoming>,
    Response = axum::response::Response,
    Error = Infallible,
    Future = impl Future<Output = Result<axum::response::Response, Infallible>> + Send,
> + Clone {
    hyper::service::service_fn(move |req: http::Request<Incoming>| {
        let (front, peer_ip) = (front.clone(), peer_ip.clone());
        async move { Ok::<_, Infallible>(front.handle(req, &peer_ip).await) }
    })
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

enum End {
    Closed,
    HandOff(Conn),
}

/// What became of the request at the front of the buffer.
// Returned once per request and taken apart at once: boxing the answer would allocate.
#[allow(clippy::large_enum_variant)]
enum Step {
    /// Its head is not complete yet.
    Partial,
    /// Its head is complete, not all of its body has arrived.
    NeedBody,
    /// Not a plain request: hyper serves it.
    Unfit,
    Answered {
        consumed: usize,
        resp: http::Response<Reply>,
        head_only: bool,
        close: bool,
    },
}

async fn serve(
    mut client: Conn,
    front: &UserFront,
    peer_ip: &HeaderValue,
    settings: &Settings,
    stop: &mut watch::Receiver<bool>,
) -> End {
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
            next_request(&client, front, peer_ip, &mut upstream_timer).await
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
async fn wait_for_head<F: Future>(client: &mut Conn, mut stop: Stop<'_, '_, F>, timer: &mut HeadTimer) -> Waited {
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

/// One timer for many deadlines that come one after another (one connection's head reads, or
/// its upstream exchanges): a tokio timer armed and dropped per request cost about a tenth of
/// a proxied request's instructions. The timer stays armed; it is moved only when it fires
/// before the deadline in force (at most once per timeout period) or when a deadline comes
/// earlier than the one it is set for (a timeout lowered through `/config`).
#[derive(Default)]
pub struct LazyTimer {
    sleep: Option<Pin<Box<Sleep>>>,
}

impl LazyTimer {
    /// Whether `deadline` has passed; if not, the task is woken by then at the latest.
    pub fn poll_passed(&mut self, cx: &mut Context<'_>, deadline: Instant) -> bool {
        let sleep = self.sleep.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        if sleep.deadline() > deadline {
            sleep.as_mut().reset(deadline);
        }
        while sleep.as_mut().poll(cx).is_ready() {
            if Instant::now() >= deadline {
                return true;
            }
            sleep.as_mut().reset(deadline);
        }
        false
    }

    /// Runs `fut` until it ends (`Some`) or `deadline` passes (`None`).
    pub async fn run_until<F: Future>(&mut self, deadline: Instant, fut: F) -> Option<F::Output> {
        let mut fut = pin!(fut);
        poll_fn(|cx| {
            if let Poll::Ready(out) = fut.as_mut().poll(cx) {
                return Poll::Ready(Some(out));
            }
            if self.poll_passed(cx, deadline) { Poll::Ready(None) } else { Poll::Pending }
        })
        .await
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
async fn next_request(client: &Conn, front: &UserFront, peer_ip: &HeaderValue, timer: &mut LazyTimer) -> Step {
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
    if data.len() < total {
        return Step::NeedBody;
    }
    let (Some(method), Some(target)) = (parsed.method, parsed.path) else { return Step::Unfit };
    let Ok(method) = Method::from_bytes(method.as_bytes()) else { return Step::Unfit };
    let head_only = method == Method::HEAD;
    let req = RawRequest { method, target, fields: parsed.headers, body: &data[head_len..total], close: plain.close };
    let resp = front.handle_raw(&req, peer_ip, timer).await;
    Step::Answered { consumed: total, resp, head_only, close: plain.close }
}

/// What a plain request's head says about its framing.
struct Plain {
    body_len: usize,
    close: bool,
}

impl Plain {
    /// `None` when the request is not plain (see the module's documentation).
    fn of(parsed: &httparse::Request<'_, '_>) -> Option<Self> {
        if parsed.version != Some(1) {
            return None;
        }
        // Origin form, visible ASCII only: anything else is hyper's to judge.
        let target = parsed.path?.as_bytes();
        if target.first() != Some(&b'/') || !target.iter().all(|b| (0x21..0x7f).contains(b)) {
            return None;
        }
        let mut body_len = None;
        let mut close = false;
        for field in parsed.headers.iter() {
            let name = field.name.as_bytes();
            if name.eq_ignore_ascii_case(b"content-length") {
                // One field of digits only: a repeated or signed length is how smuggling starts.
                let digits = field.value.trim_ascii();
                if body_len.is_some()
                    || digits.is_empty()
                    || digits.len() > 19
                    || !digits.iter().all(u8::is_ascii_digit)
                {
                    return None;
                }
                body_len = std::str::from_utf8(digits).ok()?.parse::<usize>().ok();
                body_len?;
            } else if name.eq_ignore_ascii_case(b"transfer-encoding")
                || name.eq_ignore_ascii_case(b"expect")
                || name.eq_ignore_ascii_case(b"upgrade")
            {
                return None;
            } else if name.eq_ignore_ascii_case(b"connection") {
                for token in tokens(field.value) {
                    if token.eq_ignore_ascii_case(b"close") {
                        close = true;
                    } else if !token.eq_ignore_ascii_case(b"keep-alive") && !token.is_empty() {
                        // Fields named hop-by-hop by the client: hyper's path strips them.
                        return None;
                    }
                }
            }
        }
        let body_len = body_len.unwrap_or(0);
        (body_len <= MAX_BODY).then_some(Self { body_len, close })
    }
}

/// Writes `resp` to the client; an error leaves the connection unusable.
async fn write_reply(
    stream: &mut TcpStream,
    resp: http::Response<Reply>,
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
        Reply::Upstream { mut head, mut body, chunked, slot } => {
            if body.take_buffered(&mut head) {
                drop(slot);
                return stream.write_all(&head).await;
            }
            relay(stream, head, &mut body, chunked).await?;
            drop(slot);
            Ok(())
        }
    }
}

/// Relays an upstream body that has not all arrived yet, after `out` (the head), writing
/// whatever is at hand before waiting for more.
async fn relay(stream: &mut TcpStream, mut out: Vec<u8>, body: &mut UpstreamBody, chunked: bool) -> io::Result<()> {
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

/// The head of a response made here, whose body of `len` bytes follows; `date` added as hyper
/// adds it.
fn encode_local_head(status: StatusCode, headers: &HeaderMap, len: usize, close: bool, out: &mut Vec<u8>) {
    write_status_line(out, status);
    for (name, value) in headers {
        if name == header::CONTENT_LENGTH || name == header::TRANSFER_ENCODING || name == header::CONNECTION {
            continue;
        }
        write_field(out, name.as_str().as_bytes(), value.as_bytes());
    }
    if status != StatusCode::NO_CONTENT && status != StatusCode::NOT_MODIFIED {
        write_field(out, b"content-length", len.to_string().as_bytes());
    }
    if !headers.contains_key(header::DATE) {
        write_field(out, b"date", httpdate::fmt_http_date(std::time::SystemTime::now()).as_bytes());
    }
    if close {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// A client connection handed to hyper: the bytes read already come first.
struct Rewind {
    unread: Bytes,
    stream: TcpStream,
}

impl AsyncRead for Rewind {
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

impl AsyncWrite for Rewind {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn plain(raw: &[u8]) -> Option<(usize, bool)> {
        let mut fields = [httparse::EMPTY_HEADER; MAX_FIELDS];
        let mut parsed = httparse::Request::new(&mut fields);
        assert!(matches!(parsed.parse(raw), Ok(httparse::Status::Complete(_))), "{}", String::from_utf8_lossy(raw));
        Plain::of(&parsed).map(|p| (p.body_len, p.close))
    }

    #[test]
    fn only_plain_http_1_1_requests_are_served_here() {
        assert_eq!(plain(b"GET /a?b=c HTTP/1.1\r\nhost: x\r\n\r\n"), Some((0, false)));
        assert_eq!(
            plain(b"POST /a HTTP/1.1\r\nContent-Length: 12\r\nConnection: Keep-Alive, close\r\n\r\n"),
            Some((12, true))
        );
        for unfit in [
            &b"GET /a HTTP/1.0\r\n\r\n"[..],
            b"GET http://x/a HTTP/1.1\r\n\r\n",
            b"OPTIONS * HTTP/1.1\r\n\r\n",
            b"POST /a HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\n",
            b"POST /a HTTP/1.1\r\ncontent-length: 1\r\ncontent-length: 1\r\n\r\n",
            b"POST /a HTTP/1.1\r\ncontent-length: +1\r\n\r\n",
            b"POST /a HTTP/1.1\r\ncontent-length: 99999999999999999999\r\n\r\n",
            b"POST /a HTTP/1.1\r\ncontent-length: 65537\r\n\r\n",
            b"POST /a HTTP/1.1\r\nexpect: 100-continue\r\ncontent-length: 1\r\n\r\n",
            b"GET /a HTTP/1.1\r\nupgrade: websocket\r\n\r\n",
            b"GET /a HTTP/1.1\r\nconnection: x-private\r\nx-private: 1\r\n\r\n",
        ] {
            assert_eq!(plain(unfit), None, "{}", String::from_utf8_lossy(unfit));
        }
        assert_eq!(plain(b"POST /a HTTP/1.1\r\ncontent-length: 65536\r\n\r\n"), Some((MAX_BODY, false)));
    }

    #[tokio::test(start_paused = true)]
    async fn one_lazy_timer_serves_deadlines_that_move_later_and_earlier() {
        let mut timer = LazyTimer::default();
        let start = Instant::now();
        assert_eq!(timer.run_until(start + Duration::from_secs(10), async { 7 }).await, Some(7));
        // Earlier than the timer is set for (a timeout lowered): it passes then, not at 10 s.
        let passed = timer.run_until(start + Duration::from_secs(1), std::future::pending::<()>()).await;
        assert_eq!(passed, None);
        assert_eq!(Instant::now() - start, Duration::from_secs(1));
        // Later than the timer fired: the work ends first.
        let slept = timer.run_until(start + Duration::from_secs(5), tokio::time::sleep(Duration::from_secs(2))).await;
        assert_eq!(slept, Some(()));
        let passed = timer.run_until(start + Duration::from_secs(4), std::future::pending::<()>()).await;
        assert_eq!(passed, None);
        assert_eq!(Instant::now() - start, Duration::from_secs(4));
    }

    #[test]
    fn a_local_answer_carries_its_length_and_date_and_closes_when_asked() {
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from_static("999"));
        let mut out = Vec::new();
        encode_local_head(StatusCode::NOT_FOUND, &headers, 17, true, &mut out);
        let text = String::from_utf8_lossy(&out);
        assert!(
            text.starts_with(
                "HTTP/1.1 404 Not Found\r\ncontent-type: application/json\r\ncontent-length: 17\r\ndate: "
            ),
            "{text}"
        );
        assert!(text.ends_with(" GMT\r\nconnection: close\r\n\r\n"), "{text}");
        assert!(!text.contains("999"), "{text}");
    }
}
