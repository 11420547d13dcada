//! Test fixtures shared by the gradient weightings' tests: random gradient
//! families, Gramians computed in plain Rust, and methods created through the
//! registry and the FFI adapters exactly as the runtime creates them.

use taskweave_plugin_api::method::registered;
use taskweave_plugin_api::rng::SplitMix;
use taskweave_plugin_api::serde_json::{json, Map, Value};
use taskweave_plugin_api::tch::{Kind, Tensor};
use taskweave_plugin_api::{
    FfiMethod, Host, MethodContext, Weighting, WeightingInput, WeightingOutput,
};

use super::solvers::{dot, Matrix};

/// `t` standard normal gradients of length `p`.
pub(crate) fn random_grads(rng: &mut SplitMix, t: usize, p: usize) -> Vec<Vec<f64>> {
    (0..t)
        .map(|_| (0..p).map(|_| rng.normal()).collect())
        .collect()
}

/// Named gradient families for T in {2, 3, 5, 8} and several seeds (and
/// T = 40 for one seed, as in CelebA's 40 attributes): random,
/// nearly collinear, pairwise conflicting, wildly different norms, and more
/// tasks than dimensions (a singular Gramian, all gradients in one half-space).
pub(crate) fn instances() -> Vec<(String, Vec<Vec<f64>>)> {
    let mut out = Vec::new();
    for seed in 0..3 {
        let many = if seed == 0 { Some(40) } else { None };
        for t in [2, 3, 5, 8].into_iter().chain(many) {
            let mut rng = SplitMix::at(seed, t as u64);
            let p = 16.max(2 * t);
            let base: Vec<f64> = (0..p).map(|_| rng.normal()).collect();
            let noise = random_grads(&mut rng, t, p);
            let around = |scale: &dyn Fn(usize) -> f64, spread: f64| -> Vec<Vec<f64>> {
                (0..t)
                    .map(|i| {
                        base.iter()
                            .zip(&noise[i])
                            .map(|(b, n)| scale(i) * b + spread * n)
                            .collect()
                    })
                    .collect()
            };
            out.push((
                format!("random T={t} seed={seed}"),
                random_grads(&mut rng, t, p),
            ));
            out.push((
                format!("collinear T={t} seed={seed}"),
                around(&|_| 1.0, 0.01),
            ));
            let sign = |i: usize| if i.is_multiple_of(2) { 1.0 } else { -0.7 };
            out.push((format!("conflicting T={t} seed={seed}"), around(&sign, 0.4)));
            let scaled = random_grads(&mut rng, t, p)
                .into_iter()
                .enumerate()
                .map(|(i, g)| g.iter().map(|x| x * 10f64.powi(i as i32 % 3 - 1)).collect())
                .collect();
            out.push((format!("scales T={t} seed={seed}"), scaled));
            let low_rank = (0..t)
                .map(|_| vec![1.0 + rng.normal().abs(), rng.normal(), rng.normal()])
                .collect();
            out.push((format!("low-rank T={t} seed={seed}"), low_rank));
        }
    }
    out
}

/// Named degenerate gradient sets: exact duplicates, parallel and opposite
/// gradients, a zero gradient, Pareto-stationary sets (0 inside the hull) and
/// extreme magnitudes.
pub(crate) fn degenerate() -> Vec<(String, Vec<Vec<f64>>)> {
    let mut rng = SplitMix::at(99, 0);
    let g = random_grads(&mut rng, 3, 6);
    let scaled = |v: &[f64], s: f64| v.iter().map(|x| s * x).collect::<Vec<f64>>();
    vec![
        (
            "duplicates".into(),
            vec![g[0].clone(), g[0].clone(), g[1].clone()],
        ),
        (
            "parallel".into(),
            vec![g[0].clone(), scaled(&g[0], 2.0), scaled(&g[0], 3.0)],
        ),
        (
            "opposite".into(),
            vec![g[0].clone(), scaled(&g[0], -1.0), g[1].clone()],
        ),
        (
            "zero row".into(),
            vec![g[0].clone(), vec![0.0; 6], g[1].clone()],
        ),
        ("stationary".into(), random_grads(&mut rng, 8, 2)),
        ("tiny".into(), g.iter().map(|v| scaled(v, 1e-30)).collect()),
        ("huge".into(), g.iter().map(|v| scaled(v, 1e30)).collect()),
    ]
}

