//! Planned send times of an open-loop plan. Arrival `k` (0, 1, 2, …) is due when the integral
//! of the offered rate since the plan started reaches `k`: for a constant rate that is
//! `start + k / rate`, and ramps, spikes and steps follow from integrating their rate piece by
//! piece. The times depend on the plan alone, never on how fast the system answers.

use std::time::Duration;

use scenario::load::{LoadSpec, Pattern};

/// A stretch of the plan over which the rate changes linearly (or not at all).
#[derive(Debug, Clone, Copy, PartialEq)]
struct Segment {
    /// Seconds after the plan started.
    start: f64,
    /// `f64::INFINITY` for the last segment.
    end: f64,
    rate_start: f64,
    rate_end: f64,
}

impl Segment {
    fn flat(start: f64, end: f64, rate: f64) -> Self {
        Self { start, end, rate_start: rate, rate_end: rate }
    }

    /// Journeys due over the whole segment (infinite for an open-ended one with a rate).
    fn integral(&self) -> f64 {
        if self.end.is_infinite() {
            return if self.rate_start > 0.0 { f64::INFINITY } else { 0.0 };
        }
        (self.rate_start + self.rate_end) / 2.0 * (self.end - self.start)
    }

    /// Seconds after the segment start at which `due` more journeys have been due.
    fn time_for(&self, due: f64) -> f64 {
        if due <= 0.0 {
            return 0.0;
        }
        let slope =
            if self.end.is_infinite() { 0.0 } else { (self.rate_end - self.rate_start) / (self.end - self.start) };
        // r0·τ + s·τ²/2 = due, solved in the form that stays exact for s → 0 and r0 = 0.
        let root = (self.rate_start * self.rate_start + 2.0 * slope * due).max(0.0).sqrt();
        let denominator = self.rate_start + root;
        if denominator > 0.0 { 2.0 * due / denominator } else { 0.0 }
    }
}

/// The rate of `spec` as piecewise-linear segments, matching [`LoadSpec::rate_at`].
fn segments(spec: &LoadSpec) -> Vec<Segment> {
    let mut out = Vec::new();
    match spec.pattern {
        Pattern::Constant => out.push(Segment::flat(0.0, f64::INFINITY, spec.rate)),
        Pattern::Ramp => {
            let to = spec.target_rate.unwrap_or(spec.rate);
            if spec.ramp_secs > 0.0 {
                out.push(Segment { start: 0.0, end: spec.ramp_secs, rate_start: spec.rate, rate_end: to });
                out.push(Segment::flat(spec.ramp_secs, f64::INFINITY, to));
            } else {
                out.push(Segment::flat(0.0, f64::INFINITY, to));
            }
        }
        Pattern::Spike => {
            let peak = spec.target_rate.unwrap_or(spec.rate);
            let (at, until) = (spec.spike_at_secs, spec.spike_at_secs + spec.spike_secs.max(0.0));
            out.push(Segment::flat(0.0, at, spec.rate));
            out.push(Segment::flat(at, until, peak));
            out.push(Segment::flat(until, f64::INFINITY, spec.rate));
        }
        Pattern::Step => {
            let mut at = 0.0;
            let mut rate = spec.rate;
            for step in &spec.steps {
                out.push(Segment::flat(at, step.at_secs.max(at), rate));
                at = step.at_secs.max(at);
                rate = step.rate;
            }
            out.push(Segment::flat(at, f64::INFINITY, rate));
        }
    }
    out.retain(|s| s.end > s.start);
    out
}

/// The planned send times of a plan, as offsets from its start, in order.
#[derive(Debug, Clone)]
pub struct Schedule {
    segments: Vec<Segment>,
    /// Index of the segment the next arrival is searched from.
    segment: usize,
    /// Journeys due before `segments[segment]` starts.
    due_before: f64,
    next: u64,
    /// Arrivals at or after this many seconds are not part of the plan.
    limit: f64,
}

impl Schedule {
    /// The schedule of `spec`, ending before `limit` (runs for ever without one).
    pub fn new(spec: &LoadSpec, limit: Option<Duration>) -> Self {
        Self {
            segments: segments(spec),
            segment: 0,
            due_before: 0.0,
            next: 0,
            limit: limit.map_or(f64::INFINITY, |d| d.as_secs_f64()),
        }
    }

    /// Seconds after the start at which arrival `self.next` is due, if it ever is.
    fn next_secs(&mut self) -> Option<f64> {
        // An index as f64 is exact up to 2^53 arrivals, far beyond any plan.
        let k = self.next as f64;
        loop {
            let segment = self.segments.get(self.segment)?;
            let integral = segment.integral();
            let has_rate = segment.rate_start > 0.0 || segment.rate_end > 0.0;
            // An arrival exactly on a boundary belongs to the next segment, whose rate then applies.
            if has_rate && k < self.due_before + integral {
                return Some(segment.start + segment.time_for(k - self.due_before).min(segment.end - segment.start));
            }
            self.due_before += integral;
            self.segment += 1;
        }
    }
}

