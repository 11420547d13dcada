//! Helpers for the integration tests: locating and building the CLI and the
//! plugins (workspace ones, and standalone crates built exactly as a third
//! party would build them), small pipelines, and what the benchmarks share.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Mutex, OnceLock};

/// The workspace root.
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ is inside the workspace")
        .to_path_buf()
}

/// `target/release` (the tests run in the release profile, like `make test`).
pub fn release_dir() -> PathBuf {
    // This test binary lives in target/release/deps.
    let exe = std::env::current_exe().expect("test executable path");
    exe.parent()
        .and_then(Path::parent)
        .expect("target/release/deps/<test>")
        .to_path_buf()
}

fn target_dir() -> PathBuf {
    release_dir()
        .parent()
        .expect("target/release")
        .to_path_buf()
}

fn cargo() -> Command {
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.env("CARGO_TARGET_DIR", target_dir());
    cmd
}

/// Runs a cargo build once per distinct argument list in this process.
fn build_once(key: String, run: impl FnOnce() -> PathBuf) -> PathBuf {
    static BUILT: OnceLock<Mutex<HashMap<String, PathBuf>>> = OnceLock::new();
    let mut built = BUILT
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    built.entry(key).or_insert_with(run).clone()
}

fn check(output: Output, what: &str) {
    assert!(
        output.status.success(),
        "{what} failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// The `taskweave` CLI, built if needed.
pub fn binary() -> PathBuf {
    build_once("bin".into(), || {
        check(
            cargo()
                .args([
                    "build",
                    "--release",
                    "-p",
                    "taskweave",
                    "--bin",
                    "taskweave",
                ])
                // The features this test build has (`make test` enables MPI
                // where it is installed), so that nothing is rebuilt.
                .args(
                    taskweave::dist::WITH_MPI
                        .then_some(["--features", "taskweave/mpi"])
                        .into_iter()
                        .flatten(),
                )
                .output()
                .unwrap(),
            "building taskweave",
        );
        release_dir().join("taskweave")
    })
}

/// The `.so` of workspace plugin package `package` (for example `taskweave-rlw`).
pub fn workspace_plugin(package: &str) -> PathBuf {
    build_once(package.into(), || {
        check(
            cargo()
                .args(["build", "--release", "-p", package])
                .output()
                .unwrap(),
            package,
        );
        release_dir().join(format!("lib{}.so", package.replace('-', "_")))
    })
}

/// Builds the workspace plugin `package` and copies its library into
/// `dir/plugins/` (created), where pipelines and `--plugins plugins` find it.
pub fn install_plugin(dir: &Path, package: &str) {
    let plugins = dir.join("plugins");
    std::fs::create_dir_all(&plugins).unwrap();
    let file = format!("lib{}.so", package.replace('-', "_"));
    std::fs::copy(workspace_plugin(package), plugins.join(file)).unwrap();
}

/// Rewrites a workspace member's manifest so it builds standalone: inherited
/// package keys and dependencies are taken from the workspace manifest, path
/// dependencies become absolute, and the build script (workspace-relative) is
/// dropped.
fn standalone_manifest(member: &Path) -> toml_edit::DocumentMut {
    let root: toml_edit::DocumentMut = std::fs::read_to_string(workspace().join("Cargo.toml"))
        .unwrap()
        .parse()
        .unwrap();
    let mut doc: toml_edit::DocumentMut = std::fs::read_to_string(member.join("Cargo.toml"))
        .unwrap()
        .parse()
        .unwrap();
    let package = doc["package"].as_table_mut().unwrap();
    package.remove("build");
    let keys: Vec<String> = package.iter().map(|(k, _)| k.to_string()).collect();
    for key in keys {
        if package[&key].get("workspace").is_some() {
            package[&key] = root["workspace"]["package"][&key].clone();
        }
    }
    let deps = doc["dependencies"].as_table_like_mut().unwrap();
    let names: Vec<String> = deps.iter().map(|(k, _)| k.to_string()).collect();
    for name in names {
        let dep = deps.get_mut(&name).unwrap();
        if dep.get("workspace").is_some() {
            let mut spec = root["workspace"]["dependencies"][&name].clone();
            if let Some(extra) = dep.get("features") {
                spec["features"] = extra.clone();
            }
            *dep = spec;
        }
        if let Some(path) = dep.get("path").and_then(|p| p.as_str()) {
            let absolute = workspace().join(path).display().to_string();
            dep["path"] = toml_edit::value(absolute);
        }
    }
    doc["workspace"] = toml_edit::table();
    doc
}

/// A crate written under `target/test-crates/<name>` (inside the repository,
/// so `.cargo/config.toml` gives it the same libtorch, and with the
/// workspace's lock file, so its dependencies are the already-built ones).
pub struct Scratch {
    /// The crate directory.
    pub dir: PathBuf,
}

impl Scratch {
    /// An empty crate directory called `name`.
    pub fn new(name: &str) -> Scratch {
        let dir = target_dir().join("test-crates").join(name);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("src")).unwrap();
        std::fs::copy(workspace().join("Cargo.lock"), dir.join("Cargo.lock")).unwrap();
        Scratch { dir }
    }

    /// Writes `text` to `path` inside the crate.
    pub fn write(&self, path: &str, text: &str) -> &Scratch {
        let full = self.dir.join(path);
        std::fs::create_dir_all(full.parent().unwrap()).unwrap();
        std::fs::write(full, text).unwrap();
        self
    }

    /// Builds and installs the crate with `taskweave plugin build` (the CLI at
    /// `taskweave`; into `<crate>/installed`, sharing the workspace's target
    /// directory), as a plugin author would. Returns the installed `.so`, or
    /// when it was built against another API or libtorch on purpose and so
    /// was refused, the `.so` cargo built.
    pub fn build_plugin(&self, taskweave: &Path) -> PathBuf {
        let into = self.dir.join("installed");
        let output = Command::new(taskweave)
            .args(["plugin", "build"])
            .arg(&self.dir)
            .arg("--into")
            .arg(&into)
            .arg("--target-dir")
            .arg(target_dir())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&output.stderr);
        if let Some(built) = err
            .split_once(" was built into ")
            .and_then(|(_, rest)| rest.split_once(" but cannot be loaded"))
        {
            return PathBuf::from(built.0);
        }
        assert!(
            output.status.success(),
            "building {}:\n{err}",
            self.dir.display()
        );
        let so = std::fs::read_dir(&into)
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.extension().is_some_and(|e| e == "so"))
            .expect("an installed .so");
        so
    }
}

