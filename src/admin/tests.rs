//! Tests of the admin calls on temporary database files: what each writes
//! (and records in `changes`), names in any case, what a deleted account
//! leaves behind (nothing), a missing, old-schema or locked database.

use std::path::{Path, PathBuf};
use std::time::Instant;

use rusqlite::Connection;

use super::*;
use crate::store::ops::Message;
use crate::store::{accounts, messages, rooms};

/// A fresh database with the current schema, as the server leaves it: its
/// directory (delete it last), its path, and a connection to look at it.
fn fresh() -> (tempfile::TempDir, PathBuf, Connection) {
    let dir = tempfile::tempdir().expect("temporary directory");
    let path = dir.path().join("neochat.db");
    let (conn, access) = store::open(&path).expect("opens");
    store::migrate(&conn, access, &path).expect("migrates");
    (dir, path, conn)
}

fn add_user(conn: &Connection, name: &str, created_at: i64) {
    assert!(accounts::insert(conn, name, "$2b$04$x", created_at).expect("insert"));
}

fn count(conn: &Connection, sql: &str) -> i64 {
    conn.query_row(sql, [], |r| r.get(0))
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
}

/// The `changes` rows, oldest first.
fn changes(conn: &Connection) -> Vec<(String, String)> {
    conn.prepare("SELECT kind, account FROM changes ORDER BY id")
        .and_then(|mut s| s.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?.collect())
        .expect("changes")
}

fn change(kind: &str, account: &str) -> (String, String) {
    (kind.to_owned(), account.to_owned())
}

fn private(id: u64, from: &str, to: &str) -> Message {
    Message {
        id,
        room: None,
        n: 0,
        sender: from.into(),
        recipient: Some(to.into()),
        at: 1,
        me: false,
        text: format!("{from} to {to}"),
    }
}

fn in_room(id: u64, room: &str, n: u64, from: &str) -> Message {
    Message {
        id,
        room: Some(room.into()),
        n,
        sender: from.into(),
        recipient: None,
        at: 1,
        me: false,
        text: "hi".into(),
    }
}

#[test]
fn minutes_are_the_protocol_s_time() {
    assert_eq!(minutes(0), "1970-01-01T00:00Z");
    assert_eq!(minutes(1_796_121_485), "2026-12-01T10:38Z");
}

#[test]
fn a_missing_database_is_never_created() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let path = dir.path().join("nowhere.db");
    let calls: [&dyn Fn() -> Result<(), Error>; 6] = [
        &|| op_add(&path, "alice").map(drop),
        &|| op_remove(&path, "alice").map(drop),
        &|| op_list(&path).map(drop),
        &|| users_list(&path).map(drop),
        &|| users_delete(&path, "alice").map(drop),
        &|| reset_password(&path, "alice", "new password", 4).map(drop),
    ];
    for call in calls {
        let err = call().expect_err("no database");
        assert_eq!(err.kind(), ErrorKind::NoDatabase, "{err}");
        assert_eq!(
            err.to_string(),
            format!("no database at {}", path.display())
        );
    }
    let left: Vec<_> = std::fs::read_dir(dir.path()).expect("read dir").collect();
    assert!(left.is_empty(), "made {left:?}");
}

#[test]
fn op_add_remove_and_list_match_any_case_and_show_names_as_registered() {
    let (_dir, path, conn) = fresh();
    add_user(&conn, "Alice", 1);
    add_user(&conn, "bob", 2);
    add_user(&conn, "Carol", 3);

    let added = op_add(&path, "ALICE").expect("op add");
    assert_eq!(added.to_string(), "Alice is now a server operator");
    assert_eq!(
        op_add(&path, "alice").expect("again").to_string(),
        "Alice is already a server operator"
    );
    op_add(&path, "carol").expect("op add");
    op_add(&path, "Bob").expect("op add");
    assert_eq!(op_list(&path).expect("list"), ["Alice", "bob", "Carol"]);

    assert_eq!(
        op_remove(&path, "BOB").expect("op remove").to_string(),
        "bob is no longer a server operator"
    );
    let err = op_remove(&path, "bob").expect_err("not one any more");
    assert_eq!(err.kind(), ErrorKind::NotOperator);
    assert_eq!(err.to_string(), "bob is not a server operator");
    assert_eq!(op_list(&path).expect("list"), ["Alice", "Carol"]);

    for err in [
        op_add(&path, "dave").expect_err("unknown"),
        op_remove(&path, "dave").expect_err("unknown"),
    ] {
        assert_eq!(err.kind(), ErrorKind::NoSuchUser);
        assert_eq!(err.to_string(), "no such user dave");
    }
    // The lobby's rows, as registered; nothing recorded for what changed
    // nothing.
    let rows: Vec<(String, String)> = conn
        .prepare("SELECT room, account FROM operators ORDER BY account")
        .and_then(|mut s| s.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?.collect())
        .expect("operators");
    assert_eq!(
        rows,
        [
            ("lobby".to_owned(), "Alice".to_owned()),
            ("lobby".to_owned(), "Carol".to_owned())
        ]
    );
    assert_eq!(
        changes(&conn),
        [
            change("op-add", "Alice"),
            change("op-add", "Carol"),
            change("op-add", "bob"),
            change("op-remove", "bob"),
        ]
    );
}

