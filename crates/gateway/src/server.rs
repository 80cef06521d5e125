//! Sockets and connection serving: SO_REUSEPORT listeners (one per worker thread, so the
//! kernel spreads connections without a shared accept queue), the HTTP/1 accept loop, and the
//! graceful drain on shutdown. Connections may be upgraded (WebSocket through the control
//! gateway), which hyper-util's `GracefulShutdown` cannot watch, so the drain is done here.

use std::net::SocketAddr;
use std::time::Duration;

use axum::body::Body;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tower::Service;

use service_kit::server::{ACCEPT_BACKOFF, spawn_connection, wait_for_drain};

use crate::http1::server as http1_server;
use crate::proxy::forwarded_for;
use crate::routes::Front;
use crate::routes::user::UserConnection;

/// Pending connections the kernel queues per listener before the accept loop takes them.
const BACKLOG: i32 = 4096;

/// Binds `count` listeners to one address with SO_REUSEPORT. With port 0 the first one picks
/// the port and the others join it.
pub fn bind_shared(addr: SocketAddr, count: usize) -> anyhow::Result<Vec<std::net::TcpListener>> {
    let first = bind(addr, count > 1).map_err(|e| anyhow::anyhow!("cannot listen on {addr}: {e}"))?;
    let actual = first.local_addr()?;
    let mut listeners = vec![first];
    for _ in 1..count {
        listeners.push(bind(actual, true).map_err(|e| anyhow::anyhow!("cannot listen on {actual}: {e}"))?);
    }
    Ok(listeners)
}

fn bind(addr: SocketAddr, reuse_port: bool) -> std::io::Result<std::net::TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    // A restart must not wait for the previous process's TIME_WAIT sockets.
    socket.set_reuse_address(true)?;
    if reuse_port {
        #[cfg(unix)]
        socket.set_reuse_port(true)?;
        #[cfg(not(unix))]
        return Err(std::io::Error::other("more than one worker thread needs SO_REUSEPORT (unix only)"));
    }
    // Inherited by accepted sockets on Linux; set again per connection for other systems.
    socket.set_tcp_nodelay(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(BACKLOG)?;
    Ok(socket.into())
}

pub use service_kit::server::stopped;

/// Serves `front` on `listener` until `stop`, then lets in-flight requests finish for at
/// most `drain`. A client that sends no complete request head within `header_read_timeout`
/// is dropped (slow-loris guard). Idle keep-alive connections are closed at once; upgraded connections
/// (WebSocket tunnels) are not HTTP any more and end with the process.
pub async fn serve(
    listener: TcpListener,
    front: Front,
    stop: watch::Receiver<bool>,
    drain: Duration,
    header_read_timeout: Duration,
) {
    let mut builder = http1::Builder::new();
    // Most answers are a few hundred bytes: copying the body after the head and sending both
    // with one `write` costs less than a `writev` of the two (a large body pays one extra copy).
    builder.timer(TokioTimer::new()).header_read_timeout(header_read_timeout).writev(false);
    // Every connection task holds a receiver; `closed()` resolves when the last one ends.
    let (live_tx, live_rx) = watch::channel(());
    let mut stopping = stop.clone();
    loop {
        let (stream, peer) = tokio::select! {
            biased;
            () = stopped(&mut stopping) => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    tracing::warn!(error = %err, "accept failed");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        match &front {
            Front::User(user) => {
                // Computed once per connection, sent with each of its requests.
                let peer_ip = forwarded_for(peer.ip());
                let settings = http1_server::Settings { header_read_timeout, hyper: builder.clone() };
                let connection = UserConnection::new(user.clone(), peer_ip);
                http1_server::spawn(stream, connection, settings, &stop, &live_rx);
            }
            Front::Router(router) => {
                let io = TokioIo::new(stream);
                let router = router.clone();
                let service = hyper::service::service_fn(move |req: http::Request<Incoming>| {
                    let mut req = req.map(Body::new);
                    req.extensions_mut().insert(ConnectInfo(peer));
                    router.clone().call(req)
                });
                spawn_connection(builder.serve_connection(io, service).with_upgrades(), &stop, &live_rx);
            }
        }
    }
    drop(listener);
    drop(live_rx);
    wait_for_drain(live_tx, drain).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_zero_listeners_share_the_port_the_first_one_got() {
        let listeners = bind_shared(SocketAddr::from(([127, 0, 0, 1], 0)), 3).unwrap_or_else(|e| panic!("{e}"));
        let ports: Vec<u16> = listeners.iter().filter_map(|l| l.local_addr().ok()).map(|a| a.port()).collect();
        assert_eq!(ports.len(), 3);
        assert_ne!(ports[0], 0);
        assert!(ports.iter().all(|p| *p == ports[0]));
    }
}
