//! The services' HTTP server (`server::serve_with`, used by the shop, orchestrator and runner):
//! a client that never finishes its request head is disconnected at the header read timeout
//! while other clients are served, and shutdown still drains.

#![allow(clippy::unwrap_used)] // Test scaffolding: a failed unwrap is a failed test.

use std::time::{Duration, Instant};

use axum::Router;
use axum::routing::get;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

const TIMEOUT: Duration = Duration::from_millis(800);

async fn get_ok(addr: std::net::SocketAddr) -> bool {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(b"GET /hello HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await.unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.unwrap();
    answer.starts_with("HTTP/1.1 200") && answer.ends_with("hi")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_head_never_finished_is_cut_at_the_header_read_timeout_and_others_are_served() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = Router::new().route("/hello", get(|| async { "hi" }));
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let server = tokio::spawn(service_kit::server::serve_with(
        listener,
        app,
        async move {
            let _ = stop_rx.await;
        },
        Duration::from_secs(1),
        TIMEOUT,
    ));

    let loris: Vec<_> = (0..10)
        .map(|_| {
            tokio::spawn(async move {
                let mut stream = TcpStream::connect(addr).await.unwrap();
                stream.write_all(b"GET /hello HTTP/1.1\r\nHost: x\r\nX-Slow: ").await.unwrap();
                let opened = Instant::now();
                let mut buf = [0u8; 256];
                loop {
                    if stream.write_all(b"a").await.is_err() {
                        return opened.elapsed();
                    }
                    match tokio::time::timeout(Duration::from_millis(50), stream.read(&mut buf)).await {
                        Ok(Ok(n)) if n > 0 => {}
                        Ok(_) => return opened.elapsed(),
                        Err(_) => {}
                    }
                    assert!(opened.elapsed() < Duration::from_secs(20), "still open after 20 s");
                }
            })
        })
        .collect();
    let started = Instant::now();
    while started.elapsed() < TIMEOUT {
        assert!(get_ok(addr).await, "an ordinary client is served beside the slow ones");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for l in loris {
        let lived = l.await.unwrap();
        assert!(lived >= TIMEOUT - Duration::from_millis(200), "cut after only {lived:?}");
        assert!(lived <= TIMEOUT + Duration::from_secs(5), "cut only after {lived:?}");
    }
    assert!(get_ok(addr).await);

    // An idle keep-alive connection does not hold up shutdown.
    let _idle = TcpStream::connect(addr).await.unwrap();
    stop_tx.send(()).unwrap();
    let stopped = tokio::time::timeout(Duration::from_secs(5), server).await;
    assert!(matches!(stopped, Ok(Ok(Ok(())))), "{stopped:?}");
}
