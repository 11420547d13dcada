//! The preference vector of UPGrad, DualProj, Aligned-MTL and ConFIG: how
//! the method weighs the tasks before its own correction (TorchJD's
//! `pref_vector`). Unset, each method uses its paper's default.

use taskweave_plugin_api::{Error, Result};

/// `pref` checked against `t` tasks (one finite entry per task, exit 2
/// otherwise), or `default` for every task.
pub(super) fn preference(pref: Option<&[f64]>, t: usize, default: f64) -> Result<Vec<f64>> {
    let Some(pref) = pref else {
        return Ok(vec![default; t]);
    };
    if pref.len() != t {
        return Err(Error::input(format!(
            "`pref_vector` has {} entries, but there are {t} tasks: give one per task, in task order",
            pref.len()
        )));
    }
    if let Some(x) = pref.iter().find(|x| !x.is_finite()) {
        return Err(Error::input(format!(
            "`pref_vector` must hold finite numbers, got {x}"
        )));
    }
    Ok(pref.to_vec())
}
