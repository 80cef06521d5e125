//! Overload: the real user gateway in front of the real shop on PostgreSQL, offered three
//! times what the shop sustains. The shop is made deliberately small (2 workers, every product
//! listing held 100 ms by a route fault) so its capacity is known and cheap on 2 cores. The
//! gateway must shed the excess with 503 + `Retry-After` inside its own timeout, every queue
//! must stay within its configured bound (observed through the gauges), and latency must come
//! back to normal within 10 s of the load dropping.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::json;
use service_kit::Role;
use tokio::sync::Mutex;

use crate::helpers::{Stack, fixture_scenarios, metric};

const SHOP_WORKERS: u32 = 2;
const SHOP_QUEUE: u32 = 4;
const GATEWAY_POOL: u32 = 4;
const GATEWAY_WAITING: u32 = 8;
const TIMEOUT_MS: u64 = 1000;
/// Slack on top of the gateway's timeout for a busy 2-core machine. Without shedding the
/// excess of a 5 s burst at 3× capacity would wait for seconds, far past this.
const MARGIN_MS: u64 = 1500;

struct Answer {
    status: StatusCode,
    retry_after: bool,
    took: Duration,
}

async fn get(http: &reqwest::Client, url: &str) -> Answer {
    let started = Instant::now();
    match http.get(url).send().await {
        Ok(resp) => {
            let status = resp.status();
            let retry_after = resp.headers().contains_key("retry-after");
            let _ = resp.bytes().await;
            Answer { status, retry_after, took: started.elapsed() }
        }
        // A client-side timeout (30 s) is a hang: report it as such.
        Err(_) => Answer { status: StatusCode::REQUEST_TIMEOUT, retry_after: false, took: started.elapsed() },
    }
}

