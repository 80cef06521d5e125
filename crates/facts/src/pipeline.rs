//! The lake's pipeline: durable ingest (dedup → WAL → in-memory tail), flushes of sealed WAL
//! segments into `request_facts`, the `metrics_1m` rollup and the reads behind the dashboard.
//!
//! Durability contract: a batch is acknowledged only after its WAL frame is fsynced; a WAL
//! segment is deleted only after the Iceberg snapshot that holds its facts is committed, and
//! that snapshot records the segment number (`observastack.wal-through`), so a restart never
//! replays committed segments twice.
//!
//! A flush writes the in-memory tail, not a re-read of the WAL: the tail holds exactly the
//! facts of the WAL's segments (each batch is added under the append gate, so a rotate never
//! seals a segment whose batch is not in the tail yet), and reading them back would double the
//! flush's memory and spend ingest's CPU on decoding.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use datafusion::arrow::array::{
    Array, ArrayRef, AsArray as _, BinaryArray, FixedSizeBinaryArray, Float64Array, Int32Array, Int64Array,
    RecordBatch, StringArray, TimestampMicrosecondArray,
};
use datafusion::arrow::datatypes::{DataType, Float64Type, Int32Type, Int64Type};
use serde::{Deserialize, Serialize};
use sketches_ddsketch::DDSketch;
use uuid::Uuid;

use crate::lake::{Lake, RUN_ID_KEY, WAL_THROUGH_KEY, batch_of};
use crate::model::RequestFact;
use crate::objstore::StoreConfig;
use crate::read::{self, micros, strings};
use crate::sketch;
use crate::wal::{self, Wal};
use crate::{FastMap, FastSet};

/// Ids kept for deduplication after their facts left the WAL (about 40 MB).
const RECENT_IDS: usize = 2_000_000;
/// Unflushed facts above which a flush starts early.
const FLUSH_AT_FACTS: usize = 200_000;
/// Unflushed facts above which ingest waits for a flush (backpressure bounds memory when
/// clients post faster than Iceberg commits).
const MAX_UNFLUSHED: usize = 1_000_000;
/// Longest an ingest waits for that flush before answering 503.
const MAX_BACKPRESSURE_WAIT: Duration = Duration::from_secs(30);

/// How often sealed WAL segments are committed to Iceberg, by default.
pub const DEFAULT_FLUSH_INTERVAL: Duration = Duration::from_secs(60);
/// How often the `metrics_1m` rollup runs, by default (hourly, as the seed asks).
pub const DEFAULT_ROLLUP_INTERVAL: Duration = Duration::from_secs(3600);

/// How the engine runs.
#[derive(Debug, Clone)]
pub struct Settings {
    pub data_dir: PathBuf,
    pub store: StoreConfig,
    /// Iceberg warehouse URL; default `file://<data_dir>/warehouse`.
    pub warehouse: Option<String>,
    /// How often sealed WAL segments are committed to Iceberg.
    pub flush_interval: Duration,
    /// How often the `metrics_1m` rollup runs (default hourly, down to one minute).
    pub rollup_interval: Duration,
}

impl Settings {
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            data_dir: data_dir.into(),
            store: StoreConfig::Local,
            warehouse: None,
            flush_interval: DEFAULT_FLUSH_INTERVAL,
            rollup_interval: DEFAULT_ROLLUP_INTERVAL,
        }
    }
}

/// What the rollup has covered, persisted in `<data_dir>/rollup.json`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RollupState {
    /// Every minute before this (Unix seconds) has been rolled up, unless its hour is dirty.
    /// `None` until the first facts are committed.
    pub watermark: Option<i64>,
    /// Hours (Unix seconds) that received late facts after they were rolled up.
    pub dirty_hours: BTreeSet<i64>,
}

struct Tail {
    /// Ids of facts in the WAL plus the most recent flushed ones: the dedup window.
    /// foldhash: SipHash on every acknowledged id was a visible share of ingest's CPU.
    seen: FastSet<Uuid>,
    recent: VecDeque<Uuid>,
    /// Acknowledged facts not yet committed to Iceberg, by WAL segment, one slice per batch
    /// (shared with a running flush without copying).
    unflushed: BTreeMap<u64, Vec<Arc<Vec<RequestFact>>>>,
    unflushed_count: usize,
}

