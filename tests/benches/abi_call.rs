//! `make bench`: the cost of one call through the plugin ABI against the same
//! method called as a built-in.
//!
//! The built-in `uw` weighting is created natively, then the very same object
//! is put behind the FFI adapters every plugin call goes through (guard,
//! tensor-handle conversion, abi_stable vtable), so the difference is the ABI's
//! cost and nothing else. The RLW plugin loaded from its `.so` is timed too, to
//! show a real library boundary costs the same as the in-process adapters.

use std::hint::black_box;
use std::time::Instant;

use serde_json::json;
use taskweave::{Config, Runtime};
use taskweave_plugin_api::tch::{Device, Kind, Tensor};
use taskweave_plugin_api::{FfiMethod, MethodBox, MethodContext, Role, Weighting, WeightingInput};
use taskweave_tests::median;

/// Nanoseconds per call of `a` and of `b`, measured in alternating batches (so
/// drift in machine speed hits both alike): the median of each, and the median
/// of the per-sample differences b − a.
fn paired(batch: u32, samples: usize, mut a: impl FnMut(), mut b: impl FnMut()) -> (f64, f64, f64) {
    let run = |f: &mut dyn FnMut()| {
        let start = Instant::now();
        for _ in 0..batch {
            f();
        }
        start.elapsed().as_nanos() as f64 / batch as f64
    };
    run(&mut a);
    run(&mut b);
    let (mut ta, mut tb, mut diff) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..samples {
        let x = run(&mut a);
        let y = run(&mut b);
        ta.push(x);
        tb.push(y);
        diff.push(y - x);
    }
    (median(&ta), median(&tb), median(&diff))
}

fn weigh(w: &mut dyn Weighting, losses: &Tensor, step: &mut u64) {
    *step += 1;
    black_box(
        w.weigh(&WeightingInput {
            step: *step,
            losses,
            grads: None,
            more_grads: &[],
        })
        .unwrap(),
    );
}

fn main() {
    let ctx = MethodContext {
        tasks: (0..4).map(|t| format!("t{t}").as_str().into()).collect(),
        device: "cpu".into(),
        seed: 0,
        weighting: "{}".into(),
        ..Default::default()
    };
    let losses = Tensor::from_slice(&[0.5f32, 1.0, 2.0, 4.0])
        .to_kind(Kind::Float)
        .to_device(Device::Cpu);

    let runtime = Runtime::new(&Config::new());
    let create = |kind: &str| {
        runtime
            .create_method(Role::Weighting, &json!({ "kind": kind }), &ctx)
            .unwrap()
    };
    println!(
        "{:28}  {:>14}  {:>16}  {:>13}",
        "call (median of 101 samples)", "built-in (ns)", "through ABI (ns)", "overhead (ns)"
    );
    for kind in ["ew", "uw"] {
        let mut native = create(kind).into_weighting().unwrap();
        let mut crossing = MethodBox::from(FfiMethod::new(create(kind), kind))
            .into_weighting()
            .unwrap();
        let (a, b, d) = paired(
            100_000,
            101,
            || {
                black_box(native.kind());
            },
            || {
                black_box(crossing.kind());
            },
        );
        println!(
            "{:28}  {a:>14.1}  {b:>16.1}  {d:>13.1}",
            format!("Weighting::kind ({kind})")
        );
        let (mut s1, mut s2) = (0, 0);
        let (a, b, d) = paired(
            2_000,
            101,
            || weigh(native.as_mut(), &losses, &mut s1),
            || weigh(crossing.as_mut(), &losses, &mut s2),
        );
        println!(
            "{:28}  {a:>14.1}  {b:>16.1}  {d:>13.1}",
            format!("Weighting::weigh ({kind}, T=4)")
        );
    }

    let so = taskweave_tests::workspace_plugin("taskweave-rlw");
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(&so, dir.path().join("librlw.so")).unwrap();
    let mut config = Config::new();
    config.plugin_dir(dir.path());
    let with_plugin = Runtime::new(&config);
    let mut rlw = with_plugin
        .create_method(Role::Weighting, &json!({"kind": "rlw"}), &ctx)
        .unwrap()
        .into_weighting()
        .unwrap();
    let mut step = 0;
    let (kind_ns, weigh_ns) = (
        paired(
            100_000,
            101,
            || {},
            || {
                black_box(rlw.kind());
            },
        )
        .1,
        paired(
            2_000,
            101,
            || {},
            || weigh(rlw.as_mut(), &losses, &mut step),
        )
        .1,
    );
    println!("\nRLW plugin loaded from {}:", so.display());
    println!("{:28}  {kind_ns:>16.1} ns", "Weighting::kind (rlw)");
    println!("{:28}  {weigh_ns:>16.1} ns", "Weighting::weigh (rlw, T=4)");
}
