//! The tables of `POST /api/v1/sql`: one Iceberg snapshot each, read the way the dashboard reads
//! the lake (`crate::read`): the iceberg crate plans which committed Parquet files can hold the
//! rows (partition pruning on the time column), DataFusion's Parquet reader reads them
//! (projection, row-group and page pruning, the filters pushed down).
//!
//! `iceberg-datafusion`'s `IcebergStaticTableProvider` did the same through the iceberg crate's
//! Arrow reader, but that crate turns on every default feature of DataFusion (compression
//! codecs for CSV/JSON files, crypto and nested function sets), which made the binary several
//! megabytes larger. The tables are append-only with one schema (no deletes, no evolution), so
//! the Parquet files alone hold exactly the snapshot's rows.

use std::any::Any;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::{Result as DfResult, ScalarValue};
use datafusion::datasource::TableType;
use datafusion::datasource::file_format::options::ReadOptions as _;
use datafusion::datasource::listing::{ListingTable, ListingTableConfig, ListingTableUrl};
use datafusion::error::DataFusionError;
use datafusion::logical_expr::{Between, BinaryExpr, Expr, Operator, TableProviderFilterPushDown};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::empty::EmptyExec;
use datafusion::prelude::ParquetReadOptions;
use iceberg::table::Table;

use crate::lake::{Lake, plan_files_between};

/// A read-only table over one snapshot of an Iceberg table whose rows are partitioned by
/// `day(time_column)`.
#[derive(Debug)]
pub struct SnapshotTable {
    table: Table,
    time_column: &'static str,
    schema: SchemaRef,
}

impl SnapshotTable {
    /// `table` as of its current snapshot, with the Arrow schema of its current Iceberg schema.
    pub fn new(table: Table, time_column: &'static str) -> anyhow::Result<Self> {
        let schema = Lake::arrow_schema(&table)?;
        Ok(Self { table, time_column, schema })
    }
}

#[async_trait]
impl TableProvider for SnapshotTable {
    fn as_any(&self) -> &dyn Any {
        self
    }

    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let (from, to) = time_bounds(filters, self.time_column);
        let files = plan_files_between(&self.table, self.time_column, from, to)
            .await
            .map_err(|e| DataFusionError::External(e.into()))?;
        if files.is_empty() {
            let schema = match projection {
                Some(projection) => Arc::new(self.schema.project(projection)?),
                None => self.schema.clone(),
            };
            return Ok(Arc::new(EmptyExec::new(schema)));
        }
        let urls = files.iter().map(ListingTableUrl::parse).collect::<DfResult<Vec<_>>>()?;
        // The session's Parquet options (pushdown_filters, schema_force_view_types), as
        // `SessionContext::read_parquet` uses them.
        let options = ParquetReadOptions::default().to_listing_options(state.config(), state.default_table_options());
        let config = ListingTableConfig::new_with_multi_paths(urls)
            .with_listing_options(options)
            .with_schema(self.schema.clone());
        ListingTable::try_new(config)?.scan(state, projection, filters, limit).await
    }

    fn supports_filters_pushdown(&self, filters: &[&Expr]) -> DfResult<Vec<TableProviderFilterPushDown>> {
        // Used for pruning only: DataFusion still applies every filter to the rows read.
        Ok(vec![TableProviderFilterPushDown::Inexact; filters.len()])
    }
}

/// The `[from, to)` range in microseconds that `filters` (ANDed) imply for `column`; `None`
/// for a side they leave open. Only comparisons of the column with timestamp literals count
/// (after DataFusion's type coercion and simplification a literal compared with a
/// microsecond timestamp column is one); anything else only narrows nothing.
pub fn time_bounds(filters: &[Expr], column: &str) -> (Option<i64>, Option<i64>) {
    let mut bounds = (None, None);
    for filter in filters {
        narrow(filter, column, &mut bounds);
    }
    bounds
}