/// Outcome of one accepted batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct IngestOutcome {
    pub accepted: usize,
    pub duplicates: usize,
}

/// Outcome of one rollup run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct RollupOutcome {
    pub run_id: i64,
    /// Facts read (after deduplication by `event_id`).
    pub facts: u64,
    pub rows: usize,
    /// Windows rebuilt, `[from, to)` in Unix seconds.
    #[schema(value_type = Vec<Vec<i64>>)]
    pub windows: Vec<(i64, i64)>,
    /// CRC-32 of the rows without their run id: equal for equal facts.
    pub digest: String,
}

/// One `metrics_1m` row; its sketch decoded (`DDSketch`) or encoded (`Vec<u8>`).
#[derive(Clone)]
pub struct MinuteRow<S = DDSketch> {
    pub minute: i64,
    pub service: String,
    pub method: String,
    pub path_template: String,
    pub requests: u64,
    pub errors: u64,
    pub sketch: S,
}

/// A `metrics_1m` row borrowed from where it was read: the dashboard merges rows by the
/// thousand and needs no copy of their strings.
#[derive(Clone, Copy)]
pub struct RowRef<'a> {
    pub minute: i64,
    pub service: &'a str,
    pub method: &'a str,
    pub path_template: &'a str,
    pub requests: u64,
    pub errors: u64,
    pub sketch: &'a DDSketch,
}

impl MinuteRow {
    pub fn as_ref(&self) -> RowRef<'_> {
        RowRef {
            minute: self.minute,
            service: &self.service,
            method: &self.method,
            path_template: &self.path_template,
            requests: self.requests,
            errors: self.errors,
            sketch: &self.sketch,
        }
    }
}

impl<S> std::fmt::Debug for MinuteRow<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MinuteRow")
            .field("minute", &self.minute)
            .field("service", &self.service)
            .field("method", &self.method)
            .field("path_template", &self.path_template)
            .field("requests", &self.requests)
            .field("errors", &self.errors)
            .finish_non_exhaustive()
    }
}

pub struct Engine {
    pub settings: Settings,
    pub lake: Lake,
    wal: Wal,
    tail: Mutex<Tail>,
    state: Mutex<RollupState>,
    /// Flushes and rollups run one at a time: the rollup's view of dirty hours stays exact.
    maintenance: tokio::sync::Mutex<()>,
    flush_wanted: tokio::sync::Notify,
    /// Signalled after every flush, for ingests held back by [`MAX_UNFLUSHED`].
    flushed: tokio::sync::Notify,
    /// Held shared from a batch's WAL append until it is in the tail, and exclusively by a
    /// flush's rotate: every batch in a sealed segment is then in the tail.
    append_gate: tokio::sync::RwLock<()>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine").field("data_dir", &self.settings.data_dir).finish_non_exhaustive()
    }
}

fn floor(t: i64, step: i64) -> i64 {
    t.div_euclid(step) * step
}

impl Engine {
    /// Opens the lake, drops WAL segments the table already holds and replays the rest.
    pub async fn open(settings: Settings) -> anyhow::Result<Arc<Self>> {
        let lake = Lake::open(&settings.data_dir, settings.store.clone(), settings.warehouse.clone()).await?;
        let wal_dir = settings.data_dir.join("wal");
        let committed = lake.committed_wal_through().await?;
        wal::delete_through(&wal_dir, committed)?;
        let (wal, replayed) = Wal::open(&wal_dir).context("cannot open the WAL")?;
        let mut tail =
            Tail { seen: FastSet::default(), recent: VecDeque::new(), unflushed: BTreeMap::new(), unflushed_count: 0 };
        for segment in replayed {
            let facts: Vec<_> = segment.facts.into_iter().filter(|f| tail.seen.insert(f.event_id)).collect();
            tail.unflushed_count += facts.len();
            tail.unflushed.entry(segment.seq).or_default().push(Arc::new(facts));
        }
        if tail.unflushed_count > 0 {
            tracing::info!(facts = tail.unflushed_count, "replayed acknowledged facts from the WAL");
        }
        let state = load_state(&settings.data_dir)?;
        Ok(Arc::new(Self {
            settings,
            lake,
            wal,
            tail: Mutex::new(tail),
            state: Mutex::new(state),
            maintenance: tokio::sync::Mutex::new(()),
            flush_wanted: tokio::sync::Notify::new(),
            flushed: tokio::sync::Notify::new(),
            append_gate: tokio::sync::RwLock::new(()),
        }))
    }

