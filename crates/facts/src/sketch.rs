//! Mergeable latency sketches (DDSketch, 1 % relative accuracy). Percentiles for any window
//! come from merging the per-minute sketches, never from averaging per-minute percentiles.

use std::sync::LazyLock;

use sketches_ddsketch::{Config, DDSketch};

/// Relative accuracy of every quantile the lake reports.
pub const RELATIVE_ACCURACY: f64 = 0.01;

/// The empty sketch every accumulator starts from. Sketches only merge with equal configs and
/// a decoded sketch carries the config the encoding implies, so the template is itself a
/// decoded default sketch (1 % accuracy, 2048 bins: 1 µs … 1 h needs about 1 100).
static EMPTY: LazyLock<DDSketch> = LazyLock::new(|| {
    let fresh = DDSketch::new(Config::defaults());
    DDSketch::from_java_bytes(&fresh.to_java_bytes()).unwrap_or(fresh)
});

pub fn new_sketch() -> DDSketch {
    EMPTY.clone()
}

/// Compact binary form stored in `metrics_1m.latency_sketch` (DataDog's DDSketch encoding).
pub fn encode(sketch: &DDSketch) -> Vec<u8> {
    sketch.to_java_bytes()
}

pub fn decode(bytes: &[u8]) -> anyhow::Result<DDSketch> {
    DDSketch::from_java_bytes(bytes).map_err(|e| anyhow::anyhow!("bad latency sketch: {e}"))
}

/// Merges `other` into `into`.
pub fn merge(into: &mut DDSketch, other: &DDSketch) -> anyhow::Result<()> {
    into.merge(other).map_err(|e| anyhow::anyhow!("latency sketch config mismatch: {e:?}"))
}

pub fn quantile(sketch: &DDSketch, q: f64) -> Option<f64> {
    sketch.quantile(q).ok().flatten()
}

/// Adds `latencies` in a canonical order, so the sketch's running sum (a float) and hence its
/// encoding are identical for identical inputs whatever order they were read in.
pub fn from_latencies(latencies: &mut [f64]) -> DDSketch {
    latencies.sort_unstable_by(f64::total_cmp);
    let mut sketch = new_sketch();
    for &v in latencies.iter() {
        sketch.add(v);
    }
    sketch
}
