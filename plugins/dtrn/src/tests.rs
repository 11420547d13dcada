use super::*;
use taskweave_plugin_api::serde_json::json;
use taskweave_plugin_api::tch::{Device, Kind};
use taskweave_plugin_api::InputSpec;

/// Fields user (5), item (7), genre (3); sequences `liked` and `other` of 4
/// items with masks; two tasks.
fn context() -> MethodContext {
    let inputs = [
        InputSpec::index("fields", vec![3], vec![5, 7, 3]),
        InputSpec::index("seq.liked", vec![4], vec![7]),
        InputSpec::mask("seq.liked.mask", vec![4]),
        InputSpec::index("seq.other", vec![4], vec![7]),
        InputSpec::mask("seq.other.mask", vec![4]),
    ];
    MethodContext {
        tasks: vec!["watch".into(), "like".into()].into(),
        device: "cpu".into(),
        inputs: inputs.iter().map(Into::into).collect(),
        ..Default::default()
    }
}

fn batch(rows: i64) -> Vec<(String, Tensor)> {
    let ids = |high: i64, shape: &[i64]| Tensor::randint(high, shape, (Kind::Int64, Device::Cpu));
    let fields = Tensor::cat(
        &[ids(5, &[rows, 1]), ids(7, &[rows, 1]), ids(3, &[rows, 1])],
        1,
    );
    // Row 0: no liked item at all; row 1: two of four.
    let liked_mask = Tensor::ones([rows, 4], (Kind::Bool, Device::Cpu));
    let _ = liked_mask.get(0).fill_(0);
    let _ = liked_mask.get(1).narrow(0, 2, 2).fill_(0);
    vec![
        ("fields".into(), fields),
        ("seq.liked".into(), ids(7, &[rows, 4])),
        ("seq.liked.mask".into(), liked_mask),
        ("seq.other".into(), ids(7, &[rows, 4])),
        (
            "seq.other.mask".into(),
            Tensor::ones([rows, 4], (Kind::Bool, Device::Cpu)),
        ),
    ]
}

fn dtrn(extra: Value) -> Box<dyn Architecture> {
    let mut config =
        json!({"behaviours": ["liked", "other"], "dim": 8, "heads": 2, "hyper_dim": 8});
    for (k, v) in extra.as_object().unwrap() {
        config[k] = v.clone();
    }
    create(&config, &context(), &Host::standalone()).unwrap()
}

fn run(m: &mut dyn Architecture, inputs: &[(String, Tensor)]) -> Result<Vec<Tensor>> {
    m.forward(&ArchitectureInput {
        inputs,
        layers: &[],
        train: true,
    })
}

#[test]
fn each_task_gets_its_refined_fields_and_pooled_interests() {
    taskweave_plugin_api::tch::manual_seed(0);
    let mut m = dtrn(json!({}));
    assert_eq!(m.backbone(), BackboneUse::None);
    assert_eq!(m.output_dim(), (3 + 2) * 8);
    let inputs = batch(6);
    let out = run(m.as_mut(), &inputs).unwrap();
    assert_eq!(out.len(), 2);
    assert_eq!(out[0].size(), [6, 40]);
    assert!(
        !out[0].allclose(&out[1], 1e-4, 1e-4, false),
        "tasks share nothing after the fields"
    );
    // Every parameter learns from the two tasks' outputs.
    (out[0].sum(Kind::Float) + out[1].sum(Kind::Float)).backward();
    for p in m.parameters().unwrap() {
        let g = p.tensor.grad();
        assert!(
            g.defined() && g.abs().sum(Kind::Float).double_value(&[]) > 0.0,
            "{}",
            p.name
        );
    }
    // Task embeddings belong to their task, the refinement too.
    let params = m.parameters().unwrap();
    let group = |name: &str| params.iter().find(|p| p.name == name).unwrap().group;
    assert_eq!(group("hypernetwork.task1"), Group::Task(1));
    assert_eq!(group("refine0.squeeze.weight"), Group::Task(0));
    assert_eq!(group("encoder.qkv.weight"), Group::Shared);
}

#[test]
fn padding_and_empty_sequences_change_nothing() {
    taskweave_plugin_api::tch::manual_seed(1);
    let mut m = dtrn(json!({}));
    let inputs = batch(4);
    let before = run(m.as_mut(), &inputs).unwrap();
    // New ids where the masks are false (all of row 0, half of row 1).
    let changed: Vec<(String, Tensor)> = inputs
        .iter()
        .map(|(n, t)| match n.as_str() {
            "seq.liked" => {
                let t = t.copy();
                let _ = t.get(0).fill_(6);
                let _ = t.get(1).narrow(0, 2, 2).fill_(5);
                (n.clone(), t)
            }
            _ => (n.clone(), t.shallow_clone()),
        })
        .collect();
    let after = run(m.as_mut(), &changed).unwrap();
    for (a, b) in before.iter().zip(&after) {
        assert!(a.isfinite().all().int64_value(&[]) == 1);
        assert!(a.allclose(b, 1e-5, 1e-5, false));
    }
}

