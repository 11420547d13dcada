//! `taskweave plugin new` and `taskweave plugin build`: writing a plugin crate
//! and building it against this runtime's libtorch, without reading the build
//! system. The crate depends on the `taskweave-plugin-api` this taskweave was
//! built from, pins the crate versions of this taskweave's own build (its
//! `Cargo.lock`), and names the libtorch to build against in its
//! `.cargo/config.toml`, so that plain `cargo build` and `cargo test` work in it
//! too.

use std::io::Write;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use taskweave::registry::Origin;
use taskweave::Error;
use taskweave_plugin_api::io_reason;

use super::Env;
use crate::args::{BuildArgs, NewArgs, RoleArg};
use crate::output::Failure;

/// The templates of a new plugin crate; `__METHOD__`, `__TYPE__`, `__CRATE__`,
/// `__ROLE__`, `__ROLE_ARG__`, `__API__` and `__LIBTORCH__` are filled in.
const CARGO_TOML: &str = include_str!("../../../../templates/plugin/Cargo.toml.in");
const CARGO_CONFIG: &str = include_str!("../../../../templates/plugin/config.toml.in");
const README: &str = include_str!("../../../../templates/plugin/README.md.in");
const BUILD_RS: &str = include_str!("../../../../templates/plugin/build.rs.in");
/// The lock file of this taskweave's own build.
const CARGO_LOCK: &str = include_str!("../../../../../Cargo.lock");

fn source_of(role: RoleArg) -> (&'static str, &'static str, &'static str) {
    match role {
        RoleArg::Weighting => (
            "Weighting",
            "weighting",
            include_str!("../../../../templates/plugin/weighting.rs"),
        ),
        RoleArg::Strategy => (
            "Strategy",
            "strategy",
            include_str!("../../../../templates/plugin/strategy.rs"),
        ),
        RoleArg::Architecture => (
            "Architecture",
            "architecture",
            include_str!("../../../../templates/plugin/architecture.rs"),
        ),
        RoleArg::Fusion => (
            "Fusion",
            "fusion",
            include_str!("../../../../templates/plugin/fusion.rs"),
        ),
        RoleArg::Grouping => (
            "Grouping",
            "grouping",
            include_str!("../../../../templates/plugin/grouping.rs"),
        ),
    }
}

/// The plugin-api crate a new plugin depends on.
fn plugin_api(given: Option<&Path>) -> Result<PathBuf, Error> {
    let path = given.map_or_else(
        || PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../plugin-api")),
        Path::to_path_buf,
    );
    let manifest = std::fs::read_to_string(path.join("Cargo.toml")).unwrap_or_default();
    if !manifest.contains("name = \"taskweave-plugin-api\"") {
        return Err(Error::Input(format!(
            "{} is not the taskweave-plugin-api crate; pass --api PATH to it (the plugin-api/ \
             folder of a taskweave checkout)",
            path.display()
        )));
    }
    path.canonicalize().map_err(|e| Error::io(&path, e))
}

/// The libtorch (its root, holding `lib/` and `include/`) plugins must be
/// built against: the one this taskweave was built with, or, where that is
/// gone, the one it runs with.
fn libtorch_root() -> Result<PathBuf, Error> {
    let built = option_env!("TASKWEAVE_LIBTORCH_LIB").map(PathBuf::from);
    let loaded = taskweave_kernels::loaded_libtorch()
        .ok()
        .map(|(dir, _)| dir);
    built
        .into_iter()
        .chain(loaded)
        .filter(|lib| lib.join("libtorch_cpu.so").exists())
        .find_map(|lib| lib.parent().map(Path::to_path_buf))
        .ok_or_else(|| Error::Input("cannot find the libtorch this taskweave uses".into()))
}

/// The method's type in the template `source`: `scaled-ew` → `ScaledEw`, or
/// with the role appended (`HostWeighting`) where that name is a keyword or
/// one the template already uses (`Host`, `Result`, `Weighting`).
fn type_name(method: &str, role: &str, source: &str) -> String {
    let name: String = method
        .split('-')
        .map(|part| {
            let mut chars = part.chars();
            chars.next().map_or_else(String::new, |c| {
                c.to_ascii_uppercase().to_string() + chars.as_str()
            })
        })
        .collect();
    let used = |name: &str| {
        source
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .any(|word| word == name)
    };
    match name == "Self" || used(&name) {
        true => format!("{name}{role}"),
        false => name,
    }
}

