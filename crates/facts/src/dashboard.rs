//! The Service Health query: error rate, p50/p95/p99 (merged sketches) and throughput per
//! time step, optionally grouped by `path_template` or `method`. Rolled-up minutes come from
//! `metrics_1m`; minutes the rollup has not reached yet (or whose hour got late facts) come
//! from the raw facts, committed and still in the WAL tail, so a fact shows up at once.

use std::collections::BTreeMap;

use chrono::{DateTime, TimeZone as _, Utc};
use serde::{Deserialize, Serialize};
use sketches_ddsketch::DDSketch;

use crate::FastMap;
use crate::markers::Marker;
use crate::pipeline::{Engine, RAW_COLUMNS, RawAccumulator, RowRef, read_metrics};
use crate::{read, sketch};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum GroupBy {
    #[default]
    None,
    PathTemplate,
    Method,
    Service,
}

impl GroupBy {
    /// The group `r` belongs to; `None` when not grouped.
    fn of<'a>(self, r: &RowRef<'a>) -> Option<&'a str> {
        match self {
            Self::None => None,
            Self::PathTemplate => Some(r.path_template),
            Self::Method => Some(r.method),
            Self::Service => Some(r.service),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Query {
    pub from: i64,
    pub to: i64,
    pub step: i64,
    pub service: Option<String>,
    pub group_by: GroupBy,
}

#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct Point {
    /// Start of the step (RFC 3339).
    pub t: DateTime<Utc>,
    pub requests: u64,
    pub errors: u64,
    pub error_rate: f64,
    /// Requests per second over the step.
    pub throughput_rps: f64,
    pub p50_ms: Option<f64>,
    pub p95_ms: Option<f64>,
    pub p99_ms: Option<f64>,
}

#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct Series {
    /// Value of the grouping column; `null` when not grouped.
    pub group: Option<String>,
    /// The whole window in one point.
    pub total: Point,
    pub points: Vec<Point>,
}

#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct Sources {
    /// Minutes answered from `metrics_1m`.
    pub rolled_up_minutes: i64,
    /// Minutes answered from raw facts (not yet rolled up, or rebuilt after late facts).
    pub raw_minutes: i64,
}

#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct Dashboard {
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    pub step_seconds: i64,
    pub service: Option<String>,
    pub group_by: GroupBy,
    pub series: Vec<Series>,
    pub markers: Vec<Marker>,
    pub sources: Sources,
}

#[derive(Default)]
struct Cell {
    requests: u64,
    errors: u64,
    sketch: Option<DDSketch>,
}

impl Cell {
    fn add(&mut self, requests: u64, errors: u64, s: &DDSketch) -> anyhow::Result<()> {
        self.requests += requests;
        self.errors += errors;
        match &mut self.sketch {
            Some(acc) => sketch::merge(acc, s)?,
            None => self.sketch = Some(s.clone()),
        }
        Ok(())
    }

    fn point(&self, t: i64, seconds: i64) -> Point {
        let q = |p| self.sketch.as_ref().and_then(|s| sketch::quantile(s, p));
        Point {
            t: Utc.timestamp_opt(t, 0).single().unwrap_or_default(),
            requests: self.requests,
            errors: self.errors,
            error_rate: if self.requests == 0 { 0.0 } else { self.errors as f64 / self.requests as f64 },
            throughput_rps: self.requests as f64 / seconds.max(1) as f64,
            p50_ms: q(0.5),
            p95_ms: q(0.95),
            p99_ms: q(0.99),
        }
    }
}

/// Step for a window: one minute up to 12 h, then coarser so a chart has ≤ 720 points.
pub fn auto_step(from: i64, to: i64) -> i64 {
    let minutes = ((to - from) / 60).max(1);
    ((minutes + 719) / 720).max(1) * 60
}

fn floor(t: i64, step: i64) -> i64 {
    t.div_euclid(step) * step
}