#[test]
fn the_ablations_share_the_encodings_and_skip_the_refinement() {
    taskweave_plugin_api::tch::manual_seed(2);
    let inputs = batch(5);
    // Shared norms and no refinement: both tasks read the same h.
    let mut plain = dtrn(json!({"hypernetwork": false, "refinement": false}));
    let out = run(plain.as_mut(), &inputs).unwrap();
    assert!(out[0].allclose(&out[1], 0.0, 0.0, false));
    let names: Vec<String> = plain
        .parameters()
        .unwrap()
        .into_iter()
        .map(|p| p.name)
        .collect();
    assert!(names.contains(&"norms".to_string()));
    assert!(!names
        .iter()
        .any(|n| n.starts_with("hypernetwork") || n.starts_with("refine")));
    // The hypernetwork alone already makes the tasks' encodings differ.
    let mut hyper = dtrn(json!({"refinement": false}));
    let out = run(hyper.as_mut(), &inputs).unwrap();
    let fields = 3 * 8;
    assert!(out[0]
        .narrow(1, 0, fields)
        .allclose(&out[1].narrow(1, 0, fields), 0.0, 0.0, false));
    assert!(!out[0].narrow(1, fields, 16).allclose(
        &out[1].narrow(1, fields, 16),
        1e-5,
        1e-5,
        false
    ));
}

#[test]
fn a_mixture_of_experts_can_read_each_task_s_representation() {
    taskweave_plugin_api::tch::manual_seed(3);
    let mut m = dtrn(json!({"mixture": {"experts": 3, "expert_hidden": [6]}}));
    assert_eq!(m.output_dim(), 6);
    let out = run(m.as_mut(), &batch(5)).unwrap();
    assert_eq!(out[1].size(), [5, 6]);
    let params = m.parameters().unwrap();
    let group = |name: &str| params.iter().find(|p| p.name == name).unwrap().group;
    assert_eq!(group("mixture.gate1.weight"), Group::Task(1));
    assert_eq!(group("mixture.experts.0.weight"), Group::Shared);
    let sizes: std::collections::BTreeMap<String, f64> =
        m.eval_metrics().unwrap().into_iter().collect();
    assert!(sizes["parameters.mixture"] > 0.0, "{sizes:?}");
}

#[test]
fn the_hypernetwork_costs_less_than_an_encoder_per_task_and_behaviour() {
    let mut m = dtrn(json!({"dim": 16, "hyper_dim": 8}));
    let sizes: std::collections::BTreeMap<String, f64> =
        m.eval_metrics().unwrap().into_iter().collect();
    let total: f64 = sizes
        .iter()
        .filter(|(k, _)| *k != "parameters.separate_encoders")
        .map(|(_, v)| v)
        .sum();
    let counted: usize = m
        .parameters()
        .unwrap()
        .iter()
        .map(|p| p.tensor.numel())
        .sum();
    assert_eq!(total, counted as f64, "{sizes:?}");
    let shared = sizes["parameters.encoder"] + sizes["parameters.hypernetwork"];
    assert!(shared < sizes["parameters.separate_encoders"], "{sizes:?}");
}

#[test]
fn bad_inputs_are_errors_naming_the_key_or_input() {
    let ctx = context();
    let refused = |config: Value, want: &str| {
        let e = create(&config, &ctx, &Host::standalone()).err().unwrap();
        assert!(e.is_input() && e.to_string().contains(want), "{e}");
    };
    refused(
        json!({"behaviours": ["liked", "cart"]}),
        "behaviours: `cart` is named, but the data have no input `seq.cart`",
    );
    refused(
        json!({"behaviours": []}),
        "behaviours: name at least one behaviour type",
    );
    refused(
        json!({"behaviours": ["liked", "liked"]}),
        "behaviours: `liked` is listed twice",
    );
    refused(
        json!({"behaviours": ["liked"], "candidate": 3}),
        "candidate: column 3 does not exist",
    );
    refused(
        json!({"behaviours": ["liked"], "fields": "items"}),
        "fields: the data have no input `items`",
    );
    refused(
        json!({"behaviours": ["liked"], "fields": "seq.liked"}),
        "fields: `seq.liked` is a behaviour sequence",
    );
    refused(
        json!({"behaviours": ["liked"], "dim": 6, "heads": 4}),
        "heads: 4 heads do not divide dim = 6",
    );
    // Data whose inputs are `fields` and `seq.liked` of these specs.
    let refused_on = |fields: InputSpec, liked: InputSpec, want: &str| {
        let data = MethodContext {
            inputs: [fields, liked].iter().map(Into::into).collect(),
            ..ctx.clone()
        };
        let e = create(
            &json!({"behaviours": ["liked"]}),
            &data,
            &Host::standalone(),
        )
        .err()
        .unwrap();
        assert!(e.is_input() && e.to_string().contains(want), "{e}");
    };
    refused_on(
        InputSpec::index("fields", vec![2], vec![4]),
        InputSpec::index("seq.liked", vec![0], vec![4]),
        "must be int64 item ids [L] with L ≥ 1",
    );
    // Sequences of another vocabulary than the candidate column's (the
    // host has checked every id against its own input's at load).
    refused_on(
        InputSpec::index("fields", vec![3], vec![5, 7, 3]),
        InputSpec::index("seq.liked", vec![4], vec![9]),
        "input `seq.liked` holds ids of a vocabulary of 9, but they must be items of the candidate column 1 of `fields`, whose vocabulary is 7",
    );
}
