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
    /// The shared trunk that reads the batch's inputs: `kind = "mlp" |
    /// "embedding" | "conv" | "unet" | "vit" | "transformer-lm"` plus its keys (`kind`
    /// may be left out for `mlp`).
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
    /// A small CNN over a float image input `[B, C, H, W]`: one stage per
    /// entry of `channels`, each giving a feature map.
    Conv(ConvBackbone),
    /// A U-Net over a float image input and per-example conditioning
    /// features (a diffusion model's timestep): one feature map at the
    /// input's resolution.
    Unet(UnetBackbone),
    /// A vision transformer over a float image input: patch embedding, then
    /// `depth` pre-norm blocks, each giving the tokens `[B, N, dim]`.
    Vit(VitBackbone),
    /// A causal transformer over an id input `tokens` `[B, L]`: token and
    /// position embeddings, then `depth` causal pre-norm blocks.
    TransformerLm(TransformerLmBackbone),
}

impl Default for BackboneConfig {
    fn default() -> BackboneConfig {
        BackboneConfig::Mlp(MlpBackbone::default())
    }
}

impl BackboneConfig {
    /// Whether any of its layers normalises by batch statistics.
    pub fn batch_norm(&self) -> bool {
        match self {
            BackboneConfig::Mlp(c) => c.batch_norm,
            BackboneConfig::Embedding(c) => c.batch_norm,
            BackboneConfig::Conv(c) => c.batch_norm,
            // Group and layer norms normalise each example by itself.
            BackboneConfig::Unet(_) | BackboneConfig::Vit(_) | BackboneConfig::TransformerLm(_) => {
                false
            }
        }
    }

    /// The dropout probability of its MLP layers (0 for the kinds without).
    pub fn dropout(&self) -> f64 {
        match self {
            BackboneConfig::Mlp(c) => c.dropout,
            BackboneConfig::Embedding(c) => c.dropout,
            _ => 0.0,
        }
    }

    /// The `kind` value.
    pub fn kind(&self) -> &'static str {
        match self {
            BackboneConfig::Mlp(_) => "mlp",
            BackboneConfig::Embedding(_) => "embedding",
            BackboneConfig::Conv(_) => "conv",
            BackboneConfig::Unet(_) => "unet",
            BackboneConfig::Vit(_) => "vit",
            BackboneConfig::TransformerLm(_) => "transformer-lm",
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
        /// What becomes of the data's behaviour sequences `seq.<name>`.
        sequences: SequencePooling = SequencePooling::Mean,
    }
);

/// How the `embedding` backbone reads the behaviour sequences `seq.<name>`
/// (int64 ids `[L]`, valid where `seq.<name>.mask` is true).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum SequencePooling {
    /// Each sequence's own embedding table, averaged over its valid
    /// positions (zeros for an empty one), joins the shared input: the
    /// shared-bottom input of the recommendation papers' baselines.
    #[default]
    Mean,
    /// The fields (and `features`) only.
    Ignore,
}

/// How the stages of a `conv` backbone are built.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ConvStyle {
    /// Convolution, batch norm, ReLU and a 2×2 max-pool per stage (LeNet-like).
    #[default]
    Plain,
    /// Two convolutions with batch norm and a shortcut per stage, stride 2
    /// from the second stage on (ResNet-like basic blocks).
    Residual,
}

/// `backbone = { kind = "conv", ... }`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct ConvBackbone {
    /// The float input `[B, C, H, W]` it reads.
    pub input: String,
    /// Output channels of each stage.
    #[schemars(length(min = 1, max = 32), inner(range(min = 1, max = 65536)))]
    pub channels: Vec<u32>,
    /// How each stage is built.
    pub style: ConvStyle,
    /// Side of the square kernels (odd: the padding keeps the size).
    #[schemars(range(min = 1, max = 15))]
    pub kernel: u32,
    /// Batch normalisation after each convolution.
    pub batch_norm: bool,
    /// Flatten the last stage's map to `[B, C·H·W]` (LeNet's way) instead of
    /// handing the map on, where heads average over positions: keeps where
    /// in the image a feature was, which position-bound tasks need (the two
    /// items of Multi-MNIST). Per-pixel heads then have no map to decode.
    pub flatten: bool,
}

impl Default for ConvBackbone {
    fn default() -> ConvBackbone {
        ConvBackbone {
            input: "image".into(),
            channels: vec![16, 32],
            style: ConvStyle::Plain,
            kernel: 3,
            batch_norm: true,
            flatten: false,
        }
    }
}

