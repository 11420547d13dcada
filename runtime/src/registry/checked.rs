//! What every created weighting returns is checked against its contract
//! before any caller uses it: a plugin's slip (weights for too few tasks, an
//! integer update, a loss that is not a scalar) becomes an error naming the
//! method, not a silently truncated, rounded or summed value.

use taskweave_plugin_api::tch::Tensor;
use taskweave_plugin_api::{
    Error, Result, State, Weighting, WeightingInput, WeightingKind, WeightingOutput,
};

/// A weighting whose every [`Weighting::weigh`] result is checked.
pub(super) struct CheckedWeighting {
    name: String,
    inner: Box<dyn Weighting>,
}

impl CheckedWeighting {
    /// `name` is the method's.
    pub(super) fn new(inner: Box<dyn Weighting>, name: &str) -> CheckedWeighting {
        CheckedWeighting {
            name: name.to_string(),
            inner,
        }
    }

    fn check(&self, input: &WeightingInput<'_>, out: &WeightingOutput) -> Result<()> {
        let wrong = |what: String| {
            Err(Error::msg(format!(
                "method `{}`: Weighting::weigh returned {what}",
                self.name
            )))
        };
        let combined = &out.combined;
        let (expected, size) = match (self.inner.kind(), input.grads) {
            (WeightingKind::Gradient, Some(grads)) => {
                let columns = grads.size().get(1).copied().unwrap_or(0);
                (format!("an update of shape [{columns}]"), vec![columns])
            }
            _ => ("a scalar loss".to_string(), vec![]),
        };
        let fits = combined.size() == size || (size.is_empty() && combined.numel() == 1);
        if !fits || !combined.is_floating_point() {
            return wrong(format!(
                "a {:?} tensor of shape {:?} where its kind asks for {expected} of floating-point values",
                combined.kind(),
                combined.size()
            ));
        }
        // As many weights as losses: a strategy may weigh a subset of the tasks.
        let tasks = input.losses.size().first().copied().unwrap_or(1);
        if let Some(weights) = &out.weights {
            if weights.size() != [tasks] || !weights.is_floating_point() {
                return wrong(format!(
                    "weights as a {:?} tensor of shape {:?}, not one floating-point weight per task ([{}])",
                    weights.kind(),
                    weights.size(),
                    tasks
                ));
            }
        }
        Ok(())
    }
}

impl Weighting for CheckedWeighting {
    fn kind(&self) -> WeightingKind {
        self.inner.kind()
    }

    fn weigh(&mut self, input: &WeightingInput<'_>) -> Result<WeightingOutput> {
        let out = self.inner.weigh(input)?;
        self.check(input, &out)?;
        Ok(out)
    }

    fn samples(&self) -> usize {
        self.inner.samples()
    }

    fn parameters(&self) -> Result<Vec<(String, Tensor)>> {
        self.inner.parameters()
    }

    fn state(&self) -> Result<State> {
        self.inner.state()
    }

    fn load_state(&mut self, state: State) -> Result<()> {
        self.inner.load_state(state)
    }
}
