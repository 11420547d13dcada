//! A plugin is native code that runs with the user's rights, so the runtime
//! loads only files that no one else could have written: neither the file nor
//! its directory may be writable by group or others, and both must belong to
//! the user or to root (as `ssh` treats `authorized_keys`).
//! `--allow-insecure-plugins` ([`Config::allow_insecure_plugins`]) lifts this.
//!
//! [`Config::allow_insecure_plugins`]: crate::Config::allow_insecure_plugins

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use taskweave_plugin_api::io_reason;

/// Why `path` (a plugin file) could have been written by someone other than
/// this user, or `Ok` when it could not.
pub fn check(path: &Path) -> Result<(), String> {
    let file = path
        .canonicalize()
        .map_err(|e| format!("cannot open: {}", io_reason(&e)))?;
    let dir = file.parent().unwrap_or(Path::new("/"));
    check_each(&[("the file", file.as_path()), ("its directory", dir)])
}

/// `check` for a plugin directory alone: what any file put there will meet.
pub fn check_dir(dir: &Path) -> Result<(), String> {
    check_each(&[("the plugin directory", dir)])
}

fn check_each(paths: &[(&str, &Path)]) -> Result<(), String> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let me = unsafe { libc::geteuid() };
    for &(what, p) in paths {
        let meta = std::fs::metadata(p)
            .map_err(|e| format!("cannot read {}: {}", p.display(), io_reason(&e)))?;
        let mode = meta.mode();
        // A sticky directory (/tmp) still lets others add files, just not replace ours.
        if mode & 0o022 != 0 {
            let who = if mode & 0o002 != 0 {
                "every user"
            } else {
                "its group"
            };
            return Err(format!(
                "refused: {what} ({}) is writable by {who}, so someone else could have put code there; \
                 fix the permissions (chmod go-w) or pass --allow-insecure-plugins",
                p.display()
            ));
        }
        if meta.uid() != me && meta.uid() != 0 {
            return Err(format!(
                "refused: {what} ({}) belongs to user {} rather than you or root; \
                 move the plugin or pass --allow-insecure-plugins",
                p.display(),
                meta.uid()
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn files_or_directories_others_can_write_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("libx.so");
        std::fs::write(&file, b"x").unwrap();
        let chmod = |p: &Path, mode| {
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap()
        };
        chmod(dir.path(), 0o755);
        chmod(&file, 0o644);
        check(&file).unwrap();
        chmod(&file, 0o664);
        assert!(check(&file).unwrap_err().contains("the file"));
        chmod(&file, 0o644);
        chmod(dir.path(), 0o777);
        let e = check(&file).unwrap_err();
        assert!(
            e.contains("its directory") && e.contains("every user"),
            "{e}"
        );
        chmod(dir.path(), 0o700);
    }
}
