//! Load plans: the offered arrival rate of journeys over time, and the journey mix. The same
//! shape is written in a scenario's `[baseline.load]`/`[load]` tables and in the runner's
//! `/config` (`load`), so an instructor's plan reaches the runner unchanged.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::sli::Journey;

/// The most journeys per second a plan may offer.
pub const MAX_RATE: f64 = 100_000.0;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Pattern {
    /// `rate` for the whole run.
    #[default]
    Constant,
    /// From `rate` to `target_rate`, linearly over `ramp_secs`, then `target_rate`.
    Ramp,
    /// `rate`, except `target_rate` from `spike_at_secs` for `spike_secs`.
    Spike,
    /// `rate`, then each step's rate from its `at_secs` on.
    Step,
}

/// One step of a `step` pattern.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RateStep {
    /// Seconds after the plan started.
    #[schemars(range(min = 0.0, max = 86400.0))]
    pub at_secs: f64,
    /// Journeys per second from then on.
    #[schemars(range(min = 0.0, max = 100000.0))]
    pub rate: f64,
}

/// An open-loop load plan: journeys start on schedule whatever the system's latency.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct LoadSpec {
    pub pattern: Pattern,
    /// Journeys per second: the constant rate, the start of a ramp, the base of a spike or step.
    #[schemars(range(min = 0.0, max = 100000.0))]
    pub rate: f64,
    /// The end of a ramp, or the peak of a spike.
    #[schemars(range(min = 0.0, max = 100000.0))]
    pub target_rate: Option<f64>,
    /// How long a ramp takes.
    #[schemars(range(min = 0.0, max = 86400.0))]
    pub ramp_secs: f64,
    /// When a spike starts, seconds after the plan started.
    #[schemars(range(min = 0.0, max = 86400.0))]
    pub spike_at_secs: f64,
    /// How long a spike lasts.
    #[schemars(range(min = 0.0, max = 86400.0))]
    pub spike_secs: f64,
    /// The steps of a `step` pattern, in time order.
    pub steps: Vec<RateStep>,
    /// Relative weights of the journeys started; a journey with weight 0 is never started.
    pub mix: Mix,
    /// Pause between the steps of one journey, as a user reading a page would.
    #[schemars(range(min = 0, max = 60000))]
    pub think_time_ms: u64,
}

impl Default for LoadSpec {
    fn default() -> Self {
        LoadSpec {
            pattern: Pattern::Constant,
            rate: 10.0,
            target_rate: None,
            ramp_secs: 0.0,
            spike_at_secs: 0.0,
            spike_secs: 0.0,
            steps: Vec::new(),
            mix: Mix::default(),
            think_time_ms: 100,
        }
    }
}

/// Relative weights of the journeys a plan starts. Fields left out weigh 0, except that the
/// default mix (no `mix` at all) is a shop's everyday traffic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Mix {
    #[serde(default)]
    #[schemars(range(max = 10000))]
    pub browse: u32,
    #[serde(default)]
    #[schemars(range(max = 10000))]
    pub search: u32,
    #[serde(default)]
    #[schemars(range(max = 10000))]
    pub product: u32,
    #[serde(default)]
    #[schemars(range(max = 10000))]
    pub cart: u32,
    #[serde(default)]
    #[schemars(range(max = 10000))]
    pub checkout: u32,
    #[serde(default)]
    #[schemars(range(max = 10000))]
    pub ping: u32,
}

impl Default for Mix {
    /// A shop's everyday traffic: mostly browsing, some carts, a few orders.
    fn default() -> Self {
        Mix { browse: 30, search: 15, product: 30, cart: 10, checkout: 15, ping: 0 }
    }
}

impl Mix {
    /// Only `ping`: one cheap request per journey, for benchmarks.
    pub fn ping_only() -> Self {
        Mix { browse: 0, search: 0, product: 0, cart: 0, checkout: 0, ping: 1 }
    }

    /// The journeys with a weight above 0, and their weights.
    pub fn weights(&self) -> BTreeMap<Journey, u32> {
        [
            (Journey::Browse, self.browse),
            (Journey::Search, self.search),
            (Journey::Product, self.product),
            (Journey::Cart, self.cart),
            (Journey::Checkout, self.checkout),
            (Journey::Ping, self.ping),
        ]
        .into_iter()
        .filter(|(_, w)| *w > 0)
        .collect()
    }
}

