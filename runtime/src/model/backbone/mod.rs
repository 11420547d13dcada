//! Backbones: the shared trunk that reads the batch's named inputs and gives
//! every layer's output, of which the architecture takes what it asks for.
//! `[model] backbone = { kind = ... }` picks one; each is planned (its layer
//! widths and parameter counts, from the data's input specs) before anything
//! is allocated, so a missing input or an oversized layer is refused first.

mod conv;
mod embedding;
mod lm;
mod mlp;
mod stack;
mod unet;
mod vit;

use taskweave_plugin_api::nn::KvCache;
use taskweave_plugin_api::{InputKind, InputSpec};
use tch::{Device, Tensor};

use crate::error::{Error, Result};
use crate::sections::BackboneConfig;

/// A batch's inputs, by name.
pub type Inputs = [(String, Tensor)];

/// A built backbone.
pub trait Backbone: Send {
    /// Every layer's output, first to last, for a batch's `inputs`; see
    /// [`BatchNorm::forward`](taskweave_plugin_api::nn::BatchNorm::forward)
    /// for `train` and `update_stats`.
    fn forward(&self, inputs: &Inputs, train: bool, update_stats: bool) -> Result<Vec<Tensor>>;

    /// Every trainable tensor, named `backbone.*`.
    fn parameters(&self) -> Vec<(String, Tensor)>;

    /// Non-trainable tensors checkpoints hold (batch-norm statistics).
    fn buffers(&self) -> Vec<(String, Tensor)>;

    /// The backbone as a causal decoder, if it is one.
    fn causal(&self) -> Option<&dyn CausalBackbone> {
        None
    }
}

/// A backbone whose position i depends on inputs 0..=i only, which can read
/// its sequences a few positions at a time.
pub trait CausalBackbone {
    /// The last layer's output `[B, n, C]` (as [`Backbone::forward`] gives
    /// it at those positions) for the next `n` positions of `inputs`, whose
    /// earlier positions `cache` holds, one entry per block (empty at the
    /// start); `cache` then holds these too.
    fn forward_cached(&self, inputs: &Inputs, cache: &mut Vec<KvCache>) -> Result<Tensor>;
}

/// What a backbone will be, known before it is built.
pub struct Plan {
    /// The width of every layer's output, first to last (at least one).
    pub layer_dims: Vec<usize>,
    /// The dimensions of every layer's output beside the batch: 1 flat
    /// `[B, C]`, 2 tokens `[B, N, C]`, 3 maps `[B, C, H, W]`.
    pub layer_ranks: Vec<usize>,
    /// Each layer's parameter count, with the config key that sets it.
    pub sizes: Vec<(String, u128)>,
    /// Whether the last layer keeps the input's positions (feature maps, or
    /// tokens on the image's patch grid), which per-pixel heads decode.
    pub spatial: bool,
}

/// Plans the backbone `config` describes over inputs `inputs`, refusing one
/// that reads an input the data do not have.
pub fn plan(config: &BackboneConfig, inputs: &[InputSpec]) -> Result<Plan> {
    match config {
        BackboneConfig::Mlp(c) => mlp::plan(c, inputs),
        BackboneConfig::Embedding(c) => embedding::plan(c, inputs),
        BackboneConfig::Conv(c) => conv::plan(c, inputs),
        BackboneConfig::Unet(c) => unet::plan(c, inputs),
        BackboneConfig::Vit(c) => vit::plan(c, inputs),
        BackboneConfig::TransformerLm(c) => lm::plan(c, inputs),
    }
}

/// Builds the backbone `config` describes, drawing its initial values from
/// libtorch's generator.
pub fn build(
    config: &BackboneConfig,
    inputs: &[InputSpec],
    device: Device,
) -> Result<Box<dyn Backbone>> {
    Ok(match config {
        BackboneConfig::Mlp(c) => Box::new(mlp::MlpTrunk::new(c, inputs, device)?),
        BackboneConfig::Embedding(c) => {
            Box::new(embedding::EmbeddingTrunk::new(c, inputs, device)?)
        }
        BackboneConfig::Conv(c) => Box::new(conv::ConvTrunk::new(c, inputs, device)?),
        BackboneConfig::Unet(c) => Box::new(unet::UnetTrunk::new(c, inputs, device)?),
        BackboneConfig::Vit(c) => Box::new(vit::VitTrunk::new(c, inputs, device)?),
        BackboneConfig::TransformerLm(c) => Box::new(lm::LmTrunk::new(c, inputs, device)?),
    })
}