#[test]
fn room_operators_are_not_server_operators() {
    let (_dir, path, conn) = fresh();
    add_user(&conn, "alice", 1);
    rooms::create(&conn, "rust", "alice", 1).expect("room");
    conn.execute(
        "INSERT INTO operators (room, account, by, at) VALUES ('rust', 'alice', 'alice', 1)",
        [],
    )
    .expect("room operator");
    assert!(op_list(&path).expect("list").is_empty());
    assert_eq!(
        op_remove(&path, "alice").expect_err("not one").kind(),
        ErrorKind::NotOperator
    );
    assert!(!users_list(&path).expect("list")[0].operator);
}

#[test]
fn users_list_shows_creation_roles_and_bans_in_force() {
    let (_dir, path, conn) = fresh();
    let now = unix_now();
    add_user(&conn, "zed", 1_796_121_485);
    add_user(&conn, "Alice", 0);
    add_user(&conn, "bob", 60);
    add_user(&conn, "Carol", 120);
    add_user(&conn, "dave", 180);
    op_add(&path, "alice").expect("op");
    op_add(&path, "zed").expect("op");
    let ban = |who: &str, room: &str, kind: &str, until: Option<i64>| {
        conn.execute(
            "INSERT INTO sanctions (room, account, kind, until, by, at)
             VALUES (?1, ?2, ?3, ?4, 'alice', 1)",
            (room, who, kind, until),
        )
        .expect("sanction");
    };
    ban("bob", LOBBY, "ban", None);
    ban("carol", LOBBY, "ban", Some(now + 3600));
    ban("dave", LOBBY, "ban", Some(now - 1));
    ban("dave", LOBBY, "mute", None);
    ban("zed", "rust", "ban", None);
    ban("zed", LOBBY, "ban", Some(1_900_000_000));

    let lines: Vec<String> = users_list(&path)
        .expect("list")
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(
        lines,
        [
            "Alice  1970-01-01T00:00Z op".to_owned(),
            "bob  1970-01-01T00:01Z banned until forever".to_owned(),
            format!(
                "Carol  1970-01-01T00:02Z banned until {}",
                minutes(now + 3600)
            ),
            "dave  1970-01-01T00:03Z".to_owned(),
            "zed  2026-12-01T10:38Z op banned until 2030-03-17T17:46Z".to_owned(),
        ]
    );
    assert!(users_list(&fresh().1).expect("empty").is_empty());
}

