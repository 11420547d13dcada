//! Plugins across the ABI: loading from directories with bad files, versions,
//! out-of-workspace builds, panics and errors inside plugins, duplicates.

use std::path::Path;

use taskweave::{Config, Error, Pipeline, Run, Runtime};
use taskweave_tests::*;

fn copy_into(dir: &Path, so: &Path, name: &str) {
    std::fs::copy(so, dir.join(name)).unwrap();
}

fn runtime(dir: &Path) -> Runtime {
    let mut config = Config::new();
    config.plugin_dir(dir);
    Runtime::new(&config)
}

#[test]
fn a_plugin_crate_given_as_a_plugin_directory_says_to_build_it() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (code, _, err) = run_cli(
        d,
        &[
            "plugin",
            "new",
            "mine",
            "--role",
            "weighting",
            "--dir",
            "mine",
        ],
    );
    assert_eq!(code, 0, "{err}");
    let (code, out, err) = run_cli(d, &["plugins", "list", "--dir", "mine"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("a plugin crate, not built: `taskweave plugin build mine`"),
        "{out}"
    );
}

#[test]
fn a_damaged_plugin_that_crashes_the_loader_is_named_with_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // Full size, so the ELF headers check out, but the second half zeroed
    // (a preallocated copy that never finished): dlopen faults relocating it.
    let mut bytes = std::fs::read(workspace_plugin("taskweave-rlw")).unwrap();
    let half = bytes.len() / 2;
    bytes[half..].fill(0);
    std::fs::write(d.join("libdamaged.so"), bytes).unwrap();
    let (code, out, err) = run_cli(d, &["plugins", "list", "--dir", "."]);
    assert_eq!(code, 2, "{out}{err}");
    assert!(
        err.contains("libdamaged.so: the process crashed loading this plugin")
            && err.contains("move it out of the plugin directory"),
        "{err}"
    );
}

#[test]
fn every_bad_file_is_reported_with_a_reason_and_good_plugins_still_load() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    copy_into(d, &workspace_plugin("taskweave-rlw"), "librlw.so");
    std::fs::write(d.join("empty.so"), b"").unwrap();
    let noise: Vec<u8> = (0..4096u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    std::fs::write(d.join("noise.so"), noise).unwrap();
    foreign_library(d);
    let old_api = patched_plugin_api(
        "api-old-abi",
        "0.1.0",
        taskweave_plugin_api::LIBTORCH_VERSION,
    );
    copy_into(d, &template_plugin("si-old-abi", &old_api), "libold_abi.so");
    let other_torch = patched_plugin_api(
        "api-other-torch",
        taskweave_plugin_api::ABI_VERSION,
        "2.10.0",
    );
    copy_into(
        d,
        &template_plugin("si-other-torch", &other_torch),
        "libother_torch.so",
    );
    std::fs::write(d.join("README.txt"), "not a plugin, not a .so: ignored").unwrap();

    let rt = runtime(d);
    let registry = rt.registry();
    assert!(
        registry
            .entries()
            .any(|e| e.manifest.name.as_str() == "rlw"),
        "the good plugin loads"
    );
    assert!(
        registry.entries().any(|e| e.manifest.name.as_str() == "ew"),
        "built-ins are there too"
    );
    let reason = |file: &str| {
        registry
            .problems()
            .iter()
            .find(|p| p.path.file_name().unwrap() == file)
            .unwrap_or_else(|| panic!("no problem reported for {file}: {:?}", registry.problems()))
            .reason
            .clone()
    };
    assert!(
        reason("empty.so").contains("not a shared library"),
        "{}",
        reason("empty.so")
    );
    assert!(
        reason("noise.so").contains("not a shared library"),
        "{}",
        reason("noise.so")
    );
    assert!(
        reason("libforeign.so").contains("not a taskweave plugin"),
        "{}",
        reason("libforeign.so")
    );
    let old = reason("libold_abi.so");
    assert!(
        old.contains("built for plugin ABI 0.1.0, this runtime is plugin ABI 0.5.0")
            && old.contains("rebuild"),
        "{old}"
    );
    let torch = reason("libother_torch.so");
    assert!(
        torch.contains("libtorch 2.10.0") && torch.contains("libtorch 2.11.0"),
        "{torch}"
    );
    assert_eq!(registry.problems().len(), 5, "{:?}", registry.problems());
    for p in registry.problems() {
        assert!(
            !p.reason.contains('\n'),
            "one line per problem: {:?}",
            p.reason
        );
    }

    // The CLI lists the same, exits 0, in human and JSON form.
    let (code, out, err) = run_cli(d, &["plugins", "list", "--dir", "."]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("rlw") && out.contains("librlw.so") && out.contains("plugin ABI"),
        "{out}"
    );
    assert!(out.contains("empty.so: not a shared library"), "{out}");
    let (code, out, _) = run_cli(d, &["plugins", "list", "--dir", ".", "--json"]);
    assert_eq!(code, 0);
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(json["problems"].as_array().unwrap().len(), 5);
    assert_eq!(json["plugin_abi"], taskweave_plugin_api::ABI_VERSION);
    let rlw = json["methods"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "rlw")
        .unwrap();
    assert_eq!(rlw["role"], "Weighting");
    assert!(rlw["source"].as_str().unwrap().ends_with("librlw.so"));
}

