//! Request-fact lake: per-request facts ingested strictly and durably (WAL with group commit),
//! stored as Parquet in an Apache Iceberg table (`request_facts`), rolled up into `metrics_1m`
//! with mergeable latency sketches, and queried with DataFusion for the Service Health page.

pub mod access;
pub mod config;
pub mod dashboard;
pub mod http;
pub mod lake;
pub mod markers;
pub mod model;
pub mod objstore;
pub mod pipeline;
pub mod read;
pub mod sketch;
pub mod sql;
pub mod sqltable;
pub mod validate;
pub mod wal;

/// Hash maps and sets of the hot loops (ingest dedup, rollup, dashboard): foldhash instead of
/// SipHash, which was a visible share of their CPU. Seeded per process like std's, so a client
/// choosing `event_id`s cannot precompute collisions.
pub(crate) type FastMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;
pub(crate) type FastSet<T> = std::collections::HashSet<T, foldhash::fast::RandomState>;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use axum::Router;
use service_kit::config::Snapshot;
use service_kit::metrics::Metrics;
use service_kit::{ConfigStore, JwtKeys, Secret, server};
use tokio::net::TcpListener;
use tokio::sync::watch;

pub use config::FactsConfig;
pub use model::RequestFact;
pub use pipeline::{Engine, Settings};

/// Service name in metrics, logs and `/config`.
pub const SERVICE: &str = "facts";

/// Default listener (DESIGN §6).
pub const DEFAULT_LISTEN: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 8104);
/// Default directory of the WAL, the Iceberg catalog and the local warehouse.
pub const DEFAULT_DATA_DIR: &str = "facts-data";
/// Default log filter.
pub const DEFAULT_LOG: &str = "info";

/// OpenAPI description of the facts service's API (`/api/v1/*` and the shared internal routes).
pub fn openapi() -> utoipa::openapi::OpenApi {
    let mut doc = <http::FactsApi as utoipa::OpenApi>::openapi();
    doc.merge(service_kit::openapi::internal_api());
    doc
}

/// [`openapi`] as JSON, with the lake's config schema on its `/config` routes (the one
/// `GET /config/schema` serves), as the `observastack openapi` documents carry theirs.
pub fn openapi_json() -> anyhow::Result<serde_json::Value> {
    let mut doc = serde_json::to_value(openapi())?;
    let config = service_kit::config::json_schema::<FactsConfig>()?;
    service_kit::openapi::add_config_schema(&mut doc, config)
        .map_err(|e| anyhow::anyhow!("the config schema of facts: {e}"))?;
    // A JSON body is one fact or a non-empty array of them (utoipa can describe neither the
    // choice nor `minItems` on a request body's `Vec`).
    let fact = serde_json::json!({ "$ref": "#/components/schemas/RequestFact" });
    let body = doc
        .pointer_mut("/paths/~1api~1v1~1facts/post/requestBody/content/application~1json/schema")
        .ok_or_else(|| anyhow::anyhow!("the document has no JSON body for POST /api/v1/facts"))?;
    *body = serde_json::json!({ "oneOf": [fact, { "type": "array", "items": fact, "minItems": 1 }] });
    Ok(doc)
}

/// A built facts service: bound listener, engine and router, ready to serve.
#[derive(Debug)]
pub struct Application {
    listener: TcpListener,
    pub engine: Arc<Engine>,
    store: Arc<ConfigStore<FactsConfig>>,
    router: Router,
}

/// Service options beyond the engine's.
#[derive(Debug, Clone)]
pub struct Options {
    /// Verify the tokens of ingest, SQL, maintenance and `/config`.
    pub keys: Arc<JwtKeys>,
    /// PostgreSQL URL of the orchestrator's database, for config-change markers.
    pub database_url: Option<Secret<String>>,
    /// Largest ingest body; default [`http::DEFAULT_MAX_BODY_BYTES`].
    pub max_body_bytes: Option<usize>,
    /// `/config` at revision 1; `None`: the defaults with the engine's flush and rollup intervals.
    pub initial_config: Option<FactsConfig>,
    /// Worker threads of the SQL runtime; default half the cores (at least one).
    pub sql_threads: Option<usize>,
}

