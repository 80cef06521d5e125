//! The lake as an attacker and a careless client meet it, in-process on an ephemeral port: who
//! may ingest, query and maintain; what content types ingest takes; SQL that runs past its time
//! or memory limit; `/config`; and JSON on every error.
#![allow(clippy::unwrap_used)]

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use facts::{Application, Engine, Options, Settings};
use serde_json::{Value, json};
use service_kit::Role;
use tokio::sync::oneshot;
use uuid::Uuid;

struct Lake {
    base: String,
    engine: Arc<Engine>,
    _stop: oneshot::Sender<()>,
    _dir: tempfile::TempDir,
}

impl Lake {
    async fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut settings = Settings::new(dir.path());
        // Schedules far away: the tests flush themselves, or turn the schedule up in /config.
        settings.flush_interval = Duration::from_secs(3600);
        settings.rollup_interval = Duration::from_secs(3600);
        let app =
            Application::build("127.0.0.1:0".parse().unwrap(), settings, Options::new(support::keys())).await.unwrap();
        let base = format!("http://{}", app.local_addr().unwrap());
        let engine = app.engine.clone();
        let (stop, rx) = oneshot::channel::<()>();
        tokio::spawn(app.run(async move {
            let _ = rx.await;
        }));
        Self { base, engine, _stop: stop, _dir: dir }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// `n` facts committed to Iceberg (SQL reads only committed snapshots).
    async fn committed(&self, n: usize) {
        let now = Utc::now();
        let batch: Vec<Value> = (0..n).map(|i| fact(now - chrono::Duration::milliseconds(i as i64))).collect();
        let resp = support::client(Role::Service).post(self.url("/api/v1/facts")).json(&batch).send().await;
        assert_eq!(resp.unwrap().status(), 200);
        assert_eq!(self.engine.flush().await.unwrap(), n);
    }

    async fn sql(&self, role: Role, sql: &str) -> (u16, Value) {
        let resp = support::client(role).post(self.url("/api/v1/sql")).json(&json!({ "sql": sql })).send().await;
        answer(resp.unwrap()).await
    }

    async fn patch_config(&self, role: Role, patch: Value) -> (u16, Value) {
        answer(support::client(role).patch(self.url("/config")).json(&patch).send().await.unwrap()).await
    }

    /// `/healthz` and a small query answer at once, as if nothing had happened.
    async fn still_answers(&self) {
        let started = Instant::now();
        let health = reqwest::get(self.url("/healthz")).await.unwrap();
        assert_eq!(health.status(), 200);
        assert!(started.elapsed() < Duration::from_secs(1), "/healthz took {:?}", started.elapsed());
        let (status, body) = self.sql(Role::Learner, "SELECT count(*) AS n FROM request_facts").await;
        assert_eq!(status, 200, "{body}");
        assert!(body["rows"][0]["n"].as_u64().unwrap() > 0, "{body}");
    }
}

fn fact(t: chrono::DateTime<Utc>) -> Value {
    json!({
        "event_id": Uuid::now_v7().to_string(), "event_time": t.to_rfc3339(), "service": "shop",
        "method": "GET", "path_template": "/products/{id}", "status_code": 200, "latency_ms": 3.5
    })
}

