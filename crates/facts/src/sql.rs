//! `POST /api/v1/sql` under limits: each statement runs on a small runtime of its own (a heavy
//! query never takes the threads that answer ingest, the dashboard and `/healthz`), with a
//! DataFusion memory pool and no spilling, a deadline after which it is cancelled, and a cap on
//! statements at once.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use datafusion::arrow::json::ArrayWriter;
use datafusion::error::DataFusionError;
use datafusion::execution::context::SQLOptions;
use datafusion::execution::disk_manager::{DiskManagerBuilder, DiskManagerMode};
use datafusion::execution::memory_pool::{GreedyMemoryPool, TrackConsumersPool};
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use serde_json::{Value, json};

use crate::config::SqlLimits;
use crate::lake::{FACTS_TABLE, METRICS_TABLE};
use crate::pipeline::Engine;
use crate::sqltable::SnapshotTable;

/// Why a statement gave no rows.
#[derive(Debug, thiserror::Error)]
pub enum SqlFailure {
    #[error("{running} SQL statement(s) are already running, the most `sql.max_concurrent` allows")]
    Busy { running: usize },
    /// It does not parse or plan, or is not read-only.
    #[error("{0}")]
    Invalid(String),
    /// It failed while running (a cast, a division by zero, …).
    #[error("{0}")]
    Execution(String),
    #[error("the statement ran longer than its {limit:?} time limit (`sql.timeout_ms`) and was cancelled")]
    TimeLimit { limit: Duration },
    #[error("the statement needed more memory than its {limit_mib} MiB limit (`sql.memory_limit_mib`) and was stopped")]
    MemoryLimit { limit_mib: u64, detail: String },
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

/// Runs statements on the SQL runtime; one per service.
pub struct SqlRunner {
    runtime: OwnedRuntime,
    /// Statements whose task has not ended yet (a cancelled one counts until it has stopped).
    running: Arc<AtomicUsize>,
}

impl std::fmt::Debug for SqlRunner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqlRunner").field("running", &self.running.load(Ordering::Relaxed)).finish_non_exhaustive()
    }
}

impl SqlRunner {
    /// Starts the SQL runtime with `threads` workers.
    pub fn new(threads: usize) -> anyhow::Result<Self> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads.max(1))
            .thread_name("facts-sql")
            .enable_all()
            .build()?;
        Ok(Self { runtime: OwnedRuntime(Some(runtime)), running: Arc::default() })
    }

    /// Plans and runs `sql` within `limits`; the rows as a JSON array.
    pub async fn run(&self, engine: Arc<Engine>, sql: String, limits: &SqlLimits) -> Result<Value, SqlFailure> {
        let slot = Slot::take(&self.running, limits.max_concurrent as usize)?;
        let limit = limits.timeout();
        let task = self.runtime.handle()?.spawn({
            let limits = limits.clone();
            async move {
                // Held by the task, so the slot frees when the work has stopped, not when the
                // caller stopped waiting.
                let _slot = slot;
                execute(&engine, &sql, &limits).await
            }
        });
        // Dropped on every way out (the deadline, or the client hanging up): cancels the task,
        // and DataFusion's own tasks with it.
        let _cancel = AbortOnDrop(task.abort_handle());
        match tokio::time::timeout(limit, task).await {
            Ok(Ok(outcome)) => outcome,
            Ok(Err(join)) => Err(SqlFailure::Internal(anyhow::anyhow!("the SQL task failed: {join}"))),
            Err(_) => Err(SqlFailure::TimeLimit { limit }),
        }
    }
}

