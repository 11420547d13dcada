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
        assert!(out.contains(&format!("{name} 0.1.0 (")), "{out}");
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
    // The strategy template runs the pipeline's weighting.
    assert!(!err.contains("does not use train.weighting"), "{err}");

    let (code, _, err) = run_cli(
        d,
        &[
            "plugin",
            "new",
            "fresh",
            "--role",
            "weighting",
            "--dir",
            "scaled-ew",
        ],
    );
    assert_eq!(code, 2);
    assert!(err.contains("already exists"), "{err}");
    let (code, _, err) = run_cli(d, &["plugin", "new", "proxy", "--role", "fusion"]);
    assert_eq!(code, 2);
    assert!(
        err.contains("`proxy` is already a built-in Fusion"),
        "{err}"
    );
    // A plugin's name is taken too: ./plugins now provides scaled-ew.
    let (code, _, err) = run_cli(
        d,
        &[
            "plugin",
            "new",
            "scaled-ew",
            "--role",
            "weighting",
            "--dir",
            "again",
        ],
    );
    assert_eq!(code, 2);
    assert!(err.contains("is already provided by"), "{err}");
    let build = |crate_dir: &str, extra: &[&str]| {
        let mut args = vec![
            "plugin",
            "build",
            crate_dir,
            "--into",
            "plugins",
            "--target-dir",
            target,
        ];
        args.extend(extra);
        run_cli(d, &args)
    };
    // Another crate providing the same method name would make both unusable.
    let manifest = std::fs::read_to_string(d.join("scaled-ew/Cargo.toml")).unwrap();
    std::fs::create_dir_all(d.join("copy/src")).unwrap();
    for file in ["src/lib.rs", "build.rs", "Cargo.lock"] {
        std::fs::copy(d.join("scaled-ew").join(file), d.join("copy").join(file)).unwrap();
    }
    let copy = manifest.replace(
        "name = \"taskweave-scaled-ew\"",
        "name = \"taskweave-copy\"",
    );
    assert_ne!(copy, manifest);
    std::fs::write(d.join("copy/Cargo.toml"), copy).unwrap();
    std::fs::create_dir_all(d.join("copy/.cargo")).unwrap();
    std::fs::copy(
        d.join("scaled-ew/.cargo/config.toml"),
        d.join("copy/.cargo/config.toml"),
    )
    .unwrap();
    let (code, _, err) = build("copy", &[]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("`scaled-ew` is already provided by"), "{err}");
    // Another version of the installed file's method replaces it only when asked.
    let bumped = manifest.replacen("version = \"0.1.0\"", "version = \"0.2.0\"", 1);
    assert_ne!(bumped, manifest);
    std::fs::write(d.join("scaled-ew/Cargo.toml"), bumped).unwrap();
    let (code, _, err) = build("scaled-ew", &[]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("scaled-ew 0.1.0 (Weighting)") && err.contains("--replace"),
        "{err}"
    );
    let (code, out, err) = build("scaled-ew", &["--replace"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("scaled-ew 0.2.0 (Weighting)"), "{out}");
    // A manifest without a [lib] table is refused, not a crash.
    std::fs::create_dir_all(d.join("plain")).unwrap();
    std::fs::write(
        d.join("plain/Cargo.toml"),
        "[package]\nname = \"plain\"\nversion = \"0.1.0\"\nlib = 3\n",
    )
    .unwrap();
    let (code, _, err) = build("plain", &[]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("a plugin crate builds a cdylib"), "{err}");
    // A name the template's code uses (its `Host` import) still compiles.
    let (code, _, err) = run_cli(d, &["plugin", "new", "host", "--role", "weighting"]);
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = build("host", &[]);
    assert_eq!(code, 0, "{err}");
    // Paths that cannot hold the crate or the plugin are bad input, said before compiling.
    std::fs::write(d.join("afile"), "").unwrap();
    let (code, _, err) = run_cli(
        d,
        &[
            "plugin",
            "new",
            "x",
            "--role",
            "weighting",
            "--dir",
            "afile/x",
        ],
    );
    assert!(
        code == 2 && err.contains("pick another --dir"),
        "{code}: {err}"
    );
    let (code, _, err) = run_cli(d, &["plugin", "build", "host", "--into", "afile"]);
    assert!(
        code == 2 && err.contains("--into afile: cannot make"),
        "{code}: {err}"
    );
    let (code, _, err) = run_cli(d, &["plugin", "new", "Bad_Name", "--role", "weighting"]);
    assert_eq!(code, 2);
    assert!(err.contains("is not a method name"), "{err}");
    let (code, _, err) = run_cli(d, &["plugin", "build", "nowhere"]);
    assert_eq!(code, 2);
    assert!(err.contains("nowhere is not a crate"), "{err}");
}
