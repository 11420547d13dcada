//! The small f64 vectors that weightings compute and carry across steps
//! (weights on the simplex, moving averages): a stable softmax, and saving
//! and restoring them as state.

use taskweave_plugin_api::tch::{Kind, Tensor};
use taskweave_plugin_api::{Error, Result, State};

/// `softmax(x)`, shifted by the largest entry so that no exponential overflows.
pub(crate) fn softmax(x: &[f64]) -> Vec<f64> {
    let top = x.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let e: Vec<f64> = x.iter().map(|v| (v - top).exp()).collect();
    let total: f64 = e.iter().sum();
    e.iter().map(|v| v / total).collect()
}

/// A state holding the named vectors as f64 tensors.
pub(crate) fn vector_state(vectors: &[(&str, &[f64])]) -> Result<State> {
    let mut tensors = Vec::with_capacity(vectors.len());
    // Names must be unique: `load_vector` takes them out one by one.
    for (name, values) in vectors {
        tensors.push((name.to_string(), Tensor::f_from_slice(values)?));
    }
    Ok(State {
        tensors,
        meta: Default::default(),
    })
}

/// Takes the vector `name` of `len` finite numbers out of `state`; `None` for
/// an empty state (a checkpoint from before the first step).
pub(crate) fn load_vector(
    state: &mut State,
    method: &str,
    name: &str,
    len: usize,
) -> Result<Option<Vec<f64>>> {
    if state.is_empty() {
        return Ok(None);
    }
    let values = Vec::<f64>::try_from(
        &state
            .take_tensor(name)?
            .f_to_kind(Kind::Double)?
            .f_reshape([-1])?,
    )?;
    if values.len() != len || values.iter().any(|x| !x.is_finite()) {
        return Err(Error::msg(format!(
            "{method} state: `{name}` must hold {len} finite numbers, got {values:?}"
        )));
    }
    Ok(Some(values))
}
