//! `taskweave call grouping` with the diffusion-clustering plugin: the
//! intervals and cost it writes, and exit 2 for every bad input.

use std::path::{Path, PathBuf};

use taskweave_tests::*;
use tch::{Kind, Tensor};

/// A directory with the plugin in `plugins/`.
fn setup() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    install_plugin(dir.path(), "taskweave-diffusion-clustering");
    dir
}

fn signals(dir: &Path, tensors: &[(&str, Tensor)]) -> PathBuf {
    let path = dir.join("signals.safetensors");
    let refs: Vec<(&str, &Tensor)> = tensors.iter().map(|(n, t)| (*n, t)).collect();
    Tensor::write_safetensors(&refs, &path).unwrap();
    path
}

/// Runs `call grouping interval-clustering` with `args`; returns (code, stderr).
fn call(dir: &Path, args: &[&str]) -> (i32, String) {
    let mut all = vec![
        "-q",
        "call",
        "grouping",
        "interval-clustering",
        "--out",
        "out.safetensors",
        "--plugins",
        "plugins",
    ];
    all.extend(args);
    let (code, _, err) = run_cli(dir, &all);
    (code, err)
}

fn output(dir: &Path, name: &str) -> Tensor {
    Tensor::read_safetensors(dir.join("out.safetensors"))
        .unwrap()
        .into_iter()
        .find(|(n, _)| n == name)
        .unwrap()
        .1
}

/// DDPM's linear schedule (β from 1e-4 to 0.02) as SNR = ᾱ / (1 − ᾱ), `[T]` f64.
fn linear_snr(steps: i64) -> Tensor {
    let betas = Tensor::linspace(1e-4, 0.02, steps, (Kind::Double, tch::Device::Cpu));
    let alpha_bar = (betas.neg() + 1.0).cumprod(0, Kind::Double);
    &alpha_bar / (1.0 - &alpha_bar)
}

#[test]
fn snr_and_timestep_intervals_tile_the_timesteps_and_report_their_cost() {
    let dir = setup();
    let d = dir.path();
    let snr = linear_snr(1000);
    let file = signals(d, &[("snr", snr.shallow_clone())]);
    let (code, err) = call(
        d,
        &[
            "--tasks",
            "1000",
            "--signals",
            file.to_str().unwrap(),
            "--set",
            "cost=\"snr\"",
            "--set",
            "k=5",
        ],
    );
    assert_eq!(code, 0, "{err}");
    let intervals = Vec::<i64>::try_from(output(d, "intervals").reshape([-1])).unwrap();
    assert_eq!(intervals.len(), 10);
    assert_eq!((intervals[0], intervals[9]), (1, 1000));
    assert!(intervals.chunks(2).all(|c| c[0] <= c[1]));
    assert!(
        intervals[1..9].chunks(2).all(|c| c[1] == c[0] + 1),
        "contiguous: {intervals:?}"
    );
    // The reported cost is the spec's, recomputed here term by term.
    let values = Vec::<f64>::try_from(&snr).unwrap();
    let expected: f64 = intervals
        .chunks(2)
        .map(|c| {
            let centre = ((c[0] + c[1]) / 2 - 1) as usize;
            (c[0] - 1..c[1])
                .map(|t| (values[t as usize] - values[centre]).abs())
                .sum::<f64>()
        })
        .sum();
    let cost = output(d, "cost").double_value(&[]);
    assert!(
        (cost - expected).abs() <= 1e-9 * expected,
        "{cost} vs {expected}"
    );
    // The same schedule from --schedule gives the same intervals.
    let from_file = output(d, "intervals");
    let (code, err) = call(
        d,
        &[
            "--tasks",
            "1000",
            "--schedule",
            "linear",
            "--set",
            "cost=\"snr\"",
            "--plot",
            "groups.png",
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert!(output(d, "intervals").equal(&from_file));
    let png = std::fs::read(d.join("groups.png")).unwrap();
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    let (code, err) = call(
        d,
        &[
            "--tasks",
            "10",
            "--set",
            "cost=\"timestep\"",
            "--plot",
            "t.png",
        ],
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--plot draws the signal `snr`"), "{err}");
    // Timesteps need no signal: 1..10 in two halves, |t − 3| + |t − 8| summed.
    let (code, err) = call(
        d,
        &[
            "--tasks",
            "10",
            "--set",
            "cost=\"timestep\"",
            "--set",
            "k=2",
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        Vec::<i64>::try_from(output(d, "intervals").reshape([-1])).unwrap(),
        [1, 5, 6, 10]
    );
    assert_eq!(output(d, "cost").double_value(&[]), 12.0);
}

#[test]
fn bad_inputs_are_exit_2_naming_the_key_or_tensor() {
    let dir = setup();
    let d = dir.path();
    let snr = linear_snr(8);
    let nan = signals(
        d,
        &[("snr", {
            let _ = snr.narrow(0, 3, 1).fill_(f64::NAN);
            snr.shallow_clone()
        })],
    );
    let nan = nan.to_str().unwrap().to_string();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["--tasks", "4", "--set", "k=5", "--set", "cost=\"timestep\""],
            "k = 5 intervals of 4 timesteps",
        ),
        (vec!["--tasks", "4", "--set", "k=0"], "k"),
        // Refused before 10^8 task names are made (gigabytes, then the
        // grouping's own refusal).
        (
            vec!["--tasks", "100000000", "--set", "cost=\"timestep\""],
            "--tasks 100000000: a grouping takes at most 1000000 tasks",
        ),
        (vec!["--tasks", "4", "--set", "cost=\"snrr\""], "cost"),
        (
            vec!["--tasks", "8", "--set", "cost=\"snr\""],
            "needs the signal `snr` [8]",
        ),
        (
            vec!["--tasks", "8", "--signals", &nan, "--set", "cost=\"snr\""],
            "`snr` is NaN at index 3 (timestep 4)",
        ),
        (
            vec![
                "--tasks",
                "8",
                "--signals",
                &nan,
                "--set",
                "cost=\"gradient\"",
            ],
            "needs the signal `tas` [8, 8]",
        ),
    ];
    for (args, needle) in cases {
        let (code, err) = call(d, &args);
        assert_eq!(code, 2, "{args:?}: {err}");
        assert!(err.contains(needle), "{args:?}: `{needle}` not in {err}");
    }
    let tas = Tensor::eye(4, (Kind::Float, tch::Device::Cpu));
    let _ = tas.get(0).get(1).fill_(0.5);
    let file = signals(d, &[("tas", tas)]);
    let (code, err) = call(
        d,
        &[
            "--tasks",
            "4",
            "--signals",
            file.to_str().unwrap(),
            "--set",
            "cost=\"gradient\"",
            "--set",
            "k=2",
        ],
    );
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("`tas` is not symmetric: [1, 0] = 0 but [0, 1] = 0.5"),
        "{err}"
    );
}

#[test]
fn more_timesteps_than_memory_holds_exit_2_instead_of_aborting() {
    let dir = setup();
    // 10^5 timesteps: 5·10^9 interval costs, 40 GB, more than any CI machine
    // holds; the allocation used to abort the process.
    let (code, err) = call(
        dir.path(),
        &[
            "--tasks",
            "100000",
            "--set",
            "cost=timestep",
            "--set",
            "k=5",
        ],
    );
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("needs 40.0 GB") && err.contains("cluster fewer timesteps"),
        "{err}"
    );
}
