//! Runs and their timelines in PostgreSQL, in the `orchestrator` schema of the stack's
//! database. The schema is selected with `search_path`, so sqlx keeps its own
//! `_sqlx_migrations` table there too and never touches the shop's.

use std::time::Duration;

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use serde_json::Value;
use service_kit::Role;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Connection as _, PgConnection, PgPool};
use uuid::Uuid;

use crate::model::{Completed, Entry, RunState, RunSummary, TimelineEntry};

/// Schema holding every orchestrator table.
pub const SCHEMA: &str = "orchestrator";

/// Migrations, embedded at build time; run inside [`SCHEMA`].
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// Runs newest first, at most this many per `GET /api/runs`.
pub const MAX_LIST: i64 = 200;

/// Connects (retrying refused connections for up to `connect_timeout`), creates the schema and
/// runs the migrations in it.
pub async fn connect(url: &str, connect_timeout: Duration) -> anyhow::Result<PgPool> {
    let options: PgConnectOptions =
        url.parse().context("the database URL is not a valid PostgreSQL URL (postgres://user@host:port/db)")?;
    let options = options.application_name("observastack-orchestrator");
    let target =
        format!("{}:{}/{}", options.get_host(), options.get_port(), options.get_database().unwrap_or("(default)"));
    let deadline = tokio::time::Instant::now() + connect_timeout;
    let mut conn = loop {
        match PgConnection::connect_with(&options).await {
            Ok(conn) => break conn,
            Err(err) if tokio::time::Instant::now() >= deadline => {
                return Err(err).with_context(|| format!("cannot connect to PostgreSQL at {target}"));
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(250)).await,
        }
    };
    match sqlx::raw_sql(&format!("CREATE SCHEMA IF NOT EXISTS {SCHEMA}")).execute(&mut conn).await {
        Ok(_) => {}
        // Two orchestrators starting on a fresh database race here; the loser finds it made.
        Err(sqlx::Error::Database(err)) if err.code().as_deref() == Some("23505") => {}
        Err(err) => return Err(err).with_context(|| format!("cannot create schema {SCHEMA} in {target}")),
    }
    conn.close().await.ok();
    let pool = PgPoolOptions::new()
        .max_connections(5)
        .acquire_timeout(Duration::from_secs(5))
        .connect_with(options.options([("search_path", SCHEMA)]))
        .await
        .with_context(|| format!("cannot connect to PostgreSQL at {target}"))?;
    MIGRATOR.run(&pool).await.with_context(|| format!("cannot migrate the {SCHEMA} schema in {target}"))?;
    Ok(pool)
}

/// A run row.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct RunRow {
    pub id: Uuid,
    pub scenario_id: String,
    pub scenario: Value,
    pub params: Value,
    pub state: String,
    pub started_by: String,
    pub started_by_role: String,
    pub started_at: DateTime<Utc>,
    pub baseline_at: Option<DateTime<Utc>>,
    pub incident_at: Option<DateTime<Utc>>,
    pub recovering_at: Option<DateTime<Utc>>,
    pub ended_at: Option<DateTime<Utc>>,
    pub end_reason: Option<String>,
    pub result: Option<Value>,
}

impl RunRow {
    pub fn state(&self) -> RunState {
        RunState::parse(&self.state).unwrap_or(RunState::Abandoned)
    }

    pub fn time_scale(&self) -> f64 {
        self.params.get("time_scale").and_then(Value::as_f64).unwrap_or(1.0)
    }

    pub fn summary(&self) -> RunSummary {
        RunSummary {
            id: self.id,
            scenario_id: self.scenario_id.clone(),
            scenario_title: self.scenario.get("title").and_then(Value::as_str).unwrap_or_default().to_owned(),
            state: self.state(),
            time_scale: self.time_scale(),
            started_by: self.started_by.clone(),
            started_by_role: self.started_by_role.parse().unwrap_or(Role::Learner),
            started_at: self.started_at,
            baseline_at: self.baseline_at,
            incident_at: self.incident_at,
            recovering_at: self.recovering_at,
            ended_at: self.ended_at,
            end_reason: self.end_reason.clone(),
            result: self.result.clone().and_then(|r| serde_json::from_value::<Completed>(r).ok()),
        }
    }
}

const RUN_COLUMNS: &str = "id, scenario_id, scenario, params, state, started_by, started_by_role, started_at, \
     baseline_at, incident_at, recovering_at, ended_at, end_reason, result";