/// `backbone = { kind = "unet", ... }`: DDPM's denoiser (Ho et al. 2020) cut
/// to size. A 3×3 convolution to `channels[0]`, then per level `blocks`
/// residual blocks (group norm, SiLU, 3×3 convolution, plus the
/// conditioning's projection per channel, twice, and a shortcut) and a
/// stride-2 convolution between levels; one block in the middle; on the way
/// up, nearest upsampling to the skip's size and a 3×3 convolution, the
/// skip concatenated, and `blocks` blocks per level; a last group norm and
/// SiLU. The conditioning goes through a two-layer SiLU MLP of width
/// 4·`channels[0]` first. No attention: at 28×28 and below, on a CPU, the
/// convolutions carry the model.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct UnetBackbone {
    /// The float image input `[B, C, H, W]` it reads.
    pub input: String,
    /// The float conditioning input `[B, E]` (with `[diffusion]`, the
    /// timestep's sinusoidal features `t`).
    pub condition: String,
    /// Channels at each level, finest first; each level after the first
    /// halves the side (odd sides round up).
    #[schemars(length(min = 1, max = 8), inner(range(min = 1, max = 65536)))]
    pub channels: Vec<u32>,
    /// Residual blocks per level, on the way down and on the way up.
    #[schemars(range(min = 1, max = 16))]
    pub blocks: u32,
    /// Groups of every group normalisation; must divide every entry of
    /// `channels`.
    #[schemars(range(min = 1, max = 1024))]
    pub groups: u32,
}

impl Default for UnetBackbone {
    fn default() -> UnetBackbone {
        UnetBackbone {
            input: "x".into(),
            condition: "t".into(),
            channels: vec![32, 64],
            blocks: 1,
            groups: 8,
        }
    }
}

/// The transformer keys, shared by every backbone built of pre-norm blocks,
/// with the backbone's own keys first and its defaults for the shared ones.
macro_rules! transformer_backbone {
    ($(#[$doc:meta])* $name:ident {
        $($(#[$fdoc:meta])* $field:ident: $ty:ty = $default:expr,)*
    } dim = $dim:expr, depth = $depth:expr, heads = $heads:expr, mlp_ratio = $ratio:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
        #[serde(deny_unknown_fields, default)]
        pub struct $name {
            $($(#[$fdoc])* pub $field: $ty,)*
            /// Token width.
            #[schemars(range(min = 1, max = MAX_WIDTH))]
            pub dim: u32,
            /// Number of transformer blocks.
            #[schemars(range(min = 1, max = 256))]
            pub depth: u32,
            /// Attention heads per block; must divide `dim`.
            #[schemars(range(min = 1, max = 1024))]
            pub heads: u32,
            /// Width of each block's MLP, as a multiple of `dim`.
            #[schemars(range(min = 1, max = 64))]
            pub mlp_ratio: u32,
        }

        impl $name {
            /// `(dim, depth, heads, mlp_ratio)`: what the blocks are built from.
            pub fn blocks(&self) -> (usize, usize, usize, usize) {
                let c = self;
                (c.dim as usize, c.depth as usize, c.heads as usize, c.mlp_ratio as usize)
            }
        }

        impl Default for $name {
            fn default() -> $name {
                $name {
                    $($field: $default,)*
                    dim: $dim,
                    depth: $depth,
                    heads: $heads,
                    mlp_ratio: $ratio,
                }
            }
        }
    };
}

transformer_backbone!(
    /// `backbone = { kind = "vit", ... }`.
    VitBackbone {
        /// The float input `[B, C, H, W]` it reads.
        input: String = "image".into(),
        /// Side of the square patches; it must divide the image's height and width.
        #[schemars(range(min = 1, max = 1024))]
        patch: u32 = 4,
    } dim = 64, depth = 4, heads = 4, mlp_ratio = 4
);

transformer_backbone!(
    /// `backbone = { kind = "transformer-lm", ... }` (its blocks are causal).
    TransformerLmBackbone {
        /// The id input `[B, L]` it reads (its vocabulary sizes the embedding).
        input: String = "tokens".into(),
    } dim = 128, depth = 2, heads = 4, mlp_ratio = 4
);

/// `[model] head`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct HeadConfig {
    /// Widths of each task head's hidden layers: linear layers for tasks with
    /// one target per example, 3×3 convolutions at the features' resolution
    /// (before the upsampling) for per-pixel tasks.
    #[schemars(inner(range(min = 1, max = MAX_WIDTH)))]
    pub hidden: Vec<u32>,
    /// Non-linearity after each hidden layer.
    pub activation: Activation,
    /// One head for every task, in the shared parameters (the tasks must all
    /// predict the same kind of output, such as the per-interval tasks of a
    /// diffusion model, which all predict the noise).
    pub shared: bool,
}