fn narrow(expr: &Expr, column: &str, bounds: &mut (Option<i64>, Option<i64>)) {
    match expr {
        Expr::BinaryExpr(BinaryExpr { left, op: Operator::And, right }) => {
            narrow(left, column, bounds);
            narrow(right, column, bounds);
        }
        Expr::BinaryExpr(BinaryExpr { left, op, right }) => {
            let (op, t) = match (left.as_ref(), right.as_ref()) {
                (Expr::Column(c), Expr::Literal(v, _)) if c.name == column => (Some(*op), micros(v)),
                (Expr::Literal(v, _), Expr::Column(c)) if c.name == column => (op.swap(), micros(v)),
                _ => return,
            };
            let (Some(op), Some(t)) = (op, t) else { return };
            match op {
                Operator::GtEq => since(bounds, t),
                Operator::Gt => since(bounds, t.saturating_add(1)),
                Operator::Eq => {
                    since(bounds, t);
                    until(bounds, t.saturating_add(1));
                }
                Operator::Lt => until(bounds, t),
                Operator::LtEq => until(bounds, t.saturating_add(1)),
                _ => {}
            }
        }
        Expr::Between(Between { expr, negated: false, low, high }) => {
            let (Expr::Column(c), Expr::Literal(low, _), Expr::Literal(high, _)) =
                (expr.as_ref(), low.as_ref(), high.as_ref())
            else {
                return;
            };
            if c.name != column {
                return;
            }
            if let Some(t) = micros(low) {
                since(bounds, t);
            }
            if let Some(t) = micros(high) {
                until(bounds, t.saturating_add(1));
            }
        }
        _ => {}
    }
}

fn since(bounds: &mut (Option<i64>, Option<i64>), t: i64) {
    bounds.0 = Some(bounds.0.map_or(t, |f: i64| f.max(t)));
}

fn until(bounds: &mut (Option<i64>, Option<i64>), t: i64) {
    bounds.1 = Some(bounds.1.map_or(t, |u: i64| u.min(t)));
}