    fn tail(&self) -> std::sync::MutexGuard<'_, Tail> {
        self.tail.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub fn rollup_state(&self) -> RollupState {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    /// Facts acknowledged but not yet in Iceberg.
    pub fn unflushed(&self) -> usize {
        self.tail().unflushed_count
    }

    /// Makes `facts` durable (returns after fsync). Facts whose `event_id` is already in the
    /// dedup window are counted as duplicates and not stored again.
    pub async fn ingest(&self, facts: Vec<RequestFact>) -> anyhow::Result<IngestOutcome> {
        let started = tokio::time::Instant::now();
        while self.unflushed() >= MAX_UNFLUSHED {
            anyhow::ensure!(started.elapsed() < MAX_BACKPRESSURE_WAIT, "the WAL backlog is not draining");
            self.flush_wanted.notify_one();
            // Bounded wait: a flush finishing between the check and here is not missed for long.
            let _ = tokio::time::timeout(Duration::from_millis(200), self.flushed.notified()).await;
        }
        let total = facts.len();
        let fresh: Vec<RequestFact> = {
            let mut tail = self.tail();
            facts.into_iter().filter(|f| tail.seen.insert(f.event_id)).collect()
        };
        let outcome = IngestOutcome { accepted: fresh.len(), duplicates: total - fresh.len() };
        if fresh.is_empty() {
            return Ok(outcome);
        }
        let gate = self.append_gate.read().await;
        match self.wal.append(&fresh).await {
            Ok(seq) => {
                let mut tail = self.tail();
                tail.unflushed_count += fresh.len();
                let big = tail.unflushed_count >= FLUSH_AT_FACTS;
                tail.unflushed.entry(seq).or_default().push(Arc::new(fresh));
                drop(tail);
                drop(gate);
                if big {
                    self.flush_wanted.notify_one();
                }
                Ok(outcome)
            }
            Err(err) => {
                let mut tail = self.tail();
                for f in &fresh {
                    tail.seen.remove(&f.event_id);
                }
                Err(anyhow::Error::new(err).context("WAL append failed"))
            }
        }
    }

    /// Resolves when the unflushed tail asks for an early flush.
    pub async fn flush_wanted(&self) {
        self.flush_wanted.notified().await;
    }

    /// Commits every acknowledged fact so far to `request_facts`; returns how many.
    pub async fn flush(&self) -> anyhow::Result<usize> {
        let _guard = self.maintenance.lock().await;
        self.flush_locked().await
    }

    async fn flush_locked(&self) -> anyhow::Result<usize> {
        let sealed = {
            let _exclusive = self.append_gate.write().await;
            self.wal.rotate().await?
        };
        // Deduplicated already: the tail only takes ids it has not seen.
        let slices: Vec<Arc<Vec<RequestFact>>> =
            self.tail().unflushed.range(..=sealed).flat_map(|(_, slices)| slices.iter().cloned()).collect();
        let count = slices.iter().map(|s| s.len()).sum::<usize>();
        if count > 0 {
            self.mark_late(slices.iter().flat_map(|s| s.iter()))?;
            let table = self.lake.facts_table().await?;
            let schema = Lake::arrow_schema(&table)?;
            let batches = tokio::task::spawn_blocking(move || {
                facts_batches(&schema, slices.iter().flat_map(|s| s.iter()).collect())
            })
            .await??;
            let props = HashMap::from([(WAL_THROUGH_KEY.to_owned(), sealed.to_string())]);
            self.lake.append(&table, batches, props).await?;
        }
        self.wal.delete_through(sealed)?;
        let mut tail = self.tail();
        let done: Vec<u64> = tail.unflushed.range(..=sealed).map(|(k, _)| *k).collect();
        for seq in done {
            for facts in tail.unflushed.remove(&seq).unwrap_or_default() {
                tail.unflushed_count -= facts.len();
                // Evict before adding: the ring never outgrows RECENT_IDS, where extending
                // first doubled its buffer past it (64 MB instead of 32).
                let excess = (tail.recent.len() + facts.len()).saturating_sub(RECENT_IDS);
                for _ in 0..excess {
                    if let Some(id) = tail.recent.pop_front() {
                        tail.seen.remove(&id);
                    }
                }
                tail.recent.extend(facts.iter().map(|f| f.event_id));
            }
        }
        drop(tail);
        self.flushed.notify_waiters();
        Ok(count)
    }

    /// Records hours that get facts after they were rolled up (before the commit that adds
    /// them: a crash in between only causes one extra rebuild).
    fn mark_late<'a>(&self, facts: impl Iterator<Item = &'a RequestFact> + Clone) -> anyhow::Result<()> {
        let mut state = self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let before = state.clone();
        let min_minute = facts.clone().map(RequestFact::minute).min().unwrap_or_default();
        let watermark = *state.watermark.get_or_insert(floor(min_minute, 3600));
        for f in facts {
            let minute = f.minute();
            if minute < watermark {
                state.dirty_hours.insert(floor(minute, 3600));
            }
        }
        if *state != before {
            save_state(&self.settings.data_dir, &state)?;
        }
        Ok(())
    }