#[test]
fn a_plugin_built_outside_the_workspace_runs_by_name_in_a_pipeline() {
    let dir = tempfile::tempdir().unwrap();
    let plugins = dir.path().join("plugins");
    std::fs::create_dir(&plugins).unwrap();
    copy_into(
        &plugins,
        &template_plugin("taskweave-si", &workspace().join("plugin-api")),
        "libtaskweave_si.so",
    );
    let pipeline = small_pipeline(
        dir.path(),
        "si",
        "[plugins]\ndirs = [\"plugins\"]\n\n[train]\nsteps = 30\nweighting = { kind = \"si\" }\n",
    );
    let (code, out, err) = run_cli(dir.path(), &["run", pipeline.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("task1") && out.contains("mse"), "{out}");
    let config = std::fs::read_to_string(dir.path().join("runs/si/config.toml")).unwrap();
    assert!(
        config.contains("weighting = { kind = \"si\", epsilon = "),
        "defaults from the plugin's schema: {config}"
    );
}

fn panicky_pipeline(dir: &Path, mode: &str) -> String {
    std::fs::create_dir_all(dir.join("plugins")).unwrap();
    copy_into(
        &dir.join("plugins"),
        &fixture_plugin("panicky"),
        "libfixture_panicky.so",
    );
    let extra = format!(
        "[plugins]\ndirs = [\"plugins\"]\n\n[train]\nsteps = 20\nweighting = {{ kind = \"panicky\", fail_at = 3, mode = \"{mode}\" }}\n"
    );
    std::fs::read_to_string(small_pipeline(dir, mode, &extra)).unwrap()
}

#[test]
fn a_panic_inside_a_plugin_is_an_error_naming_plugin_and_method_and_the_host_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let text = panicky_pipeline(dir.path(), "panic");
    let rt = Runtime::new(&Config::new());
    let pipeline = Pipeline::from_str(&rt, &text, dir.path(), &[]).unwrap();
    let err = Run::start(pipeline, false)
        .and_then(|run| run.train(true))
        .unwrap_err();
    let message = err.to_string();
    assert!(matches!(err, Error::Method(_)), "{err:?}");
    for needle in [
        "step 3",
        "method `panicky`",
        "libfixture_panicky.so",
        "Weighting::weigh panicked at",
        "src/lib.rs",
        "panicky gave up at step 3",
    ] {
        assert!(
            message.contains(needle),
            "`{needle}` missing from: {message}"
        );
    }
    // The same process trains another pipeline afterwards.
    let good = Pipeline::from_str(
        &rt,
        &text,
        dir.path(),
        &["train.weighting=ew".into(), "run.name=good".into()],
    )
    .unwrap();
    let summary = Run::start(good, false).unwrap().train(true).unwrap();
    assert_eq!(summary.steps, 20);
}

#[test]
fn a_panic_in_an_infallible_call_or_a_result_against_the_contract_is_an_error_naming_the_method() {
    let dir = tempfile::tempdir().unwrap();
    for (mode, needles) in [
        // `kind` returns no Result: read once under the guard of `create`.
        (
            "kind-panic",
            &[
                "method `panicky`",
                "create panicked at",
                "panicky has no kind",
            ][..],
        ),
        (
            "short-weights",
            &[
                "step 3",
                "method `panicky`",
                "weights as a Float tensor of shape [1]",
                "([2])",
            ][..],
        ),
    ] {
        let text = panicky_pipeline(dir.path(), mode);
        let path = dir.path().join(format!("{mode}.toml"));
        std::fs::write(&path, text).unwrap();
        let (code, _, err) = run_cli(dir.path(), &["-q", "run", path.to_str().unwrap()]);
        assert_eq!(code, 1, "{mode}: {err}");
        for needle in needles {
            assert!(
                err.contains(needle),
                "{mode}: `{needle}` missing from: {err}"
            );
        }
    }
}

