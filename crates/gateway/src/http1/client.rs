//! Keep-alive HTTP/1.1 connections to one upstream, owned by one worker thread, and the
//! exchange of one request on them.
//!
//! A small HTTP/1.1 client of its own rather than hyper's: hyper runs every connection as a
//! task fed through channels, so each proxied request paid two task hand-offs and a body
//! channel. Here the request's own task writes the request and parses the response head
//! (with httparse, hyper's parser), and the response body reads straight from the socket as
//! the client connection sends it on; idle connections wait on a thread-local stack without
//! any task. WebSocket handshakes, which hand the connection over, still go through hyper.

use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use axum::body::Body;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::Authority;
use http::{Method, Request, Response, StatusCode, Version};
use http_body_util::BodyExt;
use hyper::body::{Bytes, Frame, Incoming, SizeHint};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use super::codec::{Chunk, Framing, encode_client_head, parse_chunk_size, tokens, write_field};
use super::conn::Conn;

/// An idle connection older than this is closed instead of reused; upstreams commonly close
/// idle keep-alive connections after a minute or so, and reusing one they closed costs a retry.
const IDLE_TIMEOUT: Duration = Duration::from_secs(50);

/// Most idle connections kept per upstream and thread; more are closed once their response is
/// done. Busy connections are bounded by `upstream.pool_size`, not here.
const MAX_IDLE: usize = 1024;

/// Largest response head accepted (hyper's default read limit is of the same order).
const MAX_HEAD: usize = 64 * 1024;

/// Most response header fields accepted (hyper's default).
const MAX_HEADERS: usize = 100;

/// Request bodies up to this size are read before the request is written, so the request can
/// be sent again when a reused connection turns out to have been closed by the upstream.
const REPLAY_LIMIT: usize = 64 * 1024;

/// Longest chunk-size or trailer line of a chunked response.
const MAX_LINE: usize = 4096;

