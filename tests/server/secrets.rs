//! What the server keeps on disk stays its own: the database, its `-wal` and
//! `-shm` files and the self-signed certificate's key are mode 0600 whatever
//! the umask, and files found open to others are tightened at start. And
//! after `--bcrypt-cost` changes, a login re-hashes at the new cost while
//! unknown names are checked at the cost most accounts have, so the two
//! still take as long as each other.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use rusqlite::Connection;

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

/// The server on `db` at `--bcrypt-cost cost`, with its debug lines.
fn at_cost(db: &Path, cost: &str, extra: &[&str]) -> Server {
    let mut args = vec!["--bcrypt-cost", cost];
    args.extend(extra);
    let mut cmd = Command::new(BIN);
    cmd.args(server_args(db, &args))
        .env("RUST_LOG", "info,neochat=debug");
    Server::start_command(cmd)
}

/// The stored hash of each account, by name.
fn stored_hashes(db: &Path) -> Vec<(String, String)> {
    let conn = Connection::open(db).expect("open the database");
    let mut stmt = conn
        .prepare("SELECT name, hash FROM users ORDER BY name")
        .unwrap();
    stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

/// The bcrypt cost of each account, by name.
fn stored_costs(db: &Path) -> Vec<(String, String)> {
    stored_hashes(db)
        .into_iter()
        .map(|(name, hash)| (name, hash.get(4..6).unwrap_or("?").to_string()))
        .collect()
}

#[track_caller]
fn stop(mut s: Server) {
    s.sigterm();
    s.wait_exit(Duration::from_secs(10))
        .expect("the server exits after SIGTERM");
}

/// A failed login with a name nobody has.
#[track_caller]
fn unknown_name_fails(addr: std::net::SocketAddr, name: &str) {
    let mut c = Client::connect_welcomed(addr).with_label(name);
    c.login_fails(name, "not-anybody's-password");
}

#[test]
fn a_cost_change_re_hashes_at_the_next_login_and_unknown_names_follow_the_accounts() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("chat.db");
    let s = at_cost(&db, "4", &[]);
    wait_for_log(
        &s,
        "unknown names are checked at bcrypt cost 4 (--bcrypt-cost: there are no accounts yet)",
    );
    for name in ["alice", "bob", "carol"] {
        create_account(s.addr, name, &pw(name));
    }
    stop(s);

    // The cost goes up: the accounts still have cost-4 hashes.
    let s = at_cost(&db, "5", &[]);
    wait_for_log(
        &s,
        "unknown names are checked at bcrypt cost 4 (the most common among 3 accounts)",
    );
    wait_for_log(
        &s,
        "3 of 3 accounts have a hash of another cost than --bcrypt-cost 5",
    );
    unknown_name_fails(s.addr, "nobody");
    wait_for_log(
        &s,
        "no such account: checked against a dummy hash of cost 4",
    );
    // A failed login changes nothing; a successful one re-hashes.
    let mut c = Client::connect_welcomed(s.addr).with_label("bob?");
    c.login_fails("bob", "not-bob's-password");
    let mut alice = login(s.addr, "alice", &pw("alice"));
    wait_for_log(&s, "password of alice re-hashed from bcrypt cost 4 to 5");
    alice.quit();
    // 4: carol, bob; 5: alice. Then bob: 4: carol; 5: alice, bob.
    let mut bob = login(s.addr, "bob", &pw("bob"));
    wait_for_log(&s, "password of bob re-hashed from bcrypt cost 4 to 5");
    wait_for_log(
        &s,
        "unknown names are now checked at bcrypt cost 5 (the most common among 3 accounts)",
    );
    bob.quit();
    unknown_name_fails(s.addr, "nobody-else");
    wait_for_log(
        &s,
        "no such account: checked against a dummy hash of cost 5",
    );
    let log = s.output();
    assert_eq!(
        log.matches("re-hashed from").count(),
        2,
        "only the successful logins re-hash:\n{log}"
    );
    stop(s);

    let costs = stored_costs(&db);
    assert_eq!(
        costs,
        [
            ("alice".to_string(), "05".to_string()),
            ("bob".to_string(), "05".to_string()),
            ("carol".to_string(), "04".to_string()),
        ]
    );

    // The new hashes log in, and the counts are read back at start.
    let s = at_cost(&db, "5", &[]);
    wait_for_log(
        &s,
        "unknown names are checked at bcrypt cost 5 (the most common among 3 accounts)",
    );
    login(s.addr, "alice", &pw("alice")).quit();
    login(s.addr, "bob", &pw("bob")).quit();
    assert!(
        !s.output().contains("re-hashed from"),
        "a hash at the current cost is kept:\n{}",
        s.output()
    );
    stop(s);
}

/// How long a failed login of `name` takes, the quickest of `tries`.
fn quickest_failure(addr: std::net::SocketAddr, name: &str, tries: usize) -> Duration {
    (0..tries)
        .map(|_| {
            let mut c = Client::connect_welcomed(addr);
            c.send("L\n");
            c.expect(USERNAME);
            c.send(&format!("{name}\n"));
            c.expect(PASSWORD);
            let start = Instant::now();
            c.send("wrong-password\n");
            c.expect(WRONG);
            start.elapsed()
        })
        .min()
        .expect("at least one try")
}

/// An extra to the test above, by the clock: after a change from cost 7
/// to 13 (64 times the work), an unknown name and a known one with a wrong
/// password still take about as long. The bound is loose (10x either way,
/// the quickest of 5 each, one steady worker, each check long enough
/// (~10 ms) that scheduling noise on a busy machine is not 10x of it);
/// checking unknown names at the new cost fails it by far.
#[test]
fn after_a_cost_change_unknown_and_known_names_take_as_long() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("chat.db");
    let s = at_cost(&db, "7", &[]);
    create_account(s.addr, "alice", &pw("alice"));
    stop(s);

    let s = at_cost(&db, "13", &["--workers", "1"]);
    let known = quickest_failure(s.addr, "alice", 5);
    let unknown = quickest_failure(s.addr, "nobody", 5);
    eprintln!("wrong password: known name {known:?}, unknown name {unknown:?}");
    let ratio = known.max(unknown).as_secs_f64() / known.min(unknown).as_secs_f64().max(1e-6);
    assert!(
        ratio < 10.0,
        "a wrong password for a known name took {known:?}, for an unknown one {unknown:?}"
    );
    stop(s);
}