pub async fn dashboard(engine: &Engine, q: &Query, markers: Vec<Marker>) -> anyhow::Result<Dashboard> {
    let from = floor(q.from, 60);
    let to = floor(q.to + 59, 60);
    let step = q.step.max(60) / 60 * 60;
    let state = engine.rollup_state();
    // Minutes before the watermark whose hour is clean come from metrics_1m.
    let watermark = state.watermark.unwrap_or(from).clamp(from, to);
    let is_raw = |minute: i64| minute >= watermark || state.dirty_hours.contains(&floor(minute, 3600));
    // Groups by name; `None` (not grouped) is the one group "".
    let mut group_index: FastMap<String, usize> = FastMap::default();
    let mut groups: Vec<(Option<String>, BTreeMap<i64, Cell>)> = Vec::new();
    let ctx = read::session(engine.lake.storage(), &engine.lake.warehouse)?;
    let service = q.service.as_deref();
    let mut failure = None;
    let mut add_row = |r: RowRef<'_>| {
        let bucket = from + floor(r.minute - from, step);
        let name = q.group_by.of(&r);
        let index = match group_index.get(name.unwrap_or_default()) {
            Some(&index) => index,
            None => {
                group_index.insert(name.unwrap_or_default().to_owned(), groups.len());
                groups.push((name.map(str::to_owned), BTreeMap::new()));
                groups.len() - 1
            }
        };
        let cell = groups[index].1.entry(bucket).or_default();
        if let Err(err) = cell.add(r.requests, r.errors, r.sketch) {
            failure = Some(err);
        }
    };
    read_metrics(engine, &ctx, from, watermark, service, |r| {
        if !is_raw(r.minute) {
            add_row(r);
        }
    })
    .await?;
    // Late facts still in the WAL tail for rolled-up minutes: visible at once, not only after
    // the flush marks their hour dirty.
    let mut late = RawAccumulator::default();
    for f in engine.unflushed_between(from, watermark, service) {
        if !is_raw(f.minute()) {
            late.add_fact(&f);
        }
    }
    for row in late.into_rows() {
        add_row(row.as_ref());
    }
    // Raw ranges: [watermark, to) plus dirty hours inside the window.
    let mut raw_ranges: Vec<(i64, i64)> =
        state.dirty_hours.iter().map(|&h| (h.max(from), (h + 3600).min(watermark))).filter(|(a, b)| a < b).collect();
    if watermark < to {
        raw_ranges.push((watermark, to));
    }
    let mut raw_minutes = 0;
    if !raw_ranges.is_empty() {
        let table = engine.lake.facts_table().await?;
        let mut acc = RawAccumulator::default();
        for &(a, b) in &raw_ranges {
            raw_minutes += (b - a) / 60;
            let files = engine.lake.plan_files(&table, "event_time", a * 1_000_000, b * 1_000_000).await?;
            read::scan(&ctx, files, "event_time", a * 1_000_000, b * 1_000_000, service, &RAW_COLUMNS, |batch| {
                acc.add_batch(batch)
            })
            .await?;
            for f in engine.unflushed_between(a, b, service) {
                acc.add_fact(&f);
            }
        }
        for row in acc.into_rows() {
            add_row(row.as_ref());
        }
    }
    if let Some(err) = failure {
        return Err(err);
    }
    let mut series = Vec::new();
    for (group, cells) in groups {
        let mut total = Cell::default();
        let mut points = Vec::new();
        let mut t = from;
        while t < to {
            let width = step.min(to - t);
            match cells.get(&t) {
                Some(cell) => {
                    if let Some(s) = &cell.sketch {
                        total.add(cell.requests, cell.errors, s)?;
                    }
                    points.push(cell.point(t, width));
                }
                None => points.push(Cell::default().point(t, width)),
            }
            t += step;
        }
        series.push(Series { group, total: total.point(from, to - from), points });
    }
    // Busiest groups first: the one that matters is on top.
    series.sort_by(|a, b| b.total.requests.cmp(&a.total.requests).then_with(|| a.group.cmp(&b.group)));
    Ok(Dashboard {
        from: Utc.timestamp_opt(from, 0).single().unwrap_or_default(),
        to: Utc.timestamp_opt(to, 0).single().unwrap_or_default(),
        step_seconds: step,
        service: q.service.clone(),
        group_by: q.group_by,
        series,
        markers,
        sources: Sources { rolled_up_minutes: (to - from) / 60 - raw_minutes, raw_minutes },
    })
}
