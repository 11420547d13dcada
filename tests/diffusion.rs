//! Diffusion pipelines: a DDPM of `toy-2d` points trained by the runtime,
//! sampled by `taskweave sample`, its timesteps clustered into tasks by the
//! diffusion-clustering plugin, resumed exactly, and exit 2 for bad inputs.

use std::path::{Path, PathBuf};

use taskweave_tests::*;
use tch::Tensor;

/// A diffusion pipeline on eight Gaussians in `dir` (the plugin installed in
/// `dir/plugins`), with `extra` TOML appended to `[train]`.
fn pipeline(dir: &Path, name: &str, train: &str) -> PathBuf {
    install_plugin(dir, "taskweave-diffusion-clustering");
    let text = format!(
        r#"[run]
name = "{name}"
device = "cpu"
threads = 1
out_dir = "runs"

[plugins]
dirs = ["plugins"]

[data]
kind = "toy-2d"
distribution = "eight-gaussians"
train = 4000
val = 500
test = 1000

[diffusion]
steps = 200

[model]
backbone = {{ hidden = [64, 64], activation = "relu" }}
head = {{ shared = true }}

[train]
batch = 240
optimizer = {{ kind = "adam", lr = 0.002 }}
{train}
"#
    );
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, text).unwrap();
    path
}

fn run(dir: &Path, args: &[&str]) -> String {
    let (code, out, err) = run_cli(dir, args);
    assert_eq!(code, 0, "{args:?}: {err}");
    out
}

/// Runs the CLI with `args`, which must exit 2 with `needle` in stderr.
fn refused(dir: &Path, args: &[&str], needle: &str) {
    let (code, _, err) = run_cli(dir, args);
    assert_eq!(code, 2, "{args:?}: {err}");
    assert!(err.contains(needle), "{args:?}: {err}");
}