/// Why an upstream exchange failed.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error("connect: {0}")]
    Connect(#[source] io::Error),
    #[error("io: {0}")]
    Io(#[source] io::Error),
    /// The connection was closed before any byte of a response arrived.
    #[error("the upstream closed the connection before answering")]
    Closed,
    #[error("malformed response: {0}")]
    Protocol(&'static str),
    /// Reading the request body from the client failed (too large, client gone).
    #[error("request body: {0}")]
    Body(#[source] axum::Error),
    #[error(transparent)]
    Http(#[from] hyper::Error),
}

/// An upstream response whose head [`ConnPool::exchange`] wrote for the client.
pub struct Exchanged {
    pub status: StatusCode,
    pub body: UpstreamBody,
    /// The body goes to the client chunked, as the head says (the upstream sent it chunked,
    /// or until it closed the connection).
    pub chunked: bool,
}

struct Idle {
    conn: Conn,
    since: Instant,
}

/// Idle connections to one upstream, most recently used last.
pub struct ConnPool {
    host: String,
    port: u16,
    host_header: HeaderValue,
    idle: Mutex<VecDeque<Idle>>,
}

impl std::fmt::Debug for ConnPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnPool").field("host", &self.host).field("port", &self.port).finish_non_exhaustive()
    }
}

/// Header fields the gateway sets on a forwarded request, written in place of any field of
/// the same name the request carries.
#[derive(Debug, Default, Clone, Copy)]
pub struct Extra<'a> {
    /// `x-forwarded-for`: the client's address, after the chain it sent.
    pub forwarded_for: Option<&'a [u8]>,
    /// W3C `traceparent` of the request being served.
    pub traceparent: Option<&'a [u8]>,
}

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");

/// How a request body is framed on the wire.
#[derive(Clone, Copy, PartialEq, Eq)]
enum RequestFraming {
    Empty,
    Length(u64),
    Chunked,
}

impl ConnPool {
    pub fn new(authority: &Authority) -> Self {
        // `[::1]` in a URL is `::1` to the resolver.
        let host = authority.host().trim_start_matches('[').trim_end_matches(']').to_owned();
        let host_header =
            HeaderValue::from_str(authority.as_str()).unwrap_or_else(|_| HeaderValue::from_static("upstream"));
        Self { host, port: authority.port_u16().unwrap_or(80), host_header, idle: Mutex::new(VecDeque::new()) }
    }

    /// The `Host` of requests to this upstream.
    pub fn host_header(&self) -> &HeaderValue {
        &self.host_header
    }

    /// Sends `req` (origin-form URI; its `Host` is replaced by the upstream's) on an idle
    /// connection, or a new one, and returns the response once its head has arrived. A reused
    /// connection the upstream had closed is replaced and the request sent again, when its
    /// body was small enough to be kept.
    pub async fn send(
        self: &Arc<Self>,
        req: Request<Body>,
        extra: Extra<'_>,
    ) -> Result<Response<UpstreamBody>, SendError> {
        let (parts, mut body) = req.into_parts();
        let framing = request_framing(&parts.method, &parts.headers, &body)?;
        let mut out = Vec::with_capacity(512);
        encode_head(&parts, &self.host_header, framing, extra, &mut out);
        let mut sent_body = 0u64;
        let mut body_done = framing == RequestFraming::Empty;
        while !body_done && out.len() < REPLAY_LIMIT {
            body_done = !append_frame(&mut body, framing, &mut out, &mut sent_body).await?;
        }
        let replayable = body_done;
        loop {
            let (mut conn, reused) = self.conn().await?;
            let exchanged = match conn.stream.write_all(&out).await {
                // The upstream had closed this idle connection: the request did not go out.
                Err(_) if reused && replayable => continue,
                Err(err) => Err(SendError::Io(err)),
                Ok(()) if body_done => read_head(&mut conn, &parts.method).await,
                Ok(()) => match Box::pin(stream_body(&mut conn, &mut body, framing, sent_body)).await {
                    Ok(()) => read_head(&mut conn, &parts.method).await,
                    Err(err) => Err(err),
                },
            };
            match exchanged {
                Ok(head) => return Ok(self.response(conn, head)),
                // Closed without a byte of answer, most likely as the upstream dropped an idle
                // connection: sent again only if repeating the request is harmless (as nginx).
                Err(SendError::Closed) if reused && replayable && parts.method.is_idempotent() => {}
                Err(err) => return Err(err),
            }
        }
    }

    /// [`ConnPool::send`] for a request already encoded whole, head and body, in `request`
    /// (see [`super::server`]). The response head is written to `client_head` as the client is to
    /// receive it (see [`encode_client_head`]), with `connection: close` when `client_close`;
    /// its body is left to read from the returned [`UpstreamBody`].
    pub async fn exchange(
        self: &Arc<Self>,
        request: &[u8],
        method: &Method,
        client_close: bool,
        client_head: &mut Vec<u8>,
    ) -> Result<Exchanged, SendError> {
        loop {
            let (mut conn, reused) = self.conn().await?;
            if let Err(err) = conn.stream.write_all(request).await {
                if reused {
                    continue;
                }
                return Err(SendError::Io(err));
            }
            let encode = |_: &[u8], fields: &[httparse::Header<'_>], status, framing| {
                encode_client_head(status, fields, framing, client_close, client_head);
                Ok(())
            };
            match read_head_with(&mut conn, method, encode).await {
                Ok(head) => {
                    let chunked = matches!(head.framing, Framing::Chunked(_) | Framing::UntilClose);
                    let body = self.body(conn, &head);
                    return Ok(Exchanged { status: head.status, body, chunked });
                }
                Err(SendError::Closed) if reused && method.is_idempotent() => client_head.clear(),
                Err(err) => return Err(err),
            }
        }
    }

    /// An idle connection (`true`) or a new one.
    async fn conn(&self) -> Result<(Conn, bool), SendError> {
        match self.checkout() {
            Some(conn) => Ok((conn, true)),
            // Boxed: only the requests that open a connection carry the size of its future.
            None => Ok((Box::pin(self.connect()).await?, false)),
        }
    }

    /// The body that follows `head` on `conn`; an empty one gives the connection back at once.
    fn body<H>(self: &Arc<Self>, conn: Conn, head: &Head<H>) -> UpstreamBody {
        let mut body = UpstreamBody { conn: Some(conn), pool: self.clone(), framing: head.framing, reuse: head.reuse };
        if body.framing.is_done() {
            body.finish();
        }
        body
    }

    fn response(self: &Arc<Self>, conn: Conn, head: ResponseHead) -> Response<UpstreamBody> {
        let body = self.body(conn, &head);
        let mut resp = Response::new(body);
        *resp.status_mut() = head.status;
        *resp.version_mut() = Version::HTTP_11;
        *resp.headers_mut() = head.fields;
        resp
    }

    fn checkout(&self) -> Option<Conn> {
        let mut idle = self.idle.lock().ok()?;
        while let Some(mut entry) = idle.pop_back() {
            if entry.since.elapsed() < IDLE_TIMEOUT && entry.conn.is_quiet() {
                return Some(entry.conn);
            }
        }
        None
    }

    fn put(&self, conn: Conn) {
        let Ok(mut idle) = self.idle.lock() else { return };
        // Oldest first: expired connections are closed as the stack is used.
        while idle.front().is_some_and(|entry| entry.since.elapsed() >= IDLE_TIMEOUT) {
            idle.pop_front();
        }
        if idle.len() < MAX_IDLE {
            idle.push_back(Idle { conn, since: Instant::now() });
        }
    }

    async fn connect(&self) -> Result<Conn, SendError> {
        let stream = TcpStream::connect((self.host.as_str(), self.port)).await.map_err(SendError::Connect)?;
        // Small request/response exchanges: Nagle would add up to 40 ms per hop.
        let _ = stream.set_nodelay(true);
        Ok(Conn::with_limit(stream, MAX_HEAD))
    }

    /// Sends an upgrade request (WebSocket handshake) on a connection of its own, which is
    /// never pooled: after a `101` it belongs to the tunnel.
    pub async fn send_upgrade(&self, mut req: Request<Body>) -> Result<Response<Incoming>, SendError> {
        req.headers_mut().insert(header::HOST, self.host_header.clone());
        let stream = TcpStream::connect((self.host.as_str(), self.port)).await.map_err(SendError::Connect)?;
        let _ = stream.set_nodelay(true);
        let (mut sender, connection) = http1::Builder::new().handshake(TokioIo::new(stream)).await?;
        tokio::spawn(async move {
            if let Err(err) = connection.with_upgrades().await {
                tracing::debug!(error = %err, "upstream upgrade connection ended with an error");
            }
        });
        Ok(sender.send_request(req).await?)
    }
}

/// RFC 9112 §6: a declared length is kept; a body of unknown length is sent chunked.
fn request_framing(method: &Method, headers: &HeaderMap, body: &Body) -> Result<RequestFraming, SendError> {
    if let Some(value) = headers.get(header::CONTENT_LENGTH) {
        let len = value.to_str().ok().and_then(|v| v.trim().parse().ok());
        return len.map(RequestFraming::Length).ok_or(SendError::Protocol("invalid request content-length"));
    }
    if hyper::body::Body::is_end_stream(body) {
        return Ok(if method_carries_body(method) { RequestFraming::Length(0) } else { RequestFraming::Empty });
    }
    Ok(match hyper::body::Body::size_hint(body).exact() {
        Some(len) => RequestFraming::Length(len),
        None => RequestFraming::Chunked,
    })
}

fn method_carries_body(method: &Method) -> bool {
    *method == Method::POST || *method == Method::PUT || *method == Method::PATCH
}

/// Writes the request line and header fields: the request's own, less `Host` (the
/// upstream's is written), `Upgrade` and `Transfer-Encoding` (framing is this hop's), and the
/// fields `extra` replaces.
fn encode_head(
    parts: &http::request::Parts,
    host: &HeaderValue,
    framing: RequestFraming,
    extra: Extra<'_>,
    out: &mut Vec<u8>,
) {
    out.extend_from_slice(parts.method.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(parts.uri.path_and_query().map_or("/", |pq| pq.as_str()).as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    write_field(out, b"host", host.as_bytes());
    for (name, value) in &parts.headers {
        let replaced = (extra.forwarded_for.is_some() && name == X_FORWARDED_FOR)
            || (extra.traceparent.is_some() && name == TRACEPARENT);
        if replaced || name == header::HOST || name == header::TRANSFER_ENCODING || name == header::UPGRADE {
            continue;
        }
        write_field(out, name.as_str().as_bytes(), value.as_bytes());
    }
    if let Some(value) = extra.forwarded_for {
        write_field(out, X_FORWARDED_FOR.as_str().as_bytes(), value);
    }
    if let Some(value) = extra.traceparent {
        write_field(out, TRACEPARENT.as_str().as_bytes(), value);
    }
    match framing {
        RequestFraming::Length(len) if !parts.headers.contains_key(header::CONTENT_LENGTH) => {
            out.extend_from_slice(b"content-length: ");
            out.extend_from_slice(len.to_string().as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        RequestFraming::Chunked => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
        RequestFraming::Length(_) | RequestFraming::Empty => {}
    }
    out.extend_from_slice(b"\r\n");
}

/// Appends the next body frame to `out` as the framing requires; `false` once the body ended.
async fn append_frame(
    body: &mut Body,
    framing: RequestFraming,
    out: &mut Vec<u8>,
    sent: &mut u64,
) -> Result<bool, SendError> {
    let frame = match body.frame().await {
        Some(frame) => frame.map_err(SendError::Body)?,
        None => {
            match framing {
                RequestFraming::Chunked => out.extend_from_slice(b"0\r\n\r\n"),
                RequestFraming::Length(len) if *sent != len => {
                    return Err(SendError::Protocol("request body shorter than its content-length"));
                }
                RequestFraming::Length(_) | RequestFraming::Empty => {}
            }
            return Ok(false);
        }
    };
    // Trailers of a chunked request are not forwarded.
    let Ok(data) = frame.into_data() else { return Ok(true) };
    if data.is_empty() {
        return Ok(true);
    }
    *sent += data.len() as u64;
    match framing {
        RequestFraming::Chunked => {
            out.extend_from_slice(format!("{:x}\r\n", data.len()).as_bytes());
            out.extend_from_slice(&data);
            out.extend_from_slice(b"\r\n");
        }
        RequestFraming::Length(len) if *sent > len => {
            return Err(SendError::Protocol("request body longer than its content-length"));
        }
        RequestFraming::Length(_) | RequestFraming::Empty => out.extend_from_slice(&data),
    }
    Ok(true)
}

/// Writes the rest of a body too large to be kept for a retry, as it arrives.
async fn stream_body(
    conn: &mut Conn,
    body: &mut Body,
    framing: RequestFraming,
    mut sent: u64,
) -> Result<(), SendError> {
    let mut out = Vec::new();
    loop {
        out.clear();
        let more = append_frame(body, framing, &mut out, &mut sent).await?;
        conn.stream.write_all(&out).await.map_err(SendError::Io)?;
        if !more {
            return Ok(());
        }
    }
}

/// A final response head: its fields in the form the caller built (`H`), and how its body
/// is framed.
struct Head<H> {
    fields: H,
    status: StatusCode,
    framing: Framing,
    /// The connection may carry another request once the body has been read.
    reuse: bool,
}

type ResponseHead = Head<HeaderMap>;

/// Reads the response head, skipping interim (1xx) responses.
async fn read_head(conn: &mut Conn, method: &Method) -> Result<ResponseHead, SendError> {
    read_head_with(conn, method, header_map).await
}

/// Reads the response head, skipping interim (1xx) responses; `build` turns the final head
/// (its bytes and its parsed fields) into `H`.
async fn read_head_with<H>(
    conn: &mut Conn,
    method: &Method,
    mut build: impl FnMut(&[u8], &[httparse::Header<'_>], StatusCode, Framing) -> Result<H, SendError>,
) -> Result<Head<H>, SendError> {
    let mut received = false;
    loop {
        if !conn.data().is_empty() {
            match parse_head(conn.data(), method, &mut build)? {
                Parsed::Partial => {}
                Parsed::Interim(len) => {
                    conn.consume(len);
                    continue;
                }
                Parsed::Complete(len, head) => {
                    conn.consume(len);
                    return Ok(head);
                }
            }
        }
        match conn.fill().await {
            Ok(0) | Err(_) if !received => return Err(SendError::Closed),
            Ok(0) => return Err(SendError::Io(io::ErrorKind::UnexpectedEof.into())),
            Ok(_) => received = true,
            Err(err) => return Err(SendError::Io(err)),
        }
    }
}

enum Parsed<H> {
    Partial,
    Interim(usize),
    Complete(usize, Head<H>),
}

fn parse_head<H>(
    data: &[u8],
    method: &Method,
    build: &mut impl FnMut(&[u8], &[httparse::Header<'_>], StatusCode, Framing) -> Result<H, SendError>,
) -> Result<Parsed<H>, SendError> {
    // Most heads have a handful of fields: a small array is cheaper to set up.
    let mut fields = [httparse::EMPTY_HEADER; 16];
    match parse_head_into(&mut fields, data, method, build) {
        Err(SendError::Protocol(TOO_MANY_FIELDS)) => {
            parse_head_into(&mut [httparse::EMPTY_HEADER; MAX_HEADERS], data, method, build)
        }
        parsed => parsed,
    }
}

const TOO_MANY_FIELDS: &str = "too many header fields";

fn parse_head_into<'b, H>(
    fields: &mut [httparse::Header<'b>],
    data: &'b [u8],
    method: &Method,
    build: &mut impl FnMut(&[u8], &[httparse::Header<'_>], StatusCode, Framing) -> Result<H, SendError>,
) -> Result<Parsed<H>, SendError> {
    let mut parsed = httparse::Response::new(fields);
    let len = match parsed.parse(data) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(Parsed::Partial),
        Err(httparse::Error::TooManyHeaders) => return Err(SendError::Protocol(TOO_MANY_FIELDS)),
        Err(_) => return Err(SendError::Protocol("unparsable response head")),
    };
    let code = parsed.code.unwrap_or_default();
    let status = StatusCode::from_u16(code).map_err(|_| SendError::Protocol("invalid status code"))?;
    if status == StatusCode::SWITCHING_PROTOCOLS {
        return Err(SendError::Protocol("unexpected 101 Switching Protocols"));
    }
    if status.is_informational() {
        return Ok(Parsed::Interim(len));
    }
    let framing = Framing::of_response(*method == Method::HEAD, status, parsed.headers).map_err(SendError::Protocol)?;
    let close = parsed.headers.iter().any(|f| {
        f.name.eq_ignore_ascii_case("connection") && tokens(f.value).any(|t| t.eq_ignore_ascii_case(b"close"))
    });
    let fields = build(&data[..len], parsed.headers, status, framing)?;
    let reuse = parsed.version == Some(1) && framing != Framing::UntilClose && !close;
    Ok(Parsed::Complete(len, Head { fields, status, framing, reuse }))
}

/// The fields of a response head as a `HeaderMap`, less `Content-Length` beside chunked
/// framing.
fn header_map(
    head: &[u8],
    fields: &[httparse::Header<'_>],
    _status: StatusCode,
    framing: Framing,
) -> Result<HeaderMap, SendError> {
    let chunked = matches!(framing, Framing::Chunked(_));
    // Header values are slices of one copy of the head, not one allocation each.
    let copy = Bytes::copy_from_slice(head);
    let base = head.as_ptr() as usize;
    let mut headers = HeaderMap::with_capacity(fields.len());
    for field in fields {
        // Transfer-Encoding overrides Content-Length; passing both on invites smuggling.
        if chunked && field.name.eq_ignore_ascii_case("content-length") {
            continue;
        }
        let name =
            HeaderName::from_bytes(field.name.as_bytes()).map_err(|_| SendError::Protocol("invalid header name"))?;
        let offset = field.value.as_ptr() as usize - base;
        let value = HeaderValue::from_maybe_shared(copy.slice(offset..offset + field.value.len()))
            .map_err(|_| SendError::Protocol("invalid header value"))?;
        headers.append(name, value);
    }
    Ok(headers)
}

/// An upstream response body, read from the connection as it is polled. At its end the
/// connection goes back to the idle stack (when the upstream keeps it alive); a body dropped
/// before its end closes the connection.
pub struct UpstreamBody {
    conn: Option<Conn>,
    pool: Arc<ConnPool>,
    framing: Framing,
    reuse: bool,
}

impl std::fmt::Debug for UpstreamBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamBody").field("framing", &self.framing).finish_non_exhaustive()
    }
}

impl UpstreamBody {
    /// Appends the whole body to `out` when it has a length and all of it is buffered
    /// already, as for most small answers, and ends it; otherwise leaves it to be polled.
    pub(crate) fn take_buffered(&mut self, out: &mut Vec<u8>) -> bool {
        if self.framing.is_done() {
            return true;
        }
        let (Framing::Length(left), Some(conn)) = (self.framing, self.conn.as_mut()) else { return false };
        let Some(left) = usize::try_from(left).ok().filter(|left| *left <= conn.data().len()) else { return false };
        out.extend_from_slice(&conn.data()[..left]);
        conn.consume(left);
        self.finish();
        true
    }

    fn finish(&mut self) {
        self.framing = Framing::Done;
        if let Some(conn) = self.conn.take()
            && self.reuse
            && conn.data().is_empty()
        {
            self.pool.put(conn);
        }
    }

    /// The next frame, or `None` at the end; `Ok(None)` from `step` means "state changed, go on".
    fn step(&mut self, cx: &mut Context<'_>) -> Poll<Result<Option<Option<Bytes>>, SendError>> {
        let Some(conn) = self.conn.as_mut() else { return Poll::Ready(Ok(Some(None))) };
        match self.framing {
            Framing::Done => Poll::Ready(Ok(Some(None))),
            Framing::Length(left) | Framing::Chunked(Chunk::Data(left)) => {
                if conn.data().is_empty() && ready!(conn.poll_fill(cx)).map_err(SendError::Io)? == 0 {
                    return Poll::Ready(Err(SendError::Io(io::ErrorKind::UnexpectedEof.into())));
                }
                let take = conn.data().len().min(usize::try_from(left).unwrap_or(usize::MAX));
                let data = Bytes::copy_from_slice(&conn.data()[..take]);
                conn.consume(take);
                let left = left - take as u64;
                self.framing = match self.framing {
                    Framing::Length(_) => Framing::Length(left),
                    _ if left == 0 => Framing::Chunked(Chunk::DataEnd),
                    _ => Framing::Chunked(Chunk::Data(left)),
                };
                if self.framing == Framing::Length(0) {
                    self.finish();
                }
                Poll::Ready(Ok(Some(Some(data))))
            }
            Framing::UntilClose => {
                if conn.data().is_empty() && ready!(conn.poll_fill(cx)).map_err(SendError::Io)? == 0 {
                    self.reuse = false;
                    self.finish();
                    return Poll::Ready(Ok(Some(None)));
                }
                let data = Bytes::copy_from_slice(conn.data());
                conn.consume(data.len());
                Poll::Ready(Ok(Some(Some(data))))
            }
            Framing::Chunked(Chunk::DataEnd) => {
                if conn.data().len() < 2 {
                    if ready!(conn.poll_fill(cx)).map_err(SendError::Io)? == 0 {
                        return Poll::Ready(Err(SendError::Io(io::ErrorKind::UnexpectedEof.into())));
                    }
                    return Poll::Ready(Ok(None));
                }
                if &conn.data()[..2] != b"\r\n" {
                    return Poll::Ready(Err(SendError::Protocol("chunk not followed by CRLF")));
                }
                conn.consume(2);
                self.framing = Framing::Chunked(Chunk::Size);
                Poll::Ready(Ok(None))
            }
            Framing::Chunked(state @ (Chunk::Size | Chunk::Trailers)) => {
                let Some(line_len) = conn.data().windows(2).position(|w| w == b"\r\n") else {
                    if conn.data().len() > MAX_LINE {
                        return Poll::Ready(Err(SendError::Protocol("chunk line too long")));
                    }
                    if ready!(conn.poll_fill(cx)).map_err(SendError::Io)? == 0 {
                        return Poll::Ready(Err(SendError::Io(io::ErrorKind::UnexpectedEof.into())));
                    }
                    return Poll::Ready(Ok(None));
                };
                if state == Chunk::Trailers {
                    conn.consume(line_len + 2);
                    if line_len == 0 {
                        self.finish();
                        return Poll::Ready(Ok(Some(None)));
                    }
                    return Poll::Ready(Ok(None));
                }
                let size = parse_chunk_size(&conn.data()[..line_len]).map_err(SendError::Protocol)?;
                conn.consume(line_len + 2);
                self.framing = Framing::Chunked(if size == 0 { Chunk::Trailers } else { Chunk::Data(size) });
                Poll::Ready(Ok(None))
            }
        }
    }
}

impl hyper::body::Body for UpstreamBody {
    type Data = Bytes;
    type Error = SendError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, SendError>>> {
        loop {
            match ready!(self.step(cx)) {
                Ok(None) => {}
                Ok(Some(Some(data))) => return Poll::Ready(Some(Ok(Frame::data(data)))),
                Ok(Some(None)) => return Poll::Ready(None),
                Err(err) => {
                    // A connection in an unknown state is never reused.
                    self.conn = None;
                    self.framing = Framing::Done;
                    return Poll::Ready(Some(Err(err)));
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.framing.is_done()
    }

    fn size_hint(&self) -> SizeHint {
        match self.framing {
            Framing::Done => SizeHint::with_exact(0),
            Framing::Length(left) => SizeHint::with_exact(left),
            Framing::Chunked(_) | Framing::UntilClose => SizeHint::default(),
        }
    }
}

/// A body that carries `guard` (an upstream pool slot) until it is dropped.
pub struct Guarded<B, G> {
    inner: B,
    _guard: G,
}

impl<B, G> Guarded<B, G> {
    pub fn new(inner: B, guard: G) -> Self {
        Self { inner, _guard: guard }
    }
}

impl<B: hyper::body::Body + Unpin, G: Unpin> hyper::body::Body for Guarded<B, G> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_head(data: &[u8], method: &Method) -> Result<Parsed<HeaderMap>, SendError> {
        super::parse_head(data, method, &mut header_map)
    }

    fn parse(raw: &str, method: &Method) -> ResponseHead {
        match parse_head(raw.as_bytes(), method) {
            Ok(Parsed::Complete(len, head)) => {
                assert_eq!(len, raw.find("\r\n\r\n").unwrap_or_default() + 4);
                head
            }
            Ok(Parsed::Partial) => panic!("partial"),
            Ok(Parsed::Interim(_)) => panic!("interim"),
            Err(err) => panic!("{err}"),
        }
    }

    #[test]
    fn response_framing_follows_rfc_9112() {
        let head = parse("HTTP/1.1 200 OK\r\ncontent-length: 5\r\nx-a: 1\r\nx-a: 2\r\n\r\nhello", &Method::GET);
        assert_eq!(head.framing, Framing::Length(5));
        assert!(head.reuse);
        assert_eq!(head.fields.get_all("x-a").iter().count(), 2);
        let head = parse("HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n", &Method::HEAD);
        assert_eq!(head.framing, Framing::Done);
        let head = parse("HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ncontent-length: 3\r\n\r\n", &Method::GET);
        assert_eq!(head.framing, Framing::Chunked(Chunk::Size));
        assert!(head.fields.get(header::CONTENT_LENGTH).is_none());
        let head = parse("HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 1\r\n\r\n", &Method::GET);
        assert!(!head.reuse);
        let head = parse("HTTP/1.0 200 OK\r\n\r\n", &Method::GET);
        assert_eq!(head.framing, Framing::UntilClose);
        assert!(!head.reuse);
        let head = parse("HTTP/1.1 204 No Content\r\n\r\n", &Method::GET);
        assert_eq!(head.framing, Framing::Done);
        assert!(matches!(parse_head(b"HTTP/1.1 100 Continue\r\n\r\n", &Method::GET), Ok(Parsed::Interim(25))));
        assert!(matches!(parse_head(b"HTTP/1.1 200 OK\r\ncontent-le", &Method::GET), Ok(Parsed::Partial)));
        assert!(
            parse_head(b"HTTP/1.1 200 OK\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\n", &Method::GET).is_err()
        );
        assert!(parse_head(b"SPDY/3 200\r\n\r\n", &Method::GET).is_err());
        assert!(parse_head(b"HTTP/1.1 200 OK\r\ncontent-length: +1\r\n\r\n", &Method::GET).is_err());
        let many: String = (0..40).map(|i| format!("x-h{i}: {i}\r\n")).collect();
        let head = parse(&format!("HTTP/1.1 200 OK\r\n{many}content-length: 0\r\n\r\n"), &Method::GET);
        assert_eq!((head.fields.len(), head.framing), (41, Framing::Done));
    }

    fn client_head(raw: &str, method: &Method, close: bool) -> String {
        let mut out = Vec::new();
        let mut encode = |_: &[u8], fields: &[httparse::Header<'_>], status, framing| {
            encode_client_head(status, fields, framing, close, &mut out);
            Ok(())
        };
        assert!(matches!(super::parse_head(raw.as_bytes(), method, &mut encode), Ok(Parsed::Complete(..))));
        String::from_utf8_lossy(&out).into_owned()
    }

    #[test]
    fn the_client_head_drops_hop_by_hop_fields_and_reframes_what_has_no_length() {
        assert_eq!(
            client_head(
                "HTTP/1.1 201 Whatever\r\nContent-Length: 2\r\nConnection: keep-alive, X-Hop\r\nX-Hop: 1\r\nKeep-Alive: timeout=5\r\nx-a: 1\r\n\r\n",
                &Method::GET,
                false,
            ),
            "HTTP/1.1 201 Created\r\nContent-Length: 2\r\nx-a: 1\r\n\r\n"
        );
        assert_eq!(
            client_head(
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 9\r\n\r\n",
                &Method::GET,
                true
            ),
            "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n"
        );
        assert_eq!(
            client_head("HTTP/1.0 200 OK\r\nx-b: 2\r\n\r\n", &Method::GET, false),
            "HTTP/1.1 200 OK\r\nx-b: 2\r\ntransfer-encoding: chunked\r\n\r\n"
        );
        // A HEAD answer keeps the length of the body it does not carry.
        assert_eq!(
            client_head("HTTP/1.1 200 OK\r\ncontent-length: 308\r\n\r\n", &Method::HEAD, false),
            "HTTP/1.1 200 OK\r\ncontent-length: 308\r\n\r\n"
        );
    }

    #[test]
    fn request_head_carries_the_upstream_host_and_the_body_framing() {
        let req =
            Request::post("/api/carts?x=1").header("host", "client").header("x-b", "2").body(()).unwrap_or_default();
        let (parts, ()) = req.into_parts();
        let mut out = Vec::new();
        encode_head(
            &parts,
            &HeaderValue::from_static("shop:8101"),
            RequestFraming::Chunked,
            Extra::default(),
            &mut out,
        );
        assert_eq!(
            String::from_utf8_lossy(&out),
            "POST /api/carts?x=1 HTTP/1.1\r\nhost: shop:8101\r\nx-b: 2\r\ntransfer-encoding: chunked\r\n\r\n"
        );
        let req = Request::get("/")
            .header("x-forwarded-for", "203.0.113.9")
            .header("traceparent", "00-1-2-01")
            .header("upgrade", "h2c")
            .body(())
            .unwrap_or_default();
        let (parts, ()) = req.into_parts();
        out.clear();
        let extra = Extra { forwarded_for: Some(b"203.0.113.9, 127.0.0.1"), traceparent: Some(b"00-3-4-01") };
        encode_head(&parts, &HeaderValue::from_static("shop"), RequestFraming::Empty, extra, &mut out);
        assert_eq!(
            String::from_utf8_lossy(&out),
            "GET / HTTP/1.1\r\nhost: shop\r\nx-forwarded-for: 203.0.113.9, 127.0.0.1\r\ntraceparent: 00-3-4-01\r\n\r\n"
        );
    }

    /// Serves `responses` (raw bytes, one per accepted request in order) on one connection.
    async fn raw_upstream(responses: Vec<&'static [u8]>) -> (Authority, tokio::task::JoinHandle<Vec<String>>) {
        use tokio::io::AsyncReadExt;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap_or_else(|e| panic!("{e}"));
        let authority = listener.local_addr().unwrap_or_else(|e| panic!("{e}")).to_string();
        let task = tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap_or_else(|e| panic!("{e}"));
            let mut requests = Vec::new();
            for response in responses {
                let mut buf = vec![0u8; 4096];
                let n = socket.read(&mut buf).await.unwrap_or_default();
                requests.push(String::from_utf8_lossy(&buf[..n]).into_owned());
                socket.write_all(response).await.unwrap_or_else(|e| panic!("{e}"));
            }
            requests
        });
        (authority.parse().unwrap_or_else(|e| panic!("{e}")), task)
    }

    #[tokio::test]
    async fn chunked_and_fixed_length_bodies_are_read_and_the_connection_reused() {
        let (authority, upstream) = raw_upstream(vec![
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5;x=y\r\nhello\r\n6\r\n world\r\n0\r\nx-t: 1\r\n\r\n",
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\ncontent-length: 2\r\n\r\nok",
        ])
        .await;
        let pool = Arc::new(ConnPool::new(&authority));
        let resp = pool.send(Request::get("/a").body(Body::empty()).unwrap_or_default(), Extra::default()).await;
        let body = resp.unwrap_or_else(|e| panic!("{e}")).into_body().collect().await;
        assert_eq!(body.map(|b| b.to_bytes()).ok(), Some(Bytes::from_static(b"hello world")));
        let resp = pool.send(Request::post("/b").body(Body::from("{}")).unwrap_or_default(), Extra::default()).await;
        let resp = resp.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(resp.status(), StatusCode::CREATED);
        let body = resp.into_body().collect().await;
        assert_eq!(body.map(|b| b.to_bytes()).ok(), Some(Bytes::from_static(b"ok")));
        let requests = upstream.await.unwrap_or_default();
        assert!(requests[0].starts_with("GET /a HTTP/1.1\r\nhost: 127.0.0.1:"), "{}", requests[0]);
        assert!(requests[1].contains("content-length: 2\r\n\r\n{}"), "{}", requests[1]);
    }
}