    /// The scheduled job: flushes, then rebuilds dirty hours and rolls up every complete
    /// minute since the watermark into `metrics_1m`.
    pub async fn rollup(&self, now: DateTime<Utc>) -> anyhow::Result<RollupOutcome> {
        let _guard = self.maintenance.lock().await;
        self.flush_locked().await?;
        let state = self.rollup_state();
        let end = floor(now.timestamp(), 60);
        let mut windows: Vec<(i64, i64)> = Vec::new();
        if let Some(watermark) = state.watermark {
            for &hour in &state.dirty_hours {
                if hour < watermark {
                    windows.push((hour, (hour + 3600).min(watermark)));
                }
            }
            if end > watermark {
                windows.push((watermark, end));
            }
        }
        let outcome = self.rebuild(&windows).await?;
        let mut state = self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(watermark) = state.watermark {
            state.watermark = Some(watermark.max(end));
        }
        state.dirty_hours.clear();
        save_state(&self.settings.data_dir, &state)?;
        Ok(outcome)
    }

    /// Rebuilds `metrics_1m` for `[from, to)` (whole minutes) from the committed facts.
    pub async fn recompute(&self, from: DateTime<Utc>, to: DateTime<Utc>) -> anyhow::Result<RollupOutcome> {
        let _guard = self.maintenance.lock().await;
        self.flush_locked().await?;
        let from = floor(from.timestamp(), 60);
        let to = floor(to.timestamp() + 59, 60);
        self.rebuild(&[(from, to)]).await
    }

    async fn rebuild(&self, windows: &[(i64, i64)]) -> anyhow::Result<RollupOutcome> {
        let run_id = self.lake.last_run_id().await?.max(Utc::now().timestamp_micros() - 1) + 1;
        let mut rows = Vec::new();
        let mut facts = 0u64;
        let facts_table = self.lake.facts_table().await?;
        let ctx = read::session(self.lake.storage(), &self.lake.warehouse)?;
        for &(from, to) in windows {
            // A day partition at a time: each file is read once, and the dedup set and the
            // latency vectors stay bounded by a day of facts.
            let mut start = from;
            while start < to {
                let stop = (floor(start, 86_400) + 86_400).min(to);
                let files =
                    self.lake.plan_files(&facts_table, "event_time", start * 1_000_000, stop * 1_000_000).await?;
                let mut acc = RawAccumulator::default();
                read::scan(
                    &ctx,
                    files,
                    "event_time",
                    start * 1_000_000,
                    stop * 1_000_000,
                    None,
                    &RAW_COLUMNS,
                    |batch| acc.add_batch(batch),
                )
                .await?;
                facts += acc.facts;
                rows.extend(acc.into_stored_rows());
                start = stop;
            }
        }
        rows.sort_by(|a, b| {
            (a.minute, &a.service, &a.method, &a.path_template).cmp(&(
                b.minute,
                &b.service,
                &b.method,
                &b.path_template,
            ))
        });
        let digest = digest(&rows);
        let count = rows.len();
        if !rows.is_empty() {
            let table = self.lake.metrics_table().await?;
            let schema = Lake::arrow_schema(&table)?;
            let batches = metrics_batches(&schema, &rows, run_id)?;
            let props = HashMap::from([(RUN_ID_KEY.to_owned(), run_id.to_string())]);
            self.lake.append(&table, batches, props).await?;
        }
        Ok(RollupOutcome { run_id, facts, rows: count, windows: windows.to_vec(), digest })
    }