/// Everything of the account goes in one write, and nothing of anybody
/// else's: tokens, memberships (the lobby's too), roles, sanctions, the
/// private messages waiting for it, the rooms it leaves empty.
#[test]
fn users_delete_leaves_nothing_of_the_account_and_retires_its_name() {
    let (_dir, path, conn) = fresh();
    for (i, name) in ["Alice", "bob"].iter().enumerate() {
        add_user(&conn, name, i as i64);
        rooms::join(&conn, LOBBY, name, 0, 1).expect("lobby");
        conn.execute(
            "INSERT INTO tokens (hash, account, created_at, expires_at) VALUES (?1, ?2, 1, 2)",
            (vec![i as u8; 32], name),
        )
        .expect("token");
    }
    // alice alone in #solo (owner, with its operators and a sanction),
    // with bob in #shared (owned by alice).
    rooms::create(&conn, "solo", "Alice", 1).expect("solo");
    rooms::create(&conn, "shared", "Alice", 1).expect("shared");
    rooms::join(&conn, "shared", "bob", 0, 1).expect("bob joins");
    messages::insert(&conn, &in_room(1, "solo", 1, "Alice"), false).expect("message");
    messages::insert(&conn, &in_room(2, "shared", 1, "Alice"), false).expect("message");
    messages::insert(&conn, &in_room(3, LOBBY, 1, "Alice"), false).expect("message");
    messages::insert(&conn, &private(4, "bob", "Alice"), true).expect("pending for alice");
    messages::insert(&conn, &private(5, "bob", "Alice"), false).expect("delivered to alice");
    messages::insert(&conn, &private(6, "Alice", "bob"), true).expect("pending for bob");
    for (room, who) in [("solo", "Alice"), ("solo", "bob"), ("shared", "Alice")] {
        conn.execute(
            "INSERT INTO operators (room, account, by, at) VALUES (?1, ?2, 'Alice', 1)",
            (room, who),
        )
        .expect("room operator");
    }
    conn.execute(
        "INSERT INTO sanctions (room, account, kind, until, by, at)
         VALUES ('solo', 'bob', 'ban', NULL, 'Alice', 1),
                ('shared', 'Alice', 'mute', NULL, 'bob', 1),
                ('lobby', 'Alice', 'ban', NULL, 'bob', 1)",
        [],
    )
    .expect("sanctions");
    op_add(&path, "alice").expect("server operator");

    let report = users_delete(&path, "ALICE").expect("delete");
    assert_eq!(report.to_string(), "deleted Alice");
    // #solo is left to the server, which deletes empty rooms.
    assert_eq!(
        count(&conn, "SELECT count(*) FROM rooms WHERE name = 'solo'"),
        1
    );
    assert_eq!(rooms::drop_empty(&conn).expect("drop empty"), 1);

    for (sql, want) in [
        ("SELECT count(*) FROM users WHERE name = 'alice'", 0),
        ("SELECT count(*) FROM users", 1),
        ("SELECT count(*) FROM tokens WHERE account = 'alice'", 0),
        ("SELECT count(*) FROM tokens", 1),
        ("SELECT count(*) FROM members WHERE account = 'alice'", 0),
        ("SELECT count(*) FROM members", 2),
        ("SELECT count(*) FROM operators WHERE account = 'alice'", 0),
        ("SELECT count(*) FROM operators", 0),
        ("SELECT count(*) FROM sanctions", 0),
        ("SELECT count(*) FROM rooms WHERE name = 'solo'", 0),
        (
            "SELECT count(*) FROM rooms WHERE name IN ('lobby', 'shared')",
            2,
        ),
        ("SELECT count(*) FROM messages WHERE room = 'solo'", 0),
        (
            "SELECT count(*) FROM messages WHERE room IN ('lobby', 'shared')",
            2,
        ),
        ("SELECT count(*) FROM messages WHERE id = 4", 0),
        ("SELECT count(*) FROM messages WHERE id IN (5, 6)", 2),
        ("SELECT count(*) FROM retired WHERE name = 'ALICE'", 1),
    ] {
        assert_eq!(count(&conn, sql), want, "{sql}");
    }
    let retired: String = conn
        .query_row("SELECT name FROM retired", [], |r| r.get(0))
        .expect("retired");
    assert_eq!(retired, "Alice", "as registered");
    assert_eq!(changes(&conn).last(), Some(&change("delete", "Alice")));
    // Never again, in any case.
    assert!(!accounts::insert(&conn, "alice", "$2b$04$y", 9).expect("insert"));
    assert_eq!(
        users_delete(&path, "alice").expect_err("gone").kind(),
        ErrorKind::NoSuchUser
    );
    assert_eq!(
        user(&path, "ALICE").expect_err("gone").kind(),
        ErrorKind::NoSuchUser
    );
    assert_eq!(user(&path, "BOB").expect("bob"), "bob");
}

#[test]
fn reset_password_hashes_the_new_one_and_revokes_every_token() {
    let (_dir, path, conn) = fresh();
    add_user(&conn, "Alice", 1);
    add_user(&conn, "bob", 1);
    for (key, who) in [(1u8, "alice"), (2, "Alice"), (3, "bob")] {
        conn.execute(
            "INSERT INTO tokens (hash, account, created_at, expires_at) VALUES (?1, ?2, 1, 2)",
            (vec![key; 32], who),
        )
        .expect("token");
    }
    let report = reset_password(&path, "alice", "brand new pw", 4).expect("reset");
    assert_eq!(report.to_string(), "password of Alice reset");
    let (_, hash) = accounts::find(&conn, "alice")
        .expect("find")
        .expect("alice");
    assert!(hash.starts_with("$2b$04$"), "{hash}");
    assert!(bcrypt::verify("brand new pw", &hash).expect("verify"));
    assert_eq!(
        count(&conn, "SELECT count(*) FROM tokens WHERE account = 'alice'"),
        0
    );
    assert_eq!(
        count(&conn, "SELECT count(*) FROM tokens"),
        1,
        "bob's stays"
    );
    assert_eq!(changes(&conn), [change("password", "Alice")]);

    // A longest password is taken whole.
    let longest = "p".repeat(MAX_PASSWORD);
    reset_password(&path, "bob", &longest, 4).expect("72 bytes");
    let (_, hash) = accounts::find(&conn, "bob").expect("find").expect("bob");
    assert!(bcrypt::verify(&longest, &hash).expect("verify"));
}