fn summary(dir: &Path, name: &str) -> serde_json::Value {
    let text = std::fs::read_to_string(dir.join("runs").join(name).join("summary.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// The task names of run `name`, in order (the keys of its test metrics).
fn tasks(dir: &Path, name: &str) -> Vec<String> {
    summary(dir, name)["test"]
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect()
}

/// `taskweave sample --json` on run `name`: (sliced W2, MMD²).
fn sample(dir: &Path, name: &str, extra: &[&str]) -> (f64, f64) {
    let run_dir = format!("runs/{name}");
    let out = format!("{name}.safetensors");
    let mut args = vec![
        "-q", "sample", &run_dir, "--n", "1000", "--out", &out, "--json",
    ];
    args.extend(extra);
    let view: serde_json::Value = serde_json::from_str(&run(dir, &args)).unwrap();
    let samples = Tensor::read_safetensors(dir.join(&out)).unwrap();
    assert_eq!(samples[0].0, "samples");
    assert_eq!(samples[0].1.size(), [1000, 2]);
    (
        view["sliced_wasserstein"].as_f64().unwrap(),
        view["mmd2"].as_f64().unwrap(),
    )
}

#[test]
fn a_trained_denoiser_samples_the_eight_gaussians_far_better_than_an_untrained_one() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    pipeline(d, "untrained", "steps = 1\n");
    pipeline(d, "trained", "steps = 1500\n[eval]\nevery = 500\n");
    for name in ["untrained", "trained"] {
        run(d, &["-q", "run", &format!("{name}.toml")]);
    }
    assert_eq!(
        tasks(d, "trained"),
        ["t1-200"],
        "one task without a grouping"
    );
    let (sw_before, mmd_before) = sample(d, "untrained", &[]);
    let (sw, mmd) = sample(d, "trained", &[]);
    let (sw_ddim, mmd_ddim) = sample(d, "trained", &["--sampler", "ddim", "--ddim-steps", "50"]);
    // Untrained samples stay near the N(0, I) start; trained ones reach the
    // ring of eight modes (radius 1.5), so both distances shrink severalfold.
    assert!(
        sw < sw_before / 3.0,
        "sliced W2 {sw} vs untrained {sw_before}"
    );
    assert!(
        mmd < mmd_before / 5.0,
        "MMD² {mmd} vs untrained {mmd_before}"
    );
    assert!(sw_ddim < sw_before / 2.0, "DDIM: {sw_ddim} vs {sw_before}");
    assert!(
        mmd_ddim < mmd_before / 2.0,
        "DDIM: {mmd_ddim} vs {mmd_before}"
    );
    // Another seed, other samples; the same seed, the same samples.
    let again = sample(d, "trained", &[]);
    let other = sample(d, "trained", &["--seed", "1"]);
    assert_eq!(again, (sw, mmd));
    assert_ne!(other, (sw, mmd));

    // Task affinity on 20 timesteps, expanded to all 200, then gradient
    // clusters from it.
    run(
        d,
        &[
            "-q",
            "affinity",
            "runs/trained",
            "--timesteps",
            "20",
            "--rows",
            "128",
            "--out",
            "tas.safetensors",
            "--png",
            "tas.png",
        ],
    );
    for (flag, value) in [("--timesteps", "1"), ("--rows", "0")] {
        let args = [
            "-q",
            "affinity",
            "runs/trained",
            flag,
            value,
            "--out",
            "x.safetensors",
        ];
        let (code, _, err) = run_cli(d, &args);
        assert!(
            code == 2 && err.contains(&format!("{flag} {value}:")),
            "{code}: {err}"
        );
    }
    let tas: Vec<(String, Tensor)> = Tensor::read_safetensors(d.join("tas.safetensors")).unwrap();
    let get = |name: &str| {
        tas.iter()
            .find(|(n, _)| n == name)
            .unwrap()
            .1
            .shallow_clone()
    };
    let (full, grid) = (get("tas"), get("tas_grid"));
    assert_eq!(full.size(), [200, 200]);
    assert_eq!(grid.size(), [20, 20]);
    assert!(grid.allclose(&grid.tr(), 1e-12, 1e-12, false), "symmetric");
    let diagonal = grid.diagonal(0, 0, 1);
    assert!(diagonal.allclose(&diagonal.ones_like(), 1e-9, 1e-9, false));
    // Neighbouring timesteps agree more than distant ones.
    assert!(grid.double_value(&[0, 1]) > grid.double_value(&[0, 19]));
    assert!(std::fs::metadata(d.join("tas.png")).unwrap().len() > 1000);
    pipeline(
        d,
        "gradient",
        "steps = 5
grouping = { kind = \"interval-clustering\", cost = \"gradient\", k = 3 }
",
    );
    run(
        d,
        &[
            "-q",
            "run",
            "gradient.toml",
            "--set",
            "diffusion.signals=\"tas.safetensors\"",
        ],
    );
    assert_eq!(tasks(d, "gradient").len(), 3);
    // The affinities with one more setting: refused, naming `needle`.
    let refused_with = |set: &str, needle: &str| {
        let args = [
            "-q",
            "run",
            "gradient.toml",
            "--overwrite",
            "--set",
            "diffusion.signals=\"tas.safetensors\"",
            "--set",
            set,
        ];
        let (code, _, err) = run_cli(d, &args);
        assert!(code == 2 && err.contains(needle), "{set}: {code}: {err}");
    };
    // Affinities measured under another schedule describe other timesteps.
    refused_with(
        "diffusion.schedule=\"cosine\"",
        "was measured with schedule = \"linear\"",
    );
    // A cost that does not read the affinities would ignore them.
    refused_with(
        "train.grouping.cost=\"snr\"",
        "Grouping::partition: the signals [tas, tas_grid, timesteps] are given, and cost = \"snr\" reads [snr]",
    );
}

#[test]
fn a_grouping_makes_one_task_per_interval_it_chooses_and_the_run_resumes_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    pipeline(
        d,
        "clustered",
        "steps = 40\ncheckpoint_every = 10\ngrouping = { kind = \"interval-clustering\", cost = \"snr\", k = 3 }\nweighting = { kind = \"uw\" }\nmethod_lr = 0.025\n[eval]\nevery = 10\n",
    );
    run(d, &["-q", "run", "clustered.toml"]);
    // The same partition as `taskweave call grouping` on the schedule's SNR.
    run(
        d,
        &[
            "-q",
            "call",
            "grouping",
            "interval-clustering",
            "--tasks",
            "200",
            "--schedule",
            "linear",
            "--set",
            "cost=snr",
            "--set",
            "k=3",
            "--out",
            "groups.safetensors",
            "--plugins",
            "plugins",
        ],
    );
    let intervals = Tensor::read_safetensors(d.join("groups.safetensors"))
        .unwrap()
        .into_iter()
        .find(|(n, _)| n == "intervals")
        .unwrap()
        .1;
    let bounds = Vec::<i64>::try_from(intervals.reshape([-1])).unwrap();
    let expected: Vec<String> = bounds
        .chunks(2)
        .map(|b| format!("t{}-{}", b[0], b[1]))
        .collect();
    let names = tasks(d, "clustered");
    assert_eq!(names, expected);
    let s = summary(d, "clustered");
    assert_eq!(names.len(), 3);
    // Every task has its own validation loss.
    for name in &names {
        assert!(
            s["test"][name.as_str()]["mse"]
                .as_f64()
                .is_some_and(|v| v > 0.0),
            "{s}"
        );
    }
    // One shared head: no per-task head parameters.
    let params = final_parameters(&d.join("runs/clustered"));
    assert!(params.iter().any(|(n, _)| n.starts_with("heads.shared.")));
    assert!(!params.iter().any(|(n, _)| n.starts_with("heads.t")));
    assert_resume_is_exact(&d.join("runs/clustered"), &d.join("runs/copy"));
    // Adam's first step moves each of UW's 3 log-variances by its learning
    // rate: `method_lr`, not the model's lr.
    let log_var = |run: &str| {
        final_parameters(&d.join("runs").join(run))
            .into_iter()
            .find(|(n, _)| n == "strategy.weighting.log_var")
            .unwrap()
            .1
            .abs()
            .sum(tch::Kind::Double)
            .double_value(&[])
    };
    for (name, method_lr) in [("fast", "0.025"), ("slow", "0.002")] {
        let sets = [
            format!("run.name=\"{name}\""),
            "train.steps=1".to_string(),
            format!("train.method_lr={method_lr}"),
        ];
        let mut args = vec!["-q", "run", "clustered.toml"];
        for s in &sets {
            args.extend(["--set", s.as_str()]);
        }
        run(d, &args);
    }
    let (fast, slow) = (log_var("fast"), log_var("slow"));
    assert!((fast - 3.0 * 0.025).abs() < 1e-5, "{fast}");
    assert!((slow - 3.0 * 0.002).abs() < 1e-5, "{slow}");
}

#[test]
fn gradient_weightings_and_per_task_batches_train_on_the_clusters() {
    // PCGrad projects the per-interval gradients of the shared denoiser; the
    // `sam-mtl`-free `standard` strategy with MoDo draws extra batches, which
    // the objective noises too.
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for (name, weighting) in [("pcgrad", "pcgrad"), ("modo", "modo"), ("nash", "nash-mtl")] {
        pipeline(
            d,
            name,
            &format!("steps = 20\ngrouping = {{ kind = \"interval-clustering\", cost = \"log-snr\", k = 4 }}\nweighting = {{ kind = \"{weighting}\" }}\n"),
        );
        run(d, &["-q", "run", &format!("{name}.toml")]);
        assert_eq!(tasks(d, name).len(), 4);
    }
}

/// What would make a diffusion run report something other than it trained
/// is refused: a signals file changed under a run that is resumed (its
/// tasks would change), an `snr` in the signals beside the schedule's, and
/// single-task baselines, which a denoiser's timestep intervals do not have.
#[test]
fn a_diffusion_run_refuses_changed_signals_a_second_snr_and_baselines() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // Affinity 1 within blocks of timesteps, 0 across: the gradient cost's
    // three intervals are the blocks.
    let blocks = |cuts: [i64; 2]| {
        let t = Tensor::arange(200, (tch::Kind::Int64, tch::Device::Cpu));
        let block =
            t.ge(cuts[0]).to_kind(tch::Kind::Int64) + t.ge(cuts[1]).to_kind(tch::Kind::Int64);
        block
            .unsqueeze(1)
            .eq_tensor(&block.unsqueeze(0))
            .to_kind(tch::Kind::Double)
    };
    let signals = d.join("tas.safetensors");
    Tensor::write_safetensors(&[("tas", blocks([50, 120]))], &signals).unwrap();
    pipeline(
        d,
        "moved",
        "steps = 8\ngrouping = { kind = \"interval-clustering\", cost = \"gradient\", k = 3 }\n",
    );
    let set = ["--set", "diffusion.signals=\"tas.safetensors\""];
    let out = run(d, &[&["-q", "run", "moved.toml"][..], &set].concat());
    assert_eq!(tasks(d, "moved"), ["t1-50", "t51-120", "t121-200"]);
    assert!(!out.contains("taskweave baselines"), "{out}");
    run(d, &["-q", "resume", "runs/moved"]);
    // The file the run's tasks came from, changed: resuming would train other tasks.
    Tensor::write_safetensors(&[("tas", blocks([100, 150]))], &signals).unwrap();
    refused(
        d,
        &["-q", "resume", "runs/moved"],
        "[t1-50, t51-120, t121-200] when step 8 was checkpointed, and are now [t1-100, t101-150, t151-200]",
    );
    // The schedule gives `snr`: a second one in the signals is refused.
    let snr = Tensor::ones([200], (tch::Kind::Double, tch::Device::Cpu));
    Tensor::write_safetensors(&[("tas", blocks([50, 120])), ("snr", snr)], &signals).unwrap();
    refused(
        d,
        &[&["-q", "run", "moved.toml", "--overwrite"][..], &set].concat(),
        "diffusion.signals holds a signal `snr`, which the noise schedule gives",
    );
    refused(
        d,
        &["-q", "baselines", "moved.toml"],
        "a [diffusion] pipeline's tasks are timestep intervals of one denoiser",
    );
}

/// The commands that read a diffusion run fit their defaults and limits to
/// it: DDIM's default step count to a schedule shorter than 50, affinity's
/// rows to the training samples there are (and say so), a preview's size.
#[test]
fn sample_affinity_and_preview_fit_their_defaults_and_limits_to_the_run() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    pipeline(d, "short", "steps = 3\n");
    run(
        d,
        &["-q", "run", "short.toml", "--set", "diffusion.steps=20"],
    );
    let args = [
        "-q",
        "sample",
        "runs/short",
        "--n",
        "10",
        "--sampler",
        "ddim",
    ];
    run(d, &[&args[..], &["--out", "s.safetensors"]].concat());
    let meta = |file: &str| {
        taskweave::train::checkpoint::read(&d.join(file))
            .unwrap()
            .meta
    };
    assert_eq!(meta("s.safetensors")["ddim_steps"], 20);
    let out = run(
        d,
        &[
            "-q",
            "affinity",
            "runs/short",
            "--timesteps",
            "4",
            "--rows",
            "100000",
            "--out",
            "a.safetensors",
        ],
    );
    assert!(out.contains("on 4000 training rows"), "{out}");
    assert_eq!(meta("a.safetensors")["rows"], 4000);
    refused(
        d,
        &[
            "-q",
            "preview",
            "short.toml",
            "--n",
            "100000",
            "--out",
            "p.png",
        ],
        "--n 100000: a preview draws at most 256 examples",
    );
}

