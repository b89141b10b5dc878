//! The admin subcommands as an operator runs them: the real
//! `neochat-server op ...` and `users ...` on a database the real server
//! made, with the server stopped or running. Their exact output lines and
//! exit codes (`spec12.md`, "Admin subcommands"), a missing and a locked
//! database, and what the running server makes of the changes: logins,
//! names that cannot be registered again, new passwords; and the
//! connections of a deleted account or a reset password, told and closed.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use rusqlite::Connection;

use crate::util::*;

/// Longer than any subcommand takes here, busy timeout (5 s) included.
const LIMIT: Duration = Duration::from_secs(30);

/// How long the server may take to act on a change (it reads `changes`
/// every 2 s).
const REACTS: Duration = Duration::from_secs(10);

/// What a subcommand did.
#[derive(Debug)]
struct Ran {
    /// `None`: killed at [`LIMIT`].
    code: Option<i32>,
    stdout: String,
    stderr: String,
    took: Duration,
}

impl Ran {
    /// Exit 0, these lines on stdout, nothing on stderr.
    #[track_caller]
    fn ok(&self, lines: &[&str]) {
        assert_eq!(self.code, Some(0), "{self:?}");
        assert_eq!(self.stdout, joined(lines), "{self:?}");
        assert_eq!(self.stderr, "", "{self:?}");
    }

    /// Exit 1, nothing on stdout, `neochat-server: <message>` on stderr.
    #[track_caller]
    fn fails(&self, message: &str) {
        assert_eq!(self.code, Some(1), "{self:?}");
        assert_eq!(self.stdout, "", "{self:?}");
        assert_eq!(
            self.stderr,
            format!("neochat-server: {message}\n"),
            "{self:?}"
        );
    }
}

fn joined(lines: &[&str]) -> String {
    lines.iter().map(|l| format!("{l}\n")).collect()
}

/// Runs `neochat-server <args> --db <db>` with `stdin` piped in (or none:
/// an empty stdin, not a terminal), killed after [`LIMIT`].
#[track_caller]
fn admin(db: &Path, args: &[&str], stdin: Option<&str>) -> Ran {
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .arg("--db")
        .arg(db)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let started = Instant::now();
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        // It may exit before reading (a missing database): ignore EPIPE.
        let _ = pipe.write_all(text.as_bytes());
    }
    let drain = |pipe: Option<Box<dyn Read + Send>>| {
        thread::spawn(move || {
            let mut text = String::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_string(&mut text);
            }
            text
        })
    };
    let stdout = drain(child.stdout.take().map(|p| Box::new(p) as _));
    let stderr = drain(child.stderr.take().map(|p| Box::new(p) as _));
    let mut code = None;
    while started.elapsed() < LIMIT {
        if let Some(status) = child.try_wait().expect("try_wait") {
            code = Some(status.code().unwrap_or(-1));
            break;
        }
        thread::sleep(Duration::from_millis(10));
    }
    let took = started.elapsed();
    if code.is_none() {
        let _ = child.kill();
    }
    let _ = child.wait();
    Ran {
        code,
        stdout: stdout.join().expect("stdout"),
        stderr: stderr.join().expect("stderr"),
        took,
    }
}

/// A database the real server made, in its own directory, with these
/// accounts (password `pw(name)`), all offline; and the server, still
/// running.
#[track_caller]
fn served(names: &[&str]) -> (tempfile::TempDir, PathBuf, Server) {
    let dir = tempfile::tempdir().expect("temporary directory");
    let db = dir.path().join("neochat.db");
    let server = Server::start_with_db(&db, &[]);
    for name in names {
        create_account(server.addr, name, &pw(name));
    }
    (dir, db, server)
}

/// Like [`served`], the server stopped.
#[track_caller]
fn stopped(names: &[&str]) -> (tempfile::TempDir, PathBuf) {
    let (dir, db, mut server) = served(names);
    server.sigterm();
    assert!(
        server.wait_exit(Duration::from_secs(10)).is_some(),
        "the server did not stop"
    );
    (dir, db)
}

