//! The seed's five-minute incident on the dashboard, with traffic shaped like the
//! `bad-release-checkout` scenario (its route mix, 20 req/s) and its release marker in a real
//! PostgreSQL `orchestrator.run_events` table: error rate rises, latency and throughput stay
//! flat, grouping by path shows only `/api/checkout`, and the marker sits at the start.
#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use chrono::{DateTime, Utc};
use facts::{Application, Options, Settings};
use serde_json::{Value, json};
use test_support::TestDb;
use uuid::Uuid;

/// A fresh database holding only the orchestrator's timeline table.
async fn timeline_db(release_at: DateTime<Utc>) -> TestDb {
    let db = TestDb::create("facts_test").await;
    let mut conn = db.connect().await;
    sqlx::raw_sql(
        "CREATE SCHEMA orchestrator;
         CREATE TABLE orchestrator.run_events (run_id uuid NOT NULL, seq integer NOT NULL, at timestamptz NOT NULL,
             kind text NOT NULL, payload jsonb NOT NULL, PRIMARY KEY (run_id, seq));",
    )
    .execute(&mut conn)
    .await
    .unwrap();
    let payload = json!({"service": "shop", "revision": 2, "field": "release.version", "old": "2.4.0", "new": "2.4.1",
        "actor": "orchestrator", "role": "instructor", "source": "scenario", "changed_at": release_at});
    sqlx::query("INSERT INTO orchestrator.run_events VALUES ($1::uuid, 1, $2, 'config_change', $3)")
        .bind(Uuid::new_v4().to_string())
        .bind(release_at)
        .bind(payload)
        .execute(&mut conn)
        .await
        .unwrap();
    db
}

/// 20 req/s of the scenario's journey mix; from `release_at` on, checkout answers 500.
fn traffic(from: DateTime<Utc>, release_at: DateTime<Utc>, to: DateTime<Utc>) -> Vec<Value> {
    let mut rng = fastrand::Rng::with_seed(5);
    let routes = [
        ("GET", "/api/products", 30),
        ("GET", "/api/products/search", 15),
        ("GET", "/api/products/{id}", 30),
        ("POST", "/api/carts", 10),
        ("POST", "/api/checkout", 15),
    ];
    let mut facts = Vec::new();
    let mut t = from;
    while t < to {
        for _ in 0..20 {
            let mut pick = rng.u32(0..100);
            let (method, path, _) = *routes
                .iter()
                .find(|(_, _, w)| {
                    if pick < *w {
                        true
                    } else {
                        pick -= w;
                        false
                    }
                })
                .unwrap();
            let broken = path == "/api/checkout" && t >= release_at;
            let at = t + chrono::Duration::milliseconds(rng.i64(0..1000));
            facts.push(
                json!({"event_time": at.to_rfc3339(), "service": "shop", "method": method, "path_template": path,
                "status_code": if broken { 500 } else { 200 }, "latency_ms": 20.0 + rng.f64() * 30.0,
                "user_agent_family": "observastack-runner"}),
            );
        }
        t += chrono::Duration::seconds(1);
    }
    facts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_minute_incident_explanation() {
    let now = Utc::now();
    let from = DateTime::from_timestamp(now.timestamp() / 300 * 300 - 3600, 0).unwrap();
    let release_at = from + chrono::Duration::minutes(20);
    let to = from + chrono::Duration::minutes(40);
    let db = timeline_db(release_at).await;

    let dir = tempfile::tempdir().unwrap();
    let mut settings = Settings::new(dir.path());
    settings.flush_interval = Duration::from_secs(3600);
    let options = Options { database_url: Some(db.url.clone().into()), ..Options::new(support::keys()) };
    let app = Application::build("127.0.0.1:0".parse().unwrap(), settings, options).await.unwrap();
    let base = format!("http://{}", app.local_addr().unwrap());
    let engine = app.engine.clone();
    let (stop, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(app.run(async move {
        let _ = rx.await;
    }));
    let client = support::client(service_kit::Role::Service);
    for chunk in traffic(from, release_at, to).chunks(5_000) {
        let resp = client.post(format!("{base}/api/v1/facts")).json(&chunk).send().await.unwrap();
        assert_eq!(resp.status(), 200);
    }
    engine.rollup(now).await.unwrap();

    let board = |group: &'static str| {
        let client = client.clone();
        let base = base.clone();
        async move {
            let resp = client
                .get(format!("{base}/api/v1/dashboard"))
                .query(&[
                    ("from", from.to_rfc3339()),
                    ("to", to.to_rfc3339()),
                    ("service", "shop".into()),
                    ("group_by", group.into()),
                    ("step_seconds", "300".into()),
                ])
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), 200);
            resp.json::<Value>().await.unwrap()
        }
    };

    // Error rate rises at the release; latency and throughput stay flat.
    let overall = board("none").await;
    let points = overall["series"][0]["points"].as_array().unwrap();
    assert_eq!(points.len(), 8);
    let (before, after) = points.split_at(4);
    for p in before {
        assert_eq!(p["errors"], 0, "{p}");
    }
    for p in after {
        let rate = p["error_rate"].as_f64().unwrap();
        assert!((0.10..0.20).contains(&rate), "error rate after the release: {p}");
    }
    let avg = |ps: &[Value], k: &str| ps.iter().map(|p| p[k].as_f64().unwrap()).sum::<f64>() / ps.len() as f64;
    for k in ["throughput_rps", "p95_ms", "p50_ms"] {
        let (b, a) = (avg(before, k), avg(after, k));
        assert!((a / b - 1.0).abs() < 0.1, "{k} moved: {b} → {a}");
    }
    // The marker sits at the start of the errors.
    let markers = overall["markers"].as_array().unwrap();
    assert_eq!(markers.len(), 1, "{markers:?}");
    assert_eq!(markers[0]["field"], "release.version");
    assert_eq!(markers[0]["new"], "2.4.1");
    assert_eq!(markers[0]["at"].as_str().unwrap().parse::<DateTime<Utc>>().unwrap(), release_at);
    assert_eq!(after[0]["t"].as_str().unwrap().parse::<DateTime<Utc>>().unwrap(), release_at);

    // Grouped by path: only checkout fails.
    let by_path = board("path_template").await;
    let failing: Vec<_> = by_path["series"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["total"]["errors"].as_u64().unwrap() > 0)
        .map(|s| s["group"].clone())
        .collect();
    assert_eq!(failing, vec![json!("/api/checkout")]);
    assert_eq!(by_path["series"].as_array().unwrap().len(), 5);

    let _ = stop.send(());
}
