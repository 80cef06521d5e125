//! Server bootstrap shared by every service: bind first (so tests learn the real port), the
//! health and readiness routes, and a graceful shutdown that drains in-flight requests until
//! a deadline.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use futures_util::future::BoxFuture;
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// How long in-flight requests may run on after shutdown was asked for.
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

/// Serves `app` on `listener` until `shutdown` resolves, then drains in-flight requests for at
/// most `drain` before returning.
pub async fn serve<F>(listener: TcpListener, app: Router, shutdown: F, drain: Duration) -> std::io::Result<()>
where
    F: Future<Output = ()> + Send + 'static,
{
    let (stopping_tx, mut stopping_rx) = watch::channel(false);
    let server = axum::serve(listener, app).with_graceful_shutdown(async move {
        shutdown.await;
        let _ = stopping_tx.send(true);
    });
    let deadline = async move {
        if stopping_rx.wait_for(|stopping| *stopping).await.is_err() {
            std::future::pending::<()>().await;
        }
        tokio::time::sleep(drain).await;
    };
    tokio::select! {
        result = server => result,
        () = deadline => {
            tracing::warn!(drain_secs = drain.as_secs_f64(), "drain deadline passed; dropping in-flight requests");
            Ok(())
        }
    }
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