async fn answer(resp: reqwest::Response) -> (u16, Value) {
    let status = resp.status().as_u16();
    let json = resp.headers().get("content-type").is_some_and(|v| v.to_str().unwrap().starts_with("application/json"));
    assert!(json, "{status} is not JSON: {:?}", resp.headers().get("content-type"));
    (status, resp.json().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_refuses_text_plain_forms_and_a_missing_content_type_with_415_and_stores_nothing() {
    let lake = Lake::start().await;
    let body = json!([fact(Utc::now())]).to_string();
    let emitter = support::client(Role::Service);
    for content_type in [
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
        Some("multipart/form-data; boundary=x"),
        Some("application/json; charset=latin1"),
        None,
    ] {
        let mut req = emitter.post(lake.url("/api/v1/facts")).body(body.clone());
        if let Some(ct) = content_type {
            req = req.header("content-type", ct);
        }
        let (status, error) = answer(req.send().await.unwrap()).await;
        assert_eq!(status, 415, "{content_type:?}: {error}");
        assert_eq!(error["error"]["code"], "unsupported_media_type");
        assert!(error["error"]["message"].as_str().unwrap().contains("Content-Type"), "{error}");
    }
    assert_eq!(lake.engine.unflushed(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cross_site_form_post_of_forged_facts_is_refused_and_stores_nothing() {
    // What a page the learner opens can send without a CORS preflight: a "simple" request,
    // text/plain, no Authorization header, the console's cookie riding along at best.
    let lake = Lake::start().await;
    let resp = reqwest::Client::new()
        .post(lake.url("/api/v1/facts"))
        .header("content-type", "text/plain;charset=UTF-8")
        .header("origin", "https://evil.example")
        .header("cookie", format!("observastack_token={}", support::token(Role::Instructor)))
        .body(json!([fact(Utc::now())]).to_string())
        .send()
        .await
        .unwrap();
    let (status, error) = answer(resp).await;
    assert_eq!(status, 415, "{error}");
    // The preflight a page would need for JSON grants nothing.
    let preflight = reqwest::Client::new()
        .request(reqwest::Method::OPTIONS, lake.url("/api/v1/facts"))
        .header("origin", "https://evil.example")
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", "content-type, authorization")
        .send()
        .await
        .unwrap();
    assert!(preflight.headers().get("access-control-allow-origin").is_none(), "{:?}", preflight.headers());
    assert!(
        lake.engine.unflushed() == 0 && lake.sql(Role::Learner, "SELECT 1 AS one").await.0 == 200,
        "nothing stored, service fine"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_needs_a_service_or_instructor_bearer_token() {
    let lake = Lake::start().await;
    let post = |req: reqwest::RequestBuilder| async move {
        answer(req.json(&json!([fact(Utc::now())])).send().await.unwrap()).await
    };
    let url = lake.url("/api/v1/facts");
    let anonymous = reqwest::Client::new();

    let (status, error) = post(anonymous.post(&url)).await;
    assert_eq!(status, 401, "{error}");
    assert!(error["error"]["message"].as_str().unwrap().contains("service"), "{error}");
    let forged = service_kit::JwtSigner::generate().unwrap();
    let forged = forged.mint("eve", Role::Instructor, Duration::from_secs(60)).unwrap();
    assert_eq!(post(anonymous.post(&url).bearer_auth(forged)).await.0, 401);
    // The console's cookie is not a credential here, even an instructor's.
    let cookie = format!("observastack_token={}", support::token(Role::Instructor));
    assert_eq!(post(anonymous.post(&url).header("cookie", cookie)).await.0, 401);
    let (status, error) = post(support::client(Role::Learner).post(&url)).await;
    assert_eq!(status, 403, "{error}");
    assert!(error["error"]["message"].as_str().unwrap().contains("learner"), "{error}");
    assert_eq!(lake.engine.unflushed(), 0, "a refused batch left facts behind");

    let (status, outcome) = post(support::client(Role::Service).post(&url)).await;
    assert_eq!((status, &outcome["accepted"]), (200, &json!(1)), "{outcome}");
    assert_eq!(post(support::client(Role::Instructor).post(&url)).await.0, 200);
    assert_eq!(lake.engine.unflushed(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_takes_a_learner_or_instructor_token_and_maintenance_an_instructor_token() {
    let lake = Lake::start().await;
    lake.committed(3).await;
    let anonymous = reqwest::Client::new();
    let resp = anonymous.post(lake.url("/api/v1/sql")).json(&json!({"sql": "SELECT 1"})).send().await.unwrap();
    assert_eq!(answer(resp).await.0, 401);
    assert_eq!(lake.sql(Role::Service, "SELECT 1 AS one").await.0, 403);
    assert_eq!(lake.sql(Role::Learner, "SELECT count(*) AS n FROM request_facts").await.1["rows"], json!([{"n": 3}]));
    assert_eq!(lake.sql(Role::Instructor, "SELECT 1 AS one").await.0, 200);

    let now = Utc::now();
    let recompute = format!(
        "/api/v1/recompute?from={}&to={}",
        (now - chrono::Duration::hours(1)).format("%Y-%m-%dT%H:%M:%SZ"),
        now.format("%Y-%m-%dT%H:%M:%SZ")
    );
    for path in ["/api/v1/flush", "/api/v1/rollup", recompute.as_str()] {
        let resp = anonymous.post(lake.url(path)).send().await.unwrap();
        assert_eq!(answer(resp).await.0, 401, "{path}");
        let (status, error) = answer(support::client(Role::Learner).post(lake.url(path)).send().await.unwrap()).await;
        assert_eq!(status, 403, "{path}: {error}");
        let (status, body) = answer(support::client(Role::Instructor).post(lake.url(path)).send().await.unwrap()).await;
        assert_eq!(status, 200, "{path}: {body}");
    }
    // The dashboard's reads stay open: the observability gateway forwards them without a token.
    for path in ["/api/v1/dashboard", "/api/v1/services", "/api/v1/status", "/dashboard"] {
        assert_eq!(anonymous.get(lake.url(path)).send().await.unwrap().status(), 200, "{path}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_past_its_time_limit_is_cancelled_with_422_and_the_service_keeps_answering() {
    let lake = Lake::start().await;
    lake.committed(2_000).await;
    let (status, body) = lake.patch_config(Role::Instructor, json!({"sql": {"timeout_ms": 300}})).await;
    assert_eq!(status, 200, "{body}");
    // 8·10⁹ rows to count; the filter keeps DataFusion from answering from statistics.
    let unbounded = "SELECT count(*) AS n FROM request_facts a, request_facts b, request_facts c \
                     WHERE a.latency_ms + b.latency_ms + c.latency_ms > 0";
    let started = Instant::now();
    let hog = tokio::spawn({
        let request = support::client(Role::Learner).post(lake.url("/api/v1/sql")).json(&json!({ "sql": unbounded }));
        async move { answer(request.send().await.unwrap()).await }
    });
    // While it counts, the lake's own threads are free.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let health = reqwest::get(lake.url("/healthz")).await.unwrap();
    assert_eq!(health.status(), 200);
    let (status, error) = hog.await.unwrap();
    assert_eq!(status, 422, "{error}");
    assert!(started.elapsed() < Duration::from_secs(3), "answered after {:?}", started.elapsed());
    assert_eq!(error["error"]["code"], "sql_time_limit");
    assert!(error["error"]["message"].as_str().unwrap().contains("sql.timeout_ms"), "{error}");
    assert_eq!(error["error"]["details"][0]["field"], "sql");
    assert_eq!(error["error"]["details"][0]["rule"], "time_limit");
    // Back to the default limit: the check below is that the lake answers, not how fast a
    // debug build counts under a 300 ms limit.
    lake.patch_config(Role::Instructor, json!({"sql": {"timeout_ms": 10_000}})).await;
    lake.still_answers().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_past_its_memory_limit_is_stopped_with_422_and_the_service_keeps_answering() {
    let lake = Lake::start().await;
    lake.committed(2_000).await;
    let (status, body) = lake.patch_config(Role::Instructor, json!({"sql": {"memory_limit_mib": 1}})).await;
    assert_eq!(status, 200, "{body}");
    // Four million groups to hold at once; nothing may spill to disk.
    let hog = "SELECT a.event_id, b.event_id, count(*) AS n FROM request_facts a CROSS JOIN request_facts b \
               GROUP BY a.event_id, b.event_id";
    let (status, error) = lake.sql(Role::Learner, hog).await;
    assert_eq!(status, 422, "{error}");
    assert_eq!(error["error"]["code"], "sql_memory_limit");
    assert!(error["error"]["message"].as_str().unwrap().contains("1 MiB"), "{error}");
    assert_eq!(error["error"]["details"][0]["rule"], "memory_limit");
    lake.patch_config(Role::Instructor, json!({"sql": {"memory_limit_mib": 256}})).await;
    lake.still_answers().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lake_has_a_config_only_the_instructor_changes_with_history_and_live_schedules() {
    let lake = Lake::start().await;
    let learner = support::client(Role::Learner);
    let (status, view) = answer(learner.get(lake.url("/config")).send().await.unwrap()).await;
    assert_eq!(status, 200, "{view}");
    assert_eq!(view["service"], "facts");
    assert_eq!(view["values"]["flush_interval_ms"], 3_600_000, "the start value is the flag's");
    assert_eq!(view["values"]["sql"]["timeout_ms"], 10_000);
    let (status, schema) = answer(learner.get(lake.url("/config/schema")).send().await.unwrap()).await;
    assert_eq!(status, 200);
    assert!(schema["properties"]["sql"].is_object(), "{schema}");
    assert_eq!(answer(reqwest::get(lake.url("/config")).await.unwrap()).await.0, 401);
    // An emitter's token sends facts and does nothing else.
    let emitter = support::client(Role::Service);
    assert_eq!(answer(emitter.get(lake.url("/config")).send().await.unwrap()).await.0, 403);

    let (status, error) = lake.patch_config(Role::Learner, json!({"sql": {"memory_limit_mib": 8192}})).await;
    assert_eq!(status, 403, "{error}");
    assert!(error["error"]["message"].as_str().unwrap().contains("instrument"), "{error}");
    let (status, error) = lake.patch_config(Role::Instructor, json!({"flush_interval_ms": 5})).await;
    assert_eq!(status, 400, "{error}");
    assert_eq!(error["error"]["details"][0]["field"], "flush_interval_ms");

    // A fact waits in the WAL until the schedule, turned up live, commits it.
    let resp =
        support::client(Role::Service).post(lake.url("/api/v1/facts")).json(&fact(Utc::now())).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(lake.engine.unflushed(), 1);
    let (status, view) = lake.patch_config(Role::Instructor, json!({"flush_interval_ms": 200})).await;
    assert_eq!((status, &view["revision"]), (200, &json!(2)), "{view}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while lake.engine.unflushed() > 0 {
        assert!(Instant::now() < deadline, "the new flush interval never took effect");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let status: Value = reqwest::get(lake.url("/api/v1/status")).await.unwrap().json().await.unwrap();
    assert_eq!(status["flush_interval_seconds"], 0, "{status}");

    let (status, history) = answer(learner.get(lake.url("/config/history")).send().await.unwrap()).await;
    assert_eq!(status, 200);
    assert_eq!(history.as_array().unwrap().len(), 1, "{history}");
    assert_eq!(history[0]["role"], "instructor");
    assert_eq!(history[0]["changes"], json!([{"field": "flush_interval_ms", "old": 3_600_000, "new": 200}]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_routes_and_wrong_methods_answer_json_errors() {
    let lake = Lake::start().await;
    let http = reqwest::Client::new();
    for (method, path, code) in [
        ("GET", "/nope", 404),
        ("GET", "/api/v1/nope", 404),
        ("GET", "/api/v1/facts", 405),
        ("DELETE", "/api/v1/sql", 405),
        ("PUT", "/dashboard", 405),
    ] {
        let resp = http.request(method.parse().unwrap(), lake.url(path)).send().await.unwrap();
        let (status, error) = answer(resp).await;
        assert_eq!(status, code, "{method} {path}: {error}");
        assert!(error["error"]["code"].is_string() && error["error"]["message"].is_string(), "{error}");
    }
}
