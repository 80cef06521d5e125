//! The gateway's HTTP/1.1 server against hyper's, on the same bytes.
//!
//! Each case writes one byte stream (one or more requests, pipelined, often malformed, cut
//! into random pieces) to the gateway's server (its own code, handing over to hyper where it
//! does) and to a hyper server configured as the gateway configures it, both over in-memory
//! duplex streams, then half-closes. Both serve a handler that records what it was asked
//! (method, target, body) and answers with a body naming it; the recorded requests and the
//! parsed response streams are compared.
//!
//! Cases: 256 by default, `PROPTEST_CASES` for more (the deeper runs in docs/testing.md).

mod differential;
mod requests;

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use bytes::Bytes;
use http::{Method, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio::sync::watch;

use super::LazyTimer;
use super::codec::MAX_BODY;
use super::server::{self, Handler, RawRequest, Reply};

/// Cases per property: a few hundred in CI, more when asked.
pub(super) fn cases() -> u32 {
    std::env::var("PROPTEST_CASES").ok().and_then(|n| n.parse().ok()).unwrap_or(256)
}

/// Which code of the gateway served a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum By {
    Own,
    Hyper,
}

/// One request as a server handed it to its handler, body read whole.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Seen {
    pub method: String,
    pub target: String,
    pub body: Vec<u8>,
}

impl std::fmt::Display for Seen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {} ({} body bytes)", self.method, self.target, self.body.len())
    }
}

/// Records every request and answers `200` with a body that names it.
#[derive(Clone, Default)]
struct Recorder {
    seen: Arc<Mutex<Vec<(Seen, By)>>>,
}

impl Recorder {
    fn record(&self, seen: Seen, by: By) -> String {
        let text = format!("{seen}");
        if let Ok(mut all) = self.seen.lock() {
            all.push((seen, by));
        }
        text
    }

    fn take(&self) -> Vec<(Seen, By)> {
        self.seen.lock().map(|mut all| std::mem::take(&mut *all)).unwrap_or_default()
    }
}

impl Handler for Recorder {
    type Guard = ();

    fn serve(
        &self,
        req: &RawRequest<'_>,
        _timer: &mut LazyTimer,
    ) -> impl Future<Output = http::Response<Reply<()>>> + Send {
        let seen = Seen { method: req.method.to_string(), target: req.target.to_owned(), body: req.body.to_vec() };
        let text = self.record(seen, By::Own);
        async move { http::Response::new(Reply::Local(Body::from(text))) }
    }

    fn serve_hyper(&self, req: http::Request<Incoming>) -> impl Future<Output = axum::response::Response> + Send {
        let recorder = self.clone();
        async move { recorder.serve_hyper_request(req, By::Hyper).await }
    }
}

impl Recorder {
    async fn serve_hyper_request(&self, req: http::Request<Incoming>, by: By) -> axum::response::Response {
        let (parts, body) = req.into_parts();
        let Ok(body) = body.collect().await else {
            // The body never arrived whole: no request was served.
            let mut resp = axum::response::Response::new(Body::empty());
            *resp.status_mut() = StatusCode::BAD_REQUEST;
            return resp;
        };
        let seen =
            Seen { method: parts.method.to_string(), target: parts.uri.to_string(), body: body.to_bytes().into() };
        axum::response::Response::new(Body::from(self.record(seen, by)))
    }
}

/// hyper's server as [`crate::server::serve`] builds it; half-closed client streams are
/// served to their end (the cases end with one).
fn hyper_builder() -> hyper::server::conn::http1::Builder {
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder.timer(TokioTimer::new()).header_read_timeout(HEADER_READ_TIMEOUT).writev(false).half_close(true);
    builder
}

const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);

/// What one server made of a byte stream.
#[derive(Debug)]
pub(super) struct Served {
    pub requests: Vec<Seen>,
    pub by: Vec<By>,
    /// Everything the server wrote back.
    pub output: Vec<u8>,
}

/// Which server a stream is fed to.
#[derive(Debug, Clone, Copy)]
pub(super) enum Server {
    Gateway,
    Hyper,
}

