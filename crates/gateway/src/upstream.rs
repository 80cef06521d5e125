//! Keep-alive HTTP/1.1 connections to one upstream, owned by one worker thread.
//!
//! Built on hyper's connection API rather than hyper-util's pooled client: the pool here is a
//! thread-local stack of idle connections (no shared pool keyed by host, no background tasks),
//! and it emits no per-request trace events, which the OpenTelemetry layer would otherwise turn
//! into span events on every proxied request.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::Body;
use http::header::{self, HeaderValue};
use http::{Request, Response};
use hyper::body::{Bytes, Frame, Incoming, SizeHint};
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::settings::UpstreamUrl;

/// An idle connection older than this is closed instead of reused; upstreams commonly close
/// idle keep-alive connections after a minute or so, and reusing one they closed costs a retry.
const IDLE_TIMEOUT: Duration = Duration::from_secs(50);

/// Most idle connections kept per upstream and thread; more are closed once their response is
/// done. Busy connections are bounded by `upstream.pool_size`, not here.
const MAX_IDLE: usize = 1024;

/// Why an upstream exchange failed.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error("connect: {0}")]
    Connect(#[source] std::io::Error),
    #[error(transparent)]
    Http(#[from] hyper::Error),
}

struct Idle {
    sender: SendRequest<Body>,
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

impl ConnPool {
    pub fn new(url: &UpstreamUrl) -> Self {
        let authority = url.authority();
        // `[::1]` in a URL is `::1` to the resolver.
        let host = authority.host().trim_start_matches('[').trim_end_matches(']').to_owned();
        let host_header =
            HeaderValue::from_str(authority.as_str()).unwrap_or_else(|_| HeaderValue::from_static("upstream"));
        Self { host, port: authority.port_u16().unwrap_or(80), host_header, idle: Mutex::new(VecDeque::new()) }
    }

    /// Sends `req` (origin-form URI) on an idle connection, or a new one. A pooled connection
    /// the upstream closed before the request was written is skipped, and the request retried.
    pub async fn send(self: &Arc<Self>, mut req: Request<Body>) -> Result<(Response<Incoming>, Lease), SendError> {
        req.headers_mut().insert(header::HOST, self.host_header.clone());
        loop {
            let (mut sender, reused) = match self.checkout() {
                Some(sender) => (sender, true),
                None => (self.connect().await?, false),
            };
            // A connection whose previous response just ended becomes ready a moment later.
            if let Err(err) = sender.ready().await {
                if reused {
                    continue;
                }
                return Err(SendError::Http(err));
            }
            match sender.try_send_request(req).await {
                Ok(resp) => return Ok((resp, Lease { sender: Some(sender), pool: self.clone() })),
                Err(mut err) => match err.take_message() {
                    Some(unsent) if reused => req = unsent,
                    _ => return Err(SendError::Http(err.into_error())),
                },
            }
        }
    }

    fn checkout(&self) -> Option<SendRequest<Body>> {
        let mut idle = self.idle.lock().ok()?;
        while let Some(entry) = idle.pop_back() {
            if !entry.sender.is_closed() && entry.since.elapsed() < IDLE_TIMEOUT {
                return Some(entry.sender);
            }
        }
        None
    }

    fn put(&self, sender: SendRequest<Body>) {
        if sender.is_closed() {
            return;
        }
        let Ok(mut idle) = self.idle.lock() else { return };
        // Oldest first: expired connections are closed as the stack is used.
        while idle.front().is_some_and(|entry| entry.since.elapsed() >= IDLE_TIMEOUT) {
            idle.pop_front();
        }
        if idle.len() < MAX_IDLE {
            idle.push_back(Idle { sender, since: Instant::now() });
        }
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

    async fn connect(&self) -> Result<SendRequest<Body>, SendError> {
        let stream = TcpStream::connect((self.host.as_str(), self.port)).await.map_err(SendError::Connect)?;
        // Small request/response exchanges: Nagle would add up to 40 ms per hop.
        let _ = stream.set_nodelay(true);
        let (sender, connection) = http1::Builder::new().handshake(TokioIo::new(stream)).await?;
        tokio::spawn(async move {
            if let Err(err) = connection.await {
                tracing::debug!(error = %err, "upstream connection ended with an error");
            }
        });
        Ok(sender)
    }
}

/// The connection an upstream response arrived on; goes back to the pool once the response
/// body has been read to its end, and is closed otherwise.
pub struct Lease {
    sender: Option<SendRequest<Body>>,
    pool: Arc<ConnPool>,
}

impl Lease {
    fn release(&mut self) {
        if let Some(sender) = self.sender.take() {
            self.pool.put(sender);
        }
    }
}

impl std::fmt::Debug for Lease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Lease")
    }
}

/// An upstream response body that returns its connection to the pool at its end and carries
/// `guard` (the upstream pool slot) until it is dropped.
pub struct LeasedBody<G> {
    inner: Incoming,
    lease: Lease,
    _guard: G,
}

impl<G> LeasedBody<G> {
    pub fn new(inner: Incoming, lease: Lease, guard: G) -> Self {
        Self { inner, lease, _guard: guard }
    }
}

impl<G: Unpin> hyper::body::Body for LeasedBody<G> {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(None) => self.lease.release(),
            Poll::Ready(Some(Ok(_))) if self.inner.is_end_stream() => self.lease.release(),
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl<G> Drop for LeasedBody<G> {
    fn drop(&mut self) {
        // Bodies known to be empty (204, HEAD, `content-length: 0`) are never polled.
        if hyper::body::Body::is_end_stream(&self.inner) {
            self.lease.release();
        }
    }
}
