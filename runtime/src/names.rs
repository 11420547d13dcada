//! Run names: a run directory is `out_dir/<name>`, so a name must be one safe
//! path component (a name like `..` or `/x` would let `--overwrite` reach
//! outside `out_dir`).

/// Names a run may not take: directories `out_dir` already uses for itself.
const RESERVED: &[&str] = &["baselines"];

/// Why `name` cannot be a run name, or `None` when it can: one path component
/// of ASCII letters, digits, `.`, `_` and `-`, not starting with `.` or `-`
/// (no hidden directories, nothing a command line reads as a flag), at most
/// 100 characters, and not a name `out_dir` reserves.
pub fn name_problem(name: &str) -> Option<String> {
    const MAX: usize = 100;
    if name.is_empty() {
        return Some("a run name cannot be empty".into());
    }
    if let Some(bad) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Some(format!(
            "a run name is one directory name of letters, digits, `.`, `_` and `-`; {bad:?} is not allowed"
        ));
    }
    if name.starts_with(['.', '-']) {
        return Some("a run name cannot start with `.` or `-`".into());
    }
    if name.len() > MAX {
        return Some(format!(
            "a run name has at most {MAX} characters, this one has {}",
            name.len()
        ));
    }
    if RESERVED.contains(&name) {
        return Some(format!(
            "`{name}` is reserved: out_dir/{name}/ holds the single-task baselines"
        ));
    }
    None
}

/// A valid run name made from `stem` (a pipeline's file name): characters a
/// run name may not hold become `-`.
pub fn name_from(stem: &str) -> String {
    let mut name: String = stem
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '-'
            }
        })
        .collect();
    name = name
        .trim_start_matches(['.', '-'])
        .trim_end_matches('-')
        .to_string();
    name.truncate(100);
    if name.is_empty() || RESERVED.contains(&name.as_str()) {
        name.insert_str(0, "run-");
        name = name.trim_end_matches('-').to_string();
    }
    name
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_names_are_one_safe_path_component() {
        for bad in [
            "",
            ".",
            "..",
            "../x",
            "a/b",
            "/abs",
            ".hidden",
            "-flag",
            "sp ace",
            "baselines",
            "é",
        ] {
            assert!(name_problem(bad).is_some(), "{bad:?} accepted");
        }
        assert!(name_problem(&"x".repeat(101)).is_some());
        for good in ["quickstart", "qm9.seed-1", "A_b", "run..2"] {
            assert_eq!(name_problem(good), None, "{good:?}");
        }
    }

    #[test]
    fn names_from_file_stems_are_always_valid() {
        for (stem, name) in [
            ("quickstart", "quickstart"),
            ("my pipeline", "my-pipeline"),
            (".hidden", "hidden"),
            ("...", "run"),
            ("baselines", "run-baselines"),
            ("ünï", "n"),
        ] {
            assert_eq!(name_from(stem), name);
            assert_eq!(name_problem(&name_from(stem)), None, "{stem:?}");
        }
    }
}