#[test]
fn bad_diffusion_inputs_exit_2_naming_what_to_change() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let cases: [(&str, &[&str], &str); 8] = [
        (
            "k-too-large",
            &[
                "train.steps=5",
                "train.grouping={kind=\"interval-clustering\", k=300}",
            ],
            "train.grouping",
        ),
        (
            "k-above-the-batch",
            &[
                "train.steps=5",
                "train.batch=4",
                "train.grouping={kind=\"interval-clustering\", k=5}",
            ],
            "5 timestep intervals (tasks), but a batch (train.batch, at most the training rows) has 4 rows",
        ),
        (
            // The batch asked for is larger than the training split.
            "k-above-the-training-rows",
            &[
                "train.steps=5",
                "data.train=3",
                "train.grouping={kind=\"interval-clustering\", k=5}",
            ],
            "5 timestep intervals (tasks), but a batch (train.batch, at most the training rows) has 3 rows",
        ),
        (
            "needs-tas",
            &[
                "train.steps=5",
                "train.grouping={kind=\"interval-clustering\", cost=\"gradient\"}",
            ],
            "tas",
        ),
        (
            "no-input",
            &["train.steps=5", "diffusion.input=\"image\""],
            "diffusion.input",
        ),
        (
            "odd-features",
            &["train.steps=5", "diffusion.time_features=3"],
            "time_features",
        ),
        (
            "unread-signals",
            &["train.steps=5", "diffusion.signals=\"tas.safetensors\""],
            "diffusion.signals feed train.grouping, and there is none",
        ),
        (
            "unknown-key",
            &["train.steps=5", "diffusion.sigma=1"],
            "sigma",
        ),
    ];
    pipeline(d, "bad", "");
    for (name, sets, needle) in cases {
        let mut args = vec!["-q", "run", "bad.toml", "--set"];
        let name_set = format!("run.name=\"{name}\"");
        args.push(&name_set);
        for s in sets {
            args.extend(["--set", s]);
        }
        refused(d, &args, needle);
    }
    // toy-2d data without [diffusion], and a grouping without it.
    let plain = small_pipeline(
        d,
        "plain",
        "[train]\nsteps = 2\ngrouping = { kind = \"interval-clustering\" }\n",
    );
    let plain = plain.to_str().unwrap();
    let args = ["-q", "run", plain, "--set", "plugins.dirs=[\"plugins\"]"];
    refused(d, &args, "[diffusion]");
    let text = std::fs::read_to_string(d.join("bad.toml")).unwrap();
    let without: String = text.replace("[diffusion]\nsteps = 200\n", "");
    std::fs::write(
        d.join("nodiff.toml"),
        without.replace("\"bad\"", "\"nodiff\""),
    )
    .unwrap();
    refused(
        d,
        &["-q", "run", "nodiff.toml", "--set", "train.steps=2"],
        "[diffusion]",
    );
    // `sample` on a run that is not a diffusion model.
    let quick = small_pipeline(d, "quick", "[train]\nsteps = 2\n");
    run(d, &["-q", "run", quick.to_str().unwrap()]);
    let runs = d.join("runs/quick");
    let args = [
        "-q",
        "sample",
        runs.to_str().unwrap(),
        "--out",
        "x.safetensors",
    ];
    refused(d, &args, "not a diffusion");
}

