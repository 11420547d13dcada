//! `[model]`: the backbone (a kind), the architecture (a method) and the heads.

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use taskweave_plugin_api::config::JsonSchema;
use taskweave_plugin_api::nn::{Activation, MlpSpec};

use super::MAX_WIDTH;

/// `[model]`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct ModelConfig {
    /// The shared trunk that reads the batch's inputs: `kind = "mlp" | "embedding"`
    /// plus its keys (`kind` may be left out for `mlp`).
    pub backbone: BackboneConfig,
    /// Trainable modules between the backbone and the heads: `kind = "..."`.
    #[schemars(extend("x-taskweave-role" = "Architecture"))]
    pub architecture: Value,
    /// Each task's head.
    pub head: HeadConfig,
}

impl Default for ModelConfig {
    fn default() -> ModelConfig {
        ModelConfig {
            backbone: BackboneConfig::default(),
            architecture: json!({"kind": "hard-sharing"}),
            head: HeadConfig::default(),
        }
    }
}

/// `[model] backbone`: which trunk, with its keys.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum BackboneConfig {
    /// An MLP over the float input `features` `[B, D]`.
    Mlp(MlpBackbone),
    /// One embedding table per column of the id input `fields` `[B, F]`,
    /// concatenated with `features` when the data have it, then an MLP.
    Embedding(EmbeddingBackbone),
}

impl Default for BackboneConfig {
    fn default() -> BackboneConfig {
        BackboneConfig::Mlp(MlpBackbone::default())
    }
}

impl BackboneConfig {
    /// The `kind` value.
    pub fn kind(&self) -> &'static str {
        match self {
            BackboneConfig::Mlp(_) => "mlp",
            BackboneConfig::Embedding(_) => "embedding",
        }
    }
}

/// The MLP keys, shared by every backbone that ends in an MLP, with the
/// backbone's own keys first.
macro_rules! mlp_backbone {
    ($(#[$doc:meta])* $name:ident { $($(#[$fdoc:meta])* $field:ident: $ty:ty = $default:expr,)* }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
        #[serde(deny_unknown_fields, default)]
        pub struct $name {
            $($(#[$fdoc])* pub $field: $ty,)*
            /// Widths of the MLP's hidden layers ([] = identity).
            #[schemars(inner(range(min = 1, max = MAX_WIDTH)))]
            pub hidden: Vec<u32>,
            /// Non-linearity after each layer.
            pub activation: Activation,
            /// Dropout probability after each layer.
            #[schemars(range(min = 0.0), extend("exclusiveMaximum" = 1))]
            pub dropout: f64,
            /// Batch normalisation after each linear layer.
            pub batch_norm: bool,
        }

        impl $name {
            /// How the MLP's layers are built (activated through the last).
            pub fn mlp_spec(&self) -> MlpSpec {
                MlpSpec {
                    activation: self.activation,
                    dropout: self.dropout,
                    batch_norm: self.batch_norm,
                    activate_last: true,
                }
            }
        }

        impl Default for $name {
            fn default() -> $name {
                $name {
                    $($field: $default,)*
                    hidden: vec![64],
                    activation: Activation::Relu,
                    dropout: 0.0,
                    batch_norm: false,
                }
            }
        }
    };
}

mlp_backbone!(
    /// `backbone = { kind = "mlp", ... }`.
    MlpBackbone {}
);

mlp_backbone!(
    /// `backbone = { kind = "embedding", ... }`.
    EmbeddingBackbone {
        /// Width of each field's embedding.
        #[schemars(range(min = 1, max = 65536))]
        dim: u32 = 8,
    }
);

/// `[model] head`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct HeadConfig {
    /// Widths of each task head's hidden layers.
    #[schemars(inner(range(min = 1, max = MAX_WIDTH)))]
    pub hidden: Vec<u32>,
    /// Non-linearity after each hidden layer.
    pub activation: Activation,
}
