//! Reading the lake with DataFusion: Iceberg plans which Parquet files can hold the rows (so
//! only committed files are seen), DataFusion's Parquet reader reads them in parallel with the
//! time filter pushed down.

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray as _, RecordBatch};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, TimeUnit};
use datafusion::common::ScalarValue;
use datafusion::execution::context::SessionContext;
use datafusion::execution::runtime_env::RuntimeEnv;
use datafusion::prelude::{ParquetReadOptions, SessionConfig, col, lit};
use futures_util::StreamExt as _;

use crate::objstore::ObjectStoreStorage;

/// A DataFusion session that reads the lake's object store.
pub fn session(storage: &ObjectStoreStorage, warehouse: &str) -> anyhow::Result<SessionContext> {
    session_with(storage, warehouse, Arc::new(RuntimeEnv::default()))
}

/// [`session`] on `runtime` (its memory pool and disk manager bound what the session may use).
pub fn session_with(
    storage: &ObjectStoreStorage,
    warehouse: &str,
    runtime: Arc<RuntimeEnv>,
) -> anyhow::Result<SessionContext> {
    let mut config = SessionConfig::new().with_target_partitions(2);
    // Plain Utf8/Binary columns: the readers below downcast to them.
    config.options_mut().execution.parquet.schema_force_view_types = false;
    config.options_mut().execution.parquet.pushdown_filters = true;
    let ctx = SessionContext::new_with_config_rt(config, runtime);
    if let Ok(url) = url_of(warehouse) {
        ctx.register_object_store(&url, storage.store());
    }
    Ok(ctx)
}

fn url_of(location: &str) -> anyhow::Result<url::Url> {
    let parsed = url::Url::parse(location)?;
    let base = format!("{}://{}", parsed.scheme(), parsed.host_str().unwrap_or(""));
    Ok(url::Url::parse(&base)?)
}

pub fn ts_lit(micros: i64) -> ScalarValue {
    ScalarValue::TimestampMicrosecond(Some(micros), Some("+00:00".into()))
}

/// Streams the rows of `files` with `time_col` in `[from_us, to_us)` (and `service` equal to
/// `service` when given), projected to `columns`, into `each`.
#[allow(clippy::too_many_arguments)]
pub async fn scan(
    ctx: &SessionContext,
    files: Vec<String>,
    time_col: &str,
    from_us: i64,
    to_us: i64,
    service: Option<&str>,
    columns: &[&str],
    mut each: impl FnMut(&RecordBatch) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    if files.is_empty() {
        return Ok(());
    }
    let df = ctx.read_parquet(files, ParquetReadOptions::default()).await?;
    let mut filter = col(time_col).gt_eq(lit(ts_lit(from_us))).and(col(time_col).lt(lit(ts_lit(to_us))));
    if let Some(service) = service {
        filter = filter.and(col("service").eq(lit(service)));
    }
    let df = df.filter(filter)?.select_columns(columns)?;
    let mut stream = df.execute_stream().await?;
    while let Some(batch) = stream.next().await {
        each(&batch?)?;
    }
    Ok(())
}

/// Column `name` as plain UTF-8 strings.
pub fn strings(batch: &RecordBatch, name: &str) -> anyhow::Result<Arc<dyn Array>> {
    as_type(batch, name, &DataType::Utf8)
}

pub fn as_type(batch: &RecordBatch, name: &str, ty: &DataType) -> anyhow::Result<ArrayRef> {
    let column = batch.column_by_name(name).ok_or_else(|| anyhow::anyhow!("column {name} missing"))?;
    if column.data_type() == ty { Ok(column.clone()) } else { Ok(cast(column, ty)?) }
}

/// Column `name` as microseconds since the epoch.
pub fn micros(batch: &RecordBatch, name: &str) -> anyhow::Result<Vec<i64>> {
    let column = as_type(batch, name, &DataType::Timestamp(TimeUnit::Microsecond, Some("+00:00".into())))?;
    let column = column.as_primitive::<datafusion::arrow::datatypes::TimestampMicrosecondType>();
    Ok(column.values().to_vec())
}
