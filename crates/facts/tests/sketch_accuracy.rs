//! Percentiles from merged DDSketches stay within 1 % of the exact (lower nearest-rank)
//! quantile for several latency shapes, for 100-fact windows and for a day of merged minutes.
#![allow(clippy::unwrap_used)]

use facts::sketch;

fn exact(sorted: &[f64], q: f64) -> f64 {
    sorted[(q * (sorted.len() as f64 - 1.0)) as usize]
}

fn normal(rng: &mut fastrand::Rng) -> f64 {
    let (u1, u2) = (rng.f64().max(f64::MIN_POSITIVE), rng.f64());
    (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
}

fn sample(shape: &str, rng: &mut fastrand::Rng) -> f64 {
    match shape {
        "uniform" => 1.0 + rng.f64() * 999.0,
        "lognormal" => (3.0 + normal(rng)).exp(),
        "pareto" => 5.0 / (1.0 - rng.f64()).powf(1.0 / 1.5),
        "bimodal" => {
            if rng.f64() < 0.9 {
                (20.0 + 2.0 * normal(rng)).max(0.5)
            } else {
                (800.0 + 50.0 * normal(rng)).max(0.5)
            }
        }
        _ => unreachable!(),
    }
}

fn check(shape: &str, values: &[f64], sk: &sketches_ddsketch::DDSketch) {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    for q in [0.5, 0.95, 0.99] {
        let want = exact(&sorted, q);
        let got = sketch::quantile(sk, q).unwrap();
        let err = (got - want).abs() / want;
        assert!(err <= 0.01, "{shape} n={} q={q}: sketch {got} vs exact {want} ({:.3} %)", values.len(), err * 100.0);
    }
}

#[test]
fn percentiles_within_one_percent_for_small_windows_and_merged_days() {
    for shape in ["uniform", "lognormal", "pareto", "bimodal"] {
        let mut rng = fastrand::Rng::with_seed(42);
        // 200 windows of 100 facts.
        for _ in 0..200 {
            let mut values: Vec<f64> = (0..100).map(|_| sample(shape, &mut rng)).collect();
            let sk = sketch::from_latencies(&mut values.clone());
            check(shape, &values, &sk);
            values.clear();
        }
        // A day: 1440 minute sketches of 100 facts, encoded and decoded as metrics_1m stores them, merged.
        let mut all = Vec::with_capacity(144_000);
        let mut merged = sketch::new_sketch();
        for _ in 0..1440 {
            let mut minute: Vec<f64> = (0..100).map(|_| sample(shape, &mut rng)).collect();
            all.extend_from_slice(&minute);
            let stored = sketch::encode(&sketch::from_latencies(&mut minute));
            sketch::merge(&mut merged, &sketch::decode(&stored).unwrap()).unwrap();
        }
        check(shape, &all, &merged);
    }
}