impl Options {
    pub fn new(keys: Arc<JwtKeys>) -> Self {
        Self { keys, database_url: None, max_body_bytes: None, initial_config: None, sql_threads: None }
    }
}

impl Application {
    /// Binds first (the real port is known before anything else starts), then opens the lake.
    pub async fn build(addr: SocketAddr, settings: Settings, options: Options) -> anyhow::Result<Self> {
        let listener = server::bind(addr).await?;
        let initial = options.initial_config.clone().unwrap_or_else(|| FactsConfig {
            flush_interval_ms: u64::try_from(settings.flush_interval.as_millis()).unwrap_or(u64::MAX),
            rollup_interval_secs: settings.rollup_interval.as_secs(),
            ..FactsConfig::default()
        });
        let metrics = Metrics::new(SERVICE);
        let store = ConfigStore::new(SERVICE, initial, metrics.clone()).map_err(|err| {
            anyhow::anyhow!("the initial facts configuration is invalid (flush interval 100 ms to 1 h, rollup 1 min to 1 day): {err}")
        })?;
        let engine = Engine::open(settings).await?;
        let markers = options.database_url.as_ref().map(|url| markers::MarkerSource::new(url.expose())).transpose()?;
        let max_body = options.max_body_bytes.unwrap_or(http::DEFAULT_MAX_BODY_BYTES);
        let sql_threads = options
            .sql_threads
            .unwrap_or_else(|| std::thread::available_parallelism().map(|n| n.get() / 2).unwrap_or(1).max(1));
        let sql = sql::SqlRunner::new(sql_threads).context("cannot start the SQL runtime")?;
        let state = http::AppState::new(engine.clone(), markers, store.clone(), sql, &metrics, max_body);
        let router = service_kit::app::with_json_fallbacks(http::router(state, &options.keys).merge(
            service_kit::app::internal_routes(
                metrics.clone(),
                store.clone(),
                options.keys.clone(),
                server::always_ready(),
            ),
        ));
        let router = service_kit::app::observed(router, metrics);
        Ok(Self { listener, engine, store, router })
    }

    /// The live runtime configuration (also served at `/config`).
    pub fn config_store(&self) -> Arc<ConfigStore<FactsConfig>> {
        self.store.clone()
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown` resolves, running the flush and rollup schedules; flushes the
    /// WAL into Iceberg once more on the way out.
    pub async fn run(self, shutdown: impl std::future::Future<Output = ()> + Send + 'static) -> anyhow::Result<()> {
        let engine = self.engine.clone();
        let jobs = tokio::spawn(schedules(engine.clone(), self.store.subscribe()));
        server::serve(self.listener, self.router, shutdown, Duration::from_secs(10)).await?;
        jobs.abort();
        if let Err(err) = engine.flush().await {
            tracing::error!(error = format!("{err:#}"), "final flush failed; the WAL keeps the facts");
        }
        Ok(())
    }
}

/// Flush every `flush_interval` (or early when the tail is large); roll up every
/// `rollup_interval`, both as `/config` says now: a changed interval restarts its clock.
/// Failures are logged and retried at the next tick: the WAL keeps the facts.
async fn schedules(engine: Arc<Engine>, mut config: watch::Receiver<Arc<Snapshot<FactsConfig>>>) {
    let every = |period: Duration| {
        let mut interval = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        interval
    };
    let current = config.borrow_and_update().clone();
    let (mut flush_every, mut rollup_every) = (current.flush_interval(), current.rollup_interval());
    let mut flush = every(flush_every);
    let mut rollup = every(rollup_every);
    loop {
        tokio::select! {
            changed = config.changed() => {
                if changed.is_err() {
                    // The store is gone: the service is shutting down.
                    return;
                }
                let current = config.borrow_and_update().clone();
                if current.flush_interval() != flush_every {
                    flush_every = current.flush_interval();
                    flush = every(flush_every);
                }
                if current.rollup_interval() != rollup_every {
                    rollup_every = current.rollup_interval();
                    rollup = every(rollup_every);
                }
            }
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
        let doc = super::openapi_json().unwrap_or_else(|e| panic!("{e:#}"));
        let mut current = serde_json::to_string_pretty(&doc).unwrap_or_else(|e| panic!("{e}"));
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
