//! File-level helpers shared by the stores: one error type, atomic creation of a daxlog file,
//! atomic replacement of a small file.

use std::fs::File;
use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

/// What can go wrong below openraft: the daxlog itself, encoding, or plain file I/O.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DaxError {
    /// An error of the underlying daxlog.
    #[error(transparent)]
    Log(#[from] daxlog::Error),
    /// A JSON record (`meta.dax`, a snapshot) or a legacy JSON entry of `log.dax` could not
    /// be encoded or decoded.
    #[error("encoding: {0}")]
    Codec(#[from] serde_json::Error),
    /// A postcard entry of `log.dax` could not be encoded or decoded (malformed or truncated).
    #[error("postcard encoding: {0}")]
    Postcard(#[from] postcard::Error),
    /// An entry of `log.dax` starts with a format tag this version does not know (written by
    /// a newer version, or not an entry at all).
    #[error(
        "log entry in an unknown encoding: format tag 0x{tag:02x} (known: 0x01 postcard v1, \
         0x7b legacy JSON)"
    )]
    UnknownEncoding {
        /// The entry's first byte.
        tag: u8,
    },
    /// A postcard entry of `log.dax` is followed by bytes that are not part of it.
    #[error("log entry has {trailing} bytes after its postcard encoding")]
    TrailingBytes {
        /// How many bytes follow the entry.
        trailing: usize,
    },
    /// An entry of `log.dax` is empty: it carries no format tag.
    #[error("log entry is empty (no format tag)")]
    EmptyPayload,
    /// A snapshot file (`snapshot.bin`) that cannot be read: not one, another format version,
    /// or damaged (its checksum does not match).
    #[error("snapshot file: {0}")]
    BadSnapshot(String),
    /// File I/O outside daxlog (directories, snapshots).
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    /// A live LSN that the log could not read back.
    #[error("daxlog entry {0} is missing")]
    Missing(u64),
    /// The files on disk contradict each other.
    #[error("inconsistent store: {0}")]
    Inconsistent(String),
    /// The log was purged past the state machine's durable snapshot: the entries in between
    /// are in neither. The store is refused rather than opened with a hole before its first
    /// entry (it must be restored from another node).
    #[error(
        "log purged up to index {purged}, past the durable snapshot (last index {snapshot:?}): \
         the entries in between are lost"
    )]
    PurgedBeyondSnapshot {
        /// Last purged log index recorded in `meta.dax`.
        purged: u64,
        /// Last log index of the state machine's durable snapshot.
        snapshot: Option<u64>,
    },
    /// A purge waited in vain for a durable snapshot covering it; nothing was purged.
    #[error("purge up to index {upto} refused: no durable snapshot covers it (snapshot ends at {snapshot:?})")]
    SnapshotNotDurable {
        /// The index the purge was asked to reach.
        upto: u64,
        /// Last log index of the durable snapshot when the wait ended.
        snapshot: Option<u64>,
    },
}

/// Creates a new daxlog at `path` so that a crash leaves either no file or a complete empty
/// log: the log is created under a temporary name, then renamed, then the directory is synced.
pub(crate) fn create_atomically(
    path: &Path,
    opts: &daxlog::Options,
) -> Result<daxlog::Log, DaxError> {
    let tmp = tmp_name(path);
    let created = daxlog::Log::create(&tmp, &opts.clone().overwrite(true))?;
    drop(created);
    std::fs::rename(&tmp, path)?;
    sync_dir(path)?;
    Ok(daxlog::Log::open(path, opts)?)
}

/// Replaces the file at `path` with `bytes`, durably and atomically (write a temporary file,
/// fsync it, rename it over, fsync the directory). The temporary file's name is unique to the
/// call (process id and a counter), so concurrent replacements never write through one file;
/// the last rename wins.
pub(crate) fn replace_file(path: &Path, bytes: &[u8]) -> Result<(), DaxError> {
    replace_file_parts(path, &[bytes])
}