/// Writes `count` 28×28 items (item i: a bright square of side 8 + i mod 12
/// on black, class i mod 10) as `dir/fashion/<set>-*-ubyte` IDX files.
fn write_items(dir: &Path, set: &str, count: usize) {
    let folder = dir.join("images/fashion");
    std::fs::create_dir_all(&folder).unwrap();
    let mut images = vec![0, 0, 8, 3];
    let mut labels = vec![0, 0, 8, 1];
    for d in [count as u32, 28, 28] {
        images.extend(d.to_be_bytes());
    }
    labels.extend((count as u32).to_be_bytes());
    for i in 0..count {
        let side = 8 + i % 12;
        for y in 0..28 {
            for x in 0..28 {
                images.push(if y < side && x < side { 250 } else { 0 });
            }
        }
        labels.push((i % 10) as u8);
    }
    std::fs::write(folder.join(format!("{set}-images-idx3-ubyte")), images).unwrap();
    std::fs::write(folder.join(format!("{set}-labels-idx1-ubyte")), labels).unwrap();
}

/// The head of a diffusion pipeline `name` on the 14×14 items of
/// [`write_items`] (T = 50), with `extra` TOML after `[run]`; the caller
/// appends `[model]` and `[train]`.
fn image_pipeline(name: &str, extra: &str) -> String {
    format!(
        "[run]\nname = \"{name}\"\ndevice = \"cpu\"\nthreads = 1\n{extra}[data]\nkind = \"fashion-mnist\"\ndir = \"images\"\nsize = 14\n[diffusion]\nsteps = 50\n"
    )
}