#[test]
fn a_libtorch_error_inside_a_plugin_is_an_error_value_and_the_cli_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    let text = panicky_pipeline(dir.path(), "error");
    let path = dir.path().join("error.toml");
    std::fs::write(&path, text).unwrap();
    let (code, _, err) = run_cli(dir.path(), &["run", path.to_str().unwrap()]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("method `panicky`")
            && err.contains("Weighting::weigh")
            && err.contains("libtorch: ")
            && !err.contains("frame #"),
        "{err}"
    );
    assert!(
        err.contains("panicky weighting created"),
        "plugin log lines reach the host's log: {err}"
    );
}

#[test]
fn a_method_name_provided_twice_is_refused_naming_both_sources() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    std::fs::create_dir_all(&a).unwrap();
    std::fs::create_dir_all(&b).unwrap();
    copy_into(&a, &workspace_plugin("taskweave-rlw"), "librlw.so");
    copy_into(&b, &workspace_plugin("taskweave-rlw"), "librlw_copy.so");
    let mut config = Config::new();
    config.plugin_dir(&a).plugin_dir(&b);
    let rt = Runtime::new(&config);
    let (name, origins) = rt.registry().conflicts().next().expect("a conflict");
    assert_eq!(name, "rlw");
    assert_eq!(origins.len(), 2);
    let text = std::fs::read_to_string(small_pipeline(
        dir.path(),
        "dup",
        "[train]\nsteps = 5\nweighting = \"rlw\"\n",
    ))
    .unwrap();
    let err = Pipeline::from_str(&rt, &text, dir.path(), &[])
        .expect_err("refused")
        .to_string();
    assert!(
        err.contains("librlw.so")
            && err.contains("librlw_copy.so")
            && err.contains("remove all but one"),
        "{err}"
    );
}

#[test]
fn registrations_against_the_rules_are_listed_as_problems_and_the_rest_loads() {
    let dir = tempfile::tempdir().unwrap();
    let plugins = dir.path().join("plugins");
    std::fs::create_dir(&plugins).unwrap();
    copy_into(&plugins, &fixture_plugin("oddities"), "liboddities.so");
    let mut config = Config::new();
    config.plugin_dir(&plugins);
    let rt = Runtime::new(&config);
    let reasons: Vec<String> = rt
        .registry()
        .problems()
        .iter()
        .map(|p| format!("{}: {}", p.path.display(), p.reason))
        .collect();
    for needle in [
        "registers the method `oddity` twice",
        "`Bad Name!` is not a method name",
        "method `keyed` has an invalid schema: `kind` cannot be one of its keys",
        "method `scalar` has an invalid schema: its config must be a table",
    ] {
        assert!(
            reasons
                .iter()
                .any(|r| r.contains("liboddities.so") && r.contains(needle)),
            "`{needle}` not among {reasons:?}"
        );
    }
    let usable: Vec<&str> = rt
        .registry()
        .entries()
        .filter(|e| e.origin != taskweave::registry::Origin::Builtin)
        .map(|e| e.manifest.name.as_str())
        .collect();
    assert_eq!(usable, ["oddity"]);
}

#[test]
fn a_resume_warns_when_a_plugin_the_run_uses_changed_since_it_started() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let plugins = d.join("plugins");
    std::fs::create_dir(&plugins).unwrap();
    copy_into(&plugins, &workspace_plugin("taskweave-rlw"), "librlw.so");
    let path = small_pipeline(
        d,
        "changed",
        "[plugins]\ndirs = [\"plugins\"]\n\n[train]\nsteps = 10\nweighting = \"rlw\"\n",
    );
    assert_eq!(run_cli(d, &["-q", "run", path.to_str().unwrap()]).0, 0);
    let run = d.join("runs/changed");
    let info: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("run.json")).unwrap()).unwrap();
    assert!(info["plugins"]["rlw"]["version"].is_string(), "{info}");
    let resume = || run_cli(d, &["-q", "resume", run.to_str().unwrap()]);
    let (code, _, err) = resume();
    assert!(code == 0 && !err.contains("method `rlw` is now"), "{err}");
    // The same version, other bytes: as a rebuild with other code.
    let mut bytes = std::fs::read(plugins.join("librlw.so")).unwrap();
    bytes.push(0);
    std::fs::write(plugins.join("librlw.so"), bytes).unwrap();
    let (code, _, err) = resume();
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("method `rlw` is now a rebuilt"), "{err}");
}