impl Iterator for Schedule {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        let secs = self.next_secs()?;
        if secs >= self.limit || !secs.is_finite() {
            return None;
        }
        self.next += 1;
        Some(Duration::from_secs_f64(secs))
    }
}

/// How many journeys `spec` plans before `limit`: the length of its [`Schedule`].
pub fn planned_count(spec: &LoadSpec, limit: Duration) -> u64 {
    let mut schedule = Schedule::new(spec, Some(limit));
    let mut count = 0;
    while schedule.next().is_some() {
        count += 1;
    }
    count
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use scenario::load::RateStep;

    use super::*;

    fn secs(schedule: Schedule) -> Vec<f64> {
        schedule.map(|d| (d.as_secs_f64() * 1e6).round() / 1e6).collect()
    }

    fn spec(pattern: Pattern, rate: f64) -> LoadSpec {
        LoadSpec { pattern, rate, ..LoadSpec::default() }
    }

    #[test]
    fn constant_rate_plans_start_plus_i_over_rate() {
        let times = secs(Schedule::new(&spec(Pattern::Constant, 4.0), Some(Duration::from_secs(2))));
        assert_eq!(times, [0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 1.75]);
        assert_eq!(planned_count(&spec(Pattern::Constant, 40_000.0), Duration::from_secs(10)), 400_000);
        assert_eq!(planned_count(&spec(Pattern::Constant, 3.0), Duration::from_millis(1500)), 5);
    }

    #[test]
    fn zero_rate_plans_nothing_and_unbounded_plans_go_on() {
        assert_eq!(Schedule::new(&spec(Pattern::Constant, 0.0), None).next(), None);
        let mut endless = Schedule::new(&spec(Pattern::Constant, 1000.0), None);
        assert_eq!(endless.nth(99_999), Some(Duration::from_secs_f64(99.999)));
    }

    #[test]
    fn a_ramp_integrates_its_rate() {
        // From 0 to 10 journeys/s over 10 s: N(t) = t²/2, so arrival k is at sqrt(2k).
        let ramp = LoadSpec { target_rate: Some(10.0), ramp_secs: 10.0, ..spec(Pattern::Ramp, 0.0) };
        let times = secs(Schedule::new(&ramp, Some(Duration::from_secs(4))));
        let expected: Vec<f64> = (0..8).map(|k| ((2.0 * f64::from(k)).sqrt() * 1e6).round() / 1e6).collect();
        assert_eq!(times, expected);
        // 50 journeys during the ramp, then 10/s: 100 more over the next 10 s.
        assert_eq!(planned_count(&ramp, Duration::from_secs(20)), 150);
        // A falling ramp works the same way: (20 + 10) / 2 × 10 s = 150.
        let down = LoadSpec { target_rate: Some(10.0), ramp_secs: 10.0, ..spec(Pattern::Ramp, 20.0) };
        assert_eq!(planned_count(&down, Duration::from_secs(10)), 150);
    }

    #[test]
    fn a_spike_offers_its_peak_only_during_the_spike() {
        let spike =
            LoadSpec { target_rate: Some(100.0), spike_at_secs: 2.0, spike_secs: 1.0, ..spec(Pattern::Spike, 10.0) };
        let times: Vec<f64> = secs(Schedule::new(&spike, Some(Duration::from_secs(5))));
        assert_eq!(times.len(), 20 + 100 + 20);
        assert_eq!(times.iter().filter(|t| (2.0..3.0).contains(*t)).count(), 100);
        assert_eq!(times[20], 2.0);
        assert_eq!(times[120], 3.0);
    }

    #[test]
    fn steps_change_the_rate_and_a_zero_step_pauses() {
        let step = LoadSpec {
            steps: vec![RateStep { at_secs: 1.0, rate: 0.0 }, RateStep { at_secs: 2.0, rate: 4.0 }],
            ..spec(Pattern::Step, 2.0)
        };
        let times = secs(Schedule::new(&step, Some(Duration::from_secs(3))));
        assert_eq!(times, [0.0, 0.5, 2.0, 2.25, 2.5, 2.75]);
        // A plan that starts at rate 0 waits for its first step.
        let late = LoadSpec { steps: vec![RateStep { at_secs: 5.0, rate: 1.0 }], ..spec(Pattern::Step, 0.0) };
        assert_eq!(secs(Schedule::new(&late, Some(Duration::from_secs(7)))), [5.0, 6.0]);
    }

    #[test]
    fn the_schedule_agrees_with_rate_at() {
        let ramp = LoadSpec { target_rate: Some(300.0), ramp_secs: 30.0, ..spec(Pattern::Ramp, 100.0) };
        let times: Vec<f64> = Schedule::new(&ramp, Some(Duration::from_secs(40))).map(|d| d.as_secs_f64()).collect();
        for second in 0..40 {
            let lo = f64::from(second);
            let in_second = times.iter().filter(|t| (lo..lo + 1.0).contains(*t)).count();
            let expected = (ramp.rate_at(lo) + ramp.rate_at(lo + 1.0)) / 2.0;
            assert!((in_second as f64 - expected).abs() <= 1.0, "second {second}: {in_second} vs {expected}");
        }
    }
}