fn describe(spec: &InputSpec) -> String {
    let dtype = spec.kind.name();
    let dims: Vec<String> = std::iter::once("B".to_string())
        .chain(spec.shape.iter().map(usize::to_string))
        .collect();
    format!("`{}` {dtype} [{}]", spec.name, dims.join(", "))
}

/// The input `name` of element type `kind` and per-example rank `rank` that
/// backbone `backbone` reads, or an error naming what the data have instead.
fn require<'a>(
    inputs: &'a [InputSpec],
    backbone: &str,
    name: &str,
    kind: InputKind,
    rank: usize,
) -> Result<&'a InputSpec> {
    let found = inputs.iter().find(|i| i.name == name);
    match found {
        Some(spec) if spec.kind == kind && spec.shape.len() == rank => Ok(spec),
        _ => {
            let want = kind.name();
            let have: Vec<String> = inputs.iter().map(describe).collect();
            let problem = match found {
                Some(spec) => format!("the data's is {}", describe(spec)),
                None => "the data do not have it".to_string(),
            };
            Err(Error::Input(format!(
                "model.backbone: backbone `{backbone}` reads the input `{name}` ({want}, {} dimensions per example), but {problem} (the data have: {}); pick a backbone for these inputs",
                rank,
                have.join(", ")
            )))
        }
    }
}

