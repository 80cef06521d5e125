//! The load loop: one OS thread per core, each with a single-threaded runtime and its own
//! keep-alive connections. Every worker walks the same schedule and takes every `n`-th
//! arrival, so no arrival crosses a thread. A worker sleeps until an arrival's planned time
//! (on Linux a timerfd, precise to microseconds rather than tokio's millisecond wheel; at high
//! rates wake-ups are coalesced to at most one per 500 µs) and
//! starts the journey as its own task, whatever the journeys before it are doing: the offered
//! load never waits for the system. When the in-flight cap is reached, an arrival is dropped
//! and counted instead of delaying the schedule. Finished journeys go, batched, over a channel
//! to the aggregator.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, Instant};

use scenario::load::LoadSpec;
use scenario::sli::Journey;
use tokio::sync::{mpsc, watch};
use tokio::task::LocalSet;

use crate::client::{Endpoint, Pool};
use crate::journey::{self, Catalog, Context, Picker};
use crate::plan::Schedule;
use crate::record::{Outcome, Record};
use crate::stats::{self, Stats};

/// Records are sent to the aggregator in batches of this many, or every [`FLUSH_EVERY`].
const BATCH: usize = 256;
const FLUSH_EVERY: Duration = Duration::from_millis(10);
/// Catalog pages (of 100 products) read when a plan starts.
const CATALOG_PAGES: u32 = 10;

/// How the engine reaches its target; fixed for the engine's life.
#[derive(Debug, Clone)]
pub struct EngineOptions {
    /// The user gateway's base URL (journeys), or the one URL of single-request mode.
    pub target: Endpoint,
    /// Every journey is one GET of `target` (labelled `ping`).
    pub single_request: bool,
    /// Worker threads, each with its own runtime and connections.
    pub threads: usize,
    /// Keep-alive connections in all, split over the threads; requests beyond wait for one.
    pub connections: usize,
    /// Journeys in flight at most, split over the threads; arrivals beyond are dropped.
    pub max_in_flight: usize,
    /// A request that takes longer fails its journey; see [`Engine::set_request_timeout`].
    pub request_timeout: Duration,
}

/// What to offer.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub load: LoadSpec,
    /// The plan ends after this; `None` runs until replaced.
    pub duration: Option<Duration>,
    /// Closed loop: this many journeys back to back, no schedule (benchmarks only).
    pub concurrency: Option<usize>,
}

#[derive(Debug)]
struct Active {
    generation: u64,
    start: Instant,
    plan: Plan,
}

/// Counters every worker updates.
#[derive(Debug, Default)]
struct Shared {
    in_flight: AtomicI64,
    started: AtomicU64,
    dropped: AtomicU64,
    generation: AtomicU64,
    /// Read by every request, so a change applies without restarting the plan.
    timeout_ms: Arc<AtomicU64>,
    /// `(generation, workers)`: how many workers got through that plan's whole schedule.
    finished: std::sync::Mutex<(u64, usize)>,
}

/// A running engine. Dropping it without [`Engine::shutdown`] stops the workers too (their
/// channels close), but does not wait for them.
pub struct Engine {
    plan_tx: watch::Sender<Option<Arc<Active>>>,
    stop_tx: watch::Sender<Option<Instant>>,
    workers: std::sync::Mutex<Vec<std::thread::JoinHandle<()>>>,
    threads: usize,
    aggregator: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
    shared: Arc<Shared>,
    catalog: Arc<Catalog>,
    current: RwLock<Option<Arc<Active>>>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine").field("catalog", &self.catalog.len()).finish_non_exhaustive()
    }
}