/// A rule a plan breaks, naming the field (dotted, relative to the plan) and the rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanError {
    pub field: String,
    pub rule: &'static str,
    pub message: String,
}

impl LoadSpec {
    /// The offered rate, journeys per second, `elapsed_secs` after the plan started.
    pub fn rate_at(&self, elapsed_secs: f64) -> f64 {
        match self.pattern {
            Pattern::Constant => self.rate,
            Pattern::Ramp => {
                let to = self.target_rate.unwrap_or(self.rate);
                if self.ramp_secs <= 0.0 || elapsed_secs >= self.ramp_secs {
                    to
                } else {
                    self.rate + (to - self.rate) * (elapsed_secs / self.ramp_secs).max(0.0)
                }
            }
            Pattern::Spike => {
                let in_spike =
                    elapsed_secs >= self.spike_at_secs && elapsed_secs < self.spike_at_secs + self.spike_secs;
                if in_spike { self.target_rate.unwrap_or(self.rate) } else { self.rate }
            }
            Pattern::Step => {
                self.steps.iter().take_while(|s| s.at_secs <= elapsed_secs).last().map_or(self.rate, |s| s.rate)
            }
        }
    }

    /// Rules a JSON Schema cannot say: what each pattern needs, a mix that starts something.
    pub fn check(&self) -> Vec<PlanError> {
        let mut errors = Vec::new();
        let mut err = |field: &str, rule: &'static str, message: String| {
            errors.push(PlanError { field: field.to_owned(), rule, message });
        };
        match self.pattern {
            Pattern::Ramp | Pattern::Spike if self.target_rate.is_none() => {
                err("target_rate", "required", format!("a {:?} pattern needs target_rate", self.pattern).to_lowercase())
            }
            Pattern::Spike if self.spike_secs <= 0.0 => {
                err("spike_secs", "minimum", "a spike pattern needs spike_secs > 0".to_owned())
            }
            Pattern::Step if self.steps.is_empty() => {
                err("steps", "required", "a step pattern needs at least one step".to_owned())
            }
            _ => {}
        }
        if self.steps.windows(2).any(|w| w[1].at_secs < w[0].at_secs) {
            err("steps", "order", "steps must be in time order of at_secs".to_owned());
        }
        if self.mix.weights().is_empty() {
            err("mix", "non_empty", "the mix must give at least one journey a weight above 0".to_owned());
        }
        errors
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_pattern_offers_the_rate_it_describes() {
        let ramp = LoadSpec {
            pattern: Pattern::Ramp,
            rate: 10.0,
            target_rate: Some(20.0),
            ramp_secs: 10.0,
            ..Default::default()
        };
        assert_eq!(ramp.rate_at(0.0), 10.0);
        assert_eq!(ramp.rate_at(5.0), 15.0);
        assert_eq!(ramp.rate_at(30.0), 20.0);
        let spike = LoadSpec {
            pattern: Pattern::Spike,
            rate: 10.0,
            target_rate: Some(50.0),
            spike_at_secs: 5.0,
            spike_secs: 2.0,
            ..Default::default()
        };
        assert_eq!([spike.rate_at(4.9), spike.rate_at(5.0), spike.rate_at(7.0)], [10.0, 50.0, 10.0]);
        let step = LoadSpec {
            pattern: Pattern::Step,
            rate: 1.0,
            steps: vec![RateStep { at_secs: 2.0, rate: 5.0 }, RateStep { at_secs: 4.0, rate: 9.0 }],
            ..Default::default()
        };
        assert_eq!([step.rate_at(1.0), step.rate_at(2.0), step.rate_at(10.0)], [1.0, 5.0, 9.0]);
    }

    #[test]
    fn check_names_what_a_pattern_is_missing() {
        let spike = LoadSpec { pattern: Pattern::Spike, ..Default::default() };
        let fields: Vec<_> = spike.check().into_iter().map(|e| e.field).collect();
        assert_eq!(fields, ["target_rate"]);
        let empty_mix = LoadSpec {
            mix: Mix { browse: 0, search: 0, product: 0, cart: 0, checkout: 0, ping: 0 },
            ..Default::default()
        };
        assert_eq!(empty_mix.check()[0].field, "mix");
    }
}
