//! Request-fact lake: per-request facts ingested strictly and durably (WAL with group commit),
//! stored as Parquet in an Apache Iceberg table (`request_facts`), rolled up into `metrics_1m`
//! with mergeable latency sketches, and queried with DataFusion for the Service Health page.

pub mod dashboard;
pub mod engine;
pub mod http;
pub mod lake;
pub mod markers;
pub mod model;
pub mod objstore;
pub mod read;
pub mod sketch;
pub mod sqltable;
pub mod validate;
pub mod wal;

/// Hash maps and sets of the hot loops (ingest dedup, rollup, dashboard): foldhash instead of
/// SipHash, which was a visible share of their CPU. Seeded per process like std's, so a client
/// choosing `event_id`s cannot precompute collisions.
pub(crate) type FastMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;
pub(crate) type FastSet<T> = std::collections::HashSet<T, foldhash::fast::RandomState>;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use service_kit::metrics::{self, Metrics};
use service_kit::server;
use tokio::net::TcpListener;

pub use engine::{Engine, Settings};
pub use model::RequestFact;

/// OpenAPI description of the facts service's API (`/api/v1/*`).
pub fn openapi() -> utoipa::openapi::OpenApi {
    <http::FactsApi as utoipa::OpenApi>::openapi()
}

/// A built facts service: bound listener, engine and router, ready to serve.
#[derive(Debug)]
pub struct Application {
    listener: TcpListener,
    pub engine: Arc<Engine>,
    router: Router,
}

/// Service options beyond the engine's.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// PostgreSQL URL of the orchestrator's database, for config-change markers.
    pub database_url: Option<String>,
    /// Largest ingest body; default [`http::DEFAULT_MAX_BODY_BYTES`].
    pub max_body_bytes: Option<usize>,
}

impl Application {
    /// Binds first (the real port is known before anything else starts), then opens the lake.
    pub async fn build(addr: SocketAddr, settings: Settings, options: Options) -> anyhow::Result<Self> {
        let listener = server::bind(addr).await?;
        let engine = Engine::open(settings).await?;
        let metrics = Metrics::new("facts");
        let markers = options.database_url.as_deref().map(markers::MarkerSource::new).transpose()?;
        let max_body = options.max_body_bytes.unwrap_or(http::DEFAULT_MAX_BODY_BYTES);
        let state = http::AppState::new(engine.clone(), markers, &metrics, max_body);
        let api = http::router(state);
        let router = Router::new()
            .merge(api)
            .merge(server::health_router("facts", server::always_ready()))
            .route("/metrics", get(metrics::metrics_handler).with_state(metrics.clone()));
        let router = service_kit::app::observed(router, metrics);
        Ok(Self { listener, engine, router })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown` resolves, running the flush and rollup schedules; flushes the
    /// WAL into Iceberg once more on the way out.
    pub async fn run(self, shutdown: impl std::future::Future<Output = ()> + Send + 'static) -> anyhow::Result<()> {
        let engine = self.engine.clone();
        let jobs = tokio::spawn(schedules(engine.clone()));
        server::serve(self.listener, self.router, shutdown, Duration::from_secs(10)).await?;
        jobs.abort();
        if let Err(err) = engine.flush().await {
            tracing::error!(error = format!("{err:#}"), "final flush failed; the WAL keeps the facts");
        }
        Ok(())
    }
}

/// Flush every `flush_interval` (or early when the tail is large); roll up every
/// `rollup_interval`. Failures are logged and retried at the next tick: the WAL keeps the facts.
async fn schedules(engine: Arc<Engine>) {
    let mut flush = tokio::time::interval(engine.settings.flush_interval);
    let mut rollup = tokio::time::interval(engine.settings.rollup_interval);
    flush.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    rollup.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    flush.tick().await;
    rollup.tick().await;
    loop {
        tokio::select! {
            _ = flush.tick() => run_flush(&engine).await,
            () = engine.flush_wanted() => run_flush(&engine).await,
            _ = rollup.tick() => {
                match engine.rollup(chrono::Utc::now()).await {
                    Ok(outcome) => tracing::info!(run_id = outcome.run_id, facts = outcome.facts, rows = outcome.rows, "rollup done"),
                    Err(err) => tracing::error!(error = format!("{err:#}"), "rollup failed"),
                }
            }
        }
    }
}

async fn run_flush(engine: &Engine) {
    match engine.flush().await {
        Ok(0) => {}
        Ok(n) => tracing::info!(facts = n, "flushed facts to Iceberg"),
        Err(err) => tracing::error!(error = format!("{err:#}"), "flush failed"),
    }
}

#[cfg(test)]
mod tests {
    /// `docs/api/facts.json` is the facts service's document; the `observastack` CLI, which
    /// writes the others, does not link the lake. Regenerate with
    /// `OBSERVASTACK_BLESS=1 cargo test --workspace --lib checked_in_openapi_document`.
    #[test]
    fn the_checked_in_openapi_document_matches_the_code() {
        let doc = super::openapi();
        let paths: Vec<&str> = doc.paths.paths.keys().map(String::as_str).collect();
        for path in [
            "/api/v1/facts",
            "/api/v1/dashboard",
            "/api/v1/services",
            "/api/v1/sql",
            "/api/v1/flush",
            "/api/v1/rollup",
            "/api/v1/recompute",
            "/api/v1/status",
        ] {
            assert!(paths.contains(&path), "{path} is missing from {paths:?}");
        }
        let mut current = doc.to_pretty_json().unwrap_or_else(|e| panic!("{e}"));
        current.push('\n');
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/api/facts.json");
        let stored = std::fs::read_to_string(&path).unwrap_or_default();
        if stored != current {
            if std::env::var_os("OBSERVASTACK_BLESS").is_some() {
                std::fs::write(&path, current).unwrap_or_else(|e| panic!("{e}"));
            } else {
                panic!(
                    "{} is out of date; regenerate it with OBSERVASTACK_BLESS=1 cargo test --workspace --lib checked_in_openapi_document",
                    path.display()
                );
            }
        }
    }
}
