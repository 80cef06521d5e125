//! Old `metadata.json` files leave the warehouse: the iceberg crate trims the metadata log to
//! `write.metadata.previous-versions-max` (10) but does not delete the files it trims, so
//! `Lake` does. Without that every flush left one more file behind forever.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::sync::Arc;

use chrono::Utc;
use facts::{Engine, RequestFact, Settings};
use uuid::Uuid;

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