/// Highest value each gauge reached while sampling.
#[derive(Debug, Default, Clone)]
struct Peaks {
    gateway_waiting: f64,
    gateway_in_use: f64,
    shop_queued: f64,
    shop_in_flight: f64,
    db_in_use: f64,
    db_waiting: f64,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_times_the_sustainable_load_is_shed_with_503_and_latency_recovers() {
    let stack = Stack::start(fixture_scenarios()).await;
    let shop = json!({
        "workers": {"max_concurrent": SHOP_WORKERS, "queue_limit": SHOP_QUEUE, "queue_timeout_ms": 500},
        "db": {"pool_size": 2},
        "faults": {"GET /api/products": {"latency_ms": 100}},
    });
    let resp = stack.patch_config("shop", Role::Instructor, &shop).await;
    assert_eq!(resp.status(), StatusCode::OK, "{}", resp.text().await.unwrap());
    let upstream =
        json!({"upstream": {"pool_size": GATEWAY_POOL, "timeout_ms": TIMEOUT_MS, "max_waiting": GATEWAY_WAITING}});
    let resp = stack.patch_config("gateway", Role::Instructor, &upstream).await;
    assert_eq!(resp.status(), StatusCode::OK, "{}", resp.text().await.unwrap());

    let url = format!("{}/api/products?limit=5", stack.gateway_url);
    let http = reqwest::Client::builder().no_proxy().timeout(Duration::from_secs(30)).build().unwrap();

    // Idle latency: the slowest of a few sequential requests.
    let mut baseline = Duration::ZERO;
    for _ in 0..5 {
        let a = get(&http, &url).await;
        assert_eq!(a.status, StatusCode::OK);
        baseline = baseline.max(a.took);
    }

    // Sustainable rate: a closed loop that keeps every worker busy without queueing much.
    let measure = Duration::from_secs(3);
    let started = Instant::now();
    let loops: Vec<_> = (0..2)
        .map(|_| {
            let (http, url) = (http.clone(), url.clone());
            tokio::spawn(async move {
                let mut ok = 0u32;
                while started.elapsed() < measure {
                    if get(&http, &url).await.status == StatusCode::OK {
                        ok += 1;
                    }
                }
                ok
            })
        })
        .collect();
    let mut served = 0u32;
    for l in loops {
        served += l.await.unwrap();
    }
    let sustainable = f64::from(served) / started.elapsed().as_secs_f64();
    assert!(sustainable >= 4.0, "the shop sustains only {sustainable:.1} req/s");

    // Offer 3× that for 5 s, open loop, while sampling every queue's gauge.
    let offered = 3.0 * sustainable;
    let burst = Duration::from_secs(5);
    let peaks = Arc::new(Mutex::new(Peaks::default()));
    let sampling = Arc::new(AtomicBool::new(true));
    let sampler = {
        let (peaks, sampling) = (peaks.clone(), sampling.clone());
        let stack_urls = (stack.gateway_admin_url.clone(), stack.shop_url.clone());
        let http = stack.http.clone();
        tokio::spawn(async move {
            let probe = Probe { http, gateway_admin_url: stack_urls.0, shop_url: stack_urls.1 };
            while sampling.load(Ordering::Relaxed) {
                probe.sample(&peaks).await;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };
    let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / offered));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let started = Instant::now();
    let mut requests = Vec::new();
    while started.elapsed() < burst {
        ticker.tick().await;
        let (http, url) = (http.clone(), url.clone());
        requests.push(tokio::spawn(async move { get(&http, &url).await }));
    }
    let mut answers = Vec::new();
    for r in requests {
        answers.push(r.await.unwrap());
    }
    let dropped_at = Instant::now();
    sampling.store(false, Ordering::Relaxed);
    sampler.await.unwrap();

    let total = answers.len();
    let ok = answers.iter().filter(|a| a.status == StatusCode::OK).count();
    let shed: Vec<_> = answers.iter().filter(|a| a.status == StatusCode::SERVICE_UNAVAILABLE).collect();
    let slowest = answers.iter().map(|a| a.took).max().unwrap_or_default();
    let others: Vec<_> = answers.iter().filter(|a| !matches!(a.status.as_u16(), 200 | 503)).map(|a| a.status).collect();
    let summary = format!(
        "sustainable {sustainable:.1}/s, offered {offered:.1}/s: {total} requests, {ok} ok, {} shed, \
         slowest {slowest:?}, baseline {baseline:?}",
        shed.len()
    );
    assert!(others.is_empty(), "only 200 and 503 expected, got {others:?}; {summary}");
    assert!(shed.iter().all(|a| a.retry_after), "every 503 carries Retry-After; {summary}");
    assert!(shed.len() * 3 >= total, "at 3× capacity at least a third is shed; {summary}");
    // Shedding protects goodput: the shop keeps serving near its capacity.
    assert!(ok as f64 >= 0.5 * sustainable * burst.as_secs_f64(), "goodput collapsed; {summary}");
    assert!(slowest <= Duration::from_millis(TIMEOUT_MS + MARGIN_MS), "a request waited past the timeout; {summary}");

    // Every queue stayed within its bound and was observable while it moved.
    let p = peaks.lock().await.clone();
    assert!(p.gateway_waiting <= f64::from(GATEWAY_WAITING), "{p:?}");
    assert!(p.gateway_in_use <= f64::from(GATEWAY_POOL), "{p:?}");
    assert!(p.shop_queued <= f64::from(SHOP_QUEUE), "{p:?}");
    assert!(p.shop_in_flight <= f64::from(SHOP_WORKERS), "{p:?}");
    assert!(
        p.db_in_use <= 2.0 && p.db_waiting <= f64::from(SHOP_WORKERS),
        "the DB queue is bounded by the workers: {p:?}"
    );
    assert!(p.gateway_waiting > 0.0 && p.gateway_in_use > 0.0 && p.shop_in_flight > 0.0, "gauges move: {p:?}");
    let gw = stack.http.get(format!("{}/metrics", stack.gateway_admin_url)).send().await.unwrap().text().await.unwrap();
    let refused: f64 = ["queue_full", "pool_timeout"]
        .iter()
        .filter_map(|o| metric(&gw, "gateway_upstream_requests_total", &[("outcome", o)]))
        .sum();
    assert!(refused >= shed.len() as f64, "the gateway counts what it shed ({refused}); {summary}");
    let shop_text = stack.http.get(format!("{}/metrics", stack.shop_url)).send().await.unwrap().text().await.unwrap();
    assert!(metric(&shop_text, "shop_db_pool_acquire_duration_seconds_count", &[]).unwrap_or(0.0) > 0.0);

    // Back to idle latency within 10 s of the load dropping: five good answers in a row.
    let normal = baseline * 2 + Duration::from_millis(100);
    let mut streak = 0;
    while streak < 5 {
        assert!(
            dropped_at.elapsed() < Duration::from_secs(10),
            "latency not back to {normal:?} within 10 s; {summary}"
        );
        let a = get(&http, &url).await;
        if a.status == StatusCode::OK && a.took <= normal {
            streak += 1;
        } else {
            streak = 0;
        }
    }
    tracing_free_report(&summary, dropped_at.elapsed());
    stack.stop().await;
}

/// Metric scrapes of the gateway and shop, detached from the stack so a task can own them.
struct Probe {
    http: reqwest::Client,
    gateway_admin_url: String,
    shop_url: String,
}

impl Probe {
    async fn sample(&self, peaks: &Mutex<Peaks>) {
        let gw = self.http.get(format!("{}/metrics", self.gateway_admin_url)).send().await;
        let shop = self.http.get(format!("{}/metrics", self.shop_url)).send().await;
        let (Ok(gw), Ok(shop)) = (gw, shop) else { return };
        let (gw, shop) = (gw.text().await.unwrap_or_default(), shop.text().await.unwrap_or_default());
        let mut p = peaks.lock().await;
        let peak = |slot: &mut f64, text: &str, name: &str| {
            if let Some(v) = metric(text, name, &[]) {
                *slot = slot.max(v);
            }
        };
        peak(&mut p.gateway_waiting, &gw, "gateway_upstream_pool_waiting");
        peak(&mut p.gateway_in_use, &gw, "gateway_upstream_pool_in_use");
        peak(&mut p.shop_queued, &shop, "shop_worker_pool_queued");
        peak(&mut p.shop_in_flight, &shop, "shop_worker_pool_in_flight");
        peak(&mut p.db_in_use, &shop, "shop_db_pool_in_use");
        peak(&mut p.db_waiting, &shop, "shop_db_pool_waiting");
    }
}

/// The figures, for `cargo test -- --nocapture` (the report quotes them).
#[allow(clippy::print_stderr)]
fn tracing_free_report(summary: &str, recovered: Duration) {
    eprintln!("overload: {summary}; latency normal again {recovered:?} after the load dropped");
}