/// The tensor of input `name` in a batch (present: [`plan`] checked the specs).
fn input<'a>(inputs: &'a Inputs, name: &str) -> Result<&'a Tensor> {
    inputs
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, t)| t)
        .ok_or_else(|| Error::Run(format!("the batch has no input `{name}`")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sections::{
        ConvBackbone, ConvStyle, EmbeddingBackbone, SequencePooling, TransformerLmBackbone,
        UnetBackbone, VitBackbone,
    };
    use tch::Kind;

    fn image_spec(c: usize, h: usize, w: usize) -> Vec<InputSpec> {
        vec![InputSpec::float("image", vec![c, h, w])]
    }

    /// Builds `config`, runs a batch of 2, and checks the plan against what
    /// was built: parameter count, one output per layer, each `[2, width, ..]`.
    fn check(
        config: BackboneConfig,
        inputs: &[InputSpec],
        batch: Vec<(String, Tensor)>,
    ) -> (Box<dyn Backbone>, Vec<Tensor>) {
        let plan = plan(&config, inputs).unwrap();
        let built = build(&config, inputs, Device::Cpu).unwrap();
        let params: u128 = built
            .parameters()
            .iter()
            .map(|(_, t)| t.numel() as u128)
            .sum();
        assert_eq!(
            params,
            plan.sizes.iter().map(|(_, n)| n).sum::<u128>(),
            "{}",
            config.kind()
        );
        let out = built.forward(&batch, true, true).unwrap();
        assert_eq!(out.len(), plan.layer_dims.len());
        assert_eq!(out.len(), plan.layer_ranks.len());
        for ((o, &w), &rank) in out.iter().zip(&plan.layer_dims).zip(&plan.layer_ranks) {
            let size = o.size();
            assert_eq!(size.len(), rank + 1, "{size:?}");
            assert_eq!(size[0], 2);
            // Maps carry the width in dimension 1, tokens in the last.
            let width = if size.len() == 4 {
                size[1]
            } else {
                *size.last().unwrap()
            };
            assert_eq!(width, w as i64, "{size:?}");
        }
        (built, out)
    }

    fn image(c: i64, h: i64, w: i64) -> Vec<(String, Tensor)> {
        vec![(
            "image".into(),
            Tensor::randn([2, c, h, w], (Kind::Float, Device::Cpu)),
        )]
    }

    #[test]
    fn conv_stages_give_maps_that_shrink_as_planned() {
        for (style, sides) in [
            (ConvStyle::Plain, [8, 4, 2]),
            (ConvStyle::Residual, [15, 8, 4]),
        ] {
            let config = BackboneConfig::Conv(ConvBackbone {
                channels: vec![4, 6, 8],
                style,
                ..ConvBackbone::default()
            });
            let (h, w) = if style == ConvStyle::Plain {
                (16, 17)
            } else {
                (15, 15)
            };
            let (_, out) = check(config, &image_spec(3, h, w), image(3, h as i64, w as i64));
            let got: Vec<i64> = out.iter().map(|o| o.size()[2]).collect();
            assert_eq!(got, sides, "{style:?}");
        }
        let config = BackboneConfig::Conv(ConvBackbone {
            channels: vec![4; 5],
            ..ConvBackbone::default()
        });
        let e = plan(&config, &image_spec(1, 8, 8))
            .err()
            .unwrap()
            .to_string();
        assert!(
            e.contains(
                "model.backbone.channels: the 8×8 input `image` shrinks to nothing at stage 3 of 5"
            ),
            "{e}"
        );
    }

    #[test]
    fn a_flattened_conv_trunk_ends_in_position_bound_features() {
        let config = BackboneConfig::Conv(ConvBackbone {
            channels: vec![4, 6],
            flatten: true,
            ..ConvBackbone::default()
        });
        let inputs = image_spec(1, 12, 8);
        assert!(!plan(&config, &inputs).unwrap().spatial);
        let (_, out) = check(config, &inputs, image(1, 12, 8));
        assert_eq!(out[0].size(), [2, 4, 6, 4], "earlier stages stay maps");
        assert_eq!(out[1].size(), [2, 6 * 3 * 2]);
    }

    #[test]
    fn plain_conv_stages_run_channels_last_and_compute_what_nchw_layers_do() {
        for c in [1, 3] {
            let config = BackboneConfig::Conv(ConvBackbone {
                channels: vec![4, 6],
                flatten: true,
                ..ConvBackbone::default()
            });
            // A view that starts past its storage's first element (rows of a
            // larger batch), as a one-channel image is already NHWC-contiguous.
            let input = Tensor::randn([3, c, 12, 8], (Kind::Float, Device::Cpu)).narrow(0, 1, 2);
            let batch = vec![("image".to_string(), input.shallow_clone())];
            let (built, out) = check(config, &image_spec(c as usize, 12, 8), batch);
            assert_eq!(
                out[0].stride()[1],
                1,
                "{c} channels: stage 0 is not channels-last"
            );
            // The same layers on NCHW tensors, from the trunk's own parameters.
            let p: std::collections::HashMap<String, Tensor> =
                built.parameters().into_iter().collect();
            let mut x = input;
            let mut want = Vec::new();
            for i in 0..2 {
                let at = |n: &str| &p[&format!("backbone.stages.{i}.0.{n}")];
                x = x
                    .conv2d(at("conv.weight"), None::<Tensor>, [1, 1], [1, 1], [1, 1], 1)
                    .batch_norm(
                        Some(at("norm.weight")),
                        Some(at("norm.bias")),
                        None::<&Tensor>,
                        None::<&Tensor>,
                        true,
                        0.1,
                        1e-5,
                        false,
                    )
                    .relu()
                    .max_pool2d([2, 2], [2, 2], [0, 0], [1, 1], false);
                want.push(x.shallow_clone());
            }
            want[1] = want[1].flatten(1, -1);
            for (got, want) in out.iter().zip(&want) {
                assert!(
                    got.allclose(want, 1e-5, 1e-5, false),
                    "{c} channels: {got} vs {want}"
                );
            }
        }
    }

    #[test]
    fn vit_gives_every_block_s_tokens_and_refuses_patches_that_do_not_tile() {
        let config = VitBackbone {
            patch: 4,
            dim: 16,
            depth: 3,
            heads: 2,
            ..VitBackbone::default()
        };
        let (_, out) = check(
            BackboneConfig::Vit(config.clone()),
            &image_spec(3, 8, 12),
            image(3, 8, 12),
        );
        assert_eq!(out[0].size(), [2, 6, 16], "2×3 patches");
        let e = plan(&BackboneConfig::Vit(config.clone()), &image_spec(3, 10, 12))
            .err()
            .unwrap()
            .to_string();
        assert!(
            e.starts_with("model.backbone.patch: patches of 4×4 do not tile the 10×12 input"),
            "{e}"
        );
        let odd = VitBackbone { heads: 3, ..config };
        let e = plan(&BackboneConfig::Vit(odd), &image_spec(3, 8, 12))
            .err()
            .unwrap()
            .to_string();
        assert_eq!(
            e,
            "model.backbone.heads: 3 attention heads do not divide dim = 16"
        );
    }

    #[test]
    fn unet_keeps_odd_sides_reads_its_condition_and_checks_groups() {
        let inputs = vec![
            InputSpec::float("x", vec![1, 7, 9]),
            InputSpec::float("t", vec![6]),
        ];
        for blocks in [1, 2] {
            let config = UnetBackbone {
                channels: vec![4, 8, 8],
                blocks,
                groups: 2,
                ..UnetBackbone::default()
            };
            let t = Tensor::randn([2, 6], (Kind::Float, Device::Cpu));
            let batch = vec![
                (
                    "x".to_string(),
                    Tensor::randn([2, 1, 7, 9], (Kind::Float, Device::Cpu)),
                ),
                ("t".to_string(), t.shallow_clone()),
            ];
            let (built, out) = check(BackboneConfig::Unet(config.clone()), &inputs, batch);
            assert_eq!(out[0].size(), [2, 4, 7, 9], "7×9 → 4×5 → 2×3 and back");
            assert!(
                plan(&BackboneConfig::Unet(config), &inputs)
                    .unwrap()
                    .spatial
            );
            // The conditioning changes the output.
            let again = built
                .forward(
                    &[
                        (
                            "x".to_string(),
                            Tensor::zeros([2, 1, 7, 9], (Kind::Float, Device::Cpu)),
                        ),
                        ("t".to_string(), t.shallow_clone()),
                    ],
                    false,
                    false,
                )
                .unwrap();
            let other = built
                .forward(
                    &[
                        (
                            "x".to_string(),
                            Tensor::zeros([2, 1, 7, 9], (Kind::Float, Device::Cpu)),
                        ),
                        ("t".to_string(), t.f_add_scalar(1.0).unwrap()),
                    ],
                    false,
                    false,
                )
                .unwrap();
            assert!(!again[0].allclose(&other[0], 1e-4, 1e-4, false));
        }
        let odd = UnetBackbone {
            channels: vec![4, 6],
            groups: 4,
            ..UnetBackbone::default()
        };
        let e = plan(&BackboneConfig::Unet(odd), &inputs)
            .err()
            .unwrap()
            .to_string();
        assert!(
            e.starts_with("model.backbone.groups: 4 groups do not divide the 6 channels"),
            "{e}"
        );
        let e = plan(&BackboneConfig::Unet(UnetBackbone::default()), &inputs[..1])
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("reads the input `t`"), "{e}");
    }

    #[test]
    fn transformer_lm_is_causal() {
        let inputs = vec![InputSpec::index("tokens", vec![6], vec![11])];
        let config = BackboneConfig::TransformerLm(TransformerLmBackbone {
            dim: 8,
            depth: 2,
            heads: 2,
            ..TransformerLmBackbone::default()
        });
        let ids = Tensor::from_slice(&[1i64, 2, 3, 4, 5, 6, 6, 5, 4, 3, 2, 1]).reshape([2, 6]);
        let (built, out) = check(config.clone(), &inputs, vec![("tokens".into(), ids.copy())]);
        let changed = ids.copy();
        let _ = changed.narrow(1, 4, 2).fill_(10);
        let again = built
            .forward(&[("tokens".into(), changed)], false, false)
            .unwrap();
        let (a, b) = (out.last().unwrap(), again.last().unwrap());
        assert!(a
            .narrow(1, 0, 4)
            .allclose(&b.narrow(1, 0, 4), 1e-5, 1e-5, false));
        assert!(!a
            .narrow(1, 4, 2)
            .allclose(&b.narrow(1, 4, 2), 1e-3, 1e-3, false));
        // Read with a cache, a prompt of two then one token at a time, it
        // gives the whole window's last layer; past the context it refuses.
        let decoder = built.causal().expect("transformer-lm is causal");
        let mut cache = Vec::new();
        let stepped: Vec<Tensor> = [(0, 2), (2, 1), (3, 1), (4, 1), (5, 1)]
            .iter()
            .map(|&(start, len)| {
                let next = [("tokens".to_string(), ids.narrow(1, start, len))];
                decoder.forward_cached(&next, &mut cache).unwrap()
            })
            .collect();
        assert!(Tensor::cat(&stepped, 1).allclose(a, 1e-5, 1e-5, false));
        let one = [("tokens".to_string(), ids.narrow(1, 0, 1))];
        let e = decoder
            .forward_cached(&one, &mut cache)
            .err()
            .unwrap()
            .to_string();
        assert!(
            e.contains("6 tokens read and 1 more exceed the model's context of 6"),
            "{e}"
        );
        let e = plan(&config, &[InputSpec::float("features", vec![3])])
            .err()
            .unwrap()
            .to_string();
        assert!(e.starts_with("model.backbone: backbone `transformer-lm` reads the input `tokens` (int64, 1 dimensions per example), but the data do not have it"), "{e}");
    }

    #[test]
    fn embedding_mean_pools_each_sequence_over_its_valid_positions() {
        let inputs = vec![
            InputSpec::index(taskweave_datasets::FIELDS, vec![2], vec![3, 4]),
            InputSpec::index("seq.a", vec![3], vec![5]),
            InputSpec::mask("seq.a.mask", vec![3]),
            InputSpec::index("seq.b", vec![2], vec![6]),
        ];
        let batch = vec![
            (
                taskweave_datasets::FIELDS.to_string(),
                Tensor::from_slice(&[0i64, 1, 2, 3]).view([2, 2]),
            ),
            (
                "seq.a".into(),
                Tensor::from_slice(&[1i64, 2, 0, 4, 0, 0]).view([2, 3]),
            ),
            (
                "seq.a.mask".into(),
                Tensor::from_slice(&[true, true, false, false, false, false]).view([2, 3]),
            ),
            (
                "seq.b".into(),
                Tensor::from_slice(&[5i64, 1, 2, 2]).view([2, 2]),
            ),
        ];
        // No hidden layer: the output is the MLP's input itself.
        let config = |sequences| {
            BackboneConfig::Embedding(EmbeddingBackbone {
                dim: 2,
                hidden: vec![],
                sequences,
                ..EmbeddingBackbone::default()
            })
        };
        let (built, out) = check(
            config(SequencePooling::Mean),
            &inputs,
            batch
                .iter()
                .map(|(n, t)| (n.clone(), t.shallow_clone()))
                .collect(),
        );
        let table = |name: &str| {
            built
                .parameters()
                .into_iter()
                .find(|(n, _)| n == &format!("backbone.{name}.weight"))
                .unwrap()
                .1
        };
        let (a, b) = (table("seq.a"), table("seq.b"));
        let pooled_a = out[0].narrow(1, 4, 2);
        let pooled_b = out[0].narrow(1, 6, 2);
        let want_a0 = (a.get(1) + a.get(2)) / 2.0;
        assert!(pooled_a.get(0).allclose(&want_a0, 1e-6, 1e-6, false));
        assert_eq!(
            pooled_a.get(1).abs().sum(Kind::Float).double_value(&[]),
            0.0,
            "an empty sequence pools to zeros"
        );
        // Without a mask every position counts.
        let want_b1 = (b.get(2) + b.get(2)) / 2.0;
        assert!(pooled_b.get(1).allclose(&want_b1, 1e-6, 1e-6, false));
        // `ignore`: the fields alone.
        let (_, out) = check(config(SequencePooling::Ignore), &inputs, batch);
        assert_eq!(out[0].size(), [2, 4]);
    }
}