impl Engine {
    /// Starts the worker threads (idle until a plan is set) and the aggregator, which runs on
    /// the caller's runtime and feeds `stats`.
    pub fn start(options: EngineOptions, stats: Arc<Stats>) -> anyhow::Result<Self> {
        let threads = options.threads.max(1);
        let (plan_tx, _) = watch::channel(None::<Arc<Active>>);
        let (stop_tx, _) = watch::channel(None::<Instant>);
        let (records_tx, records_rx) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared::default());
        shared.timeout_ms.store(millis(options.request_timeout), Ordering::Relaxed);
        let catalog = Arc::new(Catalog::default());
        let mut workers = Vec::with_capacity(threads);
        for index in 0..threads {
            let worker = Worker {
                index,
                count: threads,
                connections: share(options.connections.max(1), threads, index).max(1),
                max_in_flight: share(options.max_in_flight.max(1), threads, index).max(1),
                options: options.clone(),
                plan_rx: plan_tx.subscribe(),
                stop_rx: stop_tx.subscribe(),
                records: records_tx.clone(),
                shared: shared.clone(),
                catalog: catalog.clone(),
            };
            workers.push(std::thread::Builder::new().name(format!("runner-{index}")).spawn(move || worker.run())?);
        }
        drop(records_tx);
        let aggregator = tokio::spawn(stats::aggregate(stats, records_rx));
        Ok(Self {
            plan_tx,
            stop_tx,
            workers: std::sync::Mutex::new(workers),
            threads,
            aggregator: std::sync::Mutex::new(Some(aggregator)),
            shared,
            catalog,
            current: RwLock::new(None),
        })
    }

    /// Starts `plan` now (its clock at zero), or stops starting journeys (`None`). Journeys in
    /// flight finish either way. Returns the plan's start.
    pub fn set_plan(&self, plan: Option<Plan>) -> Instant {
        let start = Instant::now();
        let generation = self.shared.generation.fetch_add(1, Ordering::SeqCst) + 1;
        let active = plan.map(|plan| Arc::new(Active { generation, start, plan }));
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = active.clone();
        self.plan_tx.send_replace(active);
        start
    }

    /// Applies to every request sent from now on, without restarting the plan.
    pub fn set_request_timeout(&self, timeout: Duration) {
        self.shared.timeout_ms.store(millis(timeout), Ordering::Relaxed);
    }

    /// Journeys per second offered now (0 when idle, past the plan's end, or closed loop).
    pub fn offered_rate(&self) -> f64 {
        let current = self.current.read().unwrap_or_else(PoisonError::into_inner).clone();
        let Some(active) = current else { return 0.0 };
        if active.plan.concurrency.is_some() {
            return 0.0;
        }
        let elapsed = active.start.elapsed();
        if active.plan.duration.is_some_and(|d| elapsed >= d) {
            return 0.0;
        }
        active.plan.load.rate_at(elapsed.as_secs_f64())
    }

    /// Whether the current plan is over: every worker went through its whole schedule (a
    /// worker that fell behind still starts every planned journey, late) and every journey
    /// finished. Never true for a plan without a duration.
    pub fn plan_finished(&self) -> bool {
        let generation = self.shared.generation.load(Ordering::SeqCst);
        let (done_generation, done) = *self.shared.finished.lock().unwrap_or_else(PoisonError::into_inner);
        done_generation == generation && done >= self.threads && self.in_flight() == 0
    }

    /// Whether a plan is set.
    pub fn running(&self) -> bool {
        self.current.read().unwrap_or_else(PoisonError::into_inner).is_some()
    }

    pub fn in_flight(&self) -> u64 {
        u64::try_from(self.shared.in_flight.load(Ordering::Relaxed)).unwrap_or(0)
    }

    /// Journeys started since the engine started.
    pub fn started(&self) -> u64 {
        self.shared.started.load(Ordering::Relaxed)
    }

    /// Arrivals dropped at the in-flight cap since the engine started.
    pub fn dropped(&self) -> u64 {
        self.shared.dropped.load(Ordering::Relaxed)
    }

    /// Product ids journeys currently pick from.
    pub fn catalog_size(&self) -> usize {
        self.catalog.len()
    }

    /// Stops starting journeys, lets those in flight finish for at most `drain`, and waits
    /// until every record reached the aggregator.
    pub async fn shutdown(&self, drain: Duration) {
        self.stop_tx.send_replace(Some(Instant::now() + drain));
        let workers = std::mem::take(&mut *self.workers.lock().unwrap_or_else(PoisonError::into_inner));
        let joined = tokio::task::spawn_blocking(move || {
            for worker in workers {
                let _ = worker.join();
            }
        });
        let _ = joined.await;
        let aggregator = self.aggregator.lock().unwrap_or_else(PoisonError::into_inner).take();
        if let Some(aggregator) = aggregator {
            let _ = aggregator.await;
        }
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}