fn micros(value: &ScalarValue) -> Option<i64> {
    match value {
        ScalarValue::TimestampMicrosecond(Some(t), _) => Some(*t),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use chrono::{DateTime, Utc};
    use datafusion::arrow::array::{AsArray as _, RecordBatch};
    use datafusion::arrow::datatypes::Int64Type;
    use datafusion::physical_plan::displayable;
    use datafusion::prelude::{SessionContext, col, lit};

    use super::*;
    use crate::RequestFact;
    use crate::pipeline::{Engine, Settings};
    use crate::read::ts_lit;

    fn fact(at: DateTime<Utc>) -> RequestFact {
        RequestFact {
            event_id: uuid::Uuid::now_v7(),
            event_time: at,
            service: "shop".into(),
            method: "GET".into(),
            path_template: "/products".into(),
            status_code: 200,
            latency_ms: 1.5,
            user_agent_family: None,
        }
    }

    /// The count a one-row `SELECT count(*) …` answers, and how many Parquet files its plan reads.
    async fn count_and_files(ctx: &SessionContext, sql: &str) -> (i64, usize) {
        let df = ctx.sql(sql).await.unwrap();
        let plan = df.clone().create_physical_plan().await.unwrap();
        let files = displayable(plan.as_ref()).indent(true).to_string().matches(".parquet").count();
        let batches: Vec<RecordBatch> = df.collect().await.unwrap();
        (batches[0].column(0).as_primitive::<Int64Type>().value(0), files)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sql_reads_the_committed_snapshot_and_time_bounds_prune_days() {
        let dir = tempfile::tempdir().unwrap();
        let engine = Engine::open(Settings::new(dir.path())).await.unwrap();
        let day = 86_400;
        let midnight = (Utc::now().timestamp() / day - 3) * day;
        let at = |secs: i64| DateTime::<Utc>::from_timestamp(midnight + secs, 0).unwrap();
        // Day d holds d + 1 facts; one flush writes one file per day.
        let facts = (0..3).flat_map(|d| (0..=d).map(move |i| fact(at(d * day + i * 60 + 30)))).collect();
        engine.ingest(facts).await.unwrap();
        let ctx = crate::read::session(engine.lake.storage(), &engine.lake.warehouse).unwrap();
        let register =
            |table| ctx.register_table("request_facts", Arc::new(SnapshotTable::new(table, "event_time").unwrap()));
        register(engine.lake.facts_table().await.unwrap()).unwrap();
        // Before the flush the snapshot has no file: an empty table, not an error.
        assert_eq!(count_and_files(&ctx, "SELECT count(*) FROM request_facts WHERE status_code = 200").await, (0, 0));
        engine.flush().await.unwrap();
        // The provider keeps the snapshot it was made with; a new one sees the commit.
        ctx.deregister_table("request_facts").unwrap();
        register(engine.lake.facts_table().await.unwrap()).unwrap();
        // (A filter, so that the count is not answered from the files' statistics alone.)
        let all = "SELECT count(*) FROM request_facts WHERE status_code = 200";
        assert_eq!(count_and_files(&ctx, all).await, (6, 3));
        let (d1, d2) = (at(day).to_rfc3339(), at(2 * day).to_rfc3339());
        let one_day = format!("SELECT count(*) FROM request_facts WHERE event_time >= '{d1}' AND event_time < '{d2}'");
        assert_eq!(count_and_files(&ctx, &one_day).await, (2, 1));
        let between = format!("SELECT count(*) FROM request_facts WHERE event_time BETWEEN '{d1}' AND '{d2}'");
        // Day 2's file starts after `d2`: the manifests' column bounds prune it as well.
        assert_eq!(count_and_files(&ctx, &between).await, (2, 1));
        let since = format!("SELECT count(*) FROM request_facts WHERE '{d1}' < event_time AND service = 'shop'");
        assert_eq!(count_and_files(&ctx, &since).await, (5, 2));
        // A bound the planner cannot use reads every file, and the filter still holds.
        let either = format!("SELECT count(*) FROM request_facts WHERE event_time < '{d1}' OR event_time >= '{d2}'");
        assert_eq!(count_and_files(&ctx, &either).await, (4, 3));
    }

    #[test]
    fn bounds_come_from_comparisons_with_timestamps_only() {
        let t = |us: i64| lit(ts_lit(us));
        assert_eq!(time_bounds(&[], "event_time"), (None, None));
        let filters = [col("event_time").gt_eq(t(10)).and(col("event_time").lt(t(20))), col("service").eq(lit("shop"))];
        assert_eq!(time_bounds(&filters, "event_time"), (Some(10), Some(20)));
        assert_eq!(
            time_bounds(&[t(10).lt(col("event_time")), t(30).gt_eq(col("event_time"))], "event_time"),
            (Some(11), Some(31))
        );
        assert_eq!(time_bounds(&[col("event_time").between(t(5), t(7))], "event_time"), (Some(5), Some(8)));
        assert_eq!(
            time_bounds(&[col("event_time").eq(t(5)), col("event_time").gt(t(1))], "event_time"),
            (Some(5), Some(6))
        );
        // Other columns, other operators, OR and NOT BETWEEN narrow nothing.
        assert_eq!(time_bounds(&[col("minute").gt(t(5))], "event_time"), (None, None));
        assert_eq!(time_bounds(&[col("event_time").not_eq(t(5))], "event_time"), (None, None));
        assert_eq!(
            time_bounds(&[col("event_time").gt(t(5)).or(col("event_time").lt(t(1)))], "event_time"),
            (None, None)
        );
        assert_eq!(time_bounds(&[col("event_time").not_between(t(5), t(7))], "event_time"), (None, None));
        assert_eq!(time_bounds(&[col("event_time").gt(lit(5_i64))], "event_time"), (None, None));
    }
}