/// Writes `pieces` (with a turn for the server between them), half-closes, and reads the
/// server's output to its end.
pub(super) async fn feed(which: Server, pieces: &[Vec<u8>]) -> Served {
    let (client, server_side) = tokio::io::duplex(1 << 20);
    let recorder = Recorder::default();
    // Held for the whole exchange: a dropped sender reads as a stop.
    let (_stop_tx, stop_rx) = watch::channel(false);
    let task = {
        let recorder = recorder.clone();
        tokio::spawn(async move { serve_one(which, server_side, recorder, stop_rx).await })
    };
    let (mut read, mut write) = tokio::io::split(client);
    let writer = async {
        for piece in pieces {
            // A server that closed early makes the rest unwritable: that is its answer.
            if write.write_all(piece).await.is_err() {
                break;
            }
            tokio::task::yield_now().await;
        }
        let _ = write.shutdown().await;
    };
    let reader = async {
        let mut output = Vec::new();
        let _ = read.read_to_end(&mut output).await;
        output
    };
    let ((), output) = tokio::join!(writer, reader);
    let _ = task.await;
    let (requests, by) = recorder.take().into_iter().unzip();
    Served { requests, by, output }
}

async fn serve_one(which: Server, stream: DuplexStream, recorder: Recorder, mut stop: watch::Receiver<bool>) {
    match which {
        Server::Gateway => {
            let settings = server::Settings { header_read_timeout: HEADER_READ_TIMEOUT, hyper: hyper_builder() };
            server::serve_connection(stream, recorder, &settings, &mut stop).await;
        }
        Server::Hyper => {
            let service = hyper::service::service_fn(move |req: http::Request<Incoming>| {
                let recorder = recorder.clone();
                async move { Ok::<_, Infallible>(recorder.serve_hyper_request(req, By::Hyper).await) }
            });
            let _ = hyper_builder().serve_connection(TokioIo::new(stream), service).with_upgrades().await;
        }
    }
}

/// One response as read off the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Answer {
    pub status: u16,
    pub body: Bytes,
    pub close: bool,
}

/// The responses in `output`, the `i`-th answering a request of `methods[i]` (a `HEAD` has
/// no body); interim (1xx) responses are skipped. `Err` names what is malformed, with the
/// responses read before it.
pub(super) fn responses(mut output: &[u8], methods: &[&str]) -> Result<Vec<Answer>, (String, Vec<Answer>)> {
    let mut answers = Vec::new();
    while !output.is_empty() {
        let mut fields = [httparse::EMPTY_HEADER; 64];
        let mut parsed = httparse::Response::new(&mut fields);
        let head_len = match parsed.parse(output) {
            Ok(httparse::Status::Complete(len)) => len,
            Ok(httparse::Status::Partial) => return Err(("a response head cut short".into(), answers)),
            Err(err) => return Err((format!("a response head httparse refuses: {err}"), answers)),
        };
        let status = parsed.code.unwrap_or_default();
        if (100..200).contains(&status) {
            output = &output[head_len..];
            continue;
        }
        let head = methods.get(answers.len()).is_some_and(|m| *m == Method::HEAD.as_str());
        let status_code = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
        let framing = match super::codec::Framing::of_response(head, status_code, parsed.headers) {
            Ok(framing) => framing,
            Err(err) => return Err((format!("a response framed ambiguously: {err}"), answers)),
        };
        let close = parsed.headers.iter().any(|f| {
            f.name.eq_ignore_ascii_case("connection")
                && super::codec::tokens(f.value).any(|t| t.eq_ignore_ascii_case(b"close"))
        });
        let rest = &output[head_len..];
        let (body, used) = match framing {
            super::codec::Framing::Done => (Bytes::new(), 0),
            super::codec::Framing::Length(len) => {
                let len = usize::try_from(len).unwrap_or(usize::MAX);
                if rest.len() < len {
                    return Err(("a response body cut short".into(), answers));
                }
                (Bytes::copy_from_slice(&rest[..len]), len)
            }
            // A refusal to a request not served (a `HEAD` among them) may have no length.
            super::codec::Framing::UntilClose => (Bytes::copy_from_slice(rest), rest.len()),
            super::codec::Framing::Chunked(_) => {
                return Err(("a chunked response (the handler's have a length)".into(), answers));
            }
        };
        answers.push(Answer { status, body, close });
        output = &rest[used..];
    }
    Ok(answers)
}