/// `total` split over `count` parts, the first ones taking the remainder.
fn share(total: usize, count: usize, index: usize) -> usize {
    total / count + usize::from(index < total % count)
}

struct Worker {
    index: usize,
    count: usize,
    connections: usize,
    max_in_flight: usize,
    options: EngineOptions,
    plan_rx: watch::Receiver<Option<Arc<Active>>>,
    /// Set to the drain deadline when the engine shuts down.
    stop_rx: watch::Receiver<Option<Instant>>,
    records: mpsc::UnboundedSender<Vec<Record>>,
    shared: Arc<Shared>,
    catalog: Arc<Catalog>,
}

/// Records of one worker, batched before they cross to the aggregator.
struct Recorder {
    buf: RefCell<Vec<Record>>,
    tx: mpsc::UnboundedSender<Vec<Record>>,
}

impl Recorder {
    fn push(&self, record: Record) {
        let full = {
            let mut buf = self.buf.borrow_mut();
            buf.push(record);
            buf.len() >= BATCH
        };
        if full {
            self.flush();
        }
    }

    fn flush(&self) {
        let batch = std::mem::take(&mut *self.buf.borrow_mut());
        if !batch.is_empty() {
            let _ = self.tx.send(batch);
        }
    }
}

/// What a worker's tasks share.
struct Local {
    pool: Rc<Pool>,
    recorder: Rc<Recorder>,
    in_flight: Cell<usize>,
    max_in_flight: usize,
    shared: Arc<Shared>,
}

impl Worker {
    fn run(self) {
        let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
            Ok(runtime) => runtime,
            Err(err) => {
                tracing::error!(error = %err, "cannot start a runner worker runtime");
                return;
            }
        };
        let local = LocalSet::new();
        local.block_on(&runtime, self.serve());
    }

    async fn serve(self) {
        let pool = Pool::new(self.options.target.clone(), self.connections);
        let recorder = Rc::new(Recorder { buf: RefCell::new(Vec::with_capacity(BATCH)), tx: self.records.clone() });
        let local = Rc::new(Local {
            pool,
            recorder: recorder.clone(),
            in_flight: Cell::new(0),
            max_in_flight: self.max_in_flight,
            shared: self.shared.clone(),
        });
        let flusher = {
            let recorder = recorder.clone();
            tokio::task::spawn_local(async move {
                let mut tick = tokio::time::interval(FLUSH_EVERY);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tick.tick().await;
                    recorder.flush();
                }
            })
        };
        let timer = timer::Timer::new();
        let (mut plan_rx, mut stop_rx) = (self.plan_rx.clone(), self.stop_rx.clone());
        loop {
            if stop_rx.borrow().is_some() {
                break;
            }
            let active = plan_rx.borrow_and_update().clone();
            let drive = async {
                if let Some(active) = &active {
                    self.drive(active, &local, &timer).await;
                    let mut finished = self.shared.finished.lock().unwrap_or_else(PoisonError::into_inner);
                    *finished = match *finished {
                        (generation, done) if generation == active.generation => (generation, done + 1),
                        _ => (active.generation, 1),
                    };
                }
                // Plan done or none: idle until something changes.
                std::future::pending::<()>().await;
            };
            tokio::select! {
                () = drive => {}
                changed = plan_rx.changed() => if changed.is_err() { break },
                _ = stop_rx.changed() => break,
            }
        }
        // Let the journeys in flight finish, until the drain deadline.
        let drain = (*self.stop_rx.borrow()).unwrap_or_else(Instant::now);
        while local.in_flight.get() > 0 && Instant::now() < drain {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        flusher.abort();
        recorder.flush();
    }

    async fn drive(&self, active: &Active, local: &Rc<Local>, timer: &timer::Timer) {
        let plan = &active.plan;
        let single = self.options.single_request.then(|| self.options.target.path().to_owned());
        let ctx = Rc::new(Context {
            pool: local.pool.clone(),
            catalog: self.catalog.clone(),
            think: Duration::from_millis(plan.load.think_time_ms),
            timeout_ms: self.shared.timeout_ms.clone(),
            single,
        });
        let picker = Picker::new(&plan.load.mix);
        if self.index == 0 && !self.options.single_request && picker_needs_catalog(&plan.load) {
            let timeout = Duration::from_millis(self.shared.timeout_ms.load(Ordering::Relaxed));
            let (pool, catalog) = (local.pool.clone(), self.catalog.clone());
            tokio::task::spawn_local(async move {
                match journey::load_catalog(&pool, CATALOG_PAGES, timeout).await {
                    Some(ids) if !ids.is_empty() => catalog.replace(ids),
                    _ => tracing::warn!("could not read the catalog; carts use the seed's first product ids"),
                }
            });
        }
        match plan.concurrency {
            Some(concurrency) => self.closed_loop(active, concurrency, &ctx, local).await,
            None => self.open_loop(active, &ctx, &picker, local, timer).await,
        }
    }

    async fn open_loop(
        &self,
        active: &Active,
        ctx: &Rc<Context>,
        picker: &Picker,
        local: &Rc<Local>,
        timer: &timer::Timer,
    ) {
        let schedule = Schedule::new(&active.plan.load, active.plan.duration).skip(self.index).step_by(self.count);
        for offset in schedule {
            let planned = active.start + offset;
            timer.sleep_until(planned).await;
            // Behind schedule, the sleep returns at once: give the journeys' tasks (whose
            // responses free in-flight slots) their turn every so often instead of issuing
            // or dropping the whole backlog in one go.
            tokio::task::consume_budget().await;
            let journey = picker.pick();
            if local.in_flight.get() >= local.max_in_flight {
                local.shared.dropped.fetch_add(1, Ordering::Relaxed);
                local.recorder.push(Record {
                    journey,
                    outcome: Outcome::Dropped,
                    finished: Instant::now(),
                    latency_us: 0,
                    requests: 0,
                    orders: 0,
                });
                continue;
            }
            spawn_journey(local, ctx, journey, planned);
        }
    }

    async fn closed_loop(&self, active: &Active, concurrency: usize, ctx: &Rc<Context>, local: &Rc<Local>) {
        let mine = share(concurrency, self.count, self.index);
        let deadline = active.plan.duration.map(|d| active.start + d);
        let picker = Picker::new(&active.plan.load.mix);
        let generation = active.generation;
        let mut loops = Vec::with_capacity(mine);
        for _ in 0..mine {
            let (ctx, local, picker) = (ctx.clone(), local.clone(), picker.clone());
            loops.push(tokio::task::spawn_local(async move {
                loop {
                    let now = Instant::now();
                    if deadline.is_some_and(|d| now >= d)
                        || local.shared.generation.load(Ordering::Relaxed) != generation
                    {
                        break;
                    }
                    enter(&local);
                    let record = journey::run(&ctx, picker.pick(), now).await;
                    leave(&local, record);
                }
            }));
        }
        for task in loops {
            let _ = task.await;
        }
    }
}