    /// Ids of the committed facts with `event_time` in `[from, to)` seconds, duplicates kept
    /// (durability checks count them).
    pub async fn committed_ids(&self, from: i64, to: i64) -> anyhow::Result<Vec<Uuid>> {
        let table = self.lake.facts_table().await?;
        let files = self.lake.plan_files(&table, "event_time", from * 1_000_000, to * 1_000_000).await?;
        let ctx = read::session(self.lake.storage(), &self.lake.warehouse)?;
        let mut out = Vec::new();
        read::scan(&ctx, files, "event_time", from * 1_000_000, to * 1_000_000, None, &["event_id"], |batch| {
            let ids = read::as_type(batch, "event_id", &DataType::FixedSizeBinary(16))?;
            let ids =
                ids.as_any().downcast_ref::<FixedSizeBinaryArray>().ok_or_else(|| anyhow::anyhow!("event_id type"))?;
            for i in 0..ids.len() {
                out.push(Uuid::from_slice(ids.value(i))?);
            }
            Ok(())
        })
        .await?;
        Ok(out)
    }

    /// Acknowledged facts not yet in Iceberg with `event_time` in `[from, to)` seconds.
    pub fn unflushed_between(&self, from: i64, to: i64, service: Option<&str>) -> Vec<RequestFact> {
        let tail = self.tail();
        tail.unflushed
            .values()
            .flatten()
            .flat_map(|slice| slice.iter())
            .filter(|f| {
                let t = f.event_time.timestamp();
                t >= from && t < to && service.is_none_or(|s| s == &*f.service)
            })
            .cloned()
            .collect()
    }
}

pub const RAW_COLUMNS: [&str; 7] =
    ["event_id", "event_time", "service", "method", "path_template", "status_code", "latency_ms"];

/// Requests, errors and the latencies of one (minute, service, method, path) cell.
#[derive(Default)]
struct RawCell {
    requests: u64,
    errors: u64,
    latencies: Vec<f64>,
}

/// One raw fact as read from a column batch.
struct RawFact<'a> {
    id: u128,
    micros: i64,
    service: &'a str,
    method: &'a str,
    path: &'a str,
    status: i32,
    latency: f64,
}

/// Groups raw facts into (minute, service, method, path) cells, deduplicated by id.
///
/// The hot loop of the rollup and of the dashboard's raw minutes: (service, method, path) is
/// interned to a number through one reused key buffer, so a fact costs no allocation, and the
/// sets hash with foldhash ([`FastMap`]).
#[derive(Default)]
pub struct RawAccumulator {
    ids: FastSet<u128>,
    /// `service\0method\0path` → index into `names`.
    group_ids: FastMap<String, u32>,
    names: Vec<(String, String, String)>,
    /// (minute, group) → index into `cells`.
    cell_ids: FastMap<(i64, u32), usize>,
    cells: Vec<RawCell>,
    key: String,
    /// The previous fact's group and cell: facts arrive sorted by group and time, so most
    /// facts land where the one before did.
    last_group: Option<u32>,
    last_cell: Option<(i64, u32, usize)>,
    pub facts: u64,
}

impl RawAccumulator {
    fn group(&mut self, service: &str, method: &str, path: &str) -> u32 {
        if let Some(group) = self.last_group {
            let (s, m, p) = &self.names[group as usize];
            if s == service && m == method && p == path {
                return group;
            }
        }
        self.key.clear();
        for (i, part) in [service, method, path].into_iter().enumerate() {
            if i > 0 {
                self.key.push('\0');
            }
            self.key.push_str(part);
        }
        let group = match self.group_ids.get(self.key.as_str()) {
            Some(&group) => group,
            None => {
                let group = u32::try_from(self.names.len()).unwrap_or(u32::MAX);
                self.group_ids.insert(self.key.clone(), group);
                self.names.push((service.to_owned(), method.to_owned(), path.to_owned()));
                group
            }
        };
        self.last_group = Some(group);
        group
    }

