//! Atomic file writes (a reader, or a resumed run, sees the old file or the
//! new one, never a half-written one, whenever the process is killed), and the
//! clean-up after a killed write.

use std::fs::{self, File};
use std::io::Write;
use std::path::Path;

use crate::error::{Error, Result};

/// Prefix and infix of the temporary files [`write_atomic`] writes, so that
/// [`remove_temporaries`] recognises the ones a killed process left.
const TMP_PREFIX: &str = ".";
const TMP_INFIX: &str = ".tmp-";

/// Writes `bytes` to `path` through a temporary file in the same directory,
/// flushed to disk, then renamed over `path`. The directory must exist: a
/// mistyped output path is an error, not a new directory tree. A symbolic
/// link is written through (its target replaced, the link kept); a path that
/// is there but no regular file (a device such as /dev/null, a FIFO) is
/// refused, since renaming over it would replace it.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let resolved;
    let path = match fs::metadata(path) {
        Ok(meta) if !meta.is_file() => {
            return Err(Error::Input(format!(
                "{}: not a regular file ({}); name a file to write",
                path.display(),
                if meta.is_dir() {
                    "a directory"
                } else {
                    "a device, FIFO or socket"
                }
            )))
        }
        Ok(_) if fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink()) => {
            resolved = fs::canonicalize(path).map_err(|e| Error::io(path, e))?;
            resolved.as_path()
        }
        _ => path,
    };
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(
        "{TMP_PREFIX}{name}{TMP_INFIX}{}",
        std::process::id()
    ));
    let written = (|| {
        let mut file = File::create(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        fs::rename(&tmp, path)?;
        // Persist the rename itself.
        File::open(dir)?.sync_all()
    })();
    written.map_err(|e| {
        let _ = fs::remove_file(&tmp);
        Error::io(path, e)
    })
}

/// Removes the temporary files of [`write_atomic`] in `dir` (left by a process
/// killed mid-write). Only for directories no other process writes to.
pub fn remove_temporaries(dir: &Path) {
    for entry in fs::read_dir(dir).into_iter().flatten().flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with(TMP_PREFIX) && name.contains(TMP_INFIX) {
            tracing::info!(
                "removing {}, left by an interrupted write",
                entry.path().display()
            );
            let _ = fs::remove_file(entry.path());
        }
    }
}

/// `path` as one word of a shell command a message suggests: as it is when
/// it holds only characters no shell treats specially, else single-quoted.
pub fn shell_word(path: &Path) -> String {
    let text = path.to_string_lossy();
    let plain = !text.is_empty()
        && text
            .chars()
            .all(|c| c.is_alphanumeric() || "/._-+,:@%=".contains(c));
    match plain {
        true => text.into_owned(),
        false => format!("'{}'", text.replace('\'', "'\\''")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_path_with_spaces_or_quotes_is_one_shell_word() {
        assert_eq!(shell_word(Path::new("runs/a-1.b")), "runs/a-1.b");
        assert_eq!(shell_word(Path::new("out dir/w")), "'out dir/w'");
        assert_eq!(shell_word(Path::new("it's")), "'it'\\''s'");
        assert_eq!(shell_word(Path::new("$HOME")), "'$HOME'");
    }

    #[test]
    fn replaces_content_and_leaves_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.json");
        write_atomic(&path, b"one").unwrap();
        write_atomic(&path, b"two").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"two");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn a_link_is_written_through_and_a_device_or_fifo_is_refused_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("real.st");
        fs::write(&real, b"old").unwrap();
        let link = dir.path().join("link.st");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        write_atomic(&link, b"new").unwrap();
        assert!(fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink());
        assert_eq!(fs::read(&real).unwrap(), b"new");
        // Renaming over these would replace them with a file.
        let fifo = dir.path().join("fifo");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        for path in [fifo.as_path(), Path::new("/dev/null")] {
            let e = write_atomic(path, b"x").unwrap_err();
            assert!(
                matches!(e, Error::Input(_)) && e.to_string().contains("not a regular file"),
                "{e}"
            );
        }
        assert!(!fs::metadata(&fifo).unwrap().is_file());
        assert!(!fs::metadata("/dev/null").unwrap().is_file());
    }

    #[test]
    fn a_missing_directory_is_an_error_not_created() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("no/such/dir/f.json");
        assert!(write_atomic(&path, b"x").is_err());
        assert!(!dir.path().join("no").exists());
    }

    #[test]
    fn temporaries_of_killed_writes_are_recognised_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(".step-5.safetensors.tmp-1234"), "torn").unwrap();
        fs::write(dir.path().join("step-5.safetensors"), "whole").unwrap();
        fs::write(dir.path().join(".lock"), "1").unwrap();
        remove_temporaries(dir.path());
        let mut left: Vec<String> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left, [".lock", "step-5.safetensors"]);
    }
}