/// [`replace_file`] with the new content given in `parts`, written one after the other.
pub(crate) fn replace_file_parts(path: &Path, parts: &[&[u8]]) -> Result<(), DaxError> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(
        "{TMP_MARK}{}.{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let tmp = path.with_file_name(name);
    let written = (|| {
        let mut f = File::options().write(true).create_new(true).open(&tmp)?;
        for part in parts {
            f.write_all(part)?;
        }
        f.sync_all()?;
        drop(f);
        std::fs::rename(&tmp, path)
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(e.into());
    }
    sync_dir(path)?;
    Ok(())
}

/// What the names of [`replace_file`]'s temporary files contain after the file's name.
pub(crate) const TMP_MARK: &str = ".tmp.";

/// Removes the temporary files a crash during [`replace_file`] of `path` left behind.
pub(crate) fn remove_stale_tmp(path: &Path) -> Result<(), DaxError> {
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return Ok(());
    };
    let mut prefix = name.to_os_string();
    prefix.push(TMP_MARK);
    let prefix = prefix.to_string_lossy().into_owned();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_name().to_string_lossy().starts_with(&prefix) {
            std::fs::remove_file(entry.path())?;
        }
    }
    Ok(())
}

/// Creates directory `dir` and its missing ancestors, each one made durable in its parent
/// (the parent is fsynced after the directory is created), so that a crash cannot lose a
/// directory whose files were already synced. An error names the directory it is about and
/// the cause (`dir` or an ancestor is not a directory, a read-only file system, ...).
pub(crate) fn create_dir_durably(dir: &Path) -> Result<(), DaxError> {
    let at = |d: &Path, what: &str, e: std::io::Error| {
        DaxError::Io(std::io::Error::new(
            e.kind(),
            format!("{}: {what}: {e}", d.display()),
        ))
    };
    let mut missing = Vec::new();
    let mut cur = Some(dir);
    while let Some(d) = cur {
        if d.as_os_str().is_empty() || d.is_dir() {
            break;
        }
        if d.exists() {
            return Err(DaxError::Io(std::io::Error::new(
                std::io::ErrorKind::NotADirectory,
                format!("{}: exists and is not a directory", d.display()),
            )));
        }
        missing.push(d);
        cur = d.parent();
    }
    for d in missing.into_iter().rev() {
        match std::fs::create_dir(d) {
            Ok(()) => {}
            // Created meanwhile by someone else: it still has to be durable.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && d.is_dir() => {}
            Err(e) => return Err(at(d, "cannot create the directory", e)),
        }
        sync_dir(d).map_err(|e| match e {
            DaxError::Io(e) => at(d, "cannot sync the directory's parent", e),
            other => other,
        })?;
    }
    Ok(())
}

fn tmp_name(path: &Path) -> std::path::PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".tmp");
    path.with_file_name(name)
}

pub(crate) fn sync_dir(path: &Path) -> Result<(), DaxError> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    File::open(dir)?.sync_all()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_directory_that_cannot_be_made_is_named_with_the_cause() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("a-file");
        std::fs::write(&file, "").unwrap();
        let e = create_dir_durably(&file).unwrap_err().to_string();
        assert!(e.contains(&*file.to_string_lossy()), "{e}");
        assert!(e.contains("is not a directory"), "{e}");
        let below = file.join("node1");
        let e = create_dir_durably(&below).unwrap_err().to_string();
        assert!(e.contains(&*file.to_string_lossy()), "{e}");
        assert!(e.contains("is not a directory"), "{e}");
        // A cause create_dir reports (here: a name too long) comes with the path.
        let long = dir.path().join("x".repeat(300));
        let e = create_dir_durably(&long).unwrap_err().to_string();
        assert!(e.contains("cannot create the directory"), "{e}");
        assert!(e.contains(&*long.to_string_lossy()), "{e}");
    }
}