/// Registering `name` (any case of a deleted account's) is refused.
#[track_caller]
fn cannot_register(s: &Server, name: &str) {
    let mut c = Client::connect_welcomed(s.addr).with_label(name);
    c.send(&format!("R\n{name}\n{}\n", pw(name)));
    c.expect(USERNAME);
    c.expect(PASSWORD);
    c.expect(TAKEN);
    c.expect(CHOICE);
}

// ---------------------------------------------------------------- tests

#[test]
fn every_subcommand_refuses_a_missing_database_and_creates_none() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let db = dir.path().join("missing.db");
    let message = format!("no database at {}", db.display());
    for args in [
        &["op", "add", "alice"][..],
        &["op", "remove", "alice"],
        &["op", "list"],
        &["users", "list"],
        &["users", "delete", "alice"],
        &["users", "reset-password", "alice", "--bcrypt-cost", "4"],
    ] {
        let ran = admin(&db, args, Some("new-password\n"));
        ran.fails(&message);
    }
    let left: Vec<_> = std::fs::read_dir(dir.path()).expect("read dir").collect();
    assert!(left.is_empty(), "made {left:?}");
}

#[test]
fn op_subcommands_print_their_lines_and_exit_codes() {
    let (_dir, db) = stopped(&["Alice", "bob", "Carol"]);
    admin(&db, &["op", "list"], None).ok(&[]);
    admin(&db, &["op", "add", "alice"], None).ok(&["Alice is now a server operator"]);
    admin(&db, &["op", "add", "ALICE"], None).ok(&["Alice is already a server operator"]);
    admin(&db, &["op", "add", "nobody"], None).fails("no such user nobody");
    admin(&db, &["op", "add", "carol"], None).ok(&["Carol is now a server operator"]);
    admin(&db, &["op", "add", "BOB"], None).ok(&["bob is now a server operator"]);
    admin(&db, &["op", "list"], None).ok(&["Alice", "bob", "Carol"]);
    admin(&db, &["op", "remove", "Bob"], None).ok(&["bob is no longer a server operator"]);
    admin(&db, &["op", "remove", "bob"], None).fails("bob is not a server operator");
    admin(&db, &["op", "remove", "nobody"], None).fails("no such user nobody");
    admin(&db, &["op", "list"], None).ok(&["Alice", "Carol"]);
    // The flag before the action works too.
    let mut cmd = Command::new(BIN);
    cmd.arg("op").arg("--db").arg(&db).arg("list");
    let (status, out) = run_command(cmd, LIMIT);
    assert_eq!(status.and_then(|s| s.code()), Some(0), "{out}");
    assert_eq!(out, "Alice\nCarol\n");

    let conn = Connection::open(&db).expect("open");
    let changes: Vec<(String, String)> = conn
        .prepare("SELECT kind, account FROM changes ORDER BY id")
        .and_then(|mut s| s.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?.collect())
        .expect("changes");
    let want: Vec<(String, String)> = [
        ("op-add", "Alice"),
        ("op-add", "Carol"),
        ("op-add", "bob"),
        ("op-remove", "bob"),
    ]
    .iter()
    .map(|(k, a)| (k.to_string(), a.to_string()))
    .collect();
    assert_eq!(changes, want);
}

#[test]
fn users_list_shows_each_account_its_creation_role_and_ban() {
    let (_dir, db) = stopped(&["zed", "Alice", "bob", "carol"]);
    admin(&db, &["op", "add", "zed"], None).ok(&["zed is now a server operator"]);
    let conn = Connection::open(&db).expect("open");
    let created = |name: &str| -> String {
        let at: i64 = conn
            .query_row(
                "SELECT created_at FROM users WHERE name = ?1",
                [name],
                |r| r.get(0),
            )
            .expect("created_at");
        neochat::admin::minutes(at)
    };
    conn.execute_batch(
        "INSERT INTO sanctions (room, account, kind, until, by, at) VALUES
             ('lobby', 'bob', 'ban', NULL, 'zed', 1),
             ('lobby', 'zed', 'ban', 4102444800, 'zed', 1),
             ('lobby', 'carol', 'ban', 1, 'zed', 1);",
    )
    .expect("bans");
    let ran = admin(&db, &["users", "list"], None);
    ran.ok(&[
        &format!("Alice  {}", created("Alice")),
        &format!("bob  {} banned until forever", created("bob")),
        &format!("carol  {}", created("carol")),
        &format!("zed  {} op banned until 2100-01-01T00:00Z", created("zed")),
    ]);
    let first = ran.stdout.lines().next().expect("a line");
    let time = first.strip_prefix("Alice  ").expect("two spaces");
    assert_eq!(time.len(), "2026-12-08T10:30Z".len(), "{time}");
    assert!(time.ends_with('Z') && time.as_bytes()[10] == b'T', "{time}");
}

