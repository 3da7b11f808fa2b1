//! Files written so that a kill never leaves a broken one (temp file in the same folder, then
//! rename), the advisory locks that keep two processes off one run, and the kill points the
//! soak test (`trainer/tests/soak.rs`) stops the process at.

use anyhow::{Context, Result, bail};
use std::collections::HashMap;
use std::fs::{File, TryLockError};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

/// Writes `bytes` to `path` atomically (temp file + rename).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = temp_path(path)?;
    std::fs::write(&tmp, bytes).with_context(|| format!("cannot write {}", tmp.display()))?;
    rename_into_place(&tmp, path)
}

/// A temp path beside `path` (its folder created) for a writer that needs a path of its own
/// (a plot backend), to be moved into place with [`rename_into_place`]. It keeps `path`'s
/// extension last, which such writers read the format from.
pub fn temp_path(path: &Path) -> Result<PathBuf> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)
        .with_context(|| format!("cannot create folder {}", dir.display()))?;
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let (stem, extension) = match name.rsplit_once('.') {
        Some((stem, extension)) if !stem.is_empty() => (stem, format!(".{extension}")),
        _ => (name, String::new()),
    };
    Ok(dir.join(format!(
        ".{stem}{TEMP_MARK}{}{extension}",
        std::process::id()
    )))
}

/// What every temp file's name holds (after a leading dot): how [`remove_stale_temps`] knows
/// them.
const TEMP_MARK: &str = ".tmp-";

/// Moves the finished temp file `tmp` to `path` (one rename: `path` is the old file or the new
/// one, never half of either).
pub fn rename_into_place(tmp: &Path, path: &Path) -> Result<()> {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    kill_point(&format!("write:{name}"));
    std::fs::rename(tmp, path)
        .with_context(|| format!("cannot move {} to {}", tmp.display(), path.display()))?;
    kill_point(&format!("renamed:{name}"));
    Ok(())
}

/// Whether `name` is one of [`write_atomic`]'s temp files.
pub fn is_temp_name(name: &str) -> bool {
    name.starts_with('.') && name.contains(TEMP_MARK)
}

/// Removes the temp files a killed writer left in `dir` (if it exists). Only for a folder this
/// process holds the lock of, so that no live writer's file goes.
pub fn remove_stale_temps(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        if entry.file_name().to_str().is_some_and(is_temp_name) {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// An advisory lock (flock) on a file, held until dropped; a killed holder's lock goes with its
/// process, so a lock never outlives a crash.
#[derive(Debug)]
pub struct Lock {
    _file: File,
}

/// Shared (several holders) or exclusive (one).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LockKind {
    /// Many holders at once, none with an exclusive one: the workers of one job array.
    Shared,
    /// One holder alone.
    Exclusive,
}

/// Takes the lock at `path` (the file created if missing) without waiting. Refused while
/// another process holds it (an exclusive one, or any with `Exclusive`): the error says which
/// process and what to do. The holder's pid is written into the file for that message.
pub fn try_lock(path: &Path, kind: LockKind, what: &str) -> Result<Lock> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .with_context(|| format!("cannot open the lock file {}", path.display()))?;
    let taken = match kind {
        LockKind::Shared => file.try_lock_shared(),
        LockKind::Exclusive => file.try_lock(),
    };
    match taken {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => {
            let holder = std::fs::read_to_string(path).unwrap_or_default();
            let holder = match holder.trim() {
                "" => String::new(),
                pid => format!(" (pid {pid})"),
            };
            bail!(
                "{what} is in use by another mgr process{holder}, which holds {}; wait for it \
                 to finish or use another --out",
                path.display()
            );
        }
        Err(TryLockError::Error(e)) => {
            return Err(e).with_context(|| format!("cannot lock {}", path.display()));
        }
    }
    // Only an exclusive holder names itself (shared ones would overwrite each other); a
    // shared one clears a past holder's pid so that no message names a process long gone.
    let _ = file.set_len(0);
    if kind == LockKind::Exclusive {
        let _ = write!(&file, "{}", std::process::id());
    }
    Ok(Lock { _file: file })
}

