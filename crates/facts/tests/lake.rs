//! The lake end to end, in-process on an ephemeral port: strict ingest over HTTP, the WAL tail
//! visible at once, flush to Iceberg, rollup into metrics_1m, late facts, recompute.
#![allow(clippy::unwrap_used)]

mod support;

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use facts::{Application, Engine, Options, Settings};
use serde_json::{Value, json};
use service_kit::Role;
use tokio::sync::oneshot;
use uuid::Uuid;

struct TestApp {
    base: String,
    engine: Arc<Engine>,
    client: reqwest::Client,
    _stop: oneshot::Sender<()>,
    _dir: tempfile::TempDir,
}

async fn spawn_app(max_body: Option<usize>) -> TestApp {
    let dir = tempfile::tempdir().unwrap();
    let mut settings = Settings::new(dir.path());
    // Schedules far away: the tests drive flush and rollup themselves.
    settings.flush_interval = Duration::from_secs(3600);
    settings.rollup_interval = Duration::from_secs(3600);
    let options = Options { max_body_bytes: max_body, ..Options::new(support::keys()) };
    let app = Application::build("127.0.0.1:0".parse().unwrap(), settings, options).await.unwrap();
    let base = format!("http://{}", app.local_addr().unwrap());
    let engine = app.engine.clone();
    let (stop, rx) = oneshot::channel::<()>();
    tokio::spawn(app.run(async move {
        let _ = rx.await;
    }));
    TestApp { base, engine, client: support::client(service_kit::Role::Service), _stop: stop, _dir: dir }
}

fn fact(t: DateTime<Utc>, path: &str, status: u16, latency: f64) -> Value {
    json!({
        "event_id": Uuid::now_v7().to_string(), "event_time": t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        "service": "shop", "method": "POST", "path_template": path, "status_code": status, "latency_ms": latency,
        "user_agent_family": "Firefox"
    })
}

impl TestApp {
    async fn post(&self, body: &Value) -> (u16, Value) {
        let resp = self.client.post(format!("{}/api/v1/facts", self.base)).json(body).send().await.unwrap();
        (resp.status().as_u16(), resp.json().await.unwrap_or(Value::Null))
    }

    async fn board(&self, from: DateTime<Utc>, to: DateTime<Utc>, group: &str) -> Value {
        let resp = self
            .client
            .get(format!("{}/api/v1/dashboard", self.base))
            .query(&[
                ("from", from.to_rfc3339()),
                ("to", to.to_rfc3339()),
                ("service", "shop".into()),
                ("group_by", group.into()),
            ])
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        resp.json().await.unwrap()
    }
}