#[test]
fn a_locked_database_makes_writes_fail_within_their_timeout_and_reads_go_on() {
    let (_dir, db) = stopped(&["alice", "bob"]);
    let locker = Connection::open(&db).expect("open");
    locker.execute_batch("BEGIN EXCLUSIVE").expect("lock");

    // The three writes wait side by side (each on its own 5 s).
    let writes = [
        (&["op", "add", "alice"][..], None),
        (&["users", "delete", "bob"][..], None),
        (
            &["users", "reset-password", "alice", "--bcrypt-cost", "4"][..],
            Some("another-password\n"),
        ),
    ];
    let db_ref = &db;
    let runs: Vec<Ran> = thread::scope(|scope| {
        let handles: Vec<_> = writes
            .iter()
            .map(|(args, stdin)| scope.spawn(move || admin(db_ref, args, *stdin)))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("runs"))
            .collect()
    });
    for ran in &runs {
        assert_eq!(ran.code, Some(1), "{ran:?}");
        assert!(
            ran.stderr.starts_with(&format!(
                "neochat-server: database {} is busy",
                db.display()
            )),
            "{ran:?}"
        );
        assert!(ran.took >= Duration::from_millis(4500), "{ran:?}");
        assert!(ran.took < Duration::from_secs(20), "{ran:?}");
    }
    // WAL: reads do not wait for the writer.
    let ran = admin(&db, &["users", "list"], None);
    assert_eq!(ran.code, Some(0), "{ran:?}");
    assert_eq!(ran.stdout.lines().count(), 2, "{ran:?}");
    admin(&db, &["op", "list"], None).ok(&[]);

    locker.execute_batch("COMMIT").expect("unlock");
    admin(&db, &["op", "add", "alice"], None).ok(&["alice is now a server operator"]);
}

#[test]
fn an_operator_made_while_the_server_runs_logs_in_and_is_listed() {
    let (_dir, db, s) = served(&["Alice", "bob"]);
    admin(&db, &["op", "add", "alice"], None).ok(&["Alice is now a server operator"]);
    let mut alice = login(s.addr, "Alice", &pw("Alice"));
    admin(&db, &["op", "list"], None).ok(&["Alice"]);
    let ran = admin(&db, &["users", "list"], None);
    assert_eq!(ran.code, Some(0), "{ran:?}");
    let lines: Vec<&str> = ran.stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{ran:?}");
    assert!(
        lines[0].starts_with("Alice  ") && lines[0].ends_with(" op"),
        "{ran:?}"
    );
    assert!(
        lines[1].starts_with("bob  ") && !lines[1].ends_with(" op"),
        "{ran:?}"
    );
    let mut bob = login(s.addr, "bob", &pw("bob"));
    alice.expect("* bob joined");
    alice.send("hello bob\n");
    bob.expect("Alice: hello bob");
}

#[test]
fn a_deleted_account_cannot_log_in_or_be_registered_again() {
    let (_dir, db, s) = served(&["Alice", "bob"]);
    admin(&db, &["users", "delete", "ALICE"], None).ok(&["deleted Alice"]);
    admin(&db, &["users", "delete", "alice"], None).fails("no such user alice");
    let ran = admin(&db, &["users", "list"], None);
    assert_eq!(ran.code, Some(0), "{ran:?}");
    assert!(ran.stdout.starts_with("bob  "), "{ran:?}");
    assert_eq!(ran.stdout.lines().count(), 1, "{ran:?}");

    let mut c = Client::connect_welcomed(s.addr).with_label("Alice");
    c.login_fails("Alice", &pw("Alice"));
    for name in ["Alice", "alice", "ALICE"] {
        cannot_register(&s, name);
    }
    // Everybody else is as before.
    login(s.addr, "bob", &pw("bob")).quit();
}

