//! Config-change markers ("deploys") for the dashboard, read from the orchestrator's run
//! timeline in PostgreSQL (`orchestrator.run_events`, kind `config_change`). Read-only: one
//! SELECT per dashboard load; without a database URL there are simply no markers.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::postgres::{PgPool, PgPoolOptions};

#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct Marker {
    pub at: DateTime<Utc>,
    pub service: String,
    pub field: String,
    /// The value before the change: any JSON value (a string, a number, an object, …).
    pub old: serde_json::Value,
    /// The value after the change: any JSON value.
    pub new: serde_json::Value,
    /// `scenario` (the orchestrator applied a fault) or `learner`.
    pub source: String,
}

#[derive(Debug, Clone)]
pub struct MarkerSource {
    pool: PgPool,
}

impl MarkerSource {
    /// Lazily connecting pool: the facts service starts even while PostgreSQL is down.
    pub fn new(database_url: &str) -> anyhow::Result<Self> {
        let pool = PgPoolOptions::new()
            .max_connections(2)
            .acquire_timeout(std::time::Duration::from_secs(2))
            .connect_lazy(database_url)?;
        Ok(Self { pool })
    }

    pub async fn between(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        service: Option<&str>,
    ) -> anyhow::Result<Vec<Marker>> {
        let rows: Vec<(DateTime<Utc>, serde_json::Value)> = sqlx::query_as(
            "SELECT at, payload FROM orchestrator.run_events \
             WHERE kind = 'config_change' AND at >= $1 AND at < $2 ORDER BY at, seq LIMIT 1000",
        )
        .bind(from)
        .bind(to)
        .fetch_all(&self.pool)
        .await?;
        let text = |v: &serde_json::Value, k: &str| v.get(k).and_then(|x| x.as_str()).unwrap_or_default().to_owned();
        Ok(rows
            .into_iter()
            .map(|(at, p)| Marker {
                at,
                service: text(&p, "service"),
                field: text(&p, "field"),
                old: p.get("old").cloned().unwrap_or_default(),
                new: p.get("new").cloned().unwrap_or_default(),
                source: text(&p, "source"),
            })
            .filter(|m| service.is_none_or(|s| s == m.service))
            .collect())
    }
}