/// The Gramian of `grads`, computed in plain f64.
pub(super) fn gram_of(grads: &[Vec<f64>]) -> Matrix {
    Matrix::from_fn(grads.len(), |i, j| dot(&grads[i], &grads[j]))
}

/// The largest absolute componentwise difference.
pub(crate) fn max_abs_diff(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max)
}

/// `grads` as a `[T, P]` tensor of `kind` on the CPU.
pub(crate) fn tensor_of(grads: &[Vec<f64>], kind: Kind) -> Tensor {
    let flat: Vec<f64> = grads.concat();
    Tensor::from_slice(&flat)
        .reshape([grads.len() as i64, -1])
        .to_kind(kind)
}

/// A tensor as f64 values.
pub(crate) fn values(tensor: &Tensor) -> Vec<f64> {
    Vec::<f64>::try_from(&tensor.to_kind(Kind::Double)).unwrap()
}

/// A context with tasks `task0`, `task1`, ... on the CPU.
pub(crate) fn context(tasks: usize, seed: u64) -> MethodContext {
    MethodContext {
        tasks: (0..tasks).map(|i| format!("task{i}").into()).collect(),
        device: "cpu".into(),
        seed,
        weighting: "{}".into(),
        ..Default::default()
    }
}

/// The registered method `name`'s schema defaults, overridden by `overrides`:
/// the config the host would pass after validation.
pub(crate) fn config(name: &str, overrides: Value) -> Value {
    let method = registered()
        .find(|m| m.name == name)
        .unwrap_or_else(|| panic!("`{name}` is not registered"));
    let schema = (method.schema)();
    let mut config = Map::new();
    for (key, property) in schema["properties"].as_object().into_iter().flatten() {
        config.insert(key.clone(), property["default"].clone());
    }
    for (key, value) in overrides.as_object().unwrap() {
        assert!(config.contains_key(key), "`{name}` has no option `{key}`");
        config.insert(key.clone(), value.clone());
    }
    Value::Object(config)
}

/// Creates the registered weighting `name` the way the runtime does: through
/// [`Method::create`](taskweave_plugin_api::Method::create), behind the
/// guarded FFI adapters.
pub(crate) fn create(name: &str, overrides: Value, ctx: &MethodContext) -> Box<dyn Weighting> {
    let method = registered().find(|m| m.name == name).unwrap();
    let created = method
        .create(&config(name, overrides), ctx, &Host::standalone())
        .unwrap();
    let ffi = FfiMethod::new(created, name);
    taskweave_plugin_api::MethodBox::from(ffi)
        .into_weighting()
        .unwrap()
}

/// One call of `weighting` on `grads` (losses all 1 unless given; a
/// double-sampling method gets `grads` again as its extra batches).
pub(crate) fn weigh(
    weighting: &mut dyn Weighting,
    step: u64,
    grads: &Tensor,
    losses: Option<&Tensor>,
) -> taskweave_plugin_api::Result<WeightingOutput> {
    let ones = Tensor::ones([grads.size()[0]], (grads.kind(), grads.device()));
    // A double-sampling method gets the same batch again for its extra samples.
    let more: Vec<Tensor> = (1..weighting.samples())
        .map(|_| grads.shallow_clone())
        .collect();
    weighting.weigh(&WeightingInput {
        step,
        losses: losses.unwrap_or(&ones),
        grads: Some(grads),
        more_grads: &more,
    })
}

/// An empty override set.
pub(crate) fn defaults() -> Value {
    json!({})
}