pub fn new(env: &Env, args: &NewArgs, out: &mut dyn Write) -> Result<(), Failure> {
    let name = &args.name;
    taskweave::registry::check_method_name(name).map_err(Error::Input)?;
    // Two sources of one name make it unusable, so the name of a built-in
    // or of a plugin on the search path would only give a plugin nobody can use.
    let runtime = env.runtime(&super::dirs_or_default(Vec::new()));
    if let Some(taken) = runtime
        .registry()
        .entries()
        .find(|e| e.manifest.name.as_str() == name.as_str())
    {
        let whose = match &taken.origin {
            Origin::Builtin => "a built-in".to_string(),
            Origin::Plugin(path) => format!("provided by {}: a", path.display()),
        };
        return Err(Error::Input(format!(
            "`{name}` is already {whose} {}; pick another name",
            taken.manifest.role
        ))
        .into());
    }
    let dir = args.dir.clone().unwrap_or_else(|| PathBuf::from(name));
    if dir.exists() {
        return Err(Error::Input(format!(
            "{} already exists; pick another --dir",
            dir.display()
        ))
        .into());
    }
    let api = plugin_api(args.api.as_deref())?;
    let libtorch = libtorch_root()?;
    let (role, role_arg, source) = source_of(args.role);
    let crate_name = format!("taskweave-{name}");
    let fill = |text: &str| {
        text.replace("__METHOD__", name)
            .replace("__TYPE__", &type_name(name, role, source))
            .replace("__CRATE__", &crate_name)
            .replace("__ROLE__", role)
            .replace("__ROLE_ARG__", role_arg)
            .replace("__API__", &api.display().to_string())
            .replace("__LIBTORCH__", &libtorch.display().to_string())
    };
    let files = [
        ("Cargo.toml", fill(CARGO_TOML)),
        (".cargo/config.toml", fill(CARGO_CONFIG)),
        ("src/lib.rs", fill(source)),
        ("build.rs", BUILD_RS.to_string()),
        ("README.md", fill(README)),
        ("Cargo.lock", CARGO_LOCK.to_string()),
        (".gitignore", "/target\n".to_string()),
    ];
    // --dir is the user's choice: a place that cannot hold the crate is bad input.
    let unwritable = |path: &Path, e: std::io::Error| {
        Error::Input(format!(
            "cannot write {}: {}; pick another --dir",
            path.display(),
            io_reason(&e)
        ))
    };
    for (file, text) in files {
        let path = dir.join(file);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| unwritable(parent, e))?;
        }
        std::fs::write(&path, text).map_err(|e| unwritable(&path, e))?;
    }
    // Built from here, the plugin lands in ./plugins, which pipelines here read.
    writeln!(
        out,
        "wrote {dir} (the {role} `{name}`, against the taskweave-plugin-api in {} and the \
         libtorch in {}); next: (cd {dir} && cargo test) && taskweave plugin build {dir}, which \
         installs it into ./plugins",
        api.display(),
        libtorch.display(),
        dir = dir.display(),
    )?;
    Ok(())
}

/// The name of the library the crate in `dir` builds (`[lib] name`, else
/// its package name with `_` for `-`), which must be a cdylib.
fn library(dir: &Path) -> Result<String, Error> {
    let path = dir.join("Cargo.toml");
    let text = std::fs::read_to_string(&path).map_err(|e| {
        Error::Input(format!(
            "{} is not a crate: cannot read {}: {}",
            dir.display(),
            path.display(),
            io_reason(&e)
        ))
    })?;
    let doc: toml_edit::DocumentMut = text
        .parse()
        .map_err(|e| Error::Input(format!("{}: {e}", path.display())))?;
    let cdylib = doc
        .get("lib")
        .and_then(|lib| lib.get("crate-type"))
        .and_then(toml_edit::Item::as_array)
        .is_some_and(|types| types.iter().any(|t| t.as_str() == Some("cdylib")));
    if !cdylib {
        return Err(Error::Input(format!(
            "{}: a plugin crate builds a cdylib (`[lib] crate-type = [\"cdylib\"]`)",
            path.display()
        )));
    }
    let named = |table: &str| doc.get(table)?.get("name")?.as_str().map(str::to_string);
    named("lib")
        .or_else(|| named("package").map(|name| name.replace('-', "_")))
        .ok_or_else(|| Error::Input(format!("{}: no package name", path.display())))
}