/// The soak test's fault injection: with `MGR_KILL_AT=<event>#<n>` in the environment, the
/// process kills itself with SIGKILL the `n`-th time it reaches `event`, as a preemption
/// would (no destructor, no flush, no cleanup). Events: `step` (each training step),
/// `write:<file>` (a temp file complete, not yet renamed) and `renamed:<file>`. With
/// `MGR_KILL_AT=list` each event is printed to stderr instead. Unset: nothing happens.
pub fn kill_point(event: &str) {
    static SPEC: OnceLock<Option<KillSpec>> = OnceLock::new();
    static SEEN: Mutex<Option<HashMap<String, usize>>> = Mutex::new(None);
    let Some(spec) = SPEC.get_or_init(|| std::env::var("MGR_KILL_AT").ok().map(KillSpec::parse))
    else {
        return;
    };
    let mut seen = SEEN.lock().unwrap_or_else(|e| e.into_inner());
    let count = seen.get_or_insert_with(HashMap::new);
    let n = count.entry(event.to_string()).or_insert(0);
    *n += 1;
    match spec {
        KillSpec::List => eprintln!("kill point {event}#{n}"),
        KillSpec::At { event: at, nth } if at == event && nth == n => {
            eprintln!("kill point {event}#{n}: SIGKILL");
            kill_self();
        }
        KillSpec::At { .. } => {}
    }
}

/// `MGR_KILL_AT`'s value.
#[derive(Debug, PartialEq)]
enum KillSpec {
    List,
    At { event: String, nth: usize },
}

impl KillSpec {
    /// `list`, `<event>#<n>`, or `<event>` (its first time). A malformed count is the first
    /// time too: this is a test's variable, not a user's.
    fn parse(raw: String) -> Self {
        if raw == "list" {
            return Self::List;
        }
        match raw.rsplit_once('#') {
            Some((event, nth)) => Self::At {
                event: event.to_string(),
                nth: nth.parse().unwrap_or(1),
            },
            None => Self::At { event: raw, nth: 1 },
        }
    }
}

fn kill_self() -> ! {
    #[cfg(unix)]
    {
        unsafe extern "C" {
            fn kill(pid: std::ffi::c_int, signal: std::ffi::c_int) -> std::ffi::c_int;
        }
        const SIGKILL: std::ffi::c_int = 9;
        // SAFETY: kill(2) on this process's own pid; SIGKILL ends it here.
        unsafe {
            kill(std::process::id() as std::ffi::c_int, SIGKILL);
        }
    }
    std::process::abort()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temp_files_keep_the_extension_and_are_recognised_and_removed() {
        let dir = tempfile::tempdir().unwrap();
        let tmp = temp_path(&dir.path().join("plot.kappa0.7.png")).unwrap();
        let name = tmp.file_name().unwrap().to_str().unwrap();
        assert!(name.ends_with(".png"), "{name}");
        assert!(name.starts_with(".plot.kappa0.7.tmp-"), "{name}");
        assert!(is_temp_name(name));
        assert!(!is_temp_name("table.json") && !is_temp_name(".lock"));
        std::fs::write(&tmp, "half").unwrap();
        write_atomic(&dir.path().join("table.json"), b"{}").unwrap();
        remove_stale_temps(dir.path());
        let left: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(left, ["table.json"]);
    }

    #[test]
    fn an_exclusive_lock_refuses_a_second_holder_until_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(".lock");
        let first = try_lock(&path, LockKind::Exclusive, "the run").unwrap();
        let err = try_lock(&path, LockKind::Exclusive, "the run").unwrap_err();
        let message = format!("{err:#}");
        assert!(message.contains("the run is in use"), "{message}");
        assert!(
            message.contains(&format!("pid {}", std::process::id())),
            "{message}"
        );
        assert!(try_lock(&path, LockKind::Shared, "the run").is_err());
        drop(first);
        let a = try_lock(&path, LockKind::Shared, "the protocol").unwrap();
        let b = try_lock(&path, LockKind::Shared, "the protocol").unwrap();
        assert!(try_lock(&path, LockKind::Exclusive, "the protocol").is_err());
        drop((a, b));
        try_lock(&path, LockKind::Exclusive, "the protocol").unwrap();
    }

    #[test]
    fn kill_specs_parse() {
        assert_eq!(KillSpec::parse("list".into()), KillSpec::List);
        assert_eq!(
            KillSpec::parse("renamed:state.json#3".into()),
            KillSpec::At {
                event: "renamed:state.json".into(),
                nth: 3
            }
        );
        assert_eq!(
            KillSpec::parse("step".into()),
            KillSpec::At {
                event: "step".into(),
                nth: 1
            }
        );
    }
}