fn totals(board: &Value) -> Vec<(Value, u64, u64)> {
    board["series"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["group"].clone(), s["total"]["requests"].as_u64().unwrap(), s["total"]["errors"].as_u64().unwrap()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn facts_are_visible_at_once_and_survive_flush_rollup_late_data_and_recompute() {
    let app = spawn_app(None).await;
    let now = Utc::now();
    let t0 = now - chrono::Duration::minutes(30);
    let batch = json!([
        fact(t0, "/checkout", 200, 10.0),
        fact(t0, "/checkout", 500, 20.0),
        fact(t0 + chrono::Duration::minutes(1), "/products", 200, 5.0),
    ]);
    let (status, body) = app.post(&batch).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["accepted"], 3);
    let (from, to) = (now - chrono::Duration::hours(1), now);

    // Straight from the WAL tail.
    let before = app.board(from, to, "path_template").await;
    let expect = vec![(json!("/checkout"), 2, 1), (json!("/products"), 1, 0)];
    assert_eq!(totals(&before), expect);

    // From raw Parquet in Iceberg.
    assert_eq!(app.engine.flush().await.unwrap(), 3);
    assert_eq!(totals(&app.board(from, to, "path_template").await), expect);

    // From metrics_1m.
    let run = app.engine.rollup(now).await.unwrap();
    assert_eq!(run.facts, 3);
    let rolled = app.board(from, to, "path_template").await;
    assert_eq!(totals(&rolled), expect);
    assert!(rolled["sources"]["rolled_up_minutes"].as_i64().unwrap() >= 59, "{}", rolled["sources"]);
    let checkout = &rolled["series"][0]["total"];
    // Lower nearest-rank quantiles (DDSketch's definition), within 1 %.
    assert!((checkout["p50_ms"].as_f64().unwrap() - 10.0).abs() <= 0.1, "{checkout}");

    // A late fact for an already rolled-up minute: visible at once, then rebuilt.
    let (status, _) = app.post(&json!(fact(t0, "/checkout", 503, 30.0))).await;
    assert_eq!(status, 200);
    let late = vec![(json!("/checkout"), 3, 2), (json!("/products"), 1, 0)];
    assert_eq!(totals(&app.board(from, to, "path_template").await), late);
    app.engine.flush().await.unwrap();
    assert!(!app.engine.rollup_state().dirty_hours.is_empty());
    assert_eq!(totals(&app.board(from, to, "path_template").await), late);
    let rebuild = app.engine.rollup(now).await.unwrap();
    assert!(!rebuild.windows.is_empty());
    assert!(app.engine.rollup_state().dirty_hours.is_empty());
    let after = app.board(from, to, "path_template").await;
    assert_eq!(totals(&after), late);

    // Recompute: identical facts give identical rows and an identical dashboard.
    let a = app.engine.recompute(from, to).await.unwrap();
    let b = app.engine.recompute(from, to).await.unwrap();
    assert_eq!(a.digest, b.digest);
    assert_eq!(a.rows, b.rows);
    assert!(b.run_id > a.run_id);
    assert_eq!(app.board(from, to, "path_template").await["series"], after["series"]);

    // The same id again is a duplicate, not a second fact.
    let dup = fact(t0, "/checkout", 200, 1.0);
    assert_eq!(app.post(&dup).await.1["accepted"], 1);
    assert_eq!(app.post(&dup).await.1["duplicates"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_record_rejects_the_whole_batch_with_index_field_and_rule() {
    let app = spawn_app(Some(4096)).await;
    let now = Utc::now();
    let mut bad = fact(now, "/orders/12345", 200, 1.0);
    bad["headers"] = json!({"cookie": "secret"});
    let (status, body) = app.post(&json!([fact(now, "/checkout", 200, 1.0), bad])).await;
    assert_eq!(status, 400, "{body}");
    let details = body["error"]["details"].as_array().unwrap();
    let got: Vec<_> =
        details.iter().map(|d| (d["index"].as_u64().unwrap(), d["field"].clone(), d["rule"].clone())).collect();
    assert_eq!(got, vec![(1, json!("headers"), json!("unknown_field")), (1, json!("path_template"), json!("no_ids"))]);
    assert_eq!(app.engine.unflushed(), 0, "no partial state");

    let big: Vec<Value> = (0..100).map(|_| fact(now, "/checkout", 200, 1.0)).collect();
    let resp = app.client.post(format!("{}/api/v1/facts", app.base)).json(&big).send().await.unwrap();
    assert_eq!(resp.status(), 413);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["message"], "request body exceeds 4096 bytes");

    let nd = format!("{}\n{}\n", fact(now, "/a", 200, 1.0), fact(now, "/b", 404, 2.0));
    let resp = app
        .client
        .post(format!("{}/api/v1/facts", app.base))
        .header("content-type", "application/x-ndjson")
        .body(nd)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(app.engine.unflushed(), 2);

    let resp = app.client.get(format!("{}/api/v1/dashboard?group_by=colour", app.base)).send().await.unwrap();
    assert_eq!(resp.status(), 400);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["details"][0]["field"], "group_by");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_is_read_only_and_sees_committed_facts() {
    let app = spawn_app(None).await;
    let now = Utc::now();
    app.post(&json!([fact(now, "/checkout", 200, 1.0), fact(now, "/checkout", 500, 2.0)])).await;
    app.engine.flush().await.unwrap();
    let learner = support::client(Role::Learner);
    let sql = |q: &str| learner.post(format!("{}/api/v1/sql", app.base)).json(&json!({ "sql": q })).send();
    let resp = sql("SELECT path_template, count(*) AS n FROM request_facts GROUP BY path_template").await.unwrap();
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["rows"], json!([{"path_template": "/checkout", "n": 2}]));
    let resp = sql("CREATE EXTERNAL TABLE x STORED AS CSV LOCATION '/etc/passwd'").await.unwrap();
    assert_eq!(resp.status(), 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshots_are_expired_so_metadata_stays_bounded_and_no_fact_is_lost() {
    let app = spawn_app(None).await;
    let now = Utc::now();
    for i in 0..130 {
        let (status, _) = app.post(&fact(now - chrono::Duration::seconds(i), "/checkout", 200, 1.0)).await;
        assert_eq!(status, 200);
        app.engine.flush().await.unwrap();
    }
    let table = app.engine.lake.facts_table().await.unwrap();
    let snapshots = table.metadata().snapshots().len();
    assert!(snapshots <= 120, "{snapshots} snapshots kept");
    let ids = app.engine.committed_ids(now.timestamp() - 3600, now.timestamp() + 60).await.unwrap();
    assert_eq!(ids.len(), 130);
}

/// Hostile bodies over the real server: every one is refused with a 4xx that names the record,
/// field and rule (never a 5xx or a dropped connection), and none leaves a fact behind.
#[test]
fn hostile_bodies_are_refused_with_field_and_rule_and_leave_nothing_behind() {
    use proptest::prelude::*;
    use proptest::test_runner::{Config, TestRunner};

    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let app = rt.block_on(spawn_app(Some(256 << 10)));
    let send = |body: Vec<u8>| {
        rt.block_on(async {
            let resp = app
                .client
                .post(format!("{}/api/v1/facts", app.base))
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
                .unwrap();
            let status = resp.status().as_u16();
            (status, resp.json::<Value>().await.unwrap_or(Value::Null))
        })
    };
    let assert_refused = |status: u16, body: &Value, what: &str| {
        assert!(status == 400 || status == 413, "{what}: status {status}, {body}");
        if status == 400 {
            let details = body["error"]["details"].as_array().unwrap_or_else(|| panic!("{what}: {body}"));
            assert!(!details.is_empty(), "{what}: {body}");
            for d in details {
                assert!(d["index"].is_u64() && d["rule"].as_str().is_some_and(|r| !r.is_empty()), "{what}: {d}");
            }
        }
    };

    let now = Utc::now();
    let mut named: Vec<(&str, Vec<u8>)> = vec![
        ("non-UTF-8", b"{\"service\": \"sh\xffop\"}".to_vec()),
        ("invalid UTF-8 everywhere", vec![0xc3, 0x28, 0xa0, 0xa1, 0xe2, 0x28, 0xa1]),
        ("deeply nested", format!("{}{}", "[".repeat(50_000), "]".repeat(50_000)).into_bytes()),
        ("nested object in a field", br#"{"service":{"a":{"b":{"c":[[[[[1]]]]]}}}}"#.to_vec()),
        ("empty", Vec::new()),
        ("just whitespace", b" \n\t ".to_vec()),
        ("NUL bytes", vec![0; 64]),
        ("number overflow", br#"{"status_code": 1e999}"#.to_vec()),
        ("oversize", vec![b' '; 300 << 10]),
    ];
    // Many records, each broken: the response lists the first hundred and counts the rest.
    let many: Vec<Value> = (0..5_000).map(|_| json!({"path_template": "/orders/42"})).collect();
    named.push(("5 000 broken records", serde_json::to_vec(&many).unwrap()));
    let mut good_then_bad: Vec<Value> = (0..999).map(|_| fact(now, "/checkout", 200, 1.0)).collect();
    good_then_bad.push(fact(now, "/checkout", 600, 1.0));
    named.push(("999 good, 1 bad", serde_json::to_vec(&good_then_bad).unwrap()));
    for (what, body) in named {
        let (status, json) = send(body);
        assert_refused(status, &json, what);
        if what == "5 000 broken records" {
            assert_eq!(status, 400, "{json}");
            assert_eq!(json["error"]["details"].as_array().unwrap().len(), 100, "{json}");
        }
    }

    let cases = std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(128);
    let mut runner = TestRunner::new(Config { cases, failure_persistence: None, ..Config::default() });
    let bytes = prop::collection::vec(any::<u8>(), 0..2048);
    // Field names with arbitrary values: mostly well-formed JSON that breaks some rule.
    let keys = prop::sample::select(vec!["event_time", "service", "method", "path_template", "status_code", "x"]);
    let records = prop::collection::vec(prop::collection::btree_map(keys, ".{0,20}", 0..6), 1..8)
        .prop_map(|records| serde_json::to_vec(&records).unwrap());
    runner
        .run(&prop_oneof![bytes, records], |body| {
            let (status, json) = send(body);
            assert_refused(status, &json, "generated");
            Ok(())
        })
        .unwrap();
    assert_eq!(app.engine.unflushed(), 0, "a refused body left facts behind");
}

/// Old `metadata.json` files leave the warehouse: the iceberg crate trims the metadata log to
/// `write.metadata.previous-versions-max` (10) but does not delete the files it trims, so
/// `Lake` does. Without that every flush left one more file behind forever.
mod metadata_files {
    use std::path::Path;

    use facts::RequestFact;

    use super::*;

    fn metadata_files(table_dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(table_dir.join("metadata"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".metadata.json"))
            .collect();
        names.sort();
        names
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_table_keeps_the_current_metadata_file_and_the_ten_before_it() {
        let dir = tempfile::tempdir().unwrap();
        let engine = Engine::open(Settings::new(dir.path())).await.unwrap();
        for _ in 0..14 {
            let fact = RequestFact {
                event_id: Uuid::now_v7(),
                event_time: Utc::now(),
                service: Arc::from("shop"),
                method: Arc::from("GET"),
                path_template: Arc::from("/checkout"),
                status_code: 200,
                latency_ms: 3.0,
                user_agent_family: None,
            };
            engine.ingest(vec![fact]).await.unwrap();
            assert_eq!(engine.flush().await.unwrap(), 1);
        }
        // Table creation wrote version 0, the 14 flushes versions 1 to 14.
        let table_dir = dir.path().join("warehouse/observastack/request_facts");
        let files = metadata_files(&table_dir);
        assert_eq!(files.len(), 11, "{files:?}");
        assert!(files[0].starts_with("00004-") && files[10].starts_with("00014-"), "{files:?}");
        // Every version the table's metadata log still names is there.
        let table = engine.lake.facts_table().await.unwrap();
        assert_eq!(table.metadata().metadata_log().len(), 10);
        for entry in table.metadata().metadata_log() {
            let name = entry.metadata_file.rsplit('/').next().unwrap();
            assert!(files.iter().any(|f| f == name), "{name} listed but deleted");
        }
        assert_eq!(engine.committed_ids(0, Utc::now().timestamp() + 60).await.unwrap().len(), 14);
    }
}