/// Runs cargo and returns the `.so` it built for `library`.
fn cargo_build(args: &BuildArgs, library: &str, libtorch: &Path) -> Result<PathBuf, Error> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(&cargo);
    command
        .args([
            "build",
            "--release",
            "--message-format=json-render-diagnostics",
        ])
        .arg("--manifest-path")
        .arg(args.dir.join("Cargo.toml"))
        .env("LIBTORCH", libtorch)
        .env("LIBTORCH_CXX11_ABI", "1")
        .env_remove("LIBTORCH_USE_PYTORCH")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    if let Some(target) = &args.target_dir {
        command.arg("--target-dir").arg(target);
    }
    let output = command.output().map_err(|e| {
        Error::Input(format!(
            "cannot run {}: {}; plugins are built with Rust's cargo (install it with rustup)",
            cargo.to_string_lossy(),
            io_reason(&e)
        ))
    })?;
    if !output.status.success() {
        return Err(Error::Input(format!(
            "cargo could not build {} (its messages are above)",
            args.dir.display()
        )));
    }
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|m| m["reason"] == "compiler-artifact")
        .filter(|m| m["target"]["name"].as_str() == Some(library))
        .flat_map(|m| m["filenames"].as_array().cloned().unwrap_or_default())
        .filter_map(|f| f.as_str().map(PathBuf::from))
        .find(|f| f.extension().is_some_and(|e| e == "so"))
        .ok_or_else(|| Error::Run(format!("cargo built no .so for the library `{library}`")))
}

/// The methods the plugin file `file` provides in `runtime`: name, role and
/// version each.
fn provided(runtime: &taskweave::Runtime, file: &Path) -> Vec<String> {
    let Ok(file) = file.canonicalize() else {
        return Vec::new();
    };
    runtime
        .registry()
        .entries()
        .filter(|e| e.origin == Origin::Plugin(file.clone()))
        .map(|e| {
            format!(
                "{} {} ({})",
                e.manifest.name, e.manifest.version, e.manifest.role
            )
        })
        .collect()
}

/// Why `runtime` could not load the plugin file `file`, if it could not.
fn load_problem(runtime: &taskweave::Runtime, file: &Path) -> Result<Option<String>, Error> {
    let file = file.canonicalize().map_err(|e| Error::io(file, e))?;
    Ok(runtime
        .registry()
        .problems()
        .iter()
        .find(|p| p.path.canonicalize().ok().as_ref() == Some(&file))
        .map(|p| p.reason.clone()))
}

pub fn build(env: &Env, args: &BuildArgs, out: &mut dyn Write) -> Result<(), Failure> {
    let library = library(&args.dir)?;
    // Before compiling: --into must be a folder we can make, write and load
    // plugins from, and the staging folder made there (0700: the trust
    // check refuses what others could write) proves the writing.
    let cannot = |what: &str, why: String| {
        Error::Input(format!("--into {}: {what}: {why}", args.into.display()))
    };
    std::fs::create_dir_all(&args.into)
        .map_err(|e| cannot("cannot make that plugin folder", io_reason(&e)))?;
    if !env.allow_insecure_plugins {
        taskweave::registry::check_plugin_dir(&args.into)
            .map_err(|why| cannot("plugins there would not load", why))?;
    }
    let staging = args
        .into
        .join(format!(".taskweave-build-{}", std::process::id()));
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&staging)
        .map_err(|e| cannot("cannot write there", io_reason(&e)))?;
    let installed = cargo_build(args, &library, &libtorch_root()?).and_then(|built| {
        let file_name = built
            .file_name()
            .ok_or_else(|| Error::Run(format!("{} has no file name", built.display())))?;
        let staged = staging.join(file_name);
        std::fs::copy(&built, &staged).map_err(|e| Error::io(&staged, e))?;
        install(env, args, &built, &staged)
    });
    // The staged file is renamed into place or refused; the folder goes either way.
    let _ = std::fs::remove_dir_all(&staging);
    let (installed, methods) = installed?;
    writeln!(
        out,
        "installed {}: {}",
        installed.display(),
        methods.join(", ")
    )?;
    Ok(())
}