#[test]
fn reset_password_refuses_what_could_not_be_used_and_writes_nothing() {
    let (_dir, path, conn) = fresh();
    add_user(&conn, "alice", 1);
    let too_long = "é".repeat(37);
    for (password, kind) in [
        ("seven77", ErrorKind::BadPassword),
        (too_long.as_str(), ErrorKind::BadPassword),
        ("tab\tis fine but\x07not", ErrorKind::BadPassword),
        ("a\u{202e}bcdefghij", ErrorKind::BadPassword),
    ] {
        let err = reset_password(&path, "alice", password, 4).expect_err(password);
        assert_eq!(err.kind(), kind, "{password:?}: {err}");
    }
    assert_eq!(
        reset_password(&path, "alice", "seven77", 4)
            .expect_err("short")
            .to_string(),
        "password must be 8-72 bytes"
    );
    check_password("tab\tis fine").expect("TAB is a blank, not a control");
    for cost in [3, 32] {
        let err = reset_password(&path, "alice", "good password", cost).expect_err("cost");
        assert_eq!(err.kind(), ErrorKind::BadCost, "{cost}");
    }
    let err = reset_password(&path, "carol", "good password", 4).expect_err("unknown");
    assert_eq!(err.to_string(), "no such user carol");
    assert_eq!(
        accounts::find(&conn, "alice")
            .expect("find")
            .expect("alice")
            .1,
        "$2b$04$x",
        "unchanged"
    );
    assert!(changes(&conn).is_empty());
}

/// A database of version 1 (accounts only) is migrated, as the server
/// would, and then works.
#[test]
fn an_old_schema_is_migrated_first() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let path = dir.path().join("v1.db");
    {
        let conn = Connection::open(&path).expect("create");
        conn.execute_batch(
            "CREATE TABLE users (
                 id         INTEGER PRIMARY KEY,
                 name       TEXT NOT NULL UNIQUE COLLATE NOCASE,
                 hash       TEXT NOT NULL,
                 created_at INTEGER NOT NULL
             );
             INSERT INTO users (name, hash, created_at) VALUES ('Alice', '$2b$04$x', 0);
             PRAGMA user_version = 1;",
        )
        .expect("version 1");
    }
    assert_eq!(op_add(&path, "alice").expect("op add").did, Did::OpAdded);
    let conn = Connection::open(&path).expect("open");
    assert_eq!(
        schema_version(&conn),
        store::SCHEMA_VERSION,
        "migrated to this build's schema"
    );
    assert_eq!(
        users_list(&path).expect("list")[0].to_string(),
        "Alice  1970-01-01T00:00Z op"
    );
}

fn schema_version(conn: &Connection) -> i64 {
    store::schema::version(conn).expect("version")
}

/// Another program holding the write lock: a write gives up with Busy
/// after the busy timeout (not before, not never); reads go on (WAL).
#[test]
fn a_locked_database_is_busy_for_writes_and_readable() {
    let (_dir, path, conn) = fresh();
    add_user(&conn, "alice", 1);
    conn.execute_batch("BEGIN IMMEDIATE").expect("lock");
    let started = Instant::now();
    let err = op_add(&path, "alice").expect_err("busy");
    let waited = started.elapsed();
    assert_eq!(err.kind(), ErrorKind::Busy, "{err}");
    assert!(
        err.to_string()
            .starts_with(&format!("database {} is busy", path.display())),
        "{err}"
    );
    assert!(
        waited >= BUSY_TIMEOUT - Duration::from_millis(100),
        "{waited:?}"
    );
    assert!(waited < BUSY_TIMEOUT * 3, "{waited:?}");
    assert_eq!(users_list(&path).expect("reads go on").len(), 1);
    conn.execute_batch("COMMIT").expect("unlock");
    op_add(&path, "alice").expect("free again");
}

#[test]
fn something_that_is_not_a_database_says_so() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let path: &Path = &dir.path().join("junk.db");
    std::fs::write(path, vec![b'x'; 4096]).expect("junk");
    let err = op_list(path).expect_err("not a database");
    assert_eq!(err.kind(), ErrorKind::Database);
    assert!(
        err.to_string()
            .starts_with(&format!("database {}: ", path.display())),
        "{err}"
    );
}
