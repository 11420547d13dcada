//! The run directory, `out_dir/<run name>/`, held by one process at a time.
//!
//! A run directory is recognised by its `run.json`, the first file a run
//! writes. Opening one takes an exclusive lock on its `.lock` file for as long
//! as the [`RunDir`] lives, so two processes never train into (or resume) the
//! same directory at once; the lock file records the holder's pid so the loser
//! can name it. `--overwrite` empties only a directory that holds a run, and
//! never removes the directory itself (its lock must stay in place).

use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::{Read, Seek, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use taskweave_plugin_api::io_reason;

use crate::fsutil::{remove_temporaries, shell_word};

/// The file whose presence marks a directory as a taskweave run.
pub const MARKER: &str = "run.json";
/// The lock file inside every run directory.
const LOCK: &str = ".lock";

/// A run directory this process holds the lock of (or, on the other ranks
/// of a data-parallel run, follows: rank 0 holds it and writes it).
#[derive(Debug)]
pub struct RunDir {
    path: PathBuf,
    // Held for the lock; released when the RunDir is dropped.
    lock: Option<File>,
}

impl RunDir {
    /// `path` as another rank of a data-parallel run sees it: rank 0 creates,
    /// locks and writes it; this rank only reads what rank 0 wrote.
    pub fn follow(path: &Path) -> RunDir {
        RunDir {
            path: path.to_path_buf(),
            lock: None,
        }
    }

    /// Opens `path` for a new run, creating it if needed. A directory that
    /// already holds a run is refused unless `overwrite`, which empties it; a
    /// directory holding anything else is refused whatever `overwrite` says.
    pub fn create(path: &Path, overwrite: bool) -> Result<RunDir> {
        fs::create_dir_all(path).map_err(|e| {
            Error::Input(format!(
                "cannot create the run directory {}: {}; check run.out_dir and run.name",
                path.display(),
                taskweave_plugin_api::io_reason(&e)
            ))
        })?;
        let dir = RunDir::lock(path)?;
        let entries = dir.entries()?;
        if entries.is_empty() {
            return Ok(dir);
        }
        let shown = path.display();
        if !path.join(MARKER).is_file() {
            let names: Vec<String> = entries
                .iter()
                .take(3)
                .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
                .collect();
            return Err(Error::Input(format!(
                "{shown} is not empty ({}{}) and holds no taskweave run, so nothing there is replaced; \
                 pick another run.name or out_dir",
                names.join(", "),
                if entries.len() > 3 { ", ..." } else { "" }
            )));
        }
        if !overwrite {
            return Err(Error::Input(format!(
                "{shown} already holds a run; continue it with `taskweave resume {}`, pick another name with \
                 --set run.name=..., or pass --overwrite to start over",
                shell_word(path)
            )));
        }
        // Emptied by `clear` once the new run's data and model are ready: a
        // pipeline that fails before that leaves the old run whole.
        Ok(dir)
    }

    /// Empties the directory for the new run that [`RunDir::create`] let in
    /// (nothing to do unless it held a run and `--overwrite` was given); the
    /// lock stays. Other ranks of a data-parallel run leave it to rank 0.
    pub fn clear(&self) -> Result<()> {
        if self.lock.is_none() {
            return Ok(());
        }
        for entry in self.entries()? {
            let removed = match fs::symlink_metadata(&entry) {
                Ok(meta) if meta.is_dir() => fs::remove_dir_all(&entry),
                _ => fs::remove_file(&entry),
            };
            removed.map_err(|e| Error::io(&entry, e))?;
        }
        Ok(())
    }

    /// Opens the existing run in `path` to continue it. Temporary files that a
    /// killed process left behind are removed (nothing else can be writing them:
    /// this process holds the lock).
    pub fn open(path: &Path) -> Result<RunDir> {
        check_marked(path)?;
        let dir = RunDir::lock(path)?;
        let checkpoints = dir.checkpoints();
        if fs::symlink_metadata(&checkpoints).is_ok_and(|m| !m.is_dir()) {
            return Err(Error::Input(format!(
                "{} is not a directory, but a run keeps its checkpoints there; move it away (the run \
                 then starts again from step 0) or put the run's checkpoints folder back",
                checkpoints.display()
            )));
        }
        remove_temporaries(path);
        remove_temporaries(&checkpoints);
        Ok(dir)
    }

    /// Opens the run in `path` to read what it trained (to sample, decode or
    /// measure it): a shared lock, so that readers do not exclude one
    /// another while a process training there (which holds the lock alone)
    /// is not read half-way; nothing is written, so a run directory this
    /// process may only read (another user's) opens too.
    pub fn open_to_read(path: &Path) -> Result<RunDir> {
        check_marked(path)?;
        let lock_path = path.join(LOCK);
        let lock = match File::open(&lock_path) {
            Ok(file) => {
                let taken = file.try_lock_shared();
                Some(took(path, file, taken)?)
            }
            // A run directory copied without its lock: no process holds it.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(Error::io(&lock_path, e)),
        };
        Ok(RunDir {
            path: path.to_path_buf(),
            lock,
        })
    }

    fn lock(path: &Path) -> Result<RunDir> {
        let lock_path = path.join(LOCK);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            // The pid is written into it: never through a link to another file.
            .custom_flags(libc::O_NOFOLLOW)
            .open(&lock_path)
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::PermissionDenied | std::io::ErrorKind::ReadOnlyFilesystem => {
                    Error::Input(format!(
                        "the run directory {} is not writable ({}); fix its permissions, or pick \
                         another run.out_dir or run.name",
                        path.display(),
                        io_reason(&e)
                    ))
                }
                _ if e.raw_os_error() == Some(libc::ELOOP)
                    || e.kind() == std::io::ErrorKind::IsADirectory =>
                {
                    Error::Input(format!(
                        "{} is not a regular file ({}), but a run holds its lock there; remove it",
                        lock_path.display(),
                        io_reason(&e)
                    ))
                }
                _ => Error::io(&lock_path, e),
            })?;
        let taken = file.try_lock();
        let mut file = took(path, file, taken)?;
        // Best effort: the pid only makes the other process's message better.
        let _ = file
            .set_len(0)
            .and_then(|()| file.rewind())
            .and_then(|()| writeln!(file, "{}", std::process::id()));
        Ok(RunDir {
            path: path.to_path_buf(),
            lock: Some(file),
        })
    }

    /// Everything in the directory except the lock file.
    fn entries(&self) -> Result<Vec<PathBuf>> {
        let read = fs::read_dir(&self.path).map_err(|e| Error::io(&self.path, e))?;
        let mut entries = Vec::new();
        for entry in read {
            let entry = entry.map_err(|e| Error::io(&self.path, e))?;
            if entry.file_name() != LOCK {
                entries.push(entry.path());
            }
        }
        entries.sort();
        Ok(entries)
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Where its checkpoints go.
    pub fn checkpoints(&self) -> PathBuf {
        self.path.join("checkpoints")
    }
}