#[test]
fn an_image_denoiser_trains_on_fashion_mnist_items_and_samples_clipped_images_into_a_grid() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_items(d, "train", 120);
    write_items(d, "t10k", 20);
    let text = image_pipeline("images", "")
        + r#"[model]
backbone = { hidden = [64] }
head = { shared = true }
[train]
steps = 30
batch = 20
"#;
    std::fs::write(d.join("images.toml"), text).unwrap();
    run(d, &["-q", "run", "images.toml"]);
    let out = run(
        d,
        &[
            "-q",
            "sample",
            "runs/images",
            "--n",
            "16",
            "--sampler",
            "ddim",
            "--ddim-steps",
            "10",
            "--clip",
            "--out",
            "s.safetensors",
            "--png",
            "s.png",
        ],
    );
    assert!(out.contains("against 20 test samples"), "{out}");
    for steps in ["0", "5000"] {
        let args = [
            "-q",
            "sample",
            "runs/images",
            "--sampler",
            "ddim",
            "--ddim-steps",
            steps,
            "--out",
            "x.safetensors",
        ];
        let (code, _, err) = run_cli(d, &args);
        assert!(
            code == 2 && err.contains("DDIM takes 1 to"),
            "{steps}: {code}: {err}"
        );
    }
    // A DDIM step count without the DDIM sampler would be ignored.
    let args = [
        "-q",
        "sample",
        "runs/images",
        "--ddim-steps",
        "7",
        "--out",
        "x.safetensors",
    ];
    let (code, _, err) = run_cli(d, &args);
    assert!(
        code == 2 && err.contains("add --sampler ddim"),
        "{code}: {err}"
    );
    // Too few samples to measure, or more than the measures' memory holds: named.
    for (n, want) in [
        ("1", "--n 1: the sample measures"),
        ("100000000", "needs about"),
    ] {
        let args = [
            "-q",
            "sample",
            "runs/images",
            "--n",
            n,
            "--out",
            "x.safetensors",
        ];
        let (code, _, err) = run_cli(d, &args);
        assert!(code == 2 && err.contains(want), "{n}: {code}: {err}");
    }
    let samples = &Tensor::read_safetensors(d.join("s.safetensors")).unwrap()[0].1;
    assert_eq!(samples.size(), [16, 1, 14, 14]);
    assert!(samples.abs().max().double_value(&[]) <= 1.0 + 1e-6);
    let png = std::fs::read(d.join("s.png")).unwrap();
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    // Eight columns of 14×14 pictures magnified 3×: wider than 8·42 pixels.
    let width = u32::from_be_bytes(png[16..20].try_into().unwrap());
    assert!(width > 8 * 42, "{width}");
}

