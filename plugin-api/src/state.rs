//! Method state: what a method exports into a checkpoint and imports on resume.

use abi_stable::std_types::{RString, RVec, Tuple2};
use abi_stable::StableAbi;
use tch::Tensor;

use crate::{Error, Result, TensorOwned};

/// A method's state: named tensors (learned task weights, a policy network,
/// optimizer moments) plus a small JSON value (counters, RNG state, history).
///
/// The runtime stores it in every checkpoint, so a resumed run continues exactly
/// where it stopped, method state included. Tensor names are local to the
/// method; the runtime prefixes them.
#[derive(Debug, Default)]
pub struct State {
    /// Named tensors, saved in the checkpoint's safetensors file.
    pub tensors: Vec<(String, Tensor)>,
    /// Everything else, saved as JSON. `Null` when the method has none.
    pub meta: serde_json::Value,
}

impl State {
    /// True when there is nothing to save.
    pub fn is_empty(&self) -> bool {
        self.tensors.is_empty() && self.meta.is_null()
    }

    /// Removes and returns the tensor called `name`, or an error naming it.
    pub fn take_tensor(&mut self, name: &str) -> Result<Tensor> {
        let at = self
            .tensors
            .iter()
            .position(|(n, _)| n == name)
            .ok_or_else(|| Error::msg(format!("state has no tensor `{name}`")))?;
        Ok(self.tensors.swap_remove(at).1)
    }

    /// Adds the tensors and meta of `inner` under `prefix.` (tensors) and
    /// `meta[prefix]`, so that a method holding another method can save both.
    pub fn nest(&mut self, prefix: &str, inner: State) {
        for (name, tensor) in inner.tensors {
            self.tensors.push((format!("{prefix}.{name}"), tensor));
        }
        if !inner.meta.is_null() {
            if !self.meta.is_object() {
                self.meta = serde_json::Value::Object(Default::default());
            }
            self.meta[prefix] = inner.meta;
        }
    }

    /// The inverse of [`State::nest`]: takes out what was nested under `prefix`.
    pub fn unnest(&mut self, prefix: &str) -> State {
        let dotted = format!("{prefix}.");
        let (inner, outer): (Vec<_>, Vec<_>) = std::mem::take(&mut self.tensors)
            .into_iter()
            .partition(|(n, _)| n.starts_with(&dotted));
        self.tensors = outer;
        let meta = self
            .meta
            .as_object_mut()
            .and_then(|m| m.remove(prefix))
            .unwrap_or_default();
        State {
            tensors: inner
                .into_iter()
                .map(|(n, t)| (n[dotted.len()..].to_string(), t))
                .collect(),
            meta,
        }
    }
}

/// [`State`] as it crosses the boundary.
#[repr(C)]
#[derive(StableAbi)]
pub struct FfiState {
    /// Named tensors.
    pub tensors: RVec<Tuple2<RString, TensorOwned>>,
    /// The JSON value, serialised.
    pub meta: RString,
}

impl From<State> for FfiState {
    fn from(state: State) -> Self {
        FfiState {
            tensors: state
                .tensors
                .into_iter()
                .map(|(n, t)| Tuple2(n.into(), t.into()))
                .collect(),
            meta: state.meta.to_string().into(),
        }
    }
}

impl TryFrom<FfiState> for State {
    type Error = Error;
    fn try_from(state: FfiState) -> Result<State> {
        Ok(State {
            tensors: state
                .tensors
                .into_iter()
                .map(|Tuple2(n, t)| (n.into_string(), t.into_tensor()))
                .collect(),
            meta: serde_json::from_str(&state.meta)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nest_and_unnest_are_inverse() {
        let mut outer = State {
            tensors: vec![("a".into(), Tensor::from(1.0))],
            meta: Default::default(),
        };
        let inner = State {
            tensors: vec![("w".into(), Tensor::from(2.0))],
            meta: serde_json::json!({"step": 3}),
        };
        outer.nest("agg", inner);
        assert_eq!(outer.tensors.len(), 2);
        let back = outer.unnest("agg");
        assert_eq!(back.tensors[0].0, "w");
        assert_eq!(back.meta, serde_json::json!({"step": 3}));
        assert_eq!(outer.tensors.len(), 1);
    }
}