/// Refuses a `path` that is not a run directory (no [`MARKER`]).
fn check_marked(path: &Path) -> Result<()> {
    if !path.exists() {
        return Err(Error::Input(format!("{} does not exist", path.display())));
    }
    if !path.join(MARKER).is_file() {
        return Err(Error::Input(format!(
            "{} is not a run directory (it has no {MARKER})",
            path.display()
        )));
    }
    Ok(())
}

/// The lock file `file` of the run directory `path` once `taken` (its
/// exclusive or shared lock) succeeded, else the error naming the holder or
/// the failure.
fn took(path: &Path, mut file: File, taken: std::result::Result<(), TryLockError>) -> Result<File> {
    match taken {
        Ok(()) => Ok(file),
        Err(TryLockError::WouldBlock) => Err(in_use(path, &mut file)),
        Err(TryLockError::Error(e)) => Err(Error::Input(format!(
            "cannot lock {}: {}",
            path.join(LOCK).display(),
            io_reason(&e)
        ))),
    }
}

/// The error for a run directory whose lock another holder has, named by
/// the pid its lock file records.
fn in_use(path: &Path, lock: &mut File) -> Error {
    let mut holder = String::new();
    let _ = lock.read_to_string(&mut holder);
    // The file holds the pid of the last process that trained there; a
    // reader's lock leaves it as it was.
    let alive = |pid: &str| {
        pid.parse::<libc::pid_t>().is_ok_and(|pid| {
            // Signal 0 only asks; another user's process answers EPERM.
            let asked = unsafe { libc::kill(pid, 0) };
            asked == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
        })
    };
    let holder = match holder.trim() {
        pid if pid == std::process::id().to_string() => {
            "this process (another Run of the same directory)".to_string()
        }
        pid if alive(pid) => format!("process {pid}"),
        _ => "another process".to_string(),
    };
    Error::Input(format!(
        "{} is in use by {holder} (a run or resume into the same directory, or a command \
         reading it); wait for it to end, or pick another run.name",
        path.display()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_directory_without_a_run_is_never_emptied() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("keep"), "x").unwrap();
        let e = RunDir::create(dir.path(), true).unwrap_err();
        assert_eq!(e.exit_code(), 2);
        assert!(e.to_string().contains("holds no taskweave run"), "{e}");
        assert!(dir.path().join("keep").exists());
    }

    #[test]
    fn overwrite_empties_a_run_but_keeps_the_directory_and_lock() {
        let dir = tempfile::tempdir().unwrap();
        let run = dir.path().join("r");
        {
            let held = RunDir::create(&run, false).unwrap();
            std::fs::write(held.path().join(MARKER), "{}").unwrap();
            std::fs::create_dir_all(held.checkpoints()).unwrap();
        }
        let e = RunDir::create(&run, false).unwrap_err();
        assert!(e.to_string().contains("already holds a run"), "{e}");
        let held = RunDir::create(&run, true).unwrap();
        // Nothing is removed until the new run is ready to write.
        assert!(run.join(MARKER).exists());
        held.clear().unwrap();
        assert_eq!(held.entries().unwrap(), Vec::<PathBuf>::new());
        assert!(run.join(LOCK).exists());
    }

    #[test]
    fn a_second_holder_is_refused_naming_the_first() {
        let dir = tempfile::tempdir().unwrap();
        let first = RunDir::create(dir.path(), false).unwrap();
        std::fs::write(first.path().join(MARKER), "{}").unwrap();
        let e = RunDir::open(dir.path()).unwrap_err();
        assert_eq!(e.exit_code(), 2);
        // The first holder is this process (another process's pid is named).
        assert!(
            e.to_string()
                .contains("in use by this process (another Run of the same directory)"),
            "{e}"
        );
        drop(first);
        RunDir::open(dir.path()).unwrap();
    }

    #[test]
    fn a_damaged_run_directory_is_named_and_nothing_outside_it_is_written() {
        let dir = tempfile::tempdir().unwrap();
        let gone = RunDir::open(&dir.path().join("gone")).unwrap_err();
        assert!(gone.to_string().ends_with("gone does not exist"), "{gone}");
        let run = dir.path().join("r");
        std::fs::create_dir(&run).unwrap();
        std::fs::write(run.join(MARKER), "{}").unwrap();
        // A lock that links elsewhere: refused, its target untouched.
        let elsewhere = dir.path().join("notes.txt");
        std::fs::write(&elsewhere, "mine").unwrap();
        std::os::unix::fs::symlink(&elsewhere, run.join(LOCK)).unwrap();
        let e = RunDir::open(&run).unwrap_err();
        assert_eq!(e.exit_code(), 2, "{e}");
        assert!(e.to_string().contains("remove it"), "{e}");
        assert_eq!(std::fs::read_to_string(&elsewhere).unwrap(), "mine");
        // A lock that is a directory.
        std::fs::remove_file(run.join(LOCK)).unwrap();
        std::fs::create_dir(run.join(LOCK)).unwrap();
        let e = RunDir::open(&run).unwrap_err();
        assert_eq!(e.exit_code(), 2, "{e}");
        std::fs::remove_dir(run.join(LOCK)).unwrap();
        // Checkpoints that are a file.
        std::fs::write(run.join("checkpoints"), "x").unwrap();
        let e = RunDir::open(&run).unwrap_err();
        assert_eq!(e.exit_code(), 2, "{e}");
        assert!(e.to_string().contains("is not a directory"), "{e}");
    }
}
