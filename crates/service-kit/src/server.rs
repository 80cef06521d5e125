//! Server bootstrap shared by every service: bind first (so tests learn the real port), the
//! health and readiness routes, and a graceful shutdown that drains in-flight requests until
//! a deadline.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use futures_util::future::BoxFuture;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::HttpService;
use hyper_util::rt::{TokioIo, TokioTimer};
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tower::Service as _;

/// How long in-flight requests may run on after shutdown was asked for.
/// A service binary's `main`: `run` on `runtime`, and a start-up failure as one clear line on
/// stderr (whatever `RUST_BACKTRACE` says): the supervisor or the operator reads it, and JSON
/// logging may not be running yet.
#[allow(clippy::print_stderr)]
pub fn run_main(
    service: &str,
    runtime: std::io::Result<tokio::runtime::Runtime>,
    run: impl Future<Output = anyhow::Result<()>>,
) -> std::process::ExitCode {
    let outcome = match runtime {
        Ok(runtime) => runtime.block_on(run),
        Err(err) => Err(anyhow::Error::new(err).context("cannot start the async runtime")),
    };
    match outcome {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("{service}: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Env key `observastack up` sets to its own pid on every service it starts.
pub const ENV_SUPERVISOR_PID: &str = "OBSERVASTACK_SUPERVISOR_PID";

/// Under a supervisor (`observastack up`), asks the kernel for SIGTERM when the supervisor dies,
/// even by SIGKILL, so no service outlives it holding its ports; SIGTERM then drains as usual.
/// Fails when the supervisor is already gone. Without the env key, or off Linux, does nothing.
pub fn follow_supervisor() -> anyhow::Result<()> {
    let Ok(pid) = std::env::var(ENV_SUPERVISOR_PID) else { return Ok(()) };
    let supervisor: i32 =
        pid.parse().map_err(|_| anyhow::anyhow!("{ENV_SUPERVISOR_PID} must be a process id, got `{pid}`"))?;
    #[cfg(target_os = "linux")]
    {
        nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGTERM)?;
        // The supervisor may have died between our fork and the call above.
        if nix::unistd::getppid().as_raw() != supervisor {
            anyhow::bail!("the supervisor (pid {supervisor}) is gone");
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = supervisor;
    Ok(())
}

pub const DEFAULT_DRAIN: Duration = Duration::from_secs(10);

/// Binds `addr`, naming the address in the error (a port in use is the usual cause).
pub async fn bind(addr: SocketAddr) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr).await.map_err(|e| anyhow::anyhow!("cannot listen on {addr}: {e}"))
}

/// Resolves when the process is asked to stop (Ctrl-C or SIGTERM).
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}

/// A client that sends no complete request head within this is dropped (slow-loris guard),
/// unless [`ENV_HEADER_READ_TIMEOUT_MS`] says otherwise.
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Env var overriding [`DEFAULT_HEADER_READ_TIMEOUT`] for every service, in milliseconds.
pub const ENV_HEADER_READ_TIMEOUT_MS: &str = "OBSERVASTACK_HEADER_READ_TIMEOUT_MS";

/// Pause after a failed `accept` (typically out of file descriptors), so the loop backs off
/// instead of spinning.
pub const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// Resolves once `stop` says so, or its sender is gone.
pub async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|stopping| *stopping).await;
}

/// A hyper HTTP/1 connection, whatever its transport and service: what
/// [`spawn_connection`] and [`drive_connection`] run.
pub trait Connection: Future<Output = hyper::Result<()>> + Send + 'static {
    /// Finishes the request in flight, then closes (hyper's graceful shutdown).
    fn graceful_shutdown(self: Pin<&mut Self>);
}

impl<I, S, B> Connection for http1::UpgradeableConnection<I, S>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    S: HttpService<Incoming, ResBody = B> + Send + 'static,
    S::Future: Send,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    fn graceful_shutdown(self: Pin<&mut Self>) {
        http1::UpgradeableConnection::graceful_shutdown(self);
    }
}

/// Runs one connection until it ends, or until `stop`, then closes it once its in-flight
/// request is answered. The task holds a clone of `live` while it runs, so
/// [`wait_for_drain`] sees when the last connection is gone.
pub fn spawn_connection(connection: impl Connection, stop: &watch::Receiver<bool>, live: &watch::Receiver<()>) {
    let mut stop = stop.clone();
    let live = live.clone();
    tokio::spawn(async move {
        let _live = live;
        drive_connection(connection, &mut stop).await;
    });
}

