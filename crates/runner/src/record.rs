//! What a worker reports of one journey: its outcome and, if it failed, why. Shared by the
//! workers that produce records, the aggregator (`stats`) and the metrics that count them.

use std::time::Instant;

use scenario::sli::Journey;
use serde::Serialize;

/// Why a journey failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Failure {
    /// A step answered outside 2xx.
    Status(u16),
    /// A step took longer than `request_timeout_ms`.
    Timeout,
    /// Connecting, writing or reading failed.
    Transport,
    /// A 2xx answer the next step could not use (e.g. no products on a page).
    Body,
}

impl Failure {
    /// Low-cardinality label for metrics.
    pub fn reason(self) -> &'static str {
        match self {
            Self::Status(s) if s >= 500 => "status_5xx",
            Self::Status(s) if s >= 400 => "status_4xx",
            Self::Status(_) => "status_other",
            Self::Timeout => "timeout",
            Self::Transport => "transport",
            Self::Body => "body",
        }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Status(s) => write!(f, "status {s}"),
            Self::Timeout => f.write_str("timeout"),
            Self::Transport => f.write_str("transport error"),
            Self::Body => f.write_str("unusable body"),
        }
    }
}

/// What became of one planned journey.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    Failed(Failure),
    /// Not started: the in-flight cap was reached (a client-side drop, not the system's fault).
    Dropped,
}

/// One journey, as a worker reports it.
#[derive(Debug, Clone, Copy)]
pub struct Record {
    pub journey: Journey,
    pub outcome: Outcome,
    /// When it ended (or was dropped).
    pub finished: Instant,
    /// Sum of its steps' latencies, each from its planned send time; think time excluded.
    pub latency_us: u64,
    pub requests: u32,
    pub orders: u32,
}