#[test]
fn reset_password_from_stdin_replaces_the_password() {
    let (_dir, db, s) = served(&["Alice"]);
    admin(
        &db,
        &["users", "reset-password", "alice", "--bcrypt-cost", "4"],
        Some("brand-new-password\n"),
    )
    .ok(&["password of Alice reset"]);
    let mut c = Client::connect_welcomed(s.addr).with_label("Alice");
    c.login_fails("Alice", &pw("Alice"));
    c.login_here("alice", "brand-new-password", "Alice");
    c.quit();

    // CRLF is a line end too; a password is the whole line otherwise (a
    // trailing blank included).
    admin(
        &db,
        &["users", "reset-password", "Alice", "--bcrypt-cost", "4"],
        Some("windows password \r\n"),
    )
    .ok(&["password of Alice reset"]);
    let mut c = Client::connect_welcomed(s.addr).with_label("Alice");
    c.login_fails("Alice", "windows password");
    c.login_here("Alice", "windows password ", "Alice");
    c.quit();
}

#[test]
fn reset_password_refuses_a_bad_password_an_unknown_name_and_no_input() {
    let (_dir, db) = stopped(&["alice"]);
    let reset = |name: &str, stdin: Option<&str>| {
        admin(
            &db,
            &["users", "reset-password", name, "--bcrypt-cost", "4"],
            stdin,
        )
    };
    reset("alice", Some("short\n")).fails("password must be 8-72 bytes");
    reset("alice", Some(&format!("{}\n", "x".repeat(73)))).fails("password must be 8-72 bytes");
    reset("alice", None).fails("no password on stdin");
    reset("alice", Some("")).fails("no password on stdin");
    reset("nobody", Some("a-good-password\n")).fails("no such user nobody");
    // The default cost is 12; out of range is clap's usage error.
    let ran = admin(
        &db,
        &["users", "reset-password", "alice", "--bcrypt-cost", "3"],
        Some("a-good-password\n"),
    );
    assert_eq!(ran.code, Some(2), "{ran:?}");
    let conn = Connection::open(&db).expect("open");
    let changes: i64 = conn
        .query_row("SELECT count(*) FROM changes", [], |r| r.get(0))
        .expect("changes");
    assert_eq!(changes, 0, "nothing was written");
    // 72 bytes exactly is taken whole.
    reset("alice", Some(&format!("{}\n", "y".repeat(72)))).ok(&["password of alice reset"]);
}

// ---------------------------------------------------------------- the server reacting
//
// These two need the server's side of `changes` (it reads them every 2 s
// and closes the account's connections).

#[test]
fn an_online_account_deleted_is_told_and_closed() {
    let (_dir, db, s) = served(&["alice", "bob"]);
    let mut alice = login(s.addr, "alice", &pw("alice"));
    admin(&db, &["users", "delete", "alice"], None).ok(&["deleted alice"]);
    assert_eq!(
        alice.line_within(REACTS),
        "! account deleted by an operator"
    );
    alice.expect_closed();
    cannot_register(&s, "alice");
}

#[test]
fn an_online_account_whose_password_is_reset_is_told_and_closed() {
    let (_dir, db, s) = served(&["alice"]);
    let mut alice = login(s.addr, "alice", &pw("alice"));
    admin(
        &db,
        &["users", "reset-password", "alice", "--bcrypt-cost", "4"],
        Some("the-new-password\n"),
    )
    .ok(&["password of alice reset"]);
    assert_eq!(
        alice.line_within(REACTS),
        "! password reset by an operator; log in again"
    );
    alice.expect_closed();
    login(s.addr, "alice", "the-new-password").quit();
}