/// A copy of `taskweave-plugin-api` with another ABI version and/or another
/// libtorch version compiled in: what a plugin built against an older API or
/// another libtorch carries. Returns the copy's directory.
pub fn patched_plugin_api(name: &str, abi_version: &str, libtorch: &str) -> PathBuf {
    let scratch = Scratch::new(name);
    let source = workspace().join("plugin-api/src");
    for entry in walk(&source) {
        let rel = entry.strip_prefix(&source).unwrap().display().to_string();
        let mut text = std::fs::read_to_string(&entry).unwrap();
        if rel == "lib.rs" {
            let current = format!("\"{}\"", taskweave_plugin_api::LIBTORCH_VERSION);
            text = text.replacen(&current, &format!("\"{libtorch}\""), 1);
        }
        scratch.write(&format!("src/{rel}"), &text);
    }
    let mut manifest = standalone_manifest(&workspace().join("plugin-api"));
    manifest["package"]["version"] = toml_edit::value(abi_version);
    scratch.write("Cargo.toml", &manifest.to_string());
    scratch.dir
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}

/// Builds `plugin-template/` as a third party would, with `taskweave plugin
/// build`: a standalone crate whose only dependency is `taskweave-plugin-api`
/// at `api` (a path). `package` renames it so several builds can coexist.
/// Returns the `.so`.
pub fn template_plugin(package: &str, api: &Path) -> PathBuf {
    let key = format!("template:{package}");
    let api = api.to_path_buf();
    let package = package.to_string();
    // Outside build_once: its lock is not reentrant.
    let taskweave = binary();
    build_once(key, move || {
        let scratch = Scratch::new(&package);
        let template = workspace().join("plugin-template");
        scratch.write(
            "src/lib.rs",
            &std::fs::read_to_string(template.join("src/lib.rs")).unwrap(),
        );
        let mut manifest: toml_edit::DocumentMut =
            std::fs::read_to_string(template.join("Cargo.toml"))
                .unwrap()
                .parse()
                .unwrap();
        manifest["package"]["name"] = toml_edit::value(package.as_str());
        manifest["dependencies"]["taskweave-plugin-api"]["path"] =
            toml_edit::value(api.display().to_string());
        scratch.write("Cargo.toml", &manifest.to_string());
        scratch.build_plugin(&taskweave)
    })
}

