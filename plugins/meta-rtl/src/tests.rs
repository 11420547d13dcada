use taskweave_plugin_api::serde_json::json;
use taskweave_plugin_api::tch::Tensor;
use taskweave_plugin_api::testing::LinearOps;
use taskweave_plugin_api::{Host, MethodContext, StepOps, Strategy};

use super::create;

fn context(tasks: usize) -> MethodContext {
    MethodContext {
        tasks: (0..tasks)
            .map(|t| format!("t{t}").as_str().into())
            .collect(),
        device: "cpu".into(),
        seed: 3,
        ..Default::default()
    }
}

fn strategy(config: taskweave_plugin_api::serde_json::Value) -> Box<dyn Strategy> {
    create(&config, &context(3), &Host::standalone()).unwrap()
}

/// `steps` steps of `s` on `ops`, each ending the step.
fn run(s: &mut dyn Strategy, ops: &mut LinearOps, steps: usize) -> Vec<Tensor> {
    (0..steps)
        .map(|_| {
            let report = s.step(ops).unwrap();
            ops.finish_step();
            report.weights.unwrap()
        })
        .collect()
}

#[test]
fn a_meta_iteration_weights_the_sources_and_moves_the_parameters() {
    let mut ops = LinearOps::new(3, 1);
    let mut s = strategy(json!({"target": "t2", "inner_steps": 2, "inner_lr": 0.05}));
    let before = ops.parameters_flat().unwrap();
    let weights = run(s.as_mut(), &mut ops, 1).remove(0);
    let w = Vec::<f32>::try_from(&weights).unwrap();
    assert_eq!(w[2], 0.0, "the target gets no weight");
    assert!(
        (w[0] + w[1] - 1.0).abs() < 1e-6 && w[0] > 0.0 && w[1] > 0.0,
        "{w:?}"
    );
    assert!(!ops.parameters_flat().unwrap().equal(&before));
}

#[test]
fn uniform_weights_are_plain_reptile() {
    let mut ops = LinearOps::new(3, 1);
    let mut s = strategy(json!({"target": "t2", "uniform": true}));
    for w in run(s.as_mut(), &mut ops, 3) {
        assert_eq!(Vec::<f32>::try_from(&w).unwrap(), [0.5, 0.5, 0.0]);
    }
}

#[test]
fn resume_from_the_state_continues_bitwise() {
    let config = json!({"sources_per_iteration": 1, "target": "t0"});
    let mut a = strategy(config.clone());
    let mut b = strategy(config.clone());
    b.load_state(a.state().unwrap()).unwrap();
    let (mut ops_a, mut ops_b) = (LinearOps::new(3, 2), LinearOps::new(3, 2));
    run(a.as_mut(), &mut ops_a, 2);
    run(b.as_mut(), &mut ops_b, 2);
    // A "resumed" b: a fresh strategy and fresh host at step 2 with b's
    // saved parameters and state.
    let mut resumed = strategy(config);
    resumed.load_state(b.state().unwrap()).unwrap();
    let mut ops_r = LinearOps::new(3, 2);
    ops_r.finish_step();
    ops_r.finish_step();
    ops_r
        .set_parameters_flat(&ops_b.parameters_flat().unwrap())
        .unwrap();
    let wa = run(a.as_mut(), &mut ops_a, 3);
    let wr = run(resumed.as_mut(), &mut ops_r, 3);
    assert!(ops_a
        .parameters_flat()
        .unwrap()
        .equal(&ops_r.parameters_flat().unwrap()));
    for (x, y) in wa.iter().zip(&wr) {
        assert!(x.equal(y), "{x} vs {y}");
        assert_eq!(Vec::<f32>::try_from(x).unwrap()[0], 0.0, "t0 is the target");
    }
}

#[test]
fn an_unknown_target_or_a_single_task_is_an_input_error() {
    let e = create(&json!({"target": "t9"}), &context(3), &Host::standalone())
        .err()
        .unwrap();
    assert!(
        e.is_input()
            && e.to_string()
                .contains("no task `t9` (the tasks: t0, t1, t2)"),
        "{e}"
    );
    let e = create(&json!({"target": "t0"}), &context(1), &Host::standalone())
        .err()
        .unwrap();
    assert!(e.is_input(), "{e}");
    // Three tasks: one target, two sources; asking for more is not clamped silently.
    let e = create(
        &json!({"target": "t2", "sources_per_iteration": 3}),
        &context(3),
        &Host::standalone(),
    )
    .err()
    .unwrap();
    assert!(
        e.is_input() && e.to_string().contains("3, but there are 2 sources"),
        "{e}"
    );
    assert!(create(
        &json!({"target": "t2", "sources_per_iteration": 2}),
        &context(3),
        &Host::standalone()
    )
    .is_ok());
}
