//! Saving and restoring the small f64 vectors that stateful weightings carry
//! across steps (weights on the simplex, moving averages).

use taskweave_plugin_api::tch::{Kind, Tensor};
use taskweave_plugin_api::{Error, Result, State};

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
