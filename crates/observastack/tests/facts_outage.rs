//! The facts service down for 60 s under steady user load, with the real shop, user gateway and
//! facts binaries: user requests keep their latency (fact emission never waits on the lake),
//! and the dropped-fact counters account for every fact the lake did not get, exactly.
//!
//! The outage has two halves, because "down" comes in two shapes: 30 s with the port closed
//! (connections refused at once) and 30 s with a listener that accepts nothing (every send
//! hangs until the emitter's timeout). An emitter that waited on its sends would pass the first
//! half and stall every request by seconds in the second.

#![allow(clippy::unwrap_used)] // Test scaffolding: a failed unwrap is a failed test.

use std::collections::HashMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::{Value, json};

mod support;
use support::{Proc, bin, free_port, recreate_database};
use test_support::database_url;

/// Steady user load: one request every 20 ms.
const PERIOD: Duration = Duration::from_millis(20);
const BASELINE: Duration = Duration::from_secs(10);
const REFUSED: Duration = Duration::from_secs(30);
const HUNG: Duration = Duration::from_secs(30);
const RECOVERY: Duration = Duration::from_secs(10);

/// Starts `name`; its output goes to `<logs>/<name>.log`, which a failed readiness wait prints.
fn spawn(logs: &Path, name: &str, args: &[String], env: &[(&str, String)]) -> Proc {
    let log = std::fs::OpenOptions::new().create(true).append(true).open(logs.join(format!("{name}.log"))).unwrap();
    let child = Command::new(bin(name))
        .args(args)
        .env_remove("DATABASE_URL")
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    Proc(child)
}

fn start_facts(logs: &Path, port: u16, dir: &Path, public_keys: &str) -> Proc {
    let args = [
        "--listen".to_owned(),
        format!("127.0.0.1:{port}"),
        "--data-dir".to_owned(),
        dir.display().to_string(),
        "--flush-interval".to_owned(),
        "2s".to_owned(),
    ];
    spawn(logs, "facts", &args, &[("OBSERVASTACK_JWT_PUBLIC_KEYS", public_keys.to_owned())])
}

async fn wait_ready(http: &reqwest::Client, url: &str, logs: &Path) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while Instant::now() < deadline {
        if http.get(url).send().await.is_ok_and(|r| r.status().is_success()) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut output = String::new();
    for entry in std::fs::read_dir(logs).unwrap().flatten() {
        output +=
            &format!("--- {}\n{}\n", entry.path().display(), std::fs::read_to_string(entry.path()).unwrap_or_default());
    }
    panic!("{url} was not ready within 120 s\n{output}");
}

/// `name{...}` samples of a Prometheus exposition, summed per label set's `reason` / all.
fn sum_metric(text: &str, name: &str, label: Option<&str>) -> u64 {
    text.lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
        .filter(|l| label.is_none_or(|label| l.contains(label)))
        .filter_map(|l| l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()))
        .map(|v| v as u64)
        .sum()
}

#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
enum Phase {
    Baseline,
    Outage,
    Recovered,
}