fn picker_needs_catalog(load: &LoadSpec) -> bool {
    load.mix
        .weights()
        .keys()
        .any(|j| matches!(j, Journey::Browse | Journey::Product | Journey::Cart | Journey::Checkout))
}

fn enter(local: &Local) {
    local.in_flight.set(local.in_flight.get() + 1);
    local.shared.in_flight.fetch_add(1, Ordering::Relaxed);
    local.shared.started.fetch_add(1, Ordering::Relaxed);
}

fn leave(local: &Local, record: Record) {
    local.in_flight.set(local.in_flight.get().saturating_sub(1));
    local.shared.in_flight.fetch_sub(1, Ordering::Relaxed);
    local.recorder.push(record);
}

fn spawn_journey(local: &Rc<Local>, ctx: &Rc<Context>, journey: Journey, planned: Instant) {
    enter(local);
    let (local, ctx) = (local.clone(), ctx.clone());
    tokio::task::spawn_local(async move {
        let record = journey::run(&ctx, journey, planned).await;
        leave(&local, record);
    });
}

/// Sleeping until an instant with better than tokio's millisecond resolution.
mod timer {
    use std::time::Instant;

    /// Wake-ups of one worker are at least this far apart. At high rates, arrivals due within
    /// it are started together, late by at most this much (lateness counts in their latency):
    /// one wake-up per arrival would cost more CPU than the request itself.
    #[cfg(target_os = "linux")]
    pub const MIN_WAKE_INTERVAL: std::time::Duration = std::time::Duration::from_micros(500);

