//! `cargo bench --bench parallel_sources`: what running Meta-RTL's
//! per-source inner loops side by side buys on this machine, measured
//! before the runtime did it (it now does, in an OpenMP team of libtorch's
//! runtime rather than on OS threads of its own: runtime/src/train/omp.rs
//! says why). The work is the inner half of one
//! meta-iteration of pipelines/meta-rtl-qm9.toml: 6 sources × 3 SGD steps
//! (lr 0.05) of a 34-256-256 MLP with 7 linear heads on batches of 256, each
//! source from the same start. Three ways, alternating: one source after
//! another on libtorch's intra-op threads (what the runtime does now), the
//! same on one thread, and two OS threads with three sources each and one
//! intra-op thread apiece. The two-thread result is checked equal, bit for
//! bit, to the sequential one before timing. Prints the median iterations/s.
//!
//! `BENCH_ROUNDS` (default 5) rounds of `BENCH_ITERS` (default 100) iterations.

use std::time::Instant;

use taskweave_tests::median;
use tch::{Device, Kind, Tensor};

const SOURCES: usize = 6;

fn forward(p: &[Tensor], x: &Tensor) -> Tensor {
    let h = x.linear(&p[0], Some(&p[1])).relu();
    let h = h.linear(&p[2], Some(&p[3])).relu();
    h.linear(&p[4], Some(&p[5]))
}

/// Source `task`'s inner loop from `start`: the adapted parameters.
fn adapt(start: &[Tensor], x: &Tensor, y: &Tensor, task: i64) -> Vec<Tensor> {
    let mut p: Vec<Tensor> = start.iter().map(|t| t.detach().copy()).collect();
    for _ in 0..3 {
        let leaves: Vec<Tensor> = p
            .iter()
            .map(|t| t.detach().set_requires_grad(true))
            .collect();
        let out = forward(&leaves, x);
        let loss = (out.select(1, task) - y.select(1, task))
            .square()
            .mean(Kind::Float);
        let grads = Tensor::run_backward(&[loss], &leaves, false, false);
        p = leaves
            .iter()
            .zip(&grads)
            .map(|(v, g)| v.detach() - g * 0.05)
            .collect();
    }
    p
}

fn shallow(ts: &[Tensor]) -> Vec<Tensor> {
    ts.iter().map(Tensor::shallow_clone).collect()
}

fn sequential(start: &[Tensor], xs: &[Tensor], ys: &[Tensor]) -> Vec<Vec<Tensor>> {
    (0..SOURCES)
        .map(|i| adapt(start, &xs[i], &ys[i], i as i64))
        .collect()
}

/// Half the sources on each of two OS threads (tensors are Send, not Sync:
/// each thread gets its own handles to the same storage).
fn two_threads(start: &[Tensor], xs: &[Tensor], ys: &[Tensor]) -> Vec<Vec<Tensor>> {
    let half = SOURCES / 2;
    std::thread::scope(|s| {
        let workers: Vec<_> = [0..half, half..SOURCES]
            .into_iter()
            .map(|range| {
                let (p, x, y) = (shallow(start), shallow(xs), shallow(ys));
                s.spawn(move || {
                    range
                        .map(|i| adapt(&p, &x[i], &y[i], i as i64))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().expect("worker panicked"))
            .collect()
    })
}

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let (rounds, iters) = (env("BENCH_ROUNDS", 5), env("BENCH_ITERS", 100));
    let threads = tch::get_num_threads().max(1) as usize;
    tch::manual_seed(0);
    let opts = (Kind::Float, Device::Cpu);
    let start: Vec<Tensor> = [[256, 34], [256, 0], [256, 256], [256, 0], [7, 256], [7, 0]]
        .iter()
        .map(|&[rows, cols]| match cols {
            0 => Tensor::randn([rows], opts) * 0.01,
            _ => Tensor::randn([rows, cols], opts) * (1.0 / (cols as f64).sqrt()),
        })
        .collect();
    let xs: Vec<Tensor> = (0..SOURCES)
        .map(|_| Tensor::randn([256, 34], opts))
        .collect();
    let ys: Vec<Tensor> = (0..SOURCES)
        .map(|_| Tensor::randn([256, 7], opts))
        .collect();

    tch::set_num_threads(1);
    let (a, b) = (sequential(&start, &xs, &ys), two_threads(&start, &xs, &ys));
    let same = a
        .iter()
        .flatten()
        .zip(b.iter().flatten())
        .all(|(u, v)| u.equal(v));
    assert!(
        same,
        "two threads did not reproduce the sequential inner loops"
    );

    type Way = fn(&[Tensor], &[Tensor], &[Tensor]) -> Vec<Vec<Tensor>>;
    let ways: [(&str, usize, Way); 3] = [
        ("sources in turn, intra-op threads", threads, sequential),
        ("sources in turn, 1 thread", 1, sequential),
        ("2 OS threads x 3 sources, 1 intra-op", 1, two_threads),
    ];
    let mut rates = vec![Vec::new(); ways.len()];
    for _ in 0..rounds {
        for (i, (_, intra, way)) in ways.iter().enumerate() {
            tch::set_num_threads(*intra as i32);
            let clock = Instant::now();
            for _ in 0..iters {
                way(&start, &xs, &ys);
            }
            rates[i].push(iters as f64 / clock.elapsed().as_secs_f64());
        }
    }
    println!(
        "Meta-RTL inner loops (6 sources x 3 SGD steps, MLP 34-256-256 + 7 heads, batch 256), CPU, \
         {threads} intra-op threads by default; median of {rounds} alternating rounds of {iters}; \
         two-thread result equal to the sequential one bit for bit: {same}"
    );
    let base = median(&rates[0]);
    for ((name, intra, _), r) in ways.iter().zip(&rates) {
        let m = median(r);
        let (lo, hi) = r
            .iter()
            .fold((f64::INFINITY, 0f64), |(lo, hi), &x| (lo.min(x), hi.max(x)));
        println!(
            "{name:40} intra-op {intra}  {m:6.1} it/s ({lo:.1}-{hi:.1})  {:.2}x",
            m / base
        );
    }
}