#[test]
fn plugins_that_other_users_could_have_written_are_refused_unless_allowed() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let plugins = dir.path().join("plugins");
    std::fs::create_dir(&plugins).unwrap();
    copy_into(&plugins, &workspace_plugin("taskweave-rlw"), "librlw.so");
    let chmod = |p: &Path, mode| {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap()
    };
    chmod(&plugins, 0o777);
    let p = plugins.to_str().unwrap();
    let (code, out, err) = run_cli(dir.path(), &["plugins", "list", "--dir", p]);
    assert_eq!(code, 0, "{err}");
    let line = out
        .lines()
        .find(|l| l.contains("librlw.so"))
        .unwrap_or_default();
    assert!(
        line.contains("refused")
            && line.contains("writable by every user")
            && line.contains("--allow-insecure-plugins"),
        "{out}"
    );
    let (_, out, _) = run_cli(
        dir.path(),
        &["--allow-insecure-plugins", "plugins", "list", "--dir", p],
    );
    assert!(out.lines().any(|l| l.starts_with("rlw ")), "{out}");
    chmod(&plugins, 0o755);
    chmod(&plugins.join("librlw.so"), 0o666);
    let (_, out, _) = run_cli(dir.path(), &["plugins", "list", "--dir", p]);
    assert!(out.contains("the file") && out.contains("refused"), "{out}");
    chmod(&plugins.join("librlw.so"), 0o644);
    let (_, out, _) = run_cli(dir.path(), &["plugins", "list", "--dir", p]);
    assert!(out.lines().any(|l| l.starts_with("rlw ")), "{out}");
}

#[test]
fn a_strategy_plugin_trains_by_task_batches_inner_steps_and_flat_parameters_and_resumes_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::create_dir_all(d.join("plugins")).unwrap();
    copy_into(
        &d.join("plugins"),
        &fixture_plugin("reptile"),
        "libfixture_reptile.so",
    );
    let extra = "[plugins]\ndirs = [\"plugins\"]\n\n[train]\nsteps = 100\n\
                 strategy = { kind = \"reptile\", inner = 3, lr = 0.2, meta_lr = 1.0 }\n\
                 [eval]\nevery = 10\nselect = \"last\"\n";
    let text = std::fs::read_to_string(small_pipeline(d, "reptile", extra)).unwrap();
    let rt = Runtime::new(&Config::new());
    let pipeline = Pipeline::from_str(&rt, &text, d, &[]).unwrap();
    let summary = Run::start(pipeline, true).unwrap().train(true).unwrap();
    let history: Vec<serde_json::Value> =
        std::fs::read_to_string(d.join("runs/reptile/metrics.jsonl"))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
    let first = history[0]["tasks"]["task1"]["mse"].as_f64().unwrap();
    let last = summary.val[0]["mse"];
    assert!(
        last < 0.8 * first,
        "Reptile steps learn: val mse {first} -> {last}"
    );
    assert_resume_is_exact(&d.join("runs/reptile"), &d.join("runs/reptile-copy"));
}

#[test]
fn meta_rtl_inner_loops_side_by_side_compute_what_the_loops_in_turn_do() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    install_plugin(d, "taskweave-meta-rtl");
    let extra = "[plugins]\ndirs = [\"plugins\"]\n\n[train]\nsteps = 12\n\
                 strategy = { kind = \"meta-rtl\", target = \"task4\", inner_steps = 3, inner_lr = 0.05 }\n\
                 [eval]\nevery = 12\n";
    let text = std::fs::read_to_string(small_pipeline(d, "meta", extra)).unwrap();
    std::fs::write(d.join("meta.toml"), text.replace("tasks = 2", "tasks = 4")).unwrap();
    let run = |threads: &str, name: &str| {
        let (threads, name) = (format!("run.threads={threads}"), format!("run.name={name}"));
        let (code, _, err) = run_cli(d, &["run", "meta.toml", "--set", &threads, "--set", &name]);
        assert_eq!(code, 0, "{err}");
        err
    };
    // Three sources on two threads: the live model and one copy; the first
    // step runs in turn (the copy is built before the second).
    let side_by_side = run("2", "side-by-side");
    assert!(
        side_by_side.contains("inner loops side by side on 2 threads"),
        "{side_by_side}"
    );
    let in_turn = run("1", "in-turn");
    assert!(!in_turn.contains("side by side"), "{in_turn}");
    let (a, b) = (
        final_parameters(&d.join("runs/side-by-side")),
        final_parameters(&d.join("runs/in-turn")),
    );
    assert_eq!(a.len(), b.len());
    for ((name, x), (_, y)) in a.iter().zip(&b) {
        let scale = y.abs().max().double_value(&[]).max(1e-3);
        let diff = (x - y).abs().max().double_value(&[]);
        assert!(diff <= 1e-4 * scale, "{name}: {diff} apart (scale {scale})");
    }
}

