//! Plugin authoring in two commands: `taskweave plugin new` writes a crate
//! that builds, tests and runs as written, for every role, and `taskweave
//! plugin build` installs it where pipelines find it.

use std::process::Command;

use taskweave_tests::*;

#[test]
fn plugin_new_then_plugin_build_gives_methods_that_pipelines_use() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let target = release_dir().parent().unwrap().to_path_buf();
    let target = target.to_str().unwrap();
    for (name, role) in [
        ("scaled-ew", "weighting"),
        ("plain-step", "strategy"),
        ("per-task-linear", "architecture"),
        ("steered", "fusion"),
        ("intervals", "grouping"),
    ] {
        let (code, out, err) = run_cli(d, &["plugin", "new", name, "--role", role]);
        assert_eq!(code, 0, "{err}");
        assert!(out.contains(&format!("wrote {name}")), "{out}");
        // The crate's own tests pass with plain cargo (its .cargo/config.toml names libtorch).
        let test = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .args(["test", "--release", "--quiet", "--target-dir", target])
            .current_dir(d.join(name))
            .output()
            .unwrap();
        assert!(
            test.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&test.stderr)
        );
        let (code, out, err) = run_cli(
            d,
            &[
                "plugin",
                "build",
                name,
                "--into",
                "plugins",
                "--target-dir",
                target,
            ],
        );
        assert_eq!(code, 0, "{err}");
        assert!(out.contains(&format!("{name} (")), "{out}");
    }
    let (_, listed, _) = run_cli(d, &["plugins", "list"]);
    for (name, role) in [
        ("scaled-ew", "Weighting"),
        ("per-task-linear", "Architecture"),
        ("intervals", "Grouping"),
    ] {
        let line = listed
            .lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_default();
        assert!(line.contains(role), "{listed}");
    }
    let pipeline = small_pipeline(
        d,
        "authored",
        "[plugins]\ndirs = [\"plugins\"]\n\
         [train]\nsteps = 20\nstrategy = \"plain-step\"\nweighting = { kind = \"scaled-ew\", scale = 0.5 }\n",
    );
    let arch = "model.architecture={kind=\"per-task-linear\", width=8}";
    let (code, out, err) = run_cli(d, &["-q", "run", pipeline.to_str().unwrap(), "--set", arch]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("task1"), "{out}");

    let (code, _, err) = run_cli(d, &["plugin", "new", "scaled-ew", "--role", "weighting"]);
    assert_eq!(code, 2);
    assert!(err.contains("already exists"), "{err}");
    let (code, _, err) = run_cli(d, &["plugin", "new", "proxy", "--role", "fusion"]);
    assert_eq!(code, 2);
    assert!(
        err.contains("`proxy` is already a built-in Fusion"),
        "{err}"
    );
    let (code, _, err) = run_cli(d, &["plugin", "new", "Bad_Name", "--role", "weighting"]);
    assert_eq!(code, 2);
    assert!(err.contains("is not a method name"), "{err}");
    let (code, _, err) = run_cli(d, &["plugin", "build", "nowhere"]);
    assert_eq!(code, 2);
    assert!(err.contains("nowhere is not a crate"), "{err}");
}