/// Why a run could not be inserted.
#[derive(Debug, thiserror::Error)]
pub enum InsertError {
    #[error("a run is already active")]
    Active,
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

/// Inserts a new active run; the partial unique index refuses a second active one.
pub async fn insert_run(db: &PgPool, run: &RunRow) -> Result<(), InsertError> {
    let inserted = sqlx::query(
        "INSERT INTO runs (id, scenario_id, scenario, params, state, started_by, started_by_role, started_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(run.id)
    .bind(&run.scenario_id)
    .bind(&run.scenario)
    .bind(&run.params)
    .bind(&run.state)
    .bind(&run.started_by)
    .bind(&run.started_by_role)
    .bind(run.started_at)
    .execute(db)
    .await;
    match inserted {
        Ok(_) => Ok(()),
        Err(sqlx::Error::Database(err)) if err.constraint() == Some("runs_one_active") => Err(InsertError::Active),
        Err(err) => Err(InsertError::Db(err)),
    }
}

/// Writes the mutable columns of `run` (state, phase timestamps, end, result).
pub async fn save_run(db: &PgPool, run: &RunRow) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE runs SET state = $2, baseline_at = $3, incident_at = $4, recovering_at = $5, ended_at = $6, \
         end_reason = $7, result = $8 WHERE id = $1",
    )
    .bind(run.id)
    .bind(&run.state)
    .bind(run.baseline_at)
    .bind(run.incident_at)
    .bind(run.recovering_at)
    .bind(run.ended_at)
    .bind(&run.end_reason)
    .bind(&run.result)
    .execute(db)
    .await
    .map(drop)
}

pub async fn active_run(db: &PgPool) -> sqlx::Result<Option<RunRow>> {
    sqlx::query_as(&format!("SELECT {RUN_COLUMNS} FROM runs WHERE ended_at IS NULL LIMIT 1")).fetch_optional(db).await
}

pub async fn run(db: &PgPool, id: Uuid) -> sqlx::Result<Option<RunRow>> {
    sqlx::query_as(&format!("SELECT {RUN_COLUMNS} FROM runs WHERE id = $1")).bind(id).fetch_optional(db).await
}

/// Runs newest first.
pub async fn list_runs(db: &PgPool, limit: i64) -> sqlx::Result<Vec<RunRow>> {
    sqlx::query_as(&format!("SELECT {RUN_COLUMNS} FROM runs ORDER BY started_at DESC, id DESC LIMIT $1"))
        .bind(limit.clamp(1, MAX_LIST))
        .fetch_all(db)
        .await
}

/// Whether a run of `scenario_id` was resolved or given up: its solution may then be shown to
/// learners. A stopped or reset run (`abandoned`) reveals nothing, or "start, stop, read the
/// answer" would be a way to solve it.
pub async fn scenario_revealed(db: &PgPool, scenario_id: &str) -> sqlx::Result<bool> {
    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM runs WHERE scenario_id = $1 AND state IN ('resolved', 'gave_up'))")
        .bind(scenario_id)
        .fetch_one(db)
        .await
}

pub async fn append_event(db: &PgPool, run_id: Uuid, entry: &TimelineEntry) -> anyhow::Result<()> {
    let payload = serde_json::to_value(&entry.entry)?;
    sqlx::query("INSERT INTO run_events (run_id, seq, at, kind, payload) VALUES ($1, $2, $3, $4, $5)")
        .bind(run_id)
        .bind(entry.seq)
        .bind(entry.at)
        .bind(entry.entry.kind())
        .bind(payload)
        .execute(db)
        .await?;
    Ok(())
}

/// A run's timeline in order. Entries this build cannot read (written by a newer one) are
/// skipped with a warning rather than failing the whole history.
pub async fn events(db: &PgPool, run_id: Uuid) -> sqlx::Result<Vec<TimelineEntry>> {
    let rows: Vec<(i32, DateTime<Utc>, Value)> =
        sqlx::query_as("SELECT seq, at, payload FROM run_events WHERE run_id = $1 ORDER BY seq")
            .bind(run_id)
            .fetch_all(db)
            .await?;
    Ok(rows
        .into_iter()
        .filter_map(|(seq, at, payload)| match serde_json::from_value::<Entry>(payload) {
            Ok(entry) => Some(TimelineEntry { seq, at, entry }),
            Err(err) => {
                tracing::warn!(%run_id, seq, error = %err, "skipping an unreadable timeline entry");
                None
            }
        })
        .collect())
}

pub async fn ready(db: &PgPool) -> Result<(), String> {
    match tokio::time::timeout(Duration::from_secs(1), sqlx::query("SELECT 1").execute(db)).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(err)) => Err(format!("database: {err}")),
        Err(_) => Err("database: no answer within 1s".to_owned()),
    }
}
