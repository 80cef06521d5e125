//! The HTTP/1.1 client of one worker thread: keep-alive connections to one target, at most a
//! fixed number of them, handed out in arrival order. A request that finds every connection
//! busy waits for one; that wait counts in its latency, because latency runs from the
//! planned send time.
//!
//! Built on hyper's connection API (as the gateway's upstream pool is): the idle stack is local
//! to the worker's single-threaded runtime, so there is no shared pool and no locking.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{Request, StatusCode, Uri};
use http_body_util::{BodyExt as _, Full};
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Where load goes: `http://host:port` plus an optional path prefix (journeys) or the whole
/// path and query (single-request mode).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    authority: Authority,
    host: String,
    port: u16,
    /// Without a trailing slash.
    path: String,
}

impl Endpoint {
    /// Parses an `http://` URL; the path is kept (a journey base or the single request's path).
    pub fn parse(url: &str) -> Result<Self, String> {
        let uri: Uri = url.trim().parse().map_err(|e| format!("`{url}` is not a URL: {e}"))?;
        if uri.scheme() != Some(&Scheme::HTTP) {
            return Err(format!("`{url}`: only http:// targets are supported"));
        }
        let authority = uri.authority().cloned().ok_or_else(|| format!("`{url}` has no host"))?;
        let host = authority.host().trim_start_matches('[').trim_end_matches(']').to_owned();
        let port = authority.port_u16().unwrap_or(80);
        let path = uri.path_and_query().map_or_else(String::new, PathAndQuery::to_string);
        let path = if path == "/" { String::new() } else { path };
        Ok(Self { authority, host, port, path })
    }

    /// The URL's path and query (empty for a bare `http://host:port`).
    pub fn path(&self) -> &str {
        &self.path
    }

    /// `path` below this endpoint's path prefix.
    pub fn uri(&self, path: &str) -> String {
        let base = self.path.trim_end_matches('/');
        format!("{base}{path}")
    }
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "http://{}{}", self.authority, self.path)
    }
}

/// Why an exchange failed before a status arrived.
#[derive(Debug)]
pub enum ClientError {
    Connect(std::io::Error),
    Http(hyper::Error),
}

impl std::fmt::Display for ClientError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Connect(e) => write!(f, "connect: {e}"),
            Self::Http(e) => write!(f, "http: {e}"),
        }
    }
}

/// A response read to its end.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub body: Bytes,
}

pub type Body = Full<Bytes>;

/// Keep-alive connections of one worker thread to one endpoint.
pub struct Pool {
    endpoint: Endpoint,
    host_header: HeaderValue,
    idle: RefCell<Vec<SendRequest<Body>>>,
    /// One permit per connection that may be open; FIFO, so waiters are served in order.
    slots: Arc<Semaphore>,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool").field("endpoint", &self.endpoint).finish_non_exhaustive()
    }
}

impl Pool {
    pub fn new(endpoint: Endpoint, connections: usize) -> Rc<Self> {
        let host_header =
            HeaderValue::from_str(endpoint.authority.as_str()).unwrap_or_else(|_| HeaderValue::from_static("target"));
        Rc::new(Self {
            endpoint,
            host_header,
            idle: RefCell::new(Vec::new()),
            slots: Arc::new(Semaphore::new(connections.max(1))),
        })
    }

    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// Sends `req` (origin-form URI) and reads the whole response. A pooled connection the
    /// target closed in the meantime is skipped and the request retried on another.
    pub async fn send(&self, mut req: Request<Body>) -> Result<Answer, ClientError> {
        req.headers_mut().insert(header::HOST, self.host_header.clone());
        let permit = self.slots.clone().acquire_owned().await.ok();
        loop {
            let (mut sender, reused) = match self.checkout() {
                Some(sender) => (sender, true),
                None => (self.connect().await?, false),
            };
            if sender.ready().await.is_err() {
                if reused {
                    continue;
                }
                return Err(ClientError::Connect(std::io::Error::other("connection closed before the request")));
            }
            match sender.try_send_request(req).await {
                Ok(resp) => {
                    let status = resp.status();
                    let body = resp.into_body().collect().await.map_err(ClientError::Http)?.to_bytes();
                    self.put(sender, permit);
                    return Ok(Answer { status, body });
                }
                Err(mut err) => match err.take_message() {
                    Some(unsent) if reused => req = unsent,
                    _ => return Err(ClientError::Http(err.into_error())),
                },
            }
        }
    }

    fn checkout(&self) -> Option<SendRequest<Body>> {
        let mut idle = self.idle.borrow_mut();
        while let Some(sender) = idle.pop() {
            if !sender.is_closed() {
                return Some(sender);
            }
        }
        None
    }

    fn put(&self, sender: SendRequest<Body>, permit: Option<OwnedSemaphorePermit>) {
        if !sender.is_closed() {
            self.idle.borrow_mut().push(sender);
        }
        drop(permit);
    }

    async fn connect(&self) -> Result<SendRequest<Body>, ClientError> {
        let stream = TcpStream::connect((self.endpoint.host.as_str(), self.endpoint.port))
            .await
            .map_err(ClientError::Connect)?;
        // Small exchanges: Nagle would add up to 40 ms per request.
        let _ = stream.set_nodelay(true);
        let (sender, connection) =
            http1::Builder::new().handshake(TokioIo::new(stream)).await.map_err(ClientError::Http)?;
        tokio::task::spawn_local(async move {
            if let Err(err) = connection.await {
                tracing::debug!(error = %err, "target connection ended with an error");
            }
        });
        Ok(sender)
    }
}

/// A GET of `path` below the endpoint.
pub fn get(endpoint: &Endpoint, path: &str) -> Request<Body> {
    let mut req = Request::new(Full::new(Bytes::new()));
    *req.uri_mut() = endpoint.uri(path).parse().unwrap_or_else(|_| Uri::from_static("/"));
    req
}

/// A POST of a JSON body to `path` below the endpoint.
pub fn post_json(endpoint: &Endpoint, path: &str, body: &serde_json::Value) -> Request<Body> {
    let mut req = Request::new(Full::new(Bytes::from(body.to_string())));
    *req.method_mut() = http::Method::POST;
    *req.uri_mut() = endpoint.uri(path).parse().unwrap_or_else(|_| Uri::from_static("/"));
    req.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    req
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn endpoints_keep_their_path() {
        let base = Endpoint::parse("http://127.0.0.1:8080").unwrap();
        assert_eq!((base.port, base.path()), (8080, ""));
        assert_eq!(base.uri("/api/ping"), "/api/ping");
        let url = Endpoint::parse("http://localhost/x/y?z=1").unwrap();
        assert_eq!((url.port, url.path()), (80, "/x/y?z=1"));
        assert_eq!(Endpoint::parse("http://[::1]:9/").unwrap().host, "::1");
        assert!(Endpoint::parse("https://example.com").is_err());
        assert!(Endpoint::parse("not a url").is_err());
    }
}
