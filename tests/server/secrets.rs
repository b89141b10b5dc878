//! What the server keeps on disk stays its own: the database, its `-wal` and
//! `-shm` files and the self-signed certificate's key are mode 0600 whatever
//! the umask, and files found open to others are tightened at start.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::util::*;

/// The server on `db`, started under umask 000: anything it does not make
/// private itself is world-readable (and writable).
fn umask_000(db: &Path, extra: &[&str]) -> Command {
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(r#"umask 000; exec "$0" "$@""#)
        .arg(BIN)
        .args(server_args(db, extra));
    cmd
}

/// `db` and the files the server keeps beside it, with what they are.
fn files_of(db: &Path) -> Vec<(PathBuf, &'static str)> {
    let beside = |suffix: &str| {
        let mut name = db.as_os_str().to_owned();
        name.push(suffix);
        PathBuf::from(name)
    };
    vec![
        (db.to_path_buf(), "database"),
        (beside("-wal"), "database write-ahead log"),
        (beside("-shm"), "database shared-memory file"),
        (beside(".key.pem"), "TLS key"),
        (beside(".cert.pem"), "TLS certificate"),
    ]
}

#[track_caller]
fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o7777
}

/// The umask of a running process, from `/proc/PID/status`.
fn umask_of(pid: i32) -> Option<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let value = status.lines().find_map(|l| l.strip_prefix("Umask:"))?;
    u32::from_str_radix(value.trim(), 8).ok()
}

#[test]
fn files_are_owner_only_whatever_the_umask() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("chat.db");
    let s = Server::start_command(umask_000(&db, &[]));
    // The test means something only if the umask really is 000 (Linux
    // shows it since 4.7).
    if let Some(umask) = umask_of(s.pid()) {
        assert_eq!(umask, 0, "the server's umask");
    }
    let mut alice = register(s.addr, "alice", &pw("alice"));
    // While it runs, with an account stored: the -wal and -shm files exist.
    for (path, what) in files_of(&db) {
        assert_eq!(mode(&path), 0o600, "{what} {}", path.display());
    }
    alice.quit();
    // And no warning: nothing was found open to others.
    assert!(
        !s.output().contains("open to other users"),
        "{}",
        s.output()
    );
}

#[test]
fn files_open_to_others_are_made_owner_only_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("chat.db");
    let mut first = Server::start_with_db(&db, &[]);
    create_account(first.addr, "alice", &pw("alice"));
    // Killed, so the -wal and -shm files stay behind.
    first.kill();
    // All but the certificate, which is public: made 0600 like the key,
    // but not looked after.
    let private: Vec<_> = files_of(&db)
        .into_iter()
        .filter(|(_, what)| *what != "TLS certificate")
        .collect();
    for (path, _) in &private {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644))
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    }

    let s = Server::start_command(umask_000(&db, &[]));
    let log = s.output();
    for (path, what) in &private {
        assert_eq!(mode(path), 0o600, "{what} {}", path.display());
        let warning = format!(
            "{what} {} was open to other users (mode 0644): made it owner-only (mode 0600)",
            path.display()
        );
        assert!(log.contains(&warning), "no {warning:?} in:\n{log}");
    }
    // What the crash left in the -wal file is all there.
    let mut alice = login(s.addr, "alice", &pw("alice"));
    alice.quit();
}
