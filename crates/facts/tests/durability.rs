//! Durability with a real process and a real signal: clients post batches while the facts
//! binary flushes every few hundred milliseconds; the process gets SIGKILL mid-ingest; after a
//! restart every acknowledged `event_id` is stored exactly once.
#![allow(clippy::unwrap_used)]

mod support;

use std::collections::{HashMap, HashSet};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use serde_json::json;
use uuid::Uuid;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn start(dir: &std::path::Path, port: u16) -> Child {
    Command::new(env!("CARGO_BIN_EXE_facts"))
        .args(["--listen", &format!("127.0.0.1:{port}"), "--data-dir"])
        .arg(dir)
        .args(["--flush-interval", "300ms", "--log", "warn"])
        .env_remove("DATABASE_URL")
        .env(service_kit::auth::ENV_JWT_PUBLIC_KEYS, support::public_keys_pem())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

async fn wait_ready(client: &reqwest::Client, base: &str) {
    for _ in 0..200 {
        if client.get(format!("{base}/healthz")).send().await.is_ok_and(|r| r.status().is_success()) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("facts did not become ready at {base}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_ingest_loses_no_acknowledged_fact_and_replay_adds_no_duplicate() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let client = support::client(service_kit::Role::Service);
    let mut child = start(dir.path(), port);
    wait_ready(&client, &base).await;

    let acked: Arc<Mutex<HashSet<Uuid>>> = Arc::default();
    let mut clients = Vec::new();
    for _ in 0..4 {
        let (client, base, acked) = (client.clone(), base.clone(), acked.clone());
        clients.push(tokio::spawn(async move {
            loop {
                let ids: Vec<Uuid> = (0..50).map(|_| Uuid::now_v7()).collect();
                let batch: Vec<_> = ids
                    .iter()
                    .map(|id| {
                        json!({"event_id": id.to_string(), "event_time": Utc::now().to_rfc3339(), "service": "shop",
                        "method": "GET", "path_template": "/products/{id}", "status_code": 200, "latency_ms": 3.5})
                    })
                    .collect();
                match client.post(format!("{base}/api/v1/facts")).json(&batch).send().await {
                    Ok(resp) if resp.status() == 200 => acked.lock().unwrap().extend(ids),
                    Ok(_) => {}
                    Err(_) => return,
                }
            }
        }));
    }
    // Let several flushes and thousands of acknowledgements happen, then kill -9.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    for c in clients {
        c.await.unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    assert!(acked.len() >= 1000, "only {} facts acknowledged before the kill", acked.len());

    // Restart on the same data dir: replay, then commit everything and stop.
    let mut child = start(dir.path(), port);
    wait_ready(&client, &base).await;
    let resp =
        support::client(service_kit::Role::Instructor).post(format!("{base}/api/v1/flush")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    child.kill().unwrap();
    child.wait().unwrap();

    let mut settings = facts::Settings::new(dir.path());
    settings.flush_interval = Duration::from_secs(3600);
    let engine = facts::Engine::open(settings).await.unwrap();
    let now = Utc::now().timestamp();
    let stored = engine.committed_ids(now - 3600, now + 3600).await.unwrap();
    let mut counts: HashMap<Uuid, usize> = HashMap::new();
    for id in &stored {
        *counts.entry(*id).or_default() += 1;
    }
    let missing = acked.iter().filter(|id| !counts.contains_key(id)).count();
    let duplicated = counts.values().filter(|&&n| n > 1).count();
    assert_eq!(missing, 0, "{missing} of {} acknowledged facts lost", acked.len());
    assert_eq!(duplicated, 0, "{duplicated} facts stored more than once");
}