    fn add(&mut self, f: &RawFact<'_>) {
        if !self.ids.insert(f.id) {
            return;
        }
        self.facts += 1;
        let minute = floor(f.micros.div_euclid(1_000_000), 60);
        let group = self.group(f.service, f.method, f.path);
        let index = match self.last_cell {
            Some((m, g, index)) if m == minute && g == group => index,
            _ => {
                let next = self.cells.len();
                let index = *self.cell_ids.entry((minute, group)).or_insert(next);
                if index == next {
                    self.cells.push(RawCell::default());
                }
                self.last_cell = Some((minute, group, index));
                index
            }
        };
        let cell = &mut self.cells[index];
        cell.requests += 1;
        if f.status >= 500 {
            cell.errors += 1;
        }
        cell.latencies.push(f.latency);
    }

    pub fn add_fact(&mut self, f: &RequestFact) {
        self.add(&RawFact {
            id: f.event_id.as_u128(),
            micros: f.event_time.timestamp_micros(),
            service: &f.service,
            method: &f.method,
            path: &f.path_template,
            status: i32::from(f.status_code),
            latency: f.latency_ms,
        });
    }

    pub fn add_batch(&mut self, batch: &RecordBatch) -> anyhow::Result<()> {
        let ids = read::as_type(batch, "event_id", &DataType::FixedSizeBinary(16))?;
        let ids =
            ids.as_any().downcast_ref::<FixedSizeBinaryArray>().ok_or_else(|| anyhow::anyhow!("event_id type"))?;
        let times = micros(batch, "event_time")?;
        let services = strings(batch, "service")?;
        let services = services.as_string::<i32>();
        let methods = strings(batch, "method")?;
        let methods = methods.as_string::<i32>();
        let paths = strings(batch, "path_template")?;
        let paths = paths.as_string::<i32>();
        let status = read::as_type(batch, "status_code", &DataType::Int32)?;
        let status = status.as_primitive::<Int32Type>();
        let latency = read::as_type(batch, "latency_ms", &DataType::Float64)?;
        let latency = latency.as_primitive::<Float64Type>();
        self.ids.reserve(times.len());
        for (i, &micros) in times.iter().enumerate() {
            self.add(&RawFact {
                id: u128::from_be_bytes(ids.value(i).try_into().unwrap_or([0; 16])),
                micros,
                service: services.value(i),
                method: methods.value(i),
                path: paths.value(i),
                status: status.value(i),
                latency: latency.value(i),
            });
        }
        Ok(())
    }

    /// One row per cell; sketches built in canonical order (deterministic encodings).
    pub fn into_rows(self) -> Vec<MinuteRow> {
        self.rows_with(|sketch| sketch)
    }

    /// Rows as the rollup writes them: each sketch encoded as soon as it is built. A decoded
    /// sketch holds kilobytes of bins, and keeping a week of them until the commit was most
    /// of the rollup's memory.
    fn into_stored_rows(self) -> Vec<StoredRow> {
        self.rows_with(|sketch| sketch::encode(&sketch))
    }

    fn rows_with<S>(self, finish: impl Fn(DDSketch) -> S) -> Vec<MinuteRow<S>> {
        let Self { cell_ids, mut cells, names, .. } = self;
        cell_ids
            .into_iter()
            .map(|((minute, group), index)| {
                let cell = &mut cells[index];
                let (service, method, path_template) = names[group as usize].clone();
                MinuteRow {
                    minute,
                    service,
                    method,
                    path_template,
                    requests: cell.requests,
                    errors: cell.errors,
                    sketch: finish(sketch::from_latencies(&mut std::mem::take(&mut cell.latencies))),
                }
            })
            .collect()
    }
}

/// A `metrics_1m` row as stored, its latency sketch encoded.
type StoredRow = MinuteRow<Vec<u8>>;

fn digest(rows: &[StoredRow]) -> String {
    let mut hasher = crc32fast::Hasher::new();
    for r in rows {
        hasher.update(&r.minute.to_le_bytes());
        for s in [&r.service, &r.method, &r.path_template] {
            hasher.update(s.as_bytes());
            hasher.update(&[0]);
        }
        hasher.update(&r.requests.to_le_bytes());
        hasher.update(&r.errors.to_le_bytes());
        hasher.update(&r.sketch);
    }
    format!("{:08x}", hasher.finalize())
}