#[test]
fn meta_rtl_refuses_a_target_other_than_the_low_resource_one() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    install_plugin(d, "taskweave-meta-rtl");
    // `validate` only asks that QM9's files exist.
    std::fs::create_dir(d.join("qm9")).unwrap();
    for part in 1..=3 {
        std::fs::write(d.join(format!("qm9/qm9_part{part}.csv")), "").unwrap();
    }
    let path = d.join("meta.toml");
    std::fs::write(
        &path,
        "[plugins]\ndirs = [\"plugins\"]\n\n[data]\nkind = \"qm9\"\ndir = \"qm9\"\n\
         targets = [\"homo\", \"lumo\", \"gap\"]\natom_reference = false\n\
         low_resource = { target = \"gap\", labelled = 16 }\n\n[train]\nsteps = 5\n\
         strategy = { kind = \"meta-rtl\", target = \"gap\" }\n",
    )
    .unwrap();
    let file = path.to_str().unwrap();
    let (code, out, err) = run_cli(d, &["validate", file]);
    assert_eq!(code, 0, "{out}{err}");
    let (code, _, err) = run_cli(
        d,
        &[
            "validate",
            file,
            "--set",
            "data.low_resource.target=\"homo\"",
        ],
    );
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("train.strategy.target = \"gap\", but data.low_resource.target = \"homo\"")
            && err.contains(&format!("--> {file}:13:42")),
        "{err}"
    );
}

#[test]
fn meta_rtl_trains_through_the_runtime_logs_source_weights_and_resumes_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    install_plugin(d, "taskweave-meta-rtl");
    let extra = "[plugins]\ndirs = [\"plugins\"]\n\n[train]\nsteps = 40\n\
                 strategy = { kind = \"meta-rtl\", inner_steps = 2, inner_lr = 0.05 }\n\
                 [eval]\nevery = 10\nselect = \"last\"\n";
    let text = std::fs::read_to_string(small_pipeline(d, "meta", extra)).unwrap();
    // Two threads: the sources' inner loops side by side, and the resumed
    // run's first step (in turn: the model copy comes before the next)
    // is one the original ran side by side.
    let text = text
        .replace("tasks = 2", "tasks = 3")
        .replace("device = \"cpu\"", "device = \"cpu\"\nthreads = 2");
    let rt = Runtime::new(&Config::new());
    // No task order makes a safe default target: the key is required.
    let missing = Pipeline::from_str(&rt, &text, d, &[])
        .err()
        .unwrap()
        .to_string();
    assert!(missing.contains("target"), "{missing}");
    let text = text.replace(
        "kind = \"meta-rtl\",",
        "kind = \"meta-rtl\", target = \"task3\",",
    );
    let pipeline = Pipeline::from_str(&rt, &text, d, &[]).unwrap();
    Run::start(pipeline, true).unwrap().train(true).unwrap();
    let last: serde_json::Value = std::fs::read_to_string(d.join("runs/meta/metrics.jsonl"))
        .unwrap()
        .lines()
        .rev()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|r| r["weights"].is_object())
        .unwrap();
    let w = &last["weights"];
    let (a, b) = (w["task1"].as_f64().unwrap(), w["task2"].as_f64().unwrap());
    assert!(
        (a + b - 1.0).abs() < 1e-5 && w["task3"].as_f64() == Some(0.0),
        "{w}"
    );
    assert_resume_is_exact(&d.join("runs/meta"), &d.join("runs/meta-copy"));
    // Meta-RTL weights its sources itself: a weighting set beside it is said to do nothing.
    std::fs::write(d.join("meta.toml"), &text).unwrap();
    let sets = ["train.steps=2", "run.name=meta-uw", "train.weighting=uw"];
    let mut args = vec!["-q", "run", "meta.toml"];
    for set in &sets {
        args.extend(["--set", set]);
    }
    let (code, _, err) = run_cli(d, &args);
    assert_eq!(code, 0, "{err}");
    let said =
        "train.strategy `meta-rtl` does not use train.weighting (`uw`): that setting has no effect";
    assert!(err.contains(said), "{err}");
    args.truncate(args.len() - 2);
    args[6] = "run.name=meta-ew";
    let (code, _, err) = run_cli(d, &args);
    assert!(
        code == 0 && !err.contains("does not use train.weighting"),
        "{err}"
    );
}