/// Loads `staged` (a copy of cargo's `built`) beside the built-ins alone,
/// refuses what would break a method (a name another source provides;
/// another plugin's file of the same name in --into unless --replace), and
/// renames it into place. Returns the installed path and its methods.
fn install(
    env: &Env,
    args: &BuildArgs,
    built: &Path,
    staged: &Path,
) -> Result<(PathBuf, Vec<String>), Error> {
    let staging = staged.parent().unwrap_or(Path::new("."));
    let alone = env.runtime_without_path(&[staging.to_path_buf()]);
    if let Some(reason) = load_problem(&alone, staged)? {
        return Err(Error::Input(format!(
            "{} was built into {} but cannot be loaded, so it was not installed: {reason}",
            args.dir.display(),
            built.display()
        )));
    }
    let canonical = Origin::Plugin(staged.canonicalize().map_err(|e| Error::io(staged, e))?);
    let methods = provided(&alone, staged);
    let target = args.into.join(staged.file_name().unwrap_or_default());
    // Every source of each name it provides: built-ins, TASKWEAVE_PLUGIN_PATH
    // and --into, except the file being replaced.
    let present = env.runtime(std::slice::from_ref(&args.into));
    let replaced = target.canonicalize().ok().map(Origin::Plugin);
    let names = alone
        .registry()
        .entries()
        .filter(|e| e.origin == canonical)
        .map(|e| e.manifest.name.to_string())
        .chain(
            alone
                .registry()
                .conflicts()
                .filter(|(_, origins)| origins.contains(&canonical))
                .map(|(name, _)| name.to_string()),
        );
    let registry = present.registry();
    for name in names {
        let conflicting = registry.conflicts().filter(|(n, _)| *n == name);
        let loaded = registry
            .entries()
            .filter(|e| e.manifest.name.as_str() == name);
        let other = conflicting
            .flat_map(|(_, origins)| origins.iter())
            .chain(loaded.map(|e| &e.origin))
            .find(|o| Some(*o) != replaced.as_ref());
        if let Some(other) = other {
            return Err(Error::Input(format!(
                "`{name}` is already provided by {other}: two sources of one name make it unusable; \
                 rename the method (its name in `register_method!`) or remove that file"
            )));
        }
    }
    let previous = provided(&present, &target);
    if !previous.is_empty() && previous != methods && !args.replace {
        return Err(Error::Input(format!(
            "{} holds {}, and this crate builds {}: pass --replace to replace it",
            target.display(),
            previous.join(", "),
            methods.join(", ")
        )));
    }
    // A new file renamed into place: processes that have the old one mapped keep it.
    std::fs::rename(staged, &target).map_err(|e| Error::io(&target, e))?;
    Ok((target, methods))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn type_names_are_camel_case_and_never_a_name_the_template_uses() {
        let (role, _, source) = source_of(RoleArg::Weighting);
        let name = |method: &str| type_name(method, role, source);
        assert_eq!(name("scaled-ew"), "ScaledEw");
        assert_eq!(name("gls"), "Gls");
        assert_eq!(name("self"), "SelfWeighting");
        for taken in [
            "host",
            "result",
            "weighting",
            "weighting-input",
            "method",
            "config",
        ] {
            let ty = name(taken);
            assert!(
                ty.ends_with("Weighting") && ty.len() > "Weighting".len(),
                "{taken}: {ty}"
            );
        }
    }
}