/// Facts sorted for compression (service, path, method, time) and split by day.
pub fn facts_batches(
    schema: &datafusion::arrow::datatypes::SchemaRef,
    facts: Vec<&RequestFact>,
) -> anyhow::Result<BTreeMap<i32, RecordBatch>> {
    // Sort by (service, path, method) rank, then time and id: integer keys, where comparing
    // the strings of a million facts was most of a flush's CPU.
    let mut groups: Vec<(&str, &str, &str)> =
        facts.iter().map(|f| (&*f.service, &*f.path_template, &*f.method)).collect();
    groups.sort_unstable();
    groups.dedup();
    let rank: FastMap<(&str, &str, &str), u32> =
        groups.iter().enumerate().map(|(i, g)| (*g, u32::try_from(i).unwrap_or(u32::MAX))).collect();
    // Keys of 16 bytes (rank, time, arrival index) where (rank, time, id, &fact) took 40: this
    // is a flush's largest buffer after the Arrow columns. Equal times keep arrival order; the
    // file order only serves compression.
    let mut order: Vec<(u32, i64, u32)> = facts
        .iter()
        .enumerate()
        .map(|(i, f)| {
            let group = rank.get(&(&*f.service, &*f.path_template, &*f.method)).copied().unwrap_or(u32::MAX);
            (group, f.event_time.timestamp_micros(), u32::try_from(i).unwrap_or(u32::MAX))
        })
        .collect();
    order.sort_unstable();
    let mut by_day: BTreeMap<i32, Vec<&RequestFact>> = BTreeMap::new();
    for (_, _, i) in order {
        let f = facts[i as usize];
        let day = i32::try_from(f.event_time.timestamp().div_euclid(86_400)).unwrap_or_default();
        by_day.entry(day).or_default().push(f);
    }
    drop(facts);
    let mut out = BTreeMap::new();
    for (day, facts) in by_day {
        let ids = FixedSizeBinaryArray::try_from_iter(facts.iter().map(|f| *f.event_id.as_bytes()))?;
        let columns: Vec<ArrayRef> = vec![
            Arc::new(ids),
            Arc::new(
                TimestampMicrosecondArray::from_iter_values(facts.iter().map(|f| f.event_time.timestamp_micros()))
                    .with_timezone("+00:00"),
            ),
            Arc::new(StringArray::from_iter_values(facts.iter().map(|f| &*f.service))),
            Arc::new(StringArray::from_iter_values(facts.iter().map(|f| &*f.method))),
            Arc::new(StringArray::from_iter_values(facts.iter().map(|f| &*f.path_template))),
            Arc::new(Int32Array::from_iter_values(facts.iter().map(|f| i32::from(f.status_code)))),
            Arc::new(Float64Array::from_iter_values(facts.iter().map(|f| f.latency_ms))),
            Arc::new(StringArray::from_iter(facts.iter().map(|f| f.user_agent_family.as_deref()))),
        ];
        out.insert(day, batch_of(schema, columns)?);
    }
    Ok(out)
}

fn metrics_batches(
    schema: &datafusion::arrow::datatypes::SchemaRef,
    rows: &[StoredRow],
    run_id: i64,
) -> anyhow::Result<BTreeMap<i32, RecordBatch>> {
    let mut by_day: BTreeMap<i32, Vec<&StoredRow>> = BTreeMap::new();
    for r in rows {
        by_day.entry(i32::try_from(r.minute.div_euclid(86_400)).unwrap_or_default()).or_default().push(r);
    }
    let mut out = BTreeMap::new();
    for (day, rows) in by_day {
        let columns: Vec<ArrayRef> = vec![
            Arc::new(
                TimestampMicrosecondArray::from_iter_values(rows.iter().map(|r| r.minute * 1_000_000))
                    .with_timezone("+00:00"),
            ),
            Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.service.as_str()))),
            Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.method.as_str()))),
            Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.path_template.as_str()))),
            Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| i64::try_from(r.requests).unwrap_or(i64::MAX)))),
            Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| i64::try_from(r.errors).unwrap_or(i64::MAX)))),
            Arc::new(Float64Array::from_iter_values(
                rows.iter().map(|r| if r.requests == 0 { 0.0 } else { r.errors as f64 / r.requests as f64 }),
            )),
            Arc::new(BinaryArray::from_iter_values(rows.iter().map(|r| &r.sketch))),
            Arc::new(Int64Array::from_iter_values(rows.iter().map(|_| run_id))),
        ];
        out.insert(day, batch_of(schema, columns)?);
    }
    Ok(out)
}

