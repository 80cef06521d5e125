//! `observastack load`: the scenario runner's load engine, standalone. Offers an open-loop plan
//! (constant, ramp, spike or step) of user journeys to the user gateway, or of one URL, or
//! runs a closed loop at a fixed concurrency; shows a progress bar on stderr and prints a
//! summary per journey (or JSON with `--json`) on stdout.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use runner::client::Endpoint;
use runner::load::{Engine, EngineOptions, Plan};
use runner::plan::planned_count;
use runner::stats::{JourneySummary, Stats, Summary};
use scenario::load::{LoadSpec, MAX_RATE, Mix, Pattern, RateStep};
use scenario::sli::Journey;
use serde::Serialize;

use crate::ui;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PatternArg {
    Constant,
    Ramp,
    Spike,
    Step,
}

#[derive(Debug, Clone, clap::Args)]
pub struct LoadArgs {
    /// Base URL of the user gateway that journeys go through.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub target: String,
    /// Single-request mode: every journey is one GET of this URL (reported as `ping`).
    #[arg(long, conflicts_with_all = ["mix", "target"])]
    pub url: Option<String>,
    /// Journeys per second (the start of a ramp, the base of a spike or step).
    #[arg(long, default_value_t = 10.0)]
    pub rate: f64,
    /// How long to offer load, e.g. `60s`, `5m`.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    #[arg(long, value_enum, default_value = "constant")]
    pub pattern: PatternArg,
    /// The end of a ramp, the peak of a spike, or (without `--step`) the last of four steps.
    #[arg(long)]
    pub target_rate: Option<f64>,
    /// How long a ramp takes (default: the whole duration).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub ramp: Option<Duration>,
    /// When a spike starts (default: a third into the run).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub spike_at: Option<Duration>,
    /// How long a spike lasts (default: a third of the run).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub spike_for: Option<Duration>,
    /// A step of a step pattern, `AT=RATE` (e.g. `20s=100`); repeat for more steps.
    #[arg(long = "step", value_parser = parse_step)]
    pub steps: Vec<RateStep>,
    /// Journey weights, e.g. `browse=30,search=15,product=30,cart=10,checkout=15` (journeys left
    /// out weigh 0; default: that everyday mix).
    #[arg(long, value_parser = parse_mix)]
    pub mix: Option<Mix>,
    /// Closed loop instead of a schedule: this many journeys back to back (benchmarks).
    #[arg(long, conflicts_with_all = ["rate", "pattern", "target_rate", "ramp", "steps"])]
    pub concurrency: Option<usize>,
    /// Pause between the steps of a journey.
    #[arg(long, default_value = "100ms", value_parser = humantime::parse_duration)]
    pub think_time: Duration,
    /// A request that takes longer fails its journey.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
    /// Keep-alive connections in all (default: the concurrency in a closed loop, else 256).
    #[arg(long)]
    pub connections: Option<usize>,
    /// Worker threads (default: one per 20 000 journeys/s of the peak rate, at most one per CPU;
    /// one per CPU in a closed loop).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Journeys in flight at most; planned journeys beyond are dropped and counted (default:
    /// one second of the plan's peak rate, at least 10 000).
    #[arg(long)]
    pub max_in_flight: Option<usize>,
    /// Print the summary as JSON on stdout instead of a table.
    #[arg(long)]
    pub json: bool,
}

fn parse_step(s: &str) -> Result<RateStep, String> {
    let (at, rate) = s.split_once('=').ok_or_else(|| format!("`{s}`: expected AT=RATE, e.g. 20s=100"))?;
    let at = humantime::parse_duration(at.trim()).map_err(|e| format!("`{at}`: {e}"))?;
    let rate: f64 = rate.trim().parse().map_err(|_| format!("`{rate}` is not a rate"))?;
    Ok(RateStep { at_secs: at.as_secs_f64(), rate })
}