    /// Sleeps at least this long end this much early, the rest spun.
    #[cfg(target_os = "linux")]
    const SPIN_AFTER_SLEEPS_OVER: std::time::Duration = std::time::Duration::from_millis(2);
    #[cfg(target_os = "linux")]
    const EARLY_WAKE: std::time::Duration = std::time::Duration::from_micros(150);

    #[cfg(target_os = "linux")]
    pub struct Timer {
        fd: Option<tokio::io::unix::AsyncFd<Fd>>,
        last_wake: std::cell::Cell<Instant>,
    }

    #[cfg(target_os = "linux")]
    struct Fd(nix::sys::timerfd::TimerFd);

    #[cfg(target_os = "linux")]
    impl std::os::fd::AsRawFd for Fd {
        fn as_raw_fd(&self) -> std::os::fd::RawFd {
            use std::os::fd::AsFd as _;
            self.0.as_fd().as_raw_fd()
        }
    }

    #[cfg(target_os = "linux")]
    impl Timer {
        /// A timerfd on the monotonic clock (what `Instant` reads); tokio's timer if that fails.
        pub fn new() -> Self {
            use nix::sys::timerfd::{ClockId, TimerFd, TimerFlags};
            // `AsyncFd::new` is deprecated for `register`, which is `unsafe` (forbidden here). Its
            // contract holds: `Fd` owns the descriptor, so it stays open and the same for the
            // `AsyncFd`'s whole life.
            #[allow(deprecated)]
            let fd = TimerFd::new(ClockId::CLOCK_MONOTONIC, TimerFlags::TFD_NONBLOCK | TimerFlags::TFD_CLOEXEC)
                .ok()
                .and_then(|fd| tokio::io::unix::AsyncFd::new(Fd(fd)).ok());
            Self { fd, last_wake: std::cell::Cell::new(Instant::now()) }
        }

        pub async fn sleep_until(&self, deadline: Instant) {
            use nix::sys::time::TimeSpec;
            use nix::sys::timerfd::{Expiration, TimerSetTimeFlags};
            let Some(fd) = &self.fd else {
                tokio::time::sleep_until(deadline.into()).await;
                return;
            };
            let now = Instant::now();
            if now >= deadline {
                return;
            }
            let wake_at = deadline.max(self.last_wake.get() + MIN_WAKE_INTERVAL);
            // After a long sleep the thread wakes from idle, which takes a while: wake a little
            // early and spin the rest, so the journey starts on time (spinning costs at most
            // EARLY_WAKE per long sleep, i.e. only at low rates).
            let long = wake_at - now >= SPIN_AFTER_SLEEPS_OVER;
            let target = if long { wake_at - EARLY_WAKE } else { wake_at };
            let exit_at = target.min(deadline);
            loop {
                let now = Instant::now();
                if now >= exit_at {
                    break;
                }
                let wait = TimeSpec::from(target - now);
                if fd.get_ref().0.set(Expiration::OneShot(wait), TimerSetTimeFlags::empty()).is_err() {
                    tokio::time::sleep_until(deadline.into()).await;
                    return;
                }
                match fd.readable().await {
                    Ok(mut guard) => {
                        let _ = guard.try_io(|fd| fd.get_ref().0.wait().map_err(std::io::Error::from));
                    }
                    Err(_) => {
                        tokio::time::sleep_until(deadline.into()).await;
                        return;
                    }
                }
            }
            if long {
                while Instant::now() < deadline {
                    std::hint::spin_loop();
                }
            }
            // The time asked for, not the time woken: wake-up latency must not push every later
            // wake-up back when arrivals are just over the interval apart.
            self.last_wake.set(wake_at);
        }
    }

    #[cfg(not(target_os = "linux"))]
    pub struct Timer;

    #[cfg(not(target_os = "linux"))]
    impl Timer {
        pub fn new() -> Self {
            Self
        }

        pub async fn sleep_until(&self, deadline: Instant) {
            tokio::time::sleep_until(deadline.into()).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_add_up() {
        for (total, count) in [(10, 3), (1, 2), (64, 2), (0, 4)] {
            let parts: Vec<usize> = (0..count).map(|i| share(total, count, i)).collect();
            assert_eq!(parts.iter().sum::<usize>(), total);
            assert!(parts.iter().max().unwrap_or(&0) - parts.iter().min().unwrap_or(&0) <= 1);
        }
    }
}