fn percentile(mut samples: Vec<Duration>, p: f64) -> Duration {
    samples.sort_unstable();
    let rank = ((samples.len() as f64 * p).ceil() as usize).clamp(1, samples.len());
    samples[rank - 1]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn facts_down_for_60_s_costs_counted_facts_never_user_latency() {
    let db = format!("observastack_facts_outage_{}", std::process::id());
    recreate_database(&db).await;
    let lake = tempfile::tempdir().unwrap();
    let logs = tempfile::tempdir().unwrap();
    let logs = logs.path();
    let (facts_port, shop_port, user_port, admin_port) = (free_port(), free_port(), free_port(), free_port());
    let facts_url = format!("http://127.0.0.1:{facts_port}");
    let shop_url = format!("http://127.0.0.1:{shop_port}");
    let http = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap();

    // The services get the public keys inline and a `service` token to send their facts with.
    let signer = service_kit::JwtSigner::generate().unwrap();
    let public_keys = signer.verifier().to_pem();
    let service_token = signer.mint("emitter", service_kit::Role::Service, Duration::from_secs(3600)).unwrap();
    let mut facts = Some(start_facts(logs, facts_port, lake.path(), &public_keys));
    wait_ready(&http, &format!("{facts_url}/readyz"), logs).await;
    let env = [
        ("OBSERVASTACK_JWT_PUBLIC_KEYS", public_keys.clone()),
        ("OBSERVASTACK_SERVICE_TOKEN", service_token),
        ("OBSERVASTACK_FACTS_URL", facts_url.clone()),
    ];
    let shop_args: Vec<String> = ["--listen", &format!("127.0.0.1:{shop_port}"), "--seed-products", "300"]
        .into_iter()
        .chain(["--seed-orders", "500"])
        .map(str::to_owned)
        .collect();
    let mut shop_env = env.to_vec();
    shop_env.push(("DATABASE_URL", database_url(&db)));
    let _shop = spawn(logs, "shop", &shop_args, &shop_env);
    wait_ready(&http, &format!("{shop_url}/readyz"), logs).await;
    let gateway_args: Vec<String> = [
        "--role",
        "user",
        "--listen",
        &format!("127.0.0.1:{user_port}"),
        "--admin-listen",
        &format!("127.0.0.1:{admin_port}"),
        "--shop-url",
        &shop_url,
    ]
    .into_iter()
    .map(str::to_owned)
    .collect();
    let _gateway = spawn(logs, "gateway", &gateway_args, &env);
    wait_ready(&http, &format!("http://127.0.0.1:{admin_port}/readyz"), logs).await;

    // Steady open-loop load on the user gateway, every answer timed and filed under its phase.
    let phase = Arc::new(AtomicU8::new(Phase::Baseline as u8));
    let samples: Arc<Mutex<Vec<(Phase, Duration, u16)>>> = Arc::default();
    let load = {
        let (phase, samples, http) = (phase.clone(), samples.clone(), http.clone());
        let url = format!("http://127.0.0.1:{user_port}/api/products");
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(PERIOD);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut inflight = tokio::task::JoinSet::new();
            loop {
                tick.tick().await;
                let p = match phase.load(Ordering::SeqCst) {
                    0 => Phase::Baseline,
                    1 => Phase::Outage,
                    2 => Phase::Recovered,
                    _ => break,
                };
                let (http, url, samples) = (http.clone(), url.clone(), samples.clone());
                inflight.spawn(async move {
                    let start = Instant::now();
                    let status = http.get(&url).send().await.map_or(0, |r| r.status().as_u16());
                    samples.lock().unwrap().push((p, start.elapsed(), status));
                });
                while inflight.try_join_next().is_some() {}
            }
            while inflight.join_next().await.is_some() {}
        })
    };

    tokio::time::sleep(BASELINE).await;
    // Down, first as a closed port: a graceful stop, so no batch is half delivered.
    phase.store(Phase::Outage as u8, Ordering::SeqCst);
    let mut stopped = facts.take().unwrap();
    kill(Pid::from_raw(stopped.0.id() as i32), Signal::SIGTERM).unwrap();
    stopped.0.wait().unwrap();
    tokio::time::sleep(REFUSED).await;
    // Then as a host that accepts connections and never answers.
    let blackhole = std::net::TcpListener::bind(("127.0.0.1", facts_port)).unwrap();
    tokio::time::sleep(HUNG).await;
    drop(blackhole);
    facts = Some(start_facts(logs, facts_port, lake.path(), &public_keys));
    wait_ready(&http, &format!("{facts_url}/readyz"), logs).await;
    phase.store(Phase::Recovered as u8, Ordering::SeqCst);
    tokio::time::sleep(RECOVERY).await;
    phase.store(u8::MAX, Ordering::SeqCst);
    load.await.unwrap();

    let samples = samples.lock().unwrap().clone();
    let failed: Vec<_> = samples.iter().filter(|(_, _, status)| *status != 200).collect();
    assert!(
        failed.is_empty(),
        "{} of {} user requests failed: {:?}",
        failed.len(),
        samples.len(),
        &failed[..5.min(failed.len())]
    );
    let by_phase = |p: Phase| samples.iter().filter(|s| s.0 == p).map(|s| s.1).collect::<Vec<_>>();
    let (baseline, outage) = (by_phase(Phase::Baseline), by_phase(Phase::Outage));
    assert!(outage.len() as u32 >= (REFUSED + HUNG).as_millis() as u32 / PERIOD.as_millis() as u32 / 2, "load stalled");
    let (b50, b99) = (percentile(baseline.clone(), 0.5), percentile(baseline, 0.99));
    let (o50, o99) = (percentile(outage.clone(), 0.5), percentile(outage.clone(), 0.99));
    let worst = outage.iter().max().copied().unwrap();
    // Generous bounds against scheduling noise; a waiting emitter costs ≥ 2 s (its send timeout).
    assert!(o50 <= b50 * 3 + Duration::from_millis(20), "p50 {o50:?} during the outage vs {b50:?} before");
    assert!(o99 <= b99 * 3 + Duration::from_millis(100), "p99 {o99:?} during the outage vs {b99:?} before");
    assert!(worst < Duration::from_secs(1), "slowest request during the outage took {worst:?}");

    // Let the emitters deliver what they queued after the restart, then commit the WAL.
    tokio::time::sleep(Duration::from_secs(3)).await;
    // The lake's flush is the instructor's, its SQL a learner's or an instructor's.
    let instructor = signer.mint("facts-outage", service_kit::Role::Instructor, Duration::from_secs(3600)).unwrap();
    let resp = http.post(format!("{facts_url}/api/v1/flush")).bearer_auth(&instructor).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let sql = "SELECT service, count(*) AS n FROM request_facts WHERE path_template = '/api/products' GROUP BY service";
    let resp = http
        .post(format!("{facts_url}/api/v1/sql"))
        .bearer_auth(&instructor)
        .json(&json!({ "sql": sql }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let rows: Value = resp.json().await.unwrap();
    let stored: HashMap<String, u64> = rows["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["service"].as_str().unwrap().to_owned(), r["n"].as_u64().unwrap()))
        .collect();

    // Only `/api/products` was requested while the lake was down, so every dropped fact is one of
    // those: stored + dropped = sent, per service, with nothing lost uncounted or stored twice.
    let sent = samples.len() as u64;
    let mut report = Vec::new();
    for (service, metrics_url) in
        [("shop", format!("{shop_url}/metrics")), ("gateway-user", format!("http://127.0.0.1:{admin_port}/metrics"))]
    {
        let text = http.get(&metrics_url).send().await.unwrap().text().await.unwrap();
        let dropped = sum_metric(&text, "observastack_facts_dropped_total", None);
        let queue_full = sum_metric(&text, "observastack_facts_dropped_total", Some("reason=\"queue_full\""));
        let stored = stored.get(service).copied().unwrap_or(0);
        assert!(dropped > 0, "{service}: nothing counted as dropped during a 60 s outage");
        assert_eq!(queue_full, 0, "{service}: a 60 s outage at 50 req/s fits the queue");
        assert_eq!(stored + dropped, sent, "{service}: {stored} stored + {dropped} dropped ≠ {sent} sent");
        // Facts sent while the lake was up arrived, but for the last batch before the stop
        // (emitters batch for up to a second).
        let count = |p: Phase| samples.iter().filter(|s| s.0 == p).count() as u64;
        let up = count(Phase::Baseline) + count(Phase::Recovered);
        let last_batch = (Duration::from_secs(2).as_millis() / PERIOD.as_millis()) as u64;
        assert!(stored + last_batch >= up, "{service}: {stored} stored of {up} sent while the lake was up");
        report.push(format!("{service}: {sent} sent = {stored} stored + {dropped} dropped"));
    }
    // The figures behind the verdict, for `--nocapture` runs and the resilience report.
    #[allow(clippy::print_stderr)]
    {
        eprintln!(
            "facts outage: p50 {b50:?} → {o50:?}, p99 {b99:?} → {o99:?}, slowest {worst:?}; {}",
            report.join("; ")
        );
    }
    drop(facts);
    let _ = std::fs::remove_dir_all(lake.path());
}
