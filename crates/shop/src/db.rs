//! PostgreSQL access: a connection pool that can be resized live, acquires bounded by
//! `db.acquire_timeout_ms` (a saturated or unreachable database answers 503, never hangs), pool
//! metrics, query spans, and the mapping of database errors to HTTP.

use std::ops::{Deref, DerefMut};
use std::sync::RwLock;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use prometheus::IntGauge;
use service_kit::ApiError;
use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{PgConnection, PgPool, Postgres};
use tracing::Instrument as _;

use crate::config::DbConfig;
use crate::metrics::ShopMetrics;

/// Schema migrations, embedded at build time.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// Server-side ceiling for one statement, so a stuck query frees its connection eventually.
const STATEMENT_TIMEOUT: &str = "10s";

/// How long `/readyz` waits for `SELECT 1`.
const READY_TIMEOUT: Duration = Duration::from_secs(1);

/// Seconds a client should wait before retrying after a 503 from the database layer.
const RETRY_AFTER_SECS: u64 = 1;

/// The pool in force, with the size it was built for and a generation number that tells
/// waiters whether the pool they queued on has been replaced.
struct LivePool {
    pool: PgPool,
    size: u32,
    generation: u64,
}

pub struct Database {
    options: PgConnectOptions,
    target: String,
    live: RwLock<LivePool>,
    metrics: ShopMetrics,
}

impl std::fmt::Debug for Database {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Database").field("target", &self.target).finish_non_exhaustive()
    }
}

/// `host:port/database` of a connection URL, for messages (never the password).
pub fn describe_url(options: &PgConnectOptions) -> String {
    format!("{}:{}/{}", options.get_host(), options.get_port(), options.get_database().unwrap_or("(default)"))
}

fn pool_options(size: u32) -> PgPoolOptions {
    // The pool's own acquire timeout is the ceiling of the config range; the live value of
    // `db.acquire_timeout_ms` is enforced around each acquire, so changing it needs no new pool.
    PgPoolOptions::new().max_connections(size).min_connections(0).acquire_timeout(Duration::from_secs(60))
}

impl Database {
    /// Connects to `url` (retrying refused connections for up to `connect_timeout`, so the shop
    /// may start alongside PostgreSQL) and runs the migrations.
    pub async fn connect(
        url: &str,
        config: &DbConfig,
        connect_timeout: Duration,
        metrics: ShopMetrics,
    ) -> anyhow::Result<Self> {
        let options: PgConnectOptions =
            url.parse().context("the database URL is not a valid PostgreSQL URL (postgres://user@host:port/db)")?;
        let options = options.application_name("observastack-shop").options([("statement_timeout", STATEMENT_TIMEOUT)]);
        let target = describe_url(&options);
        let pool = pool_options(config.pool_size).connect_lazy_with(options.clone());
        let probe = async {
            let mut conn = pool.acquire().await?;
            sqlx::query("SELECT 1").execute(&mut *conn).await.map(drop)
        };
        match tokio::time::timeout(connect_timeout, probe).await {
            Ok(Ok(())) => {}
            Ok(Err(err)) => return Err(err).with_context(|| format!("cannot connect to PostgreSQL at {target}")),
            Err(_) => anyhow::bail!(
                "cannot connect to PostgreSQL at {target}: no connection within {connect_timeout:?} (is it running?)"
            ),
        }
        MIGRATOR.run(&pool).await.with_context(|| format!("cannot migrate the shop schema in {target}"))?;
        metrics.db_pool_size.set(i64::from(config.pool_size));
        Ok(Self {
            options,
            target,
            live: RwLock::new(LivePool { pool, size: config.pool_size, generation: 0 }),
            metrics,
        })
    }

    /// `host:port/database` this shop talks to.
    pub fn target(&self) -> &str {
        &self.target
    }

    /// The pool in force now.
    pub fn pool(&self) -> PgPool {
        self.live_pool().0
    }

    fn live_pool(&self) -> (PgPool, u64) {
        let live = self.live.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        (live.pool.clone(), live.generation)
    }