async fn execute(engine: &Engine, sql: &str, limits: &SqlLimits) -> Result<Value, SqlFailure> {
    let pool = TrackConsumersPool::new(
        GreedyMemoryPool::new(limits.memory_limit_bytes()),
        // The three biggest consumers are named in the error.
        std::num::NonZeroUsize::MIN.saturating_add(2),
    );
    // No disk manager: an operator that would spill fails instead, so the limit is the limit.
    let runtime_env = RuntimeEnvBuilder::new()
        .with_memory_pool(Arc::new(pool))
        .with_disk_manager_builder(DiskManagerBuilder::default().with_mode(DiskManagerMode::Disabled))
        .build_arc()
        .map_err(anyhow::Error::from)?;
    let ctx = crate::read::session_with(engine.lake.storage(), &engine.lake.warehouse, runtime_env)?;
    let facts = SnapshotTable::new(engine.lake.facts_table().await?, "event_time")?;
    let metrics = SnapshotTable::new(engine.lake.metrics_table().await?, "minute")?;
    ctx.register_table(FACTS_TABLE, Arc::new(facts)).map_err(anyhow::Error::from)?;
    ctx.register_table(METRICS_TABLE, Arc::new(metrics)).map_err(anyhow::Error::from)?;
    // No DDL (external tables could read any file), no DML, no SET (which could lift limits).
    let options = SQLOptions::new().with_allow_ddl(false).with_allow_dml(false).with_allow_statements(false);
    let df = ctx.sql_with_options(sql, options).await.map_err(|e| classify(&e, limits, SqlFailure::Invalid))?;
    let batches = df
        .limit(0, Some(limits.max_rows))
        .map_err(anyhow::Error::from)?
        .collect()
        .await
        .map_err(|e| classify(&e, limits, SqlFailure::Execution))?;
    let mut writer = ArrayWriter::new(Vec::new());
    for batch in &batches {
        writer.write(batch).map_err(anyhow::Error::from)?;
    }
    writer.finish().map_err(anyhow::Error::from)?;
    let rows = writer.into_inner();
    if rows.is_empty() { Ok(json!([])) } else { Ok(serde_json::from_slice(&rows).map_err(anyhow::Error::from)?) }
}

/// A pool refusal, however deeply DataFusion wrapped it, is the memory limit; anything else is
/// the statement's own fault.
fn classify(err: &DataFusionError, limits: &SqlLimits, other: fn(String) -> SqlFailure) -> SqlFailure {
    match err.find_root() {
        DataFusionError::ResourcesExhausted(detail) => {
            SqlFailure::MemoryLimit { limit_mib: limits.memory_limit_mib, detail: detail.clone() }
        }
        _ => other(err.strip_backtrace()),
    }
}

/// One of the `max_concurrent` places; freed on drop.
struct Slot(Arc<AtomicUsize>);

impl Slot {
    fn take(running: &Arc<AtomicUsize>, max: usize) -> Result<Self, SqlFailure> {
        let before = running.fetch_add(1, Ordering::AcqRel);
        let slot = Self(running.clone());
        if before >= max {
            return Err(SqlFailure::Busy { running: before });
        }
        Ok(slot)
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The SQL runtime. Dropped with the service, often from inside the main runtime, where
/// dropping a runtime the blocking way panics: so it is shut down in the background.
struct OwnedRuntime(Option<tokio::runtime::Runtime>);

impl OwnedRuntime {
    fn handle(&self) -> anyhow::Result<&tokio::runtime::Handle> {
        self.0.as_ref().map(tokio::runtime::Runtime::handle).ok_or_else(|| anyhow::anyhow!("the SQL runtime is gone"))
    }
}

impl Drop for OwnedRuntime {
    fn drop(&mut self) {
        if let Some(runtime) = self.0.take() {
            runtime.shutdown_background();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slot_beyond_the_cap_is_refused_and_frees_nothing_it_did_not_take() {
        let running = Arc::new(AtomicUsize::new(0));
        let first = Slot::take(&running, 1).unwrap_or_else(|e| panic!("{e}"));
        assert!(matches!(Slot::take(&running, 1), Err(SqlFailure::Busy { running: 1 })));
        assert_eq!(running.load(Ordering::Relaxed), 1);
        drop(first);
        assert_eq!(running.load(Ordering::Relaxed), 0);
        assert!(Slot::take(&running, 1).is_ok());
    }
}