/// Reads `metrics_1m` rows of `[from, to)` seconds: for each minute only the rows of the
/// newest run that covered it (a rebuild supersedes earlier runs; tables are append-only).
///
/// The scan keeps Arrow batches, not rows: which run is newest is known only after the last
/// batch, and columnar batches cost a fraction of per-row strings and byte vectors. A sketch
/// is decoded only for a row that is handed on.
pub async fn read_metrics(
    engine: &Engine,
    ctx: &datafusion::execution::context::SessionContext,
    from: i64,
    to: i64,
    service: Option<&str>,
    mut each: impl FnMut(RowRef<'_>),
) -> anyhow::Result<()> {
    if from >= to {
        return Ok(());
    }
    let table = engine.lake.metrics_table().await?;
    let files = engine.lake.plan_files(&table, "minute", from * 1_000_000, to * 1_000_000).await?;
    let columns =
        ["minute", "service", "method", "path_template", "request_count", "error_count", "latency_sketch", "run_id"];
    let mut batches = Vec::new();
    let mut newest: FastMap<i64, i64> = FastMap::default();
    read::scan(ctx, files, "minute", from * 1_000_000, to * 1_000_000, service, &columns, |batch| {
        let minutes = micros(batch, "minute")?;
        let run = read::as_type(batch, "run_id", &DataType::Int64)?;
        for (&minute, &run) in minutes.iter().zip(run.as_primitive::<Int64Type>().values()) {
            let e = newest.entry(minute).or_insert(run);
            *e = (*e).max(run);
        }
        batches.push((batch.clone(), minutes, run));
        Ok(())
    })
    .await?;
    for (batch, minutes, run) in &batches {
        let services = strings(batch, "service")?;
        let methods = strings(batch, "method")?;
        let paths = strings(batch, "path_template")?;
        let req = read::as_type(batch, "request_count", &DataType::Int64)?;
        let err = read::as_type(batch, "error_count", &DataType::Int64)?;
        let sk = read::as_type(batch, "latency_sketch", &DataType::Binary)?;
        let (services, methods, paths) =
            (services.as_string::<i32>(), methods.as_string::<i32>(), paths.as_string::<i32>());
        let (req, err, run) =
            (req.as_primitive::<Int64Type>(), err.as_primitive::<Int64Type>(), run.as_primitive::<Int64Type>());
        let sk = sk.as_binary::<i32>();
        for (i, &minute) in minutes.iter().enumerate() {
            if newest.get(&minute) != Some(&run.value(i)) {
                continue;
            }
            let sketch = sketch::decode(sk.value(i))?;
            each(RowRef {
                minute: minute.div_euclid(1_000_000),
                service: services.value(i),
                method: methods.value(i),
                path_template: paths.value(i),
                requests: u64::try_from(req.value(i)).unwrap_or_default(),
                errors: u64::try_from(err.value(i)).unwrap_or_default(),
                sketch: &sketch,
            });
        }
    }
    Ok(())
}

fn state_path(dir: &Path) -> PathBuf {
    dir.join("rollup.json")
}

fn load_state(dir: &Path) -> anyhow::Result<RollupState> {
    match std::fs::read(state_path(dir)) {
        Ok(bytes) => Ok(serde_json::from_slice(&bytes).context("rollup.json is corrupt")?),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(RollupState::default()),
        Err(err) => Err(err.into()),
    }
}

/// Atomic replace: write a temp file, fsync, rename, fsync the directory.
fn save_state(dir: &Path, state: &RollupState) -> anyhow::Result<()> {
    use std::io::Write as _;
    let tmp = dir.join("rollup.json.tmp");
    let mut file = std::fs::File::create(&tmp)?;
    file.write_all(&serde_json::to_vec(state)?)?;
    file.sync_all()?;
    std::fs::rename(&tmp, state_path(dir))?;
    std::fs::File::open(dir)?.sync_all()?;
    Ok(())
}
