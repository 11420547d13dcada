//! `make bench`: the interval DP at T = 1000, k = 5 for every cost, costs
//! built from the signals included; one JSON line per cost with the median
//! of 31 runs. bench/peer_interval_dp.py runs it beside a Python port of the
//! reference script on the same inputs.

use std::hint::black_box;
use std::time::Instant;

use taskweave_diffusion_clustering::dp::{solve, Costs};

const T: usize = 1000;
const K: usize = 5;

/// Costs from an owned signal.
type Build = dyn Fn(Vec<f64>) -> Costs;

/// DDPM's linear schedule, β from 1e-4 to 0.02, as SNR = ᾱ / (1 − ᾱ).
fn linear_snr() -> Vec<f64> {
    let mut alpha_bar = 1.0;
    (0..T)
        .map(|t| {
            alpha_bar *= 1.0 - (1e-4 + (0.02 - 1e-4) * t as f64 / (T - 1) as f64);
            alpha_bar / (1.0 - alpha_bar)
        })
        .collect()
}

/// An affinity that decays with the distance between timesteps.
fn tas() -> Vec<f64> {
    (0..T * T)
        .map(|i| (-((i / T) as f64 - (i % T) as f64).abs() / 100.0).exp())
        .collect()
}

fn main() {
    let snr = linear_snr();
    let log: Vec<f64> = snr.iter().map(|s| s.ln()).collect();
    let steps: Vec<f64> = (1..=T).map(|t| t as f64).collect();
    let tas = tas();
    // Each cost from its signal, which the plugin receives as an owned
    // vector (the copy is made before the clock starts).
    let cases: [(&str, &Vec<f64>, &Build); 4] = [
        ("timestep", &steps, &|v| {
            Costs::values("timestep", &v).unwrap()
        }),
        ("snr", &snr, &|v| Costs::values("snr", &v).unwrap()),
        ("log-snr", &log, &|v| Costs::values("snr", &v).unwrap()),
        ("gradient", &tas, &|v| Costs::affinity("tas", v, T).unwrap()),
    ];
    for (name, signal, build) in cases {
        let mut ms: Vec<f64> = (0..31)
            .map(|_| {
                let input = signal.clone();
                let start = Instant::now();
                let _ = black_box(solve(&build(input), K));
                start.elapsed().as_secs_f64() * 1e3
            })
            .collect();
        ms.sort_by(f64::total_cmp);
        let (intervals, cost) =
            solve(&build(signal.clone()), K).expect("the benchmark fits in memory");
        let bounds: Vec<String> = intervals
            .iter()
            .map(|(l, r)| format!("[{}, {}]", l + 1, r + 1))
            .collect();
        println!(
            "{{\"cost\": \"{name}\", \"median_ms\": {:.3}, \"min_ms\": {:.3}, \"objective\": {cost}, \"intervals\": [{}]}}",
            ms[ms.len() / 2],
            ms[0],
            bounds.join(", ")
        );
    }
}
