//! Random loss weighting (RLW; Lin, Ye, Xu, Shi, Zhang, "Reasonable Effectiveness
//! of Random Weighting: A Litmus Test for Multi-Task Learning", TMLR 2022).
//!
//! Every step draws task weights λ from a distribution on the simplex and
//! minimises Σ_t λ_t L_t. The paper's default (and LibMTL's) draws
//! λ = softmax(z), z ~ N(0, I); `uniform` uses z ~ U(0, 1); `dirichlet` draws
//! λ ~ Dir(1, ..., 1).
//!
//! The weights of step s are a pure function of (seed, s): a resumed run draws
//! the same weights as an uninterrupted one without any saved state.

use taskweave_plugin_api::config::{schema_for, typed, JsonSchema};
use taskweave_plugin_api::rng::SplitMix;
use taskweave_plugin_api::serde::{Deserialize, Serialize};
use taskweave_plugin_api::serde_json::Value;
use taskweave_plugin_api::tch::{Kind, Tensor};
use taskweave_plugin_api::{
    register_method, Constructor, Host, Method, MethodContext, Result, Weighting, WeightingInput,
    WeightingKind, WeightingOutput,
};

/// Where the weights are drawn from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(crate = "taskweave_plugin_api::serde", rename_all = "lowercase")]
#[schemars(crate = "taskweave_plugin_api::config::schemars")]
pub enum Distribution {
    /// softmax of standard normal draws (the paper's default).
    #[default]
    Normal,
    /// softmax of uniform draws on [0, 1).
    Uniform,
    /// Dirichlet with all concentrations 1 (uniform on the simplex).
    Dirichlet,
}

/// The RLW weighting.
pub struct Rlw {
    seed: u64,
    distribution: Distribution,
}

fn softmax(z: &[f64]) -> Vec<f64> {
    let max = z.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let e: Vec<f64> = z.iter().map(|v| (v - max).exp()).collect();
    let sum: f64 = e.iter().sum();
    e.into_iter().map(|v| v / sum).collect()
}

impl Rlw {
    /// An RLW weighting drawing from `distribution`, seeded by `seed`.
    pub fn new(seed: u64, distribution: Distribution) -> Rlw {
        Rlw { seed, distribution }
    }

    /// The weights of `step` for `tasks` tasks (non-negative, summing to 1).
    pub fn weights(&self, step: u64, tasks: usize) -> Vec<f64> {
        let mut rng = SplitMix::at(self.seed, step);
        match self.distribution {
            Distribution::Normal => softmax(&(0..tasks).map(|_| rng.normal()).collect::<Vec<_>>()),
            Distribution::Uniform => {
                softmax(&(0..tasks).map(|_| rng.uniform()).collect::<Vec<_>>())
            }
            Distribution::Dirichlet => {
                // Dir(1,..,1) = normalised Exp(1) draws.
                let e: Vec<f64> = (0..tasks).map(|_| -rng.uniform().ln()).collect();
                let sum: f64 = e.iter().sum();
                e.into_iter().map(|v| v / sum).collect()
            }
        }
    }
}

impl Weighting for Rlw {
    fn kind(&self) -> WeightingKind {
        WeightingKind::Loss
    }

    fn weigh(&mut self, input: &WeightingInput<'_>) -> Result<WeightingOutput> {
        let tasks = input.losses.size().first().copied().unwrap_or(0) as usize;
        let weights = Tensor::from_slice(&self.weights(input.step, tasks))
            .f_to_kind(input.losses.kind())?
            .f_to_device(input.losses.device())?;
        let loss = input
            .losses
            .f_mul(&weights)?
            .f_sum(Kind::Float)?
            .f_to_kind(input.losses.kind())?;
        Ok(WeightingOutput {
            combined: loss,
            weights: Some(weights),
        })
    }
}

/// RLW's config.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(crate = "taskweave_plugin_api::serde", deny_unknown_fields, default)]
#[schemars(crate = "taskweave_plugin_api::config::schemars")]
pub struct Config {
    /// Where the weights are drawn from: softmax of N(0,1) or U(0,1) draws, or Dir(1).
    pub distribution: Distribution,
}

fn create(config: &Value, ctx: &MethodContext, _host: &Host) -> Result<Box<dyn Weighting>> {
    let Config { distribution } = typed(config)?;
    Ok(Box::new(Rlw::new(ctx.seed, distribution)))
}

register_method!(Method::new(
    "rlw",
    env!("CARGO_PKG_VERSION"),
    "Random loss weighting: weights drawn on the simplex every step (Lin et al., TMLR 2022)",
    schema_for::<Config>,
    Constructor::Weighting(create),
));

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_are_on_the_simplex_and_depend_only_on_seed_and_step() {
        for distribution in [
            Distribution::Normal,
            Distribution::Uniform,
            Distribution::Dirichlet,
        ] {
            let rlw = Rlw::new(7, distribution);
            let w = rlw.weights(3, 4);
            assert!((w.iter().sum::<f64>() - 1.0).abs() < 1e-12);
            assert!(w.iter().all(|&x| x > 0.0));
            assert_eq!(w, Rlw::new(7, distribution).weights(3, 4));
            assert_ne!(w, rlw.weights(4, 4));
        }
    }

    #[test]
    fn normal_softmax_weights_vary_around_uniform() {
        let rlw = Rlw::new(1, Distribution::Normal);
        let mean0 = (0..2000).map(|s| rlw.weights(s, 3)[0]).sum::<f64>() / 2000.0;
        assert!((mean0 - 1.0 / 3.0).abs() < 0.02, "{mean0}");
    }
}