/// Builds the fixture crate `tests/fixtures/<name>` standalone. Returns the `.so`.
pub fn fixture_plugin(name: &str) -> PathBuf {
    let taskweave = binary();
    build_once(format!("fixture:{name}"), || {
        let source = workspace().join("tests/fixtures").join(name);
        let scratch = Scratch::new(&format!("fixture-{name}"));
        scratch.write(
            "src/lib.rs",
            &std::fs::read_to_string(source.join("src/lib.rs")).unwrap(),
        );
        let manifest = std::fs::read_to_string(source.join("Cargo.toml"))
            .unwrap()
            .replace(
                "@PLUGIN_API@",
                &workspace().join("plugin-api").display().to_string(),
            );
        scratch.write("Cargo.toml", &manifest);
        scratch.build_plugin(&taskweave)
    })
}

/// A shared library that is not a plugin, compiled from C with the system compiler.
pub fn foreign_library(dir: &Path) -> PathBuf {
    let source = dir.join("foreign.c");
    std::fs::write(&source, "int add(int a, int b) { return a + b; }\n").unwrap();
    let out = dir.join("libforeign.so");
    let status = Command::new("cc")
        .args(["-shared", "-fPIC", "-o"])
        .arg(&out)
        .arg(&source)
        .status()
        .unwrap();
    assert!(status.success(), "cc failed");
    std::fs::remove_file(source).unwrap();
    out
}

/// Runs the CLI with `args` in `cwd`; returns (exit code, stdout, stderr).
pub fn run_cli(cwd: &Path, args: &[&str]) -> (i32, String, String) {
    let output = Command::new(binary())
        .args(args)
        .current_dir(cwd)
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    (
        output.status.code().unwrap_or(-1),
        text(&output.stdout),
        text(&output.stderr),
    )
}

/// A small, fast pipeline on the synthetic data (hard sharing, EW, CPU),
/// with `extra` TOML appended; relative paths resolve in `dir`.
pub fn small_pipeline(dir: &Path, name: &str, extra: &str) -> PathBuf {
    let text = format!(
        r#"[run]
name = "{name}"
device = "cpu"
out_dir = "{out}"

[data]
kind = "mmoe-synthetic"
tasks = 2
input_dim = 8
train = 512
val = 64
test = 64

[model]
backbone = {{ hidden = [16] }}

{extra}
"#,
        out = dir.join("runs").display()
    );
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, text).unwrap();
    path
}

/// Methods of every kind with the `[train]` keys that select them, and how
/// close two ways of training the same batches must end (relative, see
/// [`max_relative_difference`]): loss weightings within float rounding of
/// a summed gradient, gradient weightings and SAM-MTL within 1e-5 (their
/// solvers amplify rounding a little). SAM-MTL needs its plugin installed.
pub const COMPARED_METHODS: [(&str, &str, f64); 7] = [
    ("ew", "weighting = \"ew\"", 1e-6),
    ("uw", "weighting = \"uw\"", 1e-6),
    ("pcgrad", "weighting = \"pcgrad\"", 1e-5),
    ("cagrad", "weighting = \"cagrad\"", 1e-5),
    ("mgda", "weighting = \"mgda\"", 1e-5),
    ("nash-mtl", "weighting = \"nash-mtl\"", 1e-5),
    (
        "sam-mtl",
        "weighting = \"ew\"\nstrategy = { kind = \"sam-mtl\", rho = 0.05, adaptive = true }",
        1e-5,
    ),
];

/// [`small_pipeline`] trained `steps` steps with a method's `[train]`
/// `keys`, batch 64, Adam 0.01, plugins from `plugins/`, evaluated and
/// checkpointed every 20 steps: where two ways of training are compared.
pub fn method_pipeline(dir: &Path, name: &str, keys: &str, steps: u64) -> PathBuf {
    let extra = format!(
        "[plugins]\ndirs = [\"plugins\"]\n\n[train]\nsteps = {steps}\nbatch = 64\ncheckpoint_every = 20\n\
         optimizer = {{ kind = \"adam\", lr = 0.01 }}\n{keys}\n\n[eval]\nevery = 20\n"
    );
    small_pipeline(dir, name, &extra)
}

/// The named tensors of a run's newest checkpoint, sorted by name.
pub fn final_parameters(run_dir: &Path) -> Vec<(String, tch::Tensor)> {
    let (_, path) = taskweave::train::checkpoint::list(&run_dir.join("checkpoints"))
        .pop()
        .expect("a checkpoint");
    let mut tensors = taskweave::train::checkpoint::read(&path).unwrap().tensors;
    tensors.sort_by(|a, b| a.0.cmp(&b.0));
    tensors
}