/// Runs one connection until it ends, or until `stop`, then closes it once its in-flight
/// request is answered.
pub async fn drive_connection(connection: impl Connection, stop: &mut watch::Receiver<bool>) {
    tokio::pin!(connection);
    let ended = tokio::select! {
        ended = connection.as_mut() => ended,
        () = stopped(stop) => {
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    if let Err(err) = ended {
        // Client resets, header read timeouts and half-sent requests are routine.
        tracing::debug!(error = %err, "connection ended with an error");
    }
}

/// Waits until every connection spawned with a receiver of `live` has ended (the caller has
/// dropped its own receiver), or `drain` has passed.
pub async fn wait_for_drain(live: watch::Sender<()>, drain: Duration) {
    tokio::select! {
        () = live.closed() => {}
        () = tokio::time::sleep(drain) => {
            tracing::warn!(drain_secs = drain.as_secs_f64(), "drain deadline passed; dropping in-flight requests");
        }
    }
}

/// The header read timeout in force: [`ENV_HEADER_READ_TIMEOUT_MS`] when it holds a positive
/// whole number of milliseconds, else the default (a bad value is logged, never fatal).
pub fn header_read_timeout_from_env() -> Duration {
    parse_header_read_timeout(std::env::var(ENV_HEADER_READ_TIMEOUT_MS).ok().as_deref())
}

fn parse_header_read_timeout(value: Option<&str>) -> Duration {
    match value.map(|v| v.trim().parse::<u64>()) {
        None => DEFAULT_HEADER_READ_TIMEOUT,
        Some(Ok(ms)) if ms > 0 => Duration::from_millis(ms),
        Some(_) => {
            tracing::warn!(
                env = ENV_HEADER_READ_TIMEOUT_MS,
                "not a positive number of milliseconds; using the default of 30 s"
            );
            DEFAULT_HEADER_READ_TIMEOUT
        }
    }
}

/// Serves `app` on `listener` until `shutdown` resolves, then drains in-flight requests for at
/// most `drain` before returning. The header read timeout comes from the environment.
pub async fn serve<F>(listener: TcpListener, app: Router, shutdown: F, drain: Duration) -> std::io::Result<()>
where
    F: Future<Output = ()> + Send + 'static,
{
    serve_with(listener, app, shutdown, drain, header_read_timeout_from_env()).await
}

/// [`serve`] with an explicit header read timeout. `axum::serve` sets no timer, so hyper would
/// wait forever for a request head; this loop sets one. Upgraded connections (WebSockets) are
/// not HTTP any more, which hyper-util's `GracefulShutdown` cannot watch, so the drain is
/// done here: every connection task holds a receiver of `live`.
pub async fn serve_with<F>(
    listener: TcpListener,
    app: Router,
    shutdown: F,
    drain: Duration,
    header_read_timeout: Duration,
) -> std::io::Result<()>
where
    F: Future<Output = ()> + Send + 'static,
{
    let mut builder = http1::Builder::new();
    builder.timer(TokioTimer::new()).header_read_timeout(header_read_timeout);
    let (stop_tx, stop_rx) = watch::channel(false);
    let (live_tx, live_rx) = watch::channel(());
    tokio::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            biased;
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(err) => {
                    tracing::warn!(error = %err, "accept failed");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            },
        };
        let router = app.clone();
        let service = hyper::service::service_fn(move |req: http::Request<Incoming>| {
            router.clone().call(req.map(axum::body::Body::new))
        });
        spawn_connection(builder.serve_connection(TokioIo::new(stream), service).with_upgrades(), &stop_rx, &live_rx);
    }
    drop(listener);
    drop(live_rx);
    let _ = stop_tx.send(true);
    wait_for_drain(live_tx, drain).await;
    Ok(())
}

/// Readiness probe: `Ok` when the service can do its work, `Err(reason)` otherwise.
pub type ReadinessCheck = Arc<dyn Fn() -> BoxFuture<'static, Result<(), String>> + Send + Sync>;

/// `/healthz` (process is alive) and `/readyz` (dependencies reachable, e.g. the database).
pub fn health_router(service: &str, ready: ReadinessCheck) -> Router {
    let service: Arc<str> = Arc::from(service);
    Router::new().route("/healthz", get(healthz)).route("/readyz", get(readyz)).with_state((service, ready))
}

async fn healthz(State((service, _)): State<(Arc<str>, ReadinessCheck)>) -> Json<serde_json::Value> {
    Json(json!({"status": "ok", "service": &*service, "version": crate::VERSION}))
}

async fn readyz(State((service, ready)): State<(Arc<str>, ReadinessCheck)>) -> (StatusCode, Json<serde_json::Value>) {
    match ready().await {
        Ok(()) => (StatusCode::OK, Json(json!({"status": "ready", "service": &*service}))),
        Err(reason) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "not_ready", "service": &*service, "reason": reason})),
        ),
    }
}

/// A readiness check that always passes, for services without dependencies.
pub fn always_ready() -> ReadinessCheck {
    Arc::new(|| Box::pin(async { Ok(()) }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_header_read_timeout_comes_from_a_positive_number_of_milliseconds() {
        assert_eq!(parse_header_read_timeout(None), DEFAULT_HEADER_READ_TIMEOUT);
        assert_eq!(parse_header_read_timeout(Some("1500")), Duration::from_millis(1500));
        assert_eq!(parse_header_read_timeout(Some("0")), DEFAULT_HEADER_READ_TIMEOUT);
        assert_eq!(parse_header_read_timeout(Some("soon")), DEFAULT_HEADER_READ_TIMEOUT);
    }
}
