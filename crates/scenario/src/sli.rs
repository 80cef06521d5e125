//! User-side service level indicators: what the runner measures per journey and window, and
//! what scenario conditions are written against.

use std::collections::BTreeMap;
use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// A user journey through the user gateway. `Ping` is a single cheap request, used for
/// benchmarks and smoke load, never mixed into scenarios' business load by default.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Journey {
    /// List a page of products.
    Browse,
    /// Search the catalog by text.
    Search,
    /// Open one product's page.
    Product,
    /// Create a cart and add items to it.
    Cart,
    /// Fill a cart and check out (`POST /api/checkout`).
    Checkout,
    /// `GET /api/ping`.
    Ping,
}

impl Journey {
    pub const ALL: [Journey; 6] =
        [Journey::Browse, Journey::Search, Journey::Product, Journey::Cart, Journey::Checkout, Journey::Ping];

    pub fn as_str(self) -> &'static str {
        match self {
            Journey::Browse => "browse",
            Journey::Search => "search",
            Journey::Product => "product",
            Journey::Cart => "cart",
            Journey::Checkout => "checkout",
            Journey::Ping => "ping",
        }
    }

    pub fn parse(s: &str) -> Option<Journey> {
        Journey::ALL.into_iter().find(|j| j.as_str() == s)
    }
}

impl fmt::Display for Journey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which SLIs a condition may name. Latencies are in milliseconds, measured from each journey's
/// planned start (coordinated omission corrected), excluding think time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Sli {
    /// Completed journeys that succeeded, 0..=1 (1 when none completed in the window).
    SuccessRatio,
    /// 1 − success_ratio.
    ErrorRatio,
    P50Ms,
    P95Ms,
    P99Ms,
    /// Completed journeys per second in the window.
    Rps,
    /// Orders placed per minute (only meaningful for `checkout` and `all`).
    OrdersPerMinute,
}

impl Sli {
    pub const ALL: [Sli; 7] =
        [Sli::SuccessRatio, Sli::ErrorRatio, Sli::P50Ms, Sli::P95Ms, Sli::P99Ms, Sli::Rps, Sli::OrdersPerMinute];

    pub fn as_str(self) -> &'static str {
        match self {
            Sli::SuccessRatio => "success_ratio",
            Sli::ErrorRatio => "error_ratio",
            Sli::P50Ms => "p50_ms",
            Sli::P95Ms => "p95_ms",
            Sli::P99Ms => "p99_ms",
            Sli::Rps => "rps",
            Sli::OrdersPerMinute => "orders_per_minute",
        }
    }

    pub fn parse(s: &str) -> Option<Sli> {
        Sli::ALL.into_iter().find(|x| x.as_str() == s)
    }
}

impl fmt::Display for Sli {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a condition is about: one journey, or every journey together (`all`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Subject {
    All,
    Journey(Journey),
}

impl Subject {
    pub fn parse(s: &str) -> Option<Subject> {
        if s == "all" { Some(Subject::All) } else { Journey::parse(s).map(Subject::Journey) }
    }
}

impl fmt::Display for Subject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Subject::All => f.write_str("all"),
            Subject::Journey(j) => j.fmt(f),
        }
    }
}

/// SLIs of one journey (or of all) over one window.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct JourneySlis {
    /// Journeys that finished (succeeded or failed) in the window.
    pub completed: u64,
    /// Journeys that failed: a non-2xx step, a transport error or a timeout.
    pub failed: u64,
    pub success_ratio: f64,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub rps: f64,
    /// Orders placed per minute (checkout journeys that succeeded).
    pub orders_per_minute: f64,
}

impl JourneySlis {
    pub fn get(&self, sli: Sli) -> f64 {
        match sli {
            Sli::SuccessRatio => self.success_ratio,
            Sli::ErrorRatio => 1.0 - self.success_ratio,
            Sli::P50Ms => self.p50_ms,
            Sli::P95Ms => self.p95_ms,
            Sli::P99Ms => self.p99_ms,
            Sli::Rps => self.rps,
            Sli::OrdersPerMinute => self.orders_per_minute,
        }
    }
}

/// The runner's view of the last `window_secs`, as served on its `GET /slis` and pushed to
/// consoles by the orchestrator.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SliSnapshot {
    pub at: DateTime<Utc>,
    pub window_secs: f64,
    /// Journeys per second the load plan asked for at `at`.
    pub offered_rps: f64,
    /// Whether the runner is generating load at all.
    pub running: bool,
    pub all: JourneySlis,
    pub journeys: BTreeMap<Journey, JourneySlis>,
}

impl SliSnapshot {
    /// The SLIs of a subject; a journey with no traffic in the window reads as empty.
    pub fn subject(&self, subject: Subject) -> JourneySlis {
        match subject {
            Subject::All => self.all.clone(),
            Subject::Journey(j) => self.journeys.get(&j).cloned().unwrap_or_default(),
        }
    }

    /// The value of `subject.sli`, or `None` when the subject completed no journey in the window
    /// (a condition cannot hold or fail on no evidence).
    pub fn value(&self, subject: Subject, sli: Sli) -> Option<f64> {
        let s = self.subject(subject);
        (s.completed > 0).then(|| s.get(sli))
    }
}
