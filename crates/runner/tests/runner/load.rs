//! Open-loop scheduling: the offered load does not bend to a slow target, and latency counts
//! from each journey's planned time. Assertions are on counts, or lower bounds on latency.

use std::sync::Arc;
use std::time::Duration;

use runner::client::Endpoint;
use runner::load::{Engine, EngineOptions, Plan};
use runner::stats::Stats;
use scenario::load::{LoadSpec, Mix};
use scenario::sli::Journey;

use crate::helpers::SlowTarget;

fn options(target: &SlowTarget, connections: usize, max_in_flight: usize) -> EngineOptions {
    EngineOptions {
        target: Endpoint::parse(&format!("{}/slow", target.url)).unwrap(),
        single_request: true,
        threads: 1,
        connections,
        max_in_flight,
        request_timeout: Duration::from_secs(10),
    }
}

fn constant(rate: f64, secs: u64) -> Plan {
    Plan {
        load: LoadSpec { rate, mix: Mix::ping_only(), ..LoadSpec::default() },
        duration: Some(Duration::from_secs(secs)),
        concurrency: None,
    }
}

async fn run(options: EngineOptions, plan: Plan) -> (Arc<Stats>, Engine) {
    let stats = Stats::new(None);
    let engine = Engine::start(options, stats.clone()).unwrap();
    let duration = plan.duration.unwrap();
    engine.set_plan(Some(plan));
    tokio::time::sleep(duration).await;
    engine.shutdown(Duration::from_secs(20)).await;
    (stats, engine)
}

#[tokio::test]
async fn a_slow_target_does_not_slow_the_offered_load() {
    // Each request takes 300 ms; 100 journeys/s for 1 s are still all sent, overlapping.
    let target = SlowTarget::start(Duration::from_millis(300)).await;
    let (stats, engine) = run(options(&target, 200, 1000), constant(100.0, 1)).await;
    let summary = stats.summary(Duration::from_secs(1));
    assert_eq!(engine.started(), 100);
    assert_eq!(engine.dropped(), 0);
    assert_eq!(target.requests(), 100);
    assert_eq!(summary.journeys[&Journey::Ping].completed, 100);
    assert_eq!(summary.all.failed, 0);
    // A closed loop would have one request at a time per connection it already had; the
    // schedule kept sending while earlier requests were still being served.
    assert!(target.max_in_flight() >= 10, "at most {} in flight at the target", target.max_in_flight());
}

#[tokio::test]
async fn latency_counts_from_the_planned_time_including_waiting() {
    // One connection and a 100 ms target: 20 journeys planned 50 ms apart queue behind each
    // other. Served alone each takes 100 ms; measured from its planned time the k-th takes
    // about 100 + 50·k ms, so the last one well over a second.
    let target = SlowTarget::start(Duration::from_millis(100)).await;
    let (stats, engine) = run(options(&target, 1, 1000), constant(20.0, 1)).await;
    let ping = &stats.summary(Duration::from_secs(1)).journeys[&Journey::Ping];
    assert_eq!(engine.started(), 20);
    assert_eq!(ping.completed, 20);
    assert!(ping.max_ms >= 1000.0, "max {} ms", ping.max_ms);
    assert!(ping.p50_ms >= 500.0, "p50 {} ms", ping.p50_ms);
    assert_eq!(target.max_in_flight(), 1);
}

#[tokio::test]
async fn arrivals_beyond_the_in_flight_cap_are_dropped_not_delayed() {
    // Journeys take 2 s, at most 5 may be in flight: of 50 planned in the first second, 45
    // are dropped (counted), none waits for a slot.
    let target = SlowTarget::start(Duration::from_secs(2)).await;
    let (stats, engine) = run(options(&target, 50, 5), constant(50.0, 1)).await;
    let ping = &stats.summary(Duration::from_secs(1)).journeys[&Journey::Ping];
    assert_eq!((engine.started(), engine.dropped()), (5, 45));
    assert_eq!((ping.completed, ping.dropped), (5, 45));
    assert_eq!(target.requests(), 5);
}

#[tokio::test]
async fn a_closed_loop_keeps_its_concurrency() {
    let target = SlowTarget::start(Duration::from_millis(50)).await;
    let plan = Plan { concurrency: Some(4), ..constant(0.0, 1) };
    let (stats, _engine) = run(options(&target, 4, 1000), plan).await;
    let ping = &stats.summary(Duration::from_secs(1)).journeys[&Journey::Ping];
    assert_eq!(target.max_in_flight(), 4);
    assert!(ping.completed >= 4, "{} completed", ping.completed);
    assert_eq!(ping.failed, 0);
}