fn parse_mix(s: &str) -> Result<Mix, String> {
    let mut mix = Mix { browse: 0, search: 0, product: 0, cart: 0, checkout: 0, ping: 0 };
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (name, weight) = part.split_once('=').ok_or_else(|| format!("`{part}`: expected JOURNEY=WEIGHT"))?;
        let weight: u32 = weight.trim().parse().map_err(|_| format!("`{weight}` is not a whole number"))?;
        let slot = match Journey::parse(name.trim()) {
            Some(Journey::Browse) => &mut mix.browse,
            Some(Journey::Search) => &mut mix.search,
            Some(Journey::Product) => &mut mix.product,
            Some(Journey::Cart) => &mut mix.cart,
            Some(Journey::Checkout) => &mut mix.checkout,
            Some(Journey::Ping) => &mut mix.ping,
            None => {
                let names: Vec<&str> = Journey::ALL.iter().map(|j| j.as_str()).collect();
                return Err(format!("unknown journey `{name}`; expected one of {}", names.join(", ")));
            }
        };
        *slot = weight;
    }
    Ok(mix)
}

/// The load plan the flags describe, checked as `/config` would check it.
pub fn load_spec(args: &LoadArgs) -> anyhow::Result<LoadSpec> {
    let secs = args.duration.as_secs_f64();
    for (flag, rate) in [("--rate", Some(args.rate)), ("--target-rate", args.target_rate)] {
        if let Some(rate) = rate
            && !(0.0..=MAX_RATE).contains(&rate)
        {
            bail!("{flag}: must be between 0 and {MAX_RATE} journeys per second");
        }
    }
    let pattern = match args.pattern {
        PatternArg::Constant => Pattern::Constant,
        PatternArg::Ramp => Pattern::Ramp,
        PatternArg::Spike => Pattern::Spike,
        PatternArg::Step => Pattern::Step,
    };
    let needs_target =
        matches!(pattern, Pattern::Ramp | Pattern::Spike) || (pattern == Pattern::Step && args.steps.is_empty());
    if needs_target && args.target_rate.is_none() {
        bail!("--target-rate is required for --pattern {:?}", args.pattern);
    }
    let mut steps = args.steps.clone();
    if pattern == Pattern::Step && steps.is_empty() {
        // Four equal steps from --rate to --target-rate over the run.
        let to = args.target_rate.unwrap_or(args.rate);
        steps = (1..4)
            .map(|i| {
                let f = f64::from(i) / 3.0;
                RateStep { at_secs: secs * f64::from(i) / 4.0, rate: args.rate + (to - args.rate) * f }
            })
            .collect();
    }
    let single = args.url.is_some();
    let spec = LoadSpec {
        pattern,
        rate: args.rate,
        target_rate: args.target_rate,
        ramp_secs: args.ramp.map_or(secs, |d| d.as_secs_f64()),
        spike_at_secs: args.spike_at.map_or(secs / 3.0, |d| d.as_secs_f64()),
        spike_secs: args.spike_for.map_or(secs / 3.0, |d| d.as_secs_f64()),
        steps,
        mix: if single { Mix::ping_only() } else { args.mix.clone().unwrap_or_default() },
        think_time_ms: u64::try_from(args.think_time.as_millis()).unwrap_or(u64::MAX),
    };
    if let Some(err) = spec.check().into_iter().next() {
        let flag = match err.field.as_str() {
            "target_rate" => "--target-rate",
            "spike_secs" => "--spike-for",
            "steps" => "--step",
            "mix" => "--mix",
            other => other,
        };
        bail!("{flag}: {}", err.message);
    }
    Ok(spec)
}

/// The plan's peak rate, journeys per second.
fn peak_rate(spec: &LoadSpec) -> f64 {
    let rates = [spec.rate, spec.target_rate.unwrap_or(0.0)].into_iter().chain(spec.steps.iter().map(|s| s.rate));
    rates.fold(0.0_f64, f64::max)
}

/// One thread per 20 000 journeys/s, at most one per CPU: below that, a second thread costs more
/// in cross-core wake-ups than it gains, and leaves the target (often on the same machine) a core.
fn default_threads(spec: &LoadSpec) -> usize {
    ((peak_rate(spec) / 20_000.0).ceil() as usize).clamp(1, runner::default_threads())
}

/// One second of the plan's peak rate (a generator that falls that far behind drops rather than
/// piles up more), at least 10 000.
fn default_max_in_flight(spec: &LoadSpec) -> usize {
    (peak_rate(spec).ceil() as usize).max(10_000)
}

/// The machine-readable summary (`--json`).
#[derive(Debug, Serialize)]
pub struct Report {
    pub target: String,
    pub mode: &'static str,
    pub pattern: Option<Pattern>,
    pub duration_s: f64,
    /// Journeys the schedule planned (open loop only).
    pub planned: Option<u64>,
    pub started: u64,
    pub dropped: u64,
    pub completed: u64,
    pub failed: u64,
    /// Completed journeys per second of the run.
    pub achieved_rps: f64,
    pub all: JourneySummary,
    pub journeys: std::collections::BTreeMap<Journey, JourneySummary>,
}

