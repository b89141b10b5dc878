//! Files only their owner may read: the database (and its `-wal` and `-shm`
//! files) and the self-signed certificate's key.
//!
//! A new file is created mode 0600 whatever the process umask: opened with
//! that mode (the umask can only take bits away), then set to it
//! explicitly. SQLite gives the `-wal` and `-shm` files it makes the mode of
//! the main file, so creating the database here, before SQLite opens it,
//! makes those private too.
//!
//! An existing file that group or others may read or write is tightened at
//! start: their bits are cleared and the owner's are kept, so 0644 becomes
//! 0600 and a write-protected 0444 stays write-protected as 0400. That is
//! logged as a warning; a file that cannot be changed (another user's) is
//! logged too, and never stops the start.
//!
//! Nothing here knows what the files hold; callers name them for the log.

use std::fs::{self, OpenOptions, Permissions};
use std::io;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// The mode of every file made here.
pub const MODE: u32 = 0o600;

/// The permission bits of group and others.
const OTHERS: u32 = 0o077;

/// Creates `path`, empty and mode 0600, unless it exists. True when it was
/// made here.
pub fn create(path: &Path) -> io::Result<bool> {
    match OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(MODE)
        .open(path)
    {
        Ok(file) => {
            // The umask cannot add bits, but say the mode outright anyway:
            // it is what this function promises.
            file.set_permissions(Permissions::from_mode(MODE))?;
            Ok(true)
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(e),
    }
}

/// What [`tighten`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tightened {
    /// No such file.
    Missing,
    /// Group and others had no access already.
    AlreadyPrivate,
    /// Their bits were cleared: the mode was `from` and is `to`.
    Changed { from: u32, to: u32 },
}

/// Clears the group and other bits of an existing file.
pub fn tighten(path: &Path) -> io::Result<Tightened> {
    let meta = match fs::metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Tightened::Missing),
        Err(e) => return Err(e),
    };
    let from = meta.permissions().mode() & 0o7777;
    if from & OTHERS == 0 {
        return Ok(Tightened::AlreadyPrivate);
    }
    let to = private_mode(from);
    fs::set_permissions(path, Permissions::from_mode(to))?;
    Ok(Tightened::Changed { from, to })
}

/// `mode` with the group and other bits cleared.
pub fn private_mode(mode: u32) -> u32 {
    mode & !OTHERS
}

/// Tightens `path` (see [`tighten`]), logging a warning when it was open
/// to others, whether or not that could be fixed. `what` names the file
/// for the operator ("database", "TLS key").
pub fn tighten_logged(path: &Path, what: &str) {
    match tighten(path) {
        Ok(Tightened::Missing | Tightened::AlreadyPrivate) => {}
        Ok(Tightened::Changed { from, to }) => log::warn!(
            "{what} {} was open to other users (mode {from:04o}): \
             made it owner-only (mode {to:04o})",
            path.display()
        ),
        Err(e) => {
            let mode = fs::metadata(path).map_or_else(
                |_| "unknown".to_owned(),
                |m| format!("{:04o}", m.permissions().mode() & 0o7777),
            );
            log::warn!(
                "{what} {} may be open to other users (mode {mode}) and cannot be \
                 made owner-only: {e}",
                path.display()
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn private_mode_clears_group_and_others_only() {
        assert_eq!(private_mode(0o644), 0o600);
        assert_eq!(private_mode(0o666), 0o600);
        assert_eq!(private_mode(0o444), 0o400);
        assert_eq!(private_mode(0o600), 0o600);
        assert_eq!(private_mode(0o4755), 0o4700);
    }

    #[test]
    fn create_makes_a_new_file_0600_and_leaves_an_old_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        assert!(create(&path).unwrap());
        assert_eq!(mode(&path), 0o600);
        fs::write(&path, "kept").unwrap();
        fs::set_permissions(&path, Permissions::from_mode(0o640)).unwrap();
        assert!(!create(&path).unwrap());
        assert_eq!(fs::read_to_string(&path).unwrap(), "kept");
        assert_eq!(mode(&path), 0o640, "create does not tighten");
        assert!(create(&dir.path().join("no/such/dir")).is_err());
    }

    #[test]
    fn tighten_clears_what_others_have() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        assert_eq!(tighten(&path).unwrap(), Tightened::Missing);
        fs::write(&path, "x").unwrap();
        fs::set_permissions(&path, Permissions::from_mode(0o644)).unwrap();
        assert_eq!(
            tighten(&path).unwrap(),
            Tightened::Changed {
                from: 0o644,
                to: 0o600
            }
        );
        assert_eq!(mode(&path), 0o600);
        assert_eq!(tighten(&path).unwrap(), Tightened::AlreadyPrivate);
        fs::set_permissions(&path, Permissions::from_mode(0o444)).unwrap();
        tighten(&path).unwrap();
        assert_eq!(mode(&path), 0o400, "write-protected stays write-protected");
    }
}