#[test]
fn a_unet_denoiser_learns_per_pixel_noise_on_clusters_and_sampling_measures_fd_fmnist() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_items(d, "train", 120);
    write_items(d, "t10k", 40);
    install_plugin(d, "taskweave-diffusion-clustering");
    let text = image_pipeline("unet", "[plugins]\ndirs = [\"plugins\"]\n")
        + r#"[model]
backbone = { kind = "unet", channels = [8, 16], groups = 4 }
head = { shared = true }
[train]
steps = 60
batch = 20
optimizer = { kind = "adam", lr = 0.003 }
grouping = { kind = "interval-clustering", cost = "timestep", k = 2 }
weighting = { kind = "pcgrad" }
[eval]
every = 10
"#;
    std::fs::write(d.join("unet.toml"), text).unwrap();
    run(d, &["-q", "run", "unet.toml"]);
    // Per-pixel tasks with MSE, one per interval; the ε error falls.
    let evals: Vec<serde_json::Value> = std::fs::read_to_string(d.join("runs/unet/metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .filter(|v: &serde_json::Value| v["split"] == "val")
        .collect();
    let mse = |v: &serde_json::Value| v["tasks"]["t26-50"]["mse"].as_f64().unwrap();
    let (first, last) = (mse(&evals[0]), mse(evals.last().unwrap()));
    assert!(last < 0.8 * first, "val ε MSE {first} → {last}");
    assert!(evals[0]["tasks"]["t1-25"]["abs_err"].is_number());
    let sample = |out: &str| {
        run(
            d,
            &[
                "-q",
                "sample",
                "runs/unet",
                "--n",
                "40",
                "--sampler",
                "ddim",
                "--ddim-steps",
                "10",
                "--clip",
                "--out",
                out,
                "--json",
            ],
        )
    };
    let view: serde_json::Value = serde_json::from_str(&sample("a.safetensors")).unwrap();
    let samples = &Tensor::read_safetensors(d.join("a.safetensors")).unwrap()[0].1;
    assert_eq!(samples.size(), [40, 1, 14, 14]);
    // The classifier's space tells 60-step samples from real items.
    let (fd, real) = (
        view["fd_fmnist"].as_f64().unwrap(),
        view["fd_fmnist_real"].as_f64().unwrap(),
    );
    assert!(
        real.is_finite() && real >= 0.0 && fd > 2.0 * real,
        "{fd} vs {real}"
    );
    // Trained once, beside the items, and reused.
    let summary = d.join("images/fd-fmnist/fashion-14px/summary.json");
    let trained = std::fs::metadata(&summary).unwrap().modified().unwrap();
    let again: serde_json::Value = serde_json::from_str(&sample("b.safetensors")).unwrap();
    assert_eq!(
        std::fs::metadata(&summary).unwrap().modified().unwrap(),
        trained
    );
    assert_eq!(again["fd_fmnist"], view["fd_fmnist"]);
}