/// The median of `samples` (the mean of the middle two for an even count),
/// as the benchmarks report it.
pub fn median(samples: &[f64]) -> f64 {
    let mut v = samples.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    match n % 2 {
        1 => v[n / 2],
        _ => 0.5 * (v[n / 2 - 1] + v[n / 2]),
    }
}

/// A process's output bytes as text.
pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Checks that the newest checkpoints of two runs hold bitwise the same
/// tensors; `what` names the second run in the failure.
pub fn assert_same_final_parameters(a: &Path, b: &Path, what: &str) {
    let (a, b) = (final_parameters(a), final_parameters(b));
    assert_eq!(a.len(), b.len());
    for ((name, x), (other, y)) in a.iter().zip(&b) {
        assert!(name == other && x.equal(y), "`{name}` differs {what}");
    }
}

/// A run's `metrics.jsonl` rows without their wall times and memory
/// statistics (which no two processes share, and a resume rewrites).
pub fn metrics_rows(run: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|line| {
            let mut row: serde_json::Value = serde_json::from_str(line).unwrap();
            let fields = row.as_object_mut().unwrap();
            fields.remove("wall_time_s");
            fields.remove("memory");
            row
        })
        .collect()
}

/// Checks that two runs wrote the same `metrics.jsonl` rows, all but their
/// wall times and memory statistics (which no two processes share); `what`
/// names the second run in the failure.
pub fn assert_same_metrics(a: &Path, b: &Path, what: &str) {
    let (a, b) = (metrics_rows(a), metrics_rows(b));
    assert_eq!(a.len(), b.len(), "metrics.jsonl rows {what}");
    for (x, y) in a.iter().zip(&b) {
        assert_eq!(x, y, "metrics.jsonl row at step {} {what}", x["step"]);
    }
}

/// Copies a finished run, deletes its newest checkpoint, resumes the copy and
/// checks that it ends bitwise where the original did, its metrics rows too.
pub fn assert_resume_is_exact(original: &Path, copy: &Path) {
    let status = std::process::Command::new("cp")
        .arg("-r")
        .arg(original)
        .arg(copy)
        .status()
        .unwrap();
    assert!(status.success());
    let (_, newest) = taskweave::train::checkpoint::list(&copy.join("checkpoints"))
        .pop()
        .unwrap();
    std::fs::remove_file(&newest).unwrap();
    let rt = taskweave::Runtime::new(&taskweave::Config::new());
    let resumed = taskweave::Run::open(&rt, copy)
        .unwrap()
        .train(true)
        .unwrap();
    assert_same_final_parameters(original, copy, "after resume");
    assert_same_metrics(original, copy, "after resume");
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(original.join("summary.json")).unwrap())
            .unwrap();
    assert_eq!(summary["selected_step"], resumed.selected_step);
    // Both sides through JSON text: serde_json's default float parsing may
    // land one ulp off, so a parsed file is compared with a parsed file.
    let resumed_text = serde_json::to_string(&resumed_test(&resumed)).unwrap();
    let resumed: serde_json::Value = serde_json::from_str(&resumed_text).unwrap();
    assert_eq!(summary["test"], resumed);
}

fn resumed_test(summary: &taskweave::run::Summary) -> serde_json::Map<String, serde_json::Value> {
    summary
        .tasks
        .iter()
        .zip(&summary.test)
        .map(|(t, m)| (t.name.clone(), serde_json::to_value(m).unwrap()))
        .collect()
}

/// The largest difference between two runs' model parameters, relative to
/// each tensor's largest value.
pub fn max_relative_difference(a: &Path, b: &Path) -> f64 {
    let model = |n: &str| {
        ["backbone.", "architecture.", "heads."]
            .iter()
            .any(|p| n.starts_with(p))
    };
    let (a, b) = (final_parameters(a), final_parameters(b));
    assert_eq!(a.len(), b.len());
    let mut worst = 0.0f64;
    let mut compared = 0;
    for ((name, x), (other, y)) in a.iter().zip(&b) {
        assert_eq!(name, other);
        if model(name) {
            let scale = x.abs().max().double_value(&[]).max(1e-12);
            worst = worst.max((x - y).abs().max().double_value(&[]) / scale);
            compared += 1;
        }
    }
    assert!(compared >= 4, "only {compared} model tensors compared");
    worst
}