pub async fn run(args: LoadArgs) -> anyhow::Result<ExitCode> {
    if args.concurrency == Some(0) {
        bail!("--concurrency: must be at least 1");
    }
    if args.duration.is_zero() {
        bail!("--duration: must be above 0");
    }
    let spec = load_spec(&args)?;
    let (target, single) = match &args.url {
        Some(url) => (Endpoint::parse(url).map_err(|e| anyhow::anyhow!("--url: {e}"))?, true),
        None => (Endpoint::parse(&args.target).map_err(|e| anyhow::anyhow!("--target: {e}"))?, false),
    };
    let closed = args.concurrency.is_some();
    let connections = args.connections.or(args.concurrency).unwrap_or(256);
    let threads =
        args.threads.unwrap_or_else(|| if closed { runner::default_threads() } else { default_threads(&spec) }).max(1);
    let max_in_flight = args.max_in_flight.unwrap_or_else(|| default_max_in_flight(&spec));
    let stats = Stats::new(None);
    let engine = Engine::start(
        EngineOptions {
            target: target.clone(),
            single_request: single,
            threads,
            connections,
            max_in_flight,
            request_timeout: args.timeout,
        },
        stats.clone(),
    )
    .context("cannot start the load engine")?;
    let planned = (!closed).then(|| planned_count(&spec, args.duration));
    let what = match (&args.concurrency, single) {
        (Some(c), _) => format!("closed loop, {c} concurrent"),
        (None, _) => format!("{:?} from {} journeys/s", spec.pattern, spec.rate).to_lowercase(),
    };
    ui::progress(&format!("load → {target} · {what} · {}", humantime::format_duration(args.duration)));

    let start = engine.set_plan(Some(Plan {
        load: spec.clone(),
        duration: Some(args.duration),
        concurrency: args.concurrency,
    }));
    let interrupted = watch_progress(&engine, &stats, start, args.duration).await;
    let ran = if interrupted {
        engine.set_plan(None);
        start.elapsed()
    } else {
        // Every journey planned before the end starts (late, if the engine fell behind) and
        // finishes; each step is bounded by the timeout.
        let grace = Instant::now() + args.timeout * 8 + Duration::from_secs(5);
        while !engine.plan_finished() && Instant::now() < grace {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        args.duration
    };
    engine.shutdown(args.timeout * 8 + Duration::from_secs(1)).await;
    let summary = stats.summary(ran);
    let report = Report {
        target: target.to_string(),
        mode: if closed { "closed" } else { "open" },
        pattern: (!closed).then_some(spec.pattern),
        duration_s: ran.as_secs_f64(),
        planned,
        started: engine.started(),
        dropped: engine.dropped(),
        completed: summary.all.completed,
        failed: summary.all.failed,
        achieved_rps: summary.all.rps,
        all: summary.all.clone(),
        journeys: summary.journeys.clone(),
    };
    if args.json {
        ui::stdout_line(&serde_json::to_string_pretty(&report)?);
    } else {
        print_table(&report, &summary, single);
    }
    Ok(if interrupted { ExitCode::from(130) } else { ExitCode::SUCCESS })
}

/// Shows progress until the plan's end; `true` if Ctrl-C cut it short.
async fn watch_progress(engine: &Engine, stats: &Stats, start: Instant, duration: Duration) -> bool {
    let total_ms = u64::try_from(duration.as_millis()).unwrap_or(u64::MAX);
    let bar = ProgressBar::with_draw_target(Some(total_ms), ProgressDrawTarget::stderr_with_hz(4));
    bar.set_style(
        ProgressStyle::with_template("{spinner} [{elapsed_precise}] {bar:30.cyan/blue} {percent:>3}% {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let deadline = start + duration;
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    let interrupted = loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = &mut ctrl_c => break true,
        }
        let now = Instant::now();
        let snap = stats.snapshot(2, engine.offered_rate(), true);
        bar.set_position(
            u64::try_from(now.saturating_duration_since(start).as_millis()).unwrap_or(u64::MAX).min(total_ms),
        );
        bar.set_message(format!(
            "{:.0} done/s · ok {:.2}% · p99 {:.1} ms · in flight {} · dropped {}",
            snap.all.rps,
            snap.all.success_ratio * 100.0,
            snap.all.p99_ms,
            engine.in_flight(),
            engine.dropped()
        ));
        if now >= deadline {
            break false;
        }
    };
    bar.finish_and_clear();
    interrupted
}

fn print_table(report: &Report, summary: &Summary, single: bool) {
    let mut lines = vec![
        format!(
            "target {} · {} · {:.1} s · started {} · dropped {} · {:.1} journeys/s completed",
            report.target, report.mode, report.duration_s, report.started, report.dropped, report.achieved_rps
        ),
        String::new(),
        format!(
            "{:<10} {:>9} {:>8} {:>9} {:>9} {:>9} {:>9} {:>9} {:>10}",
            "journey", "count", "ok %", "p50 ms", "p95 ms", "p99 ms", "max ms", "rps", "orders/min"
        ),
    ];
    let row = |name: &str, s: &JourneySummary| {
        format!(
            "{:<10} {:>9} {:>8.2} {:>9.2} {:>9.2} {:>9.2} {:>9.2} {:>9.1} {:>10.1}",
            name,
            s.completed,
            s.success_ratio * 100.0,
            s.p50_ms,
            s.p95_ms,
            s.p99_ms,
            s.max_ms,
            s.rps,
            s.orders_per_minute
        )
    };
    for (journey, s) in &summary.journeys {
        let name = if single && *journey == Journey::Ping { "url" } else { journey.as_str() };
        lines.push(row(name, s));
    }
    if summary.journeys.len() > 1 {
        lines.push(row("all", &summary.all));
    }
    if !summary.all.failures.is_empty() {
        lines.push(String::new());
        let causes: Vec<String> = summary.all.failures.iter().map(|(cause, n)| format!("{cause}: {n}")).collect();
        lines.push(format!("failures: {}", causes.join(", ")));
    }
    for line in lines {
        ui::stdout_line(&line);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use clap::Parser as _;

    use super::*;
    use crate::{Cli, Command};

    fn args(argv: &[&str]) -> LoadArgs {
        let mut full = vec!["observastack", "load"];
        full.extend_from_slice(argv);
        match Cli::try_parse_from(full).unwrap().command {
            Command::Load(args) => args,
            other => panic!("parsed as {other:?}"),
        }
    }

    #[test]
    fn flags_become_a_checked_plan() {
        let spec =
            load_spec(&args(&["--rate", "200", "--duration", "60s", "--pattern", "ramp", "--target-rate", "400"]))
                .unwrap();
        assert_eq!(
            (spec.pattern, spec.rate, spec.target_rate, spec.ramp_secs),
            (Pattern::Ramp, 200.0, Some(400.0), 60.0)
        );
        let err = load_spec(&args(&["--pattern", "spike"])).unwrap_err().to_string();
        assert!(err.contains("--target-rate"), "{err}");
        let steps =
            load_spec(&args(&["--pattern", "step", "--rate", "10", "--target-rate", "40", "--duration", "40s"]))
                .unwrap()
                .steps;
        assert_eq!(
            steps.iter().map(|s| (s.at_secs, s.rate)).collect::<Vec<_>>(),
            [(10.0, 20.0), (20.0, 30.0), (30.0, 40.0)]
        );
        let explicit = load_spec(&args(&["--pattern", "step", "--step", "5s=3", "--step", "1m=9"])).unwrap().steps;
        assert_eq!(explicit.iter().map(|s| (s.at_secs, s.rate)).collect::<Vec<_>>(), [(5.0, 3.0), (60.0, 9.0)]);
    }

    #[test]
    fn mixes_and_modes_parse() {
        let spec = load_spec(&args(&["--mix", "browse=30,checkout=10"])).unwrap();
        assert_eq!(spec.mix, Mix { browse: 30, search: 0, product: 0, cart: 0, checkout: 10, ping: 0 });
        assert!(Cli::try_parse_from(["observastack", "load", "--mix", "fly=3"]).is_err());
        let url = load_spec(&args(&["--url", "http://127.0.0.1:1/x"])).unwrap();
        assert_eq!(url.mix, Mix::ping_only());
        assert!(Cli::try_parse_from(["observastack", "load", "--concurrency", "8", "--rate", "5"]).is_err());
        assert!(load_spec(&args(&["--rate=-1"])).is_err());
    }
}