    /// Brings the pool in line with `config`: a new `pool_size` builds a new pool and swaps it
    /// in; the old one closes once its checked-out connections come back. Idempotent, so both
    /// the config watcher and the request path may call it.
    pub fn sync(&self, config: &DbConfig) {
        {
            let live = self.live.read().unwrap_or_else(std::sync::PoisonError::into_inner);
            if live.size == config.pool_size {
                return;
            }
        }
        let mut live = self.live.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        if live.size == config.pool_size {
            return;
        }
        let pool = pool_options(config.pool_size).connect_lazy_with(self.options.clone());
        let generation = live.generation.wrapping_add(1);
        let old = std::mem::replace(&mut *live, LivePool { pool, size: config.pool_size, generation });
        drop(live);
        self.metrics.db_pool_size.set(i64::from(config.pool_size));
        tracing::info!(old_size = old.size, new_size = config.pool_size, "database pool resized");
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn(async move { old.pool.close().await });
        }
    }

    /// Checks a connection out of the live pool, giving up after `config.acquire_timeout_ms`
    /// with a 503 that tells the client to retry.
    pub async fn acquire(&self, config: &DbConfig) -> Result<DbConn, ApiError> {
        self.sync(config);
        let timeout = Duration::from_millis(u64::from(config.acquire_timeout_ms));
        let span = tracing::info_span!("db.acquire", db.system = "postgresql", otel.kind = "internal");
        async {
            let waiting = GaugeGuard::inc(&self.metrics.db_pool_waiting);
            let start = Instant::now();
            let deadline = tokio::time::Instant::now() + timeout;
            let result = loop {
                let (pool, generation) = self.live_pool();
                let result = tokio::time::timeout_at(deadline, pool.acquire()).await;
                // A resize closed the pool this request queued on: queue again on the new one.
                if matches!(result, Ok(Err(sqlx::Error::PoolClosed))) && self.live_pool().1 != generation {
                    continue;
                }
                break result;
            };
            drop(waiting);
            self.metrics.db_acquire_duration.observe(start.elapsed().as_secs_f64());
            match result {
                Ok(Ok(conn)) => Ok(DbConn { conn, _in_use: GaugeGuard::inc(&self.metrics.db_pool_in_use) }),
                Err(_) | Ok(Err(sqlx::Error::PoolTimedOut)) => {
                    self.metrics.db_acquire_timeouts.inc();
                    tracing::warn!(timeout_ms = config.acquire_timeout_ms, "no database connection within the timeout");
                    Err(ApiError::Unavailable {
                        message: format!(
                            "no database connection became free within {} ms; retry later",
                            config.acquire_timeout_ms
                        ),
                        retry_after_secs: RETRY_AFTER_SECS,
                    })
                }
                // Whatever stopped the pool from producing a connection (refused, not accepting
                // connections, authentication gone), the database is unavailable to this request.
                Ok(Err(err)) => {
                    tracing::warn!(error = %err, "cannot get a database connection");
                    Err(ApiError::Unavailable {
                        message: "the database is unavailable; retry later".to_owned(),
                        retry_after_secs: RETRY_AFTER_SECS,
                    })
                }
            }
        }
        .instrument(span)
        .await
    }

    /// Readiness: `SELECT 1` on the live pool within a short timeout.
    pub async fn ready(&self) -> Result<(), String> {
        let pool = self.pool();
        let probe = async {
            let mut conn = pool.acquire().await?;
            sqlx::query("SELECT 1").execute(&mut *conn).await
        };
        match tokio::time::timeout(READY_TIMEOUT, probe).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(err)) => Err(format!("PostgreSQL at {} is not usable: {err}", self.target)),
            Err(_) => Err(format!("PostgreSQL at {} did not answer within {READY_TIMEOUT:?}", self.target)),
        }
    }

    /// Closes the live pool (at shutdown).
    pub async fn close(&self) {
        self.pool().close().await;
    }
}

/// Increments a gauge for as long as it lives, so cancelled futures cannot leave it high.
struct GaugeGuard(IntGauge);

impl GaugeGuard {
    fn inc(gauge: &IntGauge) -> Self {
        gauge.inc();
        Self(gauge.clone())
    }
}

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// A pooled connection counted in `shop_db_pool_in_use` until it goes back to the pool.
pub struct DbConn {
    conn: PoolConnection<Postgres>,
    _in_use: GaugeGuard,
}

impl std::fmt::Debug for DbConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DbConn")
    }
}

impl Deref for DbConn {
    type Target = PgConnection;
    fn deref(&self) -> &PgConnection {
        &self.conn
    }
}

impl DerefMut for DbConn {
    fn deref_mut(&mut self) -> &mut PgConnection {
        &mut self.conn
    }
}

/// A client span for one statement; `name` is a short statement summary such as
/// `SELECT products`, so traces read gateway → shop → PostgreSQL without full SQL text.
pub fn query_span(name: &'static str) -> tracing::Span {
    tracing::info_span!(
        "db.query",
        otel.name = name,
        otel.kind = "client",
        db.system = "postgresql",
        db.statement = name,
    )
}

/// Database failures the client can retry (the database is down, restarting, overloaded or
/// cancelled the statement) become 503; anything else is an internal error.
pub fn db_error(err: sqlx::Error) -> ApiError {
    let transient = match &err {
        sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => db.code().is_some_and(|code| {
            // 08: connection exception, 53: insufficient resources, 57P: operator intervention
            // (shutdown, restart), 57014: statement timeout, 40001/40P01: serialization/deadlock.
            code.starts_with("08")
                || code.starts_with("53")
                || code.starts_with("57P")
                || code == "57014"
                || code == "40001"
                || code == "40P01"
        }),
        _ => false,
    };
    if transient {
        tracing::warn!(error = %err, "database unavailable");
        ApiError::Unavailable {
            message: "the database is unavailable; retry later".to_owned(),
            retry_after_secs: RETRY_AFTER_SECS,
        }
    } else {
        ApiError::Internal(anyhow::Error::new(err).context("database error"))
    }
}
